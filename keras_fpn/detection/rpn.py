"""The Region Proposal Network of Faster R-CNN on a pyramid (Ren et al. 2015; the FPN paper, Sec. 4.1): its head,
its training targets and loss, and its proposals.

One head is shared by every pyramid level (each level has anchors of one size, the paper's Sec. 4.1). Parts:
`RPNHead` (the learned layer, an argument of `FasterRCNN`), `rpn_targets` (anchor matching and sampling),
`rpn_loss`, and `propose` (the per-level top-k and NMS of `keras_fpn.detection.proposals`).

Defaults and their sources (torchvision `models/detection/rpn.py`; detectron2 `proposal_generator/rpn.py`,
`configs/Base-RCNN-FPN.yaml`): a 3x3 conv + ReLU then 1x1 convs, N(0, 0.01) init (both); IoU >= 0.7 positive,
< 0.3 negative, each box's best anchors positive; 256 anchors per image, at most half positive (both); box
coding weights (1, 1, 1, 1) (both); smooth-L1 (beta 1/9, torchvision) and binary cross-entropy, both divided by
the number of sampled anchors.
"""

import keras
from keras import ops

from keras_fpn.detection.box_coding import encode_deltas, match_anchors
from keras_fpn.detection.losses import smooth_l1_loss
from keras_fpn.detection.proposals import generate_proposals
from keras_fpn.detection.sampling import sample_balanced
from keras_fpn.utils.distribute import sum_over_replicas

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


@keras.saving.register_keras_serializable(package="keras_fpn")
class RPNHead(keras.layers.Layer):
    """The RPN's head, shared by every pyramid level: `conv_depth` x (3x3 conv + ReLU), then 1x1 convs to one
    objectness logit and 4 box deltas per anchor.

    Args:
        num_anchors: int, anchors per location. filters: int, default 256 (the pyramid's channels).
        conv_depth: int, default 1 (the paper; torchvision's `RPNHead` default). torchvision's v2 R-CNNs use 2
            (`RPNHead(..., conv_depth=2)` in `fasterrcnn_resnet50_fpn_v2`).

    Returns (called on one `[batch, H, W, C]` map): `(objectness [batch, H*W*A], deltas [batch, H*W*A, 4])`, in
    the order of `AnchorGenerator.level_anchors` (row, column, anchor).
    """

    def __init__(self, num_anchors, filters=256, conv_depth=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(conv_depth, int) or conv_depth < 1:
            raise ValueError(f"Received conv_depth={conv_depth!r}; expected a positive integer.")
        self.num_anchors = num_anchors
        self.filters = filters
        self.conv_depth = conv_depth
        init = keras.initializers.RandomNormal(stddev=0.01)
        # The first conv keeps the name (and attribute) it had when there was one, so older files load.
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                                        dtype=self.dtype_policy, name="conv")
        self.more_convs = [keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                                               dtype=self.dtype_policy, name=f"conv{index + 2}")
                           for index in range(conv_depth - 1)]
        self.objectness = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy,
                                              name="objectness")
        self.box = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy,
                                       name="box")

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden = (*input_shape[:3], self.filters)
        for conv in self.more_convs:
            conv.build(hidden)
        self.objectness.build(hidden)
        self.box.build(hidden)
        self.built = True

    def call(self, features):
        x = self.conv(features)
        for conv in self.more_convs:
            x = conv(x)
        batch = ops.shape(features)[0]
        return (ops.reshape(self.objectness(x), (batch, -1)),
                ops.reshape(self.box(x), (batch, -1, 4)))

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (batch, count), (batch, count, 4)

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "filters": self.filters,
                "conv_depth": self.conv_depth}


def rpn_targets(anchors, boxes, labels, positive_iou=0.7, negative_iou=0.3, batch_size_per_image=256,
                positive_fraction=0.5, seed=None):
    """Which anchors train the RPN, and toward what.

    Args:
        anchors: `[N, 4]` pixel xyxy. boxes: `[batch, M, 4]` pixel xyxy. labels: `[batch, M]` (-1 for padding).
        positive_iou, negative_iou: floats; anchors at IoU >= positive_iou with a box (and each box's best anchors)
            are positive, those under negative_iou with every box negative.
        batch_size_per_image: int, anchors sampled per image. positive_fraction: float, at most this share positive.
        seed: a `keras.random.SeedGenerator` or int, of the sampling.

    Returns:
        `(positive [batch, N] bool, negative [batch, N] bool, box targets [batch, N, 4])`: the sampled anchors,
        and for positive ones the deltas of their matched box (`RPN_BOX_WEIGHTS`); zero deltas elsewhere.
    """
    matched, positive, negative = match_anchors(anchors, boxes, labels, positive_iou, negative_iou,
                                                allow_low_quality_matches=True)
    positive, negative = sample_balanced(positive, negative, batch_size_per_image, positive_fraction, seed)
    matched_boxes = ops.take_along_axis(boxes, matched[..., None], axis=1)
    # Non-positive anchors regress onto themselves (zero deltas), so padding boxes never reach a log(0).
    matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])
    return positive, negative, encode_deltas(anchors, matched_boxes, RPN_BOX_WEIGHTS)


def rpn_loss(objectness, deltas, positive, negative, targets, smooth_l1_beta=1.0 / 9):
    """`(objectness loss, box loss)`: binary cross-entropy over the sampled anchors, smooth-L1 over the positive
    ones, both divided by the number of sampled anchors (of the global batch, under `tf.distribute`)."""
    sampled = ops.cast(positive | negative, "float32")
    count = ops.maximum(sum_over_replicas(ops.sum(sampled)), 1.0)
    objectness = ops.cast(objectness, "float32")
    per_anchor = keras.losses.binary_crossentropy(ops.cast(positive, "float32")[..., None], objectness[..., None],
                                                  from_logits=True)
    objectness_loss = ops.sum(per_anchor * sampled) / count
    per_anchor = smooth_l1_loss(targets, ops.cast(deltas, "float32"), smooth_l1_beta)
    box_loss = ops.sum(per_anchor * ops.cast(positive, "float32")) / count
    return objectness_loss, box_loss


def propose(objectness, deltas, anchors, per_level, image_height, image_width, pre_nms_topk, post_nms_topk,
            nms_iou_threshold=0.7, min_size=0.0):
    """The RPN's proposals (`keras_fpn.detection.proposals.generate_proposals` with the RPN's box coding), no
    gradient flowing back into the head (as in torchvision and detectron2): `(boxes [batch, K, 4] pixel xyxy,
    scores [batch, K], valid [batch, K])`."""
    return generate_proposals(
        ops.stop_gradient(objectness), ops.stop_gradient(deltas), anchors, per_level, image_height, image_width,
        pre_nms_topk=pre_nms_topk, post_nms_topk=post_nms_topk, nms_iou_threshold=nms_iou_threshold,
        min_size=min_size, box_weights=RPN_BOX_WEIGHTS)
