"""From reader elements to training and evaluation batches: resize, pad, batch, augment, prefetch."""

import math

from keras_fpn.datasets.records import DetectionData


def padded_size(image_size, multiple):
    """`(height, width)` rounded up to a multiple of `multiple`."""
    return tuple(int(math.ceil(side / multiple) * multiple) for side in image_size)


def resize_and_pad(image, boxes, image_size=None, pad_to_multiple=1, keep_aspect_ratio=True):
    """Resizes one image and its pixel `xyxy` boxes, then pads it at the bottom and right.

    Args:
        image: `[height, width, 3]`, any real dtype.
        boxes: `[num_boxes, 4]` pixel `xyxy`.
        image_size: `(height, width)` or None (keep the image's size).
        pad_to_multiple: int; the output sides are `image_size` (or the image's size) rounded up to this.
        keep_aspect_ratio: bool, default True. Scale by `min(height_ratio, width_ratio)` so the whole image fits
            in `image_size`; False stretches it to `image_size` exactly.

    Returns:
        `(image float32 [H, W, 3], boxes float32 [num_boxes, 4], scale float32 [2])`, where `scale` is
        `(y, x)` resized / original, so original coordinates are `boxes / (x, y, x, y) scale`.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    original = tf.cast(tf.shape(image)[:2], tf.float32)
    if image_size is None:
        scale = tf.ones([2], tf.float32)
        target = tf.shape(image)[:2]
    else:
        wanted = tf.constant(image_size, tf.float32)
        scale = wanted / original
        if keep_aspect_ratio:
            scale = tf.fill([2], tf.reduce_min(scale))
        resized = tf.maximum(tf.cast(tf.round(original * scale), tf.int32), 1)
        scale = tf.cast(resized, tf.float32) / original
        image = tf.image.resize(image, resized, method="bilinear", antialias=True)
        boxes = boxes * tf.concat([scale[::-1], scale[::-1]], axis=0)
        target = tf.constant(image_size, tf.int32)
    multiple = tf.constant(pad_to_multiple, tf.int32)
    target = (target + multiple - 1) // multiple * multiple
    image = tf.image.pad_to_bounding_box(image, 0, 0, target[0], target[1])
    return image, boxes, scale


def resize_and_pad_masks(masks, scale, padded_shape):
    """Instance masks `[num, H, W]` (uint8 or bool) resized as `resize_and_pad` resized their image (`scale`, its
    third output) and padded to the padded image's `[height, width]`; bilinear then thresholded at 0.5, uint8."""
    import tensorflow as tf

    original = tf.cast(tf.shape(masks)[1:3], tf.float32)
    resized = tf.maximum(tf.cast(tf.round(original * scale), tf.int32), 1)
    masks = tf.image.resize(tf.cast(masks, tf.float32)[..., None], resized, method="bilinear")
    masks = tf.image.pad_to_bounding_box(masks, 0, 0, padded_shape[0], padded_shape[1])
    return tf.cast(masks[..., 0] >= 0.5, tf.uint8)


