import re

import keras
import pytest

from keras_fpn import FPNBackbone, cli
from keras_fpn.utils import count_flops

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="FLOPs use TensorFlow's profiler")


def test_count_flops_of_one_conv():
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(images))
    assert count_flops(model, (8, 8, 3)) == 2 * 8 * 8 * 3 * 9 * 4


def test_pyramid_command(capsys):
    assert cli.main(["pyramid", "--backbone", "MobileNetV3Small", "--image-size", "96", "128",
                     "--num-channels", "16"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^3\s+8\s+\S+\s+\(1, 12, 16, \d+\)\s+\(1, 12, 16, 16\)", out, re.M), out
    assert re.search(r"^7\s+128\s+\(extra level\)\s+-\s+\(1, 1, 1, 16\)", out, re.M), out
    model = FPNBackbone("MobileNetV3Small", weights=None, num_channels=16)
    assert f"parameters: {model.count_params():,}" in out
    flops = float(re.search(r"GFLOPs at 96x128: ([\d.]+)", out).group(1))
    assert flops == pytest.approx(count_flops(model, (96, 128, 3)) / 1e9, abs=0.01) and flops > 0


def test_pyramid_command_reports_bad_backbone(capsys):
    assert cli.main(["pyramid", "--backbone", "ResNet51"]) == 2
    assert "Received backbone='ResNet51'" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "pyramid" in capsys.readouterr().out
