"""Boxes must still cover the same pixels after every augmentation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fpn.datasets import Augmentation

SIZE = 96
COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def scene(seed, batch=4):
    """Black images with up to three solid rectangles of distinct colours, padded to 4 boxes per image."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, SIZE, SIZE, 3), np.float32)
    boxes = np.zeros((batch, 4, 4), np.float32)
    labels = -np.ones((batch, 4), np.int32)
    for i in range(batch):
        for j, color in enumerate(COLORS[: rng.integers(1, 4)]):
            x1, y1 = rng.integers(0, SIZE - 24, 2)
            w, h = rng.integers(12, 24, 2)
            boxes[i, j] = [x1, y1, x1 + w, y1 + h]
            labels[i, j] = j
            images[i, y1:y1 + h, x1:x1 + w] = 0  # later colours overwrite earlier ones only where they overlap
        for j in range(len(COLORS)):
            if labels[i, j] >= 0:
                x1, y1, x2, y2 = boxes[i, j].astype(int)
                images[i, y1:y2, x1:x2] = COLORS[j]
    # keep objects disjoint so each colour's pixels are exactly its box
    return images, boxes, labels


def disjoint_scene(seed):
    images, boxes, labels = scene(seed)
    for i in range(len(images)):
        for j in range(1, 4):
            for k in range(j):
                a, b = boxes[i, j], boxes[i, k]
                if labels[i, j] >= 0 and labels[i, k] >= 0 and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    labels[i, j], boxes[i, j] = -1, 0
    images = np.zeros_like(images)
    for i in range(len(images)):
        for j in range(4):
            if labels[i, j] >= 0:
                x1, y1, x2, y2 = boxes[i, j].astype(int)
                images[i, y1:y2, x1:x2] = COLORS[labels[i, j]]
    return images, boxes, labels


def pixel_box(image, color):
    mask = np.all(np.abs(image - np.array(color)) < 60, axis=-1)
    ys, xs = np.nonzero(mask)
    return None if not len(xs) else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


GEOMETRIC = {
    "flip": dict(horizontal_flip=True, scale_range=None, translation=0, brightness=0, contrast=0, saturation=None),
    "zoom": dict(horizontal_flip=False, scale_range=(0.6, 1.6), translation=0, brightness=0, contrast=0,
                 saturation=None),
    "translate": dict(horizontal_flip=False, scale_range=None, translation=0.3, brightness=0, contrast=0,
                      saturation=None),
    "all geometric": dict(scale_range=(0.6, 1.6), translation=0.2, brightness=0, contrast=0, saturation=None),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_boxes_follow_the_pixels(name):
    checked = 0
    for seed in range(3):
        images, boxes, labels = disjoint_scene(seed)
        augment = Augmentation(min_box_size=4, seed=seed, **GEOMETRIC[name])
        # Inside tf.data, as in training.
        dataset = tf.data.Dataset.from_tensors((images, {"boxes": boxes, "labels": labels})).map(augment)
        out_images, targets = next(iter(dataset))
        out_images, out_boxes, out_labels = (out_images.numpy(), targets["boxes"].numpy(),
                                             targets["labels"].numpy())
        assert out_labels.dtype == np.int32 and out_boxes.shape == boxes.shape
        for i in range(len(images)):
            for j in range(4):
                if labels[i, j] < 0:  # padding stays padding, wherever Keras moved it
                    assert out_labels[i, j] == -1 and not out_boxes[i, j].any()
                    continue
                truth = pixel_box(out_images[i], COLORS[labels[i, j]])
                if out_labels[i, j] < 0:  # dropped: the object left the image (or only a sliver is left)
                    assert truth is None or min(truth[2] - truth[0], truth[3] - truth[1]) <= 6, (name, truth)
                    continue
                assert out_labels[i, j] == labels[i, j]
                # Interpolation blurs edges by about a pixel; the box must agree with the object's pixels.
                np.testing.assert_allclose(out_boxes[i, j], truth, atol=2.0, err_msg=f"{name} image {i} box {j}")
                checked += 1
    assert checked >= 10


def test_photometric_changes_pixels_not_boxes():
    images, boxes, labels = disjoint_scene(0)
    augment = Augmentation(horizontal_flip=False, scale_range=None, translation=0, brightness=0.2, contrast=0.3,
                           saturation=(0.2, 0.8), seed=3)
    out_images, targets = augment(images, {"boxes": boxes, "labels": labels})
    np.testing.assert_array_equal(np.asarray(targets["boxes"]), boxes)
    np.testing.assert_array_equal(np.asarray(targets["labels"]), labels)
    out_images = np.asarray(out_images)
    assert np.abs(out_images - images).mean() > 1.0 and out_images.min() >= 0 and out_images.max() <= 255


def test_augmentation_differs_between_batches_and_keeps_extra_keys():
    images, boxes, labels = disjoint_scene(1)
    augment = Augmentation(seed=0)
    dataset = tf.data.Dataset.from_tensors(
        (images, {"boxes": boxes, "labels": labels, "scale": np.ones((4, 2), np.float32)})
    ).repeat(2).map(augment)
    (first, targets), (second, _) = list(dataset)
    assert "scale" in targets and np.abs(first.numpy() - second.numpy()).mean() > 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_range"):
        Augmentation(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="translation"):
        Augmentation(translation=1.5)


def test_keras_random_crop_boxes_do_not_follow_its_batched_crop():
    """Why `Augmentation` zooms instead of using `keras.layers.RandomCrop`: on a batch, its boxes are cropped
    differently from its images (Keras 3.15). If this test starts failing, Keras fixed it and RandomCrop could be
    used."""
    images, boxes, labels = disjoint_scene(0)
    crop = keras.layers.RandomCrop(64, 64, bounding_box_format="xyxy", seed=2)
    worst = 0.0
    for _ in range(3):
        out = crop({"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}}, training=True)
        out_images, out_boxes = np.asarray(out["images"]), np.asarray(out["bounding_boxes"]["boxes"])
        for i in range(len(images)):
            for j in range(4):
                truth = pixel_box(out_images[i], COLORS[labels[i, j]]) if labels[i, j] >= 0 else None
                if truth is not None:
                    worst = max(worst, float(np.abs(out_boxes[i, j] - truth).max()))
    assert worst > 4.0
