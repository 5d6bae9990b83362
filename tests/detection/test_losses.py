import keras
import numpy as np
import pytest

from keras_fpn.detection.losses import focal_loss, giou_loss, smooth_l1_loss


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_focal_loss_hand_computed():
    logits = np.array([[2.0, -1.0, 0.5]], "float32")
    targets = np.array([[1.0, 0.0, 0.0]], "float32")
    p = 1 / (1 + np.exp(-logits[0]))
    expected = (-0.25 * (1 - p[0]) ** 2 * np.log(p[0])
                - 0.75 * p[1] ** 2 * np.log(1 - p[1])
                - 0.75 * p[2] ** 2 * np.log(1 - p[2]))
    assert np_(focal_loss(targets, logits))[0] == pytest.approx(expected, rel=1e-4)


def test_focal_loss_gamma_zero_is_weighted_cross_entropy():
    logits = np.array([[0.3]], "float32")
    p = 1 / (1 + np.exp(-0.3))
    assert np_(focal_loss(np.array([[1.0]], "float32"), logits, gamma=0.0))[0] == pytest.approx(-0.25 * np.log(p),
                                                                                                rel=1e-4)


def test_smooth_l1_hand_computed():
    targets = np.zeros((1, 4), "float32")
    deltas = np.array([[0.05, -0.05, 1.0, 0.0]], "float32")
    # quadratic below beta (0.5 x^2 / beta), linear above (|x| - beta / 2)
    expected = 0.5 * 0.05**2 / 0.1 * 2 + (1.0 - 0.05)
    assert np_(smooth_l1_loss(targets, deltas, 0.1))[0] == pytest.approx(expected, rel=1e-5)


def test_giou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], "float32")
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 0, 30, 10]], "float32")
    # identical: 0; half overlap: 1 - 50/150; disjoint: IoU 0, enclosure 300 of which 100 empty
    np.testing.assert_allclose(np_(giou_loss(a, b)), [0.0, 1 - 50 / 150, 1 + 100 / 300], atol=1e-6)
