"""The RetinaNet subnet shared by every pyramid level."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fpn")
class PredictionHead(keras.layers.Layer):
    """A RetinaNet subnet: `depth` x [3x3 conv + (GroupNorm) + ReLU], then a 3x3 conv to `num_outputs`.

    One instance is applied to every pyramid level, so its weights are shared across levels (Lin et al. 2017,
    "Focal Loss for Dense Object Detection", Sec. 4). Convs start from N(0, 0.01) with zero bias; the last conv's
    bias is `bias_prior` when given, e.g. `-log((1 - pi) / pi)` for the classification subnet so that every anchor
    starts with foreground probability `pi`.

    Args:
        num_outputs: int, channels of the last conv (anchors x classes, or anchors x 4).
        filters: int, default 256. Channels of the hidden convs.
        depth: int, default 4. Number of hidden convs.
        norm: None or `"group"`. GroupNorm (32 groups, or fewer when `filters` is small) after each hidden conv.
        norm_epsilon: float, default 1e-3 (Keras's `GroupNormalization`); torchvision's `nn.GroupNorm` uses 1e-5.
        bias_prior: float or None. Initial bias of the last conv.
        separable: bool, default False. Depthwise-separable 3x3 convs (a depthwise 3x3 then a pointwise 1x1,
            `keras.layers.SeparableConv2D`) in place of every conv, as SSDLite's heads (Sandler et al. 2018,
            MobileNetV2 Sec. 6.2; torchvision's `ssdlite320_mobilenet_v3_large`): about 1/9 of the multiply-adds.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]` pyramid map.

    Returns:
        `[batch, height, width, num_outputs]`.
    """

    def __init__(self, num_outputs, filters=256, depth=4, norm=None, bias_prior=None, norm_epsilon=1e-3,
                 separable=False, **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "group"):
            raise ValueError(f"Received norm={norm!r}; expected None or 'group'.")
        if depth < 0 or filters < 1 or num_outputs < 1:
            raise ValueError(
                f"Received num_outputs={num_outputs}, filters={filters}, depth={depth}; expected positive "
                "num_outputs and filters, non-negative depth."
            )
        self.num_outputs = num_outputs
        self.filters = filters
        self.depth = depth
        self.norm = norm
        self.norm_epsilon = norm_epsilon
        self.bias_prior = bias_prior
        self.separable = bool(separable)

    def _conv(self, filters, name, **kwargs):
        init = keras.initializers.RandomNormal(stddev=0.01)
        if self.separable:
            return keras.layers.SeparableConv2D(filters, 3, padding="same", data_format="channels_last",
                                                depthwise_initializer=init, pointwise_initializer=init,
                                                dtype=self.dtype_policy, name=name, **kwargs)
        return keras.layers.Conv2D(filters, 3, padding="same", data_format="channels_last", kernel_initializer=init,
                                   dtype=self.dtype_policy, name=name, **kwargs)

    def build(self, input_shape):
        self.convs, self.norms = [], []
        channels = input_shape[-1]
        for i in range(self.depth):
            conv = self._conv(self.filters, f"conv{i}", use_bias=self.norm is None)
            conv.build((*input_shape[:-1], channels))
            self.convs.append(conv)
            if self.norm == "group":
                norm = keras.layers.GroupNormalization(groups=math.gcd(32, self.filters),
                                                       epsilon=self.norm_epsilon, dtype=self.dtype_policy,
                                                       name=f"conv{i}_norm")
                norm.build((*input_shape[:-1], self.filters))
                self.norms.append(norm)
            channels = self.filters
        bias = 0.0 if self.bias_prior is None else self.bias_prior
        self.output_conv = self._conv(self.num_outputs, "output", bias_initializer=keras.initializers.Constant(bias))
        self.output_conv.build((*input_shape[:-1], channels))
        self.built = True

    def call(self, inputs):
        x = inputs
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = ops.relu(x)
        return self.output_conv(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_outputs)

    def get_config(self):
        config = super().get_config()
        config.update({"num_outputs": self.num_outputs, "filters": self.filters, "depth": self.depth,
                       "norm": self.norm, "bias_prior": self.bias_prior, "norm_epsilon": self.norm_epsilon,
                       "separable": self.separable})
        return config
