"""ResNet-50 in torchvision's layout, so that torchvision's (and detectron2's "pytorch-style") weights fit it.

`keras.applications.ResNet50` is the original Caffe ResNet ("ResNet v1"): each bottleneck strides on its first
1x1 conv. torchvision's ResNet ("ResNet v1.5") strides on the 3x3 conv instead, pads every strided conv by
PyTorch's symmetric `padding=k // 2` (Keras's "same" pads the bottom and right only when the input side is even),
and normalises its input with the ImageNet mean and standard deviation of RGB in [0, 1]. The two have the same
parameter shapes but compute different functions, so torchvision's weights cannot be loaded into
`keras.applications.ResNet50`; they load into this model.

Layer names follow torchvision's parameter names with `_` for `.` (`layer2_0_conv2` holds
`layer2.0.conv2.weight`), which keeps `keras_fpn.convert` a mechanical mapping. Every block's output is a layer
named `layer{i}_{j}_out`, so `FPNBackbone` finds the stage outputs C2-C5 (`layer1_2_out` ... `layer4_2_out`) by
their strides as it does for any `keras.applications` model.
"""

import keras

# torchvision.models.resnet50: Bottleneck blocks per stage, and each stage's width (the 3x3 conv's channels).
RESNET50_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
# torchvision.ops.misc.FrozenBatchNorm2d(eps=1e-5); torchvision overwrites it with 0.0 for the v1 COCO detectors
# (`overwrite_eps(model, 0.0)` in retinanet_resnet50_fpn, fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn), whose
# weights were trained with that value.
BATCHNORM_EPSILON = 1e-5


def _conv(x, filters, kernel_size, strides, name):
    """A bias-free conv padded as PyTorch pads (`kernel_size // 2` on every side)."""
    if kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="valid", use_bias=False,
                               kernel_initializer="he_normal", name=name)(x)


def _batchnorm(x, epsilon, name):
    # Frozen as torchvision's FrozenBatchNorm2d: not trainable, so Keras runs it in inference mode in training too.
    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=0.9, trainable=False, name=name)(x)


def _bottleneck(x, width, strides, downsample, epsilon, name):
    shortcut = x
    y = keras.layers.ReLU(name=f"{name}_relu1")(_batchnorm(_conv(x, width, 1, 1, f"{name}_conv1"), epsilon,
                                                           f"{name}_bn1"))
    y = keras.layers.ReLU(name=f"{name}_relu2")(_batchnorm(_conv(y, width, 3, strides, f"{name}_conv2"), epsilon,
                                                           f"{name}_bn2"))
    y = _batchnorm(_conv(y, width * EXPANSION, 1, 1, f"{name}_conv3"), epsilon, f"{name}_bn3")
    if downsample:
        shortcut = _batchnorm(_conv(x, width * EXPANSION, 1, strides, f"{name}_downsample_0"), epsilon,
                              f"{name}_downsample_1")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def TorchvisionResNet50(include_top=False, weights=None, input_shape=None, trainable_layers=3,
                        batchnorm_epsilon=BATCHNORM_EPSILON, name="torchvision_resnet50"):
    """ResNet-50 as torchvision builds it (`torchvision.models.resnet50`), without its classifier.

    Takes the `keras.applications` constructor arguments, so `FPNBackbone("TorchvisionResNet50")` and the zoo
    records use it as they use `"ResNet50"`. Its input is RGB normalised as torchvision normalises it
    (`ApplicationPreprocessing("torchvision")`, which `FPNBackbone` applies by itself).

    Args:
        include_top: must be False (detection backbones have no classifier).
        weights: None (random) or the path of a `.weights.h5` file of this model. torchvision's own weights come
            in through `keras_fpn.convert` (`keras-fpn convert`), which needs no download here.
        input_shape: `(height, width, 3)`, default `(None, None, 3)`.
        trainable_layers: int 0-5, default 3 (torchvision's `trainable_backbone_layers` default for its
            detectors): how many stages, counted from `layer4` down to `conv1`, are trainable; the rest are frozen.
        batchnorm_epsilon: float, default 1e-5 (torchvision's FrozenBatchNorm2d). The BatchNorm layers are frozen
            (not trainable) in any case, as in torchvision's detectors.
        name: the model's name.

    Returns:
        A functional `keras.Model` from images `[batch, height, width, 3]` to the `layer4` map.
    """
    if include_top:
        raise ValueError("Received include_top=True; TorchvisionResNet50 is a detection backbone without the "
                         "ImageNet classifier: pass include_top=False.")
    if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= 5:
        raise ValueError(f"Received trainable_layers={trainable_layers!r}; expected an integer from 0 to 5.")
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(
            "TorchvisionResNet50 has no built-in 'imagenet' download: convert torchvision's weights with "
            "`keras-fpn convert` (see docs/zoo.md), or pass weights=None or a "
            ".weights.h5 file."
        )
    images = keras.Input(shape=tuple(input_shape) if input_shape is not None else (None, None, 3), name="images")
    x = _conv(images, 64, 7, 2, "conv1")
    x = keras.layers.ReLU(name="relu")(_batchnorm(x, batchnorm_epsilon, "bn1"))
    # Max pooling padded by 1 with zeros: the input is a ReLU output (>= 0), so a zero pad never wins the max and
    # this equals PyTorch's MaxPool2d(3, 2, padding=1), which pads with -inf.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (blocks, width) in enumerate(zip(RESNET50_BLOCKS, STAGE_WIDTHS), start=1):
        for block in range(blocks):
            strides = 2 if block == 0 and stage > 1 else 1
            x = _bottleneck(x, width, strides, downsample=block == 0, epsilon=batchnorm_epsilon,
                            name=f"layer{stage}_{block}")
    model = keras.Model(images, x, name=name)
    # torchvision's `_resnet_fpn_extractor`: only the last `trainable_layers` of layer4, layer3, layer2, layer1,
    # conv1 train.
    trainable = ("layer4", "layer3", "layer2", "layer1", "conv1")[:trainable_layers]
    for layer in model.layers:
        stage = layer.name.split("_", 1)[0]
        if isinstance(layer, keras.layers.Conv2D) and stage not in trainable:
            layer.trainable = False
    if weights is not None:
        model.load_weights(weights)
    return model
