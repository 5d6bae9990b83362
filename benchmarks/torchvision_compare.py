"""A torchvision detector and its keras_fpn conversion side by side on this CPU: conversion time, detection time on
one 800x1333 image (both resize, run and post-process it), the SavedModel's serving time, and each side's peak
memory (each side in its own process).

Needs torch and torchvision (`pip install torch==2.13.0`, `pip install --no-deps torchvision==0.28.0`); the weights
are the seeded ones of tests/fixtures/torchvision/reference.py (nothing is downloaded), so the two sides run the
same function (tests/convert/test_torchvision.py shows it).

    python benchmarks/torchvision_compare.py            # RetinaNet v1, both sides, a table
    python benchmarks/torchvision_compare.py --runs 3   # fewer timed calls
    python benchmarks/torchvision_compare.py --model maskrcnn_resnet50_fpn_v2   # any model reference.py builds
"""

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from timing import median_time  # noqa: E402

HEIGHT, WIDTH = 800, 1333


def _reference():
    path = os.path.join(ROOT, "tests", "fixtures", "torchvision", "reference.py")
    spec = importlib.util.spec_from_file_location("torchvision_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(reference, name):
    with open(os.path.join(ROOT, "tests", "fixtures", "torchvision", f"{name}.json")) as file:
        return reference.random_state_dict(json.load(file)["shapes"])


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_torch(name, runs):
    import torch

    reference = _reference()
    library = reference._install_pure_torch_ops()  # noqa: F841 - keeps the op definitions alive
    model = reference.MODELS[name][0]()
    model.transform.min_size, model.transform.max_size = (800,), 1333
    model.load_state_dict({key: torch.from_numpy(value) for key, value in _weights(reference, name).items()})
    model.eval()
    image = torch.from_numpy(reference.images(HEIGHT, WIDTH, 0)[0]).permute(2, 0, 1).float() / 255

    def detect():
        with torch.no_grad():
            return model([image])

    seconds = median_time(detect, runs)
    return {"detect_ms": seconds * 1000, "peak_mb": _peak_mb(), "threads": torch.get_num_threads()}


def run_keras(name, runs):
    import numpy as np

    from keras_fpn.convert import from_torchvision
    from keras_fpn.export import export_saved_model

    reference = _reference()
    weights = _weights(reference, name)
    start = time.perf_counter()
    model = from_torchvision(name, weights)
    convert_s = time.perf_counter() - start
    image = reference.images(HEIGHT, WIDTH, 0)[:1]
    detect_s = median_time(lambda: model.predict_on_batch(image), runs)

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        path = export_saved_model(model, folder, image_size=(HEIGHT, WIDTH))
        served = tf.saved_model.load(path).signatures["image_tensor"]
        serve_s = median_time(lambda: served(images=tf.constant(image)), runs)
    return {"convert_s": convert_s, "detect_ms": detect_s * 1000, "serve_ms": serve_s * 1000,
            "peak_mb": _peak_mb(), "count": int(np.asarray(model.predict_on_batch(image)["num_detections"])[0])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="retinanet_resnet50_fpn",
                        help="a torchvision builder name of tests/fixtures/torchvision/reference.py's MODELS")
    parser.add_argument("--part", choices=("torch", "keras"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        print(json.dumps(run_torch(args.model, args.runs) if args.part == "torch" else
                         run_keras(args.model, args.runs)))
        return 0
    results = {}
    for part in ("torch", "keras"):
        output = subprocess.run([sys.executable, __file__, "--part", part, "--runs", str(args.runs), "--model",
                                 args.model], check=True,
                                capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        results[part] = json.loads(output.stdout.strip().splitlines()[-1])
    torch_side, keras_side = results["torch"], results["keras"]
    print(f"{args.model}, one {HEIGHT}x{WIDTH} image, median of {args.runs} calls after one warm-up ({os.cpu_count()} "
          "cores):")
    print(f"  torchvision forward (eval, no_grad)   {torch_side['detect_ms']:8.0f} ms   peak {torch_side['peak_mb']:6.0f} MB")
    print(f"  keras_fpn predict_on_batch            {keras_side['detect_ms']:8.0f} ms   peak {keras_side['peak_mb']:6.0f} MB")
    print(f"  keras_fpn SavedModel image_tensor     {keras_side['serve_ms']:8.0f} ms")
    print(f"  conversion (build + copy weights)     {keras_side['convert_s']:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
