import keras
import numpy as np
import pytest

from keras_fpn.detection.box_coding import decode_deltas, encode_deltas, match_anchors, pairwise_iou


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_encode_hand_computed_and_round_trip():
    anchors = np.array([[0, 0, 10, 10], [10, 10, 30, 50]], "float32")
    boxes = np.array([[[1, 1, 11, 12], [12, 8, 30, 52]]], "float32")
    deltas = np_(encode_deltas(anchors, boxes, (10.0, 10.0, 5.0, 5.0)))
    # (y - ya) / ha * 10, (x - xa) / wa * 10, log(h / ha) * 5, log(w / wa) * 5 for the first pair
    np.testing.assert_allclose(deltas[0, 0], [1.5, 1.0, 5 * np.log(1.1), 0.0], atol=1e-5)
    np.testing.assert_allclose(np_(decode_deltas(anchors, deltas, (10.0, 10.0, 5.0, 5.0))), boxes, atol=1e-4)


def test_pairwise_iou():
    anchors = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], "float32")
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], "float32")
    iou = np_(pairwise_iou(anchors, boxes))
    np.testing.assert_allclose(iou[0], [[1.0, 0.0], [25 / 175, 0.0]], atol=1e-6)


def test_positive_ignored_negative():
    box = [0, 0, 10, 10]
    anchors = np.array([
        [0, 0, 10, 12],   # IoU 100/120 = 0.83: positive
        [0, 0, 10, 22],   # IoU 100/220 = 0.45: ignored
        [0, 0, 10, 100],  # IoU 0.1: negative
    ], "float32")
    matched, positive, negative = match_anchors(anchors, np.array([[box]], "float32"), np.array([[1]]),
                                                allow_low_quality_matches=False)
    assert np_(positive).tolist() == [[True, False, False]]
    assert np_(negative).tolist() == [[False, False, True]]
    assert np_(matched).tolist() == [[0, 0, 0]]


def test_low_quality_match_gives_small_objects_an_anchor():
    anchors = np.array([[0, 0, 32, 32], [32, 0, 64, 32]], "float32")
    boxes = np.array([[[2, 2, 12, 12], [40, 4, 60, 30]]], "float32")  # IoU 0.098 and 0.51 with their anchors
    labels = np.array([[0, 1]])
    _, strict, _ = match_anchors(anchors, boxes, labels, allow_low_quality_matches=False)
    matched, positive, negative = match_anchors(anchors, boxes, labels, allow_low_quality_matches=True)
    assert np_(strict).tolist() == [[False, True]]
    assert np_(positive).tolist() == [[True, True]] and np_(matched).tolist() == [[0, 1]]
    assert not np_(negative).any()


def test_padding_is_never_matched_and_empty_images_are_all_negative():
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], "float32")
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 0, 0]], [[0, 0, 10, 10], [0, 0, 0, 0]]], "float32")
    labels = np.array([[0, -1], [-1, -1]])
    _, positive, negative = match_anchors(anchors, boxes, labels)
    assert np_(positive).tolist() == [[True, False], [False, False]]
    assert np_(negative).tolist() == [[False, True], [True, True]]


def test_decoding_clamps_the_scale_like_torchvision():
    from keras_fpn.detection.box_coding import MAX_LOG_SCALE

    anchors = np.array([[0, 0, 16, 32]], "float32")  # height 32, width 16
    weights = (10.0, 10.0, 5.0, 5.0)
    for delta in (5.0, 50.0, 500.0):
        # (y, x, h, w) deltas: the scale deltas are multiplied by the weight 5 before the clamp applies
        boxes = np_(decode_deltas(anchors, np.array([[0.0, 0.0, delta * 5, delta * 5]], "float32"), weights))
        assert np.isfinite(boxes).all(), (delta, boxes)
        width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        expected = np.exp(min(delta, MAX_LOG_SCALE))  # 148.4x for 5 is clamped to 62.5x
        np.testing.assert_allclose([width / 16, height / 32], [expected, expected], rtol=1e-4)
    assert abs(np.exp(MAX_LOG_SCALE) - 62.5) < 1e-9
    # Very negative deltas are not clamped (torchvision clamps the upper end only): a near-empty, finite box.
    tiny = np_(decode_deltas(anchors, np.array([[0.0, 0.0, -500.0, -500.0]], "float32"), (1.0, 1.0, 1.0, 1.0)))
    assert np.isfinite(tiny).all()
    np.testing.assert_allclose(tiny[0], [8, 16, 8, 16], atol=1e-4)
    # Below the clamp nothing changes: decode(encode(box)) is the box.
    box = np.array([[[-100, -200, 116, 232]]], "float32")
    np.testing.assert_allclose(np_(decode_deltas(anchors, encode_deltas(anchors, box, weights), weights)), box,
                               rtol=1e-4)
