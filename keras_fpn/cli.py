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
    change = (metrics["bfloat16"]["AP"] - metrics["trained"]["AP"]) * 100
    print(f"bfloat16 inference (RetinaNet.with_dtype) changes AP by {change:+.2f} points")
    print(f"training {timings['train_s']:.0f}s, total {time.perf_counter() - start:.0f}s; "
          f"model saved in {args.output_dir}/model.keras")
    print(f"detections drawn in {args.output_dir}/detections.png; a held-out image to try `keras-fpn predict` on: "
          f"{args.output_dir}/example.png")
    print()
    import keras

    if keras.backend.backend() != "tensorflow":
        print(f"Not exported: a SavedModel is written under the TensorFlow backend. The saved model loads there: "
              f"KERAS_BACKEND=tensorflow keras-fpn export {args.output_dir} --export-dir "
              f"{os.path.join(args.output_dir, 'export')}")
        return 0
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
    if count >= model.max_detections:
        print(f"  ({count} detections, the max_detections cap)")
    else:
        print(f"  ({count} detections above the {model.score_threshold} score threshold)")
    return 0


def _models(args):
    import json

    from keras_fpn import models

    if args.name:
        print(json.dumps(models.get(args.name), indent=2))
        return 0

    def number(value, spec):
        return "-" if value is None else format(value, spec)

    rows = models.summary()
    # Each text column as wide as its longest entry, so no value runs into the next column.
    width = {key: max(len(title), *(len(str(row[key])) for row in rows)) + 2
             for key, title in (("name", "model"), ("backbone", "backbone"), ("dataset", "dataset"))}
    print(f"{'model':<{width['name']}}{'backbone':<{width['backbone']}}{'levels':<8}{'input':<10}"
          f"{'dataset':<{width['dataset']}}{'params':>8}{'GFLOPs':>9}{'CPU ms':>9}{'AP':>7}")
    for row in rows:
        params = "-" if row["parameters"] is None else f"{row['parameters'] / 1e6:.1f}M"
        print(f"{row['name']:<{width['name']}}{row['backbone']:<{width['backbone']}}{row['levels']:<8}"
              f"{row['input']:<10}{row['dataset']:<{width['dataset']}}{params:>8}"
              f"{number(row['gflops'], '.1f'):>9}{number(row['cpu_latency_ms'], '.0f'):>9}"
              f"{number(row['AP'], '.3f'):>7}")
    print("\n`keras-fpn models NAME` prints a record; `keras-fpn train --model NAME --dataset ...` trains it.")
    return 0


def _with_dtype(model, dtype):
    if dtype == "float32":
        return model
    print(f"running in {dtype} (with_dtype)", flush=True)
    return model.with_dtype(dtype)


def _image_size(args, record):
    return tuple(args.image_size) if args.image_size else tuple(record["input_size"])


