"""The raccoon example (README's real-data figures) runs end to end, scaled down."""

import os
import re
import sys

import keras
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="decoding uses TensorFlow's NMS"),
]
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def test_raccoon_example_scaled_down(raccoon, tmp_path, capsys):
    sys.path.insert(0, EXAMPLES)
    try:
        import raccoon as example
    finally:
        sys.path.remove(EXAMPLES)
    assert example.main(["--data", raccoon, "--steps", "6", "--batch-size", "4", "--image-size", "128",
                         "--eval-every", "1", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    baseline = re.search(r"central 80% box baseline\s+([\d.]+)\s+([\d.]+)", out)
    assert baseline and 0.0 < float(baseline.group(2)) < 1.0, out  # the baseline is scored, not a constant
    assert re.search(r"trained RetinaNet\s+[\d.]+\s+[\d.]+", out) and "AP during training" in out
    assert (tmp_path / "detections.png").exists() and (tmp_path / "retinanet_raccoon.keras").exists()
