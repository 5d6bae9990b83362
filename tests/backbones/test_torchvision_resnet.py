"""TorchvisionResNet50: torchvision's layout (stride on the 3x3 conv, padding 1/1), frozen BatchNorm, names."""

import keras
import numpy as np
import pytest

from keras_fpn import FPNBackbone
from keras_fpn.backbones.torchvision_resnet import TorchvisionResNet50
from keras_fpn.detection.detector import check_resize, range_size


@pytest.fixture(scope="module")
def resnet():
    return TorchvisionResNet50(input_shape=(None, None, 3))


def test_layout(resnet):
    assert resnet.get_layer("layer2_0_conv1").strides == (1, 1)  # keras.applications strides here
    assert resnet.get_layer("layer2_0_conv2").strides == (2, 2)  # torchvision strides here
    assert resnet.get_layer("layer2_0_downsample_0").strides == (2, 2)
    assert resnet.get_layer("layer2_0_conv2_pad").padding == ((1, 1), (1, 1))
    batchnorms = [layer for layer in resnet.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorms) == 53 and not any(layer.trainable for layer in batchnorms)
    assert batchnorms[0].epsilon == 1e-5
    # torchvision's trainable_backbone_layers=3: conv1 and layer1 frozen
    assert not resnet.get_layer("conv1").trainable and not resnet.get_layer("layer1_2_conv3").trainable
    assert resnet.get_layer("layer2_0_conv1").trainable
    # the same parameters as torchvision's resnet50 without fc (23,508,032), plus BatchNorm's two statistics
    assert resnet.count_params() == 23_508_032 + 2 * 26_560


def test_stage_outputs_and_preprocessing(resnet):
    model = FPNBackbone(resnet, preprocessing="torchvision", num_channels=8)
    assert model.stage_layers == {3: "layer2_3_out", 4: "layer3_5_out", 5: "layer4_2_out"}
    pyramid = model(np.zeros((1, 97, 135, 3), "float32"))
    assert tuple(pyramid["P3"].shape) == (1, 13, 17, 8) and tuple(pyramid["P7"].shape) == (1, 1, 2, 8)
    np.testing.assert_allclose(model.pad_value, [123.675, 116.28, 103.53])
    preprocessing = model.get_layer("preprocessing")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocessing(np.full((1, 1, 1, 3), model.pad_value))),
                               0.0, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="include_top=False"):
        TorchvisionResNet50(include_top=True)
    with pytest.raises(ValueError, match="keras-fpn convert"):
        TorchvisionResNet50(weights="imagenet")
    with pytest.raises(ValueError, match="trainable_layers=6"):
        TorchvisionResNet50(trainable_layers=6)


def test_resize_rule():
    """torchvision's GeneralizedRCNNTransform: scale = min(min / short, max / long), sides floored."""
    assert range_size(97, 135, 160, 256) == (160, 222)  # 135 * 160 / 97 = 222.7
    assert range_size(480, 2000, 800, 1333) == (319, 1333)  # the long side bounds it
    dynamic = range_size(keras.ops.convert_to_tensor(97), keras.ops.convert_to_tensor(135), 160, 256)
    assert [int(keras.ops.convert_to_numpy(side)) for side in dynamic] == [160, 222]
    with pytest.raises(ValueError, match="expected both or neither"):
        check_resize(None, 800, None)
    with pytest.raises(ValueError, match="Received size_divisible=0"):
        check_resize(0, None, None)
