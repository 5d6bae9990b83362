import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_fpn import FPNBackbone, cli, models
from keras_fpn.utils import count_flops

# One worker runs the whole module (scripts/test.sh: --dist loadgroup), so its module fixtures are built once.
pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="FLOPs use TensorFlow's profiler"),
              pytest.mark.xdist_group("cli")]


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


# -- the zoo and the training commands ------------------------------------------------------------------------

SMALL = ["--model", "retinanet_mobilenetv3small_shapes", "--image-size", "64", "64", "--batch-size", "4",
         "--no-progress"]


def test_models_command_lists_the_zoo(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.list():
        assert name in out
    assert re.search(r"retinanet_resnet50_fpn\s+ResNet50\s+P3-P7\s+640x640\s+tfds:coco/2017\s+38\.0M", out), out
    # Every row's columns line up under the header, the longest dataset string (a COCO JSON path) included.
    header, *rows = [line for line in out.splitlines() if line.strip()][:len(models.list()) + 1]
    start = header.index("params") - 2
    for row in rows:
        assert row[start - 2:start].strip() == "" and re.match(r"\s*\d+\.\dM", row[start:]), row


def test_models_command_prints_a_record(capsys):
    assert cli.main(["models", "retinanet_convnext_tiny_fpn"]) == 0
    assert json.loads(capsys.readouterr().out) == models.get("retinanet_convnext_tiny_fpn")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A shapes detector trained by `keras-fpn train` for a few steps (shared by the commands that read runs)."""
    output = str(tmp_path_factory.mktemp("run"))
    code = cli.main(["train", *SMALL, "--dataset", "shapes", "--max-images", "32", "--max-val-images", "8",
                     "--epochs", "2", "--steps-per-epoch", "2", "--checkpoint-every", "1", "--output-dir", output])
    assert code == 0
    return output


def test_train_writes_model_run_checkpoints_and_tensorboard_logs(trained_run):
    files = set(os.listdir(trained_run))
    assert {"model.keras", "run.json", "checkpoints", "logs"} <= files, files
    run = json.loads(open(os.path.join(trained_run, "run.json")).read())
    assert run["class_names"] == ["rectangle", "ellipse", "triangle"] and run["image_size"] == [64, 64]
    assert run["epochs"] == 2 and run["steps_per_epoch"] == 2
    index = json.loads(open(os.path.join(trained_run, "checkpoints", "checkpoint.json")).read())
    assert index["step"] == 4
    events = [name for _, _, names in os.walk(os.path.join(trained_run, "logs")) for name in names
              if name.startswith("events.out.tfevents")]
    assert events


def test_train_resumes_and_reports_it(trained_run, capsys):
    # Same run folder, one more epoch: continues from step 4 instead of starting over.
    assert cli.main(["train", *SMALL, "--dataset", "shapes", "--max-images", "32", "--eval-every", "0",
                     "--epochs", "3", "--steps-per-epoch", "2", "--output-dir", trained_run]) == 0
    out = capsys.readouterr().out
    assert "at step 4 of 6" in out
    assert json.loads(open(os.path.join(trained_run, "checkpoints", "checkpoint.json")).read())["step"] == 6


def test_evaluate_prints_the_coco_table(trained_run, capsys):
    assert cli.main(["evaluate", trained_run, "--dataset", "shapes", "--max-images", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("AP", "AP50", "AP75", "AR100", "AR_large"):
        assert re.search(rf"^{name}\s+\d\.\d{{3}}$", out, re.M), out
    assert re.search(r"^triangle\s+\d\.\d{3}\s+\d\.\d{3}$", out, re.M), out


def test_export_writes_a_servable_savedmodel(trained_run, tmp_path, capsys):
    import tensorflow as tf

    assert cli.main(["export", trained_run, "--export-dir", str(tmp_path)]) == 0
    assert "detection_classes are 1-based: 1 = 'rectangle'" in capsys.readouterr().out
    served = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    png = tf.io.encode_png(tf.zeros((50, 70, 3), tf.uint8))
    assert served(images=tf.reshape(png, [1]))["detection_boxes"].shape[0] == 1


def test_export_in_bfloat16_stores_bfloat16_weights(trained_run, tmp_path, capsys):
    import tensorflow as tf

    assert cli.main(["export", trained_run, "--export-dir", str(tmp_path), "--dtype", "bfloat16"]) == 0
    assert "running in bfloat16" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    assert {variable.dtype for variable in loaded.weights} == {tf.bfloat16}
    png = tf.io.encode_png(tf.zeros((50, 70, 3), tf.uint8))
    assert loaded.signatures["serving_default"](images=tf.reshape(png, [1]))["detection_scores"].dtype == tf.float32


def test_predict_draws_and_writes_json(trained_run, tmp_path, raccoon, capsys):
    from PIL import Image

    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 90), 128, np.uint8)).save(gray)
    jpeg = os.path.join(raccoon, "images", "raccoon-1.jpg")
    out_png, out_json = tmp_path / "out.png", tmp_path / "out.json"
    assert cli.main(["predict", trained_run, jpeg, str(gray), "--output", str(out_png), "--json", str(out_json),
                     "--score-threshold", "0.0"]) == 0
    report = json.loads(out_json.read_text())
    assert [entry["image"] for entry in report] == [jpeg, str(gray)]
    height, width = Image.open(jpeg).size[::-1]
    assert (report[0]["height"], report[0]["width"]) == (height, width)
    assert report[1]["height"] == 40 and report[1]["width"] == 90
    for entry in report:
        for detection in entry["detections"]:
            x1, y1, x2, y2 = detection["box_xyxy"]
            assert 0 <= x1 <= x2 <= entry["width"] and 0 <= y1 <= y2 <= entry["height"]
            assert x2 - x1 >= 1e-2 and y2 - y1 >= 1e-2  # no box clipped to nothing (it lay in the padding)
            assert detection["class"] in ("rectangle", "ellipse", "triangle")
    assert out_png.stat().st_size > 5_000


def test_predict_takes_folders_skips_non_images_and_keeps_the_image_size(trained_run, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out_png, out_json = tmp_path / "out.png", tmp_path / "out.json"
    assert cli.main(["predict", trained_run, str(folder), str(broken), "--output", str(out_png), "--json",
                     str(out_json)]) == 0
    captured = capsys.readouterr()
    assert [entry["image"] for entry in json.loads(out_json.read_text())] == [str(folder / "a.png")]
    assert f"warning: skipped {broken}: not an image" in captured.err
    assert Image.open(out_png).size == (64, 48)  # one image: drawn at its own size


def test_train_on_a_voc_folder_with_csv_validation(raccoon, tmp_path, capsys):
    output = str(tmp_path / "raccoon")
    assert cli.main(["train", *SMALL, "--dataset", f"voc:{raccoon}", "--max-images", "8",
                     "--val-dataset", f"csv:{raccoon}/data/test_labels.csv,{raccoon}/images", "--max-val-images", "4",
                     "--epochs", "1", "--steps-per-epoch", "1", "--output-dir", output]) == 0
    out = capsys.readouterr().out
    assert "1 classes ['raccoon']" in out and "validation AP by evaluation" in out
    assert json.loads(open(os.path.join(output, "run.json")).read())["class_names"] == ["raccoon"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "retinanet_resnet5_fpn", "--dataset", "shapes"], "Did you mean 'retinanet_resnet50_fpn'"),
    (["train", *SMALL, "--dataset", "pascal:/data"], "expected one of shapes, shapes:scales, tfds:NAME, voc:DIR"),
    (["train", *SMALL, "--dataset", "voc:/no/such/folder"], "folder '/no/such/folder' does not exist"),
    (["train", *SMALL, "--dataset", "coco:/no/instances.json"], "expected one of shapes"),
    (["evaluate", "/no/such/run", "--dataset", "shapes"], "No trained model at '/no/such/run'"),
])
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_required_argument_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--model", "retinanet_resnet50_fpn"])
    assert exit_.value.code == 2 and "--dataset" in capsys.readouterr().err


def test_predict_reports_missing_images(trained_run, capsys):
    assert cli.main(["predict", trained_run, "/no/such.jpg"]) == 2
    assert "/no/such.jpg" in capsys.readouterr().err


def test_train_seeds_the_weight_initialisation(tmp_path, monkeypatch):
    """`--seed` fixes the weights training starts from: two runs with one seed start equal, another seed differs
    (the training itself is replaced: only the model handed to it is read)."""
    from keras_fpn import training

    starts = []

    def start_only(model, *args, **kwargs):
        starts.append([np.asarray(weight) for weight in model.weights])
        return model, {}

    monkeypatch.setattr(training, "train_detector", start_only)
    for seed in ("3", "3", "4"):
        assert cli.main(["train", *SMALL, "--dataset", "shapes", "--max-images", "8", "--eval-every", "0",
                         "--seed", seed, "--output-dir", str(tmp_path / seed)]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(starts[0], starts[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(starts[0], starts[2]))


def test_damaged_checkpoint_stops_training_with_the_reason(tmp_path, capsys):
    output = str(tmp_path / "run")
    argv = ["train", *SMALL, "--dataset", "shapes", "--max-images", "8", "--eval-every", "0", "--epochs", "1",
            "--steps-per-epoch", "1", "--output-dir", output]
    assert cli.main(argv) == 0
    with open(os.path.join(output, "checkpoints", "ckpt-00000001.keras"), "r+b") as file:
        file.truncate(1000)
    assert cli.main(argv) == 1
    assert "ckpt-00000001.keras is damaged" in capsys.readouterr().err


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_and_finishes_at_the_same_step(tmp_path):
    output = str(tmp_path / "run")
    argv = [sys.executable, "-m", "keras_fpn.cli", "train", *SMALL, "--dataset", "shapes", "--max-images", "64",
            "--eval-every", "0", "--epochs", "3", "--steps-per-epoch", "10", "--checkpoint-every", "2",
            "--output-dir", output]
    index = os.path.join(output, "checkpoints", "checkpoint.json")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    killed_after = None
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(index):
            step = json.loads(open(index).read())["step"]
            if step >= 4:
                process.send_signal(signal.SIGKILL)
                killed_after = step
                break
        time.sleep(0.02)
    process.wait()
    assert killed_after is not None and process.returncode == -signal.SIGKILL, process.stdout.read()
    saved = json.loads(open(index).read())["step"]  # a checkpoint may have landed between the read and the kill
    assert saved < 30 and saved % 10, "kill again mid-epoch: the test wants an interrupted epoch"
    finished = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"Resuming from {os.path.join(output, 'checkpoints')} at step {saved} of 30" in finished.stdout
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    assert int(model.optimizer.iterations.numpy()) == 30


# What the `keras-fpn` console script runs (setup.cfg), with Python's import log on.
ENTRY_POINT = [sys.executable, "-X", "importtime", "-c",
               "import sys, keras_fpn_entry_point; sys.exit(keras_fpn_entry_point.main(sys.argv[1:]))"]


def test_help_and_models_answer_without_tensorflow():
    for command in (["--help"], ["models"], ["train", "--help"]):
        done = subprocess.run([*ENTRY_POINT, *command],
                              capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__))))
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert not {"tensorflow", "keras", "jax"} & imported, command
    assert "retinanet_resnet50_fpn" in done.stdout or "--model" in done.stdout


def test_a_misspelled_zoo_name_is_answered_before_tensorflow_starts():
    done = subprocess.run([*ENTRY_POINT, "train", "--model", "retinanet_resnet50_fpnn", "--dataset", "shapes"],
                          capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 2
    assert "Did you mean 'retinanet_resnet50_fpn'?" in done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {"tensorflow", "keras", "jax"} & imported


def test_commands_hide_tensorflow_start_up_lines(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nimg2.jpg,128,128\n")
    # Through the console script's entry point, which runs the package's __init__ only after TensorFlow starts.
    argv = [*ENTRY_POINT[:1], *ENTRY_POINT[3:], "train", "--model", "retinanet_mobilenetv3small_shapes",
            "--dataset", f"csv:{bad}"]
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(f"keras-fpn: error: {bad}, line 2: 3 fields"), done.stderr[-2000:]
    assert not re.search(r"^[IEW]0000 ", done.stderr, re.M), done.stderr[-2000:]
    verbose = subprocess.run(argv[:3] + ["--verbose"] + argv[3:], capture_output=True, text=True, timeout=300,
                             env=env)
    assert verbose.returncode == 2 and "keras-fpn: error:" in verbose.stderr


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenetv3small_shapes", "maskrcnn_mobilenetv3small_shapes"])
def test_a_two_stage_record_goes_through_train_evaluate_export_and_predict(name, tmp_path, raccoon, capsys):
    """The CLI, evaluation and export know no model class: the record's architecture picks it."""
    import tensorflow as tf

    masks = name.startswith("maskrcnn")
    output = str(tmp_path / "run")
    assert cli.main(["train", "--model", name, "--image-size", "64", "64",
                     "--batch-size", "4", "--dataset", "shapes", "--max-images", "16", "--max-val-images", "8",
                     "--epochs", "1", "--steps-per-epoch", "2", "--output-dir", output]) == 0
    out = capsys.readouterr().out
    assert f"{name}: 1," in out and "rpn_objectness_loss" in out and "val_AP" in out
    assert ("mask_loss" in out and "val_mask_AP" in out) == masks
    model_class = type(keras.saving.load_model(os.path.join(output, "model.keras"))).__name__
    assert model_class == ("MaskRCNN" if masks else "FasterRCNN")
    assert cli.main(["evaluate", output, "--dataset", "shapes", "--max-images", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^AP50\s+[\d.]+$", out, re.M) and ("mask (segm) metrics" in out) == masks
    assert cli.main(["export", output, "--export-dir", str(tmp_path / "export")]) == 0
    served = tf.saved_model.load(str(tmp_path / "export" / "1")).signatures["serving_default"]
    png = tf.io.encode_png(tf.zeros((50, 70, 3), tf.uint8))
    outputs = served(images=tf.reshape(png, [1]))
    assert outputs["detection_boxes"].shape == (1, 100, 4)
    assert ("detection_masks" in outputs) == masks
    jpeg = os.path.join(raccoon, "images", "raccoon-1.jpg")
    assert cli.main(["predict", output, jpeg, "--output", str(tmp_path / "out.png"), "--json",
                     str(tmp_path / "out.json"), "--score-threshold", "0.0"]) == 0
    report = json.loads((tmp_path / "out.json").read_text())[0]
    assert report["image"] == jpeg
    if masks:  # each detection's mask as COCO RLE of the image's size
        from pycocotools import mask as mask_api

        assert report["detections"] and all("mask_rle" in d for d in report["detections"])
        rle = report["detections"][0]["mask_rle"]
        decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert decoded.shape == (report["height"], report["width"])


def test_a_segmentation_record_goes_through_train_evaluate_export_and_predict(tmp_path, capsys):
    """A segmentation record trains, is scored, exported and run on a file through the same commands; its scores
    are `evaluate_segmentation`'s, its file predictions come back at the file's own size."""
    import tensorflow as tf
    from PIL import Image

    from keras_fpn.datasets.shapes import SEGMENTATION_CLASSES, generate_segmentation_shapes
    from keras_fpn.datasets.spec import SEGMENTATION_SHAPES
    from keras_fpn.evaluation import evaluate_segmentation

    output = str(tmp_path / "run")
    assert cli.main(["train", "--model", "semanticfpn_mobilenetv3small_shapes", "--dataset", "shapes",
                     "--max-images", "16", "--max-val-images", "8", "--batch-size", "8", "--epochs", "1",
                     "--steps-per-epoch", "2", "--no-progress", "--output-dir", output]) == 0
    out = capsys.readouterr().out
    assert "semanticfpn_mobilenetv3small_shapes: " in out and "validation mIoU by evaluation: " in out
    run = json.loads(open(os.path.join(output, "run.json")).read())
    assert run["class_names"] == list(SEGMENTATION_CLASSES) and run["image_size"] == [64, 64]
    assert cli.main(["evaluate", output, "--dataset", "shapes", "--max-images", "8"]) == 0
    printed = float(re.search(r"^mIoU\s+(\d\.\d{3})$", capsys.readouterr().out, re.M).group(1))
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    held_out = generate_segmentation_shapes(8, 64, seed=SEGMENTATION_SHAPES["validation"][1])
    assert printed == pytest.approx(evaluate_segmentation(model, *held_out)["mIoU"], abs=5e-4)
    assert cli.main(["export", output, "--export-dir", str(tmp_path / "export")]) == 0
    served = tf.saved_model.load(str(tmp_path / "export" / "1")).signatures["serving_default"]
    assert served(images=tf.reshape(tf.io.encode_png(tf.zeros((50, 70, 3), tf.uint8)), [1]))["class_map"].shape == (
        1, 50, 70)
    assert cli.main(["export", output, "--format", "litert", "--export-dir", str(tmp_path / "litert")]) == 2
    assert "segmentation models export as a SavedModel only" in capsys.readouterr().err
    picture = tmp_path / "shapes.png"
    Image.fromarray(generate_segmentation_shapes(1, 96, seed=9)[0][0][:80]).save(picture)  # 80x96, not 64x64
    assert cli.main(["predict", output, str(picture), "--output", str(tmp_path / "out.png"), "--json",
                     str(tmp_path / "out.json")]) == 0
    report = json.loads((tmp_path / "out.json").read_text())[0]
    assert (report["height"], report["width"]) == (80, 96)
    assert set(report["class_fractions"]) <= set(SEGMENTATION_CLASSES)
    assert sum(report["class_fractions"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "out.png").stat().st_size > 1000