def _train(args):
    from keras_fpn import models
    from keras_fpn.datasets.spec import load_dataset
    from keras_fpn.training import is_chief, make_strategy, train_detector

    record = models.get(args.model)
    if models.architecture_class(record).task == "segmentation":
        return _train_segmenter(args, record)
    image_size = _image_size(args, record)
    # First: MultiWorkerMirroredStrategy has to be set up before TensorFlow runs any op.
    strategy = make_strategy(args.strategy, tpu=args.tpu)
    if strategy.num_replicas_in_sync > 1:
        print(f"{args.strategy} strategy: {strategy.num_replicas_in_sync} replicas; the batch size is split across "
              "them", flush=True)
    print(f"Reading {args.dataset} ({args.train_split})...", flush=True)
    masks = models.architecture_class(record).uses_masks
    train = load_dataset(args.dataset, args.train_split, max_images=args.max_images, image_size=image_size[0],
                         with_masks=masks)
    val = None
    val_spec = args.val_dataset or (args.dataset if args.dataset in ("shapes", "shapes:scales") else None)
    if val_spec and args.eval_every:
        val = load_dataset(val_spec, args.val_split, class_names=train.class_names, max_images=args.max_val_images,
                           image_size=image_size[0], with_masks=masks)
    if val is not None and tuple(val.class_names) != tuple(train.class_names):
        raise ValueError(f"The validation classes {val.class_names} differ from the training classes "
                         f"{train.class_names}.")
    weights = args.backbone_weights
    _seed(args.seed)
    with strategy.scope():
        model = models.build(args.model, num_classes=len(train.class_names),
                             backbone_weights="preset" if weights == "preset" else _weights(weights))
    print(f"{args.model}: {model.count_params():,} parameters, {len(train.class_names)} classes "
          f"{list(train.class_names)[:10]}{'...' if len(train.class_names) > 10 else ''}, images {image_size}; "
          f"{train.num_images or 'unknown number of'} training images"
          f"{f', {val.num_images} validation images' if val is not None else ' (no --val-dataset: no evaluation)'}; "
          f"output in {args.output_dir}", flush=True)
    model, history = train_detector(
        model, train, record["training"], image_size, output_dir=args.output_dir, val_data=val, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, learning_rate=args.learning_rate,
        checkpoint_every=args.checkpoint_every, resume=args.resume, eval_every=args.eval_every or 1,
        verbose=1 if args.progress else 2, seed=args.seed, strategy=strategy,
    )
    if "val_AP" in history:
        print(f"validation AP by evaluation: {', '.join(f'{value:.3f}' for value in history['val_AP'])}")
    if is_chief():
        print(f"saved {args.output_dir}/model.keras and run.json; TensorBoard: tensorboard --logdir "
              f"{args.output_dir}/logs")
    return 0


def _seed(seed):
    """Seeds the weight initialisation (Python, NumPy and the backend), so that two trainings with one `--seed`
    start from the same weights; `--seed` also seeds the data order (train_detector / train_segmenter)."""
    import keras

    keras.utils.set_random_seed(seed)


def _train_segmenter(args, record):
    from keras_fpn import models
    from keras_fpn.datasets.spec import load_segmentation_dataset
    from keras_fpn.training import train_segmenter

    if args.strategy != "default":
        raise ValueError(f"Received --strategy {args.strategy} for the segmentation model {args.model}; segmentation "
                         "training runs on one device (--strategy default).")
    image_size = _image_size(args, record)
    print(f"Reading {args.dataset} ({args.train_split})...", flush=True)
    images, masks, class_names = load_segmentation_dataset(args.dataset, args.train_split, args.max_images, image_size)
    val = None
    val_spec = args.val_dataset or (args.dataset if args.dataset == "shapes" else None)
    if val_spec and args.eval_every:
        val = load_segmentation_dataset(val_spec, args.val_split, args.max_val_images, image_size)[:2]
    weights = args.backbone_weights
    _seed(args.seed)
    model = models.build(args.model, num_classes=len(class_names),
                         backbone_weights="preset" if weights == "preset" else _weights(weights))
    print(f"{args.model}: {model.count_params():,} parameters, {len(class_names)} classes {list(class_names)[:10]}"
          f"{'...' if len(class_names) > 10 else ''}, images {image_size}; {len(images)} training images"
          f"{f', {len(val[0])} validation images' if val is not None else ' (no --val-dataset: no evaluation)'}; "
          f"output in {args.output_dir}", flush=True)
    model, history = train_segmenter(
        model, (images, masks), record["training"], class_names, output_dir=args.output_dir, val=val,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        learning_rate=args.learning_rate, checkpoint_every=args.checkpoint_every, resume=args.resume,
        eval_every=args.eval_every or 1, verbose=1 if args.progress else 2, seed=args.seed)
    if "val_mIoU" in history:
        print(f"validation mIoU by evaluation: {', '.join(f'{value:.3f}' for value in history['val_mIoU'])}")
    print(f"saved {args.output_dir}/model.keras and run.json; TensorBoard: tensorboard --logdir {args.output_dir}/logs")
    return 0


