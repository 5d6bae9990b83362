"""Panoptic FPN's semantic-segmentation branch (Kirillov et al. 2019, arXiv 1901.02446, Sec. 3 and Fig. 3) over any
backbone: every pyramid level P2-P5 is brought to 1/4 of the input by stages of 3x3 conv + GroupNorm + ReLU + 2x
bilinear upsampling, the levels are summed, and a 1x1 conv gives the class logits, upsampled 4x to the input.

Defaults and their sources (the paper, Sec. 3; detectron2 `modeling/meta_arch/semantic_seg.py` `SemSegFPNHead`
and `config/defaults.py` `SEM_SEG_HEAD`): levels P2-P5, 128 channels (`CONVS_DIM`), GroupNorm with 32 groups
(`NORM: "GN"`), common stride 4 (`COMMON_STRIDE`), one stage per octave above it (P2 still gets one conv),
bilinear upsampling; ignore label 255 (`IGNORE_VALUE`); pyramid channels 256.
"""

import math

import keras
from keras import ops

from keras_fpn.layers.levels import level_key
from keras_fpn.ops.resize import resize_to
from keras_fpn.segmentation.segmenter import IGNORE_LABEL, Segmenter


@keras.saving.register_keras_serializable(package="keras_fpn")
class SemanticFPNHead(keras.layers.Layer):
    """The semantic branch on a pyramid `{"P{l}"}`: logits at the input's size (4x the finest level's).

    Args:
        num_classes: int.
        min_level, max_level: ints, default 2 and 5. The levels read; `min_level` sets the common stride.
        filters: int, default 128. Channels of every stage.
        norm: `"group"` (default, 32 groups or fewer when `filters` is small) or None.
        aggregation: `"sum"` (default, Panoptic FPN) or `"concat"` (segmentation_models' FPN decoder, whose
            merge policy may be either): how the levels meet at the common stride.
        final_upsampling: int, default `2 ** min_level` (4 for P2): the bilinear upsampling after the 1x1 conv.

    Call arguments:
        features: dict `{"P{l}": [batch, H / 2^l, W / 2^l, C]}` with at least the levels `min_level..max_level`.

    Returns:
        `[batch, H, W, num_classes]` logits (H, W = the finest level's size times `final_upsampling`).
    """

    def __init__(self, num_classes, min_level=2, max_level=5, filters=128, norm="group", aggregation="sum",
                 final_upsampling=None, **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "group"):
            raise ValueError(f"Received norm={norm!r}; expected 'group' or None.")
        if aggregation not in ("sum", "concat"):
            raise ValueError(f"Received aggregation={aggregation!r}; expected 'sum' or 'concat'.")
        if not 1 <= min_level <= max_level:
            raise ValueError(f"Received min_level={min_level}, max_level={max_level}; expected 1 <= min <= max.")
        self.num_classes, self.min_level, self.max_level = num_classes, min_level, max_level
        self.filters, self.norm, self.aggregation = filters, norm, aggregation
        self.final_upsampling = 2 ** min_level if final_upsampling is None else int(final_upsampling)
        init = keras.initializers.HeNormal()  # detectron2's c2_msra_fill
        self.stages = {}
        for level in range(min_level, max_level + 1):
            layers = []
            for index in range(max(1, level - min_level)):
                name = f"{level_key('P', level)}_stage{index}"
                conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=norm is None, kernel_initializer=init,
                                           dtype=self.dtype_policy, name=f"{name}_conv")
                group = keras.layers.GroupNormalization(math.gcd(32, filters), dtype=self.dtype_policy,
                                                        name=f"{name}_norm") if norm else None
                layers.append((conv, group))
            self.stages[level_key("P", level)] = layers
        self.predictor = keras.layers.Conv2D(num_classes, 1, kernel_initializer=init, dtype=self.dtype_policy,
                                             name="predictor")

    def build(self, input_shape):
        for key, layers in self.stages.items():
            channels = input_shape[key][-1]
            for conv, group in layers:
                conv.build((None, None, None, channels))
                channels = self.filters
                if group is not None:
                    group.build((None, None, None, channels))
        levels = self.max_level - self.min_level + 1
        merged = self.filters * (levels if self.aggregation == "concat" else 1)
        self.predictor.build((None, None, None, merged))
        self.built = True

    def call(self, features):
        target = features[level_key("P", self.min_level)]
        size = (ops.shape(target)[1], ops.shape(target)[2])
        outputs = []
        for level in range(self.min_level, self.max_level + 1):
            x = features[level_key("P", level)]
            for conv, group in self.stages[level_key("P", level)]:
                x = conv(x)
                x = ops.relu(x if group is None else group(x))
                if level > self.min_level:
                    x = _upsample(x, 2)
            # Odd input sizes: a level's 2x chain can overshoot the common stride's map by a pixel; crop to it.
            outputs.append(x[:, :size[0], :size[1], :])
        merged = ops.concatenate(outputs, axis=-1) if self.aggregation == "concat" else sum(outputs[1:], outputs[0])
        return _upsample(self.predictor(merged), self.final_upsampling)

    def compute_output_shape(self, input_shape):
        shape = input_shape[level_key("P", self.min_level)]

        def scaled(side):
            return None if side is None else side * self.final_upsampling

        return (shape[0], scaled(shape[1]), scaled(shape[2]), self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "min_level": self.min_level,
                "max_level": self.max_level, "filters": self.filters, "norm": self.norm,
                "aggregation": self.aggregation, "final_upsampling": self.final_upsampling}


