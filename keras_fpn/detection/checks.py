"""Input checks shared by the detectors: bad input raises an error that names the problem, never a silent wrong answer.

What the shapes and dtypes say is checked in Python while Keras traces the step (a `ValueError` before anything
runs). What only the values say (NaN pixels, labels out of range, boxes in another format) is checked in the graph
with `tf.debugging` asserts, which raise `tf.errors.InvalidArgumentError` carrying the same kind of message; they run
under the TensorFlow backend (XLA compiles them to nothing, and other backends skip them).
"""

import keras
import numpy as np
from keras import ops
from keras.utils import bounding_boxes

from keras_fpn.ops.boxes import clip_boxes

# The first words of each value error, the same in the Python checks of in-memory batches and in the graph asserts
# of tf.data batches, so the first line of either names the problem.
NONFINITE_PIXELS = "images contain NaN or Inf pixel values"
FRACTIONAL_LABELS = "labels must be whole numbers (class ids, -1 for padding)"
LABELS_TOO_LARGE = "labels must be < num_classes={num_classes} (labels are 0..num_classes-1, -1 is padding)"
LABELS_TOO_SMALL = "labels must be >= -1 (-1 marks padding)"
NONFINITE_BOXES = "boxes contain NaN or Inf values"
UNORDERED_BOXES = ("boxes have x2 < x1 or y2 < y1 in the bounding_box_format of the model, {format}: are they in "
                   "another format, such as xywh or yxyx?")
RELATIVE_BOXES = ("every box lies within [0, 1.5] on images of at least 32 pixels, but the model's "
                  "bounding_box_format={format!r} is in pixels: are these relative coordinates? Build the model with "
                  "bounding_box_format='rel_{format}' (relative formats: rel_xyxy, rel_yxyx, rel_xywh, "
                  "rel_center_xywh, rel_center_yxhw), or multiply the boxes by the image size")
MASK_COUNT = "masks must be one per box"
MASK_SIZE = "masks must have the images' height and width"
MASK_VALUES = "masks must hold 0 and 1 when they are floats (uint8, integer and bool masks: nonzero marks the object)"
# Relative boxes are recognised on images at least this large, where no real object is 1.5 pixels wide.
RELATIVE_MIN_IMAGE_SIZE = 32
RELATIVE_LIMIT = 1.5
SHOWN = 3  # offending values shown in an error


def _tensorflow():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def _static_shape(tensor):
    """The static shape as a tuple, or None when not even the rank is known (Keras's predict function, retraced
    with `reduce_retracing` after calls of several ranks, sees such inputs)."""
    shape = getattr(tensor, "shape", None)
    if shape is not None and getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape) if shape is not None else tuple(ops.shape(tensor))


def _dtype(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _after(checks, *tensors):
    """`tensors`, computed only after the `checks` ops ran: the named error is raised, not some later op's."""
    import tensorflow as tf

    with tf.control_dependencies([check for check in checks if check is not None]):
        results = tuple(
            tensor.with_flat_values(tf.identity(tensor.flat_values)) if isinstance(tensor, tf.RaggedTensor)
            else tf.identity(tensor) for tensor in tensors
        )
    return results if len(results) > 1 else results[0]


def check_image_shape(shape, min_size, what="images"):
    """The static checks of `check_images` on a shape tuple: rank 4, 3 channels, at least `min_size` pixels."""
    if len(shape) != 4:
        raise ValueError(f"Received {what} of shape {shape}; expected 4 dimensions [batch, height, width, 3] "
                         "(a batch of RGB images; add a batch dimension for one image).")
    if shape[-1] is not None and shape[-1] != 3:
        raise ValueError(f"Received {what} with {shape[-1]} channels (shape {shape}); expected 3 (RGB). Convert "
                         "grayscale or RGBA images to RGB first (keras_fpn.datasets.decode_image does).")
    for size, side in ((shape[1], "height"), (shape[2], "width")):
        if size is not None and size < min_size:
            raise ValueError(f"Received {what} of {side} {size} (shape {shape}); expected at least {min_size} "
                             f"pixels, the stride of the coarsest pyramid level. Resize or pad the images, or "
                             "build the model with a lower max_level.")


def check_images(images, min_size, what="images"):
    """Checks `[batch, height, width, 3]` images at least `min_size` pixels high and wide, with finite pixels.

    Returns the images (under TensorFlow, only once the value checks have run)."""
    shape = _static_shape(images)
    if shape is None:  # rank unknown while tracing (predict retraced for several ranks): checked when it runs
        import tensorflow as tf

        images = tf.ensure_shape(images, [None, None, None, 3])
        shape = tuple(images.shape)
    check_image_shape(shape, min_size, what)
    tf = _tensorflow()
    if tf is None:
        return images
    checks = [tf.debugging.assert_greater_equal(
        tf.shape(images)[1:3], min_size,
        message=f"{what} are smaller than {min_size} pixels, the stride of the coarsest pyramid level; resize or "
                "pad them, or build the model with a lower max_level")]
    if _dtype(images).startswith(("float", "bfloat")):
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(images)),
                                          [NONFINITE_PIXELS.replace("images", what, 1)]))
    return _after(checks, images)


