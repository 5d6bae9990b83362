from keras_fpn.backbones.applications import application_names, get_application
from keras_fpn.backbones.fpn_backbone import FPNBackbone
from keras_fpn.backbones.stage_outputs import find_stage_outputs, measure_strides

__all__ = ["FPNBackbone", "application_names", "find_stage_outputs", "get_application", "measure_strides"]
