"""Faster R-CNN's parts against hand-computed values and NumPy references, and the model through fit and predict."""

import json
import math

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                 reason="proposals, RoIAlign and NMS use TensorFlow ops"),
              pytest.mark.xdist_group("faster_rcnn")]

import tensorflow as tf  # noqa: E402

from keras_fpn import FasterRCNN  # noqa: E402
from keras_fpn.datasets import generate_shapes  # noqa: E402
from keras_fpn.detection.roi_heads import decode_roi_detections  # noqa: E402
from keras_fpn.detection.proposals import generate_proposals  # noqa: E402
from keras_fpn.detection.roi_align import multilevel_roi_align, roi_levels  # noqa: E402
from keras_fpn.detection.sampling import sample_balanced  # noqa: E402
from tests.testing import tiny_convnet  # noqa: E402


def tiny_faster_rcnn(**kwargs):
    args = dict(backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                rpn_pre_nms_topk_train=200, rpn_post_nms_topk_train=100, rpn_pre_nms_topk_test=100,
                rpn_post_nms_topk_test=50, roi_batch_size_per_image=32, seed=1)
    args.update(kwargs)
    return FasterRCNN(3, **args)


@pytest.fixture(scope="module")
def model():
    detector = tiny_faster_rcnn()
    detector.compile(optimizer="adam")
    return detector


# -- level assignment (the FPN paper's Eq. 1) ---------------------------------------------------------------------

def test_roi_levels_follow_equation_one_and_clamp():
    sides = [112, 224, 448, 32, 10, 0, 2000, 223, 225]
    boxes = np.array([[5, 7, 5 + side, 7 + side] for side in sides], np.float32)
    # floor(4 + log2(side / 224)): 112 -> 3, 224 -> 4, 448 -> 5; 32 -> 1.19 -> clamped to 2; 2000 -> 7.2 -> 5;
    # 223 -> 3.99 -> 3; 225 -> 4.006 -> 4; an empty box -> clamped to 2.
    np.testing.assert_array_equal(np.asarray(roi_levels(boxes, 2, 5)), [3, 4, 5, 2, 2, 2, 5, 3, 4])
    # sqrt(w h): a 112 x 448 box has the area of a 224 square.
    assert int(np.asarray(roi_levels(np.array([[0, 0, 112, 448]], np.float32), 2, 5))[0]) == 4
    np.testing.assert_array_equal(np.asarray(roi_levels(boxes[:3], 4, 4)), [4, 4, 4])


# -- RoIAlign against a NumPy reference ---------------------------------------------------------------------------

def _bilinear(feature, y, x):
    """torchvision's `bilinear_interpolate` for one point of an [H, W, C] map (aligned RoIAlign's sampling)."""
    height, width = feature.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * feature[y0, x0] + (1 - ly) * lx * feature[y0, x1]
            + ly * (1 - lx) * feature[y1, x0] + ly * lx * feature[y1, x1])


def _roi_align_reference(feature, box, stride, pool_size, sampling_ratio):
    x1, y1, x2, y2 = np.asarray(box, np.float64) / stride - 0.5
    bin_h, bin_w = (y2 - y1) / pool_size, (x2 - x1) / pool_size
    out = np.zeros((pool_size, pool_size, feature.shape[-1]))
    for i in range(pool_size):
        for j in range(pool_size):
            for iy in range(sampling_ratio):
                for ix in range(sampling_ratio):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                    x = x1 + j * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                    out[i, j] += _bilinear(feature, y, x)
    return out / sampling_ratio ** 2


