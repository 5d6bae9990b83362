"""`model.export(path, format="litert" | "onnx" | "tf_saved_model")`: the whole detector in one file, equal to
`predict` on the same images (boxes within 1 px, the same labels, scores within 1e-3), with builtin ops only where
LiteRT has them, and named errors where a format cannot hold a model."""

import os

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the exporters convert TF graphs"),
              pytest.mark.xdist_group("formats")]

from keras_fpn.export import read_metadata  # noqa: E402
from keras_fpn.export.formats import FLOAT_OPS  # noqa: E402
from tests.testing import tiny_convnet, tiny_retinanet, trained_tiny_retinanet  # noqa: E402

IMAGE_SIZE = (96, 128)
CLASS_NAMES = ("circle", "square", "triangle")


def _images(count, seed=0):
    """uint8 images with a few filled rectangles, so that detections differ in place and score."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 60, (count, *IMAGE_SIZE, 3)).astype(np.uint8)
    for image in images:
        for _ in range(4):
            y, x = rng.randint(0, IMAGE_SIZE[0] - 24), rng.randint(0, IMAGE_SIZE[1] - 24)
            image[y : y + rng.randint(8, 24), x : x + rng.randint(8, 24)] = rng.randint(100, 255, 3)
    return images


@pytest.fixture(scope="module")
def retinanet():
    # prior_probability=0.3: random weights then score plenty of detections, spread apart. Seeded here, since a
    # module fixture is built before the per-test seed and would otherwise take whatever random state the tests
    # before it left (test_quantized_litert_files' int8 share varies with the weights).
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(prior_probability=0.3)
    model.predict_on_batch(_images(1))
    return model


@pytest.fixture(scope="module")
def mask_rcnn():
    """A Mask R-CNN: its export holds Faster R-CNN's two stages (RPN, proposals, RoIAlign, box head) and masks."""
    from keras_fpn import MaskRCNN

    model = MaskRCNN(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                     mask_head_filters=16, rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50,
                     score_threshold=0.2, seed=1)
    model.predict_on_batch(_images(1))
    return model


def matched(expected, found, box_tolerance=1.0, score_tolerance=1e-3):
    """Fraction of `expected`'s detections (dict of `boxes`, `scores`, `labels`, `count`) that `found` has too:
    the same label, every box coordinate within `box_tolerance` pixels and the score within `score_tolerance`
    (a set comparison: exported graphs may order exactly tied scores differently)."""
    if expected["count"] == 0:
        return 1.0
    boxes, other = expected["boxes"][: expected["count"]], found["boxes"][: found["count"]]
    close = np.max(np.abs(boxes[:, None, :] - other[None, :, :]), axis=-1) <= box_tolerance
    close &= expected["labels"][: expected["count"], None] == found["labels"][None, : found["count"]]
    close &= np.abs(expected["scores"][: expected["count"], None]
                    - found["scores"][None, : found["count"]]) <= score_tolerance
    return float(np.mean(np.any(close, axis=1)))


def _matched_at_iou(expected, found, iou):
    """Fraction of `expected`'s detections that `found` has with the same label at IoU >= `iou`."""
    if expected["count"] == 0 or found["count"] == 0:
        return 0.0
    a, b = expected["boxes"][: expected["count"]], found["boxes"][: found["count"]]
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # noqa: E731
    overlap = intersection / np.maximum(area(a)[:, None] + area(b)[None, :] - intersection, 1e-9)
    same = expected["labels"][: expected["count"], None] == found["labels"][None, : found["count"]]
    return float(np.mean(np.any(same & (overlap >= iou), axis=1)))


def _predicted(model, images):
    """`predict`'s detections per image, boxes as [ymin, xmin, ymax, xmax] pixels (the exports' layout)."""
    result = model.predict_on_batch(images)
    return [{"boxes": np.asarray(result["boxes"][i])[:, [1, 0, 3, 2]], "scores": np.asarray(result["scores"][i]),
             "labels": np.asarray(result["labels"][i]), "count": int(result["num_detections"][i])}
            for i in range(len(images))]


def _exported(outputs, count):
    return [{"boxes": np.asarray(outputs["detection_boxes"][i]), "scores": np.asarray(outputs["detection_scores"][i]),
             "labels": np.asarray(outputs["detection_classes"][i]).astype(int),
             "count": int(outputs["num_detections"][i])} for i in range(count)]


