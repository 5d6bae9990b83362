"""Detector speed under the JAX backend (the GPU machines lent here have JAX, not TensorFlow), and JAX vs
TensorFlow side by side on one machine.

    python benchmarks/gpu.py                                   # JAX, ResNet50-FPN RetinaNet, 800x1333, batch 1 and 8,
                                                               # float32 and bfloat16 (a GPU machine)
    python benchmarks/gpu.py --backends jax tensorflow --size 512 512 --batches 1 --dtypes float32   # CPU, both
    python benchmarks/gpu.py --model fasterrcnn_resnet50_fpn     # the same for R50-FPN Faster R-CNN (Mask R-CNN too)
    python benchmarks/gpu.py --model retinanet_mobilenetv3small_shapes --size 128 128 --batches 16 \\
        --backends jax tensorflow                              # the main job's model, both backends

Measures, for each backend, batch size and dtype, the median of `--runs` calls after warm-up calls (compilation
is not timed; its time is reported apart):
- forward: the model's raw outputs (`model(images)`, jit-compiled under JAX, a `tf.function` under TensorFlow);
- predict: `predict_on_batch`, the forward pass plus box decoding and per-class NMS (keras.ops NMS under JAX,
  TensorFlow's combined NMS under TensorFlow);
- train step: `train_on_batch` on 4 boxes per image with the zoo record's optimizer (Adam here: the figure is the
  step, not the recipe). bfloat16 trains under the `mixed_bfloat16` policy; inference uses
  `model.with_dtype("bfloat16")`.

Images are random, padded to a multiple of the coarsest stride (800x1333 becomes 896x1408 for RetinaNet's P7, as
`detection_pipeline` pads). Weights are random (`backbone_weights=None`): speed does not depend on them. Each
backend runs in its own process (`KERAS_BACKEND` is read once per process). The references: the FPN paper's
0.148 s per image (R50 Faster R-CNN, one M40) and detectron2's 0.038 s (R50-FPN Faster R-CNN, one V100).
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

from timing import median_time


def block(result):
    """Waits for asynchronous dispatch (JAX returns before the device is done)."""
    import keras

    for value in keras.tree.flatten(result):
        if hasattr(value, "block_until_ready"):
            value.block_until_ready()
        elif hasattr(value, "numpy"):
            value.numpy()
    return result


def measure(args):
    """Runs in the process of one backend; returns one row per (batch, dtype)."""
    import keras
    import numpy as np

    from keras_fpn import models

    backend = keras.backend.backend()
    rows = []
    for dtype in args.dtypes:
        for batch in args.batches:
            keras.backend.clear_session()
            keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
            model = models.build(args.model, backbone_weights=None)
            keras.config.set_dtype_policy("float32")
            stride = model.input_multiple
            height, width = (math.ceil(side / stride) * stride for side in args.size)
            rng = np.random.default_rng(0)
            images = rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")
            corner = rng.uniform(0, min(height, width) / 2, (batch, 4, 2))
            boxes = np.concatenate([corner, corner + rng.uniform(16, 128, (batch, 4, 2))], -1).astype("float32")
            targets = {"boxes": boxes, "labels": rng.integers(0, model.num_classes, (batch, 4)).astype("int32")}
            if model.uses_masks:  # Mask R-CNN: each box filled
                ys, xs = np.arange(height)[:, None], np.arange(width)[None, :]
                targets["masks"] = np.stack([np.stack([
                    (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2) for x1, y1, x2, y2 in image_boxes])
                    for image_boxes in boxes]).astype("uint8")
            row = {"backend": backend, "model": args.model, "batch": batch, "dtype": dtype,
                   "size": [height, width]}

            model.compile(optimizer="adam")
            start = time.perf_counter()
            block(model.train_on_batch(images, targets))
            row["train_compile_s"] = round(time.perf_counter() - start, 1)
            row["train_step_ms"] = round(
                1000 * median_time(lambda: block(model.train_on_batch(images, targets)), args.runs, warmup=0), 1)

            inference = model.with_dtype("bfloat16") if dtype == "bfloat16" else model
            if backend == "jax":
                import jax

                variables = [v.value for v in inference.variables]

                @jax.jit
                def forward(variables, images):
                    mapping = list(zip(inference.variables, variables))
                    with keras.StatelessScope(state_mapping=mapping):
                        return inference(images, training=False)

                def run_forward():
                    return block(forward(variables, images))
            else:
                import tensorflow as tf

                compiled = tf.function(lambda x: inference(x, training=False))

                def run_forward():
                    return block(compiled(images))

            start = time.perf_counter()
            run_forward()
            row["forward_compile_s"] = round(time.perf_counter() - start, 1)
            row["forward_ms"] = round(1000 * median_time(run_forward, args.runs, warmup=0), 1)
            start = time.perf_counter()
            block(inference.predict_on_batch(images))
            row["predict_compile_s"] = round(time.perf_counter() - start, 1)
            row["predict_ms"] = round(
                1000 * median_time(lambda: block(inference.predict_on_batch(images)), args.runs, warmup=0), 1)
            row["predict_ms_per_image"] = round(row["predict_ms"] / batch, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def device_name():
    try:
        import jax

        kinds = sorted({device.device_kind for device in jax.devices()})
    except Exception:  # noqa: BLE001 - JAX missing: a CPU machine with TensorFlow only
        kinds = ["cpu"]
    if kinds == ["cpu"]:
        model = platform.processor()
        if os.path.exists("/proc/cpuinfo"):
            with open("/proc/cpuinfo") as file:
                model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), model)
        return f"{os.cpu_count()}-core {platform.machine()} CPU ({model or 'unknown model'})"
    return ", ".join(kinds)


def table(rows):
    lines = ["| backend | model | batch | dtype | input | forward ms | predict ms (per image) | train step ms | "
             "compile s (train / forward / predict) |", "|---|---|---:|---|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['model']} | {row['batch']} | {row['dtype']} | "
                     f"{row['size'][0]}x{row['size'][1]} | {row['forward_ms']:,} | {row['predict_ms']:,} "
                     f"({row['predict_ms_per_image']:,}) | {row['train_step_ms']:,} | {row['train_compile_s']} / "
                     f"{row['forward_compile_s']} / {row['predict_compile_s']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="retinanet_resnet50_fpn", help="a zoo name (default %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", nargs="+", choices=("jax", "tensorflow", "torch"), default=["jax"])
    parser.add_argument("--output", help="also write the rows as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        measure(args)
        return 0

    rows = []
    for backend in args.backends:
        command = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model, "--size",
                   *map(str, args.size), "--batches", *map(str, args.batches), "--dtypes", *args.dtypes,
                   "--runs", str(args.runs)]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        print(f"== {backend}", flush=True)
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode:
            print(f"{backend}: exited with {result.returncode}", flush=True)
    print(f"\n{device_name()}; median of {args.runs} calls after warm-up; random weights and images")
    print(table(rows))
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"device": device_name(), "rows": rows}, file, indent=1)
    return 0 if rows and len(rows) == len(args.backends) * len(args.batches) * len(args.dtypes) else 1


if __name__ == "__main__":
    sys.exit(main())
