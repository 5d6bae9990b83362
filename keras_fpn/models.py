"""The model zoo's one entry point: named configurations of the detectors (RetinaNet, Faster R-CNN, Mask R-CNN) and
segmenters (SemanticFPN, UNet) stored as JSON records.

The records live in the repository's `models/` folder (one `NAME.json` per model, data only) and ship inside the
package as `keras_fpn/zoo/` (a link to that folder, installed as package data). This module reads them; it holds
no configuration of its own.

>>> import keras_fpn
>>> "retinanet_resnet50_fpn" in keras_fpn.models.list()
True
>>> keras_fpn.models.get("retinanet_resnet50_fpn")["backbone"]["application"]
'ResNet50'
"""

import builtins
import copy
import difflib
import json
import os

from importlib import resources

from keras_fpn import presets

_SECTIONS = {
    "name": str,
    "architecture": str,
    "description": str,
    "reference": str,
    "dataset": str,
    "num_classes": int,
    "input_size": builtins.list,
    "backbone": dict,
    "pyramid": dict,
    "head": dict,
    "rpn": dict,
    "roi_heads": dict,
    "mask_head": dict,
    "decoder": dict,
    "anchors": dict,
    "detection": dict,
    "transform": dict,
    "weights": dict,
    "training": dict,
    "figures": dict,
}
_FIELDS = {
    "backbone": {"application", "weights", "kwargs", "batchnorm_momentum", "freeze_batchnorm"},
    "pyramid": {"min_level", "max_level", "num_channels", "fusion", "extra_levels_from", "extra_padding", "norm",
                "norm_epsilon", "top_down", "lateral", "source"},
    "head": {"filters", "depth", "norm", "norm_epsilon", "separable", "prior_probability", "aggregation", "source"},
    "decoder": {"filters", "source"},
    "anchors": {"size", "scales", "aspect_ratios", "convention", "source"},
    "transform": {"min_size", "max_size", "size_divisible", "source"},
    "weights": {"source", "torchvision_name", "torchvision_weights", "published_ap", "categories"},
    "rpn": {"positive_iou", "negative_iou", "batch_size_per_image", "positive_fraction", "pre_nms_topk_train",
            "pre_nms_topk_test", "post_nms_topk_train", "post_nms_topk_test", "nms_iou_threshold", "min_size",
            "min_level", "max_level", "conv_depth", "source"},
    "roi_heads": {"min_level", "max_level", "pool_size", "sampling_ratio", "aligned", "batch_size_per_image",
                  "positive_fraction", "positive_iou", "head_dim", "box_weights", "smooth_l1_beta", "conv_depth",
                  "fc_depth", "norm", "norm_epsilon", "source"},
    "mask_head": {"pool_size", "filters", "depth", "norm", "paste", "source"},
    "detection": {"positive_iou", "negative_iou", "box_loss", "smooth_l1_beta", "box_loss_weight", "focal_alpha",
                  "focal_gamma", "score_threshold", "pre_nms_topk", "nms_iou_threshold", "max_detections"},
    "training": {"batch_size", "epochs", "steps", "optimizer", "learning_rate", "weight_decay", "global_clipnorm",
                 "augmentation", "precise_batchnorm_batches", "source"},
    "figures": {"parameters", "gflops", "cpu_latency_ms", "measured_with", "machine", "ap", "miou"},
}
_REQUIRED = ("name", "description", "dataset", "num_classes", "input_size", "backbone", "pyramid", "training",
             "figures")
# Each model's class (module, name), found by a record's "architecture" (default "retinanet"), and the sections
# only its records have. A new detector or segmenter is added here and nowhere else in the CLI, export or
# evaluation.
ARCHITECTURES = {
    "retinanet": ("keras_fpn.detection.retinanet", "RetinaNet"),
    "fasterrcnn": ("keras_fpn.detection.faster_rcnn", "FasterRCNN"),
    "maskrcnn": ("keras_fpn.detection.mask_rcnn", "MaskRCNN"),
    "semanticfpn": ("keras_fpn.segmentation.semantic_fpn", "SemanticFPN"),
    "unet": ("keras_fpn.segmentation.unet", "UNet"),
}
_DETECTORS = {"retinanet", "fasterrcnn", "maskrcnn"}
_REQUIRED_BY_ARCHITECTURE = {"retinanet": ("head", "anchors"), "fasterrcnn": ("anchors",), "maskrcnn": ("anchors",),
                             "semanticfpn": ("head",), "unet": ("decoder",)}
