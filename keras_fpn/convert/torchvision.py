"""torchvision's detection weights in keras_fpn models.

`from_torchvision(name, state_dict)` builds the keras_fpn model of the zoo record that mirrors torchvision's model
`name` (same layers, same conventions: `keras_fpn/zoo/<record>.json` says which and why) and copies every parameter
into it. The mapping is by name and checked both ways: a torchvision parameter left unused, a keras_fpn weight
left unset, and a shape that differs are each an error naming the parameter (and both shapes).

What changes on the way, besides names:
- conv kernels: PyTorch `(out, in, kh, kw)` -> Keras `(kh, kw, in, out)`;
- BatchNorm: `weight, bias, running_mean, running_var` -> `gamma, beta, moving_mean, moving_variance`
  (`num_batches_tracked` has no counterpart and is skipped);
- box regression outputs: torchvision's deltas per anchor (or class) are `(dx, dy, dw, dh)`, keras_fpn's
  `(dy, dx, dh, dw)` (`keras_fpn.detection.box_coding`), so the outputs are permuted within each group of four;
- fully connected layers: `(out, in)` -> `(in, out)`; the R-CNN box head's first layer reads RoI features flattened
  as `(channel, row, column)` in torchvision and `(row, column, channel)` in keras_fpn, so its inputs are permuted;
- R-CNN classes: torchvision's background is class 0, keras_fpn's is last; labels keep torchvision's COCO ids
  (label `i` is COCO category `i`), and label 0 gets the constant logit `NEVER_LOGIT`.

torch is not needed: `state_dict` may be any mapping of names to arrays (NumPy arrays, or torch tensors, which
are converted with `.numpy()`), or the path of a `.safetensors` or `.pth` file (`load_state_dict`).
"""

import os
import re

import numpy as np

# torchvision model builder -> the zoo record that mirrors it.
TORCHVISION_MODELS = {
    "retinanet_resnet50_fpn": "retinanet_resnet50_fpn_coco",
    "retinanet_resnet50_fpn_v2": "retinanet_resnet50_fpn_v2_coco",
    "fasterrcnn_resnet50_fpn": "fasterrcnn_resnet50_fpn_coco",
    "maskrcnn_resnet50_fpn": "maskrcnn_resnet50_fpn_coco",
    "fasterrcnn_resnet50_fpn_v2": "fasterrcnn_resnet50_fpn_v2_coco",
    "maskrcnn_resnet50_fpn_v2": "maskrcnn_resnet50_fpn_v2_coco",
}
# The logit given to label 0 of a converted R-CNN: torchvision's index 0 is its background, which keras_fpn keeps
# last, so keras_fpn's label 0 (torchvision's unused "__background__" id) gets this constant logit and a softmax
# probability of exactly 0 in float32, and every other probability equals torchvision's.
NEVER_LOGIT = -1e4
# What `from_torchvision(..., num_classes=K)` leaves out: the parameters whose shape depends on the classes (the
# R-CNN box predictor's class scores and per-class deltas, RetinaNet's class logits, the mask logits).
CLASS_PREDICTORS = ("head.classification_head.cls_logits.", "roi_heads.box_predictor.",
                    "roi_heads.mask_predictor.mask_fcn_logits.")
# keras_fpn's box deltas (dy, dx, dh, dw), as positions in torchvision's (dx, dy, dw, dh).
_DELTA_ORDER = (1, 0, 3, 2)


