"""Faster R-CNN with a Feature Pyramid Network (Lin et al. 2017, arXiv 1612.03144, Sec. 4): an RPN over P2-P6 with
one shared head, and RoI heads that pool each region from the level its size picks (the paper's Eq. 1).

This module only assembles the parts, as torchvision's `GeneralizedRCNN` does: the backbone (`FPNBackbone`), the
RPN (`keras_fpn.detection.rpn`) and the RoI heads (`keras_fpn.detection.roi_heads`). The heads are arguments
(`rpn_head=`, `box_head=`, `box_predictor=`); by default they are built from the flat arguments below.

Training is plain `model.fit(images, {"boxes", "labels"})`: anchors are matched and sampled, proposals made, ground
truth added and RoIs sampled inside `compute_loss`. `predict` and the exported SavedModel run proposals, RoIAlign,
the box head and per-class NMS in the graph (`detect`). Every backend: under TensorFlow, NMS and RoIAlign are
TensorFlow's ops (`combined_non_max_suppression`, `crop_and_resize`); under JAX they are `keras.ops` with static
shapes (`keras_fpn.detection.nms`, `roi_align.sample_regions`), jit-compiled with the rest; both give the same
detections (tests/backends).

Defaults and their sources (torchvision `models/detection/faster_rcnn.py`, `rpn.py`, `roi_heads.py`; detectron2
`configs/Base-RCNN-FPN.yaml` and `config/defaults.py`):
- anchors: one size per level, 32-512 px on P2-P6 (anchor_scale 8 strides), aspect ratios 0.5, 1, 2 (both);
- RPN head: 3x3 conv + ReLU, 1x1 objectness and 1x1 deltas, shared by all levels, N(0, 0.01) init (both;
  torchvision's v2 models stack two 3x3 convs: `rpn_conv_depth`);
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

from keras_fpn.detection.anchors import DEFAULT_ASPECT_RATIOS, AnchorGenerator, table_lookups
from keras_fpn.detection.detector import (Detector, check_arguments, content_limits, image_size,
                                          resolve_backbone)
from keras_fpn.detection.roi_heads import (BoxHead, BoxPredictor, RoIHeads, decode_roi_detections, roi_loss,
                                           sample_rois)
from keras_fpn.detection.rpn import RPN_BOX_WEIGHTS, RPNHead, propose, rpn_loss, rpn_targets  # noqa: F401
from keras_fpn.layers.levels import level_key


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
        anchor_convention: `"keras_fpn"` (default) or `"torchvision"` (`keras_fpn.detection.anchors`).
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
        roi_aligned: bool, default True: RoIAlign with the half-pixel offset (detectron2's ROIAlignV2); False is
            torchvision's `MultiScaleRoIAlign` (`aligned=False`), which its COCO weights need.
        roi_batch_size_per_image: default 512. roi_positive_fraction: default 0.25. roi_positive_iou: default 0.5.
        head_dim: default 1024, width of the fc layers of the default `BoxHead`.
        rpn_conv_depth: default 1, 3x3 convs of the default `RPNHead` (torchvision's v2 models: 2).
        box_head_conv_depth: default 0, box_head_fc_depth: default 2, box_head_norm: default None: the default
            `BoxHead`'s convs, fc layers and conv normalization (torchvision's v2 models: 4, 1 and `"batch"`).
        head_norm_epsilon: default 1e-3 (Keras's), of the heads' BatchNormalization; torchvision's is 1e-5.
        box_weights: default (10, 10, 5, 5), of the RoI head's (y, x, h, w) deltas.
        smooth_l1_beta: default 1/9, of both box losses.
        score_threshold: default 0.05. nms_iou_threshold: default 0.5. max_detections: default 100.
        seed: int or None, of the anchor and RoI sampling.
        rpn_only: bool, default False. Train the RPN alone (the FPN paper's Table 1): `compute_loss` has only the
            RPN losses, and `propose(images)` gives the proposals to score with
            `keras_fpn.evaluation.evaluate_proposals`; `predict` still runs the (untrained) RoI heads.
        rpn_head: None or a layer: one `[batch, H, W, C]` map -> `(objectness [batch, H*W*A], deltas
            [batch, H*W*A, 4])`, shared by the RPN's levels. None builds `RPNHead(A, num_channels)`.
        box_head: None or a layer: pooled RoIs `[R, pool_size, pool_size, C]` -> `[R, D]`. None builds
            `BoxHead(head_dim)`.
        box_predictor: None or a layer: `[R, D]` -> `(logits [R, num_classes + 1], deltas [R, num_classes, 4])`,
            background last. None builds `BoxPredictor(num_classes)`.
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
        anchor_convention="keras_fpn",
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
        roi_aligned=True,
        roi_batch_size_per_image=512,
        roi_positive_fraction=0.25,
        roi_positive_iou=0.5,
        head_dim=1024,
        rpn_conv_depth=1,
        box_head_conv_depth=0,
        box_head_fc_depth=2,
        box_head_norm=None,
        head_norm_epsilon=1e-3,
        box_weights=(10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta=1.0 / 9,
        score_threshold=0.05,
        nms_iou_threshold=0.5,
        max_detections=100,
        seed=None,
        rpn_only=False,
        rpn_head=None,
        box_head=None,
        box_predictor=None,
        **kwargs,
    ):
        check_arguments(num_classes, bounding_box_format, box_weights)
        if not 0.0 <= rpn_negative_iou <= rpn_positive_iou <= 1.0:
            raise ValueError(f"Received rpn_negative_iou={rpn_negative_iou}, rpn_positive_iou={rpn_positive_iou}; "
                             "expected 0 <= rpn_negative_iou <= rpn_positive_iou <= 1.")
        for name, value in (("rpn_positive_fraction", rpn_positive_fraction),
                            ("roi_positive_fraction", roi_positive_fraction)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"Received {name}={value}; expected 0 < {name} <= 1.")
        if not min_level <= roi_min_level <= roi_max_level <= max_level:
            raise ValueError(f"Received roi_min_level={roi_min_level}, roi_max_level={roi_max_level} with pyramid "
                             f"levels {min_level}-{max_level}; expected RoI levels inside the pyramid's.")
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
        anchor_generator = AnchorGenerator(rpn_min_level, rpn_max_level, anchor_scale, anchor_scales, aspect_ratios,
                                           anchor_convention)
        rpn_head = _layer(rpn_head) or RPNHead(anchor_generator.anchors_per_location, backbone.num_channels,
                                               conv_depth=rpn_conv_depth, name="rpn_head")
        images = keras.Input(shape=backbone.image_shape, name="images")
        pyramid = backbone(images)
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
        losses = ("rpn_objectness_loss", "rpn_box_loss") + (() if rpn_only else ("classification_loss", "box_loss"))
        self.init_contract(backbone, num_classes, bounding_box_format, max_detections, losses)

        # The RoI heads run on sampled proposals, outside the functional graph; their layers are built here.
        pooled = (None, pool_size, pool_size, backbone.num_channels)
        box_head = _built(_layer(box_head) or BoxHead(
            head_dim, conv_depth=box_head_conv_depth, fc_depth=box_head_fc_depth, norm=box_head_norm,
            norm_epsilon=head_norm_epsilon, name="box_head"), pooled)
        box_predictor = _built(_layer(box_predictor) or BoxPredictor(num_classes, name="box_predictor"),
                               box_head.compute_output_shape(pooled))
        self.rpn_head = rpn_head
        self.roi_heads = RoIHeads(box_head, box_predictor, roi_min_level, roi_max_level, pool_size, sampling_ratio,
                                  aligned=roi_aligned, name="roi_heads")
        if rpn_only:  # the RoI heads get no gradient: keep them out of the optimizer (no Keras warning)
            self.roi_heads.trainable = False

        self.anchor_generator = anchor_generator
        self.anchor_scale = anchor_scale
        self.anchor_scales = tuple(float(scale) for scale in anchor_scales)
        self.aspect_ratios = tuple(aspect_ratios)
        self.anchor_convention = anchor_convention
        self.roi_aligned = roi_aligned
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
        self.rpn_conv_depth = rpn_conv_depth
        self.box_head_conv_depth = box_head_conv_depth
        self.box_head_fc_depth = box_head_fc_depth
        self.box_head_norm = box_head_norm
        self.head_norm_epsilon = head_norm_epsilon
        self.box_weights = tuple(float(w) for w in box_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.seed = seed
        self.rpn_only = bool(rpn_only)
        self.seed_generator = keras.random.SeedGenerator(seed)

    # -- the weight layout of keras_fpn 0.1.0 ------------------------------------------------------------------
    # Keras stores a weight under the first attribute path it meets, attributes in alphabetical order. 0.1.0
    # kept the default box head's layers as these four attributes; naming them here (they sort before
    # `roi_heads`) keeps the weights of the default heads where 0.1.0 files have them, so those files load.

    @property
    def box_head_fc1(self):
        return getattr(self.roi_heads.box_head, "fc1", None)

    @property
    def box_head_fc2(self):
        return getattr(self.roi_heads.box_head, "fc2", None)

    @property
    def box_classifier(self):
        return getattr(self.roi_heads.box_predictor, "cls_score", None)

    @property
    def box_regressor(self):
        return getattr(self.roi_heads.box_predictor, "bbox_pred", None)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        boxes, labels, dropped, height, width = self.pixel_targets(x, y)
        anchors, per_level = self.anchors_from(y_pred, x)
        positive, negative, targets = rpn_targets(
            anchors, boxes, labels, self.rpn_positive_iou, self.rpn_negative_iou, self.rpn_batch_size_per_image,
            self.rpn_positive_fraction, self.seed_generator)
        rpn_objectness_loss, rpn_box_loss = rpn_loss(y_pred["rpn_objectness"], y_pred["rpn_box"], positive,
                                                     negative, targets, self.smooth_l1_beta)
        losses = {"rpn_objectness_loss": rpn_objectness_loss, "rpn_box_loss": rpn_box_loss}
        if self.rpn_only:
            return self.log_losses(losses, dropped)

        proposals, _, valid = self._propose(y_pred, table_lookups(anchors, per_level), per_level, height, width,
                                            training=True)
        rois, roi_labels, roi_targets, roi_valid, roi_gt_index = sample_rois(
            proposals, valid, boxes, labels, self.num_classes, self.roi_batch_size_per_image,
            self.roi_positive_fraction, self.roi_positive_iou, self.box_weights, self.seed_generator)
        logits, deltas = self.roi_heads.box_outputs(y_pred, rois)
        losses["classification_loss"], losses["box_loss"] = roi_loss(logits, deltas, roi_labels, roi_targets,
                                                                     roi_valid, self.smooth_l1_beta)
        losses.update(self.extra_losses(y, y_pred, rois, roi_labels, roi_valid, roi_gt_index))
        return self.log_losses(losses, dropped)

    def extra_losses(self, y, y_pred, rois, roi_labels, roi_valid, roi_gt_index):
        """Losses of heads a subclass adds on the sampled RoIs (Mask R-CNN's mask head), by name; each needs a
        tracker (`init_contract`'s loss names). `rois [batch, S, 4]` pixel xyxy, positives first; `roi_labels`
        (num_classes for background), `roi_valid` and `roi_gt_index` (the ground-truth box each RoI matched)
        `[batch, S]`."""
        return {}

    def _propose(self, y_pred, anchors, per_level, height, width, training, post_nms_topk=None):
        return propose(
            y_pred["rpn_objectness"], y_pred["rpn_box"], anchors, per_level, height, width,
            pre_nms_topk=self.rpn_pre_nms_topk_train if training else self.rpn_pre_nms_topk_test,
            post_nms_topk=post_nms_topk or (self.rpn_post_nms_topk_train if training else self.rpn_post_nms_topk_test),
            nms_iou_threshold=self.rpn_nms_iou_threshold, min_size=self.rpn_min_size)

    # -- inference ----------------------------------------------------------------------------------------------

    def detect(self, images, image_sizes=None):
        detections, _ = self.detect_with_features(images, image_sizes)
        return detections

    def propose(self, images, post_nms_topk=None, image_sizes=None):
        """The RPN's proposals for `images` as at inference: `(boxes [batch, K, 4] pixel xyxy, objectness scores
        [batch, K], valid [batch, K])`, `K = post_nms_topk` (default `rpn_post_nms_topk_test`); boxes clipped to
        each image's content `image_sizes` (`[batch, 2]`, see `detect`) when given."""
        from keras_fpn.detection.checks import check_images
        from keras_fpn.detection.detector import backend_input

        images = check_images(ops.convert_to_tensor(backend_input(images)), self.input_multiple)
        y_pred = self(images, training=False)
        height, width = content_limits(image_sizes, *image_size(images), rank=3)
        anchors, per_level = self.anchor_lookups(y_pred, images)
        return self._propose(y_pred, anchors, per_level, height, width, training=False, post_nms_topk=post_nms_topk)

    def detect_with_features(self, images, image_sizes=None):
        """`detect`'s detections (boxes in `bounding_box_format`) and the pyramid they came from, with the
        detections' pixel xyxy boxes as `"pixel_boxes"` in the second result (for heads run on detections)."""
        y_pred = self(images, training=False)
        height, width = image_size(images)
        anchors, per_level = self.anchor_lookups(y_pred, images)
        # Proposals are clipped to each image's content (torchvision clips them to the resized image too).
        proposal_height, proposal_width = content_limits(image_sizes, height, width, rank=3)
        proposals, _, valid = self._propose(y_pred, anchors, per_level, proposal_height, proposal_width,
                                            training=False)
        logits, deltas = self.roi_heads.box_outputs(y_pred, proposals)
        clip_height, clip_width = content_limits(image_sizes, height, width, rank=4)
        detections = decode_roi_detections(
            proposals, valid, logits, deltas, clip_height, clip_width, self.box_weights, self.score_threshold,
            self.nms_iou_threshold, self.max_detections)
        pixel_boxes = detections["boxes"]
        detections["boxes"] = bounding_boxes.convert_format(pixel_boxes, "xyxy", self.bounding_box_format,
                                                            height=height, width=width)
        return detections, {**y_pred, "pixel_boxes": pixel_boxes}

    # -- serialization ------------------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "anchor_scale": self.anchor_scale,
            "anchor_scales": self.anchor_scales,
            "aspect_ratios": self.aspect_ratios,
            "anchor_convention": self.anchor_convention,
            "roi_aligned": self.roi_aligned,
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
            "rpn_conv_depth": self.rpn_conv_depth,
            "box_head_conv_depth": self.box_head_conv_depth,
            "box_head_fc_depth": self.box_head_fc_depth,
            "box_head_norm": self.box_head_norm,
            "head_norm_epsilon": self.head_norm_epsilon,
            "box_weights": self.box_weights,
            "smooth_l1_beta": self.smooth_l1_beta,
            "score_threshold": self.score_threshold,
            "nms_iou_threshold": self.nms_iou_threshold,
            "max_detections": self.max_detections,
            "seed": self.seed,
            "rpn_only": self.rpn_only,
            "rpn_head": keras.saving.serialize_keras_object(self.rpn_head),
            "box_head": keras.saving.serialize_keras_object(self.roi_heads.box_head),
            "box_predictor": keras.saving.serialize_keras_object(self.roi_heads.box_predictor),
        }


def _built(layer, input_shape):
    """`layer`, built for `input_shape` unless it is already (a deserialized layer comes built)."""
    if not layer.built:
        layer.build(input_shape)
    return layer


def _layer(value):
    """A head argument as a layer: None stays None (build the default), a serialized layer is deserialized."""
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    if value is not None and not isinstance(value, keras.layers.Layer):
        raise ValueError(f"Received a head of type {type(value).__name__}; expected a keras.layers.Layer, its "
                         "serialized config, or None for the default head.")
    return value
