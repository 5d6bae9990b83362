"""Semantic-segmentation data: readers for image + PNG mask folders (PASCAL VOC's `SegmentationClass` layout) and
for COCO instance annotations turned into class maps and for TFDS datasets with a `segmentation_mask`, and
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
        image, mask = _resized(image, mask, image_size)
        images.append(image)
        masks.append(mask)
    return _stacked(images, masks, f"The images in {image_dir!r}")


def _resized(image, mask, image_size):
    """`image` bilinearly and `mask` by nearest neighbour (labels stay labels) at `image_size`, or as they are."""
    if image_size is None:
        return image, mask
    from PIL import Image

    size = (image_size[1], image_size[0])
    return (np.array(Image.fromarray(image).resize(size, Image.BILINEAR)),
            np.array(Image.fromarray(mask).resize(size, Image.NEAREST)))


def _stacked(images, masks, source):
    if not images:
        raise ValueError(f"{source}: no images read.")
    if len({image.shape for image in images}) > 1:
        raise ValueError(f"{source} have several sizes; pass image_size=(height, width).")
    return np.stack(images), np.stack(masks).astype(np.uint8)


def semantic_map(masks, labels, height, width, crowd_masks=(), ignore_label=255):
    """One `[height, width]` uint8 class map from instance masks: background 0, each instance's pixels `label + 1`,
    larger instances painted first so that a small object on a large one stays visible, then the crowd regions set
    to `ignore_label` (their pixels hold objects of unknown extent: neither trained on nor scored)."""
    class_map = np.zeros((height, width), np.uint8)
    masks = np.asarray(masks, bool).reshape(-1, height, width)
    for index in np.argsort(-masks.sum((1, 2)), kind="stable"):
        class_map[masks[index]] = int(labels[index]) + 1
    for crowd in crowd_masks:
        class_map[np.asarray(crowd, bool)] = ignore_label
    return class_map


def load_coco_semantic(annotation_file, image_dir, image_size=None, max_images=None):
    """Images and semantic class maps from a COCO instance-segmentation file: each image's instance masks painted
    into one map (`semantic_map`: background 0, category `i` as `i + 1`, crowd regions 255 = ignored).

    Reads through `load_coco_json(..., with_masks=True)`, so malformed entries get its named errors. Every image is
    read into memory: for datasets that fit it (use `max_images`).

    Args:
        annotation_file: str, a COCO JSON file. image_dir: str, the folder of `images[].file_name`.
        image_size: `(height, width)` or None (every image at one size). Images resize bilinearly, maps by nearest
            neighbour.
        max_images: int or None, read at most this many images (in the file's order).

    Returns:
        `(images uint8 [N, H, W, 3], masks uint8 [N, H, W], class_names)`, `class_names[0] == "background"`.
    """
    import json

    from keras_fpn.datasets.coco_json import load_coco_json
    from keras_fpn.datasets.records import decode_segmentations

    data = load_coco_json(annotation_file, image_dir, skip_crowd=True, with_masks=True)
    with open(annotation_file) as file:
        coco = json.load(file)
    crowds = {}
    for annotation in coco["annotations"]:
        if annotation.get("iscrowd", 0) and annotation.get("segmentation"):
            crowds.setdefault(annotation["image_id"], []).append(annotation["segmentation"])
    image_ids = [image["id"] for image in coco["images"] if "id" in image and "file_name" in image]
    dataset = data.dataset if max_images is None else data.dataset.take(max_images)
    images, maps = [], []
    for image_id, (image, targets) in zip(image_ids, dataset.as_numpy_iterator()):
        height, width = image.shape[:2]
        class_map = semantic_map(targets["masks"], targets["labels"], height, width,
                                 decode_segmentations(crowds.get(image_id, []), height, width))
        image, class_map = _resized(image, class_map, image_size)
        images.append(image)
        maps.append(class_map)
    return (*_stacked(images, maps, f"The images of {annotation_file}"), ("background",) + tuple(data.class_names))


def load_tfds_segmentation(name, split="train", data_dir=None, image_size=None, max_images=None,
                           mask_key="segmentation_mask", label_map=None, download=False):
    """Images and label masks of a `tensorflow-datasets` dataset with an `image` and a `segmentation_mask` feature
    (e.g. `oxford_iiit_pet`), read into memory.

    Args:
        name: str, a TFDS name. split: str, a TFDS split (`"train[:10%]"` works). data_dir: str or None.
        image_size: `(height, width)` or None (every image at one size). max_images: int or None.
        mask_key: str, default `"segmentation_mask"`, the mask feature.
        label_map: dict `{stored value: label}` or None (the stored values are the labels). Values it lacks become
            255 (ignored): `oxford_iiit_pet`'s trimap is `{1: 1, 2: 0, 3: 255}` (pet, background, border).
        download: bool, default False: as `load_tfds` (a dataset not prepared in `data_dir` is a named error).

    Returns:
        `(images uint8 [N, H, W, 3], masks uint8 [N, H, W])`.
    """
    from keras_fpn.datasets.tfds_reader import prepared_builder

    builder = prepared_builder(name, data_dir, download, is_wanted=lambda features: (
        "image" in features and mask_key in features), wanted=f"a segmentation dataset: expected features 'image' "
                                                          f"and {mask_key!r}")
    dataset = builder.as_dataset(split=split)
    if max_images is not None:
        dataset = dataset.take(max_images)
    images, masks = [], []
    for index, example in enumerate(dataset.as_numpy_iterator()):
        image, mask = example["image"], example[mask_key]
        mask = mask[..., 0] if mask.ndim == 3 else mask
        image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        if mask.shape != image.shape[:2]:
            raise ValueError(f"TFDS {name} ({split}) example {index}: mask of size {mask.shape}, image of size "
                             f"{image.shape[:2]}; expected the same size.")
        if label_map is not None:
            mapped = np.full(mask.shape, 255, np.uint8)
            for value, label in label_map.items():
                mapped[mask == value] = label
            mask = mapped
        image, mask = _resized(image, mask.astype(np.uint8), image_size)
        images.append(image)
        masks.append(mask)
    return _stacked(images, masks, f"The images of TFDS {name} ({split})")


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