def _print_metrics(metrics, class_names):
    names = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
             "AR_medium", "AR_large")
    print(f"{'metric':<12}{'value':>8}")
    for name in names:
        print(f"{name:<12}{metrics[name]:>8.3f}")
    if class_names and f"AP/{class_names[0]}" in metrics:
        print()
        print(f"{'class':<24}{'AP':>8}{'AP50':>8}")
        for name in class_names:
            print(f"{name:<24}{metrics[f'AP/{name}']:>8.3f}{metrics[f'AP50/{name}']:>8.3f}")


def _evaluate(args):
    from keras_fpn.datasets.spec import load_dataset
    from keras_fpn.evaluation import evaluate_coco, evaluation_batches
    from keras_fpn.training import load_run

    model, run = load_run(args.run_path)
    if model.task == "segmentation":
        return _evaluate_segmenter(args, model, run)
    model = _with_dtype(model, args.dtype)
    image_size = tuple(args.image_size or run.get("image_size") or (512, 512))
    data = load_dataset(args.dataset, args.split, class_names=run.get("class_names"), max_images=args.max_images,
                        image_size=image_size[0], with_masks=model.uses_masks)
    label_map = None
    if run.get("class_names") and tuple(data.class_names) != tuple(run["class_names"]):
        from keras_fpn.evaluation.coco import label_map_by_names

        try:  # a model that knows more classes (torchvision's 91 COCO labels on a COCO JSON): matched by name
            label_map = label_map_by_names(run["class_names"], data.class_names)
        except ValueError:
            raise ValueError(f"{args.dataset} has classes {list(data.class_names)}; the model was trained on "
                             f"{run['class_names']}.") from None
        print(f"the model's classes matched to {args.dataset}'s {len(data.class_names)} by name", flush=True)
    batches = evaluation_batches(model, data, args.batch_size, image_size)
    sizes = (f"at {image_size}" if model.resize_min_size is None else
             f"resized by the model to short side {model.resize_min_size}, long side at most {model.resize_max_size}")
    print(f"Evaluating {args.run_path} on {args.dataset} ({data.num_images or '?'} images {sizes})...", flush=True)
    metrics = evaluate_coco(model, batches, data.class_names, per_class=True, verbose=1 if args.progress else 0,
                            iou_type=model.iou_types, label_map=label_map)
    print(f"\nCOCO metrics (pycocotools, original image coordinates) on {args.dataset}:")
    _print_metrics(metrics, data.class_names)
    if model.uses_masks:
        print("\nmask (segm) metrics:")
        _print_metrics({key[len("mask_"):]: value for key, value in metrics.items() if key.startswith("mask_")},
                       data.class_names)
    return 0


def _float32_only(args, model):
    if args.dtype != "float32":
        raise ValueError(f"Received --dtype {args.dtype} for the segmentation model {model.name}; segmentation models "
                         "run in float32 (with_dtype is the detectors').")


def _evaluate_segmenter(args, model, run):
    from keras_fpn.datasets.spec import load_segmentation_dataset
    from keras_fpn.evaluation import evaluate_segmentation

    _float32_only(args, model)
    image_size = tuple(args.image_size or run.get("image_size") or (256, 256))
    images, masks, names = load_segmentation_dataset(args.dataset, args.split, args.max_images, image_size)
    class_names = run.get("class_names") or names
    print(f"Evaluating {args.run_path} on {args.dataset} ({len(images)} images at {image_size})...", flush=True)
    scores = evaluate_segmentation(model, images, masks, args.batch_size, class_names)
    print(f"\nsegmentation scores on {args.dataset} (one confusion matrix over all pixels):")
    print(f"{'metric':<16}{'value':>8}")
    for name in ("mIoU", "pixel_accuracy"):
        print(f"{name:<16}{scores[name]:>8.3f}")
    print(f"\n{'class':<24}{'IoU':>8}")
    for name, value in scores["per_class_iou"].items():
        print(f"{name:<24}{'-' if value != value else format(value, '.3f'):>8}")  # NaN: in neither map
    return 0


