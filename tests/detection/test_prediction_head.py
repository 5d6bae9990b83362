import math

import keras
import numpy as np

from keras_fpn import PredictionHead
from tests.testing import run_layer_test


def test_layer_contract():
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 8)).astype("float32")
    run_layer_test(PredictionHead, {"num_outputs": 6, "filters": 8, "depth": 2}, x, expected_output_shape=(2, 7, 9, 6))
    run_layer_test(PredictionHead, {"num_outputs": 6, "filters": 8, "depth": 1, "norm": "group", "bias_prior": -2.0},
                   x, expected_output_shape=(2, 7, 9, 6))


def test_prior_bias_on_the_last_conv_only():
    prior = -math.log((1 - 0.01) / 0.01)
    head = PredictionHead(9 * 3, filters=8, depth=2, bias_prior=prior)
    out = keras.ops.convert_to_numpy(head(np.zeros((1, 4, 4, 8), "float32")))
    np.testing.assert_allclose(1 / (1 + np.exp(-out)), 0.01, rtol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.convs[0].bias), 0.0)


def test_one_head_serves_every_level():
    """Calls on maps of two sizes run on the same variables: setting the last conv's kernel to 0 and its bias to 1
    makes both outputs 1 everywhere, and no call created variables of its own."""
    head = PredictionHead(4, filters=8, depth=2)
    fine, coarse = (np.random.default_rng(0).normal(size=shape).astype("float32")
                    for shape in ((1, 8, 8, 8), (1, 3, 5, 8)))
    head(fine)
    variables = [id(variable) for variable in head.weights]
    last = head.output_conv
    last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
    last.bias.assign(np.ones(last.bias.shape, "float32"))
    for features in (fine, coarse):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(head(features)), 1.0)
    assert [id(variable) for variable in head.weights] == variables
