"""Mask R-CNN on the pyramid (He et al. 2017, arXiv 1703.06870): Faster R-CNN plus a mask head on the RoIs.

Defaults and sources (torchvision `models/detection/mask_rcnn.py` and `roi_heads.py`, detectron2
`Base-RCNN-FPN.yaml` / `MaskRCNNConvUpsampleHead`): RoIAlign 14x14 (sampling ratio 2) from the level Eq. 1 picks;
4 x (3x3 conv, 256 channels, ReLU), a 2x2 stride-2 transposed conv + ReLU, a 1x1 conv to one 28x28 mask per class;
trained on the positive RoIs with per-pixel sigmoid cross-entropy of the ground-truth class's mask, whose target is
the instance mask cropped to the RoI and resized to 28x28 (RoIAlign on the mask, thresholded at 0.5). TensorFlow
backend for everything past the forward pass.
"""

import keras
from keras import ops

from keras_fpn.detection.faster_rcnn import FasterRCNN
from keras_fpn.detection.roi_align import _sample_boxes, multilevel_roi_align, sample_regions
from keras_fpn.training.distribute import sum_over_replicas


@keras.saving.register_keras_serializable(package="keras_fpn")
class MaskHead(keras.layers.Layer):
    """`depth` x (3x3 conv + ReLU), a 2x2 stride-2 transposed conv + ReLU, and a 1x1 conv to `num_classes` mask
    logits: `[R, S, S, C]` pooled RoI features in, `[R, 2S, 2S, num_classes]` out."""

    def __init__(self, num_classes, filters=256, depth=4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.filters, self.depth = num_classes, filters, depth
        init = keras.initializers.HeNormal()  # detectron2's c2_msra_fill
        self.convs = [keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                                          dtype=self.dtype_policy, name=f"conv{index + 1}") for index in range(depth)]
        self.upsample = keras.layers.Conv2DTranspose(filters, 2, strides=2, activation="relu",
                                                     kernel_initializer=init, dtype=self.dtype_policy,
                                                     name="upsample")
        self.predictor = keras.layers.Conv2D(num_classes, 1, dtype=self.dtype_policy, name="predictor",
                                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = (*shape[:3], self.filters)
        self.upsample.build(shape)
        self.predictor.build((shape[0], None, None, self.filters))
        self.built = True

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.predictor(self.upsample(x))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "filters": self.filters, "depth": self.depth}


def mask_targets(masks, rois, gt_index, resolution):
    """Each RoI's target: its matched instance mask cropped to the RoI and resized to `resolution` squared.

    Args:
        masks: `[batch, M, H, W]` instance masks (0/1). rois: `[batch, R, 4]` pixel xyxy.
        gt_index: `[batch, R]` int, the mask of each RoI. resolution: int.

    Returns:
        float32 `[batch, R, resolution, resolution]` of 0 and 1: RoIAlign (one sample per output pixel, the
        half-pixel convention) of the mask, thresholded at 0.5, as detectron2 makes its targets.
    """
    if keras.backend.backend() != "tensorflow":
        return _mask_targets_gather(masks, rois, gt_index, resolution)
    import tensorflow as tf

    masks = tf.cast(masks, tf.float32)
    batch, count = tf.shape(masks)[0], tf.shape(masks)[1]
    height, width = tf.shape(masks)[2], tf.shape(masks)[3]
    flat = tf.reshape(masks, [-1, height, width, 1])
    flat = tf.pad(flat, [[0, 0], [1, 1], [1, 1], [0, 0]])  # outside the image the mask is 0
    rois = tf.cast(rois, tf.float32)
    num_rois = tf.shape(rois)[1]
    index = tf.reshape(tf.cast(gt_index, tf.int32) + tf.range(batch)[:, None] * count, [-1])
    boxes = _sample_boxes(tf.reshape(rois, [-1, 4]), 1.0, height, width, resolution, 1)
    crops = tf.image.crop_and_resize(flat, boxes, index, [resolution, resolution], method="bilinear")
    return tf.reshape(tf.cast(crops[..., 0] >= 0.5, tf.float32), [batch, num_rois, resolution, resolution])


def _mask_targets_gather(masks, rois, gt_index, resolution):
    """`mask_targets` in `keras.ops` (JAX): the same samples (one per output pixel, zero outside the image)."""
    masks = ops.cast(masks, "float32")
    batch, count, height, width = (ops.shape(masks)[i] for i in range(4))
    flat = ops.reshape(masks, (batch, -1, 1))
    gt_index = ops.cast(gt_index, "int32")
    size = ops.ones_like(gt_index)
    rois = ops.cast(rois, "float32") - 0.5  # pixel i is centred at i + 0.5 in image coordinates
    samples = sample_regions(flat, gt_index * height * width, size * height, size * width, rois, resolution,
                             border="zero")
    return ops.cast(samples[..., 0] >= 0.5, "float32")


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """Full-image binary masks from box-relative ones (what `MaskRCNN.predict` and the served `detection_masks`
    give).

    Each `[S, S]` mask covers its box; every image pixel whose centre lies in the box takes the mask's value there
    by bilinear interpolation (mask pixels centred at `(k + 0.5) / S` of the box, zero beyond the mask's edge, as
    torchvision's `paste_masks_in_image`), then `>= threshold`.

    Args:
        masks: `[batch, N, S, S]` probabilities. boxes: `[batch, N, 4]` pixel xyxy in the image.
        height, width: ints, the image size.
        threshold: float, default 0.5; None returns the interpolated probabilities.

    Returns:
        `[batch, N, height, width]`: uint8 0/1, or float32 probabilities when `threshold` is None.
    """
    import tensorflow as tf

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


