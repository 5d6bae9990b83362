"""One trained detector in every export format, side by side: file size, latency per image and COCO AP on held-out
images, and how many of `predict`'s detections each format reproduces.

    python benchmarks/export_formats.py --run runs/demo          # the main job's trained shapes RetinaNet
    python benchmarks/export_formats.py --run runs/demo --formats litert_dynamic litert_int8   # some formats only

Formats: TF `predict` (the reference), the SavedModel of `model.export` (Keras's `serve` endpoint), LiteRT float32,
LiteRT with dynamic-range and with int8 post-training quantization (ai-edge-litert's interpreter, 2 threads), and
ONNX (onnxruntime). Every format gets the same uint8 images at the run's image size, one at a time (batch 1).
"matched" is the fraction of `predict`'s detections (score >= 0.3) that the format reports too, with the same label
and IoU >= 0.9: the int8 criterion of the export issue (float formats give 1.000: they equal `predict`).
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from timing import median_time  # noqa: E402


# (row label, format key, file name)
FORMATS = [("TF predict", "predict", None), ("SavedModel (model.export)", "tf_saved_model", "saved"),
           ("LiteRT float32", "litert", "float.tflite"), ("LiteRT dynamic range", "litert_dynamic", "dynamic.tflite"),
           ("LiteRT int8", "litert_int8", "int8.tflite"), ("ONNX (onnxruntime)", "onnx", "model.onnx")]


def _iou(a, b):
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # noqa: E731
    return intersection / np.maximum(area(a)[:, None] + area(b)[None, :] - intersection, 1e-9)


def matched_fraction(reference, found, min_score=0.3, iou=0.9):
    """Fraction of the reference's detections scoring at least `min_score` that `found` reports with the same
    label and IoU >= `iou`, over all images."""
    hits = total = 0
    for (boxes, scores, labels), (other_boxes, _, other_labels) in zip(reference, found):
        keep = scores >= min_score
        boxes, labels = boxes[keep], labels[keep]
        total += len(boxes)
        if len(boxes) and len(other_boxes):
            same = (labels[:, None] == other_labels[None, :]) & (_iou(boxes, other_boxes) >= iou)
            hits += int(np.sum(np.any(same, axis=1)))
    return hits / max(total, 1)


def exported_runner(fmt, path):
    """`image uint8 [H, W, 3] -> (boxes xyxy, scores, labels)` for an exported file."""
    if fmt.startswith("litert"):
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=path, num_threads=2).get_signature_runner()

        def run(image):
            return runner(images=image[None])
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]

        def run(image):
            return dict(zip(names, session.run(None, {"images": image[None]})))
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(path)

        def run(image):
            return {key: value.numpy() for key, value in loaded.serve(tf.constant(image[None])).items()}

    def detect(image):
        out = run(image)
        count = int(out["num_detections"][0])
        boxes = np.asarray(out["detection_boxes"][0, :count])[:, [1, 0, 3, 2]]
        return boxes, np.asarray(out["detection_scores"][0, :count]), np.asarray(out["detection_classes"][0, :count]).astype(int)

    return detect


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a training output folder (model.keras + run.json)")
    parser.add_argument("--dataset", default="shapes", help="held-out data (a keras-fpn dataset spec)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=200, help="held-out images scored")
    parser.add_argument("--representative", type=int, default=100, help="training images for int8 calibration")
    parser.add_argument("--timing-images", type=int, default=20, help="images timed per format")
    parser.add_argument("--formats", nargs="+", choices=[key for _, key, _ in FORMATS], default=None,
                        help="the formats to measure (default: all; `predict` is always the reference)")
    args = parser.parse_args()

    import keras

    from keras_fpn.datasets import detection_pipeline
    from keras_fpn.datasets.spec import load_dataset
    from keras_fpn.evaluation.coco import coco_metrics
    from keras_fpn.training import load_run

    model, run = load_run(args.run)
    image_size = tuple(run["image_size"])
    names = run.get("class_names")

    def images_of(split, count):
        data = load_dataset(args.dataset, split, class_names=names, max_images=count, image_size=image_size[0])
        return [(np.asarray(image[0], np.uint8), targets) for image, targets in
                detection_pipeline(data, 1, image_size, pad_to_multiple=1)]

    held_out = images_of(args.split, args.images)
    representative = [image for image, _ in images_of("train", args.representative)]
    ground_truth = []
    for image, targets in held_out:
        keep = np.asarray(targets["labels"][0]) >= 0
        ground_truth.append((*image_size, np.asarray(targets["boxes"][0])[keep], np.asarray(targets["labels"][0])[keep]))

    def predict(image):
        out = model.predict_on_batch(image[None])
        count = int(out["num_detections"][0])
        boxes = keras.utils.bounding_boxes.convert_format(out["boxes"][0, :count], model.bounding_box_format, "xyxy",
                                                          height=image_size[0], width=image_size[1])
        return np.asarray(boxes), np.asarray(out["scores"][0, :count]), np.asarray(out["labels"][0, :count])

    print(f"{args.run}: {type(model).__name__} {model.name}, {model.count_params():,} parameters, "
          f"{image_size[0]}x{image_size[1]} uint8, batch 1; {len(held_out)} held-out {args.dataset} images")
    rows = []
    reference = [predict(image) for image, _ in held_out]
    with tempfile.TemporaryDirectory() as folder:
        for label, fmt, name in FORMATS:
            if args.formats and fmt not in args.formats:
                continue
            if fmt == "predict":
                detect, size = predict, sum(weight.numpy().nbytes for weight in model.weights)
            else:
                path = os.path.join(folder, name)
                quantize = {"litert_dynamic": "dynamic", "litert_int8": "int8"}.get(fmt)
                model.export(path, format=fmt.split("_")[0] if fmt.startswith("litert") else fmt,
                             image_size=image_size, class_names=names, quantize=quantize,
                             representative_data=representative if quantize == "int8" else None, verbose=False)
                size = (os.path.getsize(path) if os.path.isfile(path) else
                        sum(os.path.getsize(os.path.join(root, file)) for root, _, files in os.walk(path) for file in files))
                detect = exported_runner(fmt, path)
            found = [detect(image) for image, _ in held_out]
            metrics = coco_metrics(ground_truth, found, model.num_classes, names)
            seconds = median_time(lambda: [detect(image) for image, _ in held_out[: args.timing_images]], 3)
            rows.append((label, size / 1e6, seconds / args.timing_images * 1000, metrics["AP"], metrics["AP50"],
                         matched_fraction(reference, found)))
            print(f"  {label} done", flush=True)
    print(f"\n{'format':<28}{'file MB':>9}{'ms/image':>10}{'AP':>8}{'AP50':>8}{'matched':>9}")
    for label, size, ms, ap, ap50, matched in rows:
        print(f"{label:<28}{size:>9.2f}{ms:>10.1f}{ap:>8.3f}{ap50:>8.3f}{matched:>9.3f}")
    print("(TF predict's 'file MB' is its float32 weights; matched: predict's detections scoring >= 0.3 found with "
          "the same label at IoU >= 0.9)")


if __name__ == "__main__":
    main()
