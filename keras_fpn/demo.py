"""The main job: train a small RetinaNet from scratch on generated shapes, then evaluate it with pycocotools."""

import os
import time

import keras

from keras_fpn.datasets.shapes import SHAPE_CLASSES, shapes_dataset
from keras_fpn.detection.retinanet import RetinaNet
from keras_fpn.evaluation.coco import evaluate_coco
from keras_fpn.utils.batchnorm import precise_batchnorm
from keras_fpn.visualization import save_detection_grid


def small_retinanet(num_classes=len(SHAPE_CLASSES)):
    """The demo detector: MobileNetV3Small (minimalistic, random weights) + FPN P3-P5 at 64 channels, 2-conv heads.

    BatchNorm momentum 0.9 instead of keras.applications' 0.999, so the moving statistics keep up with a
    from-scratch schedule of a few thousand steps. Anchors start at 24 px (`anchor_scale=3`) for 128 px images.
    """
    return RetinaNet(
        num_classes=num_classes, backbone="MobileNetV3Small", backbone_weights=None, min_level=3, max_level=5,
        num_channels=64, head_filters=64, head_depth=2, anchor_scale=3.0,
        backbone_kwargs={"batchnorm_momentum": 0.9, "backbone_kwargs": {"minimalistic": True}},
    )


def train_shapes_detector(steps=1500, batch_size=16, learning_rate=1e-3, image_size=128, train_images=2000,
                          test_images=200, precise_bn_batches=20, output_dir=None, verbose=1, seed=0):
    """Trains `small_retinanet` on shapes with `model.fit` and evaluates COCO metrics on held-out shapes.

    Training uses Adam with a cosine-decayed learning rate over `steps`; after `fit`, BatchNorm statistics are
    recomputed over `precise_bn_batches` training batches. Returns `(model, metrics, timings)` where `metrics`
    holds pycocotools' numbers for the untrained and the trained model. With `output_dir`, the model is saved there
    as `retinanet_shapes.keras` and 8 held-out images with ground truth and detections as `detections.png`.
    """
    keras.utils.set_random_seed(seed)
    train = shapes_dataset(train_images, batch_size, image_size, seed=seed + 1, shuffle=True, repeat=True)
    test = shapes_dataset(test_images, 25, image_size, seed=seed + 2)
    model = small_retinanet()
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0))
    timings = {}
    start = time.perf_counter()
    untrained = evaluate_coco(model, test)
    timings["evaluate_s"] = time.perf_counter() - start

    epochs = max(1, steps // 250)
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=steps // epochs, epochs=epochs, verbose=verbose, shuffle=False)
    if precise_bn_batches:
        precise_batchnorm(model, train, precise_bn_batches, verbose=verbose)
    timings["train_s"] = time.perf_counter() - start
    trained = evaluate_coco(model, test)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        model.save(os.path.join(output_dir, "retinanet_shapes.keras"))
        images, targets = next(iter(test))
        save_detection_grid(
            os.path.join(output_dir, "detections.png"), images[:8], model.predict_on_batch(images[:8]),
            {key: value[:8] for key, value in targets.items()}, SHAPE_CLASSES,
            title="held-out shapes: ground truth (green, dashed), detections (red)",
        )
    return model, {"untrained": untrained, "trained": trained}, timings


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
    path = export_saved_model(model, export_dir, image_size=image_size)
    timings["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    served = tf.saved_model.load(path).signatures["serving_default"]
    timings["load_s"] = time.perf_counter() - start
    encoded = tf.io.encode_png(tf.cast(image, tf.uint8))
    start = time.perf_counter()
    outputs = served(images=tf.reshape(encoded, [1]))
    timings["serve_s"] = time.perf_counter() - start
    return path, {name: value.numpy() for name, value in outputs.items()}, timings
