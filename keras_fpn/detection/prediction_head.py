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
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]` pyramid map.

    Returns:
        `[batch, height, width, num_outputs]`.
    """

    def __init__(self, num_outputs, filters=256, depth=4, norm=None, bias_prior=None, norm_epsilon=1e-3, **kwargs):
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

    def build(self, input_shape):
        self.convs, self.norms = [], []
        channels = input_shape[-1]
        for i in range(self.depth):
            conv = keras.layers.Conv2D(
                self.filters, 3, padding="same", data_format="channels_last",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), use_bias=self.norm is None,
                dtype=self.dtype_policy, name=f"conv{i}",
            )
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
        self.output_conv = keras.layers.Conv2D(
            self.num_outputs, 3, padding="same", data_format="channels_last",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant(bias), dtype=self.dtype_policy, name="output",
        )
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
                       "norm": self.norm, "bias_prior": self.bias_prior, "norm_epsilon": self.norm_epsilon})
        return config
