"""The RetinaNet under the JAX backend: fit and predict jit-compiled (NMS in keras.ops), COCO evaluation, and a
`.keras` file saved under JAX that TensorFlow loads, predicts the same with, and exports as a SavedModel.

Runs in the suite's JAX tier (`scripts/test.sh`); skipped under other backends.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend's tests")

from keras_fpn.datasets import detection_pipeline, generate_shapes, load_shapes  # noqa: E402
from tests.testing import tiny_retinanet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Under TensorFlow, in a fresh process: load the file, predict, export the SavedModel and serve the same images.
TENSORFLOW_SIDE = """
import json, sys
import numpy as np
import keras, keras_fpn, tensorflow as tf
from keras_fpn.export import export_saved_model
model = keras.saving.load_model(sys.argv[1])
images = np.load(sys.argv[2])
predictions = model.predict_on_batch(images)
export_saved_model(model, sys.argv[3], version=1, image_size=(64, 64))
served = tf.saved_model.load(sys.argv[3] + "/1").signatures["image_tensor"](images=tf.constant(images.astype("uint8")))
np.savez(sys.argv[4], **{key: np.asarray(value) for key, value in predictions.items()},
         served_num_detections=served["num_detections"].numpy(), served_scores=served["detection_scores"].numpy())
print(json.dumps({"backend": keras.backend.backend(), "jit_compile": bool(model.jit_compile)}))
"""


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    images, boxes, labels = generate_shapes(16, 64, max_objects=3, seed=1)
    model = tiny_retinanet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(images.astype("float32"), {"boxes": boxes, "labels": labels}, batch_size=8, epochs=15,
                        verbose=0)
    return model, history.history, images.astype("float32")


def test_fit_runs_jit_compiled_and_learns(trained):
    model, history, _ = trained
    assert model.jit_compile is True  # Keras's default under JAX: the whole train step is XLA
    assert all(np.isfinite(values).all() for values in history.values())
    assert history["loss"][-1] < 0.7 * history["loss"][0]


def test_predict_and_coco_evaluation(trained):
    model, _, images = trained
    predictions = model.predict(images, batch_size=8, verbose=0)
    assert {key: value.shape for key, value in predictions.items()} == {
        "boxes": (16, 100, 4), "scores": (16, 100), "labels": (16, 100), "num_detections": (16,)}
    counts = predictions["num_detections"]
    assert counts.max() > 0
    for i, count in enumerate(counts):
        assert (predictions["labels"][i, count:] == -1).all() and (predictions["labels"][i, :count] >= 0).all()
        assert (np.diff(predictions["scores"][i, :count]) <= 0).all()  # best first
    from keras_fpn.evaluation import evaluate_coco

    data = detection_pipeline(load_shapes(8, 64, seed=3), 4, (64, 64), pad_to_multiple=32, with_image_info=True)
    assert 0.0 <= evaluate_coco(model, data)["AP"] <= 1.0


@pytest.mark.parametrize("prior, counts", [(0.03, "some"), (0.5, "all 100")])
def test_saved_under_jax_tensorflow_loads_predicts_the_same_and_exports(trained, prior, counts, tmp_path):
    # Untrained heads whose every anchor scores about `prior`: at 0.03 the 0.05 threshold lets a few
    # candidates through (the low-score regime), at 0.5 thousands, and NMS decides all 100 detections.
    _, _, images = trained
    keras.utils.set_random_seed(1)
    model = tiny_retinanet(prior_probability=prior)
    path, image_file = str(tmp_path / "jax.keras"), str(tmp_path / "images.npy")
    model.save(path)
    np.save(image_file, images[:4])
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_SIDE, path, image_file, str(tmp_path / "export"),
                             str(tmp_path / "tf.npz")], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"backend": "tensorflow", "jit_compile": False}
    tensorflow = np.load(str(tmp_path / "tf.npz"))
    jax_predictions = model.predict_on_batch(images[:4])
    np.testing.assert_array_equal(tensorflow["num_detections"], jax_predictions["num_detections"])
    found = jax_predictions["num_detections"]
    assert (found == 100).all() if counts == "all 100" else (0 < found.min() and found.max() < 100), found
    for i, count in enumerate(jax_predictions["num_detections"]):
        np.testing.assert_array_equal(tensorflow["labels"][i, :count], jax_predictions["labels"][i, :count])
        np.testing.assert_allclose(tensorflow["scores"][i, :count], jax_predictions["scores"][i, :count], atol=1e-4)
        np.testing.assert_allclose(tensorflow["boxes"][i, :count], jax_predictions["boxes"][i, :count], atol=1e-2)
    np.testing.assert_array_equal(tensorflow["served_num_detections"], jax_predictions["num_detections"])


def test_export_asks_for_the_tensorflow_backend(trained, tmp_path):
    from keras_fpn.export import export_saved_model

    with pytest.raises(ValueError, match="run it under the TensorFlow backend"):
        export_saved_model(trained[0], str(tmp_path / "export"), image_size=(64, 64))


WITHOUT_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, NoTensorFlow())
import numpy as np
from keras_fpn.datasets import generate_shapes
from tests.testing import tiny_convnet
from keras_fpn import FasterRCNN, RetinaNet
images, boxes, labels = generate_shapes(2, 64, max_objects=2, seed=1)
for cls, extra in ((RetinaNet, {"min_level": 3, "head_depth": 1}),
                   (FasterRCNN, {"rpn_post_nms_topk_test": 50, "head_dim": 16, "roi_batch_size_per_image": 16})):
    model = cls(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=8, max_level=5, **extra)
    model.compile(optimizer="adam")
    model.fit(images.astype("float32"), {"boxes": boxes, "labels": labels}, epochs=1, verbose=0)
    print(cls.__name__, model.predict_on_batch(images.astype("float32"))["boxes"].shape)
print("tensorflow" in sys.modules)
"""


