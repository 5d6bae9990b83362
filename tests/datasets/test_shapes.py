import numpy as np

from keras_fpn.datasets import SHAPE_CLASSES, generate_shapes, shapes_dataset


def test_deterministic_by_seed():
    a, b = generate_shapes(3, 64, seed=5), generate_shapes(3, 64, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(generate_shapes(3, 64, seed=6)[0], a[0])


def test_boxes_labels_and_pixels():
    images, boxes, labels = generate_shapes(20, (96, 128), max_objects=4, min_size=10, seed=0)
    assert images.shape == (20, 96, 128, 3) and images.dtype == np.uint8
    valid = labels >= 0
    assert valid.any(axis=1).all()  # every image has an object
    assert set(np.unique(labels[valid])) <= set(range(len(SHAPE_CLASSES)))
    b = boxes[valid]
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 3] <= 96).all()
    sides = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    assert sides.min() >= 10 and sides.max() > 40  # small and large objects
    assert (boxes[~valid] == 0).all()
    # the object is drawn inside its box: the box centre differs from the image corner colour
    n, k = np.argwhere(valid)[0]
    x1, y1, x2, y2 = boxes[n, k].astype(int)
    centre = images[n, (y1 + y2) // 2, (x1 + x2) // 2].astype(int)
    assert np.abs(centre - np.median(images[n].reshape(-1, 3), axis=0)).sum() > 60


def test_dataset_elements():
    images, targets = next(iter(shapes_dataset(5, batch_size=4, image_size=64, seed=1)))
    assert tuple(images.shape) == (4, 64, 64, 3) and images.dtype.name == "float32"
    assert tuple(targets["boxes"].shape) == (4, 4, 4) and tuple(targets["labels"].shape) == (4, 4)
