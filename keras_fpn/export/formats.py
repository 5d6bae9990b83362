"""The whole detector in one file for runtimes other than TF Serving: LiteRT (TFLite) and ONNX, through Keras's
own exporters (`model.export(path, format=...)`).

Keras's exporters write what a model's `call` computes; a detector's `call` gives raw head outputs, and decoding and
NMS live in `predict`. So `export_detector` hands Keras's `Model.export` a small model, `DetectionGraph`, whose
`call` is `predict`'s path from uint8 pixels to detections (the backbone's preprocessing, the heads, box decoding,
NMS, boxes in input pixels), and Keras's exporter converts that: the SavedModel endpoint, tf2onnx for ONNX, the TFLite converter for
LiteRT. For LiteRT and ONNX the graph is traced within `keras_fpn.ops.portable.portable()`: NMS as TensorFlow's
`NonMaxSuppressionV5` (a LiteRT builtin and ONNX's `NonMaxSuppression`; the combined NMS that `predict` runs is
neither) and RoIAlign by gathers (TensorFlow's `crop_and_resize` is neither).

Outputs (one contract for every format, in the order of TFLite's object-detection models):
    `detection_boxes`: float32 `[batch, max_detections, 4]`, `[ymin, xmin, ymax, xmax]` in input pixels;
    `detection_classes`: float32 `[batch, max_detections]`, the model's 0-based labels (the line of the label map),
        -1 past `num_detections`;
    `detection_scores`: float32 `[batch, max_detections]`, best first, 0 past `num_detections`;
    `num_detections`: float32 `[batch]`;
    `detection_masks` (a `MaskRCNN`): float32 `[batch, max_detections, 28, 28]`, box-relative probabilities.
"""

import json
import os
import re

FORMATS = ("tf_saved_model", "litert", "onnx")
OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# The metadata entry that carries the label map: a LiteRT file's metadata buffer and an ONNX model's
# `metadata_props` (JSON: {"class_names": [...], "model": ..., "image_size": [h, w]}).
METADATA_KEY = "keras_fpn"


def detection_graph(model, image_size):
    """A Keras model of `uint8 [batch, height, width, 3]` images (`height, width = image_size`) that returns the
    detections of `model` in the outputs above: `predict`'s path, one graph."""
    import keras
    from keras import ops
    from keras.utils import bounding_boxes

    height, width = image_size

    class DetectionGraph(keras.Model):
        def __init__(self):
            super().__init__(name=f"{model.name}_detections")
            self.detector = model

        def call(self, images):
            detections = self.detector._detect_batch(ops.cast(images, "float32"))
            boxes = bounding_boxes.convert_format(detections["boxes"], self.detector.bounding_box_format, "yxyx",
                                                  height=height, width=width)
            valid = detections["labels"] >= 0
            outputs = {"detection_boxes": ops.where(valid[..., None], boxes, 0.0),
                       "detection_classes": ops.cast(detections["labels"], "float32"),
                       "detection_scores": ops.where(valid, detections["scores"], 0.0),
                       "num_detections": ops.cast(detections["num_detections"], "float32")}
            if "masks" in detections:
                outputs["detection_masks"] = ops.cast(detections["masks"], "float32")
            return outputs

    graph = DetectionGraph()
    graph(ops.zeros((1, height, width, 3), "uint8"))
    return graph


def _first_spec(input_signature):
    return input_signature[0] if isinstance(input_signature, (list, tuple)) else input_signature


def export_image_size(model, image_size=None, input_signature=None):
    """`(height, width)` of an export: `image_size`, or the fixed size of `input_signature`, or the model's own
    fixed input size."""
    if image_size is None and input_signature is not None:
        image_size = tuple(_first_spec(input_signature).shape[1:3])
    if image_size is None:
        image_size = tuple(model.backbone.image_shape[:2])
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is None or len(image_size) != 2 or None in image_size or min(image_size) < 1:
        raise ValueError(
            f"An export takes images of one fixed size, and {model.name} takes any (input shape "
            f"{model.backbone.image_shape}); pass image_size=(height, width) (`--image-size` on the command "
            "line), the size it was trained at.")
    return tuple(int(side) for side in image_size)


