"""Per-class NMS under the TensorFlow backend: TensorFlow's combined_non_max_suppression against keras_fpn's
`keras.ops` NMS (`keras_fpn.detection.nms.class_nms`, the one JAX uses), on the same random candidates.

    python benchmarks/nms_speed.py                # batch 2, 3,000 candidates, 4 classes, 100 detections
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fpn.detection.nms import class_nms  # noqa: E402
from timing import median_time  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 400, (args.batch, args.candidates, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 120, corner.shape)], -1).astype("float32")
    scores = rng.uniform(0, 1, (args.batch, args.candidates)).astype("float32")
    classes = rng.integers(0, args.classes, (args.batch, args.candidates)).astype("int32")
    spec = [tf.TensorSpec(boxes.shape), tf.TensorSpec(scores.shape), tf.TensorSpec(classes.shape, tf.int32)]
    ours = tf.function(lambda b, s, c: class_nms(b, s, c, 100, 0.5, 0.05), input_signature=spec)
    theirs = tf.function(lambda b, s, c: tf.image.combined_non_max_suppression(
        b[:, :, None], tf.one_hot(c, args.classes) * s[..., None], 100, 100, 0.5, 0.05, pad_per_class=False,
        clip_boxes=False), input_signature=spec)
    for name, function in (("tf.image.combined_non_max_suppression", theirs), ("keras_fpn class_nms", ours)):
        seconds = median_time(lambda: function(boxes, scores, classes), args.runs)
        print(f"{name:<40} {1000 * seconds:8.2f} ms")


if __name__ == "__main__":
    main()