def _upsample(x, factor):
    """Bilinear upsampling by an integer factor, half-pixel centres (PyTorch's `align_corners=False`)."""
    if factor == 1:
        return x
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    return resize_to(x, height * factor, width * factor, interpolation="bilinear")  # runtime sizes (docs/contributing.md)


@keras.saving.register_keras_serializable(package="keras_fpn")
class SemanticFPN(Segmenter):
    """Semantic segmentation with Panoptic FPN's semantic branch on an `FPNBackbone`.

    Args:
        num_classes: int, classes including the background.
        backbone: str (a `keras.applications` name), a model, or an `FPNBackbone`; default `"ResNet50"`.
        backbone_weights: `"imagenet"` (default), None, or a weights file.
        input_shape: `(height, width, 3)` or None (any size).
        num_channels: int, default 256, the pyramid's channels.
        head_filters: int, default 128. head_norm: `"group"` (default) or None.
        aggregation: `"sum"` (default) or `"concat"`.
        min_level, max_level: default 2 and 5, the pyramid's (and the head's) levels.
        backbone_kwargs: further `FPNBackbone` arguments.
        ignore_label: int, default 255.

    `model.fit(images, masks)`: images `[batch, H, W, 3]` in [0, 255], masks `[batch, H, W]` integer labels
    (`ignore_label` for pixels not to train on). `predict` returns class maps `[batch, H, W]`.

    Example:

    >>> model = SemanticFPN(num_classes=4, backbone="MobileNetV3Small", backbone_weights=None, num_channels=32,
    ...                     head_filters=16)
    >>> images = keras.random.uniform((2, 67, 91, 3), 0, 255)
    >>> tuple(model(images).shape), model.predict(images, verbose=0).shape  # logits, class maps
    ((2, 67, 91, 4), (2, 67, 91))
    """

    def __init__(self, num_classes, backbone="ResNet50", backbone_weights="imagenet", input_shape=None,
                 num_channels=256, head_filters=128, head_norm="group", aggregation="sum", min_level=2, max_level=5,
                 backbone_kwargs=None, ignore_label=IGNORE_LABEL, **kwargs):
        head = SemanticFPNHead(num_classes, min_level, max_level, filters=head_filters, norm=head_norm,
                               aggregation=aggregation, name="semantic_head")
        super().__init__(num_classes, head, backbone, backbone_weights, input_shape, min_level, max_level,
                         num_channels, backbone_kwargs, return_features=False, ignore_label=ignore_label, **kwargs)
        self.head_filters, self.head_norm, self.aggregation = head_filters, head_norm, aggregation
        self.min_level, self.max_level, self.num_channels = min_level, max_level, num_channels

    def get_config(self):
        return {**super().get_config(), "head_filters": self.head_filters, "head_norm": self.head_norm,
                "aggregation": self.aggregation, "min_level": self.min_level, "max_level": self.max_level,
                "num_channels": self.num_channels}
