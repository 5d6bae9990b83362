"""The main job: train a small RetinaNet from scratch on generated shapes, then evaluate it with pycocotools."""

import os
import time

from keras_fpn import models
from keras_fpn.datasets import detection_pipeline, load_shapes
from keras_fpn.datasets.shapes import SHAPE_CLASSES
from keras_fpn.detection.retinanet import RetinaNet
from keras_fpn.evaluation.coco import evaluate_coco
from keras_fpn.training import save_run, train_detector
from keras_fpn.visualization import save_detection_grid

PRESET = "retinanet_mobilenetv3small_shapes"
IMAGE_SIZE = (128, 128)


def small_retinanet(num_classes=len(SHAPE_CLASSES)):
    """The demo detector, the zoo's `retinanet_mobilenetv3small_shapes`: MobileNetV3Small (minimalistic, random
    weights, BatchNorm momentum 0.9 so the statistics keep up with a short schedule) + FPN P3-P5 at 64 channels,
    2-conv heads, anchors from 24 px for 128 px images."""
    return RetinaNet.from_preset(PRESET, num_classes=num_classes)


def train_shapes_detector(steps=None, batch_size=None, train_images=2000, test_images=200, output_dir=None,
                          verbose=1, seed=0, preset=PRESET):
    """Trains a zoo model for shapes (default `small_retinanet`'s record; `"fasterrcnn_mobilenetv3small_shapes"`
    works the same) by its recipe and evaluates COCO metrics on held-out shapes.

    The recipe (`keras-fpn models retinanet_mobilenetv3small_shapes`): Adam with a cosine-decayed learning rate
    over 1500 steps of 16 images, then BatchNorm statistics recomputed over 20 training batches; `steps` and
    `batch_size` override it. Returns `(model, metrics, timings)` where `metrics` holds pycocotools' numbers for
    the untrained model, the trained model, and the trained model run in bfloat16 (`RetinaNet.with_dtype`). With
    `output_dir`, the model is saved there (`model.keras` and `run.json`, which `keras-fpn evaluate / export /
    predict` read), 8 held-out images with ground truth and detections as `detections.png`, and one held-out image
    as `example.png` (an input to try `keras-fpn predict` on).
    """
    import keras

    keras.utils.set_random_seed(seed)
    training = models.get(preset)["training"]
    if steps:
        training["steps"] = steps
    model = small_retinanet() if preset == PRESET else models.build(preset, num_classes=len(SHAPE_CLASSES))
    masks = model.uses_masks  # a MaskRCNN trains on the shapes' masks and is scored on them too
    iou_type = model.iou_types
    test = detection_pipeline(load_shapes(test_images, IMAGE_SIZE[0], seed=seed + 2, with_masks=masks), 25,
                              IMAGE_SIZE, pad_to_multiple=32, cache=True)
    timings = {}
    start = time.perf_counter()
    untrained = evaluate_coco(model, test, iou_type=iou_type)
    timings["evaluate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    model, _ = train_detector(model, load_shapes(train_images, IMAGE_SIZE[0], seed=seed + 1, with_masks=masks),
                              training, IMAGE_SIZE, batch_size=batch_size, verbose=verbose, seed=seed)
    timings["train_s"] = time.perf_counter() - start
    trained = evaluate_coco(model, test, iou_type=iou_type)
    # The bfloat16 inference path (`with_dtype`) on the same images: its AP should match float32's.
    in_bfloat16 = evaluate_coco(model.with_dtype("bfloat16"), test, iou_type=iou_type)
    if output_dir:
        save_run(model, output_dir, SHAPE_CLASSES, IMAGE_SIZE, model_name=preset, dataset="shapes")
        images, targets = next(iter(test))
        save_detection_grid(
            os.path.join(output_dir, "detections.png"), images[:8], model.predict_on_batch(images[:8]),
            {key: value[:8] for key, value in targets.items()}, SHAPE_CLASSES,
            title="held-out shapes: ground truth (green, dashed), detections (red)",
        )
        # One held-out image as a file, for `keras-fpn predict` to try (the README's command line does).
        import tensorflow as tf

        tf.io.write_file(os.path.join(output_dir, "example.png"), tf.io.encode_png(tf.cast(images[0], tf.uint8)))
    return model, {"untrained": untrained, "trained": trained, "bfloat16": in_bfloat16}, timings


def export_and_serve(model, export_dir, image, image_size=128):
    """Exports `model` for TF Serving and runs one served prediction through the loaded SavedModel.

    The image is PNG-encoded and sent through the `serving_default` signature, as TF Serving's REST API would
    (decoding, resizing, detection and NMS all happen inside the SavedModel). Returns `(export path, served
    outputs as numpy arrays, {"export_s", "load_s", "serve_s"})`.
    """
    import tensorflow as tf

    from keras_fpn.export import export_saved_model

    timings = {}
    start = time.perf_counter()
    path = export_saved_model(model, export_dir, image_size=image_size, new_version=True)
    timings["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    served = tf.saved_model.load(path).signatures["serving_default"]
    timings["load_s"] = time.perf_counter() - start
    encoded = tf.io.encode_png(tf.cast(image, tf.uint8))
    start = time.perf_counter()
    outputs = served(images=tf.reshape(encoded, [1]))
    timings["serve_s"] = time.perf_counter() - start
    return path, {name: value.numpy() for name, value in outputs.items()}, timings