def export_detector(model, filepath, format="tf_saved_model", image_size=None, class_names=None, batch_size=None,
                    select_tf_ops=None, quantize=None, representative_data=None, verbose=True, input_signature=None,
                    **kwargs):
    """Writes `model` (a keras_fpn detector) with decoding and NMS inside: `model.export` of every detector.

    Args:
        model: a `RetinaNet`, `FasterRCNN` or `MaskRCNN` (TensorFlow backend).
        filepath: str, a folder for `"tf_saved_model"`, a `.tflite` file for `"litert"`, an `.onnx` file for
            `"onnx"`.
        format: `"tf_saved_model"`, `"litert"` or `"onnx"`. (`keras_fpn.export.export_saved_model` writes the TF
            Serving layout, with encoded-image input and resizing.)
        image_size: `(height, width)` of the input, which is fixed (resize camera frames to it); default the
            model's own fixed input size (or `input_signature`'s).
        class_names: sequence of str or None: the label map, stored in the LiteRT and ONNX files' metadata.
        batch_size: the input's batch size: default `input_signature`'s (None there: any batch), else 1 for LiteRT
            (as phones run it) and any for ONNX and the SavedModel. A LiteRT file of any batch takes the batch its
            first call gives (the signature runner resizes its input; `Interpreter.resize_tensor_input` otherwise).
        select_tf_ops: LiteRT only. None (default): builtin ops when the model converts with them (every keras_fpn
            detector does at a fixed batch), else TensorFlow's Select ops for the ops LiteRT lacks, with a note naming
            them; the file then needs the Flex delegate (the plain `ai-edge-litert` interpreter lacks it). False:
            builtin ops or an error naming the blocking ops. True: Select ops allowed.
        quantize: LiteRT only, post-training quantization by the TFLite converter. None (float32); `"dynamic"`:
            weights stored as int8, computed in float (dynamic range); `"int8"`: weights and activations int8, their
            ranges calibrated on `representative_data`, with the post-processing (box decoding, scores, NMS) and
            the head outputs it reads kept in float (`_keep_float`).
        representative_data: for `quantize="int8"`: an iterable of uint8 images `[height, width, 3]` at
            `image_size` (~100 from the training data, as TFLite's guide advises).
        verbose: bool, print what was written.
        input_signature: as Keras's `model.export`: a `[batch, height, width, 3]` spec fixes the size and the
            batch (`keras.InputSpec((None, 320, 320, 3), "uint8")`: any batch, for LiteRT too).
        **kwargs: passed to Keras's exporter: TFLite converter attributes for LiteRT (e.g. `optimizations`,
            `representative_dataset`), `opset_version` for ONNX.

    Returns:
        str, `filepath`.

    Raises:
        ValueError: an unknown format; no fixed image size; a format that cannot hold the model (naming the format,
            the model and the op).
    """
    import keras
    import tensorflow as tf

    if format not in FORMATS:
        raise ValueError(f"Received format={format!r} for {type(model).__name__} {model.name!r}; keras_fpn exports "
                         f"a whole detector (decoding and NMS inside) as one of {list(FORMATS)}.")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"Exporting {model.name} as {format} converts a TensorFlow graph: run it under the "
                         f"TensorFlow backend (KERAS_BACKEND=tensorflow; this process runs "
                         f"{keras.backend.backend()}). A .keras file saved under any backend loads there.")
    image_size = export_image_size(model, image_size, input_signature)
    if quantize is not None:
        if format != "litert":
            raise ValueError(f"Received quantize={quantize!r} with format={format!r}; quantization is LiteRT's "
                             "(format='litert').")
        kwargs.update(quantization_options(quantize, representative_data, image_size))
    if batch_size is None and input_signature is not None:
        batch_size = _first_spec(input_signature).shape[0]  # None: any batch
    elif batch_size is None and format == "litert":
        batch_size = 1
    spec = [tf.TensorSpec([batch_size, *image_size, 3], tf.uint8, name="images")]
    graph = detection_graph(model, image_size)
    filepath = os.fspath(filepath)
    metadata = {"model": model.name, "class": type(model).__name__, "image_size": list(image_size),
                "class_names": list(class_names) if class_names is not None else None, "outputs": list(OUTPUTS),
                "quantize": quantize}
    if format == "tf_saved_model":
        keras.Model.export(graph, filepath, format=format, verbose=False, input_signature=spec, **kwargs)
    elif format == "onnx":
        _export_onnx(graph, filepath, spec, model, metadata, **kwargs)
    else:
        _export_litert(graph, filepath, spec, model, metadata, select_tf_ops, verbose, **kwargs)
    if verbose:
        print(f"exported {type(model).__name__} {model.name!r} as {format} to {filepath}: uint8 images "
              f"[{batch_size or 'batch'}, {image_size[0]}, {image_size[1]}, 3] -> {', '.join(OUTPUTS)}"
              f"{', detection_masks' if getattr(model, 'uses_masks', False) else ''}")
    return filepath


