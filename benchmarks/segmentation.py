"""SemanticFPN against the U-Net decoder and a single-scale head on the coarsest level, on the same data with the
same budget, over several seeds (issue #30's comparison).

    python benchmarks/segmentation.py                       # 3 seeds, 600 steps, 64x64 (about 10 min, 2 cores)
    python benchmarks/segmentation.py --seeds 0 --steps 50  # a smoke run

Data: `generate_segmentation_shapes` (objects 6 px to 3/4 of the image, and lines 1-3 px wide), 256 training and
64 held-out images (seeds 0 and 1, the same for every model). Every model: MobileNetV3-Small (minimalistic, random
init, BatchNorm momentum 0.9), Adam 3e-3, batch 16, the same steps. Models:
- `SemanticFPN`: Panoptic FPN's semantic branch on P2-P5 (32-channel pyramid, 16-channel head);
- `UNet`: the U-Net decoder on C2-C5 (32-32-16-16-16);
- `P5 only`: the same semantic head on the coarsest level alone (one stage, 32x upsampling): the single-scale
  baseline.
Reported: mIoU and the lines' IoU (the thinnest structures) per seed and their mean and spread; the recall of small
and of large objects (`object_recall`); parameters, GFLOPs at the image size, and CPU latency of one image (median
of 20 `predict_on_batch` calls).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import median_time  # noqa: E402

BACKBONE = {"backbone": "MobileNetV3Small", "backbone_weights": None,
            "backbone_kwargs": {"backbone_kwargs": {"minimalistic": True}, "batchnorm_momentum": 0.9}}


def build(kind, num_classes):
    from keras_fpn.segmentation import SemanticFPN, UNet

    if kind == "SemanticFPN":
        return SemanticFPN(num_classes, num_channels=32, head_filters=16, **BACKBONE)
    if kind == "UNet":
        return UNet(num_classes, decoder_filters=(32, 32, 16, 16, 16), **BACKBONE)
    if kind == "P5 only":
        return SemanticFPN(num_classes, num_channels=32, head_filters=16, min_level=5, max_level=5, **BACKBONE)
    raise ValueError(kind)


def object_recall(class_maps, test_seed, size):
    """Per-object pixel recall by object size, on `generate_segmentation_shapes(len(class_maps), size,
    seed=test_seed)`: for each shape, the fraction of its visible pixels (those its class holds in the mask, lines
    drawn over it excluded) that the prediction gives its class, averaged over the shapes whose visible area's
    square root is under 1/8 of the image side ("small"; 6-8 px at 64x64) or at least 1/4 ("large"). IoU cannot be
    split this way: a false positive belongs to no object. Returns `{"small": ..., "large": ...,
    "counts": (small, large)}`."""
    import numpy as np

    from keras_fpn.datasets.shapes import generate_segmentation_shapes, generate_shapes

    _, semantic = generate_segmentation_shapes(len(class_maps), size, seed=test_seed)
    # The call generate_segmentation_shapes makes with its defaults, for each shape's own mask.
    _, _, labels, masks = generate_shapes(len(class_maps), size, max_objects=6, min_size=6, seed=test_seed,
                                          with_masks=True)
    recalls = {"small": [], "large": []}
    for n, class_map in enumerate(np.asarray(class_maps)):
        for k in np.flatnonzero(labels[n] >= 0):
            visible = (masks[n, k] > 0) & (semantic[n] == labels[n, k] + 1)
            side = np.sqrt(visible.sum())
            if side == 0 or size / 8 <= side < size / 4:
                continue
            recalls["small" if side < size / 8 else "large"].append(np.mean(class_map[visible] == labels[n, k] + 1))
    return {"small": float(np.mean(recalls["small"])), "large": float(np.mean(recalls["large"])),
            "counts": (len(recalls["small"]), len(recalls["large"]))}


def run(kind, seed, steps, size, train, test, test_seed):
    import keras
    import numpy as np

    from keras_fpn.datasets.segmentation import segmentation_pipeline
    from keras_fpn.datasets.shapes import SEGMENTATION_CLASSES
    from keras_fpn.evaluation.segmentation import evaluate_segmentation
    from keras_fpn.utils.flops import count_flops

    keras.utils.set_random_seed(seed)
    model = build(kind, len(SEGMENTATION_CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    start = time.perf_counter()
    model.fit(segmentation_pipeline(*train, batch_size=16, repeat=True, seed=seed), steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    scores = evaluate_segmentation(model, *test, class_names=SEGMENTATION_CLASSES)
    recall = object_recall(model.predict(test[0], batch_size=16, verbose=0), test_seed, size)
    image = test[0][:1].astype(np.float32)
    return {"mIoU": scores["mIoU"], "line": scores["per_class_iou"]["line"], "small": recall["small"],
            "large": recall["large"], "counts": recall["counts"], "train_s": seconds,
            "parameters": model.count_params(), "gflops": count_flops(model, (size, size, 3)) / 1e9,
            "ms": median_time(lambda: model.predict_on_batch(image), 20) * 1000}


def main(argv=None):
    from keras_fpn.datasets.shapes import generate_segmentation_shapes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    train = generate_segmentation_shapes(256, args.size, seed=0)
    test_seed = 1
    test = generate_segmentation_shapes(64, args.size, seed=test_seed)
    rows = {}
    for kind in ("SemanticFPN", "UNet", "P5 only"):
        for seed in args.seeds:
            result = run(kind, seed, args.steps, args.size, train, test, test_seed)
            rows.setdefault(kind, []).append(result)
            print(f"{kind:<12} seed {seed}: mIoU {result['mIoU']:.3f}, line IoU {result['line']:.3f}, "
                  f"small objects' recall {result['small']:.3f}, large {result['large']:.3f}, trained in {result['train_s']:.0f} s",
                  flush=True)

    def spread(values):
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"

    print(f"\n{len(args.seeds)} seeds, {args.steps} steps, {args.size}x{args.size} ({os.cpu_count()} cores):")
    small, large = next(iter(rows.values()))[0]["counts"]
    print(f"(recall: {small} small and {large} large held-out objects)")
    print(f"{'model':<12} {'mIoU':>14} {'line IoU':>14} {'small recall':>14} {'large recall':>14} {'parameters':>11} "
          f"{'GFLOPs':>7} {'ms/image':>9}")
    for kind, results in rows.items():
        first = results[0]
        columns = [spread([r[key] for r in results]) for key in ("mIoU", "line", "small", "large")]
        print(f"{kind:<12} {columns[0]:>14} {columns[1]:>14} {columns[2]:>14} {columns[3]:>14} "
              f"{first['parameters']:>11,} {first['gflops']:>7.3f} {statistics.median(r['ms'] for r in results):>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
