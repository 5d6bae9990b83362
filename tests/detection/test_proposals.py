"""RPN proposals: top-k per level, NMS within each level, top-k per image, decoding, clipping, small boxes
dropped, against hand-computed boxes."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="proposals use TensorFlow's NMS")

from keras_fpn.detection.anchors import table_lookups  # noqa: E402
from keras_fpn.detection.proposals import generate_proposals  # noqa: E402


def test_proposals_take_top_k_per_level_nms_within_levels_and_top_k_per_image():
    # Level 0: 4 anchors, level 1: 3 anchors (zero deltas: proposals are the anchors).
    anchors = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [80, 80, 90, 90],  # level 0
                        [0, 0, 10, 10], [100, 100, 120, 120], [30, 30, 40, 40]], np.float32)  # level 1
    logits = np.array([[4.0, 3.0, 2.0, -1.0, 3.5, 1.0, 0.5]], np.float32)
    deltas = np.zeros((1, 7, 4), np.float32)

    def run(pre, post):
        boxes, scores, valid = generate_proposals(logits, deltas, table_lookups(anchors, [4, 3]), [4, 3], 128, 128,
                                                  pre_nms_topk=pre, post_nms_topk=post, nms_iou_threshold=0.7)
        n = int(np.sum(np.asarray(valid)))
        return np.asarray(boxes)[0, :n].tolist(), np.asarray(scores)[0, :n]

    # pre 3 per level: level 0 keeps its 3 best; anchor 1 overlaps anchor 0 (IoU 0.82) and is suppressed;
    # level 1's [0, 0, 10, 10] is identical to level 0's but on another level, so it is kept.
    boxes, scores = run(pre=3, post=10)
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 120, 120], [30, 30, 40, 40]]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([4.0, 3.5, 2.0, 1.0, 0.5]))), rtol=1e-6)
    boxes, _ = run(pre=2, post=10)  # level 0's top 2 are anchors 0 and 1: NMS leaves one
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 120, 120]]
    boxes, _ = run(pre=3, post=2)  # the 2 best of all levels after NMS
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10]]


def test_proposals_are_decoded_clipped_and_small_ones_dropped():
    anchors = np.array([[10, 10, 30, 30], [90, 90, 130, 130], [40, 40, 41, 41]], np.float32)
    deltas = np.array([[[0.5, 0.0, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)  # dy = 0.5 * 20 = 10
    boxes, _, valid = generate_proposals(np.zeros((1, 3), np.float32), deltas, table_lookups(anchors, [3]), [3],
                                         100, 120, pre_nms_topk=3, post_nms_topk=3, min_size=2.0)
    assert int(np.sum(np.asarray(valid))) == 2  # the 1-pixel box is dropped
    got = sorted(np.asarray(boxes)[0, :2].round(4).tolist())
    assert got == [[10, 20, 30, 40], [90, 90, 120, 100]]  # xyxy, shifted down 10; clipped to 120 x 100
