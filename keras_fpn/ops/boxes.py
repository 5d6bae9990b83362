"""Box geometry every detector, the exporter and the evaluators share: clipping to an image, and mapping boxes of
the network input back to the original image."""

import numpy as np
from keras import ops


# Boxes narrower or lower than this (pixels, after clipping) are no detections: torchvision's postprocessing drops
# them (`box_ops.remove_small_boxes(boxes, min_size=1e-2)` in `roi_heads.postprocess_detections` and RetinaNet's
# `postprocess_detections`).
MIN_BOX_SIZE = 1e-2


def clip_boxes(boxes, height, width):
    """Pixel `xyxy` boxes `[..., 4]` clipped to an image of `height` x `width`: ints, scalar tensors, or tensors
    that broadcast against `boxes[..., 0]` (one size per image)."""
    height, width = ops.cast(height, "float32"), ops.cast(width, "float32")
    boxes = ops.cast(boxes, "float32")
    return ops.stack([ops.clip(boxes[..., 0], 0.0, width), ops.clip(boxes[..., 1], 0.0, height),
                      ops.clip(boxes[..., 2], 0.0, width), ops.clip(boxes[..., 3], 0.0, height)], axis=-1)


def has_area(boxes, min_size=MIN_BOX_SIZE):
    """bool `[...]`: the `[..., 4]` pixel xyxy boxes at least `min_size` wide and high."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def content_sizes(sizes, scales):
    """`[batch, 2]` `(height, width)` of each image's content in its resized, padded input: the original `sizes`
    times the `scales` `resize_and_pad` returned, rounded as it rounds them (the rest of the input is padding).
    NumPy float32 for NumPy input, a float32 tensor otherwise; what `predict({"images", "image_sizes"})` takes."""
    if isinstance(sizes, np.ndarray) or not hasattr(sizes, "shape"):
        return np.round(np.asarray(sizes, np.float32) * np.asarray(scales, np.float32))
    return ops.round(ops.cast(sizes, "float32") * ops.cast(scales, "float32"))


def to_original(boxes, scale, size):
    """Pixel `xyxy` boxes of the resized network input -> the original image's pixels.

    Undoes `keras_fpn.datasets.pipeline.resize_and_pad` (which scaled the image by `scale = (y, x)` and padded it
    at the bottom and right), then clips to the original `size = (height, width)`.

    Args:
        boxes: `[..., 4]` pixel xyxy; a NumPy array or a tensor (the SavedModel's graph).
        scale: `[..., 2]` `(y_scale, x_scale)`, broadcastable against `boxes[..., 0]`.
        size: `[..., 2]` `(height, width)` of the original image, broadcastable the same way.

    Returns:
        The boxes in the original image, the same type as `boxes` (NumPy float64 for NumPy input).
    """
    if isinstance(boxes, np.ndarray) or not hasattr(boxes, "shape"):
        boxes = np.asarray(boxes, np.float64)
        boxes = boxes.reshape(-1, 4) if boxes.ndim == 1 else boxes  # an empty list
        scale, size = np.asarray(scale, np.float64), np.asarray(size, np.float64)
        xyxy_scale = np.stack([scale[..., 1], scale[..., 0]] * 2, axis=-1)
        limits = np.stack([size[..., 1], size[..., 0]] * 2, axis=-1)
        return np.clip(boxes / xyxy_scale, 0.0, limits)
    scale, size = ops.cast(scale, "float32"), ops.cast(size, "float32")
    xyxy_scale = ops.stack([scale[..., 1], scale[..., 0]] * 2, axis=-1)
    limits = ops.stack([size[..., 1], size[..., 0]] * 2, axis=-1)
    return ops.clip(ops.cast(boxes, "float32") / xyxy_scale, 0.0, limits)
