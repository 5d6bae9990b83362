from keras_fpn.detection.anchors import AnchorGenerator
from keras_fpn.detection.faster_rcnn import FasterRCNN
from keras_fpn.detection.mask_head import MaskHead
from keras_fpn.detection.mask_rcnn import MaskRCNN
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.detection.retinanet import RetinaNet
from keras_fpn.detection.roi_heads import BoxHead, BoxPredictor
from keras_fpn.detection.rpn import RPNHead
from keras_fpn.ops.masks import paste_masks  # where 0.1.0 had it

__all__ = ["AnchorGenerator", "BoxHead", "BoxPredictor", "FasterRCNN", "MaskHead", "MaskRCNN", "PredictionHead",
           "RPNHead", "RetinaNet", "paste_masks"]
