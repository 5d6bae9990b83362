"""The bfloat16 inference path: `RetinaNet.with_dtype` copies, their outputs, and their SavedModel."""

import os

import keras
import numpy as np
import pytest

from keras_fpn import RetinaNet

# One worker runs the whole module (scripts/test.sh: --dist loadgroup), so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("precision")
IMAGE_SHAPE = (64, 64, 3)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return RetinaNet(3, backbone="MobileNetV3Small", backbone_weights=None, num_channels=16, head_filters=16,
                     head_depth=1, max_level=5, input_shape=IMAGE_SHAPE, score_threshold=0.2, max_detections=7)


@pytest.fixture(scope="module")
def images():
    return keras.random.uniform((2, *IMAGE_SHAPE), 0.0, 255.0, seed=1)


def test_the_copy_stores_and_computes_in_bfloat16_and_leaves_the_model_alone(model):
    copy = model.with_dtype("bfloat16")
    assert {weight.dtype for weight in copy.weights} == {"bfloat16"}
    assert {weight.dtype for weight in model.weights} == {"float32"}
    # Only the input normalisation (float32 on purpose: a mean subtraction on 0..255) and the output
    # concatenations (float32 raw outputs for decoding) stay float32; the keras.applications layers are converted.
    float32 = {layer.name for layer in copy._flatten_layers(include_self=False) if layer.compute_dtype == "float32"}
    assert float32 == {"preprocessing", "box", "classification"}
    assert copy.score_threshold == 0.2 and copy.max_detections == 7 and copy.num_classes == 3
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    for original, cast in zip(model.weights, copy.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(cast, "float32")),
                                   keras.ops.convert_to_numpy(original), rtol=2 ** -8, atol=1e-30)


def test_raw_outputs_are_float32_and_close_to_the_float32_model(model, images):
    expected = model(images)
    actual = model.with_dtype("bfloat16")(images)
    for key in ("box", "classification"):
        assert actual[key].dtype == "float32"
        want, got = keras.ops.convert_to_numpy(expected[key]), keras.ops.convert_to_numpy(actual[key])
        # bfloat16 keeps 8 significant bits; through a few dozen layers the error stays a few percent of the range.
        assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want)) + 0.05, key


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="decoding uses TensorFlow's NMS")
def test_predict_in_bfloat16_gives_float32_detections(model, images):
    detections = model.with_dtype("bfloat16").predict_on_batch(images)
    assert sorted(detections) == ["boxes", "labels", "num_detections", "scores"]
    assert detections["boxes"].shape == (2, 7, 4) and str(detections["boxes"].dtype) == "float32"
    assert str(detections["scores"].dtype) == "float32"


@pytest.mark.parametrize("dtype", ["int8", "no_such_dtype"])
def test_a_non_float_dtype_is_refused(model, dtype):
    with pytest.raises(ValueError, match="dtype"):
        model.with_dtype(dtype)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export is TensorFlow's")
def test_the_bfloat16_savedmodel_stores_half_the_bytes_and_serves_float32(model, tmp_path):
    import tensorflow as tf

    from keras_fpn.export import export_saved_model

    def size(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)

    full = export_saved_model(model, str(tmp_path / "f32"), image_size=64)
    half = export_saved_model(model.with_dtype("bfloat16"), str(tmp_path / "bf16"), image_size=64)
    full_variables, half_variables = size(os.path.join(full, "variables")), size(os.path.join(half, "variables"))
    assert 0.45 < half_variables / full_variables < 0.6, (half_variables, full_variables)
    encoded = tf.io.encode_jpeg(tf.cast(tf.random.uniform((80, 50, 3), 0, 255, seed=2), tf.uint8))
    outputs = tf.saved_model.load(half).signatures["serving_default"](images=tf.reshape(encoded, [1]))
    assert outputs["detection_boxes"].shape == (1, 7, 4) and outputs["detection_boxes"].dtype == tf.float32
