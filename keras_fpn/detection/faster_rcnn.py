"""Faster R-CNN with a Feature Pyramid Network (Lin et al. 2017, arXiv 1612.03144, Sec. 4): an RPN over P2-P6 with
one shared head, and RoI heads that pool each region from the level its size picks (the paper's Eq. 1).

Training is plain `model.fit(images, {"boxes", "labels"})`: anchors are matched and sampled, proposals made, ground
truth added and RoIs sampled inside `compute_loss`. `predict` and the exported SavedModel run proposals, RoIAlign,
the box head and per-class NMS in the graph (`detect`). Every backend: under TensorFlow, NMS and RoIAlign are
TensorFlow's ops (`combined_non_max_suppression`, `crop_and_resize`); under JAX they are `keras.ops` with static
shapes (`keras_fpn.detection.nms`, `roi_align.sample_regions`), jit-compiled with the rest; both give the same
detections (tests/backends).

Defaults and their sources (torchvision `models/detection/faster_rcnn.py`, `rpn.py`, `roi_heads.py`; detectron2
`configs/Base-RCNN-FPN.yaml` and `config/defaults.py`):
- anchors: one size per level, 32-512 px on P2-P6 (anchor_scale 8 strides), aspect ratios 0.5, 1, 2 (both);
- RPN head: 3x3 conv + ReLU, 1x1 objectness and 1x1 deltas, shared by all levels, N(0, 0.01) init (both);
- RPN targets: IoU >= 0.7 positive, < 0.3 negative, each box's best anchors positive; 256 anchors per image, at
  most half positive (both);
- proposals: top 2,000 (training) / 1,000 (inference) per level before NMS, NMS 0.7 within each level, top 1,000
  per image after it (detectron2's POST_NMS_TOPK_TRAIN/TEST; torchvision keeps 2,000 while training);
- RoI heads: ground truth added to the proposals; 512 RoIs per image, 25% positive at IoU >= 0.5 (both);
  RoIAlign 7x7, sampling ratio 2 (torchvision; detectron2 samples adaptively), half-pixel aligned (detectron2's
  ROIAlignV2), from P2-P5 by Eq. 1 with k0 = 4 and 224 px; two 1024-d fc layers (the paper's "2-fc MLP head");
- box coding weights (10, 10, 5, 5) for the RoI head and (1, 1, 1, 1) for the RPN (both); smooth-L1 with
  beta 1/9 for both box losses, normalised by the number of sampled examples (torchvision);
- inference: score threshold 0.05, per-class NMS 0.5, 100 detections per image (both).
"""

import keras
from keras import ops
from keras.utils import bounding_boxes

from keras_fpn.detection.anchors import DEFAULT_ASPECT_RATIOS, AnchorGenerator
from keras_fpn.detection.box_coding import batched_iou, decode_deltas, encode_deltas, match_anchors
from keras_fpn.detection.checks import check_box_scale, check_target_values, clip_and_drop
from keras_fpn.detection.detector import Detector, check_box_format, dense_targets, resolve_backbone
from keras_fpn.detection.losses import smooth_l1_loss
from keras_fpn.detection.nms import detection_nms
from keras_fpn.detection.proposals import generate_proposals
from keras_fpn.detection.roi_align import multilevel_roi_align
from keras_fpn.detection.sampling import sample_balanced
from keras_fpn.layers.levels import level_key
from keras_fpn.training.distribute import num_replicas, sum_over_replicas

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def decode_roi_detections(proposals, valid, logits, deltas, image_height, image_width, box_weights=(10.0, 10.0, 5.0, 5.0),
                          score_threshold=0.05, nms_iou_threshold=0.5, max_detections=100):
    """Detections from the RoI head's outputs: softmax scores, each class's own box decoded from its deltas and
    clipped to the image, per-class NMS.

    Args:
        proposals: `[batch, R, 4]` pixel xyxy. valid: `[batch, R]` bool (padding proposals score 0).
        logits: `[batch, R, num_classes + 1]`, background last. deltas: `[batch, R, num_classes, 4]`.

    Returns:
        The `predict` dict: `boxes [batch, max_detections, 4]` pixel xyxy, `scores`, `labels` (-1 past
        `num_detections`), `num_detections [batch]`.
    """
    num_classes = int(deltas.shape[2])
    scores = ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., :num_classes]
    scores = scores * ops.cast(valid, "float32")[..., None]
    boxes = decode_deltas(proposals[:, :, None, :], deltas, box_weights)  # [batch, R, num_classes, 4]
    height, width = ops.cast(image_height, "float32"), ops.cast(image_width, "float32")
    boxes = ops.stack([ops.clip(boxes[..., 0], 0.0, width), ops.clip(boxes[..., 1], 0.0, height),
                       ops.clip(boxes[..., 2], 0.0, width), ops.clip(boxes[..., 3], 0.0, height)], axis=-1)
    return detection_nms(boxes, scores, max_detections=max_detections, iou_threshold=nms_iou_threshold,
                         score_threshold=score_threshold)


