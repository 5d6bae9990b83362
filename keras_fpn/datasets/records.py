"""What every reader returns: a `tf.data.Dataset` of `(image uint8 [H, W, 3], {"boxes", "labels"})` and the class
names, built from per-image records of a file path, pixel `xyxy` boxes and integer labels."""

import collections
import logging
import os

import numpy as np

logger = logging.getLogger("keras_fpn")

DetectionData = collections.namedtuple("DetectionData", ["dataset", "class_names", "num_images"])
DetectionData.__doc__ = """A detection dataset as every `keras_fpn.datasets` reader returns it.

Fields:
    dataset: `tf.data.Dataset` of `(image uint8 [height, width, 3], {"boxes": float32 [num_boxes, 4] pixel xyxy,
        "labels": int32 [num_boxes]})`, one image per element, in the order of the source.
    class_names: tuple of str; label `i` is `class_names[i]`.
    num_images: int, or None where the source does not say.
"""

Record = collections.namedtuple("Record", ["path", "boxes", "labels", "masks"], defaults=[None])
Record.__doc__ = """One image of a reader: its file, pixel `xyxy` boxes, integer labels, and optionally its instance
masks as COCO segmentations (polygons or RLE, one per box), decoded when the image is read."""


class MalformedRecords:
    """Collects what is wrong with a file's records, so a reader reports all of them at once.

    Every reader parses the whole source, calling `add` for each malformed record, then `raise_if_any`: one
    `ValueError` (the CLI prints it as `keras-fpn: error: ...`, exit 2) whose first line names the first problem
    as `FILE, line N: what was wrong; expected what`, followed by the others (the first 20).
    """

    SHOWN = 20

    def __init__(self, source):
        self.source, self.problems = source, []

    def add(self, where, what, expected):
        """`where`: "line 3", "annotation 7", or a file name; `what` was wrong; `expected` what instead."""
        self.problems.append(f"{where}: {what}; expected {expected}")

    def number(self, where, column, text, expected="a number"):
        """`float(text)`, or None after recording that `column` of `where` is not a number."""
        try:
            value = float(text)
        except (TypeError, ValueError):
            shown = "empty" if text is None or not str(text).strip() else f"{str(text)!r}, not a number"
            self.add(where, f"{column} is {shown}", expected)
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self.add(where, f"{column} is {text!r}", expected)
            return None
        return value

    def raise_if_any(self):
        if not self.problems:
            return
        first, rest = self.problems[0], self.problems[1:self.SHOWN]
        message = f"{self.source}, {first}."
        if len(self.problems) > 1:
            message += f" ({len(self.problems) - 1} more malformed record(s) below)\n  " + "\n  ".join(rest)
            if len(self.problems) > self.SHOWN:
                message += f"\n  ... and {len(self.problems) - self.SHOWN} more"
        raise ValueError(message)


def clean_boxes(boxes, labels, width, height, source, return_keep=False):
    """Clips pixel `xyxy` boxes to the image and drops those with no area left.

    Returns `(boxes float32 [M, 4], labels int32 [M], number dropped)`, and the bool `keep` mask over the input
    boxes when `return_keep` (to drop what goes with them, e.g. masks). `source` names the file in the log line
    written for each box that is dropped.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int32).reshape(-1)
    if width and height:
        boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for box in boxes[~keep]:
        logger.warning("%s: dropped a box with no area inside the %sx%s image: %s", source, width, height,
                       box.tolist())
    if return_keep:
        return boxes[keep], labels[keep], int((~keep).sum()), keep
    return boxes[keep], labels[keep], int((~keep).sum())


def decode_segmentations(segmentations, height, width):
    """COCO segmentations (a list of polygons, an uncompressed RLE with a `counts` list, or a compressed RLE) ->
    uint8 `[len(segmentations), height, width]` instance masks, by pycocotools' mask API."""
    from pycocotools import mask as mask_api

    masks = np.zeros((len(segmentations), height, width), np.uint8)
    for index, segmentation in enumerate(segmentations):
        if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_api.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        masks[index] = mask_api.decode(rle)
    return masks


def decode_image(contents):
    """JPEG/PNG/BMP/GIF bytes -> uint8 `[height, width, 3]`; grayscale and RGBA become RGB."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def from_records(records, class_names):
    """`DetectionData` whose elements read and decode each record's image file lazily."""
    import tensorflow as tf

    if not records:
        raise ValueError("No images found: the dataset would be empty.")
    missing = [record.path for record in records if not os.path.exists(record.path)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(records)} image files do not exist, e.g. {missing[:3]}."
        )
    paths = tf.constant([record.path for record in records])
    # Flat arrays + row lengths: building ragged tensors from Python lists takes minutes for COCO's 118k images.
    lengths = np.array([len(record.labels) for record in records], np.int64)
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([np.reshape(record.boxes, (-1, 4)) for record in records]).astype(np.float32), lengths
    )
    labels = tf.RaggedTensor.from_row_lengths(
        np.concatenate([np.reshape(record.labels, (-1,)) for record in records]).astype(np.int32), lengths
    )

    with_masks = any(record.masks is not None for record in records)

    def load(path, image_boxes, image_labels, index):
        image = decode_image(tf.io.read_file(path))
        targets = {"boxes": tf.reshape(image_boxes, (-1, 4)), "labels": image_labels}
        if with_masks:
            shape = tf.shape(image)

            def masks_of(i, height, width):
                return decode_segmentations(records[int(i)].masks or [], int(height), int(width))

            masks = tf.numpy_function(masks_of, [index, shape[0], shape[1]], tf.uint8, stateful=False)
            masks.set_shape([None, None, None])
            targets["masks"] = masks
        return image, targets

    indices = tf.range(len(records), dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((paths, boxes, labels, indices)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return DetectionData(dataset, tuple(class_names), len(records))


def label_map(found_names, class_names, source):
    """`(class_names, {name: label})`: the given names, or the sorted names found; unknown names raise."""
    if class_names is None:
        class_names = sorted(set(found_names))
    class_names = tuple(class_names)
    unknown = sorted(set(found_names) - set(class_names))
    if unknown:
        raise ValueError(f"{source} has objects of classes {unknown} that are not in class_names={class_names}.")
    return class_names, {name: index for index, name in enumerate(class_names)}
