"""Bad input to RetinaNet raises an error that names the problem; degenerate boxes are dropped and counted."""

import re
import warnings

import keras
import numpy as np
import pytest

from tests.testing import tiny_retinanet

# One worker runs the whole module (scripts/test.sh: --dist loadgroup), so its module fixtures are built once.
pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="value checks are tf.debugging asserts; decoding uses TensorFlow's NMS"),
              pytest.mark.xdist_group("bad_input")]

import tensorflow as tf  # noqa: E402


@pytest.fixture
def model():
    # A fresh model per test: a step that failed while Keras traced it leaves the model's train function unusable.
    detector = tiny_retinanet()
    detector.compile(optimizer="adam")
    return detector


@pytest.fixture(scope="module")
def traced_model():
    """One model for the tests whose bad values are found while the step runs (graph asserts): the step traced
    for the first batch of a shape serves every later batch of that shape, bad or not."""
    detector = tiny_retinanet()
    detector.compile(optimizer="adam")
    return detector


def _images(batch=2, size=64, channels=3, value=100.0):
    return np.full((batch, size, size, channels), value, np.float32)


def _targets(boxes=((8, 8, 40, 40), (20, 10, 60, 50)), labels=(0, 2)):
    return {"boxes": np.asarray([[box] for box in boxes], np.float32),
            "labels": np.asarray([[label] for label in labels], np.int32)}


def _fit(model, images, targets):
    """One `fit` step on exactly this batch (a tf.data batch: Keras's own slicing of arrays never sees it)."""
    return model.fit(tf.data.Dataset.from_tensors((images, targets)), epochs=1, verbose=0)


@pytest.mark.parametrize("images, message", [
    (_images()[0], r"expected 4 dimensions \[batch, height, width, 3\]"),
    (_images(channels=1), r"with 1 channels .*expected 3 \(RGB\)"),
    (_images(channels=4), r"with 4 channels"),
    (_images(size=16), r"height 16 .*expected at least 32 pixels, the stride of the coarsest pyramid level"),
])
def test_bad_image_shapes_are_named(model, images, message):
    targets = _targets() if images.ndim == 4 else {k: v[:1] for k, v in _targets().items()}
    with pytest.raises(ValueError, match=message):
        _fit(model, images, targets)


