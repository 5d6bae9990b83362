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


def test_scale_study_data_is_mostly_small_objects_at_every_scale():
    from keras_fpn.datasets.shapes import SCALES

    images, boxes, labels = generate_shapes(40, seed=1, **SCALES)
    assert images.shape == (40, 256, 256, 3)
    valid = labels >= 0
    sides = np.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))[valid]
    assert sides.min() >= 8 and sides.max() <= 160 * np.sqrt(2)  # aspect ratios 1:2-2:1 around 8-160 px
    assert (sides < 32).mean() > 0.5 and (sides >= 96).any()  # mostly COCO-small, some large
    assert valid.sum(axis=1).max() > 8  # crowded images (up to 12 objects)


def test_load_shapes_and_the_scales_spec_pass_the_options_through():
    from keras_fpn.datasets.shapes import SCALES, load_shapes
    from keras_fpn.datasets.spec import load_dataset

    direct = load_shapes(3, seed=2, **SCALES)
    by_spec = load_dataset("shapes:scales", "validation", max_images=3)
    assert by_spec.num_images == 3 and tuple(by_spec.class_names) == SHAPE_CLASSES
    for (image, target), (image2, target2) in zip(direct.dataset, by_spec.dataset):
        assert image.shape == (256, 256, 3)
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(target["boxes"], target2["boxes"])