def _export(args):
    from keras_fpn.export import export_saved_model
    from keras_fpn.training import load_run

    if args.format != "saved_model" and args.dtype != "float32":
        raise ValueError(f"Received --dtype {args.dtype} with --format {args.format}; the LiteRT and ONNX exports "
                         "are float32 (LiteRT's own quantization makes them smaller).")
    model, run = load_run(args.run_path)
    if model.task == "segmentation":
        return _export_segmenter(args, model, run)
    model = _with_dtype(model, args.dtype)
    image_size = tuple(args.image_size or run.get("image_size") or (512, 512))
    if args.format != "saved_model":
        return _export_file(model, run, args, image_size)
    path = export_saved_model(model, args.export_dir, version=args.version, image_size=image_size,
                              new_version=args.new_version, class_names=run.get("class_names"))
    print(f"exported {args.run_path} for TF Serving to {path} (images resized to fit {image_size}); signatures "
          "serving_default (encoded image strings) and image_tensor (uint8)")
    if run.get("class_names"):
        from keras_fpn.export.saved_model import label_offset_for

        offset = label_offset_for(run["class_names"])
        first = run["class_names"][1 - offset]
        print(f"detection_classes are 1-based: 1 = {first!r}, ... (from run.json)")
    return 0


def _export_file(model, run, args, image_size):
    """`keras-fpn export --format litert|onnx`: one file, EXPORT_DIR/model.tflite or model.onnx."""
    suffix = {"litert": "tflite", "onnx": "onnx"}[args.format]
    os.makedirs(args.export_dir, exist_ok=True)
    path = os.path.join(args.export_dir, f"model.{suffix}")
    print(f"exporting {args.run_path} as {args.format} (converting takes a while)...", flush=True)
    if args.quantize and args.format != "litert":
        raise ValueError(f"Received --quantize {args.quantize} with --format {args.format}; quantization is "
                         "LiteRT's (--format litert).")
    if args.representative_data and args.quantize != "int8":
        raise ValueError("--representative-data calibrates --quantize int8; pass that too.")
    options = {"select_tf_ops": args.select_tf_ops, "quantize": args.quantize} if args.format == "litert" else {}
    if args.quantize == "int8":
        if not args.representative_data:
            raise ValueError("--quantize int8 calibrates activation ranges on training images: pass "
                             "--representative-data SPEC (e.g. the training dataset: shapes, voc:DIR, ...).")
        options["representative_data"] = _representative_images(args, run, image_size)
    model.export(path, format=args.format, image_size=image_size, class_names=run.get("class_names"),
                 verbose=True, **options)
    print(f"{os.path.getsize(path) / 1e6:.1f} MB; the label map (run.json's class names) is in the file's metadata "
          "(keras_fpn.export.read_metadata)")
    return 0


def _representative_images(args, run, image_size):
    """`--representative-images` uint8 images of `--representative-data` (its training split), resized and padded
    to the export's size as the pipeline resizes them for training."""
    import numpy as np

    from keras_fpn.datasets import detection_pipeline
    from keras_fpn.datasets.spec import load_dataset

    data = load_dataset(args.representative_data, "train", class_names=run.get("class_names"),
                        max_images=args.representative_images, image_size=image_size[0])
    images = [np.asarray(image[0], np.uint8) for image, _ in detection_pipeline(data, 1, image_size, pad_to_multiple=1)]
    print(f"int8 calibration on {len(images)} images of {args.representative_data}", flush=True)
    return images


