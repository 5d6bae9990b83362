"""Box-relative instance masks pasted into their images (what evaluation, pictures and clients do with
`MaskRCNN.predict`'s masks)."""

import numpy as np


PASTE_CONVENTIONS = ("keras_fpn", "torchvision")


def paste_masks(masks, boxes, height, width, threshold=0.5, convention="keras_fpn"):
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
        convention: `"keras_fpn"` (default: as above, the box exactly) or `"torchvision"` (its
            `paste_masks_in_image`: the mask padded by one pixel and its box grown to match, the box's corners
            truncated to integers, the padded mask resized to the box's pixels inclusive of both corners;
            converted torchvision models' masks agree with torchvision's this way).

    Returns:
        `[batch, N, height, width]` (`[N, height, width]` for one image's masks): uint8 0/1, or float32
        probabilities when `threshold` is None.
    """
    import tensorflow as tf

    masks = masks if hasattr(masks, "shape") else np.asarray(masks, np.float32)
    boxes = boxes if hasattr(boxes, "shape") else np.asarray(boxes, np.float32)
    mask_rank, box_rank = len(masks.shape), len(boxes.shape)
    if (mask_rank, box_rank) == (3, 2):  # one image's masks
        return paste_masks(masks[None], boxes[None], height, width, threshold, convention)[0]
    if (mask_rank, box_rank) != (4, 3):
        raise ValueError(f"Received masks of rank {mask_rank} and boxes of rank {box_rank}; expected masks "
                         "[batch, N, S, S] with boxes [batch, N, 4], or one image's masks [N, S, S] with boxes "
                         "[N, 4].")
    if convention not in PASTE_CONVENTIONS:
        raise ValueError(f"Received convention={convention!r}; expected one of {PASTE_CONVENTIONS}.")
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    batch, count, size = tf.shape(masks)[0], tf.shape(masks)[1], masks.shape[-1]
    flat = tf.pad(tf.reshape(masks, [-1, size, size, 1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
    if convention == "torchvision":
        pasted = _paste_torchvision(flat, tf.reshape(boxes, [-1, 4]), size, height, width)
        pasted = tf.reshape(pasted, [batch, count, height, width])
        return pasted if threshold is None else tf.cast(pasted >= threshold, tf.uint8)
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


def _paste_torchvision(padded, boxes, size, height, width):
    """torchvision's pasting of `padded` `[N, S + 2, S + 2, 1]` masks into `[N, height, width]` by `boxes [N, 4]`:
    the box grown by `(S + 2) / S` about its centre, its corners truncated to integers `(x0, y0, x1, y1)`, and the
    padded mask resized (bilinear, half-pixel centres) to the `(x1 - x0 + 1) x (y1 - y0 + 1)` pixels from `x0, y0`."""
    import tensorflow as tf

    scale = (size + 2.0) / size
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    half_w, half_h = (x2 - x1) * 0.5 * scale, (y2 - y1) * 0.5 * scale
    centre_x, centre_y = (x2 + x1) * 0.5, (y2 + y1) * 0.5
    x0, x1 = tf.cast(centre_x - half_w, tf.int32), tf.cast(centre_x + half_w, tf.int32)  # truncated, as .to(int64)
    y0, y1 = tf.cast(centre_y - half_h, tf.int32), tf.cast(centre_y + half_h, tf.int32)
    box_w = tf.cast(tf.maximum(x1 - x0 + 1, 1), tf.float32)
    box_h = tf.cast(tf.maximum(y1 - y0 + 1, 1), tf.float32)
    x0f, y0f = tf.cast(x0, tf.float32), tf.cast(y0, tf.float32)

    def to_mask(pixel, start, extent):  # image pixel -> index in the padded mask (half-pixel centres)
        return (pixel - start + 0.5) * (size + 2.0) / extent - 0.5

    first_y, last_y = to_mask(0.0, y0f, box_h), to_mask(tf.cast(height, tf.float32) - 1.0, y0f, box_h)
    first_x, last_x = to_mask(0.0, x0f, box_w), to_mask(tf.cast(width, tf.float32) - 1.0, x0f, box_w)
    extent = float(size + 1)  # the padded mask's last index
    crop_boxes = tf.stack([first_y / extent, first_x / extent, last_y / extent, last_x / extent], axis=-1)
    pasted = tf.image.crop_and_resize(padded, crop_boxes, tf.range(tf.shape(boxes)[0]), [height, width],
                                      method="bilinear", extrapolation_value=0.0)[..., 0]
    rows, columns = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows <= y1[:, None, None])
              & (columns >= x0[:, None, None]) & (columns <= x1[:, None, None]))
    return tf.where(inside, pasted, 0.0)
