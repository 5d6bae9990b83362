"""Find a backbone's stage outputs ``C{level}`` by measuring output strides.

The FPN paper takes, for every stage of the bottom-up pathway, "the output of the last layer of each stage"
(Lin et al. 2017, Sec. 3), where a stage is the run of layers that produce maps of the same size. This module
recovers those layers from any functional Keras model without knowing its layer names:

1. Every layer with a single 4D output is probed at two input sizes, symbolically (no arithmetic is done), and its
   stride is ``(P2 - P1) / (out2 - out1)``. Taking the difference cancels the constant offsets that "valid"
   padding adds (InceptionV3 maps 299 -> 35 at stride 8), so the measured stride is exact for every model in
   ``keras.applications``. Global-pooled maps (the 1x1 squeeze-and-excitation maps of MobileNetV3 and
   EfficientNet) keep their size at both probes and are left out. A model built at a fixed input size is probed
   the same way, its graph run symbolically past the input-shape check (or, if that fails, through a copy rebuilt
   from its config with the height and width left free); only models that cannot run at another size at all
   (NASNet) fall back to ``input / output`` at their own size, where 1x1 maps are left out because a global-pooled
   map and a real stage cannot be told apart there.
2. At each stride ``2^l``, the *frontier* is the set of layers whose output feeds a coarser layer (or is a model
   output). ``C{l}`` is the latest layer, in topological order, from which every frontier layer can be reached
   through layers of the same stride. For chain-like models (ResNet, VGG, MobileNet) this is simply the last
   layer at that stride; for multi-branch models it skips the branch layers of the next reduction block, which
   come later in topological order but only see part of the stage (InceptionV3's ``mixed7`` rather than a 1x1
   conv inside ``mixed8``).
3. Padding and cropping layers are never stage outputs: they only prepare the next downsampling.
"""

import math

import keras

# Layers that only move pixels around the border: the stage output is their input.
_PADDING_LAYERS = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)

# Two probe sizes for the stride measurement; their difference (512) is a multiple of every stride up to 2^9.
_PROBE_SIZES = ((512, 576), (1024, 1088))


def _layer_graph(model):
    """Returns (layers in topological order, {name: [parent names]}) for a functional model."""
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations"):
        raise ValueError(
            f"Expected a functional keras.Model (e.g. from keras.applications); received {type(model).__name__}."
        )
    # Every operation, not only layers: `x + y` inside a functional model is an operation (ConvNeXt, MobileNetV3).
    layers = list(model.operations)
    parents = {}
    for layer in layers:
        names = []
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                history = getattr(tensor, "_keras_history", None)
                if history is not None:
                    names.append(history.operation.name)
        parents[layer.name] = names
    return layers, parents


def _spatial_outputs(layers):
    """Layers whose output is one rank-4 tensor: the only candidates for stage outputs."""
    out = []
    for layer in layers:
        if len(layer._inbound_nodes) != 1:
            continue  # a layer called several times has no single spatial size
        output = layer.output
        if isinstance(output, (list, tuple, dict)) or len(output.shape) != 4:
            continue
        out.append(layer)
    return out


def _free_size_copy(model):
    """`model`'s architecture with its input height and width left free (new weights), or None when it cannot
    be rebuilt that way. Layer names are kept, so strides measured on the copy apply to `model`."""
    shape = model.inputs[0].shape
    if len(model.inputs) != 1 or len(shape) != 4 or (shape[1] is None and shape[2] is None):
        return None  # nothing to free
    try:
        config = model.get_config()
        inputs = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
        if len(inputs) != 1:
            return None
        layer_config = inputs[0]["config"]
        key = "batch_shape" if "batch_shape" in layer_config else "batch_input_shape"
        layer_config[key] = [layer_config[key][0], None, None, *layer_config[key][3:]]
        return type(model).from_config(config)
    except Exception:  # noqa: BLE001 - a model whose config does not rebuild: measure it at its own size
        return None


def measure_strides(model):
    """Measures the output stride of every spatial layer of `model`.

    Args:
        model: a functional `keras.Model` taking channels-last images `[batch, height, width, channels]`.

    Returns:
        A dict `{layer_name: stride}` with integer strides (1, 2, 4, ...) for every layer whose output is a
        rank-4 map whose height and width shrink by the same power of two. Layers with no spatial extent (global
        pooling kept as 1x1) are left out.
    """
    layers, _ = _layer_graph(model)
    candidates = _spatial_outputs(layers)
    if not candidates:
        raise ValueError(f"Model {model.name!r} has no layer with a rank-4 output; it cannot be a backbone.")
    names = [layer.name for layer in candidates]
    sizes = _probe(model, names)
    if sizes is None:
        sizes = _probe(_free_size_copy(model), names)
    if sizes is not None:
        extents = ((_PROBE_SIZES[1][0] - _PROBE_SIZES[0][0]), (_PROBE_SIZES[1][1] - _PROBE_SIZES[0][1]))
    else:  # the model only runs at its own input size (NASNet); measure once there
        height, width = model.inputs[0].shape[1:3]
        if height is None or width is None:
            raise ValueError(
                f"Could not measure the strides of {model.name!r}: it does not run at other input sizes and its "
                "input shape is not fixed. Build it with a fixed input_shape=(height, width, channels)."
            ) from None
        # A 1x1 map here may be a global-pooled one as well as a real stage: never take it for a stride.
        sizes = [None if tuple(layer.output.shape[1:3]) == (1, 1) else tuple(layer.output.shape[1:3])
                 for layer in candidates]
        extents = (height, width)

    strides = {}
    for layer, size in zip(candidates, sizes):
        dh, dw = size if size is not None else (0, 0)
        if not dh or not dw or dh <= 0 or dw <= 0:
            continue
        level_h, level_w = math.log2(extents[0] / dh), math.log2(extents[1] / dw)
        level = round(level_h)
        if level != round(level_w) or abs(level_h - level) > 0.25 or level < 0:
            continue
        strides[layer.name] = 2**level
    return strides