@pytest.mark.parametrize("implementation", ["crop_and_resize", "gather"])
def test_multilevel_roi_align_matches_a_numpy_bilinear_reference(implementation):
    rng = np.random.default_rng(0)
    image = 256
    features = {f"P{level}": rng.normal(size=(2, image // 2 ** level, image // 2 ** level, 3)).astype(np.float32)
                for level in range(2, 6)}
    boxes = np.array([
        [[0, 0, 40, 40],  # at the top-left border
         [200, 210, 256, 256],  # at the bottom-right border
         [100.3, 50.7, 101.1, 51.2],  # smaller than one cell of P2
         [60, 60, 60, 60],  # no area
         [-30, -20, 90, 100],  # partly outside the image
         [10, 20, 250, 240]],  # large: P4
        [[5, 5, 117, 117],  # 112 px: P3
         [16, 30, 240, 254],  # 224 px: P4
         [0, 0, 256, 256],
         [33.5, 12.25, 97.75, 200.5],
         [250, 250, 300, 300],  # mostly outside
         [1, 2, 3, 4]]], np.float32)
    pooled = np.asarray(multilevel_roi_align(features, boxes, 2, 5, pool_size=7, sampling_ratio=2,
                                             implementation=implementation))
    levels = np.asarray(roi_levels(boxes, 2, 5))
    assert set(levels.ravel()) >= {2, 3, 4}
    for b in range(2):
        for r in range(boxes.shape[1]):
            level = int(levels[b, r])
            expected = _roi_align_reference(features[f"P{level}"][b], boxes[b, r], 2 ** level, 7, 2)
            np.testing.assert_allclose(pooled[b, r], expected, atol=1e-4, err_msg=f"image {b}, box {r}")


# -- proposals ----------------------------------------------------------------------------------------------------

def test_proposals_take_top_k_per_level_nms_within_levels_and_top_k_per_image():
    # Level 0: 4 anchors, level 1: 3 anchors (zero deltas: proposals are the anchors).
    anchors = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [80, 80, 90, 90],  # level 0
                        [0, 0, 10, 10], [100, 100, 120, 120], [30, 30, 40, 40]], np.float32)  # level 1
    logits = np.array([[4.0, 3.0, 2.0, -1.0, 3.5, 1.0, 0.5]], np.float32)
    deltas = np.zeros((1, 7, 4), np.float32)

    def run(pre, post):
        boxes, scores, valid = generate_proposals(logits, deltas, anchors, [4, 3], 128, 128, pre_nms_topk=pre,
                                                  post_nms_topk=post, nms_iou_threshold=0.7)
        n = int(np.sum(np.asarray(valid)))
        return np.asarray(boxes)[0, :n].tolist(), np.asarray(scores)[0, :n]

    # pre 3 per level: level 0 keeps its 3 best; anchor 1 overlaps anchor 0 (IoU 0.82) and is suppressed;
    # level 1's [0, 0, 10, 10] is identical to level 0's but on another level, so it is kept.
    boxes, scores = run(pre=3, post=10)
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 120, 120], [30, 30, 40, 40]]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([4.0, 3.5, 2.0, 1.0, 0.5]))), rtol=1e-6)
    boxes, _ = run(pre=2, post=10)  # level 0's top 2 are anchors 0 and 1: NMS leaves one
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 120, 120]]
    boxes, _ = run(pre=3, post=2)  # the 2 best of all levels after NMS
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10]]


