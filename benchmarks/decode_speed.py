"""Time of RetinaNet decoding (top-k per level + per-class NMS) alone, at COCO scale.

ResNet50-FPN P3-P7 at 640x640 has 76,725 anchors; with 80 classes that is 6.1M scores per image. Two regimes:
"low" scores (a fresh model: every logit near the prior, p ~ 0.01, below the 0.05 threshold) and "high" scores
(logits spread so many candidates pass the threshold and NMS has work to do).

    python benchmarks/decode_speed.py [--batch 1] [--repeats 10]

Prints the median over repeats after one warm-up call, in milliseconds per batch.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fpn.detection.anchors import AnchorGenerator  # noqa: E402
from keras_fpn.detection.decoder import decode_detections  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--classes", type=int, default=80)
    args = parser.parse_args()

    size = args.image_size
    shapes = {level: (-(-size // 2**level), -(-size // 2**level)) for level in range(3, 8)}
    generator = AnchorGenerator(3, 7)
    anchors = generator(shapes)
    per_level = [h * w * 9 for h, w in shapes.values()]
    n = int(anchors.shape[0])
    rng = np.random.default_rng(0)
    deltas = tf.constant(rng.normal(0, 0.1, (args.batch, n, 4)), tf.float32)
    regimes = {
        "low": tf.constant(rng.normal(-4.6, 0.3, (args.batch, n, args.classes)), tf.float32),
        "high": tf.constant(rng.normal(-4.0, 2.0, (args.batch, n, args.classes)), tf.float32),
    }
    lookups = generator.lookups(shapes)
    decode = tf.function(lambda d, c: decode_detections(d, c, lookups, per_level, size, size))
    print(f"anchors: {n:,}, classes: {args.classes}, batch: {args.batch}")
    for name, logits in regimes.items():
        decode(deltas, logits)  # trace and warm up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = decode(deltas, logits)
            result["num_detections"].numpy()
            times.append(time.perf_counter() - start)
        passing = int(tf.reduce_sum(tf.cast(tf.sigmoid(logits) > 0.05, tf.int32)))
        print(f"{name:>4} scores: {passing:>9,} scores above 0.05; decode {1000 * statistics.median(times):8.1f} ms "
              f"median of {args.repeats}; detections in image 0: {int(result['num_detections'][0])}")


if __name__ == "__main__":
    main()
