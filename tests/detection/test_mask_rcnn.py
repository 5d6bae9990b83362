"""Mask R-CNN: masks in the data, mask targets, the mask loss, paste_masks, and the model through fit, predict and
serving."""

import math

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                 reason="proposals, RoIAlign and NMS use TensorFlow ops"),
              pytest.mark.xdist_group("mask_rcnn")]

import tensorflow as tf  # noqa: E402

from keras_fpn import MaskRCNN  # noqa: E402
from keras_fpn.datasets import detection_pipeline, load_shapes, shapes_dataset  # noqa: E402
from keras_fpn.datasets.shapes import generate_shapes  # noqa: E402
from keras_fpn.detection import paste_masks  # noqa: E402
from keras_fpn.detection.mask_head import mask_loss, mask_targets  # noqa: E402
from tests.testing import tiny_convnet  # noqa: E402


@pytest.fixture(scope="module")
def model():
    detector = MaskRCNN(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                        mask_head_filters=16, rpn_pre_nms_topk_train=200, rpn_post_nms_topk_train=100,
                        rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50, roi_batch_size_per_image=32, seed=1)
    detector.compile(optimizer="adam")
    return detector


# -- masks in the data --------------------------------------------------------------------------------------------

def test_shapes_masks_are_exact_and_inside_their_boxes():
    images, boxes, labels, masks = generate_shapes(6, 64, seed=3, with_masks=True)
    assert masks.dtype == np.uint8 and masks.shape == (6, 4, 64, 64)
    for n in range(6):
        for j in range(4):
            if labels[n, j] < 0:
                assert masks[n, j].sum() == 0
                continue
            x1, y1, x2, y2 = boxes[n, j].astype(int)
            ys, xs = np.nonzero(masks[n, j])
            # The mask lies in its box and reaches every side (a triangle's apex row may hold no pixel centre).
            extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert (extent[:2] >= (x1, y1)).all() and (extent[2:] <= (x2, y2)).all()
            assert np.abs(extent - (x1, y1, x2, y2)).max() <= 1
            area = (x2 - x1) * (y2 - y1)
            filled = masks[n, j].sum() / area
            # rectangle: all of the box; ellipse: ~pi/4; triangle: ~1/2
            assert abs(filled - (1.0, math.pi / 4, 0.5)[labels[n, j]]) < 0.12, (labels[n, j], filled)


def test_the_pipeline_resizes_and_pads_masks_with_their_images():
    data = load_shapes(4, 64, seed=1, with_masks=True)
    batches = detection_pipeline(data, 4, (100, 100), pad_to_multiple=32)  # 64 -> 100, padded to 128
    images, targets = next(iter(batches))
    assert targets["masks"].shape == (4, 4, 128, 128) and targets["masks"].dtype == tf.uint8
    masks, boxes, labels = targets["masks"].numpy(), targets["boxes"].numpy(), targets["labels"].numpy()
    for n in range(4):
        for j in np.nonzero(labels[n] >= 0)[0]:
            ys, xs = np.nonzero(masks[n, j])
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], boxes[n, j], atol=1.6)
        assert masks[n, :, 100:].sum() == 0 and masks[n, :, :, 100:].sum() == 0  # padding


def test_augmentation_moves_each_mask_with_its_box():
    from keras_fpn.datasets import Augmentation

    data = load_shapes(8, 64, seed=4, with_masks=True)
    augmentation = Augmentation(scale_range=(0.6, 1.4), translation=0.2, seed=7)  # flips, zooms, shifts, colours
    images, targets = next(iter(detection_pipeline(data, 8, (64, 64), pad_to_multiple=32,
                                                   augmentation=augmentation)))
    masks, boxes, labels = targets["masks"].numpy(), targets["boxes"].numpy(), targets["labels"].numpy()
    assert masks.dtype == np.uint8 and masks.shape[0] == 8 and masks.shape[2:] == (64, 64)
    checked = 0
    for n in range(8):
        for j in np.nonzero(labels[n] >= 0)[0]:
            ys, xs = np.nonzero(masks[n, j])
            if len(xs) == 0:
                continue
            # Each mask still covers its object: its extent matches the moved box (nearest-neighbour resampling,
            # boxes in float: within 2 pixels).
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], boxes[n, j], atol=2.0)
            checked += 1
    assert checked >= 8


# -- mask targets and the loss ------------------------------------------------------------------------------------