def load_state_dict(source):
    """`{name: np.ndarray}` from a mapping of names to arrays or tensors, or from a `.safetensors` / `.pth` /
    `.pt` file (the latter needs torch: `pip install -e ".[torch]"` in the repository)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Weights file {path!r} not found.")
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        try:
            import torch
        except ImportError:
            raise ImportError(f"Reading {path!r} needs PyTorch (`pip install -e '.[torch]'` in the repository), or save the "
                              "state dict as .safetensors, which reads without it.") from None
        source = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(source, dict) and "model" in source and isinstance(source["model"], dict):
            source = source["model"]  # a training checkpoint of torchvision's reference scripts
    if not hasattr(source, "items"):
        raise TypeError(f"Received a {type(source).__name__}; expected a mapping of parameter names to arrays "
                        "(a state dict) or the path of a .safetensors or .pth file.")
    arrays = {}
    for name, value in source.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[name] = np.asarray(value)
    return arrays


def _modern_names(state_dict):
    """Parameter names as torchvision spells them today: checkpoints saved before `Conv2dNormActivation` name
    `fpn.inner_blocks.0.weight` and `head.classification_head.conv.0.weight` what is now `...0.0.weight`
    (torchvision upgrades them in `_load_from_state_dict`; so does this), and Mask R-CNN's `mask_head.mask_fcn1`
    what is now `mask_head.0.0`."""
    renamed = {}
    for name, value in state_dict.items():
        name = re.sub(r"\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$", r".\1.\2.0.\3", name)
        name = re.sub(r"_head\.conv\.(\d+)\.(weight|bias)$", r"_head.conv.\1.0.\2", name)
        name = re.sub(r"mask_head\.mask_fcn(\d+)\.(weight|bias)$",
                      lambda match: f"mask_head.{int(match[1]) - 1}.0.{match[2]}", name)
        renamed[name] = value
    return renamed


def _kernel(array):
    return np.transpose(array, (2, 3, 1, 0))


def _conv_pairs(layer, torch_name, rows=None):
    """(torch name, variable, transform) for a Keras Conv2D; `rows` reorders the output channels."""
    def kernel(array):
        array = _kernel(array)
        return array if rows is None else array[..., rows]

    pairs = [(f"{torch_name}.weight", layer.kernel, kernel)]
    if layer.use_bias:
        pairs.append((f"{torch_name}.bias", layer.bias, (lambda array: array) if rows is None else
                      (lambda array: array[rows])))
    return pairs


def _batchnorm_pairs(layer, torch_name):
    return [(f"{torch_name}.weight", layer.gamma, None), (f"{torch_name}.bias", layer.beta, None),
            (f"{torch_name}.running_mean", layer.moving_mean, None),
            (f"{torch_name}.running_var", layer.moving_variance, None)]


def resnet_pairs(application, prefix="backbone.body"):
    """Pairs for a `TorchvisionResNet50`: its layer names are torchvision's with `_` for `.`."""
    import keras

    pairs = []
    for layer in application.layers:
        torch_name = f"{prefix}.{layer.name.replace('_', '.')}"
        if isinstance(layer, keras.layers.Conv2D):
            pairs += _conv_pairs(layer, torch_name)
        elif isinstance(layer, keras.layers.BatchNormalization):
            pairs += _batchnorm_pairs(layer, torch_name)
    return pairs


def pyramid_pairs(pyramid, prefix="backbone.fpn"):
    """Pairs for a `FeaturePyramid` and torchvision's `FeaturePyramidNetwork` (+ `LastLevelP6P7`): block `i`
    is pyramid level `min_level + i`; with `norm="batch"` (the v2 R-CNNs) each block's BatchNorm is its module 1."""
    pairs = []
    for blocks, convs, norms in (("inner_blocks", pyramid.lateral_convs, pyramid.lateral_norms),
                                 ("layer_blocks", pyramid.output_convs, pyramid.output_norms)):
        for key, conv in convs.items():
            block = f"{prefix}.{blocks}.{int(key[1:]) - pyramid.min_level}"
            pairs += _conv_pairs(conv, f"{block}.0")
            if norms.get(key) is not None:
                pairs += _batchnorm_pairs(norms[key], f"{block}.1")
    for key, conv in pyramid.extra_convs.items():
        pairs += _conv_pairs(conv, f"{prefix}.extra_blocks.{key.lower()}")
    return pairs


def retinanet_head_pairs(model, prefix="head"):
    """Pairs for RetinaNet's two `PredictionHead`s and torchvision's `RetinaNetHead` (v1: convs with biases; v2:
    convs without, each followed by GroupNorm)."""
    pairs = []
    anchors = model.anchor_generator.anchors_per_location
    rows = [4 * anchor + position for anchor in range(anchors) for position in _DELTA_ORDER]
    for head, name, last, last_rows in ((model.get_layer("classification_head"), "classification_head",
                                         "cls_logits", None),
                                        (model.get_layer("box_head"), "regression_head", "bbox_reg", rows)):
        for index, conv in enumerate(head.convs):
            pairs += _conv_pairs(conv, f"{prefix}.{name}.conv.{index}.0")
            if head.norms:  # v2's GroupNorm: Conv2dNormActivation's second module
                pairs += [(f"{prefix}.{name}.conv.{index}.1.weight", head.norms[index].gamma, None),
                          (f"{prefix}.{name}.conv.{index}.1.bias", head.norms[index].beta, None)]
        pairs += _conv_pairs(head.output_conv, f"{prefix}.{name}.{last}", last_rows)
    return pairs


def _dense_pairs(layer, torch_name, columns=None, rows=None):
    """(torch name, variable, transform) for a Keras Dense layer: `columns(array)` rearranges the torch weight's
    `(out, in)` input axis, `rows` (indices, or a function of the weight) its output axis."""
    def kernel(array):
        array = array if columns is None else columns(array)
        array = array if rows is None else (rows(array) if callable(rows) else array[rows])
        return array.T

    def bias(array):
        return array if rows is None else (rows(array) if callable(rows) else array[rows])

    return [(f"{torch_name}.weight", layer.kernel, kernel), (f"{torch_name}.bias", layer.bias, bias)]