def test_proposals_are_decoded_clipped_and_small_ones_dropped():
    anchors = np.array([[10, 10, 30, 30], [90, 90, 130, 130], [40, 40, 41, 41]], np.float32)
    deltas = np.array([[[0.5, 0.0, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)  # dy = 0.5 * 20 = 10
    boxes, _, valid = generate_proposals(np.zeros((1, 3), np.float32), deltas, anchors, [3], 100, 120,
                                         pre_nms_topk=3, post_nms_topk=3, min_size=2.0)
    assert int(np.sum(np.asarray(valid))) == 2  # the 1-pixel box is dropped
    got = sorted(np.asarray(boxes)[0, :2].round(4).tolist())
    assert got == [[10, 20, 30, 40], [90, 90, 120, 100]]  # xyxy, shifted down 10; clipped to 120 x 100


# -- sampling -----------------------------------------------------------------------------------------------------

def test_sampling_fractions():
    seed = keras.random.SeedGenerator(0)
    positive = np.zeros((3, 1000), bool)
    positive[0, :500] = True  # plenty: capped at 128 of 256
    positive[1, :10] = True  # few: all 10, negatives fill to 256
    negative = ~positive
    negative[2] = False
    negative[2, :20] = True  # image 2: no positives, 20 negatives only
    sampled_positive, sampled_negative = (np.asarray(t) for t in sample_balanced(positive, negative, 256, 0.5, seed))
    np.testing.assert_array_equal(sampled_positive.sum(1), [128, 10, 0])
    np.testing.assert_array_equal(sampled_negative.sum(1), [128, 246, 20])
    assert not (sampled_positive & ~positive).any() and not (sampled_negative & ~negative).any()
    # RoI heads: 512 with 25% positive
    positive = np.zeros((1, 3000), bool)
    positive[0, ::3] = True
    sampled_positive, sampled_negative = (np.asarray(t) for t in sample_balanced(positive, ~positive, 512, 0.25, seed))
    assert sampled_positive.sum() == 128 and sampled_negative.sum() == 384
    # Random, not the first ones: over many draws every positive gets picked.
    picks = sum(np.asarray(sample_balanced(positive, ~positive, 512, 0.25, seed)[0]) for _ in range(20))
    assert (picks[positive] > 0).mean() > 0.9


# -- class-specific box decoding ----------------------------------------------------------------------------------

def test_each_class_decodes_its_own_deltas():
    proposals = np.array([[[20, 20, 60, 60], [0, 0, 0, 0]]], np.float32)
    valid = np.array([[True, False]])
    logits = np.log(np.array([[[0.1, 0.7, 0.2], [0.9, 0.05, 0.05]]], np.float32))  # 2 classes + background
    deltas = np.zeros((1, 2, 2, 4), np.float32)
    deltas[0, 0, 0] = [0, 10.0, 0, 0]  # class 0: x shifted by 10 / 10 * 40 = 40 px
    deltas[0, 0, 1] = [0, 0, 5 * math.log(0.5), 5 * math.log(0.5)]  # class 1: half the size
    detections = decode_roi_detections(proposals, valid, logits, deltas, 100, 100, score_threshold=0.05)
    n = int(detections["num_detections"][0])
    assert n == 2  # the invalid proposal gives nothing despite its high class-0 score
    got = {int(label): (round(float(score), 4), np.asarray(box).round(3).tolist()) for label, score, box in
           zip(detections["labels"][0][:n], detections["scores"][0][:n], detections["boxes"][0][:n])}
    assert got == {1: (0.7, [30.0, 30.0, 50.0, 50.0]), 0: (0.1, [60.0, 20.0, 100.0, 60.0])}
    assert int(detections["labels"][0][n]) == -1


# -- the model ----------------------------------------------------------------------------------------------------

def shapes(n=4, size=64, seed=0):
    images, boxes, labels = generate_shapes(n, size, max_objects=3, seed=seed)
    return images.astype("float32"), {"boxes": boxes, "labels": labels}


def test_outputs_rpn_shared_over_p2_to_p6(model):
    outputs = model(np.zeros((2, 64, 96, 3), "float32"))
    assert sorted(outputs) == ["P2", "P3", "P4", "P5", "P6", "rpn_box", "rpn_objectness"]
    anchors = 3 * (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2)
    assert outputs["rpn_objectness"].shape == (2, anchors) and outputs["rpn_box"].shape == (2, anchors, 4)
    np.testing.assert_array_equal(outputs["P6"], np.asarray(outputs["P5"])[:, ::2, ::2])  # P6 subsampled
    assert [layer.name for layer in model.layers if layer.name == "rpn_head"] == ["rpn_head"]  # one shared head


def test_fit_logs_every_loss_and_predict_returns_the_detection_dict(model):
    images, y = shapes()
    history = model.fit(images, y, batch_size=2, epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "rpn_objectness_loss", "rpn_box_loss", "classification_loss",
                                     "box_loss", "dropped_boxes"}
    assert all(np.isfinite(value).all() for value in history.history.values())
    for predictions in (model.predict(images, batch_size=2, verbose=0), model.predict_on_batch(images)):
        assert {key: tuple(value.shape) for key, value in predictions.items()} == {
            "boxes": (4, 100, 4), "scores": (4, 100), "labels": (4, 100), "num_detections": (4,)}
        n = int(predictions["num_detections"][0])
        assert n > 0 and (np.asarray(predictions["labels"])[0, n:] == -1).all()
        assert np.asarray(predictions["labels"])[0, :n].max() < 3


def test_images_without_objects_and_any_size_and_batch(model):
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    empty = {"boxes": np.zeros((2, 0, 4), np.float32), "labels": np.zeros((2, 0), np.int32)}
    assert np.isfinite(model.train_on_batch(images, empty)).all()
    for shape in ((1, 96, 64, 3), (3, 64, 128, 3)):
        predictions = model.predict_on_batch(np.zeros(shape, np.float32))
        assert predictions["boxes"].shape == (shape[0], 100, 4)


def test_keras_round_trip_and_bfloat16(model, tmp_path):
    images, _ = shapes(2)
    path = str(tmp_path / "faster_rcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, FasterRCNN)
    before, after = model.predict_on_batch(images), loaded.predict_on_batch(images)
    for key in before:
        np.testing.assert_allclose(before[key], after[key], atol=1e-5)
    # The same configuration (tuples come back from JSON as lists).
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    low = model.with_dtype("bfloat16").predict_on_batch(images)
    assert low["boxes"].dtype == np.float32 and low["boxes"].shape == (2, 100, 4)


def test_bad_input_is_named_as_for_retinanet(model):
    images, y = shapes(2)
    with pytest.raises(ValueError, match="^labels must be < num_classes=3"):
        model.fit(images, {**y, "labels": np.full_like(y["labels"], 5)}, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="^boxes have x2 < x1"):
        model.fit(tf.data.Dataset.from_tensors((images, {**y, "boxes": y["boxes"][..., ::-1].copy()})), verbose=0)
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        model.predict_on_batch(images[0])


def test_rpn_on_the_finest_level_only_keeps_the_whole_pyramid():
    # The FPN paper's "only finest level" row: the top-down pyramid is built, the RPN sees P2 alone.
    detector = tiny_faster_rcnn(max_level=5, rpn_min_level=2, rpn_max_level=2, anchor_scales=(1.0, 2.0, 4.0))
    outputs = detector(np.zeros((1, 64, 96, 3), "float32"))
    assert sorted(outputs) == ["P2", "P3", "P4", "P5", "rpn_box", "rpn_objectness"]
    assert outputs["rpn_objectness"].shape == (1, 16 * 24 * 9)
    boxes, _, valid = detector.propose(np.zeros((1, 64, 96, 3), "float32"), post_nms_topk=20)
    assert boxes.shape == (1, 20, 4) and valid.shape == (1, 20)
    config = detector.get_config()
    assert (config["rpn_min_level"], config["rpn_max_level"]) == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"rpn_max_level": 7}, "expected RPN levels inside the pyramid's"),
    ({"rpn_negative_iou": 0.8}, "expected 0 <= rpn_negative_iou <= rpn_positive_iou"),
    ({"roi_positive_fraction": 0.0}, "roi_positive_fraction=0.0"),
    ({"roi_max_level": 7}, "expected RoI levels inside the pyramid's"),
    ({"bounding_box_format": "xyz"}, "bounding_box_format='xyz'"),
])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_faster_rcnn(**kwargs)
