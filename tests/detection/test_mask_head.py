"""The mask head through the shared layer harness (its targets and loss are checked in test_mask_rcnn.py)."""

import numpy as np

from keras_fpn.detection.mask_head import MaskHead
from tests.testing import run_layer_test


def test_mask_head_through_the_layer_harness():
    outputs = run_layer_test(MaskHead, {"num_classes": 3, "filters": 8, "depth": 2},
                             np.random.default_rng(0).normal(size=(2, 7, 7, 8)).astype("float32"),
                             expected_output_shape=(2, 14, 14, 3))
    assert np.isfinite(np.asarray(outputs)).all()
    # torchvision's v2 mask head: convs without bias, each followed by BatchNorm.
    run_layer_test(MaskHead, {"num_classes": 3, "filters": 8, "depth": 2, "norm": "batch", "norm_epsilon": 1e-5},
                   np.random.default_rng(0).normal(size=(2, 7, 7, 8)).astype("float32"),
                   expected_output_shape=(2, 14, 14, 3))