def check_targets(boxes, labels):
    """Checks the `{"boxes", "labels"}` targets as given to `fit` (before padding them into dense tensors).

    Raises `ValueError` for: a dtype of boxes that is not floating point, a rank or last dimension that is not
    `[batch, num_boxes, 4]` / `[batch, num_boxes]`, and box and label counts that differ where the shapes say so.
    Returns `(boxes, labels)` (under TensorFlow, only once the count check has run).
    """
    if not hasattr(boxes, "dtype"):  # Python lists (train_on_batch passes them through)
        boxes = ops.convert_to_tensor(boxes)
    if not hasattr(labels, "dtype"):
        labels = ops.convert_to_tensor(labels)
    box_dtype = _dtype(boxes)
    if not box_dtype.startswith(("float", "bfloat")):
        raise ValueError(f"Received boxes of dtype {box_dtype}; expected floating-point boxes (float32), e.g. "
                         "np.asarray(boxes, 'float32'). Integer boxes are refused rather than silently converted.")
    box_shape, label_shape = _static_shape(boxes), _static_shape(labels)
    if len(box_shape) != 3 or (box_shape[-1] is not None and box_shape[-1] != 4):
        raise ValueError(f"Received boxes of shape {box_shape}; expected [batch, num_boxes, 4].")
    if len(label_shape) != 2:
        raise ValueError(f"Received labels of shape {label_shape}; expected [batch, num_boxes] integers "
                         "(-1 for padding).")
    if None not in (box_shape[1], label_shape[1]) and box_shape[1] != label_shape[1]:
        raise ValueError(f"Received {box_shape[1]} boxes but {label_shape[1]} labels per image (boxes {box_shape}, "
                         f"labels {label_shape}); expected one label per box.")
    tf = _tensorflow()
    if tf is None:
        return boxes, labels
    if isinstance(boxes, tf.RaggedTensor) and isinstance(labels, tf.RaggedTensor):
        box_counts, label_counts = boxes.row_lengths(), labels.row_lengths()
    elif isinstance(boxes, tf.RaggedTensor) or isinstance(labels, tf.RaggedTensor):
        return boxes, labels  # one ragged, one padded: the padded count is the largest; nothing to compare
    else:
        box_counts, label_counts = tf.shape(boxes)[1], tf.shape(labels)[1]
    check = tf.debugging.assert_equal(box_counts, tf.cast(label_counts, box_counts.dtype),
                                      message="the numbers of boxes and labels differ; expected one label per box")
    return _after([check], boxes, labels)


def check_target_values(boxes, labels, num_classes, bounding_box_format):
    """Value checks on dense targets: `boxes` `[batch, M, 4]` already converted to pixel `xyxy`, `labels`
    `[batch, M]` int32 with -1 for padding. Labels in `[-1, num_classes)`; finite boxes with `x1 <= x2`,
    `y1 <= y2` (a box read from another format than `bounding_box_format` usually breaks this).

    Returns `(boxes, labels)` (under TensorFlow, only once the checks have run)."""
    tf = _tensorflow()
    if tf is None:
        return boxes, labels
    valid = labels >= 0
    checks = [tf.debugging.assert_less(
        tf.where(valid, labels, 0), num_classes, message=LABELS_TOO_LARGE.format(num_classes=num_classes),
        summarize=8 * SHOWN),
        tf.debugging.assert_greater_equal(labels, -1, message=LABELS_TOO_SMALL, summarize=8 * SHOWN)]
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    checks.append(tf.debugging.Assert(
        tf.reduce_all(finite | ~valid),
        [NONFINITE_BOXES + "; the first such boxes:", tf.boolean_mask(boxes, ~finite & valid)[:SHOWN]],
        summarize=4 * SHOWN))
    ordered = (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])
    checks.append(tf.debugging.Assert(
        tf.reduce_all(ordered | ~valid),
        [UNORDERED_BOXES.format(format=bounding_box_format) + " The first such boxes, as xyxy:",
         tf.boolean_mask(boxes, ~ordered & valid)[:SHOWN]],
        summarize=4 * SHOWN,
    ))
    return _after(checks, boxes, labels)


