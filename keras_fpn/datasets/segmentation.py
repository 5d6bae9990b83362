"""Input pipelines for semantic segmentation: `(images, masks)` batches with augmentation that moves the masks
with the images (flips; nearest-neighbour resizing for masks, so no label is blended into another)."""

import numpy as np


def segmentation_pipeline(images, masks, batch_size=8, image_size=None, flip=True, shuffle=True, repeat=False,
                          seed=0):
    """A `tf.data.Dataset` of `(images float32 [B, H, W, 3] in [0, 255], masks int32 [B, H, W])`.

    Args:
        images: `[N, H, W, 3]` uint8; masks: `[N, H, W]` integer labels (255 = ignore).
        batch_size: int. image_size: `(height, width)` or None (keep the size): images resized bilinearly, masks
            by nearest neighbour. flip: random horizontal flips of image and mask together.
        shuffle, repeat: bool. seed: int, of the shuffling and flips.
    """
    import tensorflow as tf

    images, masks = np.asarray(images), np.asarray(masks)
    if images.shape[:3] != masks.shape:
        raise ValueError(f"Received images of shape {images.shape} and masks of shape {masks.shape}; expected "
                         "masks [N, H, W] of the images' size.")
    dataset = tf.data.Dataset.from_tensor_slices((images, masks.astype(np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def prepare(image, mask):
        image, mask = tf.cast(image, tf.float32), mask[..., None]
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
            mask = tf.image.resize(mask, image_size, method="nearest")
        if flip:
            flipped = tf.random.uniform([], seed=seed) < 0.5  # one draw for image and mask
            image = tf.cond(flipped, lambda: tf.image.flip_left_right(image), lambda: image)
            mask = tf.cond(flipped, lambda: tf.image.flip_left_right(mask), lambda: mask)
        return image, tf.cast(mask[..., 0], tf.int32)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
