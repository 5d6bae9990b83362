"""keras_fpn: Feature Pyramid Networks and RetinaNet for Keras 3."""

from keras_fpn.backbones.fpn_backbone import FPNBackbone
from keras_fpn.layers.application_preprocessing import ApplicationPreprocessing
from keras_fpn.layers.feature_pyramid import FeaturePyramid
from keras_fpn.version import __version__

__all__ = ["ApplicationPreprocessing", "FPNBackbone", "FeaturePyramid", "__version__"]
