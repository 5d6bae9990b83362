"""keras_fpn: Feature Pyramid Networks, RetinaNet, Faster R-CNN and Mask R-CNN for Keras 3."""

import importlib
import os
import sys

from keras_fpn.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "ApplicationPreprocessing": "keras_fpn.layers.application_preprocessing",
    "FPNBackbone": "keras_fpn.backbones.fpn_backbone",
    "FasterRCNN": "keras_fpn.detection.faster_rcnn",
    "FeaturePyramid": "keras_fpn.layers.feature_pyramid",
    "MaskRCNN": "keras_fpn.detection.mask_rcnn",
    "PredictionHead": "keras_fpn.detection.prediction_head",
    "RetinaNet": "keras_fpn.detection.retinanet",
    "SemanticFPN": "keras_fpn.segmentation.semantic_fpn",
    "UNet": "keras_fpn.segmentation.unet",
    "convert": "keras_fpn.convert",
    "datasets": "keras_fpn.datasets",
    "detection": "keras_fpn.detection",
    "evaluation": "keras_fpn.evaluation",
    "export_saved_model": "keras_fpn.export.saved_model",
    "models": "keras_fpn.models",
    "ops": "keras_fpn.ops",
    "segmentation": "keras_fpn.segmentation",
    "training": "keras_fpn.training",
    "utils": "keras_fpn.utils",
    "visualization": "keras_fpn.visualization",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_fpn' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def _import_all():
    """Imports every public name, which also registers the layers and models with Keras's serialization, so
    `keras.saving.load_model` finds them after a plain `import keras_fpn`."""
    for name in _EXPORTS:
        __getattr__(name)


def _started_as_command_line():
    """True in the `keras-fpn` command (or `python -m keras_fpn.cli`): it imports TensorFlow only for the
    commands that need it, so that `--help` and `models` answer at once (the CLI then calls `_import_all`)."""
    argv = getattr(sys, "orig_argv", None) or getattr(sys, "argv", None) or [""]
    return os.path.basename(sys.argv[0] if sys.argv else "") == "keras-fpn" or "keras_fpn.cli" in argv


if not _started_as_command_line():
    _import_all()
