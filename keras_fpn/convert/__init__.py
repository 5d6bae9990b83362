"""Weights from other frameworks, converted into keras_fpn models: `from_torchvision`."""

from keras_fpn.convert.torchvision import TORCHVISION_MODELS, from_torchvision, load_state_dict, parameter_shapes

__all__ = ["TORCHVISION_MODELS", "from_torchvision", "load_state_dict", "parameter_shapes"]
