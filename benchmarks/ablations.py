"""The FPN paper's ablations (Lin et al. 2017, Tables 1 and 3), reproduced on generated data a CPU can train on.

    python benchmarks/ablations.py                           # every row, seed 0 (about 35 minutes on a 2-core CPU)
    python benchmarks/ablations.py --rows rpn_fpn rpn_c5 --seeds 1 2   # some rows again, other seeds
    python benchmarks/ablations.py --report                  # the table of every result so far, beside the paper's
    python benchmarks/ablations.py --report --write          # ... and into benchmarks/README.md
    python benchmarks/ablations.py --tiny                    # a smoke run of every row (CI): figures meaningless

Every row is a `FasterRCNN` on the same backbone (MobileNetV3-Small, minimalistic, random init: no pretrained
weights can be downloaded here), trained from scratch with the same recipe, budget and data, differing only in
what the paper's row changes. The data is `shapes:scales` (`keras_fpn.datasets.shapes.SCALES`): 256x256 images,
up to 12 objects of 8-160 px, about two thirds of them COCO-small.

- Table 1 (RPN trained alone, `rpn_only=True`; class-agnostic AR100, AR1k and AR1k by size of 1,000 proposals per
  image, by pycocotools): single-level baselines on C4 and on C5 (one 1x1 + 3x3 conv on that map, anchors of five
  sizes at every location); FPN P2-P6; bottom-up pyramid (no top-down path); top-down pyramid without laterals; and
  P2 only (the full top-down pyramid, the RPN on its finest level alone with anchors of five sizes). Every row has
  anchors of 8, 16, 32, 64 and 128 px in 3 aspect ratios: the FPN rows one size per level (2 strides: 8 px on P2 ...
  128 px on P6), the single-level rows all five on their level.
- Table 3 (Faster R-CNN, AP and AP50 by pycocotools): a single-level baseline (RPN and RoIs on C4) vs FPN. The
  paper trains its Table 3 heads on fixed FPN proposals; here each row trains its RPN and heads jointly.

Results go to `benchmarks/ablations.json` (one entry per row and seed, with its training time and command), so a
row can be re-run alone and the table is made from whatever has been measured. Nothing is tuned per row.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow starts: hides its per-op cost warnings
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "ablations.json")
README = os.path.join(HERE, "README.md")
MARKERS = ("<!-- ablations:start -->", "<!-- ablations:end -->")
FIVE_SIZES = (1.0, 2.0, 4.0, 8.0, 16.0)  # x anchor_scale x stride; with the level below: 8 ... 128 px

# name: (table, the paper's row, the paper's figures (COCO minival, ResNet-50), FasterRCNN arguments of the row)
ROWS = {
    "rpn_c4": ("rpn", "(a) baseline on conv4", {"AR100": 36.1, "AR1k": 48.3},
               {"min_level": 4, "max_level": 4, "anchor_scale": 0.5, "anchor_scales": FIVE_SIZES,
                "roi_min_level": 4, "roi_max_level": 4}),
    "rpn_c5": ("rpn", "(b) baseline on conv5", {"AR100": 36.3, "AR1k": 44.9},
               {"min_level": 5, "max_level": 5, "anchor_scale": 0.25, "anchor_scales": FIVE_SIZES,
                "roi_min_level": 5, "roi_max_level": 5}),
    "rpn_fpn": ("rpn", "(c) FPN", {"AR100": 44.0, "AR1k": 56.3}, {}),
    "rpn_bottom_up": ("rpn", "(d) bottom-up pyramid", {"AR100": 37.4, "AR1k": 49.5},
                      {"pyramid": {"top_down": False}}),
    "rpn_no_lateral": ("rpn", "(e) top-down pyramid, no laterals", {"AR100": 34.5, "AR1k": 46.1},
                       {"pyramid": {"lateral": False}}),
    "rpn_p2_only": ("rpn", "(f) only finest level P2", {"AR100": 38.4, "AR1k": 51.3},
                    {"rpn_min_level": 2, "rpn_max_level": 2, "anchor_scale": 2.0, "anchor_scales": FIVE_SIZES}),
    "frcnn_c4": ("frcnn", "(a) baseline on conv4", {"AP50": 53.1, "AP": 31.6},
                 {"min_level": 4, "max_level": 4, "anchor_scale": 0.5, "anchor_scales": FIVE_SIZES,
                  "roi_min_level": 4, "roi_max_level": 4}),
    "frcnn_fpn": ("frcnn", "(c) FPN", {"AP50": 56.9, "AP": 33.9}, {}),
}
RPN_METRICS = ("AR100", "AR1k", "AR1k_small", "AR1k_medium", "AR1k_large")
FRCNN_METRICS = ("AP", "AP50", "AP_small", "AP_medium", "AP_large")

FULL = {"image_size": 256, "train_images": 2000, "test_images": 200, "batch_size": 8, "steps": 1000,
        "backbone": "MobileNetV3Small"}
TINY = {"image_size": 64, "train_images": 8, "test_images": 4, "batch_size": 2, "steps": 2, "backbone": "tiny"}
# The study's base record: the zoo's small shapes Faster R-CNN (64-channel P2-P6, 256-d 2-fc head, 128 RoIs), with
# anchors from 8 px for objects from 8 px, 1,000 proposals per image at inference (AR1k), and this recipe.
ANCHOR_SIZE = 2.0
RECIPE = {"optimizer": {"name": "adam"}, "learning_rate": {"peak": 1e-3, "schedule": "cosine"},
          "global_clipnorm": 10.0, "precise_batchnorm_batches": 20}


def row_kwargs(name, config):
    """`FasterRCNN` constructor arguments of row `name` (num_classes and the seed aside)."""
    from keras_fpn import models
    from keras_fpn.detection.faster_rcnn import FasterRCNN

    table, _, _, changes = ROWS[name]
    kwargs = models.record_kwargs(models.get("fasterrcnn_mobilenetv3small_shapes"))
    size = config["image_size"]
    kwargs.update(anchor_scale=ANCHOR_SIZE, rpn_post_nms_topk_test=1000, input_shape=(size, size, 3),
                  backbone_weights=None, rpn_only=table == "rpn")
    changes = dict(changes)
    pyramid = changes.pop("pyramid", {})
    kwargs["backbone_kwargs"] = {**kwargs["backbone_kwargs"],
                                 "pyramid_kwargs": {**kwargs["backbone_kwargs"]["pyramid_kwargs"], **pyramid}}
    kwargs.update(changes)
    if config["backbone"] == "tiny":
        sys.path.insert(0, os.path.dirname(HERE))
        from tests.testing import tiny_convnet

        kwargs["backbone"] = tiny_convnet(input_shape=(size, size, 3))
        kwargs["backbone_kwargs"].pop("backbone_kwargs", None)  # MobileNetV3's own arguments
    return kwargs


def run_row(name, seed, config, verbose=2):
    """Trains row `name` with `seed` and measures it; returns the result entry."""
    import keras

    from keras_fpn.datasets import detection_pipeline, load_shapes
    from keras_fpn.datasets.shapes import SCALES
    from keras_fpn.detection.faster_rcnn import FasterRCNN
    from keras_fpn.evaluation import evaluate_coco, evaluate_proposals
    from keras_fpn.training import train_detector

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    size = config["image_size"]
    shapes = {**SCALES, "image_size": size}
    if size < SCALES["image_size"]:  # the tiny run: objects scaled with the image
        shapes.update(min_size=4, max_size=size // 2, max_objects=4)
    table = ROWS[name][0]
    model = FasterRCNN(num_classes=3, seed=seed, **row_kwargs(name, config))
    train = load_shapes(config["train_images"], seed=1, **shapes)
    test = load_shapes(config["test_images"], seed=2, **shapes)
    training = {**RECIPE, "batch_size": config["batch_size"], "steps": config["steps"]}
    start = time.perf_counter()
    model, _ = train_detector(model, train, training, (size, size), verbose=verbose, seed=seed)
    training_s = time.perf_counter() - start
    stride = model.input_multiple
    batches = detection_pipeline(test, config["batch_size"], (size, size), pad_to_multiple=stride,
                                 with_image_info=True, cache=True)
    if table == "rpn":
        found = evaluate_proposals(model, batches, (100, 1000))
        metrics = {key: found[key] for key in RPN_METRICS}
    else:
        found = evaluate_coco(model, batches)
        metrics = {key: found[key] for key in FRCNN_METRICS}
    return {"metrics": {key: round(float(value), 4) for key, value in metrics.items()},
            "training_s": round(training_s, 1), "steps": config["steps"], "batch_size": config["batch_size"],
            "image_size": size, "train_images": config["train_images"], "test_images": config["test_images"],
            "parameters": int(model.count_params()),
            "command": f"python benchmarks/ablations.py --rows {name} --seeds {seed}",
            "machine": machine()}


def machine():
    import keras
    import tensorflow as tf

    return (f"{os.cpu_count()}-core {platform.machine()} CPU, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            "float32")


def load_results(path):
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        return json.load(file)


def save_results(results, path):
    with open(path + ".tmp", "w") as file:
        json.dump(results, file, indent=1, sort_keys=True)
        file.write("\n")
    os.replace(path + ".tmp", path)


def summarise(entries, key):
    """`(mean, spread text)` of one metric over the seeds' entries (spread: min-max, in points)."""
    values = [100 * entry["metrics"][key] for entry in entries if entry["metrics"].get(key, -1) >= 0]
    if not values:
        return None, "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return mean, f"{mean:.1f}"
    return mean, f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"


