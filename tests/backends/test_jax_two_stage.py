"""Faster R-CNN and Mask R-CNN under the JAX backend: fit and predict jit-compiled (proposals, RoIAlign, NMS and
mask targets in keras.ops), and a `.keras` file saved under JAX giving the same detections under TensorFlow.

Runs in the suite's JAX tier (`scripts/test.sh`); skipped under other backends.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's tests")

from keras_fpn import FasterRCNN, MaskRCNN  # noqa: E402
from keras_fpn.datasets import generate_shapes  # noqa: E402
from tests.testing import tiny_convnet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(backbone_weights=None, num_channels=16, head_dim=32, rpn_pre_nms_topk_train=200,
             rpn_post_nms_topk_train=100, rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50,
             roi_batch_size_per_image=32, seed=1)
TENSORFLOW_SIDE = """
import sys
import numpy as np
import keras, keras_fpn
model = keras.saving.load_model(sys.argv[1])
predictions = model.predict_on_batch(np.load(sys.argv[2]))
np.savez(sys.argv[3], **{key: np.asarray(value) for key, value in predictions.items()})
"""


def shapes(n=4, with_masks=False):
    generated = generate_shapes(n, 64, max_objects=3, seed=1, with_masks=with_masks)
    targets = {"boxes": generated[1], "labels": generated[2]}
    if with_masks:
        targets["masks"] = generated[3]
    return generated[0].astype("float32"), targets


@pytest.mark.parametrize("cls", [FasterRCNN, MaskRCNN])
def test_fit_predict_and_propose(cls):
    keras.utils.set_random_seed(0)
    model = cls(3, backbone=tiny_convnet(), **SMALL)
    model.compile(optimizer="adam")
    images, targets = shapes(with_masks=cls is MaskRCNN)
    history = model.fit(images, targets, batch_size=2, epochs=2, verbose=0).history
    assert model.jit_compile is True
    expected = {"rpn_objectness_loss", "rpn_box_loss", "classification_loss", "box_loss"}
    expected |= {"mask_loss"} if cls is MaskRCNN else set()
    assert expected <= set(history) and all(np.isfinite(values).all() for values in history.values())
    predictions = model.predict(images, batch_size=2, verbose=0)
    assert predictions["boxes"].shape == (4, 100, 4) and predictions["num_detections"].min() > 0
    if cls is MaskRCNN:
        assert predictions["masks"].shape == (4, 100, 28, 28)
    boxes, _, valid = model.propose(images[:2], post_nms_topk=20)
    assert boxes.shape == (2, 20, 4) and np.asarray(valid).any()


def test_saved_under_jax_gives_the_same_detections_under_tensorflow(tmp_path):
    keras.utils.set_random_seed(0)
    model = FasterRCNN(3, backbone=tiny_convnet(), **SMALL)
    model.compile(optimizer="adam")
    images, targets = shapes(8)
    model.fit(images, targets, batch_size=4, epochs=6, verbose=0)
    path, image_file = str(tmp_path / "frcnn.keras"), str(tmp_path / "images.npy")
    model.save(path)
    np.save(image_file, images[:4])
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_SIDE, path, image_file, str(tmp_path / "tf.npz")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    tensorflow, ours = np.load(str(tmp_path / "tf.npz")), model.predict_on_batch(images[:4])
    np.testing.assert_array_equal(tensorflow["num_detections"], ours["num_detections"])
    for i, count in enumerate(ours["num_detections"]):
        np.testing.assert_array_equal(tensorflow["labels"][i, :count], ours["labels"][i, :count])
        np.testing.assert_allclose(tensorflow["scores"][i, :count], ours["scores"][i, :count], atol=1e-4)
        np.testing.assert_allclose(tensorflow["boxes"][i, :count], ours["boxes"][i, :count], atol=1e-2)
