"""The RoI heads' parts: the box head and predictor through the shared layer harness, and the sampled training
examples (labels, box targets) against hand-computed values."""

import math

import keras
import numpy as np
import pytest

from keras_fpn.detection.roi_heads import BoxHead, BoxPredictor, decode_roi_detections, roi_loss, sample_rois
from tests.detection.test_rpn import _deltas
from tests.testing import run_layer_test

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def test_box_head_and_predictor_through_the_layer_harness():
    run_layer_test(BoxHead, {"representation_size": 8}, np.zeros((3, 7, 7, 4), np.float32),
                   expected_output_shape=(3, 8))
    run_layer_test(BoxPredictor, {"num_classes": 5}, np.zeros((3, 8), np.float32),
                   expected_output_shape=((3, 6), (3, 5, 4)))
    # torchvision's v2 "4conv1fc" head (here 2 convs): convs without bias, BatchNorm at 1e-5, one fc.
    pooled = np.random.RandomState(0).normal(size=(3, 7, 7, 4)).astype(np.float32)
    v2 = {"representation_size": 8, "conv_depth": 2, "conv_filters": 6, "fc_depth": 1, "norm": "batch",
          "norm_epsilon": 1e-5}
    run_layer_test(BoxHead, v2, pooled, expected_output_shape=(3, 8))
    head = BoxHead(**v2)
    head(pooled)
    assert [fc.name for fc in head.fcs] == ["fc1"] and not any(conv.use_bias for conv in head.convs)
    assert [norm.epsilon for norm in head.norms] == [1e-5, 1e-5]
    assert head.fcs[0].kernel.shape == (7 * 7 * 6, 8)


def test_sampled_rois_carry_their_matched_box_label_and_targets():
    # Two boxes of different classes; proposals near the second box, near the first, and on the background.
    boxes = np.array([[[10, 10, 50, 40], [60, 20, 100, 90], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[2, 0, -1]], np.int32)
    proposals = np.array([[[62, 24, 104, 92],    # IoU 0.83 with box 1 (label 0)
                           [12, 8, 48, 44],      # IoU 0.73 with box 0 (label 2)
                           [150, 150, 190, 190], # nothing: background
                           [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, True, True, False]])
    rois, roi_labels, targets, roi_valid, gt_index = (np.asarray(t) for t in sample_rois(
        proposals, valid, boxes, labels, num_classes=3, batch_size_per_image=8, positive_fraction=1.0,
        positive_iou=0.5, box_weights=WEIGHTS, seed=0))
    expected = {  # roi -> (label, matched box)
        (62, 24, 104, 92): (0, boxes[0, 1]), (12, 8, 48, 44): (2, boxes[0, 0]), (150, 150, 190, 190): (3, None),
        (10, 10, 50, 40): (2, boxes[0, 0]), (60, 20, 100, 90): (0, boxes[0, 1]),  # the ground truth is added
    }
    assert int(roi_valid.sum()) == len(expected)
    seen = set()
    for roi, label, target, index in zip(rois[0][roi_valid[0]], roi_labels[0][roi_valid[0]],
                                         targets[0][roi_valid[0]], gt_index[0][roi_valid[0]]):
        key = tuple(int(v) for v in roi)
        expected_label, box = expected[key]
        seen.add(key)
        assert label == expected_label, f"RoI {key}: label {label}, expected {expected_label}"
        if box is None:
            np.testing.assert_allclose(target, 0.0, atol=1e-6)
        else:
            np.testing.assert_allclose(target, _deltas(np.array(key, np.float32), box, WEIGHTS), atol=1e-4,
                                       err_msg=f"RoI {key}")
            np.testing.assert_array_equal(boxes[0, index], box)
    assert seen == set(expected)
    # Positives come first (the mask head reads the first rows).
    first = roi_labels[0][roi_valid[0]]
    assert list(first < 3) == sorted(first < 3, reverse=True)


def test_roi_loss_by_hand():
    logits = np.zeros((1, 2, 3), np.float32)  # uniform over 2 classes + background: CE log(3) each
    deltas = np.zeros((1, 2, 2, 4), np.float32)
    deltas[0, 0, 1] = [1.0, 0, 0, 0]  # the positive RoI's own class (1) is off by 1 in y
    deltas[0, 0, 0] = [9.0, 9, 9, 9]  # another class's deltas must not count
    targets = np.zeros((1, 2, 4), np.float32)
    classification, box = roi_loss(logits, deltas, np.array([[1, 2]]), targets, np.array([[True, True]]),
                                   smooth_l1_beta=1.0 / 9)
    np.testing.assert_allclose(float(classification), np.log(3.0), rtol=1e-5)
    np.testing.assert_allclose(float(box), (1.0 - 0.5 / 9) / 2, rtol=1e-5)


def test_roi_detections_in_the_padding_take_no_slot():
    # A 40x96 image padded to 64x96: one proposal inside the image, one in the padding below it; the second, clipped
    # to the image, has no height and is no detection (torchvision's remove_small_boxes).
    from keras_fpn.detection.roi_heads import decode_roi_detections

    proposals = np.array([[[10, 10, 30, 30], [50, 45, 70, 60]]], np.float32)
    logits = np.array([[[5.0, 0.0], [5.0, 0.0]]], np.float32)  # one class, both confident
    deltas = np.zeros((1, 2, 1, 4), np.float32)
    found = decode_roi_detections(proposals, np.array([[True, True]]), logits, deltas,
                                  np.array([[[40.0]]]), np.array([[[96.0]]]))
    assert int(found["num_detections"][0]) == 1
    np.testing.assert_allclose(np.asarray(found["boxes"])[0, 0], [10, 10, 30, 30])
    both = decode_roi_detections(proposals, np.array([[True, True]]), logits, deltas, 64, 96)
    assert int(both["num_detections"][0]) == 2


def test_each_class_decodes_its_own_deltas():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("decoding here runs TensorFlow's NMS")
    proposals = np.array([[[20, 20, 60, 60], [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, False]])
    logits = np.log(np.array([[[0.1, 0.7, 0.2], [0.9, 0.05, 0.05]]], np.float32))  # 2 classes + background
    deltas = np.zeros((1, 2, 2, 4), np.float32)
    deltas[0, 0, 0] = [0, 10.0, 0, 0]  # class 0: x shifted by 10 / 10 * 40 = 40 px
    deltas[0, 0, 1] = [0, 0, 5 * math.log(0.5), 5 * math.log(0.5)]  # class 1: half the size
    detections = decode_roi_detections(proposals, valid, logits, deltas, 100, 100, score_threshold=0.05)
    n = int(detections["num_detections"][0])
    assert n == 2  # the invalid proposal gives nothing despite its high class-0 score
    got = {int(label): (round(float(score), 4), np.asarray(box).round(3).tolist()) for label, score, box in
           zip(detections["labels"][0][:n], detections["scores"][0][:n], detections["boxes"][0][:n])}
    assert got == {1: (0.7, [30.0, 30.0, 50.0, 50.0]), 0: (0.1, [60.0, 20.0, 100.0, 60.0])}
    assert int(detections["labels"][0][n]) == -1
