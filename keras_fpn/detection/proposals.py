"""Region proposals from RPN outputs: per-level top-k, box decoding, NMS within each level, per-image top-k.

The FPN paper's RPN proposals as torchvision's `RegionProposalNetwork.filter_proposals` and detectron2's
`find_top_rpn_proposals` make them. NMS by `keras_fpn.detection.nms.detection_nms` (TensorFlow's combined NMS on
that backend, `keras.ops` elsewhere).
"""

from keras import ops

from keras_fpn.detection.box_coding import decode_selected
from keras_fpn.detection.nms import detection_nms
from keras_fpn.ops.boxes import clip_boxes


def generate_proposals(objectness, deltas, anchors, level_sizes, image_height, image_width, pre_nms_topk=1000,
                       post_nms_topk=1000, nms_iou_threshold=0.7, min_size=0.0, box_weights=(1.0, 1.0, 1.0, 1.0)):
    """Proposals for each image.

    For each level the `pre_nms_topk` anchors of highest objectness are decoded (deltas clamped as everywhere in
    keras_fpn) and clipped to the image; boxes narrower or lower than `min_size` pixels are dropped. NMS at
    `nms_iou_threshold` then runs within each level (a box never suppresses one of another level, as in
    torchvision and detectron2), and the `post_nms_topk` best of all levels are kept.

    Args:
        objectness: `[batch, N]` logits. deltas: `[batch, N, 4]`.
        anchors: one function per level mapping indices into that level's anchors to pixel `xyxy` anchors
            (`AnchorGenerator.lookups`; `keras_fpn.detection.anchors.table_lookups` over an `[N, 4]` table).
        level_sizes: list of ints (or scalar tensors), anchors per level in order.
        image_height, image_width: the size boxes are clipped to.

    Returns:
        `(boxes [batch, post_nms_topk, 4] pixel xyxy, scores [batch, post_nms_topk] objectness probabilities,
        valid [batch, post_nms_topk] bool)`; invalid rows (fewer proposals survived) are zero boxes.
    """
    objectness = ops.cast(objectness, "float32")
    deltas = ops.cast(deltas, "float32")
    batch = ops.shape(objectness)[0]
    height, width = ops.cast(image_height, "float32"), ops.cast(image_width, "float32")
    boxes, scores, levels = [], [], []
    start = 0
    for index, (anchors_at, size) in enumerate(zip(anchors, level_sizes)):
        level_logits = objectness[:, start:start + size]
        if isinstance(size, int):
            k = min(pre_nms_topk, size)
        else:  # a runtime size: pad so top-k always finds k entries; the padding never survives
            k = pre_nms_topk
            level_logits = ops.pad(level_logits, [[0, 0], [0, k]], constant_values=-1e9)
        top_logits, top_index = ops.top_k(level_logits, k=k)
        top_index = ops.minimum(top_index, size - 1)
        level_boxes = decode_selected(anchors_at, deltas[:, start:start + size], top_index, box_weights)
        level_boxes = clip_boxes(level_boxes, height, width)
        probability = ops.sigmoid(top_logits)
        large = ((level_boxes[..., 2] - level_boxes[..., 0]) >= min_size) & (
            (level_boxes[..., 3] - level_boxes[..., 1]) >= min_size) & (top_logits > -1e8)
        boxes.append(level_boxes)
        scores.append(ops.where(large, probability, 0.0))
        levels.append(ops.full((batch, k), index, "int32"))
        start += size
    boxes, scores = ops.concatenate(boxes, axis=1), ops.concatenate(scores, axis=1)
    # Each level is a "class" of the NMS, so it never compares boxes of two levels; a score of 0 (a dropped box) is
    # below the threshold.
    kept = detection_nms(boxes, scores, ops.concatenate(levels, axis=1), len(level_sizes),
                         max_detections=post_nms_topk, iou_threshold=nms_iou_threshold, score_threshold=1e-12)
    valid = ops.arange(post_nms_topk)[None, :] < kept["num_detections"][:, None]
    return kept["boxes"], kept["scores"], valid