_ONLY_FOR = {"head": {"retinanet", "semanticfpn"}, "rpn": {"fasterrcnn", "maskrcnn"},
             "roi_heads": {"fasterrcnn", "maskrcnn"}, "mask_head": {"maskrcnn"}, "decoder": {"unet"},
             "anchors": _DETECTORS, "detection": _DETECTORS, "transform": _DETECTORS}


def _zoo_dir():
    return resources.files("keras_fpn") / "zoo"


def _check(record, source):
    """Raises ValueError naming the first missing, unknown or mistyped field of `record`."""
    if not isinstance(record, dict):
        raise ValueError(f"{source}: expected a JSON object, received {type(record).__name__}.")
    architecture = record.get("architecture", "retinanet")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{source}: architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}.")
    missing = [key for key in _REQUIRED + _REQUIRED_BY_ARCHITECTURE[architecture] if key not in record]
    unknown = sorted(set(record) - set(_SECTIONS))
    unknown += sorted(key for key, owners in _ONLY_FOR.items() if key in record and architecture not in owners)
    if missing or unknown:
        raise ValueError(f"{source}: missing fields {missing}, unknown fields {unknown}; "
                         f"expected the fields {sorted(_SECTIONS)}.")
    for key, value in record.items():
        if not isinstance(value, _SECTIONS[key]):
            raise ValueError(f"{source}: field {key!r} is a {type(value).__name__}; expected "
                             f"{_SECTIONS[key].__name__}.")
        extra = sorted(set(value) - _FIELDS[key]) if key in _FIELDS else []
        if extra:
            raise ValueError(f"{source}: unknown {key} fields {extra}; expected some of {sorted(_FIELDS[key])}.")
    if "application" not in record["backbone"]:
        raise ValueError(f"{source}: backbone needs 'application', a keras.applications name such as 'ResNet50'.")
    if len(record["input_size"]) != 2:
        raise ValueError(f"{source}: input_size is {record['input_size']}; expected [height, width].")
    return record


def load_record(path):
    """Reads and checks one zoo record from a JSON file (your own configurations work too)."""
    with open(path) as file:
        try:
            record = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
    return _check(record, path)


def list():  # noqa: A001 - the zoo's public API is keras_fpn.models.list()
    """Names of the models in the zoo, sorted."""
    return sorted(entry.name[: -len(".json")] for entry in _zoo_dir().iterdir() if entry.name.endswith(".json"))


def get(name):
    """The zoo record `name` as a dict (a fresh copy), or the record in a JSON file when `name` is a path.

    Raises:
        ValueError: `name` is neither a model in the zoo nor a JSON file; the message lists the zoo.
    """
    if name.endswith(".json") and os.path.isfile(name):
        return load_record(name)
    names = list()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Received model name {name!r}; the zoo has {names}.{hint}")
    entry = _zoo_dir() / f"{name}.json"
    record = _check(json.loads(entry.read_text()), f"zoo record {name}")
    if record["name"] != name:
        raise ValueError(f"zoo record {name}.json names itself {record['name']!r}.")
    return copy.deepcopy(record)


def architecture_class(record):
    """The detector class that builds `record` (by its `architecture`, default `"retinanet"`)."""
    import importlib

    module, name = ARCHITECTURES[record.get("architecture", "retinanet")]
    return getattr(importlib.import_module(module), name)


def build(name, num_classes=None, backbone_weights="preset", **kwargs):
    """Builds the zoo model `name` (or the record in a JSON file) with the class its record names: `RetinaNet`,
    `FasterRCNN`, ... Arguments as `from_preset` of that class.

    >>> import keras_fpn
    >>> type(keras_fpn.models.build("retinanet_mobilenetv3small_shapes", backbone_weights=None)).__name__
    'RetinaNet'
    """
    record = get(name)
    return architecture_class(record).from_preset(name, num_classes=num_classes, backbone_weights=backbone_weights,
                                                 **kwargs)


