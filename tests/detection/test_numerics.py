"""Training never goes NaN: empty images, all-padding batches, tiny boxes, mixed precision; and property-based
tests of the box utilities and the label encoder on random boxes (hypothesis)."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from keras_fpn.detection.anchors import AnchorGenerator
from keras_fpn.detection.box_coding import decode_deltas, encode_deltas, match_anchors, pairwise_iou
from tests.testing import tiny_retinanet

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="RetinaNet's checks and decoding use TensorFlow")


def _small_model(**kwargs):
    model = tiny_retinanet(num_classes=2, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _assert_finite_training(model, images, targets, steps=3):
    for _ in range(steps):
        logs = model.train_on_batch(images, targets, return_dict=True)
        assert all(np.isfinite(float(value)) for value in logs.values()), logs
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path


IMAGES = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")


@tensorflow_only
@pytest.mark.parametrize("boxes, labels", [
    (np.zeros((2, 3, 4)), -np.ones((2, 3))),                             # images without objects
    (np.zeros((2, 0, 4)), np.zeros((2, 0))),                             # a batch that is all padding
    ([[[10, 10, 11, 11]], [[30.2, 40.7, 30.9, 41.2]]], [[0], [1]]),      # 1-pixel and sub-pixel boxes
    ([[[0, 0, 64, 64]], [[0, 0, 64, 1]]], [[0], [1]]),                   # the whole image; a 64x1 sliver
], ids=["no-objects", "all-padding", "tiny-boxes", "extreme-shapes"])
def test_training_stays_finite(boxes, labels):
    targets = {"boxes": np.asarray(boxes, np.float32), "labels": np.asarray(labels, np.int32)}
    _assert_finite_training(_small_model(), IMAGES, targets)


@tensorflow_only
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("box_loss", ["huber", "giou"])
def test_training_stays_finite_under_mixed_precision(policy, box_loss):
    keras.config.set_dtype_policy(policy)
    model = _small_model(box_loss=box_loss)
    assert model.compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    targets = {"boxes": np.array([[[4, 6, 40, 50], [30, 30, 31, 31]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
               "labels": np.array([[0, 1], [-1, -1]], np.int32)}
    _assert_finite_training(model, IMAGES, targets)
    detections = model.predict_on_batch(IMAGES)
    assert np.all(np.isfinite(detections["boxes"])) and np.all(np.isfinite(detections["scores"]))


@tensorflow_only
@pytest.mark.parametrize("box_loss", ["huber", "giou"])
def test_training_stays_finite_with_huge_initial_box_deltas(box_loss):
    model = _small_model(box_loss=box_loss)
    output = model.get_layer("box_head").output_conv
    # Every predicted delta starts near 100: exp(100) overflows float32, so unclamped decoding gives inf boxes and
    # a NaN GIoU loss. The clamp (at most 62.5x the anchor, as torchvision and detectron2) keeps both finite.
    output.bias.assign(np.full(output.bias.shape, 100.0, np.float32))
    targets = {"boxes": np.array([[[4, 6, 40, 50]], [[10, 12, 30, 60]]], np.float32),
               "labels": np.array([[0], [1]], np.int32)}
    _assert_finite_training(model, IMAGES, targets)
    detections = model.predict_on_batch(IMAGES)
    assert np.all(np.isfinite(detections["boxes"])) and np.all(np.isfinite(detections["scores"]))


# -- property-based tests on random boxes --------------------------------------------------------------------

IMAGE = 128.0
ANCHORS = keras.ops.convert_to_numpy(AnchorGenerator(3, 5)({3: (16, 16), 4: (8, 8), 5: (4, 4)}))


def _boxes(min_side=0.0):
    """Random pixel xyxy boxes in and around a 128x128 image, degenerate ones included when min_side is 0."""
    def build(values):
        x1, y1, w, h = values.T
        return np.stack([x1, y1, x1 + w, y1 + h], axis=-1).astype(np.float32)

    coordinates = st.floats(-20, IMAGE + 20, width=32)
    sides = st.floats(min_side, IMAGE, width=32)
    rows = st.tuples(coordinates, coordinates, sides, sides)
    return st.lists(rows, min_size=1, max_size=8).map(lambda r: build(np.array(r, np.float32)))


@settings(max_examples=60, deadline=None)
@given(_boxes(min_side=1.0))
def test_deltas_round_trip(boxes):
    # Every box against its best anchor: encoding then decoding gives the box back.
    iou = np.asarray(pairwise_iou(ANCHORS, boxes[None]))[0]
    anchors = ANCHORS[np.argmax(iou, axis=0)]
    deltas = encode_deltas(anchors, boxes, (1.0, 1.0, 1.0, 1.0))
    assert np.all(np.isfinite(deltas))
    np.testing.assert_allclose(decode_deltas(anchors, deltas, (1.0, 1.0, 1.0, 1.0)), boxes, atol=1e-2, rtol=1e-4)


def _numpy_iou(a, b):
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - width * height
    return width * height / np.maximum(union, 1e-9)


@settings(max_examples=60, deadline=None)
@given(_boxes(), _boxes())
def test_pairwise_iou_is_bounded_symmetric_and_matches_numpy(a, b):
    iou = np.asarray(pairwise_iou(a, b[None]))[0]
    assert np.all(np.isfinite(iou)) and np.all(iou >= 0) and np.all(iou <= 1 + 1e-5)
    np.testing.assert_allclose(iou, np.asarray(pairwise_iou(b, a[None]))[0].T, atol=1e-6)
    np.testing.assert_allclose(iou, _numpy_iou(a.astype(np.float64), b.astype(np.float64)), atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(_boxes(), st.data())
def test_label_encoder_follows_the_iou_rule(boxes, data):
    labels = np.asarray(data.draw(st.lists(st.integers(-1, 2), min_size=len(boxes), max_size=len(boxes))), np.int32)
    matched, positive, negative = (np.asarray(t)[0] for t in
                                   match_anchors(ANCHORS, boxes[None], labels[None], 0.5, 0.4, True))
    iou = _numpy_iou(ANCHORS.astype(np.float64), boxes.astype(np.float64))
    iou[:, labels < 0] = -1.0  # padding boxes match nothing
    best = iou.max(axis=1)
    assert not np.any(positive & negative)
    assert np.all(labels[matched[positive]] >= 0), "a positive anchor matched a padding box"
    # Positives reach 0.5 IoU with their box, or are that box's best anchor (low-quality matches).
    matched_iou = iou[np.arange(len(ANCHORS)), matched]
    box_best = iou.max(axis=0)
    is_best = np.isclose(matched_iou, box_best[matched], atol=1e-5)
    assert np.all((matched_iou[positive] >= 0.5 - 1e-5) | is_best[positive])
    if np.any(labels >= 0):
        clear = np.abs(best - 0.4) > 1e-4  # float32 and float64 may round an IoU of exactly 0.4 either way
        np.testing.assert_array_equal(negative[clear], ((best < 0.4) & (best >= 0) & ~positive)[clear])
    else:  # an image without objects: every anchor is background
        assert negative.all() and not positive.any()


@tensorflow_only
@settings(max_examples=15, deadline=None)
@given(_boxes(), st.data())
def test_loss_is_finite_for_any_boxes(boxes, data):
    labels = np.asarray(data.draw(st.lists(st.integers(-1, 1), min_size=len(boxes), max_size=len(boxes))), np.int32)
    model = _loss_model()
    images = np.full((1, 128, 128, 3), 90.0, np.float32)
    y_pred = model(images)
    valid = labels >= 0
    if valid.any() and np.all((boxes[valid] >= 0) & (boxes[valid] <= 1.5)):
        # Every box within [0, 1.5] on a 128-pixel image: refused as relative boxes (tests/detection/test_bad_input).
        import tensorflow as tf

        with pytest.raises(tf.errors.InvalidArgumentError, match="every box lies within"):
            model.compute_loss(images, {"boxes": boxes[None], "labels": labels[None]}, y_pred)
        return
    loss = model.compute_loss(images, {"boxes": boxes[None], "labels": labels[None]}, y_pred)
    assert np.isfinite(float(loss))


_MODEL = {}


def _loss_model():
    if "model" not in _MODEL:
        _MODEL["model"] = tiny_retinanet(num_classes=2, num_channels=8, head_filters=8)
    return _MODEL["model"]
