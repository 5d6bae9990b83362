"""Measures the zoo's figures: parameters, GFLOPs at the record's input size, and CPU latency of one detection (or
one class map, for the segmentation records).

Every model is built from its record with random weights (nothing is downloaded) and the record's `num_classes`:

    python benchmarks/zoo_figures.py                 # print the figures
    python benchmarks/zoo_figures.py --write         # and store them in models/NAME.json
    python benchmarks/zoo_figures.py --names retinanet_resnet50_fpn

GFLOPs are those of the model's forward pass or of its whole `detect` (proposals, RoI heads), whichever is larger:
the same for RetinaNet (decoding adds no FLOPs the profiler counts), the RoI heads included for Faster R-CNN.
Latency is the median wall time of `model.predict_on_batch` on one image at the input size (backbone, pyramid,
heads, box decoding and NMS), over `--runs` calls after two warm-up calls, in this process. mAP is not measured
here; it is written by hand from a training run, with that run's command, and kept by `--write`.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "python benchmarks/zoo_figures.py --write"


def machine():
    import keras
    import tensorflow as tf

    return (f"{os.cpu_count()}-core {platform.machine()} CPU, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            "float32, batch 1")


def measure(name, runs):
    import keras

    import tensorflow as tf

    from keras_fpn import models
    from keras_fpn.utils.flops import count_flops, count_function_flops

    record = models.get(name)
    height, width = record["input_size"]
    model = models.build(name, backbone_weights=None)
    images = keras.random.uniform((1, height, width, 3), 0.0, 255.0, seed=0)
    for _ in range(2):
        model.predict_on_batch(images)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - start)
    return {
        "parameters": model.count_params(),
        # The whole detection: for a two-stage detector the RoI heads run after the functional forward pass.
        "gflops": round(max(count_flops(model, (height, width, 3)),
                            count_function_flops(model.detect, tf.TensorSpec((1, height, width, 3)))
                            if model.task == "detection" else 0) / 1e9, 2),
        "cpu_latency_ms": round(statistics.median(times) * 1000, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", nargs="*", help="zoo names (default: all)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="store the figures in models/NAME.json")
    args = parser.parse_args(argv)

    from keras_fpn import models

    names = args.names or models.list()
    where = machine()
    print(f"{'model':<36}{'parameters':>14}{'GFLOPs':>10}{'CPU ms':>10}   ({where})", flush=True)
    for name in names:
        figures = measure(name, args.runs)
        print(f"{name:<36}{figures['parameters']:>14,}{figures['gflops']:>10.2f}{figures['cpu_latency_ms']:>10.1f}",
              flush=True)
        if args.write:
            path = os.path.join(ROOT, "models", f"{name}.json")
            with open(path) as file:
                record = json.load(file)
            record["figures"].update(figures, measured_with=COMMAND, machine=where)
            with open(path, "w") as file:
                json.dump(record, file, indent=2)
                file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
