"""keras_fpn: Feature Pyramid Networks and RetinaNet for Keras 3."""

from keras_fpn import models, training
from keras_fpn.backbones.fpn_backbone import FPNBackbone
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.detection.retinanet import RetinaNet
from keras_fpn.export.saved_model import export_saved_model
from keras_fpn.layers.application_preprocessing import ApplicationPreprocessing
from keras_fpn.layers.feature_pyramid import FeaturePyramid
from keras_fpn.version import __version__

__all__ = ["ApplicationPreprocessing", "FPNBackbone", "FeaturePyramid", "PredictionHead", "RetinaNet",
           "export_saved_model", "models", "training", "__version__"]
