"""keras_fpn's RetinaNet and keras-hub's, each exported to LiteRT and ONNX the way its library offers: what the file
holds, its size, and its latency in the LiteRT interpreter and onnxruntime (issue #28's comparison with keras-hub).

    pip install -e ".[bench,export]"
    python benchmarks/export_keras_hub.py                 # ResNet50-FPN, 80 classes, 640x640 (about 10 min, 2 cores)
    python benchmarks/export_keras_hub.py --tiny          # a smoke run: tiny backbones, figures meaningless

Both models are the benchmark suite's (`benchmarks/suite.py`): the paper's ResNet50-FPN RetinaNet, P3-P7 at 256
channels, random weights. keras-hub 0.32 ships its detector's `model.export` as Keras's exporter gives it: the
network's raw outputs (per-anchor box deltas and class logits for every anchor), with its preprocessing, box
decoding and NMS left to the caller (they are Python-side in `predict`). keras_fpn's `model.export` holds the whole
detector: uint8 images in, boxes, classes, scores and a count out. Each file is timed on one image, batch 1 (median
of `--runs` calls after one warm-up; LiteRT on 2 threads).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suite  # noqa: E402


def _export(library, model, path, fmt, size):
    """Exports as a user of the library would: keras_fpn's detector export, or keras-hub's model with Keras's own
    exporter on the float image its backbone takes."""
    import keras

    if library == "keras_fpn":
        return model.export(path, format=fmt, image_size=(size, size), verbose=False)
    spec = [keras.InputSpec(shape=(1, size, size, 3), dtype="float32")]
    return model.export(path, format=fmt, input_signature=spec, verbose=False)


def _runner(fmt, path):
    """`(call, {output name: shape})` of an exported file."""
    import numpy as np

    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        signature = Interpreter(model_path=path, num_threads=2).get_signature_runner()
        name, = signature.get_input_details()
        detail = signature.get_input_details()[name]

        def call():
            return signature(**{name: np.zeros(detail["shape"], detail["dtype"])})
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        dtype = np.uint8 if "uint8" in feed.type else np.float32
        shape = [1 if not isinstance(side, int) else side for side in feed.shape]

        def call():
            names = [output.name for output in session.get_outputs()]
            return dict(zip(names, session.run(None, {feed.name: np.zeros(shape, dtype)})))
    return call, {key: tuple(np.shape(value)) for key, value in call().items()}


def _builtin_only(path):
    """True when a LiteRT file needs no Select TF (Flex) ops."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    return not any(code.customCode and code.customCode.startswith(b"Flex") for code in model.operatorCodes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny backbones: a smoke run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    config = dict(suite.TINY if args.tiny else suite.FULL)
    size = config["size"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for library in ("keras_fpn", "keras_hub"):
            model = suite.build(library, config)
            for fmt, suffix in (("litert", "tflite"), ("onnx", "onnx")):
                path = os.path.join(folder, f"{library}.{suffix}")
                start = time.perf_counter()
                _export(library, model, path, fmt, size)
                seconds = time.perf_counter() - start
                call, outputs = _runner(fmt, path)
                times = []
                for _ in range(args.runs):
                    begin = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - begin)
                rows.append((library, fmt, os.path.getsize(path) / 1e6, statistics.median(times) * 1000, seconds,
                             _builtin_only(path) if fmt == "litert" else None, outputs))
                print(f"  {library} {fmt} done", flush=True)
            del model
    print(f"\nRetinaNet ({'tiny backbones' if args.tiny else 'ResNet50-FPN'}), {config['classes']} classes, "
          f"{size}x{size}, batch 1, random weights ({os.cpu_count()} cores):")
    print(f"{'library':<10}{'format':<8}{'file MB':>9}{'ms/image':>10}{'export s':>10}  outputs")
    for library, fmt, megabytes, ms, seconds, builtin, outputs in rows:
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in sorted(outputs.items()))
        note = "" if builtin is None else (" (builtin ops only)" if builtin else " (needs Select TF ops)")
        print(f"{library:<10}{fmt:<8}{megabytes:>9.1f}{ms:>10.1f}{seconds:>10.1f}  {shapes}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
