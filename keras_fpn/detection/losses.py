"""Detection losses, per element, anchor or box: sigmoid focal loss (RetinaNet's classification), smooth-L1 (box
regression in RetinaNet, the RPN and the Fast R-CNN head of FasterRCNN and MaskRCNN) and GIoU (RetinaNet's
`box_loss="giou"`). Each detector sums them and normalises the sums itself."""

import keras
from keras import ops

BOX_LOSSES = ("huber", "giou")


def focal_loss(targets, logits, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss `[..., K]` (Lin et al. 2017, eq. 5), alpha applied to positives and
    `1 - alpha` to negatives. Keras's `binary_focal_crossentropy` averages over the last axis; multiplying by K
    gives the per-class sum RetinaNet uses."""
    num_classes = ops.shape(logits)[-1]
    per_anchor = keras.losses.binary_focal_crossentropy(
        targets, logits, apply_class_balancing=True, alpha=alpha, gamma=gamma, from_logits=True
    )
    return per_anchor * ops.cast(num_classes, per_anchor.dtype)


def smooth_l1_loss(targets, deltas, delta=1.0 / 9):
    """Per-anchor smooth-L1 (Huber) loss summed over the 4 coordinates, `[...]`. With `beta = delta`,
    smooth-L1 is Huber / delta; Keras's `huber` averages over the last axis, hence the factor 4."""
    return keras.losses.huber(targets, deltas, delta=delta) * 4.0 / delta


def giou_loss(boxes_true, boxes_pred):
    """Per-box `1 - GIoU` (Rezatofighi et al. 2019) of pixel `xyxy` boxes, `[...]`."""
    area_true = (boxes_true[..., 2] - boxes_true[..., 0]) * (boxes_true[..., 3] - boxes_true[..., 1])
    area_pred = ops.maximum(boxes_pred[..., 2] - boxes_pred[..., 0], 0.0) * ops.maximum(
        boxes_pred[..., 3] - boxes_pred[..., 1], 0.0
    )
    lo = ops.maximum(boxes_true[..., :2], boxes_pred[..., :2])
    hi = ops.minimum(boxes_true[..., 2:], boxes_pred[..., 2:])
    wh = ops.maximum(hi - lo, 0.0)
    intersection = wh[..., 0] * wh[..., 1]
    union = area_true + area_pred - intersection
    iou = intersection / ops.maximum(union, 1e-7)
    enclosing_wh = ops.maximum(
        ops.maximum(boxes_true[..., 2:], boxes_pred[..., 2:]) - ops.minimum(boxes_true[..., :2], boxes_pred[..., :2]),
        0.0,
    )
    enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
    return 1.0 - (iou - (enclosing - union) / ops.maximum(enclosing, 1e-7))
