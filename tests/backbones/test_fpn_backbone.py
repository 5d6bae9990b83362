import os
import tempfile

import keras
import numpy as np
import pytest

from keras_fpn import FPNBackbone
from tests.testing import assert_all_close, assert_config_matches_constructor, tiny_convnet


def images(batch=1, height=96, width=128, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def small_mobilenet_v2():
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.35)


def test_pyramid_from_images_of_any_size():
    model = FPNBackbone("MobileNetV3Small", weights=None, num_channels=16)
    assert model.feature_levels == [3, 4, 5]
    for height, width in [(96, 128), (75, 101)]:
        x = images(2, height, width)
        pyramid = model.predict(x, verbose=0)
        features = model.backbone_features(x)
        assert list(pyramid) == ["P3", "P4", "P5", "P6", "P7"]
        for level in (3, 4, 5):
            # The backbone's own padding decides sizes at odd inputs (75 -> 9 or 10 at stride 8); P follows C.
            size = tuple(features[f"C{level}"].shape[1:3])
            assert abs(size[0] - height / 2**level) <= 1 and abs(size[1] - width / 2**level) <= 1
            assert pyramid[f"P{level}"].shape == (2, *size, 16)


def test_return_features():
    model = FPNBackbone("MobileNetV2", weights=None, return_features=True, backbone_kwargs={"alpha": 0.35})
    features = model(images())
    assert list(features) == ["C3", "C4", "C5"]
    assert [features[key].shape[-1] for key in features] == [96, 192, 1280]  # 6x expansion of 16, 32 (alpha 0.35); 1280 top
    assert model.stage_layers == {3: "block_6_expand_relu", 4: "block_13_expand_relu", 5: "out_relu"}


def test_preprocessing_is_the_familys_own():
    application = small_mobilenet_v2()
    model = FPNBackbone(application, preprocessing="mobilenet_v2", return_features=True)
    x = images()
    reference = keras.Model(application.input, application.get_layer("block_13_expand_relu").output)
    expected = reference(keras.applications.mobilenet_v2.preprocess_input(x.copy()))
    assert_all_close(model(x)["C4"], expected, atol=1e-5)


def test_instance_gets_no_preprocessing_unless_asked():
    application = small_mobilenet_v2()
    model = FPNBackbone(application, return_features=True)
    assert model.preprocessing is None
    x = images() / 127.5 - 1
    reference = keras.Model(application.input, application.get_layer("out_relu").output)
    assert_all_close(model(x)["C5"], reference(x), atol=1e-5)


def test_local_weights_file():
    """`weights=` is passed through to keras.applications: a local file works offline."""
    source = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35)
    path = os.path.join(tempfile.mkdtemp(), "mobilenet_v2.weights.h5")
    source.save_weights(path)
    model = FPNBackbone("MobileNetV2", weights=path, backbone_kwargs={"alpha": 0.35}, return_features=True)
    reference = keras.Model(source.input, source.get_layer("out_relu").output)
    x = images()
    assert_all_close(model(x)["C5"], reference(keras.applications.mobilenet_v2.preprocess_input(x.copy())),
                     atol=1e-5)


def test_stage_layers_override():
    model = FPNBackbone("MobileNetV2", weights=None, backbone_kwargs={"alpha": 0.35}, return_features=True,
                        stage_layers={"4": "block_12_add"})
    assert model.stage_layers[4] == "block_12_add"
    assert model(images())["C4"].shape[-1] == 32


def test_extra_levels_above_a_shallow_request():
    model = FPNBackbone("MobileNetV3Small", weights=None, min_level=2, max_level=4, num_channels=8)
    assert list(model(images())) == ["P2", "P3", "P4"]
    assert model.feature_levels == [2, 3, 4]


def test_config_and_keras_round_trip():
    model = FPNBackbone("MobileNetV3Small", weights=None, num_channels=8, pyramid_kwargs={"fusion": "concat"})
    assert_config_matches_constructor(model, {"num_channels": 8, "weights": None})
    x = images()
    expected = model(x)
    path = os.path.join(tempfile.mkdtemp(), "fpn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FPNBackbone)
    assert loaded.stage_layers == model.stage_layers and loaded.preprocessing == "mobilenet_v3"
    assert_all_close(loaded(x), expected, atol=0)
    assert_all_close(loaded.predict(images(height=75, width=99), verbose=0),
                     model.predict(images(height=75, width=99), verbose=0), atol=1e-5)


def test_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    pyramid = FPNBackbone("MobileNetV3Small", weights=None, num_channels=8)(images())
    assert keras.backend.standardize_dtype(pyramid["P3"].dtype) == "bfloat16"
    assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(pyramid["P7"], "float32"))).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "ResNet51"}, "Received backbone='ResNet51'; expected a keras.Model or the name"),
        ({"backbone": "NASNetMobile"}, r"Build it with a fixed input_shape"),
        ({"backbone": "ConvNeXtTiny", "min_level": 1}, r"has no output at level\(s\) \[1\]"),
        ({"backbone": "MobileNetV3Small", "stage_layers": {5: "nope"}}, "has no layer named 'nope'"),
        ({"backbone": "MobileNetV3Small", "input_shape": (96, 128)}, "Received input_shape=\\(96, 128\\)"),
        ({"backbone": "MobileNetV3Small", "preprocessing": "resnet51"}, "Received family='resnet51'"),
    ],
)
def test_errors(kwargs, message):
    kwargs = {"weights": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        FPNBackbone(**kwargs)



def test_an_instance_keeps_its_own_input_shape_and_a_too_small_one_is_named():
    model = FPNBackbone(tiny_convnet(input_shape=(48, 80, 3)), min_level=3, max_level=5, num_channels=8)
    assert model.image_shape == (48, 80, 3)
    assert {key: tuple(value.shape[1:3]) for key, value in model(images(1, 48, 80)).items()} == {
        "P3": (6, 10), "P4": (3, 5), "P5": (2, 3)}
    for shape, wanted in (((24, 40, 3), r"\(32, 40, 3\)"), ((64, 16, 3), r"\(64, 32, 3\)")):
        with pytest.raises(ValueError, match=r"too small for pyramid level 5 \(stride 32\): every side must be "
                                             r"at least 32 pixels. Build it with input_shape=" + wanted):
            FPNBackbone(tiny_convnet(input_shape=shape), min_level=3, max_level=5)
    # Levels the pyramid does not take from the backbone do not count: max_level 4 needs 16 pixels.
    assert FPNBackbone(tiny_convnet(input_shape=(24, 40, 3)), min_level=3, max_level=4).feature_levels == [3, 4]
