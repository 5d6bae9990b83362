"""A generated detection dataset: coloured shapes at many scales on textured backgrounds."""

import numpy as np

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")
# The scale study (FPN paper ablations, `benchmarks/ablations.py`; dataset `shapes:scales`): 256x256 images with up to
# 12 objects from 8 to 160 px, sides log-uniform, so about two thirds of the objects are COCO-small (< 32x32 px).
SCALES = {"image_size": 256, "min_size": 8, "max_size": 160, "max_objects": 12}


def _draw(image, kind, box, color):
    """Draws one shape filling `box` and returns its mask inside the box (bool `[y2 - y1, x2 - x1]`)."""
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[y1:y2, x1:x2]
    if kind == "rectangle":
        mask = np.ones(ys.shape, bool)
    elif kind == "ellipse":
        cy, cx, ry, rx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (y2 - y1) / 2, (x2 - x1) / 2
        mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
    else:  # an upward triangle filling the box: apex at the top centre, base along the bottom
        u = (ys - y1 + 0.5) / (y2 - y1)
        mask = np.abs(xs + 0.5 - (x1 + x2) / 2) <= u * (x2 - x1) / 2
    image[y1:y2, x1:x2][mask] = color
    return mask


def generate_shapes(num_images, image_size=128, max_objects=4, min_size=12, max_size=None, seed=0,
                    with_masks=False):
    """Generates images with up to `max_objects` non-overlapping shapes each, deterministic by `seed`.

    Args:
        num_images: int.
        image_size: int, or `(height, width)`.
        max_objects: int, objects per image are uniform in `1..max_objects`.
        min_size: int, the smallest object side in pixels (small objects included on purpose).
        max_size: int, the largest side; default 3/4 of the smaller image side.
        seed: int.
        with_masks: bool, default False. Also return each object's exact instance mask (objects never overlap).

    Returns:
        `(images uint8 [num_images, height, width, 3], boxes float32 [num_images, max_objects, 4] pixel xyxy,
        labels int32 [num_images, max_objects])`, padded with boxes 0 and labels -1, and with `with_masks`
        `masks uint8 [num_images, max_objects, height, width]` (1 inside the object, all 0 for padding). Class `i`
        is `SHAPE_CLASSES[i]`. Box sides are drawn log-uniformly between `min_size` and `max_size`. The same seed
        gives the same images with or without masks.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    max_size = max_size or int(0.75 * min(height, width))
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, height, width, 3), np.uint8)
    boxes = np.zeros((num_images, max_objects, 4), np.float32)
    labels = -np.ones((num_images, max_objects), np.int32)
    masks = np.zeros((num_images, max_objects, height, width), np.uint8) if with_masks else None
    for n in range(num_images):
        background = rng.integers(0, 256, 3)
        noise = rng.normal(0, 12, (height, width, 1))
        image = np.clip(background + noise, 0, 255).astype(np.uint8)
        placed = []
        for _ in range(rng.integers(1, max_objects + 1)):
            for _attempt in range(20):
                side = np.exp(rng.uniform(np.log(min_size), np.log(max_size)))
                aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
                box_h = int(np.clip(round(side * np.sqrt(aspect)), min_size, height))
                box_w = int(np.clip(round(side / np.sqrt(aspect)), min_size, width))
                y1, x1 = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
                box = (x1, y1, x1 + box_w, y1 + box_h)
                if all(box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1] for p in placed):
                    break
            else:
                continue
            color = rng.integers(0, 256, 3)
            while np.abs(color - background).sum() < 150:  # keep every object visible on its background
                color = rng.integers(0, 256, 3)
            label = rng.integers(0, len(SHAPE_CLASSES))
            mask = _draw(image, SHAPE_CLASSES[label], box, color)
            if with_masks:
                masks[n, len(placed), box[1]:box[3], box[0]:box[2]] = mask
            boxes[n, len(placed)] = box
            labels[n, len(placed)] = label
            placed.append(box)
        images[n] = image
    return (images, boxes, labels, masks) if with_masks else (images, boxes, labels)


def shapes_dataset(num_images, batch_size=8, image_size=128, max_objects=4, min_size=12, max_size=None, seed=0,
                   shuffle=False, repeat=False, with_masks=False):
    """The shapes images as a `tf.data.Dataset` of `(images float32 [B, H, W, 3], {"boxes", "labels"})`.

    Images are raw RGB in [0, 255]; boxes are pixel `xyxy`, padded with label -1; with `with_masks` the targets
    also hold `"masks"` uint8 `[B, max_objects, H, W]`. Use different seeds for training and held-out splits.
    """
    import tensorflow as tf

    generated = generate_shapes(num_images, image_size, max_objects, min_size, max_size, seed, with_masks)
    targets = {"boxes": generated[1], "labels": generated[2]}
    if with_masks:
        targets["masks"] = generated[3]
    dataset = tf.data.Dataset.from_tensor_slices((generated[0].astype(np.float32), targets))
    if shuffle:
        dataset = dataset.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_shapes(num_images, image_size=128, max_objects=4, seed=0, with_masks=False, min_size=12, max_size=None):
    """Generated shapes as `DetectionData`, the form every reader returns (uint8 images, unpadded boxes; with
    `with_masks`, also `"masks"` uint8 `[num_boxes, H, W]`).

    Class names are `SHAPE_CLASSES`. Use different seeds for training and held-out splits. The arguments are
    `generate_shapes`'s; `load_shapes(n, seed=s, **SCALES)` is the scale study's data set.
    """
    import tensorflow as tf

    from keras_fpn.datasets.records import DetectionData

    generated = generate_shapes(num_images, image_size, max_objects, min_size, max_size, seed, with_masks)
    targets = {"boxes": generated[1], "labels": generated[2]}
    if with_masks:
        targets["masks"] = generated[3]

    def unpad(image, targets):
        keep = targets["labels"] >= 0
        return image, {key: tf.boolean_mask(value, keep) for key, value in targets.items()}

    dataset = tf.data.Dataset.from_tensor_slices((generated[0], targets)).map(unpad)
    return DetectionData(dataset, SHAPE_CLASSES, num_images)


# Classes of the generated segmentation set: label 0 is the background, 1-3 the shapes, 4 thin lines.
SEGMENTATION_CLASSES = ("background",) + tuple(SHAPE_CLASSES) + ("line",)


def generate_segmentation_shapes(num_images, image_size=128, max_objects=6, min_size=6, max_size=None, seed=0,
                                 max_lines=2):
    """A generated semantic-segmentation set with objects across scales, some thin: `generate_shapes`'s images
    (objects from `min_size` px up to 3/4 of the image) plus up to `max_lines` straight lines 1-3 px wide drawn
    over them, so that both the smallest and the thinnest structures need the fine levels.

    Returns:
        `(images uint8 [N, H, W, 3], masks uint8 [N, H, W])`, mask labels indexing `SEGMENTATION_CLASSES`
        (0 background, 1 + i for `SHAPE_CLASSES[i]`, the last for lines). The same seed gives the same data.
    """
    images, _, labels, masks = generate_shapes(num_images, image_size, max_objects, min_size, max_size, seed,
                                               with_masks=True)
    height, width = images.shape[1:3]
    semantic = np.zeros((num_images, height, width), np.uint8)
    for n in range(num_images):
        for k in np.flatnonzero(labels[n] >= 0):
            semantic[n][masks[n, k] > 0] = labels[n, k] + 1
    rng = np.random.default_rng(seed + 7919)  # independent of the shapes' stream
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    line = len(SEGMENTATION_CLASSES) - 1
    for n in range(num_images):
        for _ in range(rng.integers(0, max_lines + 1)):
            (y1, y2), (x1, x2) = rng.uniform(0, height, 2), rng.uniform(0, width, 2)
            length = max(np.hypot(y2 - y1, x2 - x1), 1.0)
            distance = np.abs((x2 - x1) * (y1 - y) - (x1 - x) * (y2 - y1)) / length
            along = ((x - x1) * (x2 - x1) + (y - y1) * (y2 - y1)) / length ** 2
            inside = (distance <= rng.uniform(0.5, 1.5)) & (along >= 0) & (along <= 1)
            images[n][inside] = rng.integers(0, 256, 3)
            semantic[n][inside] = line
    return images, semantic
