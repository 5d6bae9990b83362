"""torchvision's detectors converted into keras_fpn compute what torchvision computes.

The reference (tests/fixtures/torchvision/reference.py) is torchvision's own output on seeded random weights and
generated images, stored once; here the same weights are converted and run in keras_fpn. Compared as the
conversion issue asks: pyramid maps within 1e-3 of the maps' scale, and 99% of the detections matched both ways
(same label, IoU >= 0.99, score within 1e-3).

CI compares one model of each family and version: RetinaNet v1 and v2, Faster R-CNN v1, Mask R-CNN v1 and v2
(whose parts include all of Faster R-CNN v2's). Faster R-CNN v2 is compared too with

    KERAS_FPN_ALL_CONVERSIONS=1 python -m pytest tests/convert/test_torchvision.py
"""

import importlib.util
import json
import os

import numpy as np
import pytest
from keras import ops

from keras_fpn.convert import from_torchvision
from keras_fpn.convert.torchvision import assign, model_pairs
from keras_fpn.detection.detector import pad_to_multiple, resize_to_range

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchvision")]

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "torchvision")
_spec = importlib.util.spec_from_file_location("torchvision_reference", os.path.join(FIXTURES, "reference.py"))
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def _load(name):
    with open(os.path.join(FIXTURES, f"{name}.json")) as file:
        meta = json.load(file)
    weights = reference.random_state_dict(meta["shapes"])
    assert reference.checksum(weights) == meta["weights_checksum"], (
        "NumPy's seeded weights differ from those the reference was made with; regenerate it "
        "(tests/fixtures/torchvision/reference.py)")
    return weights, dict(np.load(os.path.join(FIXTURES, f"{name}.npz")))


def _convert(name):
    weights, expected = _load(name)
    model = from_torchvision(name, weights, resize_min_size=reference.MIN_SIZE, resize_max_size=reference.MAX_SIZE,
                             score_threshold=reference.SCORE_THRESHOLD)
    return model, weights, expected


@pytest.fixture(scope="module")
def retinanet():
    return _convert("retinanet_resnet50_fpn")


@pytest.fixture(scope="module")
def fasterrcnn():
    return _convert("fasterrcnn_resnet50_fpn")


@pytest.fixture(scope="module")
def maskrcnn():
    return _convert("maskrcnn_resnet50_fpn")


@pytest.fixture(scope="module")
def retinanet_v2():
    return _convert("retinanet_resnet50_fpn_v2")


@pytest.fixture(scope="module")
def maskrcnn_v2():
    return _convert("maskrcnn_resnet50_fpn_v2")


@pytest.fixture(scope="module")
def fasterrcnn_v2():
    return _convert("fasterrcnn_resnet50_fpn_v2")


_ALL = os.environ.get("KERAS_FPN_ALL_CONVERSIONS") == "1"


@pytest.fixture(params=["retinanet", "retinanet_v2", "fasterrcnn", "maskrcnn", "maskrcnn_v2",
                        pytest.param("fasterrcnn_v2", marks=pytest.mark.skipif(
                            not _ALL, reason="its parts are Mask R-CNN v2's; KERAS_FPN_ALL_CONVERSIONS=1 runs it"))])
def converted(request):
    """Each converted family in turn (the models are built once per module)."""
    return request.getfixturevalue(request.param)