QUANTIZATIONS = ("dynamic", "int8")


def quantization_options(quantize, representative_data, image_size):
    """The TFLite converter attributes of a post-training quantization (`export_detector`'s `quantize`)."""
    import numpy as np
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Received quantize={quantize!r}; expected one of {list(QUANTIZATIONS)} or None.")
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "dynamic":
        return options
    if representative_data is None:
        raise ValueError("quantize='int8' calibrates activation ranges on representative images: pass "
                         "representative_data (uint8 images from the training data; on the command line "
                         "--representative-data SPEC).")
    images = [np.asarray(image) for image in representative_data]
    if not images:
        raise ValueError("representative_data is empty; int8 calibration needs images.")
    for image in images:
        if image.shape != (*image_size, 3):
            raise ValueError(f"representative_data holds an image of shape {image.shape}; the export takes "
                             f"{(*image_size, 3)} (resize and pad them to image_size).")

    def dataset():
        for image in images:
            yield [image[None].astype(np.uint8)]

    return {**options, "representative_dataset": dataset}


# Ops an int8 export keeps in float wherever they are (TFLite builtin names): comparisons and selections (quantized,
# the test that drops boxes of no size after clipping, x2 - x1 >= 0.01, compared int8 tensors of other scales and came
# out false for every box of the phone detector, whose int8 file then detected nothing), and box arithmetic.
FLOAT_OPS = ("EXP", "MUL", "SUB", "ADD", "DIV", "MINIMUM", "MAXIMUM", "GATHER", "GATHER_ND", "CONCATENATION",
             "LOGISTIC", "TOPK_V2", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "SELECT_V2")
# Ops that only move or select values: an int8 input gives them an int8 output on the same scale.
_DATA_MOVEMENT_OPS = ("RESHAPE", "CONCATENATION", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "PACK",
                      "UNPACK", "GATHER", "SQUEEZE", "EXPAND_DIMS")