@keras.saving.register_keras_serializable(package="keras_fpn")
class RPNHead(keras.layers.Layer):
    """The RPN's head, shared by every pyramid level: a 3x3 conv + ReLU, then 1x1 convs to one objectness logit
    and 4 box deltas per anchor.

    Args:
        num_anchors: int, anchors per location. filters: int, default 256 (the pyramid's channels).

    Returns (called on one `[batch, H, W, C]` map): `(objectness [batch, H*W*A], deltas [batch, H*W*A, 4])`.
    """

    def __init__(self, num_anchors, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.filters = filters
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                                        dtype=self.dtype_policy, name="conv")
        self.objectness = keras.layers.Conv2D(num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy,
                                              name="objectness")
        self.box = keras.layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, dtype=self.dtype_policy,
                                       name="box")

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden = (*input_shape[:3], self.filters)
        self.objectness.build(hidden)
        self.box.build(hidden)
        self.built = True

    def call(self, features):
        x = self.conv(features)
        batch = ops.shape(features)[0]
        return (ops.reshape(self.objectness(x), (batch, -1)),
                ops.reshape(self.box(x), (batch, -1, 4)))

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_fpn")
class FasterRCNN(Detector):
    """Faster R-CNN on a Feature Pyramid Network (the FPN paper's own detector).

    Args:
        num_classes: int, number of object classes (labels 0..num_classes-1; the classifier adds background).
        backbone, backbone_weights, input_shape, backbone_kwargs, bounding_box_format: as `RetinaNet`.
        min_level, max_level: ints, default 2 and 6: the RPN's levels (P6 subsampled from P5 unless
            `backbone_kwargs["pyramid_kwargs"]["extra_levels_from"]` says otherwise).
        num_channels: int, default 256. Pyramid channels (also the RPN head's).
        anchor_scale: float, default 8. Anchor size in strides of its level (32 px on P2 ... 512 on P6).
        anchor_scales: default (1,): multipliers of that size at every location (a single-level RPN, as the
            paper's C4 / C5 / P2-only baselines, needs several, e.g. (0.25, 0.5, 1, 2, 4)).
        aspect_ratios: default (0.5, 1, 2).
        rpn_positive_iou, rpn_negative_iou: default 0.7 and 0.3.
        rpn_batch_size_per_image: default 256. rpn_positive_fraction: default 0.5.
        rpn_pre_nms_topk_train, rpn_pre_nms_topk_test: default 2000 and 1000, per level.
        rpn_post_nms_topk_train, rpn_post_nms_topk_test: default 1000 and 1000, per image.
        rpn_nms_iou_threshold: default 0.7. rpn_min_size: default 0, proposals smaller than this are dropped.
        rpn_min_level, rpn_max_level: default None (the pyramid's `min_level` and `max_level`): the levels the RPN
            runs on. A narrower range keeps the whole pyramid but proposes from those levels only (the FPN paper's
            "only finest level" row: `rpn_min_level=rpn_max_level=2` with several `anchor_scales`).
        roi_min_level, roi_max_level: default 2 and 5, the levels RoIs are pooled from.
        pool_size: default 7. sampling_ratio: default 2.
        roi_batch_size_per_image: default 512. roi_positive_fraction: default 0.25. roi_positive_iou: default 0.5.
        head_dim: default 1024, width of the two fc layers.
        box_weights: default (10, 10, 5, 5), of the RoI head's (y, x, h, w) deltas.
        smooth_l1_beta: default 1/9, of both box losses.
        score_threshold: default 0.05. nms_iou_threshold: default 0.5. max_detections: default 100.
        seed: int or None, of the anchor and RoI sampling.
        rpn_only: bool, default False. Train the RPN alone (the FPN paper's Table 1): `compute_loss` has only the
            RPN losses, and `propose(images)` gives the proposals to score with
            `keras_fpn.evaluation.evaluate_proposals`; `predict` still runs the (untrained) RoI heads.
        **kwargs: base `keras.Model` arguments (`name`, `dtype`).

    Call arguments:
        images: `[batch, height, width, 3]` raw RGB in [0, 255].

    Returns:
        Calling the model: the pyramid `{"P2": ..., "P6": ...}` and the RPN's `"rpn_objectness" [batch, N]` logits
        and `"rpn_box" [batch, N, 4]` deltas over all `N` anchors. `predict`: the same dict as `RetinaNet`
        (`boxes`, `scores`, `labels`, `num_detections`).

    Example:

    >>> model = FasterRCNN(num_classes=3, backbone="MobileNetV3Small", backbone_weights=None, num_channels=32,
    ...                    head_dim=64, rpn_pre_nms_topk_train=200, rpn_post_nms_topk_train=100,
    ...                    roi_batch_size_per_image=64)
    >>> model.compile(optimizer="adam")
    >>> images = keras.random.uniform((2, 128, 128, 3), 0, 255)
    >>> y = {"boxes": [[[10.0, 10.0, 50.0, 60.0]], [[30.0, 40.0, 90.0, 120.0]]], "labels": [[0], [2]]}
    >>> history = model.fit(images, y, epochs=1, verbose=0)
    >>> sorted(model.predict(images, verbose=0))
    ['boxes', 'labels', 'num_detections', 'scores']
    """

    def __init__(
        self,
        num_classes,
        backbone="ResNet50",
        backbone_weights="imagenet",
        min_level=2,
        max_level=6,
        num_channels=256,
        input_shape=None,
        backbone_kwargs=None,
        bounding_box_format="xyxy",
        anchor_scale=8.0,
        anchor_scales=(1.0,),
        aspect_ratios=DEFAULT_ASPECT_RATIOS,
        rpn_positive_iou=0.7,
        rpn_negative_iou=0.3,
        rpn_batch_size_per_image=256,
        rpn_positive_fraction=0.5,
        rpn_pre_nms_topk_train=2000,
        rpn_pre_nms_topk_test=1000,
        rpn_post_nms_topk_train=1000,
        rpn_post_nms_topk_test=1000,
        rpn_nms_iou_threshold=0.7,
        rpn_min_size=0.0,
        rpn_min_level=None,
        rpn_max_level=None,
        roi_min_level=2,
        roi_max_level=5,
        pool_size=7,
        sampling_ratio=2,
        roi_batch_size_per_image=512,
        roi_positive_fraction=0.25,
        roi_positive_iou=0.5,
        head_dim=1024,
        box_weights=(10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta=1.0 / 9,
        score_threshold=0.05,
        nms_iou_threshold=0.5,
        max_detections=100,
        seed=None,
        rpn_only=False,
        **kwargs,
    ):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"Received num_classes={num_classes!r}; expected a positive integer.")
        if not 0.0 <= rpn_negative_iou <= rpn_positive_iou <= 1.0:
            raise ValueError(f"Received rpn_negative_iou={rpn_negative_iou}, rpn_positive_iou={rpn_positive_iou}; "
                             "expected 0 <= rpn_negative_iou <= rpn_positive_iou <= 1.")
        for name, value in (("rpn_positive_fraction", rpn_positive_fraction),
                            ("roi_positive_fraction", roi_positive_fraction)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"Received {name}={value}; expected 0 < {name} <= 1.")
        if len(box_weights) != 4:
            raise ValueError(f"Received box_weights={box_weights!r}; expected 4 numbers for (y, x, h, w).")
        if not min_level <= roi_min_level <= roi_max_level <= max_level:
            raise ValueError(f"Received roi_min_level={roi_min_level}, roi_max_level={roi_max_level} with pyramid "
                             f"levels {min_level}-{max_level}; expected RoI levels inside the pyramid's.")
        check_box_format(bounding_box_format)
        backbone_kwargs = dict(backbone_kwargs or {})
        backbone_kwargs["pyramid_kwargs"] = {"extra_levels_from": "subsample",
                                             **backbone_kwargs.get("pyramid_kwargs", {})}
        backbone = resolve_backbone(backbone, backbone_weights, input_shape, min_level, max_level, num_channels,
                                    backbone_kwargs)

        rpn_min_level = backbone.min_level if rpn_min_level is None else rpn_min_level
        rpn_max_level = backbone.max_level if rpn_max_level is None else rpn_max_level
        if not backbone.min_level <= rpn_min_level <= rpn_max_level <= backbone.max_level:
            raise ValueError(f"Received rpn_min_level={rpn_min_level}, rpn_max_level={rpn_max_level} with pyramid "
                             f"levels {backbone.min_level}-{backbone.max_level}; expected RPN levels inside the "
                             "pyramid's.")
        anchor_generator = AnchorGenerator(rpn_min_level, rpn_max_level, anchor_scale, anchor_scales, aspect_ratios)
        images = keras.Input(shape=backbone.image_shape, name="images")
        pyramid = backbone(images)
        rpn_head = RPNHead(anchor_generator.anchors_per_location, backbone.num_channels, name="rpn_head")
        objectness, deltas = [], []
        for level in range(rpn_min_level, rpn_max_level + 1):
            level_objectness, level_deltas = rpn_head(pyramid[level_key("P", level)])
            objectness.append(level_objectness)
            deltas.append(level_deltas)
        outputs = dict(pyramid)
        outputs["rpn_objectness"] = keras.layers.Concatenate(axis=1, dtype="float32", name="rpn_objectness")(
            objectness)
        outputs["rpn_box"] = keras.layers.Concatenate(axis=1, dtype="float32", name="rpn_box")(deltas)
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # The RoI heads run on sampled proposals, outside the functional graph; their layers are built here.
        pooled_size = pool_size * pool_size * backbone.num_channels
        self.box_head_fc1 = keras.layers.Dense(head_dim, activation="relu", name="box_head_fc1")
        self.box_head_fc2 = keras.layers.Dense(head_dim, activation="relu", name="box_head_fc2")
        self.box_classifier = keras.layers.Dense(
            num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="box_classifier")
        self.box_regressor = keras.layers.Dense(
            4 * num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="box_regressor")
        self.box_head_fc1.build((None, pooled_size))
        self.box_head_fc2.build((None, head_dim))
        self.box_classifier.build((None, head_dim))
        self.box_regressor.build((None, head_dim))
        if rpn_only:  # the RoI heads get no gradient: keep them out of the optimizer (no Keras warning)
            for layer in (self.box_head_fc1, self.box_head_fc2, self.box_classifier, self.box_regressor):
                layer.trainable = False

        self.backbone = backbone
        self.num_classes = num_classes
        self.bounding_box_format = bounding_box_format
        self.anchor_generator = anchor_generator
        self.anchor_scale = anchor_scale
        self.aspect_ratios = tuple(aspect_ratios)
        self.rpn_positive_iou = rpn_positive_iou
        self.rpn_negative_iou = rpn_negative_iou
        self.rpn_batch_size_per_image = rpn_batch_size_per_image
        self.rpn_positive_fraction = rpn_positive_fraction
        self.rpn_pre_nms_topk_train = rpn_pre_nms_topk_train
        self.rpn_pre_nms_topk_test = rpn_pre_nms_topk_test
        self.rpn_post_nms_topk_train = rpn_post_nms_topk_train
        self.rpn_post_nms_topk_test = rpn_post_nms_topk_test
        self.rpn_nms_iou_threshold = rpn_nms_iou_threshold
        self.rpn_min_size = rpn_min_size
        self.rpn_min_level = rpn_min_level
        self.rpn_max_level = rpn_max_level
        self.roi_min_level = roi_min_level
        self.roi_max_level = roi_max_level
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio
        self.roi_batch_size_per_image = roi_batch_size_per_image
        self.roi_positive_fraction = roi_positive_fraction
        self.roi_positive_iou = roi_positive_iou
        self.head_dim = head_dim
        self.box_weights = tuple(float(w) for w in box_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        self.seed = seed
        self.rpn_only = bool(rpn_only)
        self.anchor_scales = tuple(float(scale) for scale in anchor_scales)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.rpn_objectness_loss_tracker = keras.metrics.Mean(name="rpn_objectness_loss")
        self.rpn_box_loss_tracker = keras.metrics.Mean(name="rpn_box_loss")
        if not rpn_only:  # an RPN trained alone logs its own losses only
            self.classification_loss_tracker = keras.metrics.Mean(name="classification_loss")
            self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.dropped_boxes_tracker = keras.metrics.Sum(name="dropped_boxes")

    # -- anchors and pooling ------------------------------------------------------------------------------------

    def _levels(self):
        return range(self.rpn_min_level, self.rpn_max_level + 1)

    def anchors_from(self, y_pred):
        """`(anchors [N, 4], anchors per level)` for the pyramid maps in `y_pred` (static or runtime sizes)."""
        shapes = {}
        for level in self._levels():
            features = y_pred[level_key("P", level)]
            dynamic = ops.shape(features)
            shapes[level] = tuple(dynamic[i] if features.shape[i] is None else features.shape[i] for i in (1, 2))
        anchors = self.anchor_generator(shapes)
        per_level = [h * w * self.anchor_generator.anchors_per_location for h, w in shapes.values()]
        return anchors, per_level

    def box_head(self, y_pred, rois):
        """Class logits `[batch, R, num_classes + 1]` (background last) and class-specific deltas
        `[batch, R, num_classes, 4]` of `rois [batch, R, 4]` (pixel xyxy)."""
        pooled = multilevel_roi_align(y_pred, rois, self.roi_min_level, self.roi_max_level, self.pool_size,
                                      self.sampling_ratio)
        batch, count = ops.shape(rois)[0], ops.shape(rois)[1]
        x = ops.reshape(pooled, (batch * count, -1))
        x = self.box_head_fc2(self.box_head_fc1(x))
        logits = ops.reshape(ops.cast(self.box_classifier(x), "float32"), (batch, count, self.num_classes + 1))
        deltas = ops.reshape(ops.cast(self.box_regressor(x), "float32"), (batch, count, self.num_classes, 4))
        return logits, deltas

    def _proposals(self, y_pred, anchors, per_level, height, width, training):
        return generate_proposals(
            ops.stop_gradient(y_pred["rpn_objectness"]), ops.stop_gradient(y_pred["rpn_box"]), anchors, per_level,
            height, width,
            pre_nms_topk=self.rpn_pre_nms_topk_train if training else self.rpn_pre_nms_topk_test,
            post_nms_topk=self.rpn_post_nms_topk_train if training else self.rpn_post_nms_topk_test,
            nms_iou_threshold=self.rpn_nms_iou_threshold, min_size=self.rpn_min_size, box_weights=RPN_BOX_WEIGHTS)

    @staticmethod
    def _image_size(images):
        height, width = images.shape[1], images.shape[2]
        dynamic = ops.shape(images)
        return (dynamic[1] if height is None else height), (dynamic[2] if width is None else width)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        boxes, labels = dense_targets(y)
        height, width = self._image_size(x)
        boxes = check_box_scale(boxes, labels, height, width, self.bounding_box_format)
        boxes = bounding_boxes.convert_format(boxes, self.bounding_box_format, "xyxy", height=height, width=width)
        boxes, labels = check_target_values(boxes, labels, self.num_classes, self.bounding_box_format)
        boxes, labels, dropped = clip_and_drop(boxes, labels, height, width)
        anchors, per_level = self.anchors_from(y_pred)
        rpn_objectness_loss, rpn_box_loss = self._rpn_loss(y_pred, anchors, boxes, labels)
        if self.rpn_only:
            return self._total({"rpn_objectness_loss": rpn_objectness_loss, "rpn_box_loss": rpn_box_loss}, dropped)

        proposals, _, valid = self._proposals(y_pred, anchors, per_level, height, width, training=True)
        rois, roi_labels, roi_targets, roi_valid, roi_gt_index = self._sample_rois(proposals, valid, boxes, labels)
        logits, deltas = self.box_head(y_pred, rois)
        classification_loss, box_loss = self._roi_loss(logits, deltas, roi_labels, roi_targets, roi_valid)
        losses = {"rpn_objectness_loss": rpn_objectness_loss, "rpn_box_loss": rpn_box_loss,
                  "classification_loss": classification_loss, "box_loss": box_loss}
        losses.update(self.extra_losses(y, y_pred, rois, roi_labels, roi_valid, roi_gt_index))
        return self._total(losses, dropped)

    def _total(self, losses, dropped):
        """Logs each loss and the dropped boxes; returns their sum (plus any layer losses)."""
        replicas = num_replicas()
        for name, value in losses.items():
            getattr(self, f"{name}_tracker").update_state(value * replicas)
        self.dropped_boxes_tracker.update_state(dropped)
        loss = sum(losses.values())
        if self.losses:
            loss = loss + ops.sum(self.losses) / replicas
        return loss

    def extra_losses(self, y, y_pred, rois, roi_labels, roi_valid, roi_gt_index):
        """Losses of heads a subclass adds on the sampled RoIs (Mask R-CNN's mask head), by name; each needs a
        `{name}_tracker` metric. `rois [batch, S, 4]` pixel xyxy, positives first; `roi_labels` (num_classes for
        background), `roi_valid` and `roi_gt_index` (the ground-truth box each RoI matched) `[batch, S]`."""
        return {}

    def _rpn_loss(self, y_pred, anchors, boxes, labels):
        """Objectness BCE and smooth-L1 over the sampled anchors, both divided by the number sampled."""
        matched, positive, negative = match_anchors(anchors, boxes, labels, self.rpn_positive_iou,
                                                    self.rpn_negative_iou, allow_low_quality_matches=True)
        positive, negative = sample_balanced(positive, negative, self.rpn_batch_size_per_image,
                                             self.rpn_positive_fraction, self.seed_generator)
        sampled = ops.cast(positive | negative, "float32")
        count = ops.maximum(sum_over_replicas(ops.sum(sampled)), 1.0)
        logits = y_pred["rpn_objectness"]
        objectness = keras.losses.binary_crossentropy(ops.cast(positive, "float32")[..., None], logits[..., None],
                                                      from_logits=True)
        objectness_loss = ops.sum(objectness * sampled) / count
        matched_boxes = ops.take_along_axis(boxes, matched[..., None], axis=1)
        matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])
        targets = encode_deltas(anchors, matched_boxes, RPN_BOX_WEIGHTS)
        per_anchor = smooth_l1_loss(targets, y_pred["rpn_box"], self.smooth_l1_beta)
        box_loss = ops.sum(per_anchor * ops.cast(positive, "float32")) / count
        return objectness_loss, box_loss

    def _sample_rois(self, proposals, valid, boxes, labels):
        """The RoI heads' training examples: proposals plus ground truth, `roi_batch_size_per_image` sampled per
        image with at most `roi_positive_fraction` positives (IoU >= roi_positive_iou).

        Returns `(rois [batch, S, 4], labels [batch, S] (num_classes = background), box targets [batch, S, 4],
        valid [batch, S], matched ground-truth index [batch, S])` with `S = roi_batch_size_per_image`; the
        positives come first.
        """
        gt_valid = labels >= 0
        rois = ops.concatenate([proposals, boxes], axis=1)
        rois_valid = ops.concatenate([valid, gt_valid], axis=1)
        iou = ops.where(gt_valid[:, None, :], batched_iou(rois, boxes), -1.0)
        best_iou, matched = ops.max(iou, axis=-1), ops.argmax(iou, axis=-1)
        positive = rois_valid & (best_iou >= self.roi_positive_iou)
        negative = rois_valid & ~positive
        positive, negative = sample_balanced(positive, negative, self.roi_batch_size_per_image,
                                             self.roi_positive_fraction, self.seed_generator)
        # The sampled RoIs, gathered to a fixed count (positives first; padding rows are not valid).
        size = self.roi_batch_size_per_image
        order = ops.cast(positive, "float32") * 2.0 + ops.cast(negative, "float32")
        batch = ops.shape(order)[0]
        order = ops.concatenate([order, ops.zeros((batch, size), "float32")], axis=1)
        chosen, index = ops.top_k(order, k=size)
        index = ops.minimum(index, ops.shape(rois)[1] - 1)
        sampled_valid = chosen > 0
        sampled_rois = ops.take_along_axis(rois, index[..., None], axis=1)
        sampled_positive = chosen > 1.5
        gt_index = ops.take_along_axis(matched, index, axis=1)
        sampled_labels = ops.where(sampled_positive, ops.take_along_axis(labels, gt_index, axis=1), self.num_classes)
        gt_boxes = ops.take_along_axis(boxes, gt_index[..., None], axis=1)
        gt_boxes = ops.where(sampled_positive[..., None], gt_boxes, sampled_rois)
        targets = encode_deltas(sampled_rois, gt_boxes, self.box_weights)
        return (ops.stop_gradient(sampled_rois), sampled_labels, ops.stop_gradient(targets), sampled_valid,
                gt_index)

    def _roi_loss(self, logits, deltas, roi_labels, targets, roi_valid):
        """Softmax cross-entropy over the sampled RoIs; smooth-L1 of the ground-truth class's deltas on the
        positive ones; both divided by the number of sampled RoIs."""
        valid = ops.cast(roi_valid, "float32")
        count = ops.maximum(sum_over_replicas(ops.sum(valid)), 1.0)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(roi_labels, logits, from_logits=True)
        classification_loss = ops.sum(cross_entropy * valid) / count
        positive = (roi_labels < self.num_classes) & roi_valid
        class_index = ops.minimum(roi_labels, self.num_classes - 1)
        class_deltas = ops.take_along_axis(deltas, class_index[..., None, None], axis=2)[:, :, 0]
        per_roi = smooth_l1_loss(targets, class_deltas, self.smooth_l1_beta)
        box_loss = ops.sum(per_roi * ops.cast(positive, "float32")) / count
        return classification_loss, box_loss

    # -- inference ----------------------------------------------------------------------------------------------

    def detect(self, images):
        detections, _ = self.detect_with_features(images)
        return detections

    def propose(self, images, post_nms_topk=None):
        """The RPN's proposals for `images` as at inference: `(boxes [batch, K, 4] pixel xyxy, objectness scores
        [batch, K], valid [batch, K])`, `K = post_nms_topk` (default `rpn_post_nms_topk_test`)."""
        from keras_fpn.detection.checks import check_images
        from keras_fpn.detection.detector import backend_input

        images = check_images(ops.convert_to_tensor(backend_input(images)), 2 ** self.backbone.max_level)
        y_pred = self(images, training=False)
        height, width = self._image_size(images)
        anchors, per_level = self.anchors_from(y_pred)
        return generate_proposals(
            y_pred["rpn_objectness"], y_pred["rpn_box"], anchors, per_level, height, width,
            pre_nms_topk=self.rpn_pre_nms_topk_test, post_nms_topk=post_nms_topk or self.rpn_post_nms_topk_test,
            nms_iou_threshold=self.rpn_nms_iou_threshold, min_size=self.rpn_min_size, box_weights=RPN_BOX_WEIGHTS)

    def detect_with_features(self, images):
        """`detect`'s detections (boxes in `bounding_box_format`) and the pyramid they came from, with the
        detections' pixel xyxy boxes as `"pixel_boxes"` in the second result (for heads run on detections)."""
        y_pred = self(images, training=False)
        height, width = self._image_size(images)
        anchors, per_level = self.anchors_from(y_pred)
        proposals, _, valid = self._proposals(y_pred, anchors, per_level, height, width, training=False)
        logits, deltas = self.box_head(y_pred, proposals)
        detections = decode_roi_detections(
            proposals, valid, logits, deltas, height, width, self.box_weights, self.score_threshold,
            self.nms_iou_threshold, self.max_detections)
        pixel_boxes = detections["boxes"]
        detections["boxes"] = bounding_boxes.convert_format(pixel_boxes, "xyxy", self.bounding_box_format,
                                                            height=height, width=width)
        return detections, {**y_pred, "pixel_boxes": pixel_boxes}

    # -- presets and serialization ------------------------------------------------------------------------------

    @classmethod
    def record_kwargs(cls, record):
        from keras_fpn import models

        kwargs = models.detector_kwargs(record, min_level=2, max_level=6)
        for key, value in record.get("rpn", {}).items():
            if key != "source":
                kwargs[key if key.startswith("rpn_") else f"rpn_{key}"] = value
        names = {"min_level": "roi_min_level", "max_level": "roi_max_level",
                 "batch_size_per_image": "roi_batch_size_per_image", "positive_fraction": "roi_positive_fraction",
                 "positive_iou": "roi_positive_iou"}
        for key, value in record.get("roi_heads", {}).items():
            if key != "source":
                kwargs[names.get(key, key)] = tuple(value) if isinstance(value, list) else value
        kwargs.update(record.get("detection", {}))
        return kwargs

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "backbone_weights": None,
            "min_level": self.backbone.min_level,
            "max_level": self.backbone.max_level,
            "num_channels": self.backbone.num_channels,
            "input_shape": self.backbone.image_shape,
            "backbone_kwargs": {},
            "bounding_box_format": self.bounding_box_format,
            "anchor_scale": self.anchor_scale,
            "aspect_ratios": self.aspect_ratios,
            "rpn_positive_iou": self.rpn_positive_iou,
            "rpn_negative_iou": self.rpn_negative_iou,
            "rpn_batch_size_per_image": self.rpn_batch_size_per_image,
            "rpn_positive_fraction": self.rpn_positive_fraction,
            "rpn_pre_nms_topk_train": self.rpn_pre_nms_topk_train,
            "rpn_pre_nms_topk_test": self.rpn_pre_nms_topk_test,
            "rpn_post_nms_topk_train": self.rpn_post_nms_topk_train,
            "rpn_post_nms_topk_test": self.rpn_post_nms_topk_test,
            "rpn_nms_iou_threshold": self.rpn_nms_iou_threshold,
            "rpn_min_size": self.rpn_min_size,
            "rpn_min_level": self.rpn_min_level,
            "rpn_max_level": self.rpn_max_level,
            "roi_min_level": self.roi_min_level,
            "roi_max_level": self.roi_max_level,
            "pool_size": self.pool_size,
            "sampling_ratio": self.sampling_ratio,
            "roi_batch_size_per_image": self.roi_batch_size_per_image,
            "roi_positive_fraction": self.roi_positive_fraction,
            "roi_positive_iou": self.roi_positive_iou,
            "head_dim": self.head_dim,
            "box_weights": self.box_weights,
            "smooth_l1_beta": self.smooth_l1_beta,
            "score_threshold": self.score_threshold,
            "nms_iou_threshold": self.nms_iou_threshold,
            "max_detections": self.max_detections,
            "seed": self.seed,
            "anchor_scales": self.anchor_scales,
            "rpn_only": self.rpn_only,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
