"""The exported SavedModel of a ResNet50-FPN RetinaNet: size on disk against its weights, load time, and the
serving signature's latency against in-process `predict`.

    python benchmarks/export_resnet50.py [--image-size 640] [--repeats 5] [--jpeg PATH]

Random weights (nothing is downloaded); 80 classes; P3-P7; batch 1. Latency is the median over `--repeats` calls
after one warm-up call: `serving_default` gets the encoded JPEG (decode + resize/pad + detect + NMS in the graph);
`predict_on_batch` gets the same image already decoded, resized and padded.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fpn import RetinaNet  # noqa: E402
from keras_fpn.datasets import resize_and_pad  # noqa: E402
from keras_fpn.datasets.records import decode_image  # noqa: E402
from keras_fpn.export import export_saved_model  # noqa: E402
from timing import median_time  # noqa: E402

LOAD = "import sys, time; t = time.perf_counter(); import tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); " \
       "print(time.perf_counter() - t)"


def median_ms(function, repeats):
    return 1000 * median_time(function, repeats)


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jpeg", default=None, help="a JPEG to serve (default: a generated 640x480 one)")
    args = parser.parse_args()

    model = RetinaNet(num_classes=80, backbone="ResNet50", backbone_weights=None)
    if args.jpeg:
        jpeg = open(args.jpeg, "rb").read()
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
        jpeg = tf.io.encode_jpeg(pixels).numpy()
    image = decode_image(jpeg)
    prepared, _, _ = resize_and_pad(image, tf.zeros([0, 4]), (args.image_size, args.image_size), 128)
    batch = prepared[None]
    predict_ms = median_ms(lambda: model.predict_on_batch(batch), args.repeats)
    weights = sum(variable.numpy().nbytes for variable in model.variables)

    with tempfile.TemporaryDirectory() as base:
        start = time.perf_counter()
        path = export_saved_model(model, base, image_size=args.image_size)
        export_s = time.perf_counter() - start
        total, variables = folder_bytes(path), folder_bytes(os.path.join(path, "variables"))
        load_s = float(subprocess.run([sys.executable, "-c", LOAD, path], capture_output=True, text=True,
                                      check=True).stdout.split()[-1])
        serve = tf.saved_model.load(path).signatures["serving_default"]
        request = tf.constant([jpeg])
        serve_ms = median_ms(lambda: serve(images=request), args.repeats)
        keras_path = os.path.join(base, "keras_export")
        # Keras's own export of the raw outputs, for comparison (`model.export` of a keras_fpn detector holds the
        # whole detector since it exports LiteRT and ONNX too).
        keras.Model.export(model, keras_path, format="tf_saved_model", verbose=False)
        keras_total = folder_bytes(keras_path)

    print(f"ResNet50-FPN RetinaNet, 80 classes, {model.count_params():,} parameters, "
          f"{args.image_size}x{args.image_size}, batch 1")
    print(f"{'weights (float32)':<42}{weights / 1e6:>10.1f} MB")
    print(f"{'SavedModel on disk':<42}{total / 1e6:>10.1f} MB  ({total / weights:.3f}x the weights)")
    print(f"{'  of which variables/':<42}{variables / 1e6:>10.1f} MB  ({variables / weights:.3f}x)")
    print(f"{'Keras model.export (raw outputs only)':<42}{keras_total / 1e6:>10.1f} MB  ({keras_total / weights:.3f}x)")
    print(f"{'export time':<42}{export_s:>10.1f} s")
    print(f"{'import tensorflow + load, new process':<42}{load_s:>10.1f} s")
    print(f"{'in-process predict_on_batch (prepared)':<42}{predict_ms:>10.0f} ms")
    print(f"{'serving_default on the JPEG bytes':<42}{serve_ms:>10.0f} ms  ({serve_ms / predict_ms:.2f}x)")


if __name__ == "__main__":
    main()
