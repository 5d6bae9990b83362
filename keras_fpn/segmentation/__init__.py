"""Semantic segmentation on the pyramid: Panoptic FPN's semantic branch (`SemanticFPN`) and the U-Net decoder it
is measured against (`UNet`), over any `keras.applications` backbone."""

from keras_fpn.segmentation.segmenter import IGNORE_LABEL, Segmenter, segmentation_loss
from keras_fpn.segmentation.semantic_fpn import SemanticFPN, SemanticFPNHead
from keras_fpn.segmentation.unet import UNet, UNetDecoder

__all__ = ["IGNORE_LABEL", "Segmenter", "SemanticFPN", "SemanticFPNHead", "UNet", "UNetDecoder",
           "segmentation_loss"]
