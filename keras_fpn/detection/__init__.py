from keras_fpn.detection.anchors import AnchorGenerator
from keras_fpn.detection.faster_rcnn import FasterRCNN
from keras_fpn.detection.mask_rcnn import MaskRCNN, paste_masks
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.detection.retinanet import RetinaNet

__all__ = ["AnchorGenerator", "FasterRCNN", "MaskRCNN", "PredictionHead", "RetinaNet", "paste_masks"]