def _torchvision_state_dict(name):
    """The published COCO weights of torchvision's `name`, fetched through torchvision itself."""
    try:
        import torchvision
    except Exception as error:  # noqa: BLE001 - not installed, or its compiled ops do not load
        raise ValueError(f"Fetching torchvision's {name} weights needs torchvision ({type(error).__name__}: "
                         f"{error}). Pass the weights file instead: --weights FILE (the .pth file that "
                         f"torchvision's {name} weights enum points to, or a .safetensors of its state dict).") from None
    try:
        return torchvision.models.get_model(name, weights="DEFAULT").state_dict()
    except Exception as error:  # noqa: BLE001 - no internet, or an unknown name
        raise ValueError(f"torchvision could not give the {name} weights ({type(error).__name__}: {error}). Pass "
                         "a weights file instead: --weights FILE (.pth or .safetensors).") from None


def _convert(args):
    from keras_fpn import models
    from keras_fpn.convert import TORCHVISION_MODELS, from_torchvision
    from keras_fpn.datasets.coco_categories import CLASS_NAME_SETS
    from keras_fpn.training.trainer import save_run

    framework, _, name = args.source.partition(":")
    if framework != "torchvision" or name not in TORCHVISION_MODELS:
        raise ValueError(f"Received {args.source!r}; expected torchvision:NAME with NAME one of "
                         f"{sorted(TORCHVISION_MODELS)}.")
    record = models.get(TORCHVISION_MODELS[name])
    print(f"converting torchvision's {name} into the zoo model {record['name']}...", flush=True)
    state_dict = args.weights if args.weights else _torchvision_state_dict(name)
    model = from_torchvision(name, state_dict)
    class_names = CLASS_NAME_SETS[record["weights"]["categories"]]()
    save_run(model, args.output_dir, class_names, record["input_size"], converted_from=f"torchvision:{name}",
             weights=args.weights or record["weights"]["torchvision_weights"], record=record["name"])
    print(f"saved {args.output_dir}/model.keras and run.json ({model.count_params():,} parameters, "
          f"{len(class_names)} classes); try: keras-fpn predict {args.output_dir} IMAGE")
    return 0


def _export_segmenter(args, model, run):
    from keras_fpn.export import export_segmentation_saved_model

    _float32_only(args, model)
    if args.format != "saved_model":
        raise ValueError(f"Received --format {args.format} for the segmentation model {model.name}; segmentation "
                         "models export as a SavedModel only (--format saved_model).")
    # As predict: each image resized to the training size for the model, its class map resized back.
    image_size = tuple(args.image_size or run.get("image_size") or ()) or None
    path = export_segmentation_saved_model(model, args.export_dir, version=args.version, image_size=image_size,
                                           new_version=args.new_version, class_names=run.get("class_names"))
    print(f"exported {args.run_path} for TF Serving to {path}; signature serving_default: encoded images of any size "
          "in, class_map (each image's classes at its own size) and image_size out")
    return 0


def _predict(args):
    import json

    from keras_fpn.inference import detect_files
    from keras_fpn.training import load_run
    from keras_fpn.visualization import save_detection_grid

    model, run = load_run(args.run_path)
    if model.task == "segmentation":
        return _predict_segmenter(args, model, run)
    model = _with_dtype(model, args.dtype)
    image_size = tuple(args.image_size or run.get("image_size") or (512, 512))
    class_names = run.get("class_names")
    results = detect_files(model, args.images, image_size)
    if not results:
        raise ValueError(f"None of {args.images} is an image TensorFlow can decode (JPEG, PNG, BMP, GIF).")
    report = []
    for result in results:
        keep = result["scores"] >= args.score_threshold
        detections = [
            {"box_xyxy": [round(float(v), 1) for v in box], "score": round(float(score), 4), "label": int(label),
             "class": class_names[label] if class_names else str(int(label))}
            for box, score, label in zip(result["boxes"][keep], result["scores"][keep], result["labels"][keep])
        ]
        if "masks" in result:  # each detection's mask in the image, as COCO RLE (pycocotools.mask.decode reads it)
            for detection, rle in zip(detections, _mask_rles(result, keep, model.mask_paste)):
                detection["mask_rle"] = rle
        report.append({"image": result["path"], "height": int(result["image"].shape[0]),
                       "width": int(result["image"].shape[1]), "detections": detections})
        print(f"{result['path']}: {len(detections)} detections"
              + "".join(f"\n  {d['class']:<16}{d['score']:.2f}  {d['box_xyxy']}" for d in detections[:10]))
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    save_detection_grid(args.output, [r["image"] for r in results],
                        [(r["boxes"], r["scores"], r["labels"], *([r["masks"]] if "masks" in r else []))
                         for r in results], class_names=class_names, score_threshold=args.score_threshold,
                        mask_paste=model.mask_paste)
    print(f"wrote {args.output} and {args.json}")
    return 0


