"""Real photographs: train a RetinaNet from scratch on the raccoon dataset's train split, score its test split.

The raccoon dataset (200 photographs, PASCAL VOC XML, the author's own 160/40 split as CSV files) is read from a
folder given on the command line; nothing is downloaded. The detector is compared with a trivial baseline scored
by the same pycocotools code: one box covering the central 80% of every image, score 1.

    python examples/raccoon.py --data ../shared/datasets/raccoon

Prints the COCO metrics of the baseline and of the trained model and writes `detections.png` (test images with
ground truth and detections) to `--output-dir`. With ImageNet weights available, `--weights imagenet` fine-tunes
instead of training from scratch.
"""

import argparse
import csv
import os
import time

import numpy as np


def split_filenames(csv_file):
    """The image file names of a split CSV (`filename,width,height,class,...`), in first-seen order."""
    with open(csv_file, newline="") as file:
        return list(dict.fromkeys(row["filename"] for row in csv.DictReader(file)))


def central_box_detections(ground_truth, fraction=0.8):
    """One detection per image, score 1, label 0: the box covering the central `fraction` of the image."""
    margin = (1.0 - fraction) / 2
    return [(np.array([[margin * width, margin * height, (1 - margin) * width, (1 - margin) * height]]),
             np.ones(1), np.zeros(1, np.int32)) for height, width, _, _ in ground_truth]


def build_model(num_classes, weights, image_size):
    import keras_fpn

    return keras_fpn.RetinaNet(
        num_classes=num_classes, backbone="MobileNetV3Small", backbone_weights=weights, min_level=3, max_level=6,
        num_channels=64, head_filters=64, head_depth=2, anchor_scale=4.0,
        input_shape=(image_size, image_size, 3),
        backbone_kwargs={"batchnorm_momentum": 0.9, "backbone_kwargs": {"minimalistic": True}},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "datasets", "raccoon"),
                        help="the raccoon folder (images/, annotations/, data/*_labels.csv)")
    parser.add_argument("--weights", default=None, help="backbone weights: 'imagenet', a file, or none (default)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=4, help="COCO evaluation every N epochs of 100 steps")
    parser.add_argument("--output-dir", default=os.path.join("runs", "raccoon"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    from keras_fpn.datasets import Augmentation, detection_pipeline, load_voc
    from keras_fpn.evaluation import COCOEvaluation, coco_metrics, collect_detections, evaluate_coco
    from keras_fpn.utils.batchnorm import precise_batchnorm
    from keras_fpn.visualization import save_detection_grid

    keras.utils.set_random_seed(args.seed)
    train = load_voc(args.data, split=split_filenames(os.path.join(args.data, "data", "train_labels.csv")))
    test = load_voc(args.data, split=split_filenames(os.path.join(args.data, "data", "test_labels.csv")),
                    class_names=train.class_names)
    print(f"raccoon: {train.num_images} train, {test.num_images} test images, classes {train.class_names}")
    weights = None if args.weights in (None, "none") else args.weights
    model = build_model(len(train.class_names), weights, args.image_size)
    stride = model.input_multiple
    train_batches = detection_pipeline(
        train, args.batch_size, args.image_size, pad_to_multiple=stride,
        augmentation=Augmentation(scale_range=(0.6, 1.5), translation=0.15, seed=args.seed),
        shuffle=True, repeat=True, cache=True, seed=args.seed,
    )
    test_batches = detection_pipeline(test, 8, args.image_size, pad_to_multiple=stride, with_image_info=True,
                                      cache=True)

    ground_truth, _ = collect_detections(model, test_batches)
    baseline = coco_metrics(ground_truth, central_box_detections(ground_truth), len(train.class_names))

    steps_per_epoch = min(100, args.steps)
    epochs = max(1, args.steps // steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=epochs * steps_per_epoch - min(300, args.steps // 10),
        warmup_target=args.learning_rate, warmup_steps=min(300, args.steps // 10),
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4, global_clipnorm=10.0))
    start = time.perf_counter()
    history = model.fit(
        train_batches, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=2, shuffle=False,
        callbacks=[COCOEvaluation(test_batches, every_n_epochs=args.eval_every, verbose=1)],
    )
    precise_batchnorm(model, train_batches, 20, verbose=0)
    train_s = time.perf_counter() - start
    trained = evaluate_coco(model, test_batches)

    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "retinanet_raccoon.keras"))
    images, targets = next(iter(test_batches))
    picture = save_detection_grid(
        os.path.join(args.output_dir, "detections.png"), images, model.predict_on_batch(images),
        targets, train.class_names, title="raccoon test split: ground truth (green), detections (red)",
    )
    print()
    print(f"COCO metrics on the {test.num_images} raccoon test images (pycocotools, original image coordinates):")
    print(f"{'':<28}{'AP':>8}{'AP50':>8}{'AP75':>8}{'AR100':>8}")
    for name, values in (("central 80% box baseline", baseline), ("trained RetinaNet", trained)):
        print(f"{name:<28}{values['AP']:>8.3f}{values['AP50']:>8.3f}{values['AP75']:>8.3f}{values['AR100']:>8.3f}")
    evaluated = [value for value in history.history.get("val_AP", [])]
    if evaluated:
        print(f"AP during training (every {args.eval_every} epochs): {', '.join(f'{v:.3f}' for v in evaluated)}")
    print(f"training {train_s:.0f}s ({args.steps} steps of batch {args.batch_size} at {args.image_size}px); "
          f"pictures in {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
