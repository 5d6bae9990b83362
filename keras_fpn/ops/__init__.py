"""Backend-agnostic tensor helpers used by keras_fpn layers and detectors."""

from keras_fpn.ops.boxes import clip_boxes, to_original
from keras_fpn.ops.masks import paste_masks
from keras_fpn.ops.resize import resize_to

__all__ = ["clip_boxes", "paste_masks", "resize_to", "to_original"]