def _predict_segmenter(args, model, run):
    import json

    import numpy as np

    from keras_fpn.inference import segment_files
    from keras_fpn.visualization import save_segmentation_grid

    _float32_only(args, model)
    image_size = tuple(args.image_size or run.get("image_size") or ()) or None
    class_names = run.get("class_names") or [str(k) for k in range(model.num_classes)]
    results = segment_files(model, args.images, image_size)
    if not results:
        raise ValueError(f"None of {args.images} is an image TensorFlow can decode (JPEG, PNG, BMP, GIF).")
    report = []
    for result in results:
        labels, counts = np.unique(result["class_map"], return_counts=True)
        fractions = {class_names[k]: round(float(n) / result["class_map"].size, 4) for k, n in zip(labels, counts)}
        report.append({"image": result["path"], "height": int(result["image"].shape[0]),
                       "width": int(result["image"].shape[1]), "class_fractions": fractions})
        print(f"{result['path']}: " + ", ".join(f"{name} {fraction:.1%}" for name, fraction in fractions.items()))
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    save_segmentation_grid(args.output, [r["image"] for r in results], [r["class_map"] for r in results],
                           class_names=class_names)
    print(f"wrote {args.output} (classes blended over each image) and {args.json} (each class's share of the pixels)")
    return 0


