"""Every keras.applications constructor works as an FPN backbone (weights=None, small non-square images)."""

import os

import keras
import pytest

from keras_fpn import FPNBackbone
from keras_fpn.backbones import application_names, find_stage_outputs, get_application

FAMILIES = {
    "torchvision",
    "convnext", "densenet", "efficientnet", "efficientnet_v2", "inception_resnet_v2", "inception_v3", "mobilenet",
    "mobilenet_v2", "mobilenet_v3", "nasnet", "resnet", "resnet_v2", "vgg16", "vgg19", "xception",
}
# Keras's NASNet decides in Python whether a cell must downsample its other input by comparing static shapes, so
# it only runs at the input size it was built for.
FIXED_SIZE_ONLY = {"NASNetMobile", "NASNetLarge"}
HEIGHT, WIDTH = 96, 128


def test_every_family_is_covered():
    names = application_names()
    assert len(names) >= 40
    # 14 families; VGG16 and VGG19 keep their preprocess_input in two modules.
    assert {get_application(name)[1] for name in names} == FAMILIES
    assert {get_application(name)[1] for name in SMALLEST_OF_FAMILY} == FAMILIES


# Most people build a keras.applications model at a fixed size (ImageNet weights, TPUs, TFLite): square, and
# non-square where the weights allow it. Squeeze-and-excitation maps (1x1 at every size) must not look like stages.
# Every constructor is built square; the smallest of each family (the larger variants run the same code with other
# widths and depths) is built non-square too, which keeps the sweep within CI's budget.
SQUARE, NON_SQUARE = (224, 224), (192, 256)
SMALLEST_OF_FAMILY = {"ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionResNetV2",
                      "InceptionV3", "MobileNet", "MobileNetV2", "MobileNetV3Small", "NASNetMobile", "ResNet50",
                      "ResNet50V2", "TorchvisionResNet50", "VGG16", "VGG19", "Xception"}


def _positions(application, stage_layers):
    """{level: index of the stage layer in the model's operations}: layer names differ between two builds of the
    same architecture (Keras numbers unnamed layers), their positions do not."""
    index = {op.name: i for i, op in enumerate(application.operations)}
    return {level: index[name] for level, name in stage_layers.items()}


# The sweep CI runs: the smallest constructor of each family plus every backbone a zoo record names. The larger
# variants (ConvNeXtXLarge, EfficientNetV2L, NASNetLarge, ...) run their family's code with other widths and depths,
# and building them is most of a full sweep's time (randomly initialising up to 350M parameters);
# `KERAS_FPN_ALL_APPLICATIONS=1 python -m pytest tests/backbones/test_all_applications.py` sweeps every constructor.
ZOO_BACKBONES = {"ResNet50", "ResNet101", "ConvNeXtTiny", "EfficientNetV2B0", "MobileNetV3Large", "MobileNetV3Small",
                 "TorchvisionResNet50"}
SWEPT = application_names() if os.environ.get("KERAS_FPN_ALL_APPLICATIONS") else sorted(
    SMALLEST_OF_FAMILY | ZOO_BACKBONES | {"TorchvisionResNet50"})


def test_the_sweep_covers_every_family_and_the_zoo():
    from keras_fpn import models

    assert {get_application(name)[1] for name in SWEPT} == FAMILIES
    assert {models.get(name)["backbone"]["application"] for name in models.list()} <= set(SWEPT)


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEPT)
def test_application_as_fpn_backbone(name):
    constructor, family = get_application(name)
    input_shape = (HEIGHT, WIDTH, 3) if name in FIXED_SIZE_ONLY else (None, None, 3)
    application = constructor(include_top=False, weights=None, input_shape=input_shape)
    model = FPNBackbone(application, num_channels=8, preprocessing=family)
    assert model.feature_levels == [3, 4, 5]
    reference = _positions(application, model.stage_layers)
    for height, width in (SQUARE, NON_SQUARE) if name in SMALLEST_OF_FAMILY else (SQUARE,):
        fixed = constructor(include_top=False, weights=None, input_shape=(height, width, 3))
        assert _positions(fixed, find_stage_outputs(fixed, 3, 5)) == reference, (height, width)
    images = keras.random.uniform((1, HEIGHT, WIDTH, 3), 0, 255, seed=0)
    features = model.backbone_features(images)
    pyramid = model(images)
    assert list(pyramid) == ["P3", "P4", "P5", "P6", "P7"]
    previous = None
    for level in (3, 4, 5):
        height, width = features[f"C{level}"].shape[1:3]
        if previous is not None:  # each stage halves the previous one; valid padding may take one more pixel
            assert previous[0] // 2 - 1 <= height <= -(-previous[0] // 2), (level, previous, height)
            assert previous[1] // 2 - 1 <= width <= -(-previous[1] // 2), (level, previous, width)
        assert tuple(pyramid[f"P{level}"].shape) == (1, height, width, 8)
        previous = (height, width)
    assert tuple(pyramid["P6"].shape[1:3]) == (-(-previous[0] // 2), -(-previous[1] // 2))
