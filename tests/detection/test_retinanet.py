import math
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fpn import FPNBackbone, PredictionHead, RetinaNet
from keras_fpn.datasets import generate_shapes
from keras_fpn.utils import batchnorm
from tests import testing

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="decoding uses TensorFlow's NMS")


def tiny_retinanet(**kwargs):
    return testing.tiny_retinanet(**{"anchor_scale": 3.0, **kwargs})


def shapes(n=4, size=64, seed=0):
    images, boxes, labels = generate_shapes(n, size, max_objects=3, seed=seed)
    return images.astype("float32"), {"boxes": boxes, "labels": labels}


def test_raw_outputs_and_shared_heads():
    model = tiny_retinanet()
    outputs = model(np.zeros((2, 64, 96, 3), "float32"))
    num_anchors = 9 * (8 * 12 + 4 * 6 + 2 * 3)
    assert outputs["box"].shape == (2, num_anchors, 4)
    assert outputs["classification"].shape == (2, num_anchors, 3)
    heads = [layer for layer in model.layers if isinstance(layer, PredictionHead)]
    assert sorted(head.name for head in heads) == ["box_head", "classification_head"]
    # the prior: every anchor starts near p = 0.01
    probabilities = 1 / (1 + np.exp(-keras.ops.convert_to_numpy(outputs["classification"])))
    assert abs(probabilities.mean() - 0.01) < 0.005


def test_fit_predict_and_predict_on_batch():
    model = tiny_retinanet()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, y = shapes()
    history = model.fit(images, y, batch_size=2, epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "classification_loss", "box_loss"}
    assert all(np.isfinite(history.history["loss"]))
    for predictions in (model.predict(images, batch_size=2, verbose=0), model.predict_on_batch(images)):
        assert predictions["boxes"].shape == (4, 100, 4)
        assert predictions["scores"].shape == (4, 100)
        assert predictions["labels"].shape == (4, 100)
        assert predictions["num_detections"].shape == (4,)
        n = int(predictions["num_detections"][0])
        assert (np.asarray(predictions["labels"])[0, n:] == -1).all()
        boxes = np.asarray(predictions["boxes"])[0, :n]
        assert (boxes >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()


def test_no_objects_and_all_padding_batches_train_without_nan():
    model = tiny_retinanet()
    model.compile(optimizer="adam")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    empty = {"boxes": np.zeros((2, 3, 4), "float32"), "labels": -np.ones((2, 3), "int32")}
    logs = model.train_on_batch(images, empty, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["box_loss"] == 0.0
    none_at_all = {"boxes": np.zeros((2, 0, 4), "float32"), "labels": np.zeros((2, 0), "int32")}
    assert np.isfinite(model.train_on_batch(images, none_at_all, return_dict=True)["loss"])


def test_ragged_targets():
    model = tiny_retinanet()
    model.compile(optimizer="adam")
    images, y = shapes(2)
    keep = y["labels"] >= 0
    ragged = {"boxes": tf.ragged.constant([b[k].tolist() for b, k in zip(y["boxes"], keep)], ragged_rank=1),
              "labels": tf.ragged.constant([lab[k].tolist() for lab, k in zip(y["labels"], keep)])}
    dense_loss = model.compute_loss(images, y, model(images))
    ragged_loss = model.compute_loss(images, ragged, model(images))
    np.testing.assert_allclose(float(ragged_loss), float(dense_loss), rtol=1e-5)


@pytest.mark.parametrize("box_format", ["rel_yxyx", "center_xywh", "xywh"])
def test_every_box_format_gives_the_same_loss(box_format):
    images, y = shapes(2)
    reference = tiny_retinanet()
    y_pred = reference(images)
    converted = {"boxes": keras.utils.bounding_boxes.convert_format(y["boxes"], "xyxy", box_format, height=64,
                                                                    width=64),
                 "labels": y["labels"]}
    other = tiny_retinanet(bounding_box_format=box_format)
    np.testing.assert_allclose(float(other.compute_loss(images, converted, y_pred)),
                               float(reference.compute_loss(images, y, y_pred)), rtol=1e-4)


def test_giou_box_loss_trains():
    model = tiny_retinanet(box_loss="giou")
    model.compile(optimizer="adam")
    images, y = shapes(2)
    assert np.isfinite(model.train_on_batch(images, y, return_dict=True)["loss"])


def test_keras_round_trip_identical_predictions():
    model = tiny_retinanet()
    images, _ = shapes(2, size=75)
    expected = model.predict(images, verbose=0)
    path = os.path.join(tempfile.mkdtemp(), "retinanet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, RetinaNet)
    actual = loaded.predict(images, verbose=0)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])


def _expected_centres(height, width, levels):
    """Anchor centres of each level by an independent rule: a "same"-padded stride-2 conv maps n pixels to
    ceil(n / 2), so level l's map is ceil(n / 2^l) cells, each anchor centred in its cell."""
    centres = []
    for level in levels:
        stride = 2 ** level
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
        centres.append(np.repeat(np.stack([cx.ravel(), cy.ravel()], axis=-1), 9, axis=0))
    return np.concatenate(centres)


@pytest.mark.parametrize("size", [(75, 101), (97, 64), (33, 131)])
def test_odd_image_sizes_lay_anchors_on_the_maps_the_backbone_makes(size):
    model = tiny_retinanet()
    images = np.random.default_rng(0).uniform(0, 255, (1, *size, 3)).astype("float32")
    expected = _expected_centres(*size, range(3, 6))
    outputs = model(images)
    assert outputs["box"].shape[1] == len(expected)
    anchors, per_level = model.anchors_from(outputs)
    anchors = keras.ops.convert_to_numpy(anchors)
    np.testing.assert_allclose((anchors[:, :2] + anchors[:, 2:]) / 2, expected, atol=1e-4)
    # The same anchors when the size is known only at run time (a traced function with unknown height/width).
    traced = tf.function(lambda x: model.anchors_from(model(x))[0],
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(traced(images).numpy(), anchors, atol=1e-4)
    assert model.predict(images, verbose=0)["boxes"].shape == (1, 100, 4)


def test_mixed_precision_trains_without_nan():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_retinanet()
    model.compile(optimizer="adam")
    images, y = shapes(2)
    for _ in range(2):
        assert np.isfinite(model.train_on_batch(images, y, return_dict=True)["loss"])
    assert model.predict(images, verbose=0)["boxes"].dtype == np.float32


def test_batchnorm_controls():
    backbone = FPNBackbone("MobileNetV3Small", weights=None, num_channels=8, batchnorm_momentum=0.9,
                           freeze_batchnorm=True)
    layers = batchnorm.batchnorm_layers(backbone)
    assert layers and all(layer.momentum == 0.9 and not layer.trainable for layer in layers)


def test_precise_batchnorm_averages_batch_statistics():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.999)(inputs))
    batches = [np.random.default_rng(i).normal(i, 1 + i, (8, 4)).astype("float32") for i in range(3)]
    assert batchnorm.precise_batchnorm(model, batches, num_batches=3, verbose=0) == 3
    layer = batchnorm.batchnorm_layers(model)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean),
                               np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance),
                               np.mean([b.var(0) for b in batches], 0), rtol=1e-4)
    assert layer.momentum == 0.999