def _keep_float(calibrated_model, graph_name, detector_name):
    """Makes the post-processing and the layers whose outputs it reads float in a calibrated model (TFLite's
    calibration output, before quantization): returns the model without those tensors' calibrated ranges, and the
    names of the layers to deny quantization (`QuantizationDebugOptions.denylisted_nodes`).

    The post-processing is every op outside the detector's layers that reads their outputs, directly or not: the
    decoding, selection and NMS that `_detect_batch` traces after the heads. The layers it reads are found by
    walking back from its inputs through ops that only move data (reshapes, concatenations) to the op that
    computes them (a head's output convolution).

    Denying ops by type (`FLOAT_OPS`) is not enough, and neither is denying these nodes alone: the quantizer gives
    data-movement ops an int8 output wherever their input has a calibrated range, whatever the denylists say. On
    the phone detector (320x320) that made the decoded boxes int8 on one scale for the whole image (1.25 px a step)
    and the classification logits int8 on a scale set by their far tail (0.42 a step, ~0.1 in score), and 60% of
    `predict`'s detections were found at IoU >= 0.9 (benchmarks/README.md, "The zoo's phone detector"). A tensor
    without a calibrated range cannot be quantized, so it stays float."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    # Tensor names are `scope/op`, fused ops joining theirs with ";"; tracing suffixes scopes with "_1".
    network = re.compile(rf"{re.escape(graph_name)}(_\d+)?/{re.escape(detector_name)}(_\d+)?/")
    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    flatbuffer = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated_model))
    denied = []
    for subgraph in flatbuffer.subgraphs:
        def name(index):
            value = subgraph.tensors[index].name
            return value.decode() if isinstance(value, bytes) else value

        def op_type(operator):
            code = flatbuffer.operatorCodes[operator.opcodeIndex]
            return op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode))

        producer = {index: operator for operator in subgraph.operators for index in operator.outputs}
        in_network = {index for index in producer if network.match(name(index))}
        # Forward: ops outside the network that read its outputs, directly or through each other (in execution
        # order, so one pass suffices).
        downstream, post = set(in_network), []
        for operator in subgraph.operators:
            if any(index in downstream for index in operator.inputs) and not any(
                    index in in_network for index in operator.outputs):
                post.append(operator)
                downstream.update(operator.outputs)
        floating = {index for operator in post for index in operator.outputs}
        # Backward: from the network tensors the post-processing reads to the ops that compute them.
        pending = [index for operator in post for index in operator.inputs if index in in_network]
        while pending:
            index = pending.pop()
            if index in floating:
                continue
            floating.add(index)
            operator = producer[index]
            if op_type(operator) in _DATA_MOVEMENT_OPS:
                pending.extend(i for i in operator.inputs if i in in_network)
            else:
                denied.append(name(index))
        for index in floating:
            subgraph.tensors[index].quantization = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flatbuffer)), denied


def _convert_litert(graph, filepath, spec, supported_ops, representative_dataset=None, **kwargs):
    """A LiteRT file of `graph`: Keras's exporter, or, for int8 (a `representative_dataset`), TFLite's converter on
    the SavedModel Keras's exporter writes, quantized by TFLite's `QuantizationDebugger` with the post-processing,
    the layers it reads and `FLOAT_OPS` kept in float (`_keep_float`; Keras's exporter has no such option)."""
    import functools
    import tempfile

    import keras
    import tensorflow as tf

    if representative_dataset is None:
        return keras.Model.export(graph, filepath, format="litert", verbose=False, input_signature=spec,
                                  target_spec={"supported_ops": supported_ops}, **kwargs)
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(graph)
        archive.add_endpoint("serve", functools.partial(graph.__call__, training=False), input_signature=spec)
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = supported_ops
        converter.experimental_enable_resource_variables = True
        converter.representative_dataset = representative_dataset
        for name, value in kwargs.items():
            setattr(converter, name, value)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS)))
        debugger.calibrated_model, denied = _keep_float(debugger.calibrated_model, graph.name, graph.detector.name)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(FLOAT_OPS), denylisted_nodes=denied)
        flatbuffer = debugger.get_nondebug_quantized_model()
    with open(filepath, "wb") as file:
        file.write(flatbuffer)


def _select_ops(error):
    """The op names a TFLite conversion error lists as needing Select TF ops."""
    found = re.search(r"TF Select ops: ([\w, ]+)", str(error))
    return [name.strip() for name in found.group(1).split(",")] if found else []


