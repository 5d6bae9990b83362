from keras_fpn.utils.batchnorm import freeze_batchnorm, precise_batchnorm, set_batchnorm_momentum
from keras_fpn.utils.flops import count_flops

__all__ = ["count_flops", "freeze_batchnorm", "precise_batchnorm", "set_batchnorm_momentum"]