def assert_equal_to_predict(model, images, outputs):
    """The exported detections are `predict`'s both ways; so are a Mask R-CNN's masks (within 1e-3), detection by
    detection."""
    predicted = model.predict_on_batch(images)
    for index, (ours, theirs) in enumerate(zip(_predicted(model, images), _exported(outputs, len(images)))):
        assert ours["count"] > 0, "the comparison needs detections"
        assert theirs["count"] == ours["count"], index
        assert matched(ours, theirs) == 1.0 and matched(theirs, ours) == 1.0, index
        if "masks" in predicted:
            count = ours["count"]
            distance = np.max(np.abs(ours["boxes"][:count, None] - theirs["boxes"][None, :count]), axis=-1)
            same = np.argmin(distance, axis=1)
            error = np.max(np.abs(np.asarray(outputs["detection_masks"][index])[same]
                                  - np.asarray(predicted["masks"][index, :count])))
            assert error <= 1e-3, (index, error)


def _litert_ops(path):
    """The operator names a LiteRT file uses (builtin names, or the custom op names of Select TF ops)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer = flatbuffer_utils.read_model(path)
    builtin_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = set()
    for code in flatbuffer.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        names.add(code.customCode.decode() if builtin == schema.BuiltinOperator.CUSTOM else builtin_names[builtin])
    return names


def test_retinanet_litert_has_builtin_ops_only_and_equals_predict(retinanet, tmp_path):
    """The RetinaNet LiteRT file converts with LiteRT builtins only (NMS as NON_MAX_SUPPRESSION_V5), runs in the
    plain LiteRT interpreter (`ai-edge-litert`, as on phones) and gives `predict`'s detections; with Keras's
    `input_signature` of batch None it takes any batch (the default, batch 1: the command-line test)."""
    from ai_edge_litert.interpreter import Interpreter

    path = retinanet.export(str(tmp_path / "retinanet.tflite"), format="litert", class_names=CLASS_NAMES,
                            input_signature=[keras.InputSpec(shape=(None, *IMAGE_SIZE, 3), dtype="uint8")],
                            verbose=False)
    ops = _litert_ops(path)
    assert "NON_MAX_SUPPRESSION_V5" in ops and not any(name.startswith("Flex") for name in ops), sorted(ops)
    assert "CUSTOM" not in ops
    interpreter = Interpreter(model_path=path)
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, *IMAGE_SIZE, 3]
    runner = interpreter.get_signature_runner()
    assert [detail["dtype"] for detail in runner.get_input_details().values()] == [np.uint8]
    images = _images(3, seed=1)
    assert_equal_to_predict(retinanet, images[:1], runner(images=images[:1]))
    assert_equal_to_predict(retinanet, images, runner(images=images))
    metadata = read_metadata(path)
    assert metadata["class_names"] == list(CLASS_NAMES) and metadata["image_size"] == list(IMAGE_SIZE)
    assert metadata["select_tf_ops"] == []


def test_mask_rcnn_litert_has_builtin_ops_only_and_equals_predict(mask_rcnn, tmp_path):
    """The two-stage models need no Select TF ops either: RoIAlign is traced as gathers (TensorFlow's
    CropAndResize is no LiteRT builtin), and the file gives `predict`'s detections and masks."""
    from ai_edge_litert.interpreter import Interpreter

    path = mask_rcnn.export(str(tmp_path / "mask_rcnn.tflite"), format="litert", image_size=IMAGE_SIZE,
                            select_tf_ops=False, verbose=False)
    ops = _litert_ops(path)
    assert "CUSTOM" not in ops and not any(name.startswith("Flex") for name in ops), sorted(ops)
    runner = Interpreter(model_path=path).get_signature_runner()
    image = _images(1, seed=3)
    assert_equal_to_predict(mask_rcnn, image, runner(images=image))