def report(results):
    """The Markdown tables of `results` beside the paper's figures, and the orderings the paper found."""
    lines = []
    for table, metrics, title in (("rpn", RPN_METRICS, "Table 1: RPN alone, average recall (x100)"),
                                  ("frcnn", FRCNN_METRICS, "Table 3: Faster R-CNN, COCO AP (x100)")):
        names = [name for name, row in ROWS.items() if row[0] == table]
        paper_keys = list(ROWS[names[0]][2])
        lines += [f"**{title}**", "",
                  "| row | paper's row | " + " | ".join(metrics) + " | paper " + " / ".join(paper_keys)
                  + " | seeds | training s (each) |",
                  "|" + "---|" * (len(metrics) + 5)]
        means = {}
        for name in names:
            entries = [results[name][seed] for seed in sorted(results.get(name, {}))]
            cells = []
            for key in metrics:
                mean, text = summarise(entries, key)
                means[(name, key)] = mean
                cells.append(text if entries else "not run")
            paper = " / ".join(f"{value:.1f}" for value in ROWS[name][2].values())
            times = ", ".join(f"{entry['training_s']:.0f}" for entry in entries) or "-"
            lines.append(f"| `{name}` | {ROWS[name][1]} | " + " | ".join(cells) + f" | {paper} | {len(entries)} | "
                         f"{times} |")
        lines.append("")
        lines += orderings(table, names, means, results)
        lines.append("")
    return "\n".join(lines)


