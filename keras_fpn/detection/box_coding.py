"""Matching anchors to ground truth and coding boxes as deltas, on top of `keras.utils.bounding_boxes`."""

import math

from keras import ops
from keras.utils import bounding_boxes


# The largest log-scale a decoded box may take relative to its anchor: a box at most 1000/16 = 62.5 times its
# anchor's height or width. The value and its form are torchvision's (`_utils.BoxCoder`, bbox_xform_clip) and
# detectron2's (`Box2BoxTransform`, scale_clamp). Without it a delta of 5 gives a box 148x its anchor, and past
# ~88 float32 `exp` overflows to inf, which then reaches NMS and the GIoU loss.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def encode_deltas(anchors, boxes, box_weights):
    """Box regression targets of `boxes` relative to `anchors` (both pixel `xyxy`).

    Keras's `encode_box_to_deltas` with `variance = 1 / box_weights`: `[(y - ya) / ha, (x - xa) / wa,
    log(h / ha), log(w / wa)]`, each multiplied by its weight.
    """
    variance = [1.0 / w for w in box_weights]
    return bounding_boxes.encode_box_to_deltas(
        anchors, boxes, anchor_format="xyxy", box_format="xyxy", variance=variance
    )


def decode_deltas(anchors, deltas, box_weights, max_log_scale=MAX_LOG_SCALE):
    """Inverse of `encode_deltas`: pixel `xyxy` boxes from `[..., 4]` deltas.

    The height and width deltas are clamped so that no box exceeds `exp(max_log_scale)` times its anchor's size
    (62.5x by default, `MAX_LOG_SCALE`); boxes always stay finite. Only the upper end is clamped, as in
    torchvision and detectron2: a very negative delta gives a box of nearly zero size, which is finite.
    """
    variance = [1.0 / w for w in box_weights]
    deltas = ops.cast(deltas, "float32")
    # After the variance is applied, delta_h and delta_w are log-scales: clamp them at max_log_scale.
    limits = ops.convert_to_tensor([math.inf, math.inf, max_log_scale * box_weights[2],
                                    max_log_scale * box_weights[3]], "float32")
    deltas = ops.minimum(deltas, limits)
    return bounding_boxes.decode_deltas_to_boxes(
        anchors, deltas, anchor_format="xyxy", box_format="xyxy", variance=variance
    )


def decode_selected(anchors_at, deltas, index, box_weights):
    """The boxes of `deltas [batch, N, 4]` at `index [batch, k]` (a top-k's winners) against their anchors:
    `[batch, k, 4]` pixel `xyxy`. `anchors_at` maps the indices to their anchors (`AnchorGenerator.lookups`, or
    `keras_fpn.detection.anchors.table_lookups` over a table), so only the k anchors are computed and decoded."""
    selected_deltas = ops.take_along_axis(deltas, index[..., None], axis=1)
    return decode_deltas(anchors_at(index), selected_deltas, box_weights)


def pairwise_iou(anchors, boxes):
    """IoU `[batch, num_anchors, num_boxes]` of `anchors [N, 4]` with `boxes [batch, M, 4]`, pixel `xyxy`."""
    return batched_iou(anchors[None], boxes)


def batched_iou(boxes_a, boxes_b):
    """IoU `[batch, N, M]` of `boxes_a [batch, N, 4]` with `boxes_b [batch, M, 4]`, pixel `xyxy` (each image's own
    boxes: the proposals of a two-stage detector against that image's ground truth). `boxes_a` may have batch 1
    (anchors shared by every image)."""
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    a, b = boxes_a[:, :, None, :], boxes_b[:, None, :, :]
    width = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    height = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    intersection = width * height
    union = area_a[:, :, None] + area_b[:, None, :] - intersection
    return intersection / ops.maximum(union, 1e-9)


def match_anchors(anchors, boxes, labels, positive_iou=0.5, negative_iou=0.4, allow_low_quality_matches=True):
    """Assigns each anchor a ground-truth box: positive, negative or ignored (RetinaNet's IoU rule).

    Args:
        anchors: `[N, 4]` pixel `xyxy`.
        boxes: `[batch, M, 4]` pixel `xyxy` ground truth, padded.
        labels: `[batch, M]` int, -1 marks padding.
        positive_iou: an anchor with IoU >= this with some box is positive.
        negative_iou: an anchor whose best IoU is < this is negative; in between it is ignored.
        allow_low_quality_matches: also make positive each box's best anchors (ties included), so every object
            gets at least one anchor even when no anchor reaches `positive_iou` (small objects).

    Returns:
        `(matched_index [batch, N] int, positive [batch, N] bool, negative [batch, N] bool)`.
    """
    valid = labels >= 0
    iou = pairwise_iou(anchors, boxes)
    iou = ops.where(valid[:, None, :], iou, -1.0)
    best_iou = ops.max(iou, axis=-1)
    matched_index = ops.argmax(iou, axis=-1)
    positive = best_iou >= positive_iou
    negative = (best_iou < negative_iou) & (best_iou >= 0.0)
    if allow_low_quality_matches:
        best_for_box = ops.max(iou, axis=1, keepdims=True)  # [batch, 1, M]
        is_best = (iou == best_for_box) & (best_for_box > 0.0) & valid[:, None, :]
        low_quality = ops.any(is_best, axis=-1)
        # The anchor's own best box may be another one; match it to the box it is best for.
        matched_index = ops.where(low_quality & ~positive, ops.argmax(ops.cast(is_best, "float32") * iou, -1),
                                  matched_index)
        positive = positive | low_quality
    # Images with no boxes: every anchor is negative.
    negative = (negative | ~ops.any(valid, axis=-1, keepdims=True)) & ~positive
    return matched_index, positive, negative
