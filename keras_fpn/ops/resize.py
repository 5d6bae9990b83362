"""Resizing a feature map to another map's runtime height and width.

`keras.ops.image.resize` needs the output size as Python integers: under the TensorFlow backend a size read from
`keras.ops.shape` of a map with unknown height raises `OperatorNotAllowedInGraphError` (checked with TF 2.21 and
Keras 3.15), so it cannot follow a lateral map of runtime shape. This gathers rows and columns instead, with the
same half-pixel-centre sampling as `tf.image.resize` and `jax.image.resize`, which works on every backend and for
every size, including the odd ones where a fixed 2x upsampling would be off by one (13 -> 25).
"""

from keras import ops

INTERPOLATIONS = ("nearest", "bilinear")


def _source_positions(out_size, in_size):
    """Continuous source coordinate of each output pixel centre, in input pixels."""
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    return (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5


def _nearest_indices(out_size, in_size):
    # floor((i + 0.5) * in / out): the input pixel whose extent holds the output pixel's centre.
    position = _source_positions(out_size, in_size) + 0.5
    return ops.minimum(ops.cast(ops.floor(position), "int32"), ops.cast(in_size, "int32") - 1)


def _linear_axis(x, out_size, in_size, axis):
    position = ops.maximum(_source_positions(out_size, in_size), 0.0)
    lower = ops.floor(position)
    weight = position - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    weight = ops.cast(ops.reshape(weight, shape), x.dtype)
    below = ops.take(x, lower, axis=axis)
    above = ops.take(x, upper, axis=axis)
    return below + (above - below) * weight


def resize_to(x, height, width, interpolation="nearest"):
    """Resizes channels-last maps `x` to `(height, width)`, which may be runtime (symbolic) sizes.

    Args:
        x: tensor `[batch, h, w, channels]`.
        height: int or scalar tensor, the output height.
        width: int or scalar tensor, the output width.
        interpolation: `"nearest"` (default) or `"bilinear"`, both with half-pixel centres.

    Returns:
        A tensor `[batch, height, width, channels]` of the dtype of `x`.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"Received interpolation={interpolation!r}; expected one of {INTERPOLATIONS}.")
    in_shape = ops.shape(x)
    in_height, in_width = in_shape[1], in_shape[2]
    if interpolation == "nearest":
        x = ops.take(x, _nearest_indices(height, in_height), axis=1)
        return ops.take(x, _nearest_indices(width, in_width), axis=2)
    x = _linear_axis(x, height, in_height, axis=1)
    return _linear_axis(x, width, in_width, axis=2)
