"""RoIAlign: the FPN paper's level assignment (Eq. 1) and the multilevel bilinear pooling against a NumPy reference,
both implementations (TensorFlow's crop_and_resize and the keras.ops gathers that exports and JAX use)."""

import math

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the crop_and_resize implementation is TensorFlow's")

from keras_fpn.detection.roi_align import multilevel_roi_align, roi_levels  # noqa: E402


def test_roi_levels_follow_equation_one_and_clamp():
    sides = [112, 224, 448, 32, 10, 0, 2000, 223, 225]
    boxes = np.array([[5, 7, 5 + side, 7 + side] for side in sides], np.float32)
    # floor(4 + log2(side / 224)): 112 -> 3, 224 -> 4, 448 -> 5; 32 -> 1.19 -> clamped to 2; 2000 -> 7.2 -> 5;
    # 223 -> 3.99 -> 3; 225 -> 4.006 -> 4; an empty box -> clamped to 2.
    np.testing.assert_array_equal(np.asarray(roi_levels(boxes, 2, 5)), [3, 4, 5, 2, 2, 2, 5, 3, 4])
    # sqrt(w h): a 112 x 448 box has the area of a 224 square.
    assert int(np.asarray(roi_levels(np.array([[0, 0, 112, 448]], np.float32), 2, 5))[0]) == 4
    np.testing.assert_array_equal(np.asarray(roi_levels(boxes[:3], 4, 4)), [4, 4, 4])


# -- RoIAlign against a NumPy reference ---------------------------------------------------------------------------

def _bilinear(feature, y, x):
    """torchvision's `bilinear_interpolate` for one point of an [H, W, C] map (aligned RoIAlign's sampling)."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * feature[y0, x0] + (1 - ly) * lx * feature[y0, x1]
            + ly * (1 - lx) * feature[y1, x0] + ly * lx * feature[y1, x1])


def _roi_align_reference(feature, box, stride, pool_size, sampling_ratio):
    x1, y1, x2, y2 = np.asarray(box, np.float64) / stride - 0.5
    bin_h, bin_w = (y2 - y1) / pool_size, (x2 - x1) / pool_size
    out = np.zeros((pool_size, pool_size, feature.shape[-1]))
    for i in range(pool_size):
        for j in range(pool_size):
            for iy in range(sampling_ratio):
                for ix in range(sampling_ratio):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    x = x1 + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                    out[i, j] += _bilinear(feature, y, x)
    return out / sampling_ratio ** 2


@pytest.mark.parametrize("implementation", ["crop_and_resize", "gather"])
def test_multilevel_roi_align_matches_a_numpy_bilinear_reference(implementation):
    rng = np.random.default_rng(0)
    image = 256
    features = {f"P{level}": rng.normal(size=(2, image // 2 ** level, image // 2 ** level, 3)).astype(np.float32)
                for level in range(2, 6)}
    boxes = np.array([
        [[0, 0, 40, 40],  # at the top-left border
         [200, 210, 256, 256],  # at the bottom-right border
         [100.3, 50.7, 101.1, 51.2],  # smaller than one cell of P2
         [60, 60, 60, 60],  # no area
         [-30, -20, 90, 100],  # partly outside the image
         [10, 20, 250, 240]],  # large: P4
        [[5, 5, 117, 117],  # 112 px: P3
         [16, 30, 240, 254],  # 224 px: P4
         [0, 0, 256, 256],
         [33.5, 12.25, 97.75, 200.5],
         [250, 250, 300, 300],  # mostly outside
         [1, 2, 3, 4]]], np.float32)
    pooled = np.asarray(multilevel_roi_align(features, boxes, 2, 5, pool_size=7, sampling_ratio=2,
                                             implementation=implementation))
    levels = np.asarray(roi_levels(boxes, 2, 5))
    assert set(levels.ravel()) >= {2, 3, 4}
    for b in range(2):
        for r in range(boxes.shape[1]):
            level = int(levels[b, r])
            expected = _roi_align_reference(features[f"P{level}"][b], boxes[b, r], 2 ** level, 7, 2)
            np.testing.assert_allclose(pooled[b, r], expected, atol=1e-4, err_msg=f"image {b}, box {r}")
