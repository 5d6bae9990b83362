"""Applies a `keras.applications` family's own `preprocess_input` inside a model."""

import importlib

import keras
from keras import ops


def _preprocess_fn(family):
    try:
        module = importlib.import_module(f"keras.applications.{family}")
        return module.preprocess_input
    except (ImportError, AttributeError):
        raise ValueError(
            f"Received family={family!r}; expected the name of a keras.applications module with a "
            "preprocess_input function, such as 'resnet', 'mobilenet_v3' or 'efficientnet_v2'."
        ) from None


@keras.saving.register_keras_serializable(package="keras_fpn")
class ApplicationPreprocessing(keras.layers.Layer):
    """Maps raw RGB images in [0, 255] to what a `keras.applications` backbone expects.

    Calls the family's own `keras.applications.<family>.preprocess_input`, so the scaling always matches Keras's
    (caffe-style BGR mean subtraction for ResNet and VGG, [-1, 1] for Inception and MobileNet, ImageNet
    mean/std for DenseNet, identity for families that normalise inside the model such as EfficientNet and
    ConvNeXt). The computation runs in float32 whatever the global dtype policy, as a mean subtraction on
    0-255 values loses precision in float16.

    Args:
        family: str, the `keras.applications` module name, e.g. `"resnet"`, `"resnet_v2"`, `"mobilenet_v3"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        images: tensor `[batch, height, width, 3]`, RGB in [0, 255], any numeric dtype.

    Returns:
        A float32 tensor of the same shape.

    Example:

    >>> layer = ApplicationPreprocessing("resnet")
    >>> keras.ops.convert_to_numpy(layer(keras.ops.zeros((1, 2, 2, 3))))[0, 0, 0]  # BGR minus the ImageNet mean
    array([-103.939, -116.779, -123.68 ], dtype=float32)
    """

    def __init__(self, family, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._preprocess_input = _preprocess_fn(family)
        self.family = family

    def call(self, images):
        return self._preprocess_input(ops.cast(images, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["family"] = self.family
        return config
