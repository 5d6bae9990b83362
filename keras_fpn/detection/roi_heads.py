"""The RoI heads of Faster R-CNN on a pyramid (the FPN paper, Sec. 4.2): RoIs pooled from the level their size
picks (Eq. 1), a box head, a box predictor, their training examples, loss and decoding.

Parts, split as torchvision (`TwoMLPHead`, `FastRCNNPredictor`, `roi_heads.py`) and detectron2 (`box_head.py`,
`fast_rcnn.py`, `roi_heads.py`) split them:
- `BoxHead`: pooled RoI features to one vector per RoI (the paper's "2-fc MLP head": two 1024-d fc + ReLU; or
  convs then fcs, as torchvision's v2 `FastRCNNConvFCHead`);
- `BoxPredictor`: that vector to class logits (background last) and class-specific box deltas;
- `sample_rois`: proposals plus ground truth, sampled to a fixed count with their labels and box targets;
- `roi_loss`: softmax cross-entropy and smooth-L1 of the ground-truth class's deltas;
- `decode_roi_detections`: softmax scores, per-class boxes, per-class NMS;
- `RoIHeads`: holds the heads (any layers with the same input and output contract: `FasterRCNN(box_head=...,
  box_predictor=...)`) and runs pooling, heads and decoding.

Defaults and their sources (torchvision `faster_rcnn.py` / `roi_heads.py`, detectron2 `Base-RCNN-FPN.yaml`):
512 RoIs per image, 25% positive at IoU >= 0.5 (both); ground truth added to the proposals (both); RoIAlign 7x7,
sampling ratio 2 (torchvision), half-pixel aligned (detectron2's ROIAlignV2), from P2-P5; box coding weights
(10, 10, 5, 5) (both); smooth-L1 beta 1/9 normalised by the number of sampled RoIs (torchvision); score threshold
0.05, per-class NMS 0.5, 100 detections per image (both).
"""

import keras
from keras import ops

from keras_fpn.detection.box_coding import batched_iou, decode_deltas, encode_deltas
from keras_fpn.detection.losses import smooth_l1_loss
from keras_fpn.detection.nms import detection_nms
from keras_fpn.detection.roi_align import multilevel_roi_align
from keras_fpn.detection.sampling import sample_balanced
from keras_fpn.ops.boxes import clip_boxes, has_area
from keras_fpn.utils.distribute import sum_over_replicas


