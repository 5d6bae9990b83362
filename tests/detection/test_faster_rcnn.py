"""Faster R-CNN through fit and predict (its parts: test_rpn, test_proposals, test_roi_align, test_sampling,
test_roi_heads)."""

import json

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                 reason="proposals, RoIAlign and NMS use TensorFlow ops"),
              pytest.mark.xdist_group("faster_rcnn")]

import tensorflow as tf  # noqa: E402

from keras_fpn import FasterRCNN  # noqa: E402
from keras_fpn.datasets import generate_shapes  # noqa: E402
from tests.testing import tiny_convnet  # noqa: E402


def tiny_faster_rcnn(**kwargs):
    args = dict(backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                rpn_pre_nms_topk_train=200, rpn_post_nms_topk_train=100, rpn_pre_nms_topk_test=100,
                rpn_post_nms_topk_test=50, roi_batch_size_per_image=32, seed=1)
    args.update(kwargs)
    return FasterRCNN(3, **args)


@pytest.fixture(scope="module")
def model():
    detector = tiny_faster_rcnn()
    detector.compile(optimizer="adam")
    return detector


# -- the model ----------------------------------------------------------------------------------------------------

def shapes(n=4, size=64, seed=0):
    images, boxes, labels = generate_shapes(n, size, max_objects=3, seed=seed)
    return images.astype("float32"), {"boxes": boxes, "labels": labels}


def test_outputs_rpn_shared_over_p2_to_p6(model):
    outputs = model(np.zeros((2, 64, 96, 3), "float32"))
    assert sorted(outputs) == ["P2", "P3", "P4", "P5", "P6", "rpn_box", "rpn_objectness"]
    anchors = 3 * (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2)
    assert outputs["rpn_objectness"].shape == (2, anchors) and outputs["rpn_box"].shape == (2, anchors, 4)
    np.testing.assert_array_equal(outputs["P6"], np.asarray(outputs["P5"])[:, ::2, ::2])  # P6 subsampled
    assert [layer.name for layer in model.layers if layer.name == "rpn_head"] == ["rpn_head"]  # one shared head


def test_fit_logs_every_loss_and_predict_returns_the_detection_dict(model):
    images, y = shapes()
    history = model.fit(images, y, batch_size=2, epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "rpn_objectness_loss", "rpn_box_loss", "classification_loss",
                                     "box_loss", "dropped_boxes"}
    assert all(np.isfinite(value).all() for value in history.history.values())
    for predictions in (model.predict(images, batch_size=2, verbose=0), model.predict_on_batch(images)):
        assert {key: tuple(value.shape) for key, value in predictions.items()} == {
            "boxes": (4, 100, 4), "scores": (4, 100), "labels": (4, 100), "num_detections": (4,)}
        n = int(predictions["num_detections"][0])
        assert n > 0 and (np.asarray(predictions["labels"])[0, n:] == -1).all()
        assert np.asarray(predictions["labels"])[0, :n].max() < 3


def test_images_without_objects_and_any_size_and_batch(model):
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    empty = {"boxes": np.zeros((2, 0, 4), np.float32), "labels": np.zeros((2, 0), np.int32)}
    assert np.isfinite(model.train_on_batch(images, empty)).all()
    for shape in ((1, 96, 64, 3), (3, 64, 128, 3)):
        predictions = model.predict_on_batch(np.zeros(shape, np.float32))
        assert predictions["boxes"].shape == (shape[0], 100, 4)


def test_keras_round_trip_and_bfloat16(model, tmp_path):
    images, _ = shapes(2)
    path = str(tmp_path / "faster_rcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FasterRCNN)
    before, after = model.predict_on_batch(images), loaded.predict_on_batch(images)
    for key in before:
        np.testing.assert_allclose(before[key], after[key], atol=1e-5)
    # The same configuration (tuples come back from JSON as lists).
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    low = model.with_dtype("bfloat16").predict_on_batch(images)
    assert low["boxes"].dtype == np.float32 and low["boxes"].shape == (2, 100, 4)


def test_bad_input_is_named_as_for_retinanet(model):
    images, y = shapes(2)
    with pytest.raises(ValueError, match="^labels must be < num_classes=3"):
        model.fit(images, {**y, "labels": np.full_like(y["labels"], 5)}, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="^boxes have x2 < x1"):
        model.fit(tf.data.Dataset.from_tensors((images, {**y, "boxes": y["boxes"][..., ::-1].copy()})), verbose=0)
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        model.predict_on_batch(images[0])


def test_rpn_on_the_finest_level_only_keeps_the_whole_pyramid():
    # The FPN paper's "only finest level" row: the top-down pyramid is built, the RPN sees P2 alone.
    detector = tiny_faster_rcnn(max_level=5, rpn_min_level=2, rpn_max_level=2, anchor_scales=(1.0, 2.0, 4.0))
    outputs = detector(np.zeros((1, 64, 96, 3), "float32"))
    assert sorted(outputs) == ["P2", "P3", "P4", "P5", "rpn_box", "rpn_objectness"]
    assert outputs["rpn_objectness"].shape == (1, 16 * 24 * 9)
    boxes, _, valid = detector.propose(np.zeros((1, 64, 96, 3), "float32"), post_nms_topk=20)
    assert boxes.shape == (1, 20, 4) and valid.shape == (1, 20)
    config = detector.get_config()
    assert (config["rpn_min_level"], config["rpn_max_level"]) == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"rpn_max_level": 7}, "expected RPN levels inside the pyramid's"),
    ({"rpn_negative_iou": 0.8}, "expected 0 <= rpn_negative_iou <= rpn_positive_iou"),
    ({"roi_positive_fraction": 0.0}, "roi_positive_fraction=0.0"),
    ({"roi_max_level": 7}, "expected RoI levels inside the pyramid's"),
    ({"bounding_box_format": "xyz"}, "bounding_box_format='xyz'"),
])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_faster_rcnn(**kwargs)
