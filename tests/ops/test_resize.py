import keras
import numpy as np
import pytest

from keras_fpn.ops import resize_to

SIZES = [(13, 17), (14, 18), (25, 33), (7, 9), (3, 2)]


def np_nearest(x, height, width):
    rows = np.minimum(((np.arange(height) + 0.5) * x.shape[1] / height).astype(int), x.shape[1] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * x.shape[2] / width).astype(int), x.shape[2] - 1)
    return x[:, rows][:, :, cols]


@pytest.mark.parametrize("size", SIZES)
def test_nearest_matches_half_pixel_reference(size):
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resize_to(x, *size)), np_nearest(x, *size))


def test_nearest_2x_is_pixel_repetition():
    x = np.arange(2 * 3, dtype="float32").reshape(1, 2, 3, 1)
    expected = x.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resize_to(x, 4, 6)), expected)


def test_bilinear_on_a_ramp():
    """Half-pixel bilinear upsampling of a linear ramp is linear inside and clamped at the borders."""
    x = np.arange(4, dtype="float32").reshape(1, 1, 4, 1)
    out = keras.ops.convert_to_numpy(resize_to(x, 1, 8, "bilinear"))[0, 0, :, 0]
    np.testing.assert_allclose(out, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", SIZES)
def test_matches_backend_resize(interpolation, size):
    """Same sampling as Keras's own resize (tf.image.resize / jax.image.resize) at static sizes."""
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 3)).astype("float32")
    expected = keras.ops.image.resize(x, size, interpolation=interpolation, data_format="channels_last",
                                      antialias=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(resize_to(x, *size, interpolation)), keras.ops.convert_to_numpy(expected),
        atol=1e-5,
    )


def test_runtime_size_in_a_model():
    class ResizeLike(keras.layers.Layer):
        def call(self, x, like):
            shape = keras.ops.shape(like)
            return resize_to(x, shape[1], shape[2])

        def compute_output_shape(self, x_shape, like_shape):
            return (x_shape[0], like_shape[1], like_shape[2], x_shape[3])

    x, like = keras.Input((None, None, 2)), keras.Input((None, None, 1))
    model = keras.Model([x, like], ResizeLike()(x, like))
    out = model.predict([np.ones((1, 7, 9, 2)), np.ones((1, 13, 17, 1))], verbose=0)
    assert out.shape == (1, 13, 17, 2)


def test_bad_interpolation():
    with pytest.raises(ValueError, match="Received interpolation='area'"):
        resize_to(np.zeros((1, 2, 2, 1)), 4, 4, "area")