def _probe(model, names):
    """`[(height change, width change)]` of the named layers' outputs between the two probe sizes, or None when
    `model` is None, lacks one of the layers, or does not run at both sizes."""
    if model is None:
        return None
    by_name = {layer.name: layer for layer in model.operations}
    if any(name not in by_name for name in names):
        return None
    probe = keras.Model(model.inputs, [by_name[name].output for name in names])
    channels = model.inputs[0].shape[-1]

    def output_spec(x):
        # What `probe.compute_output_spec(x)` does (shape inference layer by layer), without the model's check
        # that x has the size it was built for: that check is the only thing that keeps a keras.applications model
        # built at 224x224 from being measured at other sizes. Private Keras API (3.8-3.15): if it changes, the
        # free-size copy in `measure_strides` takes over.
        return probe._run_through_graph(x, operation_fn=lambda operation: operation.compute_output_spec)

    fixed = any(side is not None for side in model.inputs[0].shape[1:3])
    try:
        specs = [
            (output_spec(tensor) if fixed else probe.compute_output_spec(tensor))
            for tensor in (keras.KerasTensor((1, height, width, channels), dtype=model.inputs[0].dtype)
                           for height, width in _PROBE_SIZES)
        ]
    except Exception:  # noqa: BLE001 - Keras raises many types for a model that runs at one size only
        return None
    return [(h2 - h1, w2 - w1) for (_, h1, w1, _), (_, h2, w2, _) in zip(*[[s.shape for s in p] for p in specs])]


def find_stage_outputs(model, min_level=None, max_level=None):
    """Finds the stage output layer of each stride level of a backbone.

    Args:
        model: a functional `keras.Model` (any `keras.applications` model with `include_top=False`).
        min_level: int or None. Lowest level to return; `None` returns all from stride 2 up.
        max_level: int or None. Highest level to return; `None` returns up to the coarsest level.

    Returns:
        A dict `{level: layer_name}` sorted by level, where the layer's output has stride `2**level`.

    Raises:
        ValueError: if a requested level does not exist in the model.

    Example:

    >>> model = keras.applications.ResNet50(include_top=False, weights=None)
    >>> find_stage_outputs(model, 2, 5)
    {2: 'conv2_block3_out', 3: 'conv3_block4_out', 4: 'conv4_block6_out', 5: 'conv5_block3_out'}
    """
    layers, parents = _layer_graph(model)
    strides = measure_strides(model)
    output_names = {tensor._keras_history.operation.name for tensor in model.outputs}
    level_of = {name: int(math.log2(stride)) for name, stride in strides.items()}
    by_name = {layer.name: layer for layer in layers}
    children = {layer.name: [] for layer in layers}
    for layer in layers:
        for parent in parents[layer.name]:
            children[parent].append(layer.name)

    available = sorted(set(level_of.values()) - {0})
    if not available:
        raise ValueError(f"Model {model.name!r} never downsamples its input; it has no stage outputs.")
    lo = available[0] if min_level is None else min_level
    hi = available[-1] if max_level is None else max_level
    missing = [level for level in range(lo, hi + 1) if level not in available]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no output at level(s) {missing} (stride {[2**m for m in missing]}); "
            f"its levels are {available}. Choose min_level/max_level within them."
        )

    order = [layer for layer in layers if layer.name in level_of]
    result = {}
    for level in range(lo, hi + 1):
        same = [layer.name for layer in order if level_of[layer.name] == level]
        frontier = {
            name
            for name in same
            if name in output_names
            or any(level_of.get(child, -1) > level for child in children[name])
            or not any(child in level_of for child in children[name])  # feeds a non-spatial head only
        }
        # reach[name]: the frontier layers that `name` reaches through layers of this level.
        reach = {}
        for name in reversed(same):
            reached = {name} & frontier
            for child in children[name]:
                reached |= reach.get(child, set())
            reach[name] = reached
        stage_output = None
        for name in reversed(same):
            if reach[name] == frontier and not isinstance(by_name[name], _PADDING_LAYERS):
                stage_output = name
                break
        if stage_output is None:
            stage_output = next(
                name for name in reversed(same) if not isinstance(by_name[name], _PADDING_LAYERS)
            )
        result[level] = stage_output
    return result