def test_precise_batchnorm_labels_its_progress_bar(capsys):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    batchnorm.precise_batchnorm(model, [np.ones((8, 4), "float32")] * 2, num_batches=2, verbose=1)
    assert "Precise BatchNorm: recomputing the statistics of 1 BatchNorm layers over 2 training batches" in (
        capsys.readouterr().out)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "Received num_classes=0"),
        ({"box_loss": "l2"}, "Received box_loss='l2'"),
        ({"negative_iou": 0.6}, "Received negative_iou=0.6, positive_iou=0.5"),
        ({"bounding_box_format": "xyzw"}, "xyzw"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_retinanet(**kwargs)


def test_bad_targets():
    model = tiny_retinanet()
    images, y = shapes(1)
    with pytest.raises(ValueError, match="Expected y = {'boxes'"):
        model.compute_loss(images, y["boxes"], model(images))


def test_a_fixed_size_keras_applications_instance_trains_predicts_exports_and_round_trips(tmp_path):
    from keras_fpn.export import export_saved_model

    application = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(96, 96, 3),
                                                      minimalistic=True, alpha=0.75)
    model = RetinaNet(num_classes=3, backbone=application, num_channels=16, head_filters=16, head_depth=1,
                      min_level=3, max_level=5)
    assert model.backbone.image_shape == (96, 96, 3) and model.backbone.feature_levels == [3, 4, 5]
    model.compile(optimizer="adam")
    images, y = shapes(2, size=96)
    assert np.isfinite(model.train_on_batch(images, y, return_dict=True)["loss"])
    expected = model.predict_on_batch(images)
    assert expected["boxes"].shape == (2, 100, 4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for key, value in loaded.predict_on_batch(images).items():
        np.testing.assert_array_equal(value, expected[key])
    exported = export_saved_model(model, str(tmp_path / "export"))  # the image size is the model's own
    served = tf.saved_model.load(exported).signatures["image_tensor"](images=tf.constant(images, tf.uint8))
    assert served["detection_boxes"].shape == (2, 100, 4)


def test_boxes_in_the_padding_take_no_detection_slot():
    # A 40x96 image padded to 64x96 (as resize_and_pad lays it): one confident anchor inside the image, one in the
    # padding below it. Clipped to the image, the second box has no height: it is no detection.
    model = tiny_retinanet(score_threshold=0.5)
    images = np.zeros((1, 64, 96, 3), "float32")
    y_pred = {key: keras.ops.convert_to_numpy(value) for key, value in model(images).items()}
    anchors = keras.ops.convert_to_numpy(model.anchors_from(y_pred)[0])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    inside = int(np.argmin(np.abs(centres[:, 0] - 44) + np.abs(centres[:, 1] - 20)))
    below = int(np.argmin(np.abs(centres[:, 0] - 44) + np.abs(centres[:, 1] - 60)))
    y_pred["classification"] = np.full_like(y_pred["classification"], -10.0)
    y_pred["classification"][0, [inside, below], 1] = 10.0
    y_pred["box"] = np.zeros_like(y_pred["box"])
    content = np.array([[40.0, 96.0]], "float32")
    found = model.decode_predictions(y_pred, images, content)
    assert int(found["num_detections"][0]) == 1
    box = keras.ops.convert_to_numpy(found["boxes"])[0, 0]
    assert box[3] <= 40.0 and box[3] - box[1] > 1.0
    # Without the content size the padding box counts (clipped to the padded input, it keeps its area).
    assert int(model.decode_predictions(y_pred, images)["num_detections"][0]) == 2


def test_predict_pads_images_smaller_than_the_coarsest_stride():
    model = tiny_retinanet(max_level=7, score_threshold=0.0)  # P7: stride 128
    images = np.random.default_rng(0).uniform(0, 255, (1, 97, 131, 3)).astype("float32")
    found = model.predict(images, verbose=0)
    count = int(found["num_detections"][0])
    assert count > 0
    boxes = found["boxes"][0, :count]
    assert boxes[:, [0, 2]].max() <= 131 and boxes[:, [1, 3]].max() <= 97  # clipped to the image, not the padding
