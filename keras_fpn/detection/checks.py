"""Input checks for RetinaNet: bad input raises an error that names the problem, never a silent wrong answer.

What the shapes and dtypes say is checked in Python while Keras traces the step (a `ValueError` before anything
runs). What only the values say (NaN pixels, labels out of range, boxes in another format) is checked in the graph
with `tf.debugging` asserts, which raise `tf.errors.InvalidArgumentError` carrying the same kind of message; they run
under the TensorFlow backend (XLA compiles them to nothing, and other backends skip them).
"""

import keras
from keras import ops


def _tensorflow():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def _static_shape(tensor):
    shape = getattr(tensor, "shape", None)
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


def check_images(images, min_size, what="images"):
    """Checks `[batch, height, width, 3]` images at least `min_size` pixels high and wide, with finite pixels.

    Returns the images (under TensorFlow, only once the value checks have run)."""
    shape = _static_shape(images)
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
    tf = _tensorflow()
    if tf is None:
        return images
    checks = [tf.debugging.assert_greater_equal(
        tf.shape(images)[1:3], min_size,
        message=f"{what} are smaller than {min_size} pixels, the stride of the coarsest pyramid level; resize or "
                "pad them, or build the model with a lower max_level")]
    if _dtype(images).startswith(("float", "bfloat")):
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(images)),
                                          [f"{what} contain NaN or Inf pixel values"]))
    return _after(checks, images)
    return images


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
        tf.where(valid, labels, 0), num_classes,
        message=f"labels must be < num_classes={num_classes} (labels are 0..num_classes-1, -1 is padding)"),
        tf.debugging.assert_greater_equal(labels, -1, message="labels must be >= -1 (-1 marks padding)"),
        tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(tf.where(valid[..., None], boxes, 0.0))),
                            ["boxes contain NaN or Inf values"])]
    ordered = (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])
    checks.append(tf.debugging.Assert(
        tf.reduce_all(ordered | ~valid),
        [f"boxes have x2 < x1 or y2 < y1 in the bounding_box_format of the model, {bounding_box_format}: are they "
         "in another format, such as xywh or yxyx? The first such box, as xyxy:",
         tf.boolean_mask(boxes, ~ordered & valid)[:1]],
    ))
    return _after(checks, boxes, labels)


def clip_and_drop(boxes, labels, height, width):
    """Clips pixel `xyxy` boxes to the image and turns boxes left with no area into padding (label -1).

    Returns `(boxes, labels, number of boxes dropped)`: boxes wholly outside the image or of zero width or height
    cannot be matched to any anchor, so they are ignored rather than trained on, and counted.
    """
    limits = ops.cast(ops.stack([width, height, width, height]), boxes.dtype)
    boxes = ops.clip(boxes, 0.0, limits)
    has_area = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    valid = labels >= 0
    dropped = ops.sum(ops.cast(valid & ~has_area, "float32"))
    return boxes, ops.where(has_area, labels, -1), dropped