def test_mask_targets_are_the_mask_cropped_to_the_roi():
    mask = np.zeros((1, 2, 40, 40), np.uint8)
    mask[0, 0, 10:30, 10:20] = 1  # a 10 x 20 rectangle
    mask[0, 1, 0:8, 0:8] = 1
    rois = np.array([[[10, 10, 20, 30],  # exactly the rectangle: all ones
                      [10, 10, 30, 30],  # twice as wide: the left half
                      [0, 0, 8, 8]]], np.float32)  # the second mask
    targets = np.asarray(mask_targets(mask, rois, np.array([[0, 0, 1]]), 4))
    np.testing.assert_array_equal(targets[0, 0], np.ones((4, 4)))
    np.testing.assert_array_equal(targets[0, 1], np.array([[1, 1, 0, 0]] * 4))
    np.testing.assert_array_equal(targets[0, 2], np.ones((4, 4)))


def test_mask_targets_in_keras_ops_equal_the_tensorflow_ones():
    # The JAX path (gathered samples, zero outside the image) against crop_and_resize, on random masks and RoIs
    # that reach outside the image, are smaller than a pixel, or have no area.
    from keras_fpn.detection.mask_head import _mask_targets_gather

    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(2, 3, 37, 45)) > 0.5).astype(np.uint8)
    corner = rng.uniform(-10, 40, (2, 50, 2))
    rois = np.concatenate([corner, corner + rng.uniform(0, 30, (2, 50, 2))], -1).astype(np.float32)
    gt_index = rng.integers(0, 3, (2, 50))
    expected = np.asarray(mask_targets(masks, rois, gt_index, 14))
    np.testing.assert_array_equal(np.asarray(_mask_targets_gather(masks, rois, gt_index, 14)), expected)


def test_mask_loss_on_known_logits():
    """The mask loss is the mean per-pixel sigmoid cross-entropy of the ground-truth class's channel, over the
    positive RoIs only."""
    masks = np.zeros((1, 2, 64, 64), np.uint8)
    masks[0, 0, 0:32, 0:32] = 1
    rois = np.array([[[0, 0, 32, 32], [0, 0, 64, 64]]], np.float32)
    targets = mask_targets(masks, rois, np.array([[0, 0]]), 28)
    constant = 2.0
    logits = tf.fill([1, 2, 28, 28, 3], constant)
    # One positive RoI (label 1; label 3 is background), all of whose 28 x 28 targets are 1: -log(sigmoid(2)).
    loss = mask_loss(logits, targets, np.array([[1, 3]]), np.array([[True, True]]))
    np.testing.assert_allclose(float(loss), math.log1p(math.exp(-constant)), rtol=1e-5)
    # The background RoI's target (a quarter of its mask is 1) would change the loss if it counted.
    both = mask_loss(logits, targets, np.array([[1, 2]]), np.array([[True, True]]))
    assert float(both) > float(loss) + 0.1


# -- paste_masks --------------------------------------------------------------------------------------------------

def _paste_reference(mask, box, height, width):
    """Bilinear sampling of the zero-padded mask at every pixel centre, in box-relative mask coordinates."""
    size = mask.shape[0]
    padded = np.pad(mask.astype(np.float64), 1)
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            v = (i + 0.5 - y1) / (y2 - y1) * size - 0.5 + 1
            u = (j + 0.5 - x1) / (x2 - x1) * size - 0.5 + 1
            if v < 0 or u < 0 or v > size + 1 or u > size + 1:
                continue
            v0, u0 = min(int(math.floor(v)), size), min(int(math.floor(u)), size)
            dv, du = v - v0, u - u0
            out[i, j] = ((1 - dv) * (1 - du) * padded[v0, u0] + (1 - dv) * du * padded[v0, u0 + 1]
                         + dv * (1 - du) * padded[v0 + 1, u0] + dv * du * padded[v0 + 1, u0 + 1])
    return out