def _delta_rows(groups):
    """Output rows of `groups` groups of torchvision's (dx, dy, dw, dh), in keras_fpn's (dy, dx, dh, dw) order."""
    return [4 * group + position for group in range(groups) for position in _DELTA_ORDER]


def _background_last(array):
    """torchvision's class rows `[background, 1, ..., K-1]` -> keras_fpn's `[never, 1, ..., K-1, background]`:
    label 0 gets a zero weight row and the bias `NEVER_LOGIT`."""
    never = np.full_like(array[:1], NEVER_LOGIT if array.ndim == 1 else 0.0)
    return np.concatenate([never, array[1:], array[:1]], axis=0)


def rpn_pairs(model, prefix="rpn.head"):
    """Pairs for `RPNHead` and torchvision's `RPNHead` (`conv_depth` x (3x3 conv + ReLU), 1x1 objectness and box
    convs)."""
    head = model.rpn_head
    pairs = []
    for index, conv in enumerate([head.conv, *head.more_convs]):
        pairs += _conv_pairs(conv, f"{prefix}.conv.{index}.0")
    return (pairs + _conv_pairs(head.objectness, f"{prefix}.cls_logits")
            + _conv_pairs(head.box, f"{prefix}.bbox_pred", _delta_rows(head.num_anchors)))


def box_head_pairs(model, prefix="roi_heads"):
    """Pairs for `BoxHead` + `BoxPredictor` and torchvision's `TwoMLPHead` (v1: `fc6`, `fc7`) or
    `FastRCNNConvFCHead` (v2: a Sequential of conv blocks `i.0` + BatchNorm `i.1`, a Flatten, then Linear layers
    each followed by a ReLU) + `FastRCNNPredictor`."""
    box_head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    pool = model.pool_size
    channels = box_head.conv_filters if box_head.convs else model.backbone.num_channels

    def channels_last(array):  # (out, C * P * P) read as (C, P, P) -> (out, P * P * C) read as (P, P, C)
        out = array.shape[0]
        return array.reshape(out, channels, pool, pool).transpose(0, 2, 3, 1).reshape(out, -1)

    if box_head.convs:
        pairs = []
        for index, conv in enumerate(box_head.convs):
            pairs += _conv_pairs(conv, f"{prefix}.box_head.{index}.0")
            if box_head.norms:
                pairs += _batchnorm_pairs(box_head.norms[index], f"{prefix}.box_head.{index}.1")
        first = len(box_head.convs) + 1  # after the Flatten; each Linear is followed by its ReLU
        names = [f"{prefix}.box_head.{first + 2 * index}" for index in range(len(box_head.fcs))]
    else:
        pairs, names = [], [f"{prefix}.box_head.fc{6 + index}" for index in range(len(box_head.fcs))]
    for index, (fc, name) in enumerate(zip(box_head.fcs, names)):
        pairs += _dense_pairs(fc, name, columns=channels_last if index == 0 else None)
    return (pairs
            + _dense_pairs(predictor.cls_score, f"{prefix}.box_predictor.cls_score", rows=_background_last)
            + _dense_pairs(predictor.bbox_pred, f"{prefix}.box_predictor.bbox_pred",
                           rows=_delta_rows(predictor.num_classes)))


def backbone_pairs(backbone):
    application = backbone.get_layer(backbone._extractor_name)
    return resnet_pairs(application) + pyramid_pairs(backbone.get_layer("feature_pyramid"))


def mask_head_pairs(model, prefix="roi_heads"):
    """Pairs for `MaskHead` and torchvision's `MaskRCNNHeads` + `MaskRCNNPredictor` (a transposed conv's PyTorch
    weight `(in, out, kh, kw)` becomes Keras's `(kh, kw, out, in)`: the same transpose as a conv's)."""
    head = model.roi_heads.mask_head
    pairs = []
    for index, conv in enumerate(head.convs):
        pairs += _conv_pairs(conv, f"{prefix}.mask_head.{index}.0")
        if head.norms:  # v2: BatchNorm, the block's module 1
            pairs += _batchnorm_pairs(head.norms[index], f"{prefix}.mask_head.{index}.1")
    return (pairs + _conv_pairs(head.upsample, f"{prefix}.mask_predictor.conv5_mask")
            + _conv_pairs(head.predictor, f"{prefix}.mask_predictor.mask_fcn_logits"))


# Each convertible detector class (by name) and the parts its torchvision counterpart has besides the backbone.
_HEAD_PAIRS = {
    "RetinaNet": (retinanet_head_pairs,),
    "FasterRCNN": (rpn_pairs, box_head_pairs),
    "MaskRCNN": (rpn_pairs, box_head_pairs, mask_head_pairs),
}


