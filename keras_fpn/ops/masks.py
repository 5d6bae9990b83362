"""Box-relative instance masks pasted into their images (what evaluation, pictures and clients do with
`MaskRCNN.predict`'s masks)."""

import numpy as np


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """Full-image binary masks from box-relative ones (what `MaskRCNN.predict` and the served `detection_masks`
    give).

    Each `[S, S]` mask covers its box; every image pixel whose centre lies in the box takes the mask's value there
    by bilinear interpolation (mask pixels centred at `(k + 0.5) / S` of the box, zero beyond the mask's edge, as
    torchvision's `paste_masks_in_image`), then `>= threshold`.

    Args:
        masks: `[batch, N, S, S]` probabilities, or one image's `[N, S, S]`. boxes: `[batch, N, 4]` (or `[N, 4]`)
            pixel xyxy in the image.
        height, width: ints, the image size.
        threshold: float, default 0.5; None returns the interpolated probabilities.

    Returns:
        `[batch, N, height, width]` (`[N, height, width]` for one image's masks): uint8 0/1, or float32
        probabilities when `threshold` is None.
    """
    import tensorflow as tf

    masks = masks if hasattr(masks, "shape") else np.asarray(masks, np.float32)
    boxes = boxes if hasattr(boxes, "shape") else np.asarray(boxes, np.float32)
    mask_rank, box_rank = len(masks.shape), len(boxes.shape)
    if (mask_rank, box_rank) == (3, 2):  # one image's masks
        return paste_masks(masks[None], boxes[None], height, width, threshold)[0]
    if (mask_rank, box_rank) != (4, 3):
        raise ValueError(f"Received masks of rank {mask_rank} and boxes of rank {box_rank}; expected masks "
                         "[batch, N, S, S] with boxes [batch, N, 4], or one image's masks [N, S, S] with boxes "
                         "[N, 4].")
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    batch, count, size = tf.shape(masks)[0], tf.shape(masks)[1], masks.shape[-1]
    flat = tf.pad(tf.reshape(masks, [-1, size, size, 1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
    x1, y1, x2, y2 = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=-1)
    box_w, box_h = tf.maximum(x2 - x1, 1e-6), tf.maximum(y2 - y1, 1e-6)

    def to_mask(pixel, start, extent):  # image pixel centre -> index in the padded mask
        return (pixel + 0.5 - start) / extent * size - 0.5 + 1.0

    first_y, last_y = to_mask(0.0, y1, box_h), to_mask(tf.cast(height, tf.float32) - 1.0, y1, box_h)
    first_x, last_x = to_mask(0.0, x1, box_w), to_mask(tf.cast(width, tf.float32) - 1.0, x1, box_w)
    extent = float(size + 1)  # the padded mask's last index
    crop_boxes = tf.stack([first_y / extent, first_x / extent, last_y / extent, last_x / extent], axis=-1)
    pasted = tf.image.crop_and_resize(flat, crop_boxes, tf.range(batch * count), [height, width],
                                      method="bilinear", extrapolation_value=0.0)
    pasted = tf.reshape(pasted[..., 0], [batch, count, height, width])
    return pasted if threshold is None else tf.cast(pasted >= threshold, tf.uint8)