def test_paste_masks_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(1, 3, 8, 8)).astype(np.float32)
    boxes = np.array([[[4, 6, 20, 18], [-5, 10, 12, 40], [25.5, 2.25, 31, 29]]], np.float32)  # one past the edge
    pasted = np.asarray(paste_masks(masks, boxes, 30, 32, threshold=None))
    for k in range(3):
        np.testing.assert_allclose(pasted[0, k], _paste_reference(masks[0, k], boxes[0, k], 30, 32), atol=1e-5)
    binary = np.asarray(paste_masks(masks, boxes, 30, 32))
    assert binary.dtype == np.uint8
    np.testing.assert_array_equal(binary, (pasted >= 0.5).astype(np.uint8))
    # A mask of ones pastes to (about) its box.
    ones = np.asarray(paste_masks(np.ones((1, 1, 28, 28), np.float32), np.array([[[8, 4, 24, 20]]], np.float32), 32,
                                  32))
    ys, xs = np.nonzero(ones[0, 0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (8, 4, 24, 20)


# -- the model ----------------------------------------------------------------------------------------------------

def test_fit_logs_the_mask_loss_and_predict_returns_box_relative_masks(model):
    data = shapes_dataset(8, batch_size=4, image_size=64, with_masks=True)
    history = model.fit(data, epochs=2, verbose=0)
    assert "mask_loss" in history.history and all(np.isfinite(v).all() for v in history.history.values())
    images, _ = next(iter(data))
    predictions = model.predict_on_batch(images)
    assert predictions["masks"].shape == (4, 100, 28, 28)
    n = int(predictions["num_detections"][0])
    masks = np.asarray(predictions["masks"])
    assert n > 0 and (masks[0, n:] == 0).all() and ((masks >= 0) & (masks <= 1)).all()
    assert paste_masks(predictions["masks"], predictions["boxes"], 64, 64).shape == (4, 100, 64, 64)


def test_targets_without_masks_are_named(model):
    images, y = next(iter(shapes_dataset(2, batch_size=2, image_size=64)))
    with pytest.raises(ValueError, match=r"MaskRCNN expects y = \{'boxes', 'labels', 'masks'\}"):
        model.fit(images, {key: value.numpy() for key, value in y.items()}, verbose=0)


@pytest.mark.parametrize("change, message", [
    (lambda masks: masks[:, :2], "masks must be one per box: received masks of shape (2, 2, 64, 64)"),
    (lambda masks: masks[:, :, ::2, ::2], "masks must have the images' height and width: received masks of 32x32"),
    (lambda masks: masks.astype("float32") * 200.0, "masks must hold 0 and 1 when they are floats"),
])
def test_masks_that_do_not_match_the_data_are_named(model, change, message):
    from keras_fpn.datasets import generate_shapes

    images, boxes, labels, masks = generate_shapes(2, 64, max_objects=4, seed=3, with_masks=True)
    y = {"boxes": boxes, "labels": labels, "masks": change(masks)}
    with pytest.raises(ValueError) as error:
        model.fit(images.astype("float32"), y, verbose=0)
    assert str(error.value).splitlines()[0].startswith(message), str(error.value)
    # The same through tf.data: the graph check's error starts with the same words.
    batches = tf.data.Dataset.from_tensor_slices((images.astype("float32"), y)).batch(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.split(":")[0]):
        model.fit(batches, verbose=0)


def test_uint8_masks_of_255_train_as_masks_of_1(model):
    from keras_fpn.detection.mask_head import mask_targets

    masks = np.zeros((1, 1, 32, 32), np.uint8)
    masks[0, 0, 4:20, 6:30] = 255
    rois = np.array([[[2, 2, 30, 24]]], np.float32)
    np.testing.assert_array_equal(np.asarray(mask_targets(masks, rois, np.zeros((1, 1), "int32"), 14)),
                                  np.asarray(mask_targets(masks // 255, rois, np.zeros((1, 1), "int32"), 14)))


def test_keras_round_trip(model, tmp_path):
    images, _ = next(iter(shapes_dataset(2, batch_size=2, image_size=64, with_masks=True)))
    path = str(tmp_path / "mask_rcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MaskRCNN)
    before, after = model.predict_on_batch(images), loaded.predict_on_batch(images)
    np.testing.assert_allclose(before["masks"], after["masks"], atol=1e-5)


def test_the_served_model_returns_detection_masks_equal_to_predict(model, tmp_path):
    from keras_fpn.datasets import resize_and_pad
    from keras_fpn.export import export_saved_model

    exported = export_saved_model(model, str(tmp_path / "export"), image_size=(64, 64))
    served = tf.saved_model.load(exported).signatures["image_tensor"]
    images, _, _ = generate_shapes(2, 64, seed=5)
    outputs = served(images=tf.constant(images))
    assert outputs["detection_masks"].shape == (2, 100, 28, 28)
    prepared = tf.stack([resize_and_pad(image, tf.zeros([0, 4]), (64, 64), 32)[0] for image in images])
    expected = model.predict_on_batch(prepared)
    np.testing.assert_allclose(outputs["detection_masks"], expected["masks"], atol=1e-5)
    empty = served(images=tf.zeros((0, 10, 10, 3), tf.uint8))
    assert empty["detection_masks"].shape == (0, 100, 28, 28)
