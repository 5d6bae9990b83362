"""tf.distribute: two replicas compute the single-device loss and update; two worker processes train together."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_fpn.training import make_strategy

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow's")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIRRORED = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_fpn import FasterRCNN
    from keras_fpn.training import make_strategy
    from tests.testing import tiny_convnet, tiny_retinanet

    def build():
        # Frozen backbone BatchNorm (as when fine-tuning): BatchNorm statistics are per replica under
        # MirroredStrategy, so only then is the forward pass the same for 2 x 4 images as for 8.
        model = BUILD
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        return model

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    corners = rng.uniform(0, 40, (8, 2, 2)).astype("float32")
    boxes = np.concatenate([corners, corners + rng.uniform(8, 24, (8, 2, 2)).astype("float32")], -1)
    labels = rng.integers(0, 3, (8, 2)).astype("int32")
    labels[::3, 1] = -1  # some padding
    data = tf.data.Dataset.from_tensors((images, {"boxes": boxes, "labels": labels})).repeat()

    keras.utils.set_random_seed(0)
    single = build()
    initial = single.get_weights()
    single_history = single.fit(data, steps_per_epoch=3, epochs=1, verbose=0).history
    strategy = make_strategy("mirrored")
    with strategy.scope():
        mirrored = build()
        mirrored.set_weights(initial)
    mirrored_history = mirrored.fit(data, steps_per_epoch=3, epochs=1, verbose=0).history
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), mirrored.get_weights()))
    scale = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), initial))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "single": single_history,
                      "mirrored": mirrored_history, "weight_difference": difference, "weight_change": scale}))
""")


BUILDS = {
    "retinanet": 'tiny_retinanet(backbone_kwargs={"freeze_batchnorm": True})',
    # Sampling takes every anchor and RoI (caps above their counts): random draws would differ between one device
    # and two replicas, while the losses' normalisation by the global counts must not.
    "faster_rcnn": ('FasterRCNN(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32, '
                    'backbone_kwargs={"freeze_batchnorm": True}, rpn_batch_size_per_image=4096, '
                    'rpn_positive_fraction=1.0, rpn_pre_nms_topk_train=50, rpn_post_nms_topk_train=30, '
                    'roi_batch_size_per_image=64, roi_positive_fraction=1.0)'),
}


# RetinaNet's losses agree to 1e-4. Faster R-CNN's proposals are a discrete choice (top-k, NMS): after the first
# step the two runs' weights differ at float precision, which can flip a proposal at a threshold and move a RoI
# loss by ~1e-4 (measured 1.1e-4 once in CI), so its losses are compared at 1e-3. For the same reason its weights
# after three steps differ by more than RetinaNet's: measured 1.7e-3 of the weight change once in CI (at 66f2a2b;
# the same code passed at 1e-3 the run before), so they are compared at 5e-3.
TOLERANCE = {"retinanet": 1e-4, "faster_rcnn": 1e-3}
WEIGHT_TOLERANCE = {"retinanet": 1e-3, "faster_rcnn": 5e-3}


@pytest.mark.parametrize("detector", sorted(BUILDS))
def test_mirrored_two_replicas_match_one_device(tmp_path, detector):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED.replace("BUILD", BUILDS[detector]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for key in [key for key in report["single"] if key.endswith("loss")]:
        assert report["mirrored"][key] == pytest.approx(report["single"][key], rel=TOLERANCE[detector]), (key, report)
    # Three SGD steps moved the weights by weight_change; the two runs agree far more closely than that.
    assert report["weight_difference"] < WEIGHT_TOLERANCE[detector] * report["weight_change"], report


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_training_with_two_processes(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    output = str(tmp_path / "run")
    argv = [sys.executable, "-m", "keras_fpn.cli", "train", "--strategy", "multi_worker", "--model",
            "retinanet_mobilenetv3small_shapes", "--dataset", "shapes", "--max-images", "32", "--image-size", "64",
            "64", "--batch-size", "4", "--epochs", "2", "--steps-per-epoch", "3", "--eval-every", "0",
            "--no-progress", "--output-dir", output]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                      "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=540)[0])
    finally:
        for process in processes:
            process.kill()
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-3000:]
        assert "multi_worker strategy: 2 replicas" in text, text[-3000:]
    # Only the chief (worker 0) writes the run folder.
    assert {"model.keras", "run.json", "checkpoints"} <= set(os.listdir(output))
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    assert int(model.optimizer.iterations.numpy()) == 6


def test_strategy_errors_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"strategy='gpu'; expected one of \('default', 'mirrored'"):
        make_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multi_worker")


def test_cli_reports_an_unreachable_tpu(capsys):
    from keras_fpn import cli

    code = cli.main(["train", "--model", "retinanet_mobilenetv3small_shapes", "--dataset", "shapes",
                     "--max-images", "4", "--strategy", "tpu", "--tpu", "local"])
    assert code == 1 and "strategy='tpu': no TPU could be reached" in capsys.readouterr().err
