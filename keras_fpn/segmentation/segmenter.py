"""What every keras_fpn semantic-segmentation model shares: images of any size in, per-pixel class logits at that
size out; training by `model.fit(images, masks)` with an ignore label; `predict` gives class maps.

A model is a functional `Segmenter` given its own part, a decoder layer over the backbone's maps; this module pads
the images to the backbone's stride, runs backbone and decoder, and crops the logits back.

Defaults and their sources: ignore label 255 (PASCAL VOC's void label; detectron2 `SEM_SEG_HEAD.IGNORE_VALUE`);
per-pixel softmax cross-entropy averaged over the labelled pixels (detectron2 `SemSegFPNHead.losses`,
`F.cross_entropy(..., reduction="mean", ignore_index=255)`).
"""

import keras
from keras import ops

from keras_fpn import presets
from keras_fpn.detection.detector import pad_to_multiple, resolve_backbone

IGNORE_LABEL = 255


@keras.saving.register_keras_serializable(package="keras_fpn")
class PadToMultiple(keras.layers.Layer):
    """Pads images at the bottom and right to a multiple of `multiple` with the raw pixel `value` (what the
    backbone's preprocessing maps to 0); `[batch, H, W, C]` -> `[batch, ceil(H / m) * m, ceil(W / m) * m, C]`."""

    def __init__(self, multiple, value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.multiple, self.value = int(multiple), float(value)

    def call(self, images):
        return pad_to_multiple(images, self.multiple, self.value)  # the detectors' padding

    def compute_output_shape(self, input_shape):
        def padded(side):
            return None if side is None else -(-side // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "value": self.value}


@keras.saving.register_keras_serializable(package="keras_fpn")
class CropToInput(keras.layers.Layer):
    """`logits [batch, H', W', K]` cropped to the top-left `H x W` of `images [batch, H, W, 3]`, as float32."""

    def call(self, logits, images):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        return ops.cast(logits[:, :height, :width, :], "float32")

    def compute_output_shape(self, logits_shape, images_shape):
        return (logits_shape[0], images_shape[1], images_shape[2], logits_shape[3])


def segmentation_loss(masks, logits, ignore_label=IGNORE_LABEL):
    """Softmax cross-entropy of `logits [batch, H, W, K]` against integer `masks [batch, H, W]`, averaged over the
    pixels whose label is not `ignore_label` (0 when there are none)."""
    masks = ops.cast(masks, "int32")
    valid = ops.not_equal(masks, ignore_label)
    labels = ops.where(valid, masks, 0)
    per_pixel = keras.losses.sparse_categorical_crossentropy(labels, ops.cast(logits, "float32"), from_logits=True)
    weight = ops.cast(valid, "float32")
    return ops.sum(per_pixel * weight) / ops.maximum(ops.sum(weight), 1.0)


class Segmenter(keras.Model):
    """Base of the semantic-segmentation models (`SemanticFPN`, `UNet`).

    Args:
        num_classes: int, classes including the background (labels 0..num_classes-1).
        decoder: a layer, the backbone's maps (`{"P{l}"}` or `{"C{l}"}`) to logits at the padded input's size.
        backbone, backbone_weights, input_shape, backbone_kwargs: as the detectors'.
        min_level, max_level, num_channels: the `FPNBackbone`'s levels and channels.
        return_features: bool, whether the decoder reads the backbone's maps `C{l}` (True) or the pyramid `P{l}`.
        ignore_label: int, default 255. Pixels with this label are not trained on and not scored.
        **kwargs: base `keras.Model` arguments (`name`, `dtype`).

    Call arguments:
        images: `[batch, height, width, 3]` raw RGB in [0, 255], any height and width.

    Returns:
        Calling the model: logits `[batch, height, width, num_classes]` (float32). `predict`: the class map
        `[batch, height, width]` (int32, the arg-max).
    """

    task = "segmentation"  # as Detector.task: what the command line, export and evaluation do with the model

    def __init__(self, num_classes, decoder, backbone, backbone_weights, input_shape, min_level, max_level,
                 num_channels, backbone_kwargs, return_features, ignore_label=IGNORE_LABEL, **kwargs):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"Received num_classes={num_classes!r}; expected an integer >= 2 (the background "
                             "counts as a class).")
        if 0 <= ignore_label < num_classes:
            raise ValueError(f"Received ignore_label={ignore_label} with num_classes={num_classes}; the ignore "
                             "label must not be a class.")
        resolve = _feature_backbone if return_features else resolve_backbone
        backbone = resolve(backbone, backbone_weights, input_shape, min_level, max_level, num_channels,
                           backbone_kwargs)
        stride = 2 ** max(backbone.max_level, max(backbone.feature_levels))
        images = keras.Input(shape=backbone.image_shape, name="images")
        padded = PadToMultiple(stride, backbone.pad_value or 0.0, name="pad")(images)
        logits = decoder(backbone(padded))
        outputs = CropToInput(name="logits")(logits, images)
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.input_multiple = stride

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y is None:
            raise ValueError("Received no targets; a segmentation model trains on model.fit(images, masks) with "
                             "integer masks [batch, height, width].")
        return segmentation_loss(y, y_pred, self.ignore_label) + sum(self.losses)

    def fit(self, x=None, y=None, *args, **kwargs):
        # As the detectors' fit: no shuffle=True default for tf.data input, which Keras ignores with a warning.
        from keras_fpn.detection.detector import _SHUFFLE_POSITION, _is_tf_dataset

        if _is_tf_dataset(x) and len(args) <= _SHUFFLE_POSITION and "shuffle" not in kwargs:
            kwargs["shuffle"] = False
        return super().fit(x, y, *args, **kwargs)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return ops.cast(ops.argmax(self(x, training=False), axis=-1), "int32")

    @classmethod
    def from_preset(cls, name, num_classes=None, backbone_weights="preset", **kwargs):
        """Builds the zoo configuration `name` (`keras_fpn.models.list()`) or a record `.json` file, as the
        detectors' `from_preset`: `num_classes` None takes the record's, `**kwargs` override it."""
        return cls(**presets.preset_arguments(cls, name, num_classes=num_classes, backbone_weights=backbone_weights,
                                              **kwargs))

    def get_config(self):
        return {"name": self.name, "num_classes": self.num_classes, "ignore_label": self.ignore_label,
                "backbone": keras.saving.serialize_keras_object(self.backbone), "backbone_weights": None}


def _feature_backbone(backbone, backbone_weights, input_shape, min_level, max_level, num_channels, backbone_kwargs):
    """An `FPNBackbone` returning the backbone's own maps `{"C{l}"}` (a U-Net's skip connections)."""
    from keras_fpn.backbones.fpn_backbone import FPNBackbone

    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, FPNBackbone):
        if not backbone.return_features:
            raise ValueError("Received an FPNBackbone that returns its pyramid; this model reads the backbone's "
                             "maps (FPNBackbone(..., return_features=True)).")
        return backbone
    return FPNBackbone(backbone, weights=backbone_weights, input_shape=input_shape, min_level=min_level,
                       max_level=max_level, num_channels=num_channels, return_features=True,
                       **dict(backbone_kwargs or {}))
