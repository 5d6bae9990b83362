"""Pooling regions of interest from the pyramid level their size picks (FPN paper, Sec. 4.2, Eq. 1), with RoIAlign.

Used by the two-stage detectors' RoI heads. Two implementations give the same values: under the TensorFlow backend
`tf.image.crop_and_resize` does the bilinear sampling of each level's RoIs (split by level with dynamic shapes);
on other backends (JAX) every RoI's samples are gathered from all levels flattened into one map, in `keras.ops`
with static shapes.
"""

import math

import keras
from keras import ops

from keras_fpn.ops.portable import is_portable

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


def map_corners(boxes, stride, aligned=True):
    """Pixel xyxy boxes `[..., 4]` as corners in a map's pixel-index coordinates (pixel `i` centred at `i`).

    `aligned=True` (detectron2's ROIAlignV2, torchvision's `roi_align(aligned=True)`): `box / stride - 0.5`.
    `aligned=False` (torchvision's `MultiScaleRoIAlign`, which its detectors' weights were trained with):
    `box / stride`, each side at least 1 map pixel long."""
    boxes = boxes / stride
    if aligned:
        return boxes - 0.5
    x1, y1 = boxes[..., 0], boxes[..., 1]
    x2 = x1 + ops.maximum(boxes[..., 2] - x1, 1.0)
    y2 = y1 + ops.maximum(boxes[..., 3] - y1, 1.0)
    return ops.stack([x1, y1, x2, y2], axis=-1)


def crop_and_resize_boxes(boxes, stride, height, width, pool_size, sampling_ratio, aligned=True):
    """`crop_and_resize` boxes (normalised y1, x1, y2, x2 on the map padded by one pixel on each side) whose
    `pool_size * sampling_ratio` samples per side fall where RoIAlign's do (aligned=True convention).

    RoIAlign divides an RoI into `pool_size` bins and samples `sampling_ratio` points evenly inside each bin:
    along x, the points `x1/s + (j + 0.5) * (x2 - x1) / (s n) - 0.5` in the map's pixel-index coordinates
    (`n = pool_size * sampling_ratio`, `s` the stride, the -0.5 the half-pixel offset of "aligned"). crop_and_resize
    samples `n` points evenly from the first to the last given coordinate (`y1 * (H - 1)` to `y2 * (H - 1)`), so
    the first and last RoIAlign points, shifted by the one-pixel padding, are given. `aligned`: `map_corners`.
    """
    import tensorflow as tf

    n = float(pool_size * sampling_ratio)
    boxes = map_corners(boxes, stride, aligned)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    bin_x, bin_y = (x2 - x1) / n, (y2 - y1) / n
    first_x, last_x = x1 + 0.5 * bin_x, x1 + (n - 0.5) * bin_x
    first_y, last_y = y1 + 0.5 * bin_y, y1 + (n - 0.5) * bin_y
    padded_h = tf.cast(height + 2, tf.float32) - 1.0
    padded_w = tf.cast(width + 2, tf.float32) - 1.0
    return tf.stack([(first_y + 1.0) / padded_h, (first_x + 1.0) / padded_w,
                     (last_y + 1.0) / padded_h, (last_x + 1.0) / padded_w], axis=-1)


def multilevel_roi_align(features, boxes, min_level, max_level, pool_size=7, sampling_ratio=2,
                         canonical_size=CANONICAL_SIZE, canonical_level=CANONICAL_LEVEL, implementation=None,
                         aligned=True):
    """RoIAlign of each box from the level Eq. 1 assigns it.

    Bilinear sampling with the half-pixel ("aligned") convention of torchvision's `roi_align(aligned=True)` and
    detectron2's `ROIAlignV2`: `sampling_ratio` x `sampling_ratio` points per output bin, averaged. A sample point
    up to one pixel outside the map takes the border value; farther outside it is 0 (torchvision's rule).

    Args:
        features: dict `{"P2": [batch, H2, W2, C], ...}` with every level from `min_level` to `max_level`.
        boxes: `[batch, R, 4]` pixel `xyxy` boxes in the input image's coordinates.
        min_level, max_level: ints, the levels boxes may be pooled from.
        pool_size: int, default 7, output bins per side. sampling_ratio: int, default 2 (torchvision's).
        implementation: None (`"crop_and_resize"` under the TensorFlow backend, `"gather"` elsewhere and within
            `keras_fpn.ops.portable.portable()`), or either
            name. crop_and_resize is TensorFlow's op; gather is `keras.ops` and jit-able.
        aligned: bool, default True; False is torchvision's `MultiScaleRoIAlign` (`map_corners`).

    Returns:
        `[batch, R, pool_size, pool_size, C]` float32.
    """
    if implementation is None:
        # crop_and_resize is neither a LiteRT builtin nor an ONNX op: graphs traced for them gather.
        implementation = ("crop_and_resize" if keras.backend.backend() == "tensorflow" and not is_portable()
                          else "gather")
    if implementation == "gather":
        return _roi_align_gather(features, boxes, min_level, max_level, pool_size, sampling_ratio, canonical_size,
                                 canonical_level, aligned)
    if implementation != "crop_and_resize":
        raise ValueError(f"Received implementation={implementation!r}; expected 'crop_and_resize' or 'gather'.")
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
        sample_boxes = crop_and_resize_boxes(tf.gather(flat_boxes, position), 2.0 ** level, shape[1], shape[2],
                                             pool_size, sampling_ratio, aligned)
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


