from keras_fpn.layers.feature_pyramid import FeaturePyramid

__all__ = ["FeaturePyramid"]
