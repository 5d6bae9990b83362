"""Where the first `fit` step of a small RetinaNet goes: building the model, tracing the train step, running it.

The main job's model (`retinanet_mobilenetv3small_shapes`, 0.8M parameters, 128x128 images, batch 8) and Adam.
Each configuration runs in a fresh process, because TensorFlow keeps traced functions for the life of one:

- `deferred`: Keras's default on TensorFlow without a strategy: the optimizer is built inside the first trace of
  the train step, which TensorFlow then traces a second time (variables were created in the first trace);
- `eager`: `Detector.make_train_function` builds the optimizer first (what keras_fpn does, for every detector).

    python benchmarks/first_step.py [--repeats 1]

Prints seconds for the model build, the first `train_on_batch` (trace + run), and the median of 20 later ones.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHILD = r"""
import json, sys, time
import numpy as np
import keras
from keras_fpn import RetinaNet
from keras_fpn.datasets import generate_shapes
from keras_fpn.utils import distribute

if sys.argv[1] == "deferred":
    distribute.build_optimizer_before_tracing = lambda model: None  # Keras's own behaviour
    import keras_fpn.detection.detector as detector
    detector.build_optimizer_before_tracing = distribute.build_optimizer_before_tracing
start = time.perf_counter()
model = RetinaNet.from_preset("retinanet_mobilenetv3small_shapes", num_classes=3, backbone_weights=None)
model.compile(optimizer="adam")
built = time.perf_counter()
images, boxes, labels = generate_shapes(8, 128, max_objects=4, seed=0)
images = images.astype("float32")
y = {"boxes": boxes, "labels": labels}
model.train_on_batch(images, y)
first = time.perf_counter()
steps = []
for _ in range(20):
    begin = time.perf_counter()
    model.train_on_batch(images, y)
    steps.append(time.perf_counter() - begin)
print(json.dumps({"build": built - start, "first_step": first - built, "later_step": sorted(steps)[10]}))
"""


def run(mode):
    output = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration (median shown)")
    args = parser.parse_args()
    print(f"{'optimizer built':<16} {'model build s':>14} {'first step s':>13} {'later step s':>13}")
    for mode in ("deferred", "eager"):
        runs = [run(mode) for _ in range(args.repeats)]
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{mode:<16} {row['build']:>14.2f} {row['first_step']:>13.2f} {row['later_step']:>13.3f}")


if __name__ == "__main__":
    main()
