"""The `keras-fpn` command line: a thin layer over the library."""

import argparse
import os
import sys
import time


def _weights(value):
    return None if value.lower() == "none" else value


def _print_pyramid(args):
    import keras

    from keras_fpn.backbones.fpn_backbone import FPNBackbone
    from keras_fpn.utils.flops import count_flops

    height, width = args.image_size
    start = time.perf_counter()
    print(f"Building {args.backbone} (weights={args.weights}) with a FeaturePyramid "
          f"P{args.min_level}-P{args.max_level}, {args.num_channels} channels...", flush=True)
    model = FPNBackbone(
        args.backbone,
        weights=args.weights,
        input_shape=(None, None, 3) if not args.fixed_shape else (height, width, 3),
        min_level=args.min_level,
        max_level=args.max_level,
        num_channels=args.num_channels,
        pyramid_kwargs={"fusion": args.fusion, "extra_levels_from": args.extra_levels_from, "norm": args.norm},
    )
    print(f"Built in {time.perf_counter() - start:.1f}s. Running one {height}x{width} image...", flush=True)
    images = keras.random.uniform((1, height, width, 3), 0.0, 255.0, seed=0)
    features = model.backbone_features(images)
    pyramid = model(images)
    pyramid_params = model.get_layer("feature_pyramid").count_params()
    print()
    print(f"{'level':<6}{'stride':>7}  {'backbone layer':<28}{'C shape':<22}{'P shape':<22}")
    for level in range(args.min_level, args.max_level + 1):
        c_key, p_key = f"C{level}", f"P{level}"
        layer = model.stage_layers.get(level, "(extra level)")
        c_shape = tuple(features[c_key].shape) if c_key in features else "-"
        print(f"{level:<6}{2 ** level:>7}  {layer:<28}{str(c_shape):<22}{str(tuple(pyramid[p_key].shape)):<22}")
    flops = count_flops(model, (height, width, 3))
    print()
    print(f"parameters: {model.count_params():,} (backbone {model.count_params() - pyramid_params:,}, "
          f"feature pyramid {pyramid_params:,})")
    print(f"GFLOPs at {height}x{width}: {flops / 1e9:.2f} (multiply-add = 2, TensorFlow profiler)")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


def _demo(args):
    from keras_fpn.demo import train_shapes_detector

    start = time.perf_counter()
    print(f"Training a small RetinaNet (MobileNetV3Small-FPN, random init) on generated shapes: {args.steps} steps "
          f"of batch {args.batch_size}...", flush=True)
    model, metrics, timings = train_shapes_detector(
        steps=args.steps, batch_size=args.batch_size, train_images=args.train_images, test_images=args.test_images,
        output_dir=args.output_dir, verbose=1 if args.progress else 2,
    )
    print()
    print(f"COCO metrics on {args.test_images} held-out shapes images (pycocotools):")
    print(f"{'':<12}{'AP':>8}{'AP50':>8}{'AP75':>8}{'AR100':>8}")
    for name, values in metrics.items():
        print(f"{name:<12}{values['AP']:>8.3f}{values['AP50']:>8.3f}{values['AP75']:>8.3f}{values['AR100']:>8.3f}")
    print(f"training {timings['train_s']:.0f}s, total {time.perf_counter() - start:.0f}s; "
          f"model saved in {args.output_dir}/retinanet_shapes.keras")
    print(f"detections drawn in {args.output_dir}/detections.png")
    print()
    from keras_fpn.datasets.shapes import SHAPE_CLASSES, generate_shapes
    from keras_fpn.demo import export_and_serve

    images, _, _ = generate_shapes(1, seed=12345)
    path, served, serve_timings = export_and_serve(model, os.path.join(args.output_dir, "export"), images[0])
    print(f"exported for TF Serving to {path} in {serve_timings['export_s']:.1f}s; loaded with "
          f"tf.saved_model.load in {serve_timings['load_s']:.1f}s; one PNG through serving_default in "
          f"{serve_timings['serve_s'] * 1000:.0f} ms:")
    count = int(served["num_detections"][0])
    for box, score, cls in list(zip(served["detection_boxes"][0], served["detection_scores"][0],
                                    served["detection_classes"][0]))[: min(count, 5)]:
        print(f"  {SHAPE_CLASSES[int(cls) - 1]:<10} {score:.2f}  box (ymin, xmin, ymax, xmax) "
              f"{', '.join(f'{v:.3f}' for v in box)}")
    print(f"  ({count} detections above the {model.score_threshold} score threshold)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-fpn", description="Feature Pyramid Networks and RetinaNet for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    pyramid = commands.add_parser(
        "pyramid",
        help="build a FeaturePyramid over a keras.applications backbone; print its levels, parameters and FLOPs",
    )
    pyramid.add_argument("--backbone", default="ResNet50", help="keras.applications name (default: ResNet50)")
    pyramid.add_argument("--weights", type=_weights, default="none",
                         help="'imagenet', a local weights file, or 'none' (default: none)")
    pyramid.add_argument("--image-size", type=int, nargs=2, default=(512, 640), metavar=("HEIGHT", "WIDTH"),
                         help="image size to run and count FLOPs at (default: 512 640)")
    pyramid.add_argument("--fixed-shape", action="store_true",
                         help="build with a fixed input shape (needed by NASNet)")
    pyramid.add_argument("--min-level", type=int, default=3)
    pyramid.add_argument("--max-level", type=int, default=7)
    pyramid.add_argument("--num-channels", type=int, default=256)
    pyramid.add_argument("--fusion", choices=("sum", "concat"), default="sum")
    pyramid.add_argument("--extra-levels-from", choices=("backbone", "pyramid"), default="backbone")
    pyramid.add_argument("--norm", choices=("batch", "group"), default=None)
    pyramid.set_defaults(run=_print_pyramid)

    demo = commands.add_parser("demo", help="train a small RetinaNet on generated shapes and report COCO mAP")
    demo.add_argument("--steps", type=int, default=1500, help="training steps (default: 1500)")
    demo.add_argument("--batch-size", type=int, default=16)
    demo.add_argument("--train-images", type=int, default=2000)
    demo.add_argument("--test-images", type=int, default=200)
    demo.add_argument("--output-dir", default="runs/demo", help="where the trained .keras model goes")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                      help="a progress bar per epoch (default) or one line per epoch (--no-progress)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"keras-fpn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