@keras.saving.register_keras_serializable(package="keras_fpn")
class MaskRCNN(FasterRCNN):
    """Mask R-CNN: `FasterRCNN` plus a mask head.

    Args:
        num_classes: int.
        mask_pool_size: int, default 14, RoIAlign output of the mask head (its masks are twice this).
        mask_head_filters: int, default 256. mask_head_depth: int, default 4.
        **kwargs: `FasterRCNN` arguments.

    `fit(images, y)` with `y = {"boxes", "labels", "masks"}`, `masks` `[batch, num_boxes, H, W]` (uint8 or bool)
    aligned with `boxes` (`keras_fpn.datasets` readers and `detection_pipeline` carry them). `predict` adds
    `"masks"`: `[batch, max_detections, 2 * mask_pool_size, 2 * mask_pool_size]` probabilities relative to each
    detection's box; `keras_fpn.detection.paste_masks(masks, boxes, height, width)` gives full-image masks.
    """

    uses_masks = True

    def __init__(self, num_classes, mask_pool_size=14, mask_head_filters=256, mask_head_depth=4, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.mask_pool_size = mask_pool_size
        self.mask_head_filters = mask_head_filters
        self.mask_head_depth = mask_head_depth
        self.mask_resolution = 2 * mask_pool_size  # the instance's value shadows Detector's None
        self.mask_head = MaskHead(num_classes, mask_head_filters, mask_head_depth, name="mask_head")
        self.mask_head.build((None, mask_pool_size, mask_pool_size, self.backbone.num_channels))
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")

    def _mask_logits(self, y_pred, boxes):
        """Mask logits `[batch, R, 2P, 2P, num_classes]` of pixel xyxy `boxes [batch, R, 4]`."""
        pooled = multilevel_roi_align(y_pred, boxes, self.roi_min_level, self.roi_max_level, self.mask_pool_size,
                                      self.sampling_ratio)
        batch, count = ops.shape(boxes)[0], ops.shape(boxes)[1]
        size = self.mask_pool_size
        logits = self.mask_head(ops.reshape(pooled, (batch * count, size, size, -1)))
        return ops.reshape(ops.cast(logits, "float32"),
                           (batch, count, self.mask_resolution, self.mask_resolution, self.num_classes))

    def extra_losses(self, y, y_pred, rois, roi_labels, roi_valid, roi_gt_index):
        if not isinstance(y, dict) or "masks" not in y:
            raise ValueError(f"Received y with keys {sorted(y) if isinstance(y, dict) else type(y).__name__}; "
                             "MaskRCNN expects y = {'boxes', 'labels', 'masks'}: masks [batch, num_boxes, height, "
                             "width] aligned with the boxes (load the data with masks, e.g. load_shapes(..., "
                             "with_masks=True)).")
        # The positives come first: the mask head only needs the first max-positives RoIs of each image.
        count = max(int(self.roi_batch_size_per_image * self.roi_positive_fraction), 1)
        rois, labels, valid, gt_index = (t[:, :count] for t in (rois, roi_labels, roi_valid, roi_gt_index))
        positive = valid & (labels < self.num_classes)
        targets = mask_targets(y["masks"], rois, gt_index, self.mask_resolution)
        logits = self._mask_logits(y_pred, rois)
        class_index = ops.minimum(labels, self.num_classes - 1)[:, :, None, None, None]
        logits = ops.take_along_axis(logits, class_index, axis=-1)[..., 0]
        per_pixel = keras.losses.binary_crossentropy(targets[..., None], logits[..., None], from_logits=True)
        per_roi = ops.mean(per_pixel, axis=(2, 3))
        positive_f = ops.cast(positive, "float32")
        total = ops.maximum(sum_over_replicas(ops.sum(positive_f)), 1.0)
        return {"mask_loss": ops.sum(per_roi * positive_f) / total}

    def detect(self, images):
        detections, features = self.detect_with_features(images)
        logits = self._mask_logits(features, features["pixel_boxes"])
        labels = detections["labels"]
        class_index = ops.maximum(labels, 0)[:, :, None, None, None]
        masks = ops.sigmoid(ops.take_along_axis(logits, class_index, axis=-1)[..., 0])
        detections["masks"] = ops.where((labels >= 0)[:, :, None, None], masks, 0.0)
        return detections

    @classmethod
    def record_kwargs(cls, record):
        kwargs = super().record_kwargs(record)
        names = {"pool_size": "mask_pool_size", "filters": "mask_head_filters", "depth": "mask_head_depth"}
        for key, value in record.get("mask_head", {}).items():
            if key != "source":
                kwargs[names[key]] = value
        return kwargs

    def get_config(self):
        return {**super().get_config(), "mask_pool_size": self.mask_pool_size,
                "mask_head_filters": self.mask_head_filters, "mask_head_depth": self.mask_head_depth}