def _mask_rles(result, keep, mask_paste="keras_fpn"):
    """COCO RLE of each kept detection's mask pasted into its image."""
    import numpy as np

    from keras_fpn.evaluation.coco import mask_to_rle
    from keras_fpn.ops.masks import paste_masks

    if not np.any(keep):
        return []
    height, width = result["image"].shape[:2]
    return [mask_to_rle(mask) for mask in
            np.asarray(paste_masks(result["masks"][keep], result["boxes"][keep], height, width,
                                   convention=mask_paste))]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-fpn",
        description="Feature Pyramid Networks for Keras 3, and the RetinaNet, Faster R-CNN and Mask R-CNN detectors "
                    "and the SemanticFPN and U-Net segmenters built on them.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages (hidden by default)")
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

    zoo = commands.add_parser("models", help="list the model zoo, or print one record")
    zoo.add_argument("name", nargs="?", help="a zoo name: print its JSON record")
    zoo.set_defaults(run=_models)

    dataset_help = ("shapes (generated), shapes:scales (generated, 256x256, objects 8-160 px), tfds:NAME (e.g. "
                    "tfds:coco/2017, prepared with tfds), voc:DIR (PASCAL VOC "
                    "folder), coco:JSON,IMAGE_DIR, or csv:FILE[,IMAGE_DIR]; for a segmentation model (semanticfpn_*, "
                    "unet_*): shapes, tfds:NAME (with a segmentation_mask), voc:DIR (SegmentationClass/) or "
                    "coco:JSON,IMAGE_DIR (instances painted into class maps)")
    train = commands.add_parser(
        "train", help="train a zoo model on a dataset (checkpoints, resume, TensorBoard, COCO evaluation)",
        description="Trains a zoo model by its recipe with model.fit. Interrupted runs resume from the newest "
                    "checkpoint in OUTPUT_DIR/checkpoints when started again with the same arguments.",
    )
    train.add_argument("--model", required=True, help="zoo name (see `keras-fpn models`) or a record .json file")
    train.add_argument("--dataset", required=True, help=dataset_help)
    train.add_argument("--val-dataset", help="evaluated with COCO metrics every --eval-every epochs (default: "
                                             "held-out shapes for --dataset shapes or shapes:scales, otherwise none)")
    train.add_argument("--train-split", default="train", help="split of tfds:/voc: datasets (default: train)")
    train.add_argument("--val-split", default="validation", help="split of the validation dataset "
                                                                  "(default: validation)")
    train.add_argument("--output-dir", default=os.path.join("runs", "train"),
                       help="model.keras, run.json, checkpoints/ and logs/ (TensorBoard) go here (default: runs/train)")
    train.add_argument("--backbone-weights", default="preset",
                       help="'preset' (the record's, default), 'imagenet', 'none', or a local weights file")
    train.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                       help="training image size (default: the record's input size)")
    train.add_argument("--epochs", type=int, help="default: the recipe's")
    train.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training images")
    train.add_argument("--batch-size", type=int, help="default: the recipe's")
    train.add_argument("--learning-rate", type=float, help="peak learning rate (default: the recipe's)")
    train.add_argument("--max-images", type=int, help="use at most this many training images")
    train.add_argument("--max-val-images", type=int, help="use at most this many validation images")
    train.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations; 0 turns them off")
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: each epoch end)")
    train.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="continue from OUTPUT_DIR/checkpoints when it has a checkpoint (default: yes)")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="a progress bar per epoch (default) or one line per epoch (--no-progress)")
    train.add_argument("--seed", type=int, default=0, help="seeds the weight initialisation and the data order")
    # The names are checked by keras_fpn.training.make_strategy (an unknown one: exit 2, naming them), so that
    # building this parser imports no TensorFlow.
    train.add_argument("--strategy", default="default",
                       help="tf.distribute strategy: default (one device), mirrored (all GPUs of this machine), "
                            "multi_worker (all machines in TF_CONFIG), tpu (default: default)")
    train.add_argument("--tpu", help="TPU name or address for --strategy tpu (default: this VM's TPU)")
    train.set_defaults(run=_train)

    def add_run(command):
        command.add_argument("run_path", metavar="RUN", help="a training output folder (model.keras + run.json) or a .keras file")
        command.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                             help="default: the training image size from run.json")
        command.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                             help="compute (and, for export, storage) dtype; bfloat16 is ~1.7x faster on CPUs with "
                                  "AVX512-BF16 or AMX, TPUs and recent GPUs (default: float32)")

    evaluate = commands.add_parser("evaluate", help="COCO metrics (pycocotools) of a trained model on a dataset")
    add_run(evaluate)
    evaluate.add_argument("--dataset", required=True, help=dataset_help)
    evaluate.add_argument("--split", default="validation", help="split of tfds:/voc:/shapes (default: validation)")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--max-images", type=int, help="evaluate at most this many images")
    evaluate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser("export", help="export a trained model: a SavedModel for TF Serving, a LiteRT "
                                                 "(TFLite) file or an ONNX file")
    add_run(export)
    export.add_argument("--format", choices=("saved_model", "litert", "onnx"), default="saved_model",
                        help="saved_model (TF Serving: encoded images of any size, default), litert (phones: "
                             "EXPORT_DIR/model.tflite) or onnx (onnxruntime and other runtimes: EXPORT_DIR/model.onnx); "
                             "litert and onnx take uint8 images of the --image-size and hold decoding and NMS")
    export.add_argument("--export-dir", required=True,
                        help="saved_model: the base folder, the model goes to EXPORT_DIR/VERSION; litert, onnx: the "
                             "folder of the file")
    export.add_argument("--select-tf-ops", action=argparse.BooleanOptionalAction, default=None,
                        help="litert: allow TensorFlow's Select ops (needs the Flex delegate) or refuse them "
                             "(--no-select-tf-ops); default: builtin ops where the model converts with them")
    export.add_argument("--quantize", choices=("dynamic", "int8"),
                        help="litert: post-training quantization, dynamic range (int8 weights) or int8 (weights and "
                             "activations, calibrated on --representative-data)")
    export.add_argument("--representative-data", metavar="SPEC",
                        help="--quantize int8: the dataset whose training images calibrate it (" + dataset_help + ")")
    export.add_argument("--representative-images", type=int, default=100,
                        help="--quantize int8: calibration images (default: 100)")
    export.add_argument("--version", type=int, help="default: the next free version number")
    export.add_argument("--new-version", action="store_true",
                        help="add a version beside the ones in EXPORT_DIR (only ever of the same model: class, "
                             "number of classes and class names)")
    export.set_defaults(run=_export)

    convert = commands.add_parser(
        "convert", help="convert torchvision's COCO-trained detectors into a keras_fpn run folder",
        description="Builds the zoo model that mirrors a torchvision detector and copies its weights in. "
                    "OUTPUT_DIR then works with keras-fpn predict, evaluate and export like a training run.")
    convert.add_argument("source", metavar="torchvision:NAME",
                         help="e.g. torchvision:retinanet_resnet50_fpn (convertible: see keras_fpn.convert)")
    convert.add_argument("--weights", help="torchvision's state dict as a .pth or .safetensors file (default: "
                                           "fetched through torchvision, which needs it installed and internet)")
    convert.add_argument("--output-dir", required=True, help="model.keras and run.json go here")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser("predict", help="detect objects in image files: a PNG with boxes (and masks) and "
                                                   "a JSON")
    add_run(predict)
    predict.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, GIF) or folders of them; files "
                                                   "that are not images are skipped with a warning")
    predict.add_argument("--output", default="detections.png", help="the picture (default: detections.png)")
    predict.add_argument("--json", default="detections.json", help="the detections (default: detections.json)")
    predict.add_argument("--score-threshold", type=float, default=0.3)
    predict.set_defaults(run=_predict)
    return parser


