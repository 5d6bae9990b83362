"""keras_fpn.detection.nms: hand-computed cases on every backend, and TensorFlow's combined NMS as the reference."""

import keras
import numpy as np
import pytest

from keras_fpn.detection.nms import class_nms, detection_nms, offset_nms


def run(boxes, scores, classes, **kwargs):
    out = class_nms(np.asarray(boxes, "float32")[None], np.asarray(scores, "float32")[None],
                    np.asarray(classes, "int32")[None], **kwargs)
    return {key: np.asarray(value)[0] for key, value in out.items()}


def test_greedy_per_class_by_hand():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    scores = [0.9, 0.8, 0.7, 0.6, 0.01]
    classes = [0, 0, 1, 0, 0]
    # Box 1 overlaps box 0 (IoU 81/119 = 0.68) in class 0: removed. Box 2 is the same square in class 1: kept.
    # Box 4 scores below the threshold.
    out = run(boxes, scores, classes, max_detections=4, iou_threshold=0.5, score_threshold=0.05)
    assert out["num_detections"] == 3
    np.testing.assert_array_equal(out["indices"], [0, 2, 3, -1])
    np.testing.assert_array_equal(out["labels"], [0, 1, 0, -1])
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, 0.6, 0.0])
    np.testing.assert_allclose(out["boxes"][3], [0, 0, 0, 0])
    # IoU 0.68 is not above 0.7: both kept; strictly above the score threshold only.
    out = run(boxes, scores, classes, max_detections=5, iou_threshold=0.7, score_threshold=0.6)
    np.testing.assert_array_equal(out["indices"], [0, 1, 2, -1, -1])


def test_no_candidates_and_a_suppressed_chain():
    out = run([[0, 0, 1, 1]] * 3, [0.01, 0.02, 0.0], [0, 0, 0], max_detections=2)
    assert out["num_detections"] == 0 and (out["labels"] == -1).all()
    # Greedy, not clustering: A suppresses B, so C (overlapping only B) survives.
    boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]
    out = run(boxes, [0.9, 0.8, 0.7], [0, 0, 0], max_detections=3, iou_threshold=0.3)
    np.testing.assert_array_equal(out["indices"], [0, 2, -1])


def test_jit_compiles_with_static_shapes():
    if keras.backend.backend() != "jax":
        pytest.skip("the jit check is JAX's")
    import jax

    boxes = np.random.default_rng(0).uniform(0, 50, (2, 40, 4)).astype("float32")
    boxes[..., 2:] += boxes[..., :2]
    scores = np.random.default_rng(1).uniform(0, 1, (2, 40)).astype("float32")
    classes = np.zeros((2, 40), "int32")
    compiled = jax.jit(lambda b, s, c: class_nms(b, s, c, max_detections=10))
    out, eager = compiled(boxes, scores, classes), class_nms(boxes, scores, classes, max_detections=10)
    np.testing.assert_array_equal(out["indices"], eager["indices"])
    assert out["boxes"].shape == (2, 10, 4)


def random_candidates(seed, batch=2, count=1500, num_classes=4):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 300, (batch, count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 100, (batch, count, 2))], -1).astype("float32")
    return boxes, rng.uniform(0, 1, (batch, count)).astype("float32"), rng.integers(0, num_classes, (batch, count))


@pytest.mark.parametrize("score_threshold", [0.05, 0.995])  # 100 kept of many, and a few candidates only
def test_equals_tensorflow_combined_nms(score_threshold):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference is TensorFlow's op")
    import tensorflow as tf

    boxes, scores, classes = random_candidates(0)
    ours = class_nms(boxes, scores, classes, 100, 0.5, score_threshold)
    one_hot = tf.one_hot(classes, 4) * scores[..., None]
    ref_boxes, ref_scores, ref_classes, ref_count = tf.image.combined_non_max_suppression(
        boxes[:, :, None], one_hot, 100, 100, 0.5, score_threshold, pad_per_class=False, clip_boxes=False)
    assert 0 < int(ref_count[1]) < 100 if score_threshold > 0.9 else int(ref_count[0]) == 100
    # offset_nms is what LiteRT and ONNX exports run (one NMS per image on boxes shifted apart by class).
    for ours in (ours, offset_nms(boxes, scores, classes, 100, 0.5, score_threshold)):
        np.testing.assert_array_equal(ours["num_detections"], ref_count)
        for i, count in enumerate(np.asarray(ref_count)):
            np.testing.assert_allclose(np.asarray(ours["boxes"])[i, :count], ref_boxes[i, :count])
            np.testing.assert_allclose(np.asarray(ours["scores"])[i, :count], ref_scores[i, :count])
            np.testing.assert_array_equal(np.asarray(ours["labels"])[i, :count], ref_classes[i, :count])


def test_class_specific_boxes_flatten_to_the_same_detections():
    # Faster R-CNN's form: every RoI has a box per class. detection_nms flattens it off TensorFlow; here both
    # forms go through class_nms and must agree with the TensorFlow-backend path where there is one.
    boxes, scores, _ = random_candidates(1, count=200)
    per_class = np.stack([boxes, boxes + 3.0, boxes - 3.0], axis=2)  # [batch, R, 3, 4]
    class_scores = np.random.default_rng(2).uniform(0, 1, (2, 200, 3)).astype("float32")
    out = detection_nms(per_class, class_scores, max_detections=50, iou_threshold=0.5, score_threshold=0.3)
    flat = class_nms(per_class.reshape(2, -1, 4), class_scores.reshape(2, -1),
                     np.tile(np.arange(3), (2, 200)), 50, 0.5, 0.3)
    for key in ("boxes", "scores", "labels", "num_detections"):
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(flat[key]), atol=1e-5)
