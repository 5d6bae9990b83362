"""Per-class non-maximum suppression in `keras.ops`: static shapes, jit-able, the same on every Keras backend.

`keras.ops` has no NMS (Keras 3.15), and TensorFlow's `tf.image.combined_non_max_suppression` runs on the
TensorFlow backend only. Detections need at most `max_detections` kept boxes per image, so greedy NMS here runs
exactly that many steps, each over all candidates at once: pick every image's best remaining candidate, keep it if
it scores above the threshold, and remove the candidates of its class that overlap it by more than the IoU
threshold. That is `max_detections x candidates` IoUs per image and no `candidates x candidates` matrix, and the
loop has a fixed trip count, so XLA compiles it once (`ops.fori_loop`: `jax.lax.fori_loop` under JAX).

The result equals TensorFlow's combined NMS with `pad_per_class=False` (per-class greedy NMS, then the best
`max_detections` over all classes; a candidate is kept when its score is above `score_threshold` and suppressed when
its IoU with a kept box of its class is above `iou_threshold`), up to the order of exactly tied scores
(tests/ops/test_nms.py compares them).
"""

import keras
from keras import ops

from keras_fpn.detection.box_coding import batched_iou
from keras_fpn.ops.portable import is_portable


def class_nms(boxes, scores, classes, max_detections=100, iou_threshold=0.5, score_threshold=0.05):
    """Greedy per-class NMS of `[batch, K]` scored candidates, each of one class.

    Args:
        boxes: `[batch, K, 4]` float, pixel xyxy (any corner order of the same kind for both axes works: IoU is
            symmetric in x and y).
        scores: `[batch, K]` float.
        classes: `[batch, K]` int: candidates of different classes never suppress each other (pass zeros for
            class-agnostic NMS, or a level index for NMS within each level).
        max_detections: int, kept boxes per image at most.
        iou_threshold: float, a candidate overlapping a kept box of its class by more than this is removed.
        score_threshold: float, only candidates scoring above this are kept.

    Returns:
        dict: `boxes [batch, max_detections, 4]`, `scores [batch, max_detections]` (best first),
        `labels [batch, max_detections]` int32 (the kept candidates' classes, -1 past `num_detections`),
        `indices [batch, max_detections]` int32 (the kept candidates' positions, -1 past `num_detections`) and
        `num_detections [batch]` int32. Rows past `num_detections` hold boxes and scores 0.
    """
    boxes = ops.cast(boxes, "float32")
    scores = ops.cast(scores, "float32")
    classes = ops.cast(classes, "int32")
    count = ops.shape(scores)[1]
    remaining = ops.where(scores > score_threshold, scores, -float("inf"))
    positions = ops.arange(count, dtype="int32")[None, :]
    slots = ops.arange(max_detections, dtype="int32")[None, :]
    batch = ops.shape(scores)[0]
    kept = ops.full((batch, max_detections), -1, dtype="int32")

    def step(i, state):
        remaining, kept = state
        best = ops.cast(ops.argmax(remaining, axis=1), "int32")[:, None]  # [batch, 1]
        found = ops.take_along_axis(remaining, best, axis=1) > -float("inf")  # [batch, 1]
        best_box = ops.take_along_axis(boxes, best[..., None], axis=1)  # [batch, 1, 4]
        same_class = classes == ops.take_along_axis(classes, best, axis=1)
        overlap = batched_iou(best_box, boxes)[:, 0, :]  # [batch, K]
        suppressed = ((overlap > iou_threshold) & same_class) | (positions == best)
        remaining = ops.where(suppressed & found, -float("inf"), remaining)
        kept = ops.where((slots == i) & found, best, kept)
        return remaining, kept

    _, kept = ops.fori_loop(0, max_detections, step, (remaining, kept))
    valid = kept >= 0
    index = ops.maximum(kept, 0)
    kept_boxes = ops.where(valid[..., None], ops.take_along_axis(boxes, index[..., None], axis=1), 0.0)
    kept_scores = ops.where(valid, ops.take_along_axis(scores, index, axis=1), 0.0)
    labels = ops.where(valid, ops.take_along_axis(classes, index, axis=1), -1)
    return {"boxes": kept_boxes, "scores": kept_scores, "labels": labels, "indices": kept,
            "num_detections": ops.sum(ops.cast(valid, "int32"), axis=1)}


