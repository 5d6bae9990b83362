"""A U-Net decoder (Ronneberger et al. 2015, arXiv 1505.04597) over any backbone: the baseline `SemanticFPN` is
measured against. It predicts once, at its last layer, from skip connections concatenated bare; FPN predicts from a
sum over every level, each through a lateral 1x1 conv.

Defaults and their sources (qubvel/segmentation_models and segmentation_models_pytorch `Unet`): five decoder
blocks of 256, 128, 64, 32 and 16 channels; each upsamples 2x (nearest), concatenates the backbone map of that
stride when there is one, then 2 x (3x3 conv + BatchNorm + ReLU); a 3x3 conv to the classes at the input's size.
"""

import keras
from keras import ops

from keras_fpn.layers.levels import level_key
from keras_fpn.segmentation.segmenter import IGNORE_LABEL, Segmenter

DECODER_FILTERS = (256, 128, 64, 32, 16)


@keras.saving.register_keras_serializable(package="keras_fpn")
class UNetDecoder(keras.layers.Layer):
    """Backbone maps `{"C{l}"}` (levels `min_level..max_level`) to logits at `2 ** max_level` times C_max's size.

    Args:
        num_classes: int. min_level, max_level: ints, the skip levels read (C_max starts the decoder).
        filters: sequence of ints, one per 2x block, default `DECODER_FILTERS`; there must be `max_level` of them
            (C5 needs 5 blocks to reach the input's size).
    """

    def __init__(self, num_classes, min_level=2, max_level=5, filters=DECODER_FILTERS, **kwargs):
        super().__init__(**kwargs)
        filters = tuple(int(f) for f in filters)
        if len(filters) != max_level:
            raise ValueError(f"Received {len(filters)} decoder filters for max_level={max_level}; expected "
                             f"{max_level}, one per 2x upsampling from C{max_level} to the input.")
        self.num_classes, self.min_level, self.max_level, self.filters = num_classes, min_level, max_level, filters
        init = keras.initializers.HeNormal()
        self.blocks = []
        for index, width in enumerate(filters):
            block = []
            for conv in range(2):
                block.append((keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init,
                                                  dtype=self.dtype_policy, name=f"block{index}_conv{conv}"),
                              keras.layers.BatchNormalization(dtype=self.dtype_policy,
                                                              name=f"block{index}_conv{conv}_norm")))
            self.blocks.append(block)
        self.predictor = keras.layers.Conv2D(num_classes, 3, padding="same", dtype=self.dtype_policy,
                                             name="predictor")

    def build(self, input_shape):
        channels = input_shape[level_key("C", self.max_level)][-1]
        for index, block in enumerate(self.blocks):
            skip = self.max_level - 1 - index
            if skip >= self.min_level:
                channels += input_shape[level_key("C", skip)][-1]
            for conv, norm in block:
                conv.build((None, None, None, channels))
                channels = conv.filters
                norm.build((None, None, None, channels))
        self.predictor.build((None, None, None, channels))
        self.built = True

    def call(self, features, training=None):
        x = features[level_key("C", self.max_level)]
        for index, block in enumerate(self.blocks):
            x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)  # 2x nearest
            skip = self.max_level - 1 - index
            if skip >= self.min_level:
                x = ops.concatenate([x, ops.cast(features[level_key("C", skip)], x.dtype)], axis=-1)
            for conv, norm in block:
                x = ops.relu(norm(conv(x), training=training))
        return self.predictor(x)

    def compute_output_shape(self, input_shape):
        shape = input_shape[level_key("C", self.max_level)]

        def scaled(side):
            return None if side is None else side * 2 ** self.max_level

        return (shape[0], scaled(shape[1]), scaled(shape[2]), self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "min_level": self.min_level,
                "max_level": self.max_level, "filters": list(self.filters)}


@keras.saving.register_keras_serializable(package="keras_fpn")
class UNet(Segmenter):
    """Semantic segmentation with a U-Net decoder on a `keras.applications` backbone (the backbone's maps C2-C5
    as skips, found as `FPNBackbone` finds them).

    Args:
        num_classes: int, classes including the background.
        backbone, backbone_weights, input_shape, backbone_kwargs, ignore_label: as `SemanticFPN`.
        decoder_filters: default `DECODER_FILTERS` (256, 128, 64, 32, 16).
        min_level, max_level: default 2 and 5, the skip levels.

    Example:

    >>> model = UNet(num_classes=3, backbone="MobileNetV3Small", backbone_weights=None,
    ...              decoder_filters=(32, 16, 16, 8, 8))
    >>> model.predict(keras.random.uniform((1, 50, 70, 3), 0, 255), verbose=0).shape
    (1, 50, 70)
    """

    def __init__(self, num_classes, backbone="ResNet50", backbone_weights="imagenet", input_shape=None,
                 decoder_filters=DECODER_FILTERS, min_level=2, max_level=5, backbone_kwargs=None,
                 ignore_label=IGNORE_LABEL, **kwargs):
        decoder = UNetDecoder(num_classes, min_level, max_level, decoder_filters, name="decoder")
        super().__init__(num_classes, decoder, backbone, backbone_weights, input_shape, min_level, max_level, 256,
                         backbone_kwargs, return_features=True, ignore_label=ignore_label, **kwargs)
        self.decoder_filters = tuple(decoder_filters)
        self.min_level, self.max_level = min_level, max_level

    def get_config(self):
        return {**super().get_config(), "decoder_filters": list(self.decoder_filters), "min_level": self.min_level,
                "max_level": self.max_level}