def _axis_samples(low, high, size, n, border):
    """One axis of bilinear sampling: `n` evenly spaced sample coordinates per RoI from `low` to `high` `[batch, R]`
    (map pixel-index units, bin centres), their two neighbouring indices and those neighbours' weights.

    `border="replicate"` is torchvision's RoIAlign rule: a sample up to one pixel outside the map takes the border
    value, one farther out is 0. `border="zero"`: the map is 0 outside (bilinear with zero padding).
    """
    step = (high - low) / n
    coordinate = low[..., None] + (ops.arange(n, dtype="float32")[None, None, :] + 0.5) * step[..., None]
    size = ops.cast(size, "float32")[..., None]
    if border == "replicate":
        inside = ops.cast((coordinate >= -1.0) & (coordinate <= size), "float32")
        coordinate = ops.maximum(coordinate, 0.0)
        lower = ops.floor(coordinate)
        at_edge = lower >= size - 1.0
        lower = ops.where(at_edge, size - 1.0, lower)
        upper = ops.where(at_edge, size - 1.0, lower + 1.0)
        fraction = ops.where(at_edge, 0.0, coordinate - lower)
        weight_lower, weight_upper = (1.0 - fraction) * inside, fraction * inside
    else:
        lower = ops.floor(coordinate)
        upper = lower + 1.0
        fraction = coordinate - lower
        weight_lower = (1.0 - fraction) * ops.cast((lower >= 0.0) & (lower <= size - 1.0), "float32")
        weight_upper = fraction * ops.cast((upper >= 0.0) & (upper <= size - 1.0), "float32")
        lower, upper = ops.clip(lower, 0.0, size - 1.0), ops.clip(upper, 0.0, size - 1.0)
    return ops.cast(lower, "int32"), ops.cast(upper, "int32"), weight_lower, weight_upper


def sample_regions(flat, base, height, width, boxes, n, border="replicate"):
    """Bilinear samples of regions of maps stored flat, in `keras.ops` with static shapes (jit-able).

    Args:
        flat: `[batch, T, C]`, maps flattened row by row (several maps one after another).
        base: int `[batch, R]`, where each region's map starts in `flat`; height, width: int `[batch, R]`, its size.
        boxes: `[batch, R, 4]` x1, y1, x2, y2 in the map's pixel-index coordinates (pixel `i` centred at `i`).
        n: samples per side, at the centres of an `n x n` grid over each box.
        border: `"replicate"` (torchvision's RoIAlign rule) or `"zero"`; see `_axis_samples`.

    Returns:
        `[batch, R, n, n, C]` float32.
    """
    batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
    channels = flat.shape[-1]
    y_low, y_high, y_weight_low, y_weight_high = _axis_samples(boxes[..., 1], boxes[..., 3], height, n, border)
    x_low, x_high, x_weight_low, x_weight_high = _axis_samples(boxes[..., 0], boxes[..., 2], width, n, border)
    row_width = width[..., None, None]
    result = 0.0
    for rows, row_weight in ((y_low, y_weight_low), (y_high, y_weight_high)):
        for columns, column_weight in ((x_low, x_weight_low), (x_high, x_weight_high)):
            index = base[..., None, None] + rows[..., :, None] * row_width + columns[..., None, :]
            values = ops.take_along_axis(flat, ops.reshape(index, (batch, -1))[..., None], axis=1)
            weight = row_weight[..., :, None] * column_weight[..., None, :]
            result = result + ops.reshape(values, (batch, count, n, n, channels)) * weight[..., None]
    return result


def _roi_align_gather(features, boxes, min_level, max_level, pool_size, sampling_ratio, canonical_size,
                      canonical_level, aligned=True):
    """`multilevel_roi_align` in `keras.ops`: the levels flattened into one `[batch, sum(H W), C]` map, and each
    RoI's `(pool_size * sampling_ratio)^2` samples gathered from its own level's rows, four neighbours each."""
    boxes = ops.cast(boxes, "float32")
    batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
    levels = roi_levels(boxes, min_level, max_level, canonical_size, canonical_level) - min_level  # [batch, R]
    maps, heights, widths, offsets, offset = [], [], [], [], 0
    for level in range(min_level, max_level + 1):
        level_features = ops.cast(features[f"P{level}"], "float32")
        height, width = ops.shape(level_features)[1], ops.shape(level_features)[2]
        maps.append(ops.reshape(level_features, (batch, -1, ops.shape(level_features)[3])))
        heights.append(height)
        widths.append(width)
        offsets.append(offset)
        offset = offset + height * width
    flat = ops.concatenate(maps, axis=1)
    height = ops.take(ops.cast(ops.stack(heights), "int32"), levels)
    width = ops.take(ops.cast(ops.stack(widths), "int32"), levels)
    base = ops.take(ops.cast(ops.stack(offsets), "int32"), levels)
    stride = ops.power(2.0, ops.cast(levels + min_level, "float32"))[..., None]
    samples = sample_regions(flat, base, height, width, map_corners(boxes, stride, aligned),
                             pool_size * sampling_ratio)
    channels = flat.shape[-1]
    # The mean of each bin's sampling_ratio x sampling_ratio samples, as sums of slices of 3-D tensors (rows, then
    # columns): LiteRT's builtin STRIDED_SLICE takes at most 5 dimensions, and its XNNPACK delegate fails on a 7-D
    # MEAN.
    rows = ops.reshape(samples, (-1, sampling_ratio, pool_size * sampling_ratio * channels))
    rows = sum(rows[:, row] for row in range(sampling_ratio))
    columns = ops.reshape(rows, (-1, sampling_ratio, channels))
    total = sum(columns[:, column] for column in range(sampling_ratio))
    return ops.reshape(total, (batch, count, pool_size, pool_size, channels)) / float(sampling_ratio ** 2)
