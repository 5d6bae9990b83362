"""keras_fpn: Feature Pyramid Networks, RetinaNet, Faster R-CNN and Mask R-CNN for Keras 3.

Importing the package imports its public API, which registers every layer and model with Keras's serialization:
`keras.saving.load_model` then finds them after a plain `import keras_fpn` (Keras imports modules by name only for
its own packages). The `keras-fpn` command defers this import (keras_fpn_entry_point.py), so that `--help` answers
before TensorFlow starts.
"""

from keras_fpn.version import __version__  # isort: skip (first: light, and read by the modules below)

from keras_fpn.layers.application_preprocessing import ApplicationPreprocessing
from keras_fpn.backbones.fpn_backbone import FPNBackbone
from keras_fpn.detection.faster_rcnn import FasterRCNN
from keras_fpn.layers.feature_pyramid import FeaturePyramid
from keras_fpn.detection.mask_rcnn import MaskRCNN
from keras_fpn.detection.prediction_head import PredictionHead
from keras_fpn.detection.retinanet import RetinaNet
from keras_fpn.segmentation.semantic_fpn import SemanticFPN
from keras_fpn.segmentation.unet import UNet
from keras_fpn.export.saved_model import export_saved_model
from keras_fpn import (
    convert,
    datasets,
    detection,
    evaluation,
    models,
    ops,
    segmentation,
    training,
    utils,
    visualization,
)

__all__ = [
    "ApplicationPreprocessing",
    "FPNBackbone",
    "FasterRCNN",
    "FeaturePyramid",
    "MaskRCNN",
    "PredictionHead",
    "RetinaNet",
    "SemanticFPN",
    "UNet",
    "__version__",
    "convert",
    "datasets",
    "detection",
    "evaluation",
    "export_saved_model",
    "models",
    "ops",
    "segmentation",
    "training",
    "utils",
    "visualization",
]