@keras.saving.register_keras_serializable(package="keras_fpn")
class BoxHead(keras.layers.Layer):
    """`conv_depth` x (3x3 conv [+ norm] + ReLU), then `fc_depth` fully connected layers with ReLU on each flattened
    RoI (detectron2's `FastRCNNConvFCHead`). The default, 0 convs and 2 fcs, is the FPN paper's "2-fc MLP head"
    (torchvision's `TwoMLPHead`); 4 convs with BatchNorm and 1 fc is torchvision's v2 `FastRCNNConvFCHead`
    (`fasterrcnn_resnet50_fpn_v2`, after Wu & He's "4conv1fc" of detectron2's `NUM_CONV: 4, NUM_FC: 1`).

    Args:
        representation_size: int, default 1024, width of the fc layers.
        conv_depth: int, default 0. conv_filters: int, default 256, channels of the convs.
        fc_depth: int, default 2 (at least 1).
        norm: None (default, convs with biases) or `"batch"` (convs without biases, each followed by
            BatchNormalization). norm_epsilon: float, default 1e-3 (Keras's); torchvision's `nn.BatchNorm2d` is
            1e-5.

    Call arguments:
        pooled: `[R, S, S, C]` RoI features; flattened in (height, width, channel) order after the convs.

    Returns:
        `[R, representation_size]`.
    """

    def __init__(self, representation_size=1024, conv_depth=0, conv_filters=256, fc_depth=2, norm=None,
                 norm_epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "batch"):
            raise ValueError(f"Received norm={norm!r}; expected None or 'batch'.")
        if not isinstance(fc_depth, int) or fc_depth < 1 or not isinstance(conv_depth, int) or conv_depth < 0:
            raise ValueError(f"Received conv_depth={conv_depth!r}, fc_depth={fc_depth!r}; expected conv_depth >= 0 "
                             "and fc_depth >= 1.")
        self.representation_size = representation_size
        self.conv_depth, self.conv_filters, self.fc_depth = conv_depth, conv_filters, fc_depth
        self.norm, self.norm_epsilon = norm, norm_epsilon
        # torchvision initialises these convs Kaiming-normal (fan out), detectron2 c2_msra_fill: the same.
        self.convs = [keras.layers.Conv2D(conv_filters, 3, padding="same", use_bias=norm is None,
                                          activation=None if norm else "relu",
                                          kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
                                          dtype=self.dtype_policy, name=f"conv{index + 1}")
                      for index in range(conv_depth)]
        self.norms = [keras.layers.BatchNormalization(epsilon=norm_epsilon, dtype=self.dtype_policy,
                                                      name=f"conv{index + 1}_norm")
                      for index in range(conv_depth if norm else 0)]
        # fc1 and fc2 keep their names (and attributes) of the 2-fc head, so its files load.
        fcs = [keras.layers.Dense(representation_size, activation="relu", dtype=self.dtype_policy,
                                  name=f"fc{index + 1}") for index in range(fc_depth)]
        self.fc1, self.fc2 = fcs[0], (fcs[1] if fc_depth > 1 else None)
        self.more_fcs = fcs[2:]

    @property
    def fcs(self):
        return [fc for fc in (self.fc1, self.fc2, *self.more_fcs) if fc is not None]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for index, conv in enumerate(self.convs):
            conv.build(shape)
            shape = (*shape[:3], self.conv_filters)
            if self.norms:
                self.norms[index].build(shape)
        flat = 1
        for size in shape[1:]:
            flat *= size
        for fc in self.fcs:
            fc.build((shape[0], flat))
            flat = self.representation_size
        self.built = True

    def call(self, pooled, training=None):
        x = pooled
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = ops.relu(self.norms[index](x, training=training))
        x = ops.reshape(x, (ops.shape(x)[0], -1))
        for fc in self.fcs:
            x = fc(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.representation_size)

    def get_config(self):
        return {**super().get_config(), "representation_size": self.representation_size,
                "conv_depth": self.conv_depth, "conv_filters": self.conv_filters, "fc_depth": self.fc_depth,
                "norm": self.norm, "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="keras_fpn")
class BoxPredictor(keras.layers.Layer):
    """Class logits and class-specific box deltas from the box head's vectors (torchvision's `FastRCNNPredictor`,
    detectron2's `FastRCNNOutputLayers`): `cls_score` to `num_classes + 1` logits, background last, initialised
    N(0, 0.01); `bbox_pred` to `4 * num_classes` deltas, N(0, 0.001) (both libraries' initialisations).

    Args:
        num_classes: int, object classes (the background logit is added).

    Call arguments:
        features: `[R, D]`.

    Returns:
        `(logits [R, num_classes + 1], deltas [R, num_classes, 4])`, float32.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.cls_score = keras.layers.Dense(num_classes + 1, dtype=self.dtype_policy, name="cls_score",
                                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.bbox_pred = keras.layers.Dense(4 * num_classes, dtype=self.dtype_policy, name="bbox_pred",
                                            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        self.cls_score.build(input_shape)
        self.bbox_pred.build(input_shape)
        self.built = True

    def call(self, features):
        logits = ops.cast(self.cls_score(features), "float32")
        deltas = ops.cast(self.bbox_pred(features), "float32")
        return logits, ops.reshape(deltas, (ops.shape(features)[0], self.num_classes, 4))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes + 1), (input_shape[0], self.num_classes, 4)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def sample_rois(proposals, valid, boxes, labels, num_classes, batch_size_per_image=512, positive_fraction=0.25,
                positive_iou=0.5, box_weights=(10.0, 10.0, 5.0, 5.0), seed=None):
    """The RoI heads' training examples: proposals plus ground truth, `batch_size_per_image` sampled per image
    with at most `positive_fraction` positives (IoU >= positive_iou with some box).

    Args:
        proposals: `[batch, P, 4]` pixel xyxy; valid: `[batch, P]` bool. boxes: `[batch, M, 4]` pixel xyxy;
        labels: `[batch, M]` (-1 for padding). num_classes: int. seed: a `keras.random.SeedGenerator` or int.

    Returns:
        `(rois [batch, S, 4], labels [batch, S] (num_classes = background), box targets [batch, S, 4] (the
        matched box's deltas against the RoI, `box_weights`; zero for background), valid [batch, S], matched
        ground-truth index [batch, S])` with `S = batch_size_per_image`; the positives come first.
    """
    gt_valid = labels >= 0
    rois = ops.concatenate([proposals, boxes], axis=1)
    rois_valid = ops.concatenate([valid, gt_valid], axis=1)
    iou = ops.where(gt_valid[:, None, :], batched_iou(rois, boxes), -1.0)
    best_iou, matched = ops.max(iou, axis=-1), ops.argmax(iou, axis=-1)
    positive = rois_valid & (best_iou >= positive_iou)
    negative = rois_valid & ~positive
    positive, negative = sample_balanced(positive, negative, batch_size_per_image, positive_fraction, seed)
    # The sampled RoIs, gathered to a fixed count (positives first; padding rows are not valid).
    order = ops.cast(positive, "float32") * 2.0 + ops.cast(negative, "float32")
    batch = ops.shape(order)[0]
    order = ops.concatenate([order, ops.zeros((batch, batch_size_per_image), "float32")], axis=1)
    chosen, index = ops.top_k(order, k=batch_size_per_image)
    index = ops.minimum(index, ops.shape(rois)[1] - 1)
    sampled_valid = chosen > 0
    sampled_rois = ops.take_along_axis(rois, index[..., None], axis=1)
    sampled_positive = chosen > 1.5
    gt_index = ops.take_along_axis(matched, index, axis=1)
    sampled_labels = ops.where(sampled_positive, ops.take_along_axis(labels, gt_index, axis=1), num_classes)
    gt_boxes = ops.take_along_axis(boxes, gt_index[..., None], axis=1)
    gt_boxes = ops.where(sampled_positive[..., None], gt_boxes, sampled_rois)
    targets = encode_deltas(sampled_rois, gt_boxes, box_weights)
    return (ops.stop_gradient(sampled_rois), sampled_labels, ops.stop_gradient(targets), sampled_valid, gt_index)


def roi_loss(logits, deltas, roi_labels, targets, roi_valid, smooth_l1_beta=1.0 / 9):
    """`(classification loss, box loss)`: softmax cross-entropy over the sampled RoIs; smooth-L1 of the
    ground-truth class's deltas on the positive ones; both divided by the number of sampled RoIs.

    Args:
        logits: `[batch, S, K + 1]`, background last. deltas: `[batch, S, K, 4]`. roi_labels: `[batch, S]`
        (K = background). targets: `[batch, S, 4]`. roi_valid: `[batch, S]` bool.
    """
    num_classes = int(deltas.shape[2])
    valid = ops.cast(roi_valid, "float32")
    count = ops.maximum(sum_over_replicas(ops.sum(valid)), 1.0)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(roi_labels, logits, from_logits=True)
    classification_loss = ops.sum(cross_entropy * valid) / count
    positive = (roi_labels < num_classes) & roi_valid
    class_index = ops.minimum(roi_labels, num_classes - 1)
    class_deltas = ops.take_along_axis(deltas, class_index[..., None, None], axis=2)[:, :, 0]
    per_roi = smooth_l1_loss(targets, class_deltas, smooth_l1_beta)
    box_loss = ops.sum(per_roi * ops.cast(positive, "float32")) / count
    return classification_loss, box_loss


def decode_roi_detections(proposals, valid, logits, deltas, image_height, image_width,
                          box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05, nms_iou_threshold=0.5,
                          max_detections=100):
    """Detections from the RoI head's outputs: softmax scores, each class's own box decoded from its deltas and
    clipped to the image, per-class NMS.

    Args:
        proposals: `[batch, R, 4]` pixel xyxy. valid: `[batch, R]` bool (padding proposals score 0).
        logits: `[batch, R, num_classes + 1]`, background last. deltas: `[batch, R, num_classes, 4]`.
        image_height, image_width: the size boxes are clipped to: ints, scalar tensors, or `[batch, 1, 1]` (each
            image's content size); boxes left under `MIN_BOX_SIZE` wide or high are dropped.

    Returns:
        The `predict` dict: `boxes [batch, max_detections, 4]` pixel xyxy, `scores`, `labels` (-1 past
        `num_detections`), `num_detections [batch]`.
    """
    num_classes = int(deltas.shape[2])
    scores = ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., :num_classes]
    scores = scores * ops.cast(valid, "float32")[..., None]
    boxes = clip_boxes(decode_deltas(proposals[:, :, None, :], deltas, box_weights), image_height, image_width)
    scores = ops.where(has_area(boxes), scores, 0.0)  # boxes clipped to nothing are no detections
    return detection_nms(boxes, scores, max_detections=max_detections, iou_threshold=nms_iou_threshold,
                         score_threshold=score_threshold)


class RoIHeads(keras.layers.Layer):
    """Holds the box head, the box predictor and (Mask R-CNN) the mask head, and runs them on RoIs of a pyramid.

    Not serialized on its own: `FasterRCNN.get_config` stores each head and the pooling arguments.

    Args:
        box_head: layer, `[R, S, S, C]` pooled features -> `[R, D]` (`BoxHead` by default).
        box_predictor: layer, `[R, D]` -> `(logits [R, K + 1], deltas [R, K, 4])` (`BoxPredictor`).
        min_level, max_level: the levels RoIs are pooled from. pool_size, sampling_ratio: RoIAlign's.
        mask_head: None, or a layer `[R, P, P, C]` -> `[R, 2P, 2P, K]` mask logits. mask_pool_size: its P.
        aligned: bool, default True: RoIAlign's half-pixel convention (`keras_fpn.detection.roi_align.map_corners`).
    """

    def __init__(self, box_head, box_predictor, min_level=2, max_level=5, pool_size=7, sampling_ratio=2,
                 mask_head=None, mask_pool_size=14, aligned=True, **kwargs):
        super().__init__(**kwargs)
        self.aligned = aligned
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_head = mask_head
        self.min_level, self.max_level = min_level, max_level
        self.pool_size, self.sampling_ratio, self.mask_pool_size = pool_size, sampling_ratio, mask_pool_size
        self.built = True

    def pool(self, features, rois, pool_size):
        """`[batch * R, pool_size, pool_size, C]` RoIAlign features of `rois [batch, R, 4]` (pixel xyxy)."""
        pooled = multilevel_roi_align(features, rois, self.min_level, self.max_level, pool_size,
                                      self.sampling_ratio, aligned=self.aligned)
        batch, count = ops.shape(rois)[0], ops.shape(rois)[1]
        # The channel count kept static (not -1): a convolution on an unknown channel count is compiled with XLA
        # by Keras's TensorFlow backend, which tf2onnx cannot convert.
        channels = pooled.shape[-1] if pooled.shape[-1] is not None else -1
        return ops.reshape(pooled, (batch * count, pool_size, pool_size, channels))

    def box_outputs(self, features, rois):
        """Class logits `[batch, R, K + 1]` (background last) and class-specific deltas `[batch, R, K, 4]` of
        `rois [batch, R, 4]` (pixel xyxy) on the pyramid `features` (`{"P2": ..., ...}`)."""
        batch, count = ops.shape(rois)[0], ops.shape(rois)[1]
        logits, deltas = self.box_predictor(self.box_head(self.pool(features, rois, self.pool_size)))
        num_classes = int(deltas.shape[1])
        return (ops.reshape(ops.cast(logits, "float32"), (batch, count, num_classes + 1)),
                ops.reshape(ops.cast(deltas, "float32"), (batch, count, num_classes, 4)))

    def mask_logits(self, features, boxes):
        """Mask logits `[batch, R, 2P, 2P, K]` of pixel xyxy `boxes [batch, R, 4]`."""
        batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
        logits = ops.cast(self.mask_head(self.pool(features, boxes, self.mask_pool_size)), "float32")
        return ops.reshape(logits, (batch, count, *logits.shape[1:]))
