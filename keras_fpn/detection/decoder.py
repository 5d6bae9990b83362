"""Turning a dense detector's raw outputs (RetinaNet's) into detections: top-k per level, box decoding, per-class NMS.

Shared by `RetinaNet.predict_step` and the exported serving function, so both give the same detections.
"""

from keras import ops

from keras_fpn.detection.box_coding import decode_selected
from keras_fpn.detection.nms import detection_nms
from keras_fpn.ops.boxes import clip_boxes, has_area


def decode_detections(
    box_deltas,
    class_logits,
    anchors,
    level_sizes,
    image_height,
    image_width,
    box_weights=(1.0, 1.0, 1.0, 1.0),
    score_threshold=0.05,
    pre_nms_topk=1000,
    nms_iou_threshold=0.5,
    max_detections=100,
):
    """Detections from raw head outputs.

    For each level, the `pre_nms_topk` highest (anchor, class) scores are kept (after the score threshold), their
    deltas decoded against the anchors and clipped to the image; per-class NMS (`keras_fpn.detection.nms`:
    TensorFlow's combined NMS on that backend, `keras.ops` elsewhere) then keeps at most `max_detections` per
    image. Working on at most
    `levels x pre_nms_topk` candidates keeps decoding fast when scores are low everywhere.

    Args:
        box_deltas: `[batch, N, 4]` box head outputs.
        class_logits: `[batch, N, K]` classification logits.
        anchors: one function per level mapping indices into that level's anchors to pixel `xyxy` anchors
            (`AnchorGenerator.lookups`; `keras_fpn.detection.anchors.table_lookups` over an `[N, 4]` table).
        level_sizes: list of ints, anchors per level, in order (they add up to N).
        image_height, image_width: ints or scalar tensors, the size boxes are clipped to, or `[batch, 1]` tensors
            (each image's content size); boxes left under `MIN_BOX_SIZE` wide or high are dropped.

    Returns:
        dict with `boxes [batch, max_detections, 4]` (pixel `xyxy`), `scores [batch, max_detections]`,
        `labels [batch, max_detections]` int32 (-1 past `num_detections`), `num_detections [batch]` int32.
    """
    box_deltas = ops.cast(box_deltas, "float32")
    class_logits = ops.cast(class_logits, "float32")
    num_classes = int(class_logits.shape[-1])
    batch = ops.shape(class_logits)[0]
    candidate_boxes, candidate_scores, candidate_classes = [], [], []
    start = 0
    for anchors_at, size in zip(anchors, level_sizes):
        level_logits = class_logits[:, start : start + size]
        if isinstance(size, int):
            k = min(pre_nms_topk, size * num_classes)
        else:  # runtime level size: pad with anchors scoring ~0 (below any threshold) so top-k always has k entries
            k = pre_nms_topk
            level_logits = ops.pad(level_logits, [[0, 0], [0, k], [0, 0]], constant_values=-1e9)
        # The k best (anchor, class) pairs lie among the k anchors with the best class: each of those pairs' anchors
        # has a best class at least as good as the k-th best pair, and at most k anchors do. So top-k runs over
        # `anchors` and then `k x classes` values instead of `anchors x classes` (4.6M on P3 of a 640x640 image with
        # 80 classes; the decode's time before and after: benchmarks/README.md). Sigmoid is
        # monotonic, so selecting on logits is selecting on scores, and only the k winners are squashed.
        anchor_k = min(k, size) if isinstance(size, int) else k
        _, best_anchors = ops.top_k(ops.max(level_logits, axis=-1), k=anchor_k)
        shortlist = ops.take_along_axis(level_logits, best_anchors[..., None], axis=1)
        top_logits, top_index = ops.top_k(ops.reshape(shortlist, (batch, anchor_k * num_classes)), k=k)
        anchor_index = ops.take_along_axis(best_anchors, top_index // num_classes, axis=1)
        anchor_index = ops.minimum(anchor_index, size - 1)
        candidate_boxes.append(decode_selected(anchors_at, box_deltas[:, start : start + size],
                                               anchor_index, box_weights))
        candidate_scores.append(ops.sigmoid(top_logits))
        candidate_classes.append(top_index % num_classes)
        start += size
    boxes = clip_boxes(ops.concatenate(candidate_boxes, axis=1), image_height, image_width)
    # A box left without area by the clipping (it lay in the padding) is no detection: score 0 is below any
    # threshold, so it never takes a slot.
    scores = ops.where(has_area(boxes), ops.concatenate(candidate_scores, axis=1), 0.0)
    return detection_nms(boxes, scores,
                         ops.concatenate(candidate_classes, axis=1), num_classes, max_detections, nms_iou_threshold,
                         score_threshold)
