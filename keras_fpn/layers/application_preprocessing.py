"""Applies a `keras.applications` family's own `preprocess_input` inside a model."""

import importlib

import keras
from keras import ops


# torchvision's detectors (GeneralizedRCNNTransform) and classifiers: RGB scaled to [0, 1], then the ImageNet
# mean and standard deviation. In [0, 255] units, the mean is the pixel value that normalises to 0.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def _torchvision_preprocess(images):
    mean = ops.convert_to_tensor(TORCHVISION_MEAN, "float32")
    std = ops.convert_to_tensor(TORCHVISION_STD, "float32")
    return (images / 255.0 - mean) / std


def _preprocess_fn(family):
    if family == "torchvision":
        return _torchvision_preprocess
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
    """Maps raw RGB images in [0, 255] to what a `keras.applications` backbone (or a torchvision one) expects.

    Calls the family's own `keras.applications.<family>.preprocess_input`, so the scaling always matches Keras's
    (caffe-style BGR mean subtraction for ResNet and VGG, [-1, 1] for Inception and MobileNet, ImageNet
    mean/std for DenseNet, identity for families that normalise inside the model such as EfficientNet and
    ConvNeXt). `"torchvision"` is torchvision's normalisation: RGB / 255, minus the ImageNet mean, over its
    standard deviation. The computation runs in float32 whatever the global dtype policy, as a mean subtraction on
    0-255 values loses precision in float16.

    Args:
        family: str, the `keras.applications` module name, e.g. `"resnet"`, `"resnet_v2"`, `"mobilenet_v3"`, or
            `"torchvision"`.
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

    @property
    def pad_value(self):
        """The raw pixel value that preprocesses to 0: what torchvision pads its normalised batches with, so padding
        raw images with it gives the same input (None for the `keras.applications` families, padded with 0)."""
        return tuple(255.0 * mean for mean in TORCHVISION_MEAN) if self.family == "torchvision" else None

    def call(self, images):
        return self._preprocess_input(ops.cast(images, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["family"] = self.family
        return config
