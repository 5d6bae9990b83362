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
    head = PredictionHead(4, filters=8, depth=2)
    head(np.zeros((1, 8, 8, 8), "float32"))
    count = len(head.weights)
    head(np.zeros((1, 3, 5, 8), "float32"))
    assert len(head.weights) == count