def _finish_import():
    """Imports keras_fpn's public API (registering its models with Keras), including when the `keras-fpn` entry
    point deferred the package's `__init__`."""
    import keras_fpn_entry_point

    keras_fpn_entry_point.finish_import()
    import keras_fpn  # noqa: F401 - under `python -m keras_fpn.cli` the package was imported as usual


def start_tensorflow(verbose=False):
    """Imports TensorFlow and keras_fpn's public API, hiding TensorFlow's C++ start-up lines unless `verbose`.

    TensorFlow writes them (oneDNN, CUDA drivers, CPU features, `failed call to cuInit` on machines without a GPU)
    to the process's stderr before its logging is set up, where `TF_CPP_MIN_LOG_LEVEL` does not reach them; so
    file descriptor 2 points to /dev/null while TensorFlow starts and looks for devices. Python errors raised
    meanwhile still propagate and are printed afterwards.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "2")
    if verbose:
        _finish_import()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
        _finish_import()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.run is _models:
        return _models(args)  # the zoo is JSON: no TensorFlow needed
    if isinstance(getattr(args, "model", None), str):
        # A misspelled zoo name is answered at once, not after TensorFlow's start-up.
        from keras_fpn import models

        try:
            models.get(args.model)
        except ValueError as error:
            print(f"keras-fpn: error: {error}", file=sys.stderr)
            return 2
    start_tensorflow(args.verbose)
    from keras_fpn.training.checkpoint import CheckpointError
    from keras_fpn.training.distribute import StrategyError

    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"keras-fpn: error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, StrategyError) as error:
        print(f"keras-fpn: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