def test_trains_and_predicts_without_tensorflow_installed():
    # The GPU machines lent to this project have JAX but no TensorFlow: nothing on the JAX path may import it.
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["RetinaNet", "(2,", "100,", "4)", "FasterRCNN", "(2,", "100,", "4)", "False"]


SAVED_UNDER_TENSORFLOW = """
import sys
import numpy as np
import keras
from tests.testing import tiny_retinanet
keras.utils.set_random_seed(2)
model = tiny_retinanet(prior_probability=0.2)
model.compile(optimizer="adam")
images = np.load(sys.argv[2])
model.fit(images, {"boxes": np.zeros((4, 1, 4), "float32"), "labels": -np.ones((4, 1), "int32")}, verbose=0)
model.save(sys.argv[1])
np.savez(sys.argv[3], **{key: np.asarray(value) for key, value in model.predict_on_batch(images).items()})
"""


def test_saved_under_tensorflow_loads_jit_compiled_and_predicts_the_same(trained, tmp_path):
    images = trained[2][:4]
    path, image_file, expected_file = (str(tmp_path / name) for name in ("tf.keras", "images.npy", "tf.npz"))
    np.save(image_file, images)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", SAVED_UNDER_TENSORFLOW, path, image_file, expected_file],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model = keras.saving.load_model(path)
    assert model.jit_compile is True  # the file says False (TensorFlow's choice); JAX decides anew
    expected, ours = np.load(expected_file), model.predict_on_batch(images)
    np.testing.assert_array_equal(expected["num_detections"], ours["num_detections"])
    assert ours["num_detections"].min() > 0
    for i, count in enumerate(ours["num_detections"]):
        np.testing.assert_array_equal(expected["labels"][i, :count], ours["labels"][i, :count])
        np.testing.assert_allclose(expected["scores"][i, :count], ours["scores"][i, :count], atol=1e-4)
        np.testing.assert_allclose(expected["boxes"][i, :count], ours["boxes"][i, :count], atol=1e-2)
