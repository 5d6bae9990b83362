"""The benchmark suite: keras_fpn's RetinaNet side by side with keras-hub's, the bfloat16 path, and scaling.

    pip install -e ".[bench]"                        # keras-hub, for the side-by-side column
    python benchmarks/suite.py                       # everything, about 15 minutes on a 2-core CPU
    python benchmarks/suite.py --write               # and replace the tables in benchmarks/README.md
    python benchmarks/suite.py --tiny                # a smoke run (CI), tiny backbones, figures meaningless
    python benchmarks/suite.py --sections compare bfloat16

The configuration is the paper's: ResNet50-FPN RetinaNet, P3-P7 at 256 channels, 4-conv shared heads, 9 anchors,
80 classes, 640x640, batch 1 for inference and 4 for training, random weights (nothing is downloaded), float32
unless a row says otherwise. keras-hub's model is its `RetinaNetObjectDetector` over its ResNet-50 v1
`ResNetBackbone`, with the same levels, heads, anchors and decoding settings (score threshold 0.05, NMS IoU 0.5,
100 detections).

Every measurement runs in a fresh Python process of its own (one per row and library), so each peak memory
figure is that process's high-water mark (`ru_maxrss`: TensorFlow, the model and the work) and nothing one
library allocated counts against the other. Times are the median of `--runs` calls after `--warmup` calls.
Without keras-hub installed, its column is left empty.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "benchmarks", "README.md")
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"

FULL = {"size": 640, "classes": 80, "train_batch": 4, "runs": 5, "warmup": 2, "matmul": 2048,
        "sizes": [320, 480, 640, 800, 1024, 1280], "batches": [1, 2, 4, 8], "topk": [100, 300, 1000, 3000, 10000],
        "pipeline_batches": 8, "agreement_images": 200}
# The smoke run keeps every row and code path but swaps ResNet-50 for a 5-conv backbone on both sides (tracing
# ResNet-50's train step took a minute a row on the 2-core CI machine; the figures are not read).
TINY = {"size": 128, "classes": 4, "train_batch": 2, "runs": 1, "warmup": 1, "matmul": 1024,
        "sizes": [64, 256], "batches": [1, 2], "topk": [10, 100], "pipeline_batches": 2, "agreement_images": 25,
        "backbone": "tiny"}


# -- the two models ---------------------------------------------------------------------------------------------

def tiny_backbone(config):
    """The tiny run's backbone for keras_fpn: the test suite's 5-conv ConvNet (`tests.testing.tiny_convnet`)."""
    sys.path.insert(0, ROOT)
    from tests.testing import tiny_convnet

    return tiny_convnet(input_shape=(config["size"], config["size"], 3))


def ours(config, dtype="float32"):
    from keras_fpn import RetinaNet

    backbone = tiny_backbone(config) if config.get("backbone") == "tiny" else "ResNet50"
    model = RetinaNet(config["classes"], backbone=backbone, backbone_weights=None,
                      input_shape=(config["size"], config["size"], 3))
    return model if dtype == "float32" else model.with_dtype(dtype)


def keras_hub_model(config):
    import keras_hub

    size = config["size"]
    tiny = config.get("backbone") == "tiny"  # one narrow bottleneck block per stage
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16, 16] if tiny else [64, 128, 256, 512],
        stackwise_num_blocks=[1, 1, 1, 1] if tiny else [3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        image_shape=(size, size, 3))
    # keras-hub's `use_p5=True` builds P6 from the backbone's C5, as the paper and keras_fpn do (False: from P5).
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=7, use_p5=True,
                                                  image_shape=(size, size, 3))
    decoder = keras_hub.layers.NonMaxSuppression(bounding_box_format="xyxy", from_logits=True,
                                                 confidence_threshold=0.05, iou_threshold=0.5, max_detections=100)
    return keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=config["classes"],
                                                    bounding_box_format="xyxy", prediction_decoder=decoder)


def build(library, config, dtype="float32"):
    return ours(config, dtype) if library == "keras_fpn" else keras_hub_model(config)


def images(config, batch=1, size=None, library="keras_fpn"):
    """A random batch as each model takes it: keras_fpn's models normalise raw [0, 255] RGB themselves; keras-hub's
    backbone expects its preprocessor's output (x / 255 normalised by the ImageNet mean and deviation), which is
    computed here, outside the timed calls."""
    import tensorflow as tf

    size = size or config["size"]
    batch = tf.random.uniform((batch, size, size, 3), 0.0, 255.0, seed=0)
    if library == "keras_hub":
        batch = (batch / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return batch


def set_scores(model, scores):
    """Sets the classification head's output layer so the score regime is known in both libraries. "low": kernel
    0 and bias at the paper's prior, so every score is 0.01, below the 0.05 threshold (nothing passes, as with a
    fresh model or an empty scene). "high": kernel ~ N(0, 0.01) (the paper's initialisation) and bias 2, so every
    score is near 0.88 or above and passes (the worst case for decoding). Without this, keras-hub 0.32's fresh model
    scores anchors near 0.5: its prior goes to the box head and its output kernel is Glorot-initialised."""
    import math

    import numpy as np
    from keras import ops

    weights = model.get_layer("classification_head").weights
    kernel = [weight for weight in weights if "kernel" in weight.path][-1]
    bias = [weight for weight in weights if "bias" in weight.path][-1]
    if scores == "low":
        kernel_value, bias_value = np.zeros(kernel.shape), -math.log((1 - 0.01) / 0.01)
    else:
        kernel_value, bias_value = np.random.default_rng(0).normal(0.0, 0.01, kernel.shape), 2.0
    kernel.assign(ops.cast(kernel_value, kernel.dtype))
    bias.assign(ops.cast(np.full(bias.shape, bias_value), bias.dtype))


# -- measuring --------------------------------------------------------------------------------------------------

def timed(function, config):
    for _ in range(config["warmup"]):
        function()
    times = []
    for _ in range(config["runs"]):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def to_numpy(structure):
    import numpy as np
    import tensorflow as tf

    return tf.nest.map_structure(np.asarray, structure)


def task_matmul(config, **_):
    import tensorflow as tf

    n, result = config["matmul"], {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.uniform((n, n), seed=1), dtype)
        b = tf.cast(tf.random.uniform((n, n), seed=2), dtype)
        matmul = tf.function(tf.matmul)
        seconds = timed(lambda: matmul(a, b).numpy(), {"warmup": 2, "runs": 3 * config["runs"]})
        result[dtype] = 2 * n ** 3 / seconds / 1e9
    return result


def task_pyramid(config, library, **_):
    import tensorflow as tf

    from keras_fpn.utils.flops import count_function_flops

    size, channels = config["size"], {3: 512, 4: 1024, 5: 2048}  # ResNet50's C3-C5
    prefix = "C" if library == "keras_fpn" else "P"  # keras-hub keys its backbone maps P3..P5
    features = {f"{prefix}{level}": tf.random.uniform((1, size // 2 ** level, size // 2 ** level, depth), seed=level)
                for level, depth in channels.items()}
    if library == "keras_fpn":
        from keras_fpn.layers import FeaturePyramid

        layer = FeaturePyramid(min_level=3, max_level=7, num_channels=256)
    else:
        from keras_hub.src.models.retinanet.feature_pyramid import FeaturePyramid

        layer = FeaturePyramid(min_level=3, max_level=7, use_p5=True, num_filters=256)
    forward = tf.function(lambda maps: layer(maps))
    seconds = timed(lambda: to_numpy(forward(features)), config)
    peak = peak_gb()
    specs = {key: tf.TensorSpec(value.shape, tf.float32) for key, value in features.items()}
    return {"seconds": seconds, "peak_gb": peak, "gflops": count_function_flops(lambda maps: layer(maps), specs) / 1e9,
            "parameters": layer.count_params()}


def task_forward(config, library, dtype="float32", batch=1, size=None, **_):
    import tensorflow as tf

    from keras_fpn.utils.flops import count_flops

    size = size or config["size"]
    model = build(library, {**config, "size": size}, dtype)
    x = images(config, batch, size, library)
    forward = tf.function(lambda x: model(x, training=False))
    seconds = timed(lambda: to_numpy(forward(x)), config)
    peak = peak_gb()
    result = {"seconds": seconds, "peak_gb": peak, "parameters": model.count_params()}
    if not batch > 1 and size == config["size"]:
        result["gflops"] = count_flops(model, (size, size, 3)) / 1e9
    return result


def predictor(model, library):
    """What a user calls to detect objects in a batch: `predict_on_batch` for keras_fpn. keras-hub 0.32's
    `predict_on_batch` fails on a bare image batch (its `decode_predictions` unpacks the batch as `(images, _)`),
    so its own `predict_step` is called, compiled with `tf.function` as `predict` would."""
    import tensorflow as tf

    if library == "keras_fpn":
        return model.predict_on_batch
    return tf.function(lambda x: model.predict_step(x))


def task_interleaved(config, **_):
    """FeaturePyramid and raw forward of both libraries in one process, calls alternating, so the ratio is free of
    the few per cent that separate processes differ by on this machine (memory is not measured here)."""
    import tensorflow as tf

    from keras_fpn.layers import FeaturePyramid
    from keras_hub.src.models.retinanet.feature_pyramid import FeaturePyramid as HubFeaturePyramid

    size, channels = config["size"], {3: 512, 4: 1024, 5: 2048}
    maps = {level: tf.random.uniform((1, size // 2 ** level, size // 2 ** level, depth), seed=level)
            for level, depth in channels.items()}
    ours_pyramid = FeaturePyramid(min_level=3, max_level=7, num_channels=256)
    hub_pyramid = HubFeaturePyramid(min_level=3, max_level=7, use_p5=True, num_filters=256)
    models = {library: build(library, config) for library in ("keras_fpn", "keras_hub")}
    calls = {
        "pyramid/keras_fpn": (tf.function(lambda m: ours_pyramid(m)), {f"C{k}": v for k, v in maps.items()}),
        "pyramid/keras_hub": (tf.function(lambda m: hub_pyramid(m)), {f"P{k}": v for k, v in maps.items()}),
        "forward/keras_fpn": (tf.function(lambda x: models["keras_fpn"](x, training=False)),
                              images(config, library="keras_fpn")),
        "forward/keras_hub": (tf.function(lambda x: models["keras_hub"](x, training=False)),
                              images(config, library="keras_hub")),
    }
    times = {key: [] for key in calls}
    for round_ in range(config["warmup"] + config["runs"]):
        for key, (function, argument) in calls.items():
            start = time.perf_counter()
            to_numpy(function(argument))
            if round_ >= config["warmup"]:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(value) for key, value in times.items()}


def task_predict(config, library, dtype="float32", scores="low", **_):
    model = build(library, config, dtype)
    set_scores(model, scores)
    predict = predictor(model, library)
    x = images(config, library=library)
    seconds = timed(lambda: to_numpy(predict(x)), config)
    detections = predict(x)
    count = detections["num_detections"] if "num_detections" in detections else None
    return {"seconds": seconds, "peak_gb": peak_gb(),
            "detections": None if count is None else int(to_numpy(count)[0])}


def _disk_mb(path):
    from export_resnet50 import folder_bytes  # benchmarks/ is on sys.path: this file runs as a script

    return folder_bytes(path) / 1e6


def _jpeg(config):
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    from tests.testing import find_raccoon

    folder = find_raccoon()
    if folder:
        return tf.io.read_file(os.path.join(folder, "images", "raccoon-1.jpg"))
    return tf.io.encode_jpeg(tf.cast(images(config)[0], tf.uint8))


def task_serving(config, library, dtype="float32", **_):
    import tensorflow as tf

    model = build(library, config, dtype)
    weights_mb = sum(weight.numpy().nbytes for weight in model.weights) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        if library == "keras_fpn":
            from keras_fpn.export import export_saved_model

            path = export_saved_model(model, folder, image_size=config["size"])
            loaded = tf.saved_model.load(path)
            serve = loaded.signatures["serving_default"]
            encoded = tf.reshape(_jpeg(config), [1])
            seconds = timed(lambda: to_numpy(serve(images=encoded)), config)
            x = images(config)
            in_process = timed(lambda: to_numpy(model.predict_on_batch(x)), config)
            note = "serving_default on JPEG bytes: decode, resize, detect, NMS"
        else:
            path = os.path.join(folder, "export")
            model.export(path, format="tf_saved_model", verbose=False)
            loaded = tf.saved_model.load(path)
            x = images(config, library=library)
            seconds = timed(lambda: to_numpy(loaded.serve(x)), config)
            predict = predictor(model, library)
            in_process = timed(lambda: to_numpy(predict(x)), config)
            note = "Keras model.export `serve` on a prepared tensor: raw outputs, no decode or NMS"
        return {"seconds": seconds, "in_process_predict": in_process, "peak_gb": peak_gb(), "disk_mb": _disk_mb(path),
                "weights_mb": weights_mb, "note": note}


def task_train(config, library, variant="same", **_):
    """One SGD step. `variant`: "same" (the configuration both libraries share: every BatchNorm trained), "preset"
    (keras_fpn's zoo `retinanet_resnet50_fpn`: backbone BatchNorm frozen, as the paper fine-tunes), or
    "mixed_bfloat16" (the same configuration under Keras's mixed_bfloat16 policy)."""
    import keras
    import tensorflow as tf

    if variant == "preset":
        from keras_fpn import RetinaNet

        tiny = {"backbone": tiny_backbone(config)} if config.get("backbone") == "tiny" else {}
        model = RetinaNet.from_preset("retinanet_resnet50_fpn", num_classes=config["classes"], backbone_weights=None,
                                      input_shape=(config["size"], config["size"], 3), **tiny)
    else:
        if variant == "mixed_bfloat16":
            keras.config.set_dtype_policy("mixed_bfloat16")
        model = build(library, config)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    batch, size = config["train_batch"], config["size"]
    boxes = tf.constant([[[40.0, 60.0, 200.0, 260.0], [300.0, 100.0, 420.0, 380.0], [0.0, 0.0, 0.0, 0.0]]])
    boxes = tf.tile(boxes * size / 640, [batch, 1, 1])
    labels = tf.tile(tf.constant([[1, 3, -1]]), [batch, 1])
    data = tf.data.Dataset.from_tensors((images(config, batch, library=library), {"boxes": boxes, "labels": labels})).repeat()

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step has finished
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    model.fit(data, steps_per_epoch=config["warmup"] + config["runs"], epochs=1, verbose=0, callbacks=[timer])
    return {"seconds": statistics.median(timer.times[config["warmup"]:]), "peak_gb": peak_gb()}


def task_pipeline(config, library, **_):
    sys.path.insert(0, ROOT)
    from tests.testing import find_raccoon

    from keras_fpn.datasets import Augmentation, detection_pipeline, load_voc

    folder = find_raccoon()
    if folder is None:
        return {"skipped": "no raccoon folder (../shared/datasets/raccoon or $KERAS_FPN_RACCOON)"}
    data = load_voc(folder)
    batch_size, size = 8, config["size"]
    batches = detection_pipeline(data, batch_size, (size, size), pad_to_multiple=128,
                                 augmentation=Augmentation(seed=0), shuffle=True, repeat=True, seed=0)
    iterator = iter(batches)
    next(iterator)  # start-up: file listing, first decode, tracing
    count = config["pipeline_batches"]
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return {"images_per_s": count * batch_size / (time.perf_counter() - start), "peak_gb": peak_gb()}


def task_decode(config, **_):
    import tensorflow as tf

    from keras_fpn.detection.decoder import decode_detections

    model = ours(config)
    batch = images(config)
    lookups, per_level = model.anchor_lookups(model(batch))
    height, width = int(batch.shape[1]), int(batch.shape[2])
    count = sum(per_level)
    deltas = tf.random.normal((1, count, 4), stddev=0.1, seed=3)
    logits = tf.random.normal((1, count, config["classes"]), mean=1.0, seed=4)  # most scores above 0.05
    rows = []
    for topk in config["topk"]:
        decode = tf.function(lambda d, lg, k=topk: decode_detections(d, lg, lookups, per_level, height, width,
                                                                      pre_nms_topk=k))
        candidates = sum(min(topk, size * config["classes"]) for size in per_level)
        rows.append({"pre_nms_topk": topk, "candidates": candidates,
                     "seconds": timed(lambda: to_numpy(decode(deltas, logits)), config)})
    return {"anchors": count, "rows": rows}


def task_agreement(config, run="runs/demo", **_):
    """float32 and bfloat16 COCO AP of the main job's trained shapes model on held-out shapes images."""
    from keras_fpn.datasets import detection_pipeline, load_shapes
    from keras_fpn.evaluation.coco import evaluate_coco
    from keras_fpn.training import load_run

    path = os.path.join(ROOT, run)
    if not os.path.exists(os.path.join(path, "model.keras")):
        return {"skipped": f"no trained model in {run}: run `bash scripts/main_job.sh` first"}
    model, info = load_run(path)
    size = tuple(info["image_size"])
    # The demo's held-out images (seed 2); evaluation only, so any seed the training never saw would do.
    test = detection_pipeline(load_shapes(config["agreement_images"], size[0], seed=2), 25, size, pad_to_multiple=32,
                              cache=True)
    result = {}
    for dtype in ("float32", "bfloat16"):
        start = time.perf_counter()
        metrics = evaluate_coco(model if dtype == "float32" else model.with_dtype(dtype), test)
        result[dtype] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "seconds": time.perf_counter() - start}
    result["images"] = config["agreement_images"]
    return result


TASKS = {name[5:]: function for name, function in globals().items() if name.startswith("task_")}


# -- running each measurement in its own process ----------------------------------------------------------------

def measure(task, config, **kwargs):
    """Runs one task in a new Python process and returns its result dict (or {"error": ...})."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", task, "--config", json.dumps(config),
               "--kwargs", json.dumps(kwargs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {done.returncode}: " + " | ".join(tail)}


def has_keras_hub():
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        return False
    return True


def machine():
    import keras
    import tensorflow as tf

    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            text = file.read()
        model = re.search(r"model name\s*:\s*(.*)", text)
        flags = (model.group(1).strip() + ", " if model else "") + ("AVX512-BF16" if "avx512_bf16" in text else
                                                                    "no AVX512-BF16")
    versions = f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    if has_keras_hub():
        import keras_hub

        versions += f", keras-hub {keras_hub.__version__}"
    return f"{os.cpu_count()} cores ({flags}), {versions}"


def measure_here(task, config, **kwargs):
    """Runs one task in this process (the tiny smoke run: its figures are not read, and a new process per task
    would cost TensorFlow's import time 25 times over). Returns its result dict (or {"error": ...})."""
    import keras

    try:
        return TASKS[task](config, **kwargs)
    except Exception as error:  # noqa: BLE001 - reported like a failed worker process
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()


class Runner:
    def __init__(self, config, hub, in_process=False):
        self.config, self.hub, self.results, self.count = config, hub, {}, 0
        self.in_process = in_process

    def __call__(self, key, task, **kwargs):
        self.count += 1
        start = time.perf_counter()
        print(f"[{self.count}] {key} ...", end=" ", flush=True)
        # In-process runs still send the first task through a worker process, so that path keeps being run.
        here = self.in_process and self.count > 1
        result = (measure_here if here else measure)(task, self.config, **kwargs)
        self.results[key] = result
        shown = result.get("error") or result.get("skipped") or ", ".join(
            f"{name} {value:.3g}" for name, value in result.items() if isinstance(value, (int, float)))
        print(f"{shown} ({time.perf_counter() - start:.0f}s)", flush=True)
        return result


def run_sections(config, sections, hub, in_process=False):
    runner = Runner(config, hub, in_process)
    libraries = ["keras_fpn"] + (["keras_hub"] if hub else [])
    if "compare" in sections or "bfloat16" in sections:
        runner("matmul", "matmul")
    if "compare" in sections:
        # Each measurement for both libraries back to back, so a slow spell of the machine hits both alike.
        for key, task, kwargs in (("pyramid", "pyramid", {}), ("forward", "forward", {}),
                                  ("predict_low", "predict", {"scores": "low"}),
                                  ("predict_high", "predict", {"scores": "high"}), ("serving", "serving", {}),
                                  ("train", "train", {})):
            for library in libraries:
                runner(f"{key}/{library}", task, library=library, **kwargs)
        runner("train_preset/keras_fpn", "train", library="keras_fpn", variant="preset")
        runner("train_mixed/keras_fpn", "train", library="keras_fpn", variant="mixed_bfloat16")
        runner("pipeline/keras_fpn", "pipeline", library="keras_fpn")
    if hub and ("compare" in sections or "interleaved" in sections):
        runner("interleaved", "interleaved")
    if "bfloat16" in sections:
        runner("forward/keras_fpn/bfloat16", "forward", library="keras_fpn", dtype="bfloat16")
        runner("predict_low/keras_fpn/bfloat16", "predict", library="keras_fpn", dtype="bfloat16", scores="low")
        runner("predict_high/keras_fpn/bfloat16", "predict", library="keras_fpn", dtype="bfloat16", scores="high")
        runner("serving/keras_fpn/bfloat16", "serving", library="keras_fpn", dtype="bfloat16")
        if "forward/keras_fpn" not in runner.results:
            runner("forward/keras_fpn", "forward", library="keras_fpn")
        runner("agreement", "agreement")
    if "scaling" in sections:
        for size in config["sizes"]:
            runner(f"scale/size{size}", "forward", library="keras_fpn", size=size)
        for batch in config["batches"]:
            runner(f"scale/batch{batch}", "forward", library="keras_fpn", batch=batch)
        runner("decode", "decode")
    return runner.results


# -- tables -----------------------------------------------------------------------------------------------------

def _ms(result, key="seconds"):
    if not result or key not in result:
        return "-" if not result or "error" not in result else "error"
    return f"{result[key] * 1000:,.0f} ms"


def _gb(result):
    return f"{result['peak_gb']:.2f} GB" if result and "peak_gb" in result else "-"


def _ratio(hub, ours_, key="seconds"):
    if not hub or not ours_ or key not in hub or key not in ours_:
        return "-"
    return f"{hub[key] / ours_[key]:.2f}x"


def tables(results, config, command):
    r = results.get
    lines = []
    peak = r("matmul") or {}
    peak32, peak16 = peak.get("float32"), peak.get("bfloat16")
    if peak32:
        lines += [f"Measured matmul peak ({config['matmul']}x{config['matmul']}, `tf.matmul`): float32 "
                  f"{peak32:.0f} GFLOP/s, bfloat16 {peak16:.0f} GFLOP/s.", ""]

    def rate(result):
        if not result or "gflops" not in result or "seconds" not in result or not peak32:
            return "-"
        achieved = result["gflops"] / result["seconds"]
        return f"{result['gflops']:.1f} GFLOP, {achieved:.0f} GFLOP/s ({achieved / peak32:.0%} of peak)"

    if "forward/keras_fpn" in results and "pyramid/keras_fpn" in results:
        lines += ["### keras_fpn vs keras-hub",
                  "",
                  "| measurement | keras_fpn | keras-hub | keras-hub / keras_fpn | keras_fpn peak memory | "
                  "keras-hub peak memory | keras_fpn FLOPs and rate |",
                  "|---|---|---|---|---|---|---|"]
        rows = [("FeaturePyramid alone (C3-C5 -> P3-P7)", "pyramid"), ("raw forward (`tf.function`)", "forward"),
                ("`predict_on_batch`, low scores (none pass)", "predict_low"),
                ("`predict_on_batch`, high scores (all pass)", "predict_high"),
                ("exported SavedModel, one image (see note)", "serving"),
                (f"training step, batch {config['train_batch']} (`fit`)", "train")]
        for label, key in rows:
            mine, hub = r(f"{key}/keras_fpn"), r(f"{key}/keras_hub")
            lines.append(f"| {label} | {_ms(mine)} | {_ms(hub)} | {_ratio(hub, mine)} | {_gb(mine)} | {_gb(hub)} | "
                         f"{rate(mine) if key in ('pyramid', 'forward') else ''} |")
        for label, key in (("training step, zoo preset `retinanet_resnet50_fpn` (backbone BatchNorm frozen)",
                            "train_preset"), ("training step, `mixed_bfloat16` policy", "train_mixed")):
            mine, hub = r(f"{key}/keras_fpn"), r("train/keras_hub")
            if mine:
                lines.append(f"| {label} | {_ms(mine)} | {_ms(hub)} (as above) | {_ratio(hub, mine)} | {_gb(mine)} | "
                             f"{_gb(hub)} | |")
        pipeline = r("pipeline/keras_fpn") or {}
        if "images_per_s" in pipeline:
            lines.append(f"| input pipeline, raccoon JPEGs + augmentation, {config['size']}px | "
                         f"{pipeline['images_per_s']:.1f} images/s | (no detection pipeline) | - | {_gb(pipeline)} | - | |")
        forward_hub = r("forward/keras_hub")
        if forward_hub and "gflops" in forward_hub:
            lines += ["", f"keras-hub forward: {rate(forward_hub)}; parameters keras_fpn "
                          f"{r('forward/keras_fpn')['parameters']:,}, keras-hub {forward_hub['parameters']:,}."]
        serving, serving_hub = r("serving/keras_fpn") or {}, r("serving/keras_hub") or {}
        if "seconds" in serving:
            lines += ["", f"SavedModel: keras_fpn {serving['disk_mb']:.1f} MB on disk for {serving['weights_mb']:.1f} "
                          f"MB of weights, serving {serving['seconds'] * 1000:,.0f} ms vs in-process predict "
                          f"{serving['in_process_predict'] * 1000:,.0f} ms "
                          f"({serving['seconds'] / serving['in_process_predict']:.2f}x; {serving['note']})."]
        if "seconds" in serving_hub:
            lines += [f"keras-hub: {serving_hub['disk_mb']:.1f} MB for {serving_hub['weights_mb']:.1f} MB of "
                      f"weights ({serving_hub['note']})."]
        for key in ("predict_low", "predict_high"):
            mine, forward = r(f"{key}/keras_fpn"), r("forward/keras_fpn")
            if mine and forward and "seconds" in mine and "seconds" in forward:
                lines.append(f"keras_fpn `{key}` / raw forward: {mine['seconds'] / forward['seconds']:.3f}x.")
        lines.append("")

    both = r("interleaved") or {}
    if "forward/keras_fpn" in both:
        lines += ["FeaturePyramid and forward with both libraries in one process, calls alternating (separate "
                  "processes differ by a few per cent here): FeaturePyramid "
                  f"{_ms(both, 'pyramid/keras_fpn')} vs {_ms(both, 'pyramid/keras_hub')} "
                  f"(keras-hub / keras_fpn {both['pyramid/keras_hub'] / both['pyramid/keras_fpn']:.2f}x), forward "
                  f"{_ms(both, 'forward/keras_fpn')} vs {_ms(both, 'forward/keras_hub')} "
                  f"({both['forward/keras_hub'] / both['forward/keras_fpn']:.2f}x).", ""]

    if "forward/keras_fpn/bfloat16" in results:
        lines += ["### bfloat16 inference (`RetinaNet.with_dtype(\"bfloat16\")`)", "",
                  "| measurement | float32 | bfloat16 | speed-up | float32 peak memory | bfloat16 peak memory |",
                  "|---|---|---|---|---|---|"]
        for label, key in (("raw forward", "forward"), ("`predict_on_batch`, low scores", "predict_low"),
                           ("`predict_on_batch`, high scores", "predict_high"),
                           ("SavedModel `serving_default` on JPEG bytes", "serving")):
            full, half = r(f"{key}/keras_fpn"), r(f"{key}/keras_fpn/bfloat16")
            lines.append(f"| {label} | {_ms(full)} | {_ms(half)} | {_ratio(full, half)} | {_gb(full)} | {_gb(half)} |")
        half_serving = r("serving/keras_fpn/bfloat16") or {}
        if "disk_mb" in half_serving:
            lines += ["", f"bfloat16 SavedModel: {half_serving['disk_mb']:.1f} MB on disk."]
        agreement = r("agreement") or {}
        if "float32" in agreement:
            f32, b16 = agreement["float32"], agreement["bfloat16"]
            lines += ["", f"Agreement on {agreement['images']} held-out shapes images (the main job's trained model, "
                          f"pycocotools): AP float32 {f32['AP']:.4f}, bfloat16 {b16['AP']:.4f} "
                          f"(change {(b16['AP'] - f32['AP']) * 100:+.2f} points); AP50 {f32['AP50']:.4f} vs "
                          f"{b16['AP50']:.4f}."]
        elif agreement:
            lines += ["", f"Agreement: {agreement.get('skipped') or agreement.get('error')}"]
        lines.append("")

    if any(key.startswith("scale/") for key in results):
        lines += ["### Scaling (keras_fpn, float32 raw forward)", "", "| input | batch | forward | per image | "
                  "peak memory |", "|---|---|---|---|---|"]
        for size in config["sizes"]:
            result = r(f"scale/size{size}")
            lines.append(f"| {size}x{size} | 1 | {_ms(result)} | {_ms(result)} | {_gb(result)} |")
        for batch in config["batches"]:
            result = r(f"scale/batch{batch}") or {}
            per_image = {"seconds": result["seconds"] / batch} if "seconds" in result else result
            lines.append(f"| {config['size']}x{config['size']} | {batch} | {_ms(result)} | {_ms(per_image)} | "
                         f"{_gb(result)} |")
        decode = r("decode") or {}
        if "rows" in decode:
            lines += ["", f"Decoding ({decode['anchors']:,} anchors x {config['classes']} classes, most scores above "
                          "the threshold): top-k per level, box decoding, per-class NMS.", "",
                      "| pre_nms_topk | candidates into NMS | decode |", "|---|---|---|"]
            for row in decode["rows"]:
                lines.append(f"| {row['pre_nms_topk']:,} | {row['candidates']:,} | {_ms(row)} |")
        lines.append("")
    errors = {key: value["error"] for key, value in results.items() if "error" in value}
    for key, error in errors.items():
        lines.append(f"- {key} failed: {error}")
    lines += [f"Machine: {machine()}. Command: `{command}`."]
    return "\n".join(lines)


def write_readme(text):
    with open(README) as file:
        readme = file.read()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} block to replace.")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(README, "w") as file:
        file.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="128 px, 4 classes, one run each, tasks in one process: a smoke run for CI")
    parser.add_argument("--sections", nargs="+", choices=("compare", "interleaved", "bfloat16", "scaling"),
                        default=["compare", "bfloat16", "scaling"])
    parser.add_argument("--no-keras-hub", action="store_true", help="leave keras-hub's column empty")
    parser.add_argument("--runs", type=int, help="timed calls per measurement (default 5; tiny 1)")
    parser.add_argument("--write", action="store_true", help=f"replace the tables in {os.path.relpath(README, ROOT)}")
    parser.add_argument("--json", help="also save the raw results here")
    parser.add_argument("--worker", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = TASKS[args.worker](json.loads(args.config), **json.loads(args.kwargs))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    config = dict(TINY if args.tiny else FULL)
    if args.runs:
        config["runs"] = args.runs
    hub = not args.no_keras_hub and has_keras_hub()
    if not hub and not args.no_keras_hub:
        print("keras-hub is not installed (pip install -e \".[bench]\"): its column stays empty.", flush=True)
    shown = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--write"]
    if "--json" in shown:
        del shown[shown.index("--json"):shown.index("--json") + 2]
    command = "python benchmarks/suite.py " + " ".join(shown)
    start = time.perf_counter()
    results = run_sections(config, args.sections, hub, in_process=args.tiny)
    text = tables(results, config, command.strip())
    print()
    print(text)
    print(f"\nsuite done in {time.perf_counter() - start:.0f}s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"config": config, "results": results}, file, indent=2)
    if args.write:
        write_readme(text)
        print(f"tables written to {os.path.relpath(README, ROOT)}")
    failed = [key for key, value in results.items() if "error" in value]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
