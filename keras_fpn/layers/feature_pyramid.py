"""The Feature Pyramid Network layer (Lin et al. 2017)."""

import keras
from keras import ops

from keras_fpn.layers.levels import level_key, levels_of
from keras_fpn.ops.resize import INTERPOLATIONS, resize_to

FUSIONS = ("sum", "concat")
EXTRA_LEVELS_FROM = ("backbone", "pyramid", "subsample")
NORMS = (None, "batch", "group")
EXTRA_PADDINGS = ("same", "symmetric")


def _fresh(initializer):
    """A new initializer instance with the same config, so no two sub-layers share one (and its seed)."""
    return keras.initializers.get(keras.initializers.serialize(initializer))


@keras.saving.register_keras_serializable(package="keras_fpn")
class FeaturePyramid(keras.layers.Layer):
    """Feature Pyramid Network: a top-down pathway with lateral connections over backbone features.

    Implements FPN from "Feature Pyramid Networks for Object Detection" (Lin et al., 2017,
    https://arxiv.org/abs/1612.03144) with the extra levels of RetinaNet ("Focal Loss for Dense Object Detection",
    Lin et al., 2017, https://arxiv.org/abs/1708.02002).

    For every backbone level `l` in `[min_level, top]` (`top` being the highest input level not above
    `max_level`), a 1x1 *lateral* conv projects `C{l}` to `num_channels`. The *top-down* path starts from the
    projection of `C{top}`, resizes each merged map to the runtime height and width of the next finer lateral
    map, and merges the two (`fusion`). A 3x3 conv then smooths every merged map into `P{l}`. Levels above `top`
    up to `max_level` are made by stride-2 3x3 convs, the first from `C{top}` (`extra_levels_from="backbone"`,
    as in RetinaNet) or `P{top}` (`"pyramid"`), every later one after a ReLU; or, with `"subsample"`, each by
    taking every other row and column of the level below (stride-2 max pooling with a 1x1 window: the FPN
    paper's P6 for its RPN, detectron2's and torchvision's `LastLevelMaxPool`; no weights). Input levels outside
    `[min_level, max_level]` are ignored.

    The top-down resize follows the lateral map's runtime shape, so odd and non-square sizes (C3 25x33, C4 13x17,
    C5 7x9) and fully dynamic `(None, None)` inputs work. Only `keras.ops` and Keras layers are used, so the layer
    runs on every Keras backend, under any dtype policy (e.g. `"mixed_float16"`, `"mixed_bfloat16"`).

    Args:
        min_level: int, default 3. The finest pyramid level produced, `P{min_level}`. Must be an input level.
        max_level: int, default 7. The coarsest pyramid level produced. Levels above the inputs are extra levels.
        num_channels: int, default 256. Channels of every pyramid map.
        fusion: str, default `"sum"`. How a top-down map meets a lateral map: `"sum"` (the paper) or `"concat"`
            followed by a 1x1 conv back to `num_channels`.
        upsampling: str, default `"nearest"`. Interpolation of the top-down path: `"nearest"` or `"bilinear"`.
        extra_levels_from: str, default `"backbone"`. Source of the first extra level: `"backbone"` (P6 from
            C5 by a stride-2 conv, the RetinaNet paper), `"pyramid"` (from P5 by a stride-2 conv) or
            `"subsample"` (P5 subsampled by 2, the FPN paper's RPN and Faster R-CNN).
        norm: None, `"batch"` or `"group"`, default None. Normalization after every conv; convs lose their bias
            when it is set.
        norm_groups: int, default 32. Groups of `"group"` normalization; must divide `num_channels`.
        norm_epsilon: float or None, default None (Keras's layer default, 1e-3). The normalization's epsilon;
            torchvision's v2 pyramids use `nn.BatchNorm2d`'s 1e-5, which their weights need.
        extra_padding: str, default `"same"`. Padding of the stride-2 convs of the extra levels: Keras's `"same"`
            (which pads only the bottom and right of an even-sized map) or `"symmetric"` (one pixel on every side,
            PyTorch's `padding=1`, as torchvision's and detectron2's `LastLevelP6P7`: needed for their weights).
            Both give maps of `ceil(n / 2)`.
        top_down: bool, default True. False removes the top-down path: each `P{l}` sees only `C{l}` (the
            "bottom-up pyramid" ablation, FPN paper Table 3 (d)).
        lateral: bool, default True. False removes the lateral connections below the top level: each `P{l}` is
            the top-down map alone (FPN paper Table 3 (e), "no lateral").
        kernel_initializer: initializer for all conv kernels, default `"glorot_uniform"`.
        bias_initializer: initializer for all conv biases, default `"zeros"`.
        kernel_regularizer: optional regularizer for all conv kernels.
        bias_regularizer: optional regularizer for all conv biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: dict `{"C{l}": tensor [batch, height_l, width_l, channels_l]}` over contiguous levels, each
            map (roughly) half the size of the previous one, channels-last.

    Returns:
        A dict `{"P{l}": tensor [batch, height_l, width_l, num_channels]}` for `l` in `min_level..max_level`,
        in increasing level order. Backbone levels keep the input's height and width; each extra level is
        `ceil(previous / 2)`.

    Example:

    >>> fpn = FeaturePyramid(min_level=3, max_level=7, num_channels=64)
    >>> features = {
    ...     "C3": keras.random.normal((1, 25, 33, 128)),
    ...     "C4": keras.random.normal((1, 13, 17, 256)),
    ...     "C5": keras.random.normal((1, 7, 9, 512)),
    ... }
    >>> {key: tuple(value.shape) for key, value in fpn(features).items()}
    {'P3': (1, 25, 33, 64), 'P4': (1, 13, 17, 64), 'P5': (1, 7, 9, 64), 'P6': (1, 4, 5, 64), 'P7': (1, 2, 3, 64)}
    """

    def __init__(
        self,
        min_level=3,
        max_level=7,
        num_channels=256,
        fusion="sum",
        upsampling="nearest",
        extra_levels_from="backbone",
        norm=None,
        norm_groups=32,
        norm_epsilon=None,
        extra_padding="same",
        top_down=True,
        lateral=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(min_level, int) or not isinstance(max_level, int) or not 1 <= min_level <= max_level:
            raise ValueError(
                f"Received min_level={min_level!r}, max_level={max_level!r}; expected integers with "
                "1 <= min_level <= max_level."
            )
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"Received num_channels={num_channels!r}; expected a positive integer.")
        if fusion not in FUSIONS:
            raise ValueError(f"Received fusion={fusion!r}; expected one of {FUSIONS}.")
        if upsampling not in INTERPOLATIONS:
            raise ValueError(f"Received upsampling={upsampling!r}; expected one of {INTERPOLATIONS}.")
        if extra_levels_from not in EXTRA_LEVELS_FROM:
            raise ValueError(f"Received extra_levels_from={extra_levels_from!r}; expected one of {EXTRA_LEVELS_FROM}.")
        if norm not in NORMS:
            raise ValueError(f"Received norm={norm!r}; expected one of {NORMS}.")
        if norm == "group" and (not isinstance(norm_groups, int) or norm_groups < 1 or num_channels % norm_groups):
            raise ValueError(
                f"Received norm_groups={norm_groups!r} with num_channels={num_channels}; expected a positive "
                "integer that divides num_channels."
            )
        if extra_padding not in EXTRA_PADDINGS:
            raise ValueError(f"Received extra_padding={extra_padding!r}; expected one of {EXTRA_PADDINGS}.")
        if not top_down and not lateral:
            raise ValueError(
                "Received top_down=False and lateral=False; at least one path must carry backbone features to "
                "the finer pyramid levels."
            )
        self.min_level = min_level
        self.max_level = max_level
        self.num_channels = num_channels
        self.fusion = fusion
        self.upsampling = upsampling
        self.extra_levels_from = extra_levels_from
        self.norm = norm
        self.norm_groups = norm_groups
        self.norm_epsilon = norm_epsilon
        self.extra_padding = extra_padding
        self.top_down = bool(top_down)
        self.lateral = bool(lateral)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    # -- construction ---------------------------------------------------------------------------------------

    def _conv(self, name, kernel_size, strides=1, padding="same"):
        return keras.layers.Conv2D(
            self.num_channels,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format="channels_last",
            use_bias=self.norm is None,
            kernel_initializer=_fresh(self.kernel_initializer),
            bias_initializer=_fresh(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm_layer(self, name):
        epsilon = {} if self.norm_epsilon is None else {"epsilon": self.norm_epsilon}
        if self.norm == "batch":
            return keras.layers.BatchNormalization(axis=-1, dtype=self.dtype_policy, name=f"{name}_norm", **epsilon)
        if self.norm == "group":
            return keras.layers.GroupNormalization(
                groups=self.norm_groups, axis=-1, dtype=self.dtype_policy, name=f"{name}_norm", **epsilon
            )
        return None

    def _input_levels(self, input_shape):
        if not isinstance(input_shape, dict):
            raise ValueError(
                "FeaturePyramid expects a dict of backbone maps {'C3': ..., 'C4': ..., 'C5': ...}; received "
                f"{type(input_shape).__name__}."
            )
        levels = levels_of(input_shape.keys(), "C")
        for key, shape in input_shape.items():
            if len(shape) != 4:
                raise ValueError(
                    f"Received input {key!r} of rank {len(shape)} (shape {tuple(shape)}); expected rank 4, "
                    "[batch, height, width, channels]."
                )
            if shape[-1] is None:
                raise ValueError(f"Received input {key!r} with unknown channels (shape {tuple(shape)}).")
        if not levels[0] <= self.min_level <= levels[-1]:
            raise ValueError(
                f"Received min_level={self.min_level} with input levels {levels}; expected min_level to be one "
                f"of the input levels ({levels[0]} <= min_level <= {levels[-1]})."
            )
        return levels

    def build(self, input_shape):
        levels = self._input_levels(input_shape)
        self._top_level = min(levels[-1], self.max_level)
        backbone_levels = range(self.min_level, self._top_level + 1)
        self.lateral_convs, self.lateral_norms = {}, {}
        self.fuse_convs, self.fuse_norms = {}, {}
        self.output_convs, self.output_norms = {}, {}
        self.extra_convs, self.extra_norms = {}, {}

        merged_shape = None
        for level in reversed(backbone_levels):
            key, shape = level_key("P", level), input_shape[level_key("C", level)]
            if level == self._top_level or self.lateral:
                self.lateral_convs[key] = self._conv(f"lateral_{key}", 1)
                self.lateral_convs[key].build(shape)
                self.lateral_norms[key] = self._norm_layer(f"lateral_{key}")
            merged_shape = (*shape[:3], self.num_channels)
            if level != self._top_level and self.top_down and self.lateral and self.fusion == "concat":
                self.fuse_convs[key] = self._conv(f"fuse_{key}", 1)
                self.fuse_convs[key].build((*shape[:3], 2 * self.num_channels))
                self.fuse_norms[key] = self._norm_layer(f"fuse_{key}")
            self.output_convs[key] = self._conv(f"output_{key}", 3)
            self.output_convs[key].build(merged_shape)
            self.output_norms[key] = self._norm_layer(f"output_{key}")

        top_shape = input_shape[level_key("C", self._top_level)]
        if self.extra_levels_from == "pyramid":
            top_shape = (*top_shape[:3], self.num_channels)
        for level in range(self._top_level + 1, self.max_level + 1):
            if self.extra_levels_from == "subsample":
                break
            key = level_key("P", level)
            padding = "valid" if self.extra_padding == "symmetric" else "same"  # symmetric: padded in `call`
            self.extra_convs[key] = self._conv(f"extra_{key}", 3, strides=2, padding=padding)
            self.extra_convs[key].build(top_shape)
            self.extra_norms[key] = self._norm_layer(f"extra_{key}")
            top_shape = self._extra_shape(top_shape)

        for norms, convs in (
            (self.lateral_norms, self.lateral_convs),
            (self.fuse_norms, self.fuse_convs),
            (self.output_norms, self.output_convs),
            (self.extra_norms, self.extra_convs),
        ):
            for key, norm in norms.items():
                if norm is not None:
                    norm.build((None, None, None, self.num_channels))
        self.built = True

    def _extra_shape(self, shape):
        def half(size):
            return None if size is None else (size + 1) // 2

        return (shape[0], half(shape[1]), half(shape[2]), self.num_channels)

    # -- forward ----------------------------------------------------------------------------------------------

    @staticmethod
    def _apply(conv, norm, x, training):
        x = conv(x)
        return x if norm is None else norm(x, training=training)

    def call(self, inputs, training=None):
        levels_of(inputs.keys(), "C")
        top = self._top_level
        merged = {}
        for level in range(top, self.min_level - 1, -1):
            key, features = level_key("P", level), inputs[level_key("C", level)]
            lateral = None
            if key in self.lateral_convs:
                lateral = self._apply(self.lateral_convs[key], self.lateral_norms[key], features, training)
            if level == top or not self.top_down:
                merged[level] = lateral
                continue
            shape = ops.shape(features)
            top_down = resize_to(merged[level + 1], shape[1], shape[2], self.upsampling)
            if not self.lateral:
                merged[level] = top_down
            elif self.fusion == "sum":
                merged[level] = top_down + lateral
            else:
                fused = ops.concatenate([top_down, lateral], axis=-1)
                merged[level] = self._apply(self.fuse_convs[key], self.fuse_norms[key], fused, training)

        outputs = {}
        for level in range(self.min_level, top + 1):
            key = level_key("P", level)
            outputs[key] = self._apply(self.output_convs[key], self.output_norms[key], merged[level], training)

        x = inputs[level_key("C", top)] if self.extra_levels_from == "backbone" else outputs[level_key("P", top)]
        for level in range(top + 1, self.max_level + 1):
            key = level_key("P", level)
            if self.extra_levels_from == "subsample":
                x = x[:, ::2, ::2, :]  # = max pooling, window 1, stride 2: sizes ceil(n / 2) like the convs
                outputs[key] = x
                continue
            if level > top + 1:
                x = ops.relu(x)  # RetinaNet: "ReLU followed by a 3x3 stride-2 conv on P6"
            if self.extra_padding == "symmetric":
                x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            x = self._apply(self.extra_convs[key], self.extra_norms[key], x, training)
            outputs[key] = x
        return outputs

    def compute_output_shape(self, input_shape):
        levels = self._input_levels(input_shape)
        top = min(levels[-1], self.max_level)
        shapes = {}
        for level in range(self.min_level, top + 1):
            shapes[level_key("P", level)] = (*input_shape[level_key("C", level)][:3], self.num_channels)
        shape = shapes[level_key("P", top)]
        for level in range(top + 1, self.max_level + 1):
            shape = self._extra_shape(shape)
            shapes[level_key("P", level)] = shape
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_level": self.min_level,
                "max_level": self.max_level,
                "num_channels": self.num_channels,
                "fusion": self.fusion,
                "upsampling": self.upsampling,
                "extra_levels_from": self.extra_levels_from,
                "norm": self.norm,
                "norm_groups": self.norm_groups,
                "norm_epsilon": self.norm_epsilon,
                "extra_padding": self.extra_padding,
                "top_down": self.top_down,
                "lateral": self.lateral,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
