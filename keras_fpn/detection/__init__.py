from keras_fpn.detection.anchors import AnchorGenerator
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.detection.retinanet import RetinaNet

__all__ = ["AnchorGenerator", "PredictionHead", "RetinaNet"]