def test_images_smaller_than_the_stride_at_run_time(model):
    images, targets = _images(size=16), _targets()
    signature = (tf.TensorSpec((None, None, None, 3), tf.float32),  # sizes unknown until the step runs
                 {"boxes": tf.TensorSpec((None, None, 4), tf.float32), "labels": tf.TensorSpec((None, None), tf.int32)})
    dataset = tf.data.Dataset.from_generator(lambda: iter([(images, targets)]), output_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than 32 pixels"):
        model.fit(dataset, epochs=1, verbose=0)


def test_nan_pixels(traced_model):
    model = traced_model
    images = _images()
    images[1, 5, 5, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="images contain NaN or Inf pixel values"):
        _fit(model, images, _targets())
    with pytest.raises(tf.errors.InvalidArgumentError, match="images contain NaN or Inf pixel values"):
        model.predict_on_batch(images)


def test_integer_boxes_are_refused(model):
    targets = _targets()
    targets["boxes"] = targets["boxes"].astype(np.int64)
    with pytest.raises(ValueError, match="boxes of dtype int64; expected floating-point boxes"):
        _fit(model, _images(), targets)


@pytest.mark.parametrize("targets, message", [
    ({"boxes": np.zeros((2, 1, 5), np.float32), "labels": np.zeros((2, 1), np.int32)},
     r"boxes of shape \(2, 1, 5\); expected \[batch, num_boxes, 4\]"),
    ({"boxes": np.zeros((2, 2, 4), np.float32), "labels": np.zeros((2, 3), np.int32)},
     r"2 boxes but 3 labels per image"),
    ({"boxes": np.zeros((2, 1, 4), np.float32), "labels": np.zeros((2, 1, 1), np.int32)},
     r"labels of shape \(2, 1, 1\); expected \[batch, num_boxes\]"),
])
def test_bad_target_shapes_are_named(model, targets, message):
    with pytest.raises(ValueError, match=message):
        _fit(model, _images(), targets)


def test_ragged_box_and_label_counts_must_agree(model):
    boxes = tf.ragged.constant([[[1.0, 1.0, 30.0, 30.0]], [[2.0, 2.0, 20.0, 20.0], [5.0, 5.0, 9.0, 9.0]]],
                               ragged_rank=1)
    labels = tf.ragged.constant([[0], [1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="numbers of boxes and labels differ"):
        model.train_on_batch(tf.constant(_images()), {"boxes": boxes, "labels": labels})


# (targets, the words the error starts with, and what it must show of the offending values), for both paths:
# in-memory arrays (checked in Python before fit traces anything: ValueError) and tf.data batches (graph asserts:
# InvalidArgumentError). Either way the first line names the problem.
BAD_TARGET_VALUES = [
    (_targets(labels=(0, 3)), r"labels must be < num_classes=3", r"\[3\]|3"),
    (_targets(labels=(0, -2)), r"labels must be >= -1", r"-2"),
    (_targets(boxes=((8, 8, 40, 40), (20, 10, np.inf, 50))), r"boxes contain NaN or Inf", r"20(\.0)?,? 10(\.0)?,? inf"),
    (_targets(boxes=((8, 8, 40, 40), (100, 100, 20, np.nan))), r"boxes contain NaN or Inf", r"100(\.0)?,? 20(\.0)?,? nan"),
    # An "xywh" box [x, y, w, h] read as "xyxy": x2 = 12 < x1 = 40.
    (_targets(boxes=((8, 8, 40, 40), (40, 30, 12, 16))),
     r"boxes have x2 < x1 or y2 < y1 in the bounding_box_format of the model, xyxy", r"40(\.0)?,? 30(\.0)?,? 12(\.0)?,? 16"),
    # Relative boxes given to a pixel-format model on 64x64 images.
    (_targets(boxes=((0.1, 0.1, 0.5, 0.6), (0.2, 0.25, 0.4, 0.9))),
     r"every box lies within \[0, 1.5\] on images of at least 32 pixels, but the model's bounding_box_format="
     r"'xyxy' is in pixels: are these relative coordinates\? Build the model with bounding_box_format='rel_xyxy'",
     r"0.1,? 0.1,? 0.5,? 0.6"),
    ({**_targets(), "labels": np.array([[0.7], [1.9]], np.float32)},
     r"labels must be whole numbers \(class ids, -1 for padding\)", r"0.7,? 1.9"),
]


@pytest.mark.parametrize("targets, message, shown", BAD_TARGET_VALUES)
def test_bad_target_values_in_tf_data_are_named_first(traced_model, targets, message, shown):
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"^{message}") as error:
        _fit(traced_model, _images(), targets)
    assert re.search(shown, str(error.value).splitlines()[0]), str(error.value)[:500]


@pytest.mark.parametrize("targets, message, shown", BAD_TARGET_VALUES)
def test_bad_target_values_in_memory_are_named_before_tracing(traced_model, targets, message, shown):
    with pytest.raises(ValueError, match=f"^{message}") as error:
        traced_model.fit(_images(), targets, epochs=1, verbose=0)
    first_line = str(error.value).splitlines()[0]
    assert re.search(shown, first_line) and "..." not in first_line, first_line


def test_whole_float_labels_and_relative_boxes_in_a_relative_format_are_accepted():
    model = tiny_retinanet(bounding_box_format="rel_xyxy")
    model.compile(optimizer="adam")
    targets = {"boxes": np.array([[[0.1, 0.1, 0.6, 0.6]], [[0.3, 0.2, 0.9, 0.8]]], np.float32),
               "labels": np.array([[0.0], [2.0]], np.float32)}
    history = model.fit(_images(), targets, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_tf_data_input_gets_no_keras_shuffle_warning(traced_model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(traced_model, _images(), _targets())
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]


def test_padding_labels_may_hold_any_box(traced_model):
    model = traced_model
    targets = {"boxes": np.array([[[8, 8, 40, 40], [np.nan, 0, -5, 0]], [[20, 10, 60, 50], [0, 0, 0, 0]]],
                                 np.float32),
               "labels": np.array([[0, -1], [2, -1]], np.int32)}
    history = _fit(model, _images(), targets)
    assert np.isfinite(history.history["loss"][0])


def test_degenerate_and_outside_boxes_are_dropped_and_counted(traced_model):
    model = traced_model
    targets = {"boxes": np.array([[[8, 8, 40, 40], [70, 70, 90, 90]], [[20, 10, 20, 50], [-10, 5, 30, 200]]],
                                 np.float32),
               "labels": np.array([[0, 1], [2, 1]], np.int32)}
    history = _fit(model, _images(), targets)
    # [70, 70, 90, 90] lies outside the 64x64 image and [20, 10, 20, 50] has no width: 2 dropped. The last box is
    # clipped to [0, 5, 30, 64] and kept.
    assert history.history["dropped_boxes"] == [2.0]
    assert np.isfinite(history.history["loss"][0])


def test_empty_training_data_is_refused(tmp_path):
    from keras_fpn.datasets import DetectionData
    from keras_fpn.training import train_detector

    empty = DetectionData(tf.data.Dataset.from_tensors((np.zeros((8, 8, 3), np.uint8), {
        "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int32)})).take(0), ("a",), None)
    detector = tiny_retinanet(num_classes=1)
    with pytest.raises(ValueError, match="The training data is empty"):
        train_detector(detector, empty, {"learning_rate": {"peak": 0.01}}, (64, 64), steps_per_epoch=1, epochs=1)


def test_empty_reader_input_is_named(tmp_path):
    from keras_fpn.datasets import load_csv, load_voc
    from keras_fpn.evaluation import evaluate_coco

    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(ValueError, match="No images found"):
        load_voc(str(tmp_path))
    csv_file = tmp_path / "empty.csv"
    csv_file.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n")
    with pytest.raises(ValueError, match="No images found"):
        load_csv(str(csv_file))
    with pytest.raises(ValueError, match="The evaluation dataset is empty"):
        evaluate_coco(None, tf.data.Dataset.range(0))
