"""Semantic-segmentation data: a reader for image + PNG mask folders (PASCAL VOC's `SegmentationClass` layout) and
`(images, masks)` batches with augmentation that moves the masks with the images (flips; nearest-neighbour
resizing for masks, so no label is blended into another)."""

import os

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def load_segmentation_folder(image_dir, mask_dir, image_size=None, names=None):
    """Images and their label masks from two folders, matched by file stem (PASCAL VOC: `JPEGImages/` and
    `SegmentationClass/`, whose palette PNGs store class indices, 255 on object borders = ignored).

    Args:
        image_dir: folder of images (JPEG, PNG, BMP). mask_dir: folder of `<stem>.png` masks: palette ("P") or
            8-bit grey PNGs whose pixel values are the labels.
        image_size: `(height, width)` or None. None needs every image at one size; otherwise images are resized
            bilinearly and masks by nearest neighbour.
        names: sequence of stems (e.g. the lines of VOC's `ImageSets/Segmentation/train.txt`) or None (every
            mask in `mask_dir`).

    Returns:
        `(images uint8 [N, H, W, 3], masks uint8 [N, H, W])`.

    Raises:
        FileNotFoundError: a folder, or the image of a mask, is missing. ValueError: a mask's size differs from its
        image's; images of several sizes without `image_size`; a mask that is RGB rather than label indices.
    """
    from PIL import Image

    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Folder {folder!r} not found.")
    if names is None:
        names = sorted(os.path.splitext(name)[0] for name in os.listdir(mask_dir) if name.lower().endswith(".png"))
    images, masks = [], []
    for name in names:
        candidates = [os.path.join(image_dir, name + ext) for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in
                                                                                           IMAGE_EXTENSIONS)]
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            raise FileNotFoundError(f"No image for mask {name!r} in {image_dir!r} (looked for {name}.jpg, .png, ...).")
        mask_path = os.path.join(mask_dir, name + ".png")
        with Image.open(mask_path) as file:
            if file.mode not in ("P", "L"):
                raise ValueError(f"{mask_path}: a {file.mode} image; expected label indices (a palette or 8-bit grey "
                                 "PNG, as VOC's SegmentationClass).")
            mask = np.array(file)
        with Image.open(path) as file:
            image = np.array(file.convert("RGB"))
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{mask_path}: mask of size {mask.shape}, its image {path} of size {image.shape[:2]}.")
        if image_size is not None:
            size = (image_size[1], image_size[0])
            image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
            mask = np.array(Image.fromarray(mask).resize(size, Image.NEAREST))
        images.append(image)
        masks.append(mask)
    if len({image.shape for image in images}) > 1:
        raise ValueError(f"The images in {image_dir!r} have several sizes; pass image_size=(height, width).")
    return np.stack(images), np.stack(masks).astype(np.uint8)


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
