import numpy as np
import pytest

from keras_fpn.evaluation.coco import coco_metrics

GROUND_TRUTH = [(100, 100, np.array([[10, 10, 50, 50], [60, 60, 90, 95]]), np.array([0, 1]))]


def test_perfect_detections():
    detections = [(GROUND_TRUTH[0][2], np.array([0.9, 0.8]), GROUND_TRUTH[0][3])]
    metrics = coco_metrics(GROUND_TRUTH, detections, num_classes=2)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_wrong_class_and_missing_detections():
    detections = [(np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([1]))]
    assert coco_metrics(GROUND_TRUTH, detections, num_classes=2)["AP50"] == pytest.approx(0.0)
    assert coco_metrics(GROUND_TRUTH, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], 2)["AP"] == 0.0


def test_half_the_objects():
    detections = [(np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([0]))]
    # class 0 found (AP 1), class 1 missed (AP 0): mean 0.5
    assert coco_metrics(GROUND_TRUTH, detections, num_classes=2)["AP50"] == pytest.approx(0.5)
