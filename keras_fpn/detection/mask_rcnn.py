"""Mask R-CNN on the pyramid (He et al. 2017, arXiv 1703.06870): Faster R-CNN plus a mask head on the RoIs
(`keras_fpn.detection.mask_head`: the layer, its targets and loss, with their defaults and sources)."""

import keras
from keras import ops

from keras_fpn.detection.checks import check_masks
from keras_fpn.detection.faster_rcnn import FasterRCNN, _built, _layer
from keras_fpn.detection.mask_head import MaskHead, mask_loss, mask_targets
from keras_fpn.ops.masks import PASTE_CONVENTIONS


@keras.saving.register_keras_serializable(package="keras_fpn")
class MaskRCNN(FasterRCNN):
    """Mask R-CNN: `FasterRCNN` plus a mask head.

    Args:
        num_classes: int.
        mask_pool_size: int, default 14, RoIAlign output of the mask head (its masks are twice this).
        mask_head_filters: int, default 256. mask_head_depth: int, default 4.
        mask_head_norm: None (default) or `"batch"` (torchvision's v2 model), at `head_norm_epsilon`.
        mask_paste: `"keras_fpn"` (default) or `"torchvision"`: how this model's box-relative masks are pasted
            into images by evaluation, `keras-fpn predict` and the pictures (`keras_fpn.ops.paste_masks`'s
            `convention`). Converted torchvision models use torchvision's, which their masks agree with.
        mask_head: None or a layer: pooled RoIs `[R, mask_pool_size, mask_pool_size, C]` -> mask logits
            `[R, 2 * mask_pool_size, 2 * mask_pool_size, num_classes]`. None builds `MaskHead(num_classes,
            mask_head_filters, mask_head_depth)`.
        **kwargs: `FasterRCNN` arguments (`rpn_head`, `box_head`, `box_predictor` among them).

    `fit(images, y)` with `y = {"boxes", "labels", "masks"}`, `masks` `[batch, num_boxes, H, W]` aligned with
    `boxes` (the images' `H x W`; uint8, integer or bool with nonzero marking the object, or float 0/1; anything else
    is a named error) (`keras_fpn.datasets` readers and `detection_pipeline` carry them). `predict` adds
    `"masks"`: `[batch, max_detections, 2 * mask_pool_size, 2 * mask_pool_size]` probabilities relative to each
    detection's box; `keras_fpn.ops.paste_masks(masks, boxes, height, width)` gives full-image masks.
    """

    uses_masks = True

    def __init__(self, num_classes, mask_pool_size=14, mask_head_filters=256, mask_head_depth=4, mask_head_norm=None,
                 mask_paste="keras_fpn", mask_head=None, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.mask_pool_size = mask_pool_size
        self.mask_head_filters = mask_head_filters
        self.mask_head_depth = mask_head_depth
        self.mask_head_norm = mask_head_norm
        if mask_paste not in PASTE_CONVENTIONS:
            raise ValueError(f"Received mask_paste={mask_paste!r}; expected one of {PASTE_CONVENTIONS}.")
        self.mask_paste = mask_paste
        pooled = (None, mask_pool_size, mask_pool_size, self.backbone.num_channels)
        mask_head = _built(_layer(mask_head) or MaskHead(
            num_classes, mask_head_filters, mask_head_depth, norm=mask_head_norm, norm_epsilon=self.head_norm_epsilon,
            name="mask_head"), pooled)
        self.mask_resolution = int(mask_head.compute_output_shape(pooled)[1])  # shadows Detector's None
        self.roi_heads.mask_head = mask_head
        self.roi_heads.mask_pool_size = mask_pool_size
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")

    @property
    def mask_head(self):
        """The mask head layer (`roi_heads.mask_head`; this name is also where 0.1.0 files keep its weights)."""
        return self.roi_heads.mask_head

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if isinstance(y, dict) and "masks" in y:  # one per box, the images' size, 0/1: named errors otherwise
            y = {**y, "masks": check_masks(y["masks"], y["boxes"], x)}
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def extra_losses(self, y, y_pred, rois, roi_labels, roi_valid, roi_gt_index):
        if not isinstance(y, dict) or "masks" not in y:
            raise ValueError(f"Received y with keys {sorted(y) if isinstance(y, dict) else type(y).__name__}; "
                             "MaskRCNN expects y = {'boxes', 'labels', 'masks'}: masks [batch, num_boxes, height, "
                             "width] aligned with the boxes (load the data with masks, e.g. load_shapes(..., "
                             "with_masks=True)).")
        # The positives come first: the mask head only needs the first max-positives RoIs of each image.
        count = max(int(self.roi_batch_size_per_image * self.roi_positive_fraction), 1)
        rois, labels, valid, gt_index = (t[:, :count] for t in (rois, roi_labels, roi_valid, roi_gt_index))
        targets = mask_targets(y["masks"], rois, gt_index, self.mask_resolution)
        return {"mask_loss": mask_loss(self.roi_heads.mask_logits(y_pred, rois), targets, labels, valid)}

    def detect(self, images, image_sizes=None):
        detections, features = self.detect_with_features(images, image_sizes)
        logits = self.roi_heads.mask_logits(features, features["pixel_boxes"])
        labels = detections["labels"]
        class_index = ops.maximum(labels, 0)[:, :, None, None, None]
        masks = ops.sigmoid(ops.take_along_axis(logits, class_index, axis=-1)[..., 0])
        detections["masks"] = ops.where((labels >= 0)[:, :, None, None], masks, 0.0)
        return detections

    def get_config(self):
        return {**super().get_config(), "mask_pool_size": self.mask_pool_size,
                "mask_head_filters": self.mask_head_filters, "mask_head_depth": self.mask_head_depth,
                "mask_head_norm": self.mask_head_norm, "mask_paste": self.mask_paste,
                "mask_head": keras.saving.serialize_keras_object(self.roi_heads.mask_head)}