def preset_arguments(cls, name, num_classes=None, backbone_weights="preset", **kwargs):
    """The constructor arguments of detector class `cls` for the zoo record `name` (or a record file): what
    `cls.from_preset(name, ...)` builds. The record's `architecture` must be `cls`'s. Registered with
    `keras_fpn.presets` below, so that the detectors reach the zoo without importing it."""
    record = get(name)
    if architecture_class(record) is not cls:
        raise ValueError(f"{record['name']} is a {record.get('architecture', 'retinanet')} record; build it "
                         f"with keras_fpn.models.build({record['name']!r}) or its own class, not {cls.__name__}.")
    arguments = record_kwargs(record)
    arguments["backbone_weights"] = record["backbone"].get("weights") if backbone_weights == "preset" else (
        backbone_weights)
    arguments.setdefault("name", record["name"])
    arguments.update(kwargs)
    arguments["num_classes"] = record["num_classes"] if num_classes is None else num_classes
    return arguments


def backbone_kwargs(record):
    """The `FPNBackbone` arguments every architecture reads from a record's `backbone` and `pyramid` sections."""
    backbone, pyramid = record["backbone"], record["pyramid"]
    pyramid_kwargs = {key: pyramid[key] for key in ("fusion", "extra_levels_from", "extra_padding", "norm",
                                                    "norm_epsilon", "top_down", "lateral") if key in pyramid}
    kwargs = {"pyramid_kwargs": pyramid_kwargs}
    for key in ("batchnorm_momentum", "freeze_batchnorm"):
        if backbone.get(key) is not None:
            kwargs[key] = backbone[key]
    if backbone.get("kwargs"):
        kwargs["backbone_kwargs"] = dict(backbone["kwargs"])
    return kwargs


def detector_kwargs(record, min_level, max_level):
    """The constructor arguments every architecture reads the same way from a record's `backbone`, `pyramid` and
    `anchors` sections; `min_level` and `max_level` are the architecture's defaults for absent pyramid levels."""
    pyramid, anchors = record["pyramid"], record["anchors"]
    kwargs = {
        "backbone": record["backbone"]["application"],
        "min_level": pyramid.get("min_level", min_level),
        "max_level": pyramid.get("max_level", max_level),
        "num_channels": pyramid.get("num_channels", 256),
        "backbone_kwargs": backbone_kwargs(record),
    }
    if "size" in anchors:
        kwargs["anchor_scale"] = anchors["size"]
    if "scales" in anchors:
        kwargs["anchor_scales"] = tuple(anchors["scales"])
    if "aspect_ratios" in anchors:
        kwargs["aspect_ratios"] = tuple(anchors["aspect_ratios"])
    if "convention" in anchors:
        kwargs["anchor_convention"] = anchors["convention"]
    transform = record.get("transform", {})
    for key, name in (("min_size", "resize_min_size"), ("max_size", "resize_max_size"),
                      ("size_divisible", "size_divisible")):
        if key in transform:
            kwargs[name] = transform[key]
    return kwargs


def retinanet_kwargs(record):
    """`RetinaNet` constructor arguments of a zoo record (everything but `num_classes` and the weights)."""
    head = record["head"]
    kwargs = detector_kwargs(record, min_level=3, max_level=7)
    kwargs.update({
        "head_filters": head.get("filters", 256),
        "head_depth": head.get("depth", 4),
        "head_norm": head.get("norm"),
        "head_norm_epsilon": head.get("norm_epsilon", 1e-3),
        "head_separable": head.get("separable", False),
        "prior_probability": head.get("prior_probability", 0.01),
    })
    kwargs.update(record.get("detection", {}))
    return kwargs


