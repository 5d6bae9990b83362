"""Decoding selects exactly the pre-NMS candidates a brute-force top-k over every (anchor, class) score would."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="decoding uses TensorFlow's NMS")

import tensorflow as tf  # noqa: E402

from keras_fpn.detection.anchors import table_lookups  # noqa: E402
from keras_fpn.detection.box_coding import decode_deltas  # noqa: E402
from keras_fpn.detection.decoder import decode_detections  # noqa: E402

LEVEL_SIZES = [300, 60, 4]  # the last level has fewer anchors than pre_nms_topk, and fewer pairs than P3's k
NUM_CLASSES, TOPK, HEIGHT, WIDTH = 7, 40, 120.0, 160.0


def brute_force(deltas, logits, anchors, score_threshold, max_detections=20):
    """Every (anchor, class) pair scored, the best `TOPK` per level by a full sort, then the same NMS."""
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    boxes, class_scores, start = [], [], 0
    for size in LEVEL_SIZES:
        flat = scores[:, start:start + size].reshape(len(scores), -1)
        k = min(TOPK, flat.shape[1])
        order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        anchor, cls = order // NUM_CLASSES, order % NUM_CLASSES
        level_boxes = decode_deltas(tf.gather(anchors[start:start + size], anchor),
                                    np.take_along_axis(deltas[:, start:start + size], anchor[..., None], axis=1),
                                    (1.0, 1.0, 1.0, 1.0))
        boxes.append(np.asarray(level_boxes))
        class_scores.append(np.eye(NUM_CLASSES)[cls] * np.take_along_axis(flat, order, axis=1)[..., None])
        start += size
    boxes = np.clip(np.concatenate(boxes, 1), 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
    return tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], np.concatenate(class_scores, 1).astype(np.float32), max_detections, max_detections,
        iou_threshold=0.5, score_threshold=score_threshold, pad_per_class=False, clip_boxes=False)


@pytest.fixture
def head_outputs():
    rng = np.random.default_rng(0)
    count = sum(LEVEL_SIZES)
    centers = rng.uniform([0, 0], [WIDTH, HEIGHT], (count, 2))
    sides = rng.uniform(8, 60, (count, 2))
    anchors = np.concatenate([centers - sides / 2, centers + sides / 2], 1).astype(np.float32)
    deltas = rng.normal(0, 0.2, (2, count, 4)).astype(np.float32)
    logits = rng.normal(-1.0, 2.0, (2, count, NUM_CLASSES)).astype(np.float32)  # distinct: no ties to break
    return deltas, logits, anchors


@pytest.mark.parametrize("score_threshold", [0.05, 0.9])
def test_same_detections_as_brute_force_top_k(head_outputs, score_threshold):
    deltas, logits, anchors = head_outputs
    got = decode_detections(deltas, logits, table_lookups(anchors, LEVEL_SIZES), LEVEL_SIZES, HEIGHT, WIDTH,
                            score_threshold=score_threshold, pre_nms_topk=TOPK, max_detections=20)
    boxes, scores, classes, counts = brute_force(deltas, logits, anchors, score_threshold)
    np.testing.assert_array_equal(got["num_detections"], counts.numpy().astype(np.int32))
    assert int(counts[0]) > 0
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-6)
    np.testing.assert_allclose(got["boxes"], boxes, rtol=1e-5, atol=1e-4)
    valid = np.arange(20)[None] < counts.numpy()[:, None]
    np.testing.assert_array_equal(got["labels"], np.where(valid, classes.numpy().astype(np.int32), -1))


def test_runtime_level_sizes_give_the_same_detections(head_outputs):
    deltas, logits, anchors = head_outputs
    expected = decode_detections(deltas, logits, table_lookups(anchors, LEVEL_SIZES), LEVEL_SIZES, HEIGHT, WIDTH,
                                 pre_nms_topk=TOPK, max_detections=20)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, NUM_CLASSES]),
                                  tf.TensorSpec([None, 4]), tf.TensorSpec([3], tf.int32)])
    def decode(deltas, logits, anchors, sizes):
        runtime_sizes = [sizes[0], sizes[1], sizes[2]]
        return decode_detections(deltas, logits, table_lookups(anchors, runtime_sizes), runtime_sizes, HEIGHT,
                                 WIDTH, pre_nms_topk=TOPK, max_detections=20)

    got = decode(deltas, logits, anchors, tf.constant(LEVEL_SIZES))
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-5, err_msg=key)