def offset_nms(boxes, scores, classes, max_detections=100, iou_threshold=0.5, score_threshold=0.05):
    """Per-class NMS as one class-agnostic NMS per image, on boxes shifted apart by class so that boxes of
    different classes never overlap: torchvision's `batched_nms` "coordinate trick" (what it exports to ONNX).
    The NMS is TensorFlow's `NonMaxSuppressionV5`, which LiteRT runs as the builtin `NON_MAX_SUPPRESSION_V5` and
    tf2onnx converts to ONNX `NonMaxSuppression`. Same arguments and result as `class_nms` (TensorFlow only): the
    same detections as the combined NMS, up to ties and to the rounding of the shifted coordinates (1e-2 px at
    COCO's 91 classes and 1333-pixel images)."""
    import tensorflow as tf

    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    offset = tf.reduce_max(tf.abs(boxes)) + 1.0
    shifted = boxes + (tf.cast(classes, tf.float32) * offset)[..., None]

    def one_image(inputs):
        image_boxes, image_scores = inputs
        indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=image_boxes, scores=image_scores, max_output_size=max_detections, iou_threshold=iou_threshold,
            score_threshold=score_threshold, soft_nms_sigma=0.0, pad_to_max_output_size=True)
        return tf.where(tf.range(max_detections) < count, indices, -1)

    if shifted.shape[0] is not None:  # a fixed batch (LiteRT's): unrolled, no loop in the graph
        kept = tf.stack([one_image((shifted[i], scores[i])) for i in range(shifted.shape[0])])
    else:
        kept = tf.map_fn(one_image, (shifted, scores), fn_output_signature=tf.TensorSpec([max_detections], tf.int32))
    valid = kept >= 0
    index = tf.maximum(kept, 0)
    return {"boxes": tf.where(valid[..., None], tf.gather(boxes, index, batch_dims=1), 0.0),
            "scores": tf.where(valid, tf.gather(scores, index, batch_dims=1), 0.0),
            "labels": tf.where(valid, tf.gather(classes, index, batch_dims=1), -1),
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)}


def detection_nms(boxes, scores, classes=None, num_classes=None, max_detections=100, iou_threshold=0.5,
                  score_threshold=0.05):
    """Per-class NMS for detection decoding on any backend: TensorFlow's `combined_non_max_suppression` under the
    TensorFlow backend (much faster there than `class_nms`: `python benchmarks/nms_speed.py`; the figures
    are in README.md, "Backends"), `class_nms` elsewhere; both give the same detections
    (tests/ops/test_nms.py).

    Args:
        boxes, scores, classes: either candidates of one class each, `boxes [batch, K, 4]`, `scores [batch, K]`,
            `classes [batch, K]` int (with `num_classes`); or class-specific boxes `[batch, K, C, 4]` with
            `scores [batch, K, C]` and `classes=None` (Faster R-CNN's RoI head).

    Returns:
        dict: `boxes`, `scores`, `labels` (-1 past `num_detections`), `num_detections`, as `class_nms`.
    """
    class_specific = classes is None
    if keras.backend.backend() == "tensorflow" and not is_portable():
        import tensorflow as tf

        if not class_specific:
            scores = ops.one_hot(classes, num_classes) * ops.cast(scores, "float32")[..., None]
            boxes = boxes[:, :, None, :]
        # combined_non_max_suppression reads corners as (y1, x1, y2, x2); IoU is symmetric in x and y, so xyxy
        # boxes go through unchanged.
        nms_boxes, nms_scores, nms_classes, count = tf.image.combined_non_max_suppression(
            boxes, scores, max_output_size_per_class=max_detections, max_total_size=max_detections,
            iou_threshold=iou_threshold, score_threshold=score_threshold, pad_per_class=False, clip_boxes=False)
        count = ops.cast(count, "int32")
        valid = ops.arange(max_detections)[None, :] < count[:, None]
        labels = ops.where(valid, ops.cast(nms_classes, "int32"), -1)
        return {"boxes": nms_boxes, "scores": nms_scores, "labels": labels, "num_detections": count}
    if class_specific:
        batch, count, num_classes = ops.shape(scores)[0], ops.shape(scores)[1], scores.shape[2]
        boxes = ops.reshape(ops.broadcast_to(boxes, (batch, count, num_classes, 4)), (batch, -1, 4))
        classes = ops.broadcast_to(ops.arange(num_classes, dtype="int32")[None, None, :], (batch, count, num_classes))
        classes = ops.reshape(classes, (batch, -1))
        scores = ops.reshape(scores, (batch, -1))
    if is_portable():
        return offset_nms(boxes, scores, classes, max_detections, iou_threshold, score_threshold)
    detections = class_nms(boxes, scores, classes, max_detections, iou_threshold, score_threshold)
    del detections["indices"]
    return detections
