"""RetinaNet: an FPN backbone, shared heads, focal loss, and decoding inside Keras's own training hooks."""

import math

import keras
from keras import ops
from keras.utils import bounding_boxes

from keras_fpn.detection.anchors import DEFAULT_ASPECT_RATIOS, DEFAULT_SCALES, AnchorGenerator
from keras_fpn.detection.box_coding import decode_deltas, encode_deltas, match_anchors
from keras_fpn.detection.decoder import decode_detections
from keras_fpn.detection.detector import (Detector, check_arguments, content_limits, image_size,
                                          resolve_backbone)
from keras_fpn.detection.losses import BOX_LOSSES, focal_loss, giou_loss, smooth_l1_loss
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.layers.levels import level_key
from keras_fpn.utils.distribute import sum_over_replicas


@keras.saving.register_keras_serializable(package="keras_fpn")
class RetinaNet(Detector):
    """RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection", https://arxiv.org/abs/1708.02002).

    An `FPNBackbone` (P3-P7 by default) feeds one classification head and one box head, each shared across all
    levels. Training works with plain `model.fit(images, y)`: anchors are matched to `y` and the focal and box
    losses computed inside `compute_loss`. `predict` and `predict_on_batch` decode boxes and run per-class NMS;
    calling the model returns the raw head outputs.

    Args:
        num_classes: int, number of object classes (labels 0..num_classes-1).
        backbone: str, `keras.Model` or `FPNBackbone`, default `"ResNet50"`. A `keras.applications` name (an
            `FPNBackbone` is built with `backbone_weights`, `min_level`, `max_level`, `num_channels`,
            `input_shape`, `backbone_kwargs`), a model you built yourself (a `keras.applications` instance with
            `include_top=False`, at any input size, or any functional ConvNet; wrapped with the same arguments,
            keeping its own weights and input shape), or a built `FPNBackbone`.
        backbone_weights: `"imagenet"` (default), None, or a local weights file; used when `backbone` is a name.
        min_level, max_level: ints, default 3 and 7. Pyramid levels; ignored for a built `FPNBackbone`.
        num_channels: int, default 256. Pyramid channels; ignored for a built `FPNBackbone`.
        input_shape: tuple or None (default). Image shape; None means `(None, None, 3)` for a name and the model's
            own input shape for a model instance; ignored for a built `FPNBackbone`.
        backbone_kwargs: dict or None. More `FPNBackbone` arguments (`pyramid_kwargs`, `batchnorm_momentum`,
            `freeze_batchnorm`, `backbone_kwargs`...).
        bounding_box_format: str, default `"xyxy"`. Format of `y["boxes"]` and of predicted boxes: any format
            `keras.utils.bounding_boxes.convert_format` knows (`"xyxy"`, `"yxyx"`, `"xywh"`, `"center_xywh"`,
            `"rel_xyxy"`, ...).
        anchor_scale: float, default 4. Base anchor size in strides (32..512 on P3..P7).
        anchor_scales: sequence, default `(2^0, 2^(1/3), 2^(2/3))`.
        aspect_ratios: sequence, default `(0.5, 1, 2)` (height / width).
        anchor_convention: `"keras_fpn"` (default) or `"torchvision"` (how torchvision lays anchors, which its
            weights need; `keras_fpn.detection.anchors.AnchorGenerator`).
        head_filters: int, default 256. Hidden channels of both heads.
        head_depth: int, default 4. Hidden 3x3 convs in each head.
        head_norm: None or `"group"`. GroupNorm in the heads.
        head_norm_epsilon: float, default 1e-3 (Keras's GroupNormalization); 1e-5 is torchvision's `nn.GroupNorm`.
        head_separable: bool, default False. Depthwise-separable convs in both heads (SSDLite's heads, for phones).
        prior_probability: float, default 0.01. Initial foreground probability of every anchor.
        positive_iou: float, default 0.5. IoU at or above which an anchor is positive.
        negative_iou: float, default 0.4. IoU below which an anchor is negative (ignored in between).
        allow_low_quality_matches: bool, default True. Each box's best anchors are positive too.
        box_weights: 4 floats, default `(1, 1, 1, 1)`. Weights of the (y, x, h, w) box deltas.
        box_loss: `"huber"` (smooth L1, default) or `"giou"`.
        smooth_l1_beta: float, default 0.1. Where smooth L1 turns from quadratic to linear.
        box_loss_weight: float, default 1.
        focal_alpha: float, default 0.25. focal_gamma: float, default 2.
        score_threshold: float, default 0.05. pre_nms_topk: int, default 1000 candidates per level.
        nms_iou_threshold: float, default 0.5. max_detections: int, default 100 per image.
        **kwargs: the inference options of every detector (`size_divisible`, `resize_min_size`,
            `resize_max_size`: `keras_fpn.detection.detector.Detector`) and base `keras.Model` arguments (`name`,
            `dtype`).

    Call arguments:
        images: `[batch, height, width, 3]` raw RGB in [0, 255].

    Returns:
        Calling the model: `{"box": [batch, N, 4] deltas, "classification": [batch, N, num_classes] logits}` over
        all `N` anchors, and the pyramid maps they came from (`"P3"`, ...; the anchors are laid on their sizes). `predict`: `{"boxes": [batch, max_detections, 4], "scores": [batch, max_detections],
        "labels": [batch, max_detections] (-1 for padding), "num_detections": [batch]}`, boxes in
        `bounding_box_format`.

    Example:

    >>> model = RetinaNet(num_classes=3, backbone="MobileNetV3Small", backbone_weights=None, num_channels=32,
    ...                   head_filters=32, head_depth=1, min_level=3, max_level=5)
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
        min_level=3,
        max_level=7,
        num_channels=256,
        input_shape=None,
        backbone_kwargs=None,
        bounding_box_format="xyxy",
        anchor_scale=4.0,
        anchor_scales=DEFAULT_SCALES,
        aspect_ratios=DEFAULT_ASPECT_RATIOS,
        anchor_convention="keras_fpn",
        head_filters=256,
        head_depth=4,
        head_norm=None,
        head_norm_epsilon=1e-3,
        head_separable=False,
        prior_probability=0.01,
        positive_iou=0.5,
        negative_iou=0.4,
        allow_low_quality_matches=True,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        box_loss="huber",
        smooth_l1_beta=0.1,
        box_loss_weight=1.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
        score_threshold=0.05,
        pre_nms_topk=1000,
        nms_iou_threshold=0.5,
        max_detections=100,
        **kwargs,
    ):
        check_arguments(num_classes, bounding_box_format, box_weights)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"Received box_loss={box_loss!r}; expected one of {BOX_LOSSES}.")
        if not 0.0 < prior_probability < 1.0:
            raise ValueError(f"Received prior_probability={prior_probability}; expected 0 < p < 1.")
        if not 0.0 <= negative_iou <= positive_iou <= 1.0:
            raise ValueError(
                f"Received negative_iou={negative_iou}, positive_iou={positive_iou}; expected "
                "0 <= negative_iou <= positive_iou <= 1."
            )
        backbone = resolve_backbone(backbone, backbone_weights, input_shape, min_level, max_level, num_channels,
                                    backbone_kwargs)

        anchor_generator = AnchorGenerator(backbone.min_level, backbone.max_level, anchor_scale, anchor_scales,
                                           aspect_ratios, anchor_convention)
        num_anchors = anchor_generator.anchors_per_location
        images = keras.Input(shape=backbone.image_shape, name="images")
        pyramid = backbone(images)
        classification_head = PredictionHead(
            num_anchors * num_classes, head_filters, head_depth, head_norm,
            bias_prior=-math.log((1 - prior_probability) / prior_probability), norm_epsilon=head_norm_epsilon,
            separable=head_separable, name="classification_head",
        )
        box_head = PredictionHead(num_anchors * 4, head_filters, head_depth, head_norm,
                                  norm_epsilon=head_norm_epsilon, separable=head_separable, name="box_head")
        class_outputs, box_outputs = [], []
        for level in range(backbone.min_level, backbone.max_level + 1):
            key = level_key("P", level)
            class_outputs.append(
                keras.layers.Reshape((-1, num_classes), name=f"classification_{key}")(classification_head(pyramid[key]))
            )
            box_outputs.append(keras.layers.Reshape((-1, 4), name=f"box_{key}")(box_head(pyramid[key])))
        outputs = {
            **pyramid,
            "box": keras.layers.Concatenate(axis=1, dtype="float32", name="box")(box_outputs),
            "classification": keras.layers.Concatenate(axis=1, dtype="float32", name="classification")(
                class_outputs
            ),
        }
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        # Boxes given to `fit` that lie outside the image or have no area are ignored, and counted.
        self.init_contract(backbone, num_classes, bounding_box_format, max_detections,
                           ("classification_loss", "box_loss"))
        self.anchor_generator = anchor_generator
        self.anchor_scale = anchor_scale
        self.anchor_scales = tuple(anchor_scales)
        self.aspect_ratios = tuple(aspect_ratios)
        self.anchor_convention = anchor_convention
        self.head_filters = head_filters
        self.head_depth = head_depth
        self.head_norm = head_norm
        self.head_norm_epsilon = head_norm_epsilon
        self.head_separable = bool(head_separable)
        self.prior_probability = prior_probability
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.box_weights = tuple(float(w) for w in box_weights)
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.box_loss_weight = box_loss_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.score_threshold = score_threshold
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou_threshold = nms_iou_threshold

    # -- training -----------------------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        boxes, labels, dropped, _, _ = self.pixel_targets(x, y)
        anchors, _ = self.anchors_from(y_pred, x)
        matched, positive, negative = match_anchors(
            anchors, boxes, labels, self.positive_iou, self.negative_iou, self.allow_low_quality_matches
        )
        matched_boxes = ops.take_along_axis(boxes, matched[..., None], axis=1)
        matched_labels = ops.take_along_axis(labels, matched, axis=1)
        # Non-positive anchors regress onto themselves (zero deltas) so padding boxes never reach a log(0).
        matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])

        positive_f = ops.cast(positive, "float32")
        # Normalised by the positives of the whole global batch: under tf.distribute each replica's loss is its
        # share of the single-device loss, and the summed gradients equal the single-device gradients.
        num_positive = ops.maximum(sum_over_replicas(ops.sum(positive_f)), 1.0)
        class_targets = ops.one_hot(ops.maximum(matched_labels, 0), self.num_classes) * positive_f[..., None]
        class_weights = ops.cast(positive | negative, "float32")
        logits = ops.cast(y_pred["classification"], "float32")
        deltas = ops.cast(y_pred["box"], "float32")
        class_loss = ops.sum(
            focal_loss(class_targets, logits, self.focal_alpha, self.focal_gamma) * class_weights
        ) / num_positive
        if self.box_loss == "huber":
            targets = encode_deltas(anchors, matched_boxes, self.box_weights)
            per_anchor = smooth_l1_loss(targets, deltas, self.smooth_l1_beta)
        else:
            per_anchor = giou_loss(matched_boxes, decode_deltas(anchors, deltas, self.box_weights))
        box_loss = ops.sum(per_anchor * positive_f) / num_positive
        return self.log_losses({"classification_loss": class_loss, "box_loss": box_loss}, dropped,
                               weights={"box_loss": self.box_loss_weight})

    # -- inference ----------------------------------------------------------------------------------------------

    def detect(self, images, image_sizes=None):
        return self.decode_predictions(self(images, training=False), images, image_sizes)

    def decode_predictions(self, y_pred, images, image_sizes=None):
        """Detections (see `predict`) from the raw outputs `y_pred` of `images`: top-k per level, box decoding,
        clipping to each image's content (`image_sizes`, see `Detector.detect`), per-class NMS
        (`keras_fpn.detection.decoder`)."""
        anchors, per_level = self.anchor_lookups(y_pred, images)
        height, width = image_size(images)
        clip_height, clip_width = content_limits(image_sizes, height, width, rank=3)
        detections = decode_detections(
            y_pred["box"], y_pred["classification"], anchors, per_level, clip_height, clip_width,
            box_weights=self.box_weights, score_threshold=self.score_threshold, pre_nms_topk=self.pre_nms_topk,
            nms_iou_threshold=self.nms_iou_threshold, max_detections=self.max_detections,
        )
        detections["boxes"] = bounding_boxes.convert_format(
            detections["boxes"], "xyxy", self.bounding_box_format, height=height, width=width
        )
        return detections

    # -- serialization -----------------------------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "anchor_scale": self.anchor_scale,
            "anchor_scales": self.anchor_scales,
            "aspect_ratios": self.aspect_ratios,
            "anchor_convention": self.anchor_convention,
            "head_filters": self.head_filters,
            "head_depth": self.head_depth,
            "head_norm": self.head_norm,
            "head_norm_epsilon": self.head_norm_epsilon,
            "head_separable": self.head_separable,
            "prior_probability": self.prior_probability,
            "positive_iou": self.positive_iou,
            "negative_iou": self.negative_iou,
            "allow_low_quality_matches": self.allow_low_quality_matches,
            "box_weights": self.box_weights,
            "box_loss": self.box_loss,
            "smooth_l1_beta": self.smooth_l1_beta,
            "box_loss_weight": self.box_loss_weight,
            "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma,
            "score_threshold": self.score_threshold,
            "pre_nms_topk": self.pre_nms_topk,
            "nms_iou_threshold": self.nms_iou_threshold,
            "max_detections": self.max_detections,
        }