def check_box_scale(boxes, labels, height, width, bounding_box_format):
    """Refuses a batch whose valid boxes all lie within [0, 1.5] when the model's format is in pixels and the
    images are at least 32 pixels: relative coordinates given to a pixel-format model (they would train without
    any other error, on boxes smaller than one pixel of the finest level). `boxes` as given, before conversion;
    `labels` with -1 for padding. Returns `boxes` (under TensorFlow, once the check has run)."""
    tf = _tensorflow()
    if tf is None or bounding_box_format.startswith("rel_"):
        return boxes
    valid = labels >= 0
    small = tf.reduce_all((boxes >= 0.0) & (boxes <= RELATIVE_LIMIT), axis=-1)
    large_images = tf.minimum(height, width) >= RELATIVE_MIN_IMAGE_SIZE
    relative = large_images & tf.reduce_any(valid) & tf.reduce_all(small | ~valid)
    check = tf.debugging.Assert(
        ~relative, [RELATIVE_BOXES.format(format=bounding_box_format) + ". The first boxes:",
                    tf.boolean_mask(boxes, valid)[:SHOWN]], summarize=4 * SHOWN)
    return _after([check], boxes)


def check_label_values(labels):
    """Refuses floating-point labels that are not whole numbers (0.7 would silently become class 0); whole-valued
    floats (0.0, 1.0) are accepted. Returns `labels` (under TensorFlow, once the check has run)."""
    tf = _tensorflow()
    if tf is None or not _dtype(labels).startswith(("float", "bfloat")):
        return labels
    values = labels.flat_values if isinstance(labels, tf.RaggedTensor) else labels
    whole = tf.equal(values, tf.round(values))
    check = tf.debugging.Assert(
        tf.reduce_all(whole), [FRACTIONAL_LABELS + "; the first fractional values:",
                               tf.boolean_mask(values, ~whole)[:SHOWN]], summarize=SHOWN)
    return _after([check], labels)


# -- the same checks in NumPy, for in-memory batches ---------------------------------------------------------------

def _where(mask):
    """"image 1, box 0" for the first True of a [batch, num_boxes] mask, and how many are True."""
    index = np.argwhere(mask)
    first = ", ".join(f"{name} {value}" for name, value in zip(("image", "box"), index[0]))
    return first, len(index)


def _values(array):
    """The first few values, whole (float32 values rounded to 6 decimals rather than shown as 0.10000000149)."""
    array = np.asarray(array)[:SHOWN]
    return str(array.astype(np.float64).round(6).tolist() if array.dtype.kind == "f" else array.tolist())


def check_in_memory_batch(images, boxes, labels, num_classes, bounding_box_format):
    """The value checks of the graph asserts above, done in NumPy before `fit` starts on in-memory data.

    Raises `ValueError` whose first line says what is wrong (the same words as the graph asserts), where (image
    and box index) and the first offending values whole. Images `[N, H, W, 3]`, boxes `[N, M, 4]` in the model's
    `bounding_box_format`, labels `[N, M]` with -1 for padding.
    """
    images, boxes, labels = np.asarray(images), np.asarray(boxes), np.asarray(labels)
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        bad = np.argwhere(~np.isfinite(images))
        raise ValueError(f"{NONFINITE_PIXELS}: image {bad[0][0]}, pixel (row {bad[0][1]}, column {bad[0][2]}) is "
                         f"{images[tuple(bad[0][:3])].tolist()}; {len(bad)} values in all.")
    if labels.dtype.kind == "f":
        fractional = labels != np.round(labels)
        if np.any(fractional):
            where, count = _where(fractional)
            raise ValueError(f"{FRACTIONAL_LABELS}; received {_values(labels[fractional])} ({count} fractional "
                             f"labels, the first at {where}). Integer labels are taken as class ids; round or fix "
                             "them.")
    labels = labels.astype(np.int64) if labels.dtype.kind == "f" else labels
    for bad, message in ((labels >= num_classes, LABELS_TOO_LARGE.format(num_classes=num_classes)),
                         (labels < -1, LABELS_TOO_SMALL)):
        if np.any(bad):
            where, count = _where(bad)
            raise ValueError(f"{message}; received {_values(labels[bad])} ({count} such labels, the first at "
                             f"{where}).")
    valid = labels >= 0
    finite = np.all(np.isfinite(boxes), axis=-1)
    if np.any(valid & ~finite):
        where, count = _where(valid & ~finite)
        raise ValueError(f"{NONFINITE_BOXES}: {_values(boxes[valid & ~finite])} ({count} such boxes, the first at "
                         f"{where}). Padding boxes (label -1) may hold anything.")
    height, width = images.shape[1:3]
    as_xyxy = np.asarray(bounding_boxes.convert_format(boxes.astype(np.float32), bounding_box_format, "xyxy",
                                                       height=height, width=width))
    unordered = valid & ((as_xyxy[..., 2] < as_xyxy[..., 0]) | (as_xyxy[..., 3] < as_xyxy[..., 1]))
    if np.any(unordered):
        where, count = _where(unordered)
        raise ValueError(f"{UNORDERED_BOXES.format(format=bounding_box_format)} Received {_values(boxes[unordered])} "
                         f"({count} such boxes, the first at {where}; shown as given).")
    small = np.all((boxes >= 0.0) & (boxes <= RELATIVE_LIMIT), axis=-1)
    if (not bounding_box_format.startswith("rel_") and min(height, width) >= RELATIVE_MIN_IMAGE_SIZE
            and np.any(valid) and np.all(small[valid])):
        raise ValueError(f"{RELATIVE_BOXES.format(format=bounding_box_format)}. Received {_values(boxes[valid])} "
                         f"(the first boxes) on {height}x{width} images.")