def _iou(a, b):
    """IoU [len(a), len(b)] of xyxy boxes."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # noqa: E731
    return intersection / np.maximum(area(a)[:, None] + area(b)[None, :] - intersection, 1e-9)


def matched_fraction(boxes, scores, labels, other_boxes, other_scores, other_labels, iou=0.99, score=1e-3):
    """Fraction of the first detections that have a detection among the others with the same label, IoU at least
    `iou` and a score within `score`."""
    if len(boxes) == 0:
        return 1.0
    overlaps = _iou(boxes, other_boxes)
    same = (labels[:, None] == other_labels[None, :]) & (np.abs(scores[:, None] - other_scores[None, :]) <= score)
    return float(np.mean(np.any(same & (overlaps >= iou), axis=1)))


def test_matching_catches_a_shifted_box():
    boxes = np.array([[10.0, 10.0, 50.0, 60.0], [0.0, 0.0, 20.0, 20.0]])
    assert matched_fraction(boxes, np.array([0.5, 0.4]), np.array([1, 2]),
                            boxes + [[0.0, 0.0, 0.0, 0.0], [1.0, 0, 1.0, 0]], np.array([0.5, 0.4]),
                            np.array([1, 2])) == 0.5


def _padded(model, images):
    resized, content, _ = resize_to_range(ops.convert_to_tensor(images), None, reference.MIN_SIZE, reference.MAX_SIZE)
    return pad_to_multiple(resized, model.input_multiple, model.backbone.pad_value), content


def test_pyramid_maps_equal_torchvision(converted):
    model, _, expected = converted
    min_level = model.backbone.min_level
    for index in range(len(reference.BATCHES)):
        padded, content = _padded(model, expected[f"b{index}_images"])
        assert tuple(padded.shape[1:3]) == tuple(expected[f"b{index}_padded_shape"])
        np.testing.assert_array_equal(ops.convert_to_numpy(content), expected[f"b{index}_image_sizes"])
        pyramid = model.backbone(padded)
        for level in range(min_level, min_level + 5):
            ours = ops.convert_to_numpy(pyramid[f"P{level}"])[..., :reference.STORED_CHANNELS]
            theirs = expected[f"b{index}_P{level}"]
            assert ours.shape == theirs.shape, (index, level)
            error = np.max(np.abs(ours - theirs)) / expected[f"b{index}_P{level}_scale"]
            assert error <= 1e-3, f"batch {index} P{level}: max difference {error:.2e} of the maps' scale"


@pytest.mark.parametrize("version", ["fasterrcnn", "maskrcnn_v2"])  # the 1-conv and the 2-conv RPN head
def test_proposals_match_torchvision(version, request):
    """Each of torchvision's best 300 proposals per image is one of keras_fpn's (IoU >= 0.99)."""
    model, _, expected = request.getfixturevalue(version)
    for index in range(len(reference.BATCHES)):
        padded, content = _padded(model, expected[f"b{index}_images"])
        boxes, _, valid = model.propose(padded, image_sizes=content)
        boxes, valid = ops.convert_to_numpy(boxes), ops.convert_to_numpy(valid)
        for image in range(2):
            theirs = expected[f"b{index}_i{image}_proposals"]
            ours = boxes[image][valid[image]]
            assert len(theirs) == reference.STORED_PROPOSALS and len(ours) >= len(theirs)
            found = np.max(_iou(theirs, ours), axis=1) >= 0.99
            assert found.mean() >= 0.99, (index, image, found.mean())


def test_detections_match_torchvision(converted):
    """99% of all detections matched both ways, over the four images (at least 95% in each: with random weights
    many boxes of a class overlap near NMS's IoU threshold, where rounding can swap which of two survives)."""
    model, _, expected = converted
    matched, total = [0.0, 0.0], 0
    for index in range(len(reference.BATCHES)):
        found = model.predict(expected[f"b{index}_images"], verbose=0)
        for image in range(2):
            count = int(found["num_detections"][image])
            ours = (found["boxes"][image, :count], found["scores"][image, :count], found["labels"][image, :count])
            theirs = tuple(expected[f"b{index}_i{image}_{field}"] for field in ("boxes", "scores", "labels"))
            assert count == len(theirs[0]), (index, image)
            for direction, fraction in enumerate((matched_fraction(*theirs, *ours), matched_fraction(*ours, *theirs))):
                assert fraction >= 0.95, (index, image, direction, fraction)
                matched[direction] += fraction * count
            total += count
    assert total > 100  # the comparison saw detections (400 and 1,200 in the stored references)
    assert min(matched) / total >= 0.99, [value / total for value in matched]


def test_state_dict_problems_are_named(retinanet):
    model, weights, _ = retinanet
    pairs = model_pairs(model)
    missing = {name: value for name, value in weights.items() if name != "head.regression_head.bbox_reg.bias"}
    with pytest.raises(ValueError, match=r"1 parameters missing \['head.regression_head.bbox_reg.bias'\]"):
        assign(pairs, missing)
    with pytest.raises(ValueError, match=r"1 unused \['head.extra.weight'\]"):
        assign(pairs, {**weights, "head.extra.weight": np.zeros(3)})
    wrong = {**weights, "backbone.fpn.inner_blocks.0.0.weight": np.zeros((256, 256, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"inner_blocks.0.0.weight: \(256, 256, 1, 1\) in the state dict .*"
                                         r"\(1, 1, 512, 256\) in keras_fpn"):
        assign(pairs, wrong)
    with pytest.raises(ValueError, match="convertible models"):
        from_torchvision("fcos_resnet50_fpn", weights)


def test_the_saved_model_serves_torchvisions_detections(retinanet, tmp_path):
    """The SavedModel of a converted model resizes by torchvision's rule too, and keeps torchvision's COCO label
    ids (`detection_classes` = label: index 0 is the background there)."""
    import tensorflow as tf

    from keras_fpn.datasets.coco_categories import torchvision_class_names
    from keras_fpn.export import export_saved_model

    model, _, expected = retinanet
    path = export_saved_model(model, str(tmp_path / "export"), class_names=torchvision_class_names())
    served = tf.saved_model.load(path).signatures["serving_default"]
    images = expected["b1_images"]
    outputs = served(images=tf.stack([tf.io.encode_png(image) for image in images]))
    height, width = images.shape[1:3]
    for image in range(2):
        count = int(outputs["num_detections"][image])
        ymin, xmin, ymax, xmax = np.moveaxis(outputs["detection_boxes"][image, :count].numpy(), -1, 0)
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
        ours = (boxes, outputs["detection_scores"][image, :count].numpy(),
                outputs["detection_classes"][image, :count].numpy().astype(int))
        theirs = tuple(expected[f"b1_i{image}_{field}"] for field in ("boxes", "scores", "labels"))
        assert matched_fraction(*theirs, *ours) >= 0.99, image


@pytest.mark.parametrize("version", ["maskrcnn", "maskrcnn_v2"])
def test_masks_equal_torchvision(version, request):
    """On the matched detections (torchvision's best 20 per image are stored): Mask R-CNN's box-relative 28x28
    mask probabilities (torchvision's roi_heads output, before it pastes them) within 1e-3 (the fixture keeps
    float16), and the masks pasted into the image (the model's `mask_paste`, torchvision's convention for
    converted models) at IoU >= 0.98 with torchvision's (`> 0.5` of its pasted probabilities)."""
    from keras_fpn.ops import paste_masks

    model, _, expected = request.getfixturevalue(version)
    assert model.mask_paste == "torchvision"
    ious = []
    for index in range(len(reference.BATCHES)):
        images = expected[f"b{index}_images"]
        found = model.predict(images, verbose=0)
        for image in range(2):
            theirs = expected[f"b{index}_i{image}_mask_probabilities"].astype(np.float32)
            boxes = expected[f"b{index}_i{image}_boxes"][:len(theirs)]
            labels = expected[f"b{index}_i{image}_labels"][:len(theirs)]
            count = int(found["num_detections"][image])
            overlaps = _iou(boxes, found["boxes"][image, :count])
            overlaps[labels[:, None] != found["labels"][image, :count][None, :]] = 0.0
            match = np.argmax(overlaps, axis=1)
            assert np.all(overlaps[np.arange(len(boxes)), match] >= 0.99), (index, image)
            error = np.max(np.abs(found["masks"][image, match] - theirs))
            assert error <= 1e-3, (index, image, error)

            height, width = images.shape[1:3]
            pasted = np.unpackbits(expected[f"b{index}_i{image}_masks"], axis=-1)[..., :width].astype(bool)
            ours = np.asarray(paste_masks(found["masks"][image, match], found["boxes"][image, match], height,
                                          width, threshold=None, convention=model.mask_paste)) > 0.5
            union = np.sum(ours | pasted, axis=(1, 2))
            ious += list(np.sum(ours & pasted, axis=(1, 2)) / np.maximum(union, 1))
    assert len(ious) == 4 * reference.STORED_MASKS and min(ious) >= 0.98, min(ious)


def test_convert_then_predict_on_the_command_line(tmp_path, capsys, raccoon):
    """`keras-fpn convert` from a .safetensors weights file writes a run folder that `keras-fpn predict` uses;
    without a file and without torchvision, the error says how to pass one."""
    from safetensors.numpy import save_file

    from keras_fpn import cli

    weights, _ = _load("retinanet_resnet50_fpn")
    save_file(weights, str(tmp_path / "retinanet.safetensors"))
    run = tmp_path / "run"
    assert cli.main(["convert", "torchvision:retinanet_resnet50_fpn", "--weights",
                     str(tmp_path / "retinanet.safetensors"), "--output-dir", str(run)]) == 0
    run_file = json.loads((run / "run.json").read_text())
    assert run_file["class_names"][1] == "person" and len(run_file["class_names"]) == 91
    photo = os.path.join(raccoon, "images", "raccoon-1.jpg")
    assert cli.main(["predict", str(run), photo, "--output", str(tmp_path / "out.png"), "--json",
                     str(tmp_path / "out.json"), "--score-threshold", "0.2"]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert report[0]["detections"], "random weights above 0.2 still detect something"
    names = set(run_file["class_names"])
    assert all(detection["class"] in names for detection in report[0]["detections"])
    capsys.readouterr()
    assert cli.main(["convert", "torchvision:fcos_resnet50_fpn", "--output-dir", str(run)]) == 2
    assert "expected torchvision:NAME with NAME one of" in capsys.readouterr().err


def test_fetching_without_torchvision_names_the_weights_option(tmp_path, capsys, monkeypatch):
    import sys

    from keras_fpn import cli

    monkeypatch.setitem(sys.modules, "torchvision", None)  # as where torchvision is not installed
    assert cli.main(["convert", "torchvision:retinanet_resnet50_fpn", "--output-dir", str(tmp_path)]) == 2
    assert "--weights FILE" in capsys.readouterr().err


def test_parameter_shapes_are_torchvisions():
    """`parameter_shapes` (what a weights file must hold) gives the names and shapes of torchvision's own state
    dicts, recorded when the reference was made."""
    from keras_fpn.convert import parameter_shapes

    for name in ("fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"):
        with open(os.path.join(FIXTURES, f"{name}.json")) as file:
            shapes = {key: tuple(shape) for key, shape in json.load(file)["shapes"].items()
                      if not key.endswith("num_batches_tracked")}
        assert parameter_shapes(name) == shapes, name


def test_a_new_class_head_keeps_everything_else(fasterrcnn):
    """`from_torchvision(..., num_classes=K)` (fine-tuning on new classes) converts every weight but the class
    predictor's, which is new and sized for K classes."""
    from keras_fpn.convert.torchvision import CLASS_PREDICTORS

    converted, weights, _ = fasterrcnn
    model = from_torchvision("fasterrcnn_resnet50_fpn", weights, num_classes=2)
    predictor = model.roi_heads.box_predictor
    assert model.num_classes == 2 and predictor.cls_score.kernel.shape == (1024, 3)
    assert predictor.bbox_pred.kernel.shape == (1024, 8)
    new = {id(variable) for name, variable, _ in model_pairs(model) if name.startswith(CLASS_PREDICTORS)}
    assert len(new) == 4
    theirs = {name: variable for name, variable, _ in model_pairs(converted)}
    kept = [(name, variable) for name, variable, _ in model_pairs(model) if id(variable) not in new]
    assert len(kept) == len(theirs) - 4
    for name, variable in kept:
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), ops.convert_to_numpy(theirs[name]), name)


def test_evaluation_gives_a_self_resizing_model_the_original_images(retinanet, raccoon):
    """`evaluation_batches` (what `keras-fpn evaluate` scores a model on) leaves a converted model's resizing to the
    model: the detections `evaluate` scores on a landscape and a portrait photograph are those `predict` finds in
    each photograph alone, as torchvision resizes each image by its own size."""
    from keras_fpn.datasets import load_voc
    from keras_fpn.evaluation import collect_detections, evaluation_batches

    model = retinanet[0]
    data = load_voc(raccoon, split=["raccoon-1.jpg", "raccoon-103.jpg"])  # 650 x 417 and 480 x 640
    _, detections = collect_detections(model, evaluation_batches(model, data, 2, (256, 256)))
    assert len(detections) == 2
    for (image, _), (boxes, scores, labels) in zip(data.dataset, detections):
        alone = model.predict(image[None], verbose=0)
        count = int(alone["num_detections"][0])
        assert count > 0
        theirs = (alone["boxes"][0, :count], alone["scores"][0, :count], alone["labels"][0, :count])
        assert matched_fraction(boxes, scores, labels, *theirs, iou=0.99, score=1e-4) >= 0.99, image.shape
        assert matched_fraction(*theirs, boxes, scores, labels, iou=0.99, score=1e-4) >= 0.99, image.shape
