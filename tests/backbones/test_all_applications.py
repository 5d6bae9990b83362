"""Every keras.applications constructor works as an FPN backbone (weights=None, small non-square images)."""

import keras
import pytest

from keras_fpn import FPNBackbone
from keras_fpn.backbones import application_names, get_application

FAMILIES = {
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


@pytest.mark.slow
@pytest.mark.parametrize("name", application_names())
def test_application_as_fpn_backbone(name):
    input_shape = (HEIGHT, WIDTH, 3) if name in FIXED_SIZE_ONLY else (None, None, 3)
    model = FPNBackbone(name, weights=None, input_shape=input_shape, num_channels=8)
    assert model.feature_levels == [3, 4, 5]
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
