"""The RPN's parts: its head through the shared layer harness, and its training targets against hand-computed
values."""

import keras
import numpy as np
import pytest

from keras_fpn.detection.rpn import RPNHead, rpn_loss, rpn_targets
from tests.testing import run_layer_test


def _deltas(anchor, box, weights=(1.0, 1.0, 1.0, 1.0)):
    """The (y, x, h, w) deltas of `box` against `anchor`, both pixel xyxy, written out independently."""
    ay, ax = (anchor[1] + anchor[3]) / 2, (anchor[0] + anchor[2]) / 2
    ah, aw = anchor[3] - anchor[1], anchor[2] - anchor[0]
    by, bx = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
    bh, bw = box[3] - box[1], box[2] - box[0]
    return np.array([(by - ay) / ah * weights[0], (bx - ax) / aw * weights[1], np.log(bh / ah) * weights[2],
                     np.log(bw / aw) * weights[3]], np.float32)


def test_rpn_head_through_the_layer_harness():
    run_layer_test(RPNHead, {"num_anchors": 3, "filters": 8}, np.zeros((2, 5, 7, 8), np.float32),
                   expected_output_shape=((2, 105), (2, 105, 4)))
    # torchvision's v2 head: two 3x3 convs; the first keeps the name older files store it under.
    run_layer_test(RPNHead, {"num_anchors": 3, "filters": 8, "conv_depth": 2}, np.zeros((2, 5, 7, 8), np.float32),
                   expected_output_shape=((2, 105), (2, 105, 4)))
    head = RPNHead(3, 8, conv_depth=2)
    head(np.zeros((1, 5, 7, 8), np.float32))
    assert [conv.name for conv in (head.conv, *head.more_convs)] == ["conv", "conv2"]


def test_rpn_targets_by_hand():
    anchors = np.array([[0, 0, 10, 10],       # IoU 1 with box 0: positive
                        [0, 0, 20, 20],       # IoU 0.25 with box 0: negative
                        [50, 52, 60, 62],     # IoU 0.55 with box 1, below 0.7 but box 1's best anchor: positive
                        [100, 100, 110, 110], # overlaps nothing: negative
                        [2, 0, 14, 10]],      # IoU 0.57 with box 0, box 0 has a better one: ignored
                       np.float32)
    boxes = np.array([[[0, 0, 10, 10], [48, 50, 62, 66], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[1, 0, -1]], np.int32)
    positive, negative, targets = rpn_targets(anchors, boxes, labels, 0.7, 0.3, batch_size_per_image=256,
                                              positive_fraction=0.5, seed=0)
    np.testing.assert_array_equal(np.asarray(positive), [[True, False, True, False, False]])
    np.testing.assert_array_equal(np.asarray(negative), [[False, True, False, True, False]])
    expected = np.zeros((1, 5, 4), np.float32)
    expected[0, 2] = _deltas(anchors[2], boxes[0, 1])
    np.testing.assert_allclose(np.asarray(targets), expected, atol=1e-5)
    assert abs(expected[0, 2, 0] - expected[0, 2, 1]) > 0.05  # y and x differ: a swap would show


def test_rpn_loss_by_hand():
    positive = np.array([[True, False, False]])
    negative = np.array([[False, True, False]])
    logits = np.array([[2.0, -1.0, 5.0]], np.float32)  # the third anchor is not sampled: it must not count
    targets = np.array([[[0.5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    deltas = np.zeros((1, 3, 4), np.float32)
    objectness, box = rpn_loss(logits, deltas, positive, negative, targets, smooth_l1_beta=1.0 / 9)
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))) / 2  # BCE of 1 at 2 and of 0 at -1, over 2
    np.testing.assert_allclose(float(objectness), expected, rtol=1e-5)
    np.testing.assert_allclose(float(box), (0.5 - 0.5 / 9) / 2, rtol=1e-5)  # smooth-L1 of 0.5, over 2 sampled


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_rpn_targets_sample_at_most_the_positive_fraction(fraction):
    anchors = np.array([[x, 0, x + 10, 10] for x in range(0, 400, 4)], np.float32)
    boxes = np.array([[[x, 0, x + 10, 10] for x in range(0, 400, 8)]], np.float32)
    labels = np.zeros((1, 50), np.int32)
    positive, negative, _ = rpn_targets(anchors, boxes, labels, 0.7, 0.3, batch_size_per_image=16,
                                        positive_fraction=fraction, seed=keras.random.SeedGenerator(3))
    assert int(np.sum(positive)) == int(16 * fraction)
    assert int(np.sum(positive)) + int(np.sum(negative)) <= 16