def orderings(table, names, means, results):
    """Each of the paper's comparisons against its main row, and whether it held here (beyond the seed spread)."""
    main = "rpn_fpn" if table == "rpn" else "frcnn_fpn"
    key = "AR1k" if table == "rpn" else "AP"
    lines = []
    if means.get((main, key)) is None:
        return lines
    main_values = [100 * entry["metrics"][key] for entry in results[main].values()]
    for name in names:
        if name == main or means.get((name, key)) is None:
            continue
        values = [100 * entry["metrics"][key] for entry in results[name].values()]
        paper_main, paper_row = ROWS[main][2][key], ROWS[name][2][key]
        paper_says = "above" if paper_main > paper_row else "below"
        if len(values) == 1 and len(main_values) == 1:
            here = ("above" if means[(main, key)] > means[(name, key)] else "below") + " (one seed each: no spread)"
        elif min(main_values) > max(values):
            here = "above, beyond every seed's value"
        elif max(main_values) < min(values):
            here = "below, beyond every seed's value"
        else:
            here = ("above on average" if means[(main, key)] > means[(name, key)] else "below on average") + (
                ", within the seeds' spread" if len(values) + len(main_values) > 2 else " (one seed each)")
        lines.append(f"- {key}: FPN {means[(main, key)]:.1f} vs `{name}` {means[(name, key)]:.1f}: FPN {here} "
                     f"(paper: {paper_main} vs {paper_row}, FPN {paper_says}).")
    return lines


def write_readme(text):
    with open(README) as file:
        readme = file.read()
    start, end = readme.index(MARKERS[0]) + len(MARKERS[0]), readme.index(MARKERS[1])
    with open(README, "w") as file:
        file.write(readme[:start] + "\n" + text + "\n" + readme[end:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS), help="rows to train")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, help=f"training steps per row (default {FULL['steps']})")
    parser.add_argument("--results", default=RESULTS, help="the results file (default benchmarks/ablations.json)")
    parser.add_argument("--report", action="store_true", help="print the table of the results file; train nothing")
    parser.add_argument("--write", action="store_true", help="with --report: also write it to benchmarks/README.md")
    parser.add_argument("--tiny", action="store_true",
                        help="every row on a tiny ConvNet, 64x64, 2 steps, results to a temporary file (CI smoke run)")
    args = parser.parse_args(argv)
    if args.report:
        text = report(load_results(args.results))
        print(text)
        if args.write:
            write_readme(text)
            print(f"Wrote {README}")
        return 0

    config = dict(TINY if args.tiny else FULL)
    if args.steps:
        config["steps"] = args.steps
    results_path = args.results
    if args.tiny:
        import tempfile

        results_path = os.path.join(tempfile.mkdtemp(prefix="ablations_"), "ablations.json")
    for name in args.rows:
        for seed in args.seeds:
            print(f"== {name} (paper {ROWS[name][0].upper()} row {ROWS[name][1]}), seed {seed}: {config['steps']} "
                  f"steps of {config['batch_size']} at {config['image_size']}x{config['image_size']}", flush=True)
            entry = run_row(name, seed, config, verbose=0 if args.tiny else 2)
            print(f"   {entry['metrics']} after {entry['training_s']:.0f} s of training", flush=True)
            results = load_results(results_path)  # re-read: another process may have added rows meanwhile
            results.setdefault(name, {})[str(seed)] = entry
            save_results(results, results_path)
    print(report(load_results(results_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