def detection_pipeline(data, batch_size, image_size=(512, 512), pad_to_multiple=128, keep_aspect_ratio=True,
                       augmentation=None, shuffle=False, repeat=False, with_image_info=False,
                       drop_remainder=False, cache=False, seed=None):
    """Batches reader output for `RetinaNet.fit`, `predict` and `evaluate_coco`.

    Each image is resized (aspect ratio kept by default) to fit `image_size` and padded at the bottom and right to
    `image_size` rounded up to `pad_to_multiple` (use `2 ** max_level` so every pyramid level tiles the image
    exactly); with `image_size=None` images keep their size and each batch is padded to its largest image, rounded
    up. Boxes are padded per batch with box `0` and label `-1`. `augmentation` (e.g.
    `keras_fpn.datasets.Augmentation()`) runs on whole batches in the pipeline, in parallel with training.

    Args:
        data: `DetectionData` or a `tf.data.Dataset` of `(image [H, W, 3], {"boxes", "labels"})`.
        batch_size: int.
        image_size: `(height, width)`, an int for a square, or None.
        pad_to_multiple: int, default 128 (`2 ** 7`, RetinaNet's coarsest level).
        keep_aspect_ratio: bool, default True.
        augmentation: callable `(images, targets) -> (images, targets)` on batches, or None.
        shuffle: bool or int. Shuffle images (buffer: the int, or 1,000 for True) before batching.
        repeat: bool. Repeat forever (training with `steps_per_epoch`).
        with_image_info: bool. Add `"image_size"` (int32 `[batch, 2]`, original height and width) and `"scale"`
            (float32 `[batch, 2]`, `(y, x)` resize factors) to the targets, so `evaluate_coco` scores boxes in
            original image coordinates.
        drop_remainder: bool. Drop the last incomplete batch.
        cache: bool. Keep the resized images in memory after the first pass (small datasets: every epoch after the
            first skips decoding and resizing; augmentation still differs each time).
        seed: int or None, for shuffling.

    Returns:
        `tf.data.Dataset` of `(images float32 [batch, H, W, 3] in [0, 255], {"boxes": float32 [batch, M, 4] pixel
        xyxy, "labels": int32 [batch, M]} + image info)`, prefetched. Instance masks in the data (`"masks"`
        uint8 `[num_boxes, H, W]` per image) are resized and padded with their images, `[batch, M, H, W]`.
    """
    import tensorflow as tf

    dataset = data.dataset if isinstance(data, DetectionData) else data
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f"Received image_size={image_size!r}; expected (height, width), an int, or None.")
    if not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
        raise ValueError(f"Received pad_to_multiple={pad_to_multiple!r}; expected a positive int.")

    def prepare(image, targets):
        original = tf.shape(image)[:2]
        image, boxes, scale = resize_and_pad(image, targets["boxes"], image_size, pad_to_multiple,
                                             keep_aspect_ratio)
        prepared = {"boxes": boxes, "labels": tf.cast(targets["labels"], tf.int32)}
        if "masks" in targets:
            prepared["masks"] = resize_and_pad_masks(targets["masks"], scale, tf.shape(image)[:2])
        if with_image_info:
            prepared["image_size"] = original
            prepared["scale"] = scale
        return image, prepared

    def shuffle_and_repeat(dataset):
        if shuffle:
            dataset = dataset.shuffle(1000 if shuffle is True else int(shuffle), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset.repeat() if repeat else dataset

    if cache:
        # Decode and resize once; later epochs read the prepared images from memory.
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
        dataset = shuffle_and_repeat(dataset)
    else:
        # Shuffle the small decoded-or-encoded elements, not the resized float images.
        dataset = shuffle_and_repeat(dataset).map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=not shuffle)
    image_shape = [None, None, 3] if image_size is None else [*padded_size(image_size, pad_to_multiple), 3]
    padded_shapes = (image_shape, {"boxes": [None, 4], "labels": [None]})
    padding_values = (0.0, {"boxes": 0.0, "labels": -1})
    with_masks = "masks" in dataset.element_spec[1]
    if with_masks:
        if image_size is None and pad_to_multiple > 1:
            raise ValueError("Received image_size=None with instance masks; expected an image_size, so that masks "
                             "are padded with their images.")
        padded_shapes[1]["masks"] = [None, *image_shape[:2]]
        padding_values[1]["masks"] = tf.constant(0, tf.uint8)
    if with_image_info:
        padded_shapes[1].update(image_size=[2], scale=[2])
        padding_values[1].update(image_size=0, scale=1.0)
    dataset = dataset.padded_batch(batch_size, padded_shapes, padding_values, drop_remainder=drop_remainder)
    if image_size is None and pad_to_multiple > 1:
        def pad_batch(images, targets):
            shape = tf.shape(images)
            target = (shape[1:3] + pad_to_multiple - 1) // pad_to_multiple * pad_to_multiple
            return tf.image.pad_to_bounding_box(images, 0, 0, target[0], target[1]), targets

        dataset = dataset.map(pad_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if augmentation is not None:
        dataset = dataset.map(augmentation, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