def _export_litert(graph, filepath, spec, model, metadata, select_tf_ops, verbose, **kwargs):
    import tensorflow as tf

    from keras_fpn.ops.portable import portable

    if not filepath.endswith(".tflite"):
        raise ValueError(f"Received {filepath!r}; a LiteRT file ends in .tflite.")
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with portable():
        if select_tf_ops is not True:
            try:
                _convert_litert(graph, filepath, spec, builtins, **kwargs)
                metadata["select_tf_ops"] = []
                return _write_litert_metadata(filepath, metadata)
            except Exception as error:  # noqa: BLE001 - the converter's error, read for the op names
                blocking = _select_ops(error)
                if not blocking:
                    raise
                if select_tf_ops is False:
                    raise ValueError(
                        f"LiteRT cannot hold {type(model).__name__} {model.name!r} with builtin ops only: "
                        f"{', '.join(blocking)} {'is' if len(blocking) == 1 else 'are'} not LiteRT builtin "
                        "op(s). Allow TensorFlow's Select ops (select_tf_ops=True, `--select-tf-ops`): the file "
                        "then runs where the Flex delegate is linked in (tf.lite.Interpreter).") from None
                if verbose:
                    print(f"note: {', '.join(blocking)} of {model.name} {'is' if len(blocking) == 1 else 'are'} "
                          "not LiteRT builtin op(s); the file uses TensorFlow's Select ops for "
                          f"{'it' if len(blocking) == 1 else 'them'} (run it with the Flex delegate: "
                          "tf.lite.Interpreter)", flush=True)
                metadata["select_tf_ops"] = blocking
        _convert_litert(graph, filepath, spec, builtins + [tf.lite.OpsSet.SELECT_TF_OPS], **kwargs)
    metadata.setdefault("select_tf_ops", "allowed")
    _write_litert_metadata(filepath, metadata)


def _write_litert_metadata(filepath, metadata):
    """Adds `metadata` (JSON) to the LiteRT file as the metadata buffer `METADATA_KEY`."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer = flatbuffer_utils.read_model(filepath)
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(metadata).encode())
    flatbuffer.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(flatbuffer.buffers) - 1
    flatbuffer.metadata = [*(flatbuffer.metadata or []), entry]
    flatbuffer_utils.write_model(flatbuffer, filepath)


def read_metadata(filepath):
    """The metadata dict a keras_fpn LiteRT or ONNX export carries (class names, image size, ...), or None."""
    filepath = os.fspath(filepath)
    if filepath.endswith(".onnx"):
        import onnx

        props = {prop.key: prop.value for prop in onnx.load(filepath, load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer = flatbuffer_utils.read_model(filepath)
    for entry in flatbuffer.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_KEY:
            return json.loads(bytes(flatbuffer.buffers[entry.buffer].data).decode())
    return None


def _export_onnx(graph, filepath, spec, model, metadata, **kwargs):
    import keras

    try:
        import onnx
        import tf2onnx  # noqa: F401 - Keras's ONNX exporter under TensorFlow
    except ImportError as error:
        raise ImportError(f"Exporting ONNX needs tf2onnx and onnx ({error}): pip install -e '.[export]' in the "
                          "repository, or pip install tf2onnx onnx onnxruntime.") from None
    from keras_fpn.ops.portable import portable

    if not filepath.endswith(".onnx"):
        raise ValueError(f"Received {filepath!r}; an ONNX file ends in .onnx.")
    with portable():
        keras.Model.export(graph, filepath, format="onnx", verbose=False, input_signature=spec, **kwargs)
    exported = onnx.load(filepath)
    unknown = sorted({node.op_type for node in _nodes(exported.graph)
                      if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)})
    if unknown:
        os.remove(filepath)
        raise ValueError(f"ONNX cannot hold {type(model).__name__} {model.name!r}: tf2onnx left "
                         f"{', '.join(unknown)} unconverted (no such ONNX op).")
    prop = exported.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(exported, filepath)


def _nodes(graph):
    """Every node of an ONNX graph, those in loop and branch bodies included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _nodes(subgraph)
