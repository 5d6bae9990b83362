"""Backend-agnostic tensor helpers used by keras_fpn layers."""

from keras_fpn.ops.resize import resize_to

__all__ = ["resize_to"]