def test_the_mobile_zoo_record_is_builtin_litert(tmp_path):
    """The zoo's phone detector (MobileNetV3-Large, light FPN, depthwise-separable heads, 320x320) converts to a
    LiteRT file of builtin ops only (its separable convs as DEPTHWISE_CONV_2D), which gives predict's detections."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_fpn import models

    # prior_probability=0.3: random weights then score detections to compare.
    model = models.build("retinanet_mobilenetv3large_fpnlite_shapes", backbone_weights=None, prior_probability=0.3,
                         score_threshold=0.2)
    size = tuple(models.get("retinanet_mobilenetv3large_fpnlite_shapes")["input_size"])
    rng = np.random.RandomState(5)
    for weight in model.get_layer("classification_head").weights:  # scores spread apart, not all tied at the prior
        weight.assign(weight.numpy() + rng.normal(0.0, 0.2, weight.shape).astype(np.float32))
    from keras_fpn.datasets.shapes import generate_shapes

    image = generate_shapes(1, size, seed=4)[0]
    # BatchNorm statistics from data (as after training): a random-init MobileNetV3-Large with unit statistics
    # grows its activations block by block, and float rounding with them (scores then differ by ~1.5e-3).
    calibration = generate_shapes(8, size, seed=6)[0].astype(np.float32)
    for _ in range(10):
        model.backbone(calibration, training=True)
    path = model.export(str(tmp_path / "mobile.tflite"), format="litert", image_size=size, select_tf_ops=False,
                        verbose=False)
    ops = _litert_ops(path)
    assert {"DEPTHWISE_CONV_2D", "HARD_SWISH", "NON_MAX_SUPPRESSION_V5"} <= ops, sorted(ops)
    assert "CUSTOM" not in ops and not any(name.startswith("Flex") for name in ops), sorted(ops)
    runner = Interpreter(model_path=path).get_signature_runner()
    ours, theirs = _predicted(model, image)[0], _exported(runner(images=image), 1)[0]
    # Random weights score hundreds of anchors within 1e-4 of each other (measured), so which of those near-ties
    # make the 100 kept differs; the best detection is compared here, and the trained record's file gives predict's
    # AP and 100% of its detections (benchmarks/README.md, "Exports").
    assert ours["count"] == theirs["count"] > 0
    assert abs(ours["scores"][0] - theirs["scores"][0]) <= 1e-3 and ours["labels"][0] == theirs["labels"][0]
    np.testing.assert_allclose(ours["boxes"][0], theirs["boxes"][0], atol=1.0)


def test_onnx_equals_predict_with_a_dynamic_batch(retinanet, mask_rcnn, tmp_path):
    """ONNX files of a RetinaNet and a Mask R-CNN run in onnxruntime, NMS as ONNX NonMaxSuppression and no
    custom op, on a batch of any size."""
    import onnx
    import onnxruntime

    from keras_fpn.export.formats import _nodes

    images = _images(2, seed=2)
    for model in (retinanet, mask_rcnn):
        path = model.export(str(tmp_path / f"{model.name}.onnx"), format="onnx", image_size=IMAGE_SIZE,
                            class_names=CLASS_NAMES, verbose=False)
        nodes = list(_nodes(onnx.load(path).graph))
        assert "NonMaxSuppression" in {node.op_type for node in nodes}
        assert all(node.domain in ("", "ai.onnx") for node in nodes)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[0] != 1, "the batch is dynamic"
        names = [output.name for output in session.get_outputs()]
        assert_equal_to_predict(model, images, dict(zip(names, session.run(None, {"images": images}))))
        assert read_metadata(path)["class_names"] == list(CLASS_NAMES)


def test_an_op_litert_lacks_is_named(retinanet, tmp_path, monkeypatch, capsys):
    """Where the TFLite converter needs Select TF ops, strictly builtin (`select_tf_ops=False`) is an error naming
    the format, the model and the ops; by default the file uses Select ops and says which."""
    from keras_fpn.export import formats

    real = formats._convert_litert
    calls = []

    def converter(graph, filepath, spec, supported_ops, **kwargs):  # as the converter answers a graph with such ops
        calls.append(len(supported_ops))
        if len(supported_ops) == 1:
            raise RuntimeError("Some ops are not supported by the native TFLite runtime\nTF Select ops: "
                               "CropAndResize, Erf\nDetails: ...")
        return real(graph, filepath, spec, supported_ops, **kwargs)

    monkeypatch.setattr(formats, "_convert_litert", converter)
    with pytest.raises(ValueError, match=r"LiteRT cannot hold RetinaNet '.*' with builtin ops only: "
                                         r"CropAndResize, Erf are not LiteRT builtin"):
        retinanet.export(str(tmp_path / "strict.tflite"), format="litert", image_size=IMAGE_SIZE,
                         select_tf_ops=False)
    path = retinanet.export(str(tmp_path / "select.tflite"), format="litert", image_size=IMAGE_SIZE)
    assert calls == [1, 1, 2]
    assert f"CropAndResize, Erf of {retinanet.name} are not LiteRT builtin" in capsys.readouterr().out
    assert read_metadata(path)["select_tf_ops"] == ["CropAndResize", "Erf"]


def test_saved_model_format_and_unknown_formats(retinanet, tmp_path):
    """`format="tf_saved_model"` holds the whole detector too (Keras's `serve` endpoint on uint8 images); a
    format keras_fpn does not export, or no fixed size, is an error naming it."""
    import tensorflow as tf

    path = retinanet.export(str(tmp_path / "saved"), image_size=IMAGE_SIZE, verbose=False)
    images = _images(2, seed=4)
    loaded = tf.saved_model.load(path)  # held: its functions read its variables
    assert_equal_to_predict(retinanet, images, loaded.serve(tf.constant(images)))
    with pytest.raises(ValueError, match=r"format='openvino' for RetinaNet .* one of \['tf_saved_model', 'litert'"):
        retinanet.export(str(tmp_path / "model"), format="openvino", image_size=IMAGE_SIZE)
    with pytest.raises(ValueError, match=r"one fixed size, .* pass image_size=\(height, width\)"):
        retinanet.export(str(tmp_path / "model.tflite"), format="litert")


def test_export_on_the_command_line(retinanet, tmp_path, capsys):
    """`keras-fpn export RUN --format litert --quantize int8 --representative-data shapes` writes
    EXPORT_DIR/model.tflite at run.json's image size, calibrated on shapes images, with the run's class names in its
    metadata; a bfloat16 LiteRT / ONNX export is refused, naming the options."""
    from keras_fpn import cli
    from keras_fpn.training.trainer import save_run

    save_run(retinanet, str(tmp_path / "run"), CLASS_NAMES, IMAGE_SIZE)
    assert cli.main(["export", str(tmp_path / "run"), "--format", "litert", "--export-dir", str(tmp_path / "out"),
                     "--quantize", "int8", "--representative-data", "shapes", "--representative-images", "4"]) == 0
    metadata = read_metadata(tmp_path / "out" / "model.tflite")
    assert metadata["class_names"] == list(CLASS_NAMES) and metadata["image_size"] == list(IMAGE_SIZE)
    assert metadata["quantize"] == "int8"
    printed = capsys.readouterr().out
    assert "int8 calibration on 4 images of shapes" in printed and "uint8 images [1, 96, 128, 3]" in printed
    assert cli.main(["export", str(tmp_path / "run"), "--format", "onnx", "--dtype", "bfloat16", "--export-dir",
                     str(tmp_path / "out")]) == 2
    assert "Received --dtype bfloat16 with --format onnx" in capsys.readouterr().err


def _tensor_types(path):
    """How many tensors of each type a LiteRT file holds, by type name."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    counts = {}
    for subgraph in flatbuffer_utils.read_model(path).subgraphs:
        for tensor in subgraph.tensors:
            counts[names[tensor.type]] = counts.get(names[tensor.type], 0) + 1
    return counts


def _quantized_inputs(path, op_names):
    """`"OP: tensor"` for each int8 input of the ops named `op_names` in a LiteRT file."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.read_model(path)
    found = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if name in op_names:
                found += [f"{name}: {subgraph.tensors[i].name.decode()}" for i in op.inputs
                          if i >= 0 and subgraph.tensors[i].type == schema.TensorType.INT8]
    return found


def test_quantized_litert_files(retinanet, tmp_path):
    """`quantize="dynamic"` stores the weights as int8; `quantize="int8"` calibrates on representative images and
    makes the activations int8 too. Both keep uint8 input and float outputs, run in `ai-edge-litert` and still
    detect; int8 without representative images is an error saying what to pass."""
    from ai_edge_litert.interpreter import Interpreter

    float_path = retinanet.export(str(tmp_path / "float.tflite"), format="litert", image_size=IMAGE_SIZE,
                                  verbose=False)
    images = _images(16, seed=5)
    sizes = {}
    for quantize in ("dynamic", "int8"):
        path = retinanet.export(str(tmp_path / f"{quantize}.tflite"), format="litert", image_size=IMAGE_SIZE,
                                quantize=quantize, representative_data=images, verbose=False)
        types = _tensor_types(path)
        assert types.get("INT8", 0) > 0, types
        sizes[quantize] = os.path.getsize(path)
        runner = Interpreter(model_path=path).get_signature_runner()
        outputs = runner(images=images[:1])
        assert outputs["detection_boxes"].dtype == np.float32 and int(outputs["num_detections"][0]) > 0
        assert read_metadata(path)["quantize"] == quantize
    # The post-processing and the head outputs it reads stay float in the int8 file (formats._keep_float): 68% of
    # predict's boxes are found at IoU >= 0.9 with this fixture's weights (60-85% over seeds 0-9 of the fixture;
    # with only FLOAT_OPS kept float, where the quantizer makes the decoded boxes and the logits int8 on the way,
    # 4-38% over seeds 0, 1 and 5). The trained phone detector keeps 96% (benchmarks/README.md).
    runner = Interpreter(model_path=str(tmp_path / "int8.tflite")).get_signature_runner()
    total = hits = 0
    for image in _images(8, seed=6):
        ours, = _predicted(retinanet, image[None])
        theirs, = _exported(runner(images=image[None]), 1)
        total += ours["count"]
        hits += _matched_at_iou(ours, theirs, 0.9) * ours["count"]
    assert total > 0 and hits / total >= 0.6, hits / total
    # Comparisons and selections stay float: quantized, the check dropping boxes of no size compared int8 tensors
    # of other scales and dropped every box of the trained phone detector (its int8 file detected nothing).
    comparisons = ("GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "SELECT_V2")
    assert set(comparisons) <= set(FLOAT_OPS)
    assert _quantized_inputs(str(tmp_path / "int8.tflite"), comparisons) == []
    # No gather reads an int8 table: the dynamic-range quantizer stores a gathered constant as int8, which moved
    # the phone detector's anchors by up to 1.6 px (keras_fpn.detection.box_coding.decode_selected).
    assert _quantized_inputs(str(tmp_path / "dynamic.tflite"), ("GATHER", "GATHER_ND")) == []
    float_types, int8_types = _tensor_types(float_path), _tensor_types(str(tmp_path / "int8.tflite"))
    assert int8_types["INT8"] > _tensor_types(str(tmp_path / "dynamic.tflite"))["INT8"]  # activations too
    assert float_types.get("INT8", 0) == 0
    assert max(sizes.values()) < os.path.getsize(float_path)
    with pytest.raises(ValueError, match="quantize='int8' calibrates .* pass representative_data"):
        retinanet.export(str(tmp_path / "x.tflite"), format="litert", image_size=IMAGE_SIZE, quantize="int8")


def test_int8_keeps_a_trained_detectors_detections(tmp_path):
    """The int8 target on a trained detector (tests.testing.trained_tiny_retinanet, AP50 0.54): at least 95% of
    `predict`'s detections scoring >= 0.3 are in the int8 file with the same label at IoU >= 0.9, as
    benchmarks/export_formats.py counts them (the zoo's phone detector: 96.1%). Random weights cannot show this:
    their scores are nearly tied, so any rounding reorders them (test_quantized_litert_files)."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_fpn.datasets import generate_shapes

    model = trained_tiny_retinanet()
    path = model.export(str(tmp_path / "int8.tflite"), format="litert", image_size=(128, 128), quantize="int8",
                        representative_data=generate_shapes(32, 128, seed=1)[0], verbose=False)
    runner = Interpreter(model_path=path).get_signature_runner()
    images = generate_shapes(40, 128, seed=2)[0].astype(np.uint8)
    total = hits = 0
    for ours, image in zip(_predicted(model, images), images):
        confident = ours["scores"][: ours["count"]] >= 0.3
        ours = {key: value[: ours["count"]][confident] for key, value in ours.items() if key != "count"}
        ours["count"] = int(confident.sum())
        theirs, = _exported(runner(images=image[None]), 1)
        total += ours["count"]
        hits += _matched_at_iou(ours, theirs, 0.9) * ours["count"]
    # Measured: 150 of 152 (98.7%); 88% of all 100 detections per image, scores down to 0.05 included.
    assert total >= 100 and hits / total >= 0.95, (hits, total)
