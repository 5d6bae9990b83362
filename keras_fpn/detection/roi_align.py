"""Pooling regions of interest from the pyramid level their size picks (FPN paper, Sec. 4.2, Eq. 1), with RoIAlign.

Used by the two-stage detectors' RoI heads. TensorFlow backend (`tf.image.crop_and_resize` does the bilinear
sampling; the level split uses dynamic shapes).
"""

import math

from keras import ops

# The FPN paper's Eq. 1: an RoI of w x h pixels is pooled from level
#   k = floor(k0 + log2(sqrt(w h) / 224)),  k0 = 4,
# clamped to the levels the RoI heads read (P2-P5). 224 is the ImageNet pre-training size; an RoI of that size
# goes to P4 (the level a single-scale Faster R-CNN on C4 would pool from).
CANONICAL_SIZE = 224.0
CANONICAL_LEVEL = 4


def roi_levels(boxes, min_level, max_level, canonical_size=CANONICAL_SIZE, canonical_level=CANONICAL_LEVEL):
    """The pyramid level of each pixel `xyxy` box `[..., 4]` by the paper's Eq. 1, clamped to
    `[min_level, max_level]`; int32 `[...]`.

    A small epsilon inside the floor (torchvision's `LevelMapper` has the same one) keeps boxes of exactly
    112, 224 or 448 pixels on levels 3, 4 and 5 despite float rounding of the logarithm.
    """
    boxes = ops.cast(boxes, "float32")
    area = ops.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), 0.0)
    scale = ops.sqrt(area)
    level = ops.floor(canonical_level + ops.log(scale / canonical_size + 1e-8) / math.log(2.0) + 1e-6)
    return ops.cast(ops.clip(level, min_level, max_level), "int32")


def _sample_boxes(boxes, stride, height, width, pool_size, sampling_ratio):
    """`crop_and_resize` boxes (normalised y1, x1, y2, x2 on the map padded by one pixel on each side) whose
    `pool_size * sampling_ratio` samples per side fall where RoIAlign's do (aligned=True convention).

    RoIAlign divides an RoI into `pool_size` bins and samples `sampling_ratio` points evenly inside each bin:
    along x, the points `x1/s + (j + 0.5) * (x2 - x1) / (s n) - 0.5` in the map's pixel-index coordinates
    (`n = pool_size * sampling_ratio`, `s` the stride, the -0.5 the half-pixel offset of "aligned"). crop_and_resize
    samples `n` points evenly from the first to the last given coordinate (`y1 * (H - 1)` to `y2 * (H - 1)`), so
    the first and last RoIAlign points, shifted by the one-pixel padding, are given.
    """
    import tensorflow as tf

    n = float(pool_size * sampling_ratio)
    boxes = boxes / stride
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    bin_x, bin_y = (x2 - x1) / n, (y2 - y1) / n
    first_x, last_x = x1 + 0.5 * bin_x - 0.5, x1 + (n - 0.5) * bin_x - 0.5
    first_y, last_y = y1 + 0.5 * bin_y - 0.5, y1 + (n - 0.5) * bin_y - 0.5
    padded_h = tf.cast(height + 2, tf.float32) - 1.0
    padded_w = tf.cast(width + 2, tf.float32) - 1.0
    return tf.stack([(first_y + 1.0) / padded_h, (first_x + 1.0) / padded_w,
                     (last_y + 1.0) / padded_h, (last_x + 1.0) / padded_w], axis=-1)


def multilevel_roi_align(features, boxes, min_level, max_level, pool_size=7, sampling_ratio=2,
                         canonical_size=CANONICAL_SIZE, canonical_level=CANONICAL_LEVEL):
    """RoIAlign of each box from the level Eq. 1 assigns it.

    Bilinear sampling with the half-pixel ("aligned") convention of torchvision's `roi_align(aligned=True)` and
    detectron2's `ROIAlignV2`: `sampling_ratio` x `sampling_ratio` points per output bin, averaged. A sample point
    up to one pixel outside the map takes the border value; farther outside it is 0 (torchvision's rule).

    Args:
        features: dict `{"P2": [batch, H2, W2, C], ...}` with every level from `min_level` to `max_level`.
        boxes: `[batch, R, 4]` pixel `xyxy` boxes in the input image's coordinates.
        min_level, max_level: ints, the levels boxes may be pooled from.
        pool_size: int, default 7, output bins per side. sampling_ratio: int, default 2 (torchvision's).

    Returns:
        `[batch, R, pool_size, pool_size, C]` float32.
    """
    import tensorflow as tf

    boxes = tf.cast(boxes, tf.float32)
    batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    image_index = tf.repeat(tf.range(batch), count)
    levels = tf.reshape(roi_levels(boxes, min_level, max_level, canonical_size, canonical_level), [-1])
    n = pool_size * sampling_ratio
    pooled, positions = [], []
    for level in range(min_level, max_level + 1):
        level_features = tf.cast(features[f"P{level}"], tf.float32)
        position = tf.cast(tf.where(tf.equal(levels, level))[:, 0], tf.int32)
        shape = tf.shape(level_features)
        sample_boxes = _sample_boxes(tf.gather(flat_boxes, position), 2.0 ** level, shape[1], shape[2], pool_size,
                                     sampling_ratio)
        # One pixel of border replication: a sample between the edge pixel and the pixel beyond takes the edge
        # value, and crop_and_resize's extrapolation value 0 starts one pixel out.
        padded = tf.pad(level_features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        samples = tf.image.crop_and_resize(padded, sample_boxes, tf.gather(image_index, position), [n, n],
                                           method="bilinear", extrapolation_value=0.0)
        pooled.append(tf.nn.avg_pool2d(samples, sampling_ratio, sampling_ratio, "VALID"))
        positions.append(position)
    channels = features[f"P{min_level}"].shape[-1]
    result = tf.scatter_nd(tf.concat(positions, 0)[:, None], tf.concat(pooled, 0),
                           tf.stack([batch * count, pool_size, pool_size, channels]))
    return tf.reshape(result, [batch, count, pool_size, pool_size, channels])
