import numpy as np
import pytest
import tensorflow as tf

from keras_fpn.datasets import detection_pipeline, resize_and_pad


def one_image_dataset(height, width, boxes, labels):
    image = np.zeros((height, width, 3), np.uint8)
    return tf.data.Dataset.from_tensors(
        (image, {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int32)})
    )


def test_resize_keeps_aspect_ratio_and_pads_bottom_right():
    image = np.full((100, 200, 3), 255, np.uint8)
    resized, boxes, scale = resize_and_pad(image, [[20, 10, 120, 90]], (64, 64), pad_to_multiple=32)
    assert tuple(resized.shape) == (64, 64, 3) and resized.dtype == tf.float32
    np.testing.assert_allclose(scale.numpy(), [0.32, 0.32])
    np.testing.assert_allclose(boxes.numpy(), [[6.4, 3.2, 38.4, 28.8]], rtol=1e-6)
    assert resized.numpy()[:32].min() > 254.9 and resized.numpy()[32:].max() == 0  # content on top, padding below


def test_resize_stretches_and_rounds_up_to_the_multiple():
    image = np.zeros((100, 200, 3), np.uint8)
    resized, boxes, scale = resize_and_pad(image, [[20, 10, 120, 90]], (50, 70), pad_to_multiple=32,
                                           keep_aspect_ratio=False)
    assert tuple(resized.shape) == (64, 96, 3)
    np.testing.assert_allclose(scale.numpy(), [0.5, 0.35])
    np.testing.assert_allclose(boxes.numpy(), [[7, 5, 42, 45]], rtol=1e-6)


def test_pipeline_batches_with_static_sizes_padding_and_image_info():
    dataset = one_image_dataset(100, 200, [[20, 10, 120, 90], [0, 0, 50, 50]], [1, 0]).concatenate(
        one_image_dataset(300, 150, [[10, 10, 20, 20]], [2]))
    batches = detection_pipeline(dataset, 2, image_size=(60, 60), pad_to_multiple=32, with_image_info=True)
    assert batches.element_spec[0].shape.as_list() == [None, 64, 64, 3]  # static size: exact anchor shapes
    images, targets = next(iter(batches))
    np.testing.assert_array_equal(targets["labels"].numpy(), [[1, 0], [2, -1]])
    np.testing.assert_array_equal(targets["boxes"].numpy()[1, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(targets["image_size"].numpy(), [[100, 200], [300, 150]])
    np.testing.assert_allclose(targets["scale"].numpy(), [[0.3, 0.3], [0.2, 0.2]])
    np.testing.assert_allclose(targets["boxes"].numpy()[1, 0], [2, 2, 4, 4], rtol=1e-6)


def test_pipeline_without_resize_pads_each_batch_to_the_multiple():
    dataset = one_image_dataset(30, 50, [], []).concatenate(one_image_dataset(70, 20, [[1, 2, 3, 4]], [0]))
    images, targets = next(iter(detection_pipeline(dataset, 2, image_size=None, pad_to_multiple=32)))
    assert tuple(images.shape) == (2, 96, 64, 3)
    np.testing.assert_array_equal(targets["boxes"].numpy(), [[[0, 0, 0, 0]], [[1, 2, 3, 4]]])
    np.testing.assert_array_equal(targets["labels"].numpy(), [[-1], [0]])


def test_pipeline_shuffles_repeats_and_caches():
    dataset = tf.data.Dataset.range(6).map(
        lambda i: (tf.fill([8, 8, 3], tf.cast(i, tf.uint8)), {"boxes": tf.zeros([0, 4]), "labels": tf.zeros([0], tf.int32)}))
    batches = detection_pipeline(dataset, 3, image_size=8, pad_to_multiple=8, shuffle=True, repeat=True, cache=True,
                                 seed=1)
    seen = [int(v) for images, _ in batches.take(4) for v in images.numpy()[:, 0, 0, 0]]
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6)) and seen[:6] != seen[6:]


@pytest.mark.parametrize("kwargs, message", [({"image_size": (0, 5)}, "image_size"),
                                             ({"pad_to_multiple": 0}, "pad_to_multiple")])
def test_pipeline_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detection_pipeline(one_image_dataset(8, 8, [], []), 1, **kwargs)