def fasterrcnn_kwargs(record):
    """`FasterRCNN` constructor arguments of a zoo record: the shared sections, then `rpn` (keys with or without
    the `rpn_` prefix), `roi_heads` (`min_level` -> `roi_min_level`, ...) and `detection`."""
    kwargs = detector_kwargs(record, min_level=2, max_level=6)
    for key, value in record.get("rpn", {}).items():
        if key != "source":
            kwargs[key if key.startswith("rpn_") else f"rpn_{key}"] = value
    names = {"min_level": "roi_min_level", "max_level": "roi_max_level",
             "batch_size_per_image": "roi_batch_size_per_image", "positive_fraction": "roi_positive_fraction",
             "positive_iou": "roi_positive_iou", "aligned": "roi_aligned", "conv_depth": "box_head_conv_depth",
             "fc_depth": "box_head_fc_depth", "norm": "box_head_norm", "norm_epsilon": "head_norm_epsilon"}
    for key, value in record.get("roi_heads", {}).items():
        if key != "source":
            kwargs[names.get(key, key)] = tuple(value) if isinstance(value, builtins.list) else value
    kwargs.update(record.get("detection", {}))
    return kwargs


def maskrcnn_kwargs(record):
    """`MaskRCNN` constructor arguments of a zoo record: `fasterrcnn_kwargs` plus the `mask_head` section."""
    kwargs = fasterrcnn_kwargs(record)
    names = {"pool_size": "mask_pool_size", "filters": "mask_head_filters", "depth": "mask_head_depth",
             "norm": "mask_head_norm", "paste": "mask_paste"}
    for key, value in record.get("mask_head", {}).items():
        if key != "source":
            kwargs[names[key]] = value
    return kwargs


def semanticfpn_kwargs(record):
    """`SemanticFPN` constructor arguments of a zoo record: the backbone and pyramid, and the `head` section
    (`filters`, `norm`, `aggregation`)."""
    pyramid, head = record["pyramid"], record["head"]
    kwargs = {"backbone": record["backbone"]["application"], "min_level": pyramid.get("min_level", 2),
              "max_level": pyramid.get("max_level", 5), "num_channels": pyramid.get("num_channels", 256),
              "backbone_kwargs": backbone_kwargs(record)}
    for key, name in (("filters", "head_filters"), ("norm", "head_norm"), ("aggregation", "aggregation")):
        if key in head:
            kwargs[name] = head[key]
    return kwargs


def unet_kwargs(record):
    """`UNet` constructor arguments of a zoo record: the backbone, its levels, and the `decoder` filters."""
    pyramid = record["pyramid"]
    kwargs = {"backbone": record["backbone"]["application"], "min_level": pyramid.get("min_level", 2),
              "max_level": pyramid.get("max_level", 5), "backbone_kwargs": backbone_kwargs(record)}
    if "filters" in record["decoder"]:
        kwargs["decoder_filters"] = tuple(record["decoder"]["filters"])
    return kwargs


def record_kwargs(record):
    """The constructor arguments (all but `num_classes` and the weights) of the class that builds `record`: the
    one mapping from records to arguments."""
    architecture = record.get("architecture", "retinanet")
    return {"retinanet": retinanet_kwargs, "fasterrcnn": fasterrcnn_kwargs,
            "maskrcnn": maskrcnn_kwargs, "semanticfpn": semanticfpn_kwargs, "unet": unet_kwargs}[architecture](record)


def summary(records=None):
    """One row per record for tables: name, backbone, levels, input, dataset, parameters, GFLOPs, CPU ms, AP (of the
    detectors) and mIoU (of the segmenters).

    Numbers not measured are None. Used by `keras-fpn models` and by the script that writes `models/README.md`.
    """
    records = [get(name) for name in list()] if records is None else records
    rows = []
    for record in records:
        figures = record["figures"]
        ap = figures.get("ap") or {}
        rows.append({
            "name": record["name"],
            "architecture": record.get("architecture", "retinanet"),
            "backbone": record["backbone"]["application"],
            "levels": f"P{record['pyramid'].get('min_level', 3)}-P{record['pyramid'].get('max_level', 7)}",
            # A U-Net decodes the backbone's own maps: it has no pyramid channels.
            "channels": None if "decoder" in record else record["pyramid"].get("num_channels", 256),
            "input": "x".join(str(size) for size in record["input_size"]),
            "dataset": record["dataset"],
            "num_classes": record["num_classes"],
            "parameters": figures.get("parameters"),
            "gflops": figures.get("gflops"),
            "cpu_latency_ms": figures.get("cpu_latency_ms"),
            "AP": ap.get("AP"),
            "AP50": ap.get("AP50"),
            "mIoU": (figures.get("miou") or {}).get("mIoU"),
        })
    return rows


presets.register(preset_arguments)