def check_in_memory_masks(masks, images, boxes):
    """Mask R-CNN's `y["masks"]` against its images and boxes, in NumPy before `fit` starts: `[N, M, H, W]`, one
    mask per box (M as in `boxes [N, M, 4]`), the images' `H x W`, float masks 0 and 1 only. Raises `ValueError` whose first
    line names the problem."""
    masks, images, boxes = np.asarray(masks), np.asarray(images), np.asarray(boxes)
    if masks.ndim != 4 or masks.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"{MASK_COUNT}: received masks of shape {masks.shape} for boxes of shape {boxes.shape}; "
                         f"expected [{boxes.shape[0]}, {boxes.shape[1]}, height, width], the i-th mask of an image "
                         "for its i-th box (padding boxes get all-zero masks).")
    if masks.shape[2:] != images.shape[1:3]:
        raise ValueError(f"{MASK_SIZE}: received masks of {masks.shape[2]}x{masks.shape[3]} for images of "
                         f"{images.shape[1]}x{images.shape[2]}; resize them with their images "
                         "(keras_fpn.datasets.detection_pipeline does).")
    if masks.dtype.kind == "f" and masks.size and not np.all((masks == 0) | (masks == 1)):
        values = np.unique(masks[(masks != 0) & (masks != 1)])[:SHOWN].tolist()
        raise ValueError(f"{MASK_VALUES}; received {masks.dtype} masks with values such as {values} (in 0..255? "
                         "divide by 255, or threshold them: masks >= 128).")


def check_masks(masks, boxes, images):
    """The checks of `check_in_memory_masks` in the graph (TensorFlow) for `tf.data` batches; masks returned once
    they ran. Ragged boxes are padded later, so only the image size and the values are checked against them."""
    tf = _tensorflow()
    if tf is None:
        return masks
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank is not None and masks.shape.rank != 4:
        raise ValueError(f"{MASK_COUNT}: received masks of shape {tuple(masks.shape)}; expected [batch, num_boxes, "
                         "height, width].")
    checks = [tf.debugging.assert_equal(tf.shape(masks)[2:4], tf.shape(images)[1:3],
                                        message=f"{MASK_SIZE}; resize them with their images")]
    if not isinstance(boxes, tf.RaggedTensor):
        checks.append(tf.debugging.assert_equal(tf.shape(masks)[1], tf.shape(boxes)[1],
                                                message=f"{MASK_COUNT} (masks [batch, num_boxes, H, W])"))
    if masks.dtype.is_floating:
        values = tf.cast(masks, tf.float32)
        checks.append(tf.debugging.Assert(tf.reduce_all((values == 0.0) | (values == 1.0)),
                                          [f"{MASK_VALUES}; in 0..255? divide by 255, or threshold them"]))
    return _after(checks, masks)


def clip_and_drop(boxes, labels, height, width):
    """Clips pixel `xyxy` boxes to the image and turns boxes left with no area into padding (label -1).

    Returns `(boxes, labels, number of boxes dropped)`: boxes wholly outside the image or of zero width or height
    cannot be matched to any anchor, so they are ignored rather than trained on, and counted.
    """
    boxes = clip_boxes(boxes, height, width)
    has_area = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    valid = labels >= 0
    dropped = ops.sum(ops.cast(valid & ~has_area, "float32"))
    return boxes, ops.where(has_area, labels, -1), dropped