def model_pairs(model):
    """Every (torchvision name, keras variable, transform) of a converted architecture."""
    parts = _HEAD_PAIRS.get(type(model).__name__)
    if parts is None:
        raise ValueError(f"No torchvision mapping for {type(model).__name__}; convertible: {sorted(_HEAD_PAIRS)}.")
    return backbone_pairs(model.backbone) + [pair for part in parts for pair in part(model)]


def assign(pairs, state_dict, what="torchvision"):
    """Copies `state_dict` into the paired variables. Raises ValueError naming missing and unused parameters and
    every shape mismatch (both shapes)."""
    state_dict = _modern_names(state_dict)
    names = {name for name, _, _ in pairs}
    missing = sorted(name for name in names if name not in state_dict)
    unused = sorted(name for name in state_dict if name not in names and not name.endswith("num_batches_tracked"))
    if missing or unused:
        raise ValueError(f"The {what} state dict does not fit: {len(missing)} parameters missing "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}, {len(unused)} unused "
                         f"{unused[:10]}{' ...' if len(unused) > 10 else ''}.")
    mismatched = []
    values = []
    for name, variable, transform in pairs:
        value = np.asarray(state_dict[name], np.float32)
        value = transform(value) if transform is not None else value
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(f"{name}: {tuple(state_dict[name].shape)} in the state dict (as "
                              f"{tuple(value.shape)} in Keras's layout), {tuple(variable.shape)} in keras_fpn "
                              f"({variable.path})")
        values.append(value)
    if mismatched:
        raise ValueError("Shapes differ: " + "; ".join(mismatched[:10]))
    for (_, variable, _), value in zip(pairs, values):
        variable.assign(value)


def from_torchvision(name, state_dict, num_classes=None, **kwargs):
    """A keras_fpn model holding the weights of torchvision's detection model `name`.

    Args:
        name: a torchvision model builder name (`TORCHVISION_MODELS`), e.g. `"retinanet_resnet50_fpn"`.
        state_dict: that model's `state_dict()` (names to tensors or arrays), or the path of a `.safetensors` or
            `.pth` file of it (`load_state_dict`).
        num_classes: None (torchvision's 91 COCO labels), or the class count of a new dataset: the model then gets
            a new, freshly initialised class head, and everything else is converted (`CLASS_PREDICTORS` lists
            what is left out). This is fine-tuning as torchvision's detection tutorial does it, where
            `roi_heads.box_predictor` (and the mask logits) are replaced.
        **kwargs: constructor arguments overriding the record's (e.g. `score_threshold`, `resize_min_size`).

    Returns:
        The model (uncompiled), built from the zoo record `TORCHVISION_MODELS[name]`.

    Raises:
        ValueError: `name` is not convertible; a parameter is missing or unused; a shape differs.
    """
    from keras_fpn import models

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"Received torchvision model {name!r}; convertible models: {sorted(TORCHVISION_MODELS)}.")
    state_dict = _modern_names(load_state_dict(state_dict))
    record = models.get(TORCHVISION_MODELS[name])
    model = models.build(record["name"], num_classes=num_classes, backbone_weights=None, **kwargs)
    pairs = model_pairs(model)
    if num_classes is not None and num_classes != record["num_classes"]:
        pairs = [pair for pair in pairs if not pair[0].startswith(CLASS_PREDICTORS)]
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith(CLASS_PREDICTORS)}
    assign(pairs, state_dict)
    return model


def parameter_shapes(name):
    """`{parameter name: shape}` of torchvision's model `name` as its `state_dict()` has them (BatchNorm's
    `num_batches_tracked` aside), read from the keras_fpn model that holds them: what a weights file must hold."""
    from keras_fpn import models

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"Received torchvision model {name!r}; convertible models: {sorted(TORCHVISION_MODELS)}.")
    model = models.build(TORCHVISION_MODELS[name], backbone_weights=None)
    shapes = {}
    for torch_name, variable, _ in model_pairs(model):
        shape = tuple(variable.shape)
        # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw) (a transposed conv's (kh, kw, out, in) -> (in, out,
        # kh, kw) alike); Dense (in, out) -> Linear (out, in); vectors as they are.
        shape = {4: lambda s: (s[3], s[2], s[0], s[1]), 2: lambda s: (s[1], s[0])}.get(len(shape), lambda s: s)(shape)
        if torch_name.startswith("roi_heads.box_predictor.cls_score."):  # keras_fpn's extra label-0 row
            shape = (shape[0] - 1,) + shape[1:]
        shapes[torch_name] = shape
    return shapes
