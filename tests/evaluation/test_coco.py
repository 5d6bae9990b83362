import contextlib
import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fpn.evaluation import COCOEvaluation, coco_metrics, evaluate_coco
from keras_fpn.evaluation.coco import METRIC_NAMES
from tests.testing import csv_boxes, csv_rows, write_coco_json

GROUND_TRUTH = [(100, 100, np.array([[10, 10, 50, 50], [60, 60, 90, 95]]), np.array([0, 1]))]


def test_perfect_detections():
    detections = [(GROUND_TRUTH[0][2], np.array([0.9, 0.8]), GROUND_TRUTH[0][3])]
    metrics = coco_metrics(GROUND_TRUTH, detections, num_classes=2)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_wrong_class_and_missing_detections():
    detections = [(np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([1]))]
    assert coco_metrics(GROUND_TRUTH, detections, num_classes=2)["AP50"] == pytest.approx(0.0)
    assert coco_metrics(GROUND_TRUTH, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], 2)["AP"] == 0.0


def test_per_class_ap():
    detections = [(np.array([[10, 10, 50, 50]]), np.array([0.9]), np.array([0]))]
    metrics = coco_metrics(GROUND_TRUTH, detections, num_classes=2, class_names=["cat", "dog"], per_class=True)
    # class 0 found (AP 1), class 1 missed (AP 0): the mean is the summary AP
    assert metrics["AP/cat"] == pytest.approx(1.0) and metrics["AP/dog"] == pytest.approx(0.0)
    assert metrics["AP50/cat"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(0.5)


def noisy_detections(ground_truth, seed):
    """Per image: each true box jittered (some a lot), plus random false positives, with random scores."""
    rng = np.random.default_rng(seed)
    detections = []
    for height, width, boxes, labels in ground_truth:
        sides = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        jittered = boxes + rng.normal(0, rng.choice([0.02, 0.1, 0.3]), boxes.shape) * sides
        extra = rng.uniform(0, 1, (rng.integers(0, 4), 4)) * [width, height, width, height]
        extra = np.concatenate([np.minimum(extra[:, :2], extra[:, 2:]), np.maximum(extra[:, :2], extra[:, 2:])], 1)
        det_boxes = np.round(np.concatenate([jittered, extra]), 1)
        detections.append((det_boxes, np.round(rng.uniform(0.05, 1, len(det_boxes)), 3),
                           np.zeros(len(det_boxes), np.int32)))
    return detections


def test_metrics_equal_pycocotools_run_directly(raccoon, tmp_path):
    """Our numbers are pycocotools' numbers: the same detections scored from a COCO JSON file the usual way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rows = csv_rows(os.path.join(raccoon, "data", "test_labels.csv"))
    annotation_file = write_coco_json(tmp_path / "gt.json", rows, category_id=1, crowd_box=False,
                                      empty_image=False)
    ground_truth = []
    for name, boxes in csv_boxes(rows).items():
        row = next(row for row in rows if row["filename"] == name)
        ground_truth.append((int(row["height"]), int(row["width"]), boxes, np.zeros(len(boxes), np.int32)))
    detections = noisy_detections(ground_truth, seed=0)

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotation_file))
        results = [{"image_id": image_id, "category_id": 1, "score": float(score),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
                   for image_id, (boxes, scores, _) in enumerate(detections, start=1)
                   for (x1, y1, x2, y2), score in zip(boxes, scores)]
        direct = COCOeval(coco, coco.loadRes(results), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    ours = coco_metrics(ground_truth, detections, num_classes=1)
    assert 0.1 < ours["AP"] < 0.9  # a discriminating case, not all zeros or ones
    for name, value in zip(METRIC_NAMES, direct.stats):
        assert ours[name] == pytest.approx(float(value), abs=1e-12), name


class BoxEcho:
    """A stand-in detector: predicts the ground-truth boxes it is handed, score 0.9."""

    bounding_box_format = "xyxy"
    num_classes = 1

    def __init__(self, boxes):
        self.boxes = boxes

    def predict_on_batch(self, images):
        batch = len(images)
        return {"boxes": self.boxes[:batch], "scores": np.full((batch, self.boxes.shape[1]), 0.9),
                "labels": np.zeros((batch, self.boxes.shape[1]), np.int32),
                "num_detections": np.full(batch, self.boxes.shape[1])}


def test_evaluate_maps_boxes_back_to_the_original_images():
    # An 800x800 image shrunk to 200x200: a 60x60 box (medium there) is a 240x240 box (large) originally.
    images = np.zeros((1, 200, 200, 3), np.float32)
    targets = {"boxes": np.array([[[40, 40, 100, 100]]], np.float32), "labels": np.array([[0]]),
               "image_size": np.array([[800, 800]]), "scale": np.array([[0.25, 0.25]], np.float32)}
    dataset = [(images, targets)]
    metrics = evaluate_coco(BoxEcho(targets["boxes"]), dataset)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP_large"] == pytest.approx(1.0)
    assert metrics["AP_medium"] == -1.0  # nothing medium-sized in original coordinates
    unscaled = evaluate_coco(BoxEcho(targets["boxes"]), [(images, {"boxes": targets["boxes"],
                                                                   "labels": targets["labels"]})])
    assert unscaled["AP_medium"] == pytest.approx(1.0) and unscaled["AP_large"] == -1.0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="predict uses TensorFlow's NMS")
def test_callback_logs_to_history_and_tensorboard(tmp_path):
    from keras_fpn.datasets import shapes_dataset
    from tests.testing import tiny_retinanet

    model = tiny_retinanet()
    model.compile(optimizer="adam")
    data = shapes_dataset(4, batch_size=2, image_size=64, seed=3)
    log_dir = str(tmp_path / "logs")
    history = model.fit(data, epochs=2, verbose=0, callbacks=[
        COCOEvaluation(data, every_n_epochs=2, class_names=["rectangle", "ellipse", "triangle"], per_class=True),
        keras.callbacks.TensorBoard(log_dir),
    ])
    assert len(history.history["val_AP"]) == 1  # only epoch 2 is scored
    assert "val_AP/ellipse" in history.history and "val_AR100" in history.history
    tags = set()
    for root, _, files in os.walk(log_dir):
        for name in files:
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                tags.update(value.tag for value in event.summary.value)
    assert "epoch_AP" in tags and "epoch_AP50" in tags, sorted(tags)  # val_* go to TensorBoard's validation run


def test_callback_rejects_bad_interval():
    with pytest.raises(ValueError, match="every_n_epochs"):
        COCOEvaluation([], every_n_epochs=0)


def _segm_case(seed=0, images=4, size=48):
    """Random instance masks per image and noisy predicted masks (some shifted, some missed, false positives)."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = [], []
    for _ in range(images):
        count = int(rng.integers(1, 4))
        masks, boxes = np.zeros((count, size, size), np.uint8), []
        for k in range(count):
            x1, y1 = rng.integers(0, size - 12, 2)
            w, h = rng.integers(6, 12, 2)
            masks[k, y1:y1 + h, x1:x1 + w] = 1
            boxes.append([x1, y1, x1 + w, y1 + h])
        labels = rng.integers(0, 2, count)
        found = np.roll(masks, shift=int(rng.integers(0, 3)), axis=2)
        extra = np.zeros((1, size, size), np.uint8)
        extra[0, :5, :5] = 1
        found = np.concatenate([found, extra])
        ground_truth.append((size, size, np.array(boxes, np.float32), labels, masks))
        detections.append((np.array(boxes + [[0, 0, 5, 5]], np.float32), rng.uniform(0.1, 1.0, count + 1),
                           np.concatenate([labels, [0]]), found))
    return ground_truth, detections


def test_segm_metrics_equal_pycocotools_run_the_usual_way(tmp_path):
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth, detections = _segm_case()
    metrics = coco_metrics(ground_truth, detections, num_classes=2, iou_type="segm")
    # The usual way: a COCO annotation file with RLE segmentations, results through loadRes.
    def rle(mask):
        encoded = mask_api.encode(np.asfortranarray(mask))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    images, annotations, results = [], [], []
    for image_id, ((h, w, boxes, labels, masks), (_, scores, found_labels, found)) in enumerate(
            zip(ground_truth, detections)):
        images.append({"id": image_id, "height": h, "width": w})
        for box, label, mask in zip(boxes, labels, masks):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "segmentation": rle(mask), "area": float(mask.sum()), "iscrowd": 0,
                                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                         float(box[3] - box[1])]})
        for score, label, mask in zip(scores, found_labels, found):
            results.append({"image_id": image_id, "category_id": int(label), "segmentation": rle(mask),
                            "score": float(score)})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 0, "name": "0"}, {"id": 1, "name": "1"}]}))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluation = COCOeval(coco, coco.loadRes(results), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert 0.1 < metrics["AP"] < 0.95  # neither trivial nor perfect
    for name, value in zip(METRIC_NAMES, evaluation.stats):
        assert metrics[name] == pytest.approx(float(value), abs=1e-12), name
    perfect = [(*d[:3], g[4]) for g, d in zip(ground_truth, [(g[2], np.ones(len(g[3])), g[3]) for g in ground_truth])]
    assert coco_metrics(ground_truth, perfect, 2, iou_type="segm")["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="iou_type='segm' needs masks"):
        coco_metrics([g[:4] for g in ground_truth], detections, 2, iou_type="segm")
    with pytest.raises(ValueError, match="iou_type='keypoints'"):
        coco_metrics(ground_truth, detections, 2, iou_type="keypoints")


def test_evaluate_coco_reports_box_and_mask_ap_of_a_mask_rcnn():
    from keras_fpn import MaskRCNN
    from keras_fpn.datasets import detection_pipeline, load_shapes
    from tests.testing import tiny_convnet

    model = MaskRCNN(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=32,
                     mask_head_filters=8, mask_head_depth=1, rpn_pre_nms_topk_test=50, rpn_post_nms_topk_test=20)
    data = detection_pipeline(load_shapes(4, 64, seed=1, with_masks=True), 2, (80, 80), pad_to_multiple=32,
                              with_image_info=True)
    metrics = evaluate_coco(model, data, iou_type=("bbox", "segm"))
    assert {"AP", "AP50", "mask_AP", "mask_AP50", "mask_AR100"} <= set(metrics)
    assert all(-1.0 <= value <= 1.0 for value in metrics.values())
    assert set(evaluate_coco(model, data, iou_type="segm")) == set(METRIC_NAMES)


def test_proposal_recall_by_hand():
    from keras_fpn.evaluation import proposal_recall

    truth = [(200, 200, np.array([[10, 10, 60, 60], [100, 100, 180, 190]], np.float32), np.array([0, 1]))]
    exact = [(truth[0][2], np.array([0.9, 0.8]))]
    assert proposal_recall(truth, exact) ["AR100"] == pytest.approx(1.0)
    # A proposal of IoU 0.62 with the first box (shifted 12 px of 50) and none for the second: recalled at the
    # IoU thresholds 0.50, 0.55 and 0.60 of ten, for one of two boxes: 0.15.
    shifted = np.array([[16, 16, 66, 66]], np.float32)
    iou = (44 * 44) / (2 * 50 * 50 - 44 * 44)
    assert 0.6 < iou < 0.65
    metrics = proposal_recall(truth, [(shifted, np.array([0.9]))])
    assert metrics["AR100"] == pytest.approx(0.15) and metrics["AR1k"] == pytest.approx(0.15)
    # The exact second box ranked 150th counts for AR1k, not AR100.
    filler = np.tile([[0, 0, 5, 5]], (149, 1)).astype(np.float32)
    ranked = np.concatenate([shifted, filler, truth[0][2][1:]])
    scores = np.linspace(1.0, 0.1, len(ranked))
    metrics = proposal_recall(truth, [(ranked, scores)])
    assert metrics["AR100"] == pytest.approx(0.15) and metrics["AR1k"] == pytest.approx(0.65)
    assert set(metrics) == {"AR100", "AR1k", "AR1k_small", "AR1k_medium", "AR1k_large"}


def test_rpn_only_training_and_proposal_recall():
    from keras_fpn import FasterRCNN
    from keras_fpn.datasets import detection_pipeline, load_shapes
    from keras_fpn.evaluation import evaluate_proposals
    from tests.testing import tiny_convnet

    model = FasterRCNN(3, backbone=tiny_convnet(), backbone_weights=None, num_channels=16, head_dim=16,
                       min_level=2, max_level=4, roi_max_level=4, anchor_scales=(0.5, 1.0, 2.0), rpn_only=True,
                       rpn_pre_nms_topk_test=300, rpn_post_nms_topk_test=300)
    model.compile(optimizer="adam")
    data = detection_pipeline(load_shapes(8, 64, seed=1), 4, (64, 64), pad_to_multiple=16, with_image_info=True)
    history = model.fit(data.map(lambda images, targets: (images, {"boxes": targets["boxes"],
                                                                    "labels": targets["labels"]})),
                        epochs=1, verbose=0)
    assert {key for key in history.history if key.endswith("loss")} == {"loss", "rpn_objectness_loss",
                                                                         "rpn_box_loss"}
    boxes, scores, valid = model.propose(next(iter(data))[0], post_nms_topk=50)
    assert boxes.shape == (4, 50, 4) and scores.shape == (4, 50) and valid.shape == (4, 50)
    assert model.anchor_generator.anchors_per_location == 9
    metrics = evaluate_proposals(model, data, max_proposals=(10, 100))
    assert set(metrics) == {"AR10", "AR100", "AR100_small", "AR100_medium", "AR100_large"}
    assert 0.0 <= metrics["AR10"] <= metrics["AR100"] <= 1.0


def test_a_model_with_more_classes_is_scored_on_the_datasets_by_name():
    """torchvision's 91-label COCO layout on a dataset of two COCO classes: labels matched by name, the model's other
    classes dropped, a dataset class the model lacks named."""
    from keras_fpn.datasets.coco_categories import torchvision_class_names
    from keras_fpn.evaluation.coco import label_map_by_names

    names = torchvision_class_names()
    label_map = label_map_by_names(names, ["person", "dog"])
    assert label_map[1] == 0 and label_map[18] == 1 and label_map[0] == -1 and (label_map >= 0).sum() == 2

    class Labelled(BoxEcho):
        num_classes = 91

        def predict_on_batch(self, images):
            found = super().predict_on_batch(images)
            # the ground-truth box as "person" (COCO id 1), and as "cat" (17, not in the dataset) scoring higher
            found["labels"] = np.array([[1, 17]], np.int32)
            found["boxes"] = np.array([[[40, 40, 100, 100], [40, 40, 100, 100]]], np.float32)
            found["scores"] = np.array([[0.9, 0.95]])
            found["num_detections"] = np.array([2])
            return found

    images = np.zeros((1, 200, 200, 3), np.float32)
    targets = {"boxes": np.array([[[40, 40, 100, 100]]], np.float32), "labels": np.array([[0]])}
    model = Labelled(targets["boxes"])
    metrics = evaluate_coco(model, [(images, targets)], ["person", "dog"], per_class=True, label_map=label_map)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP/person"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"classes \['raccoon'\] are not among the model's"):
        label_map_by_names(names, ["raccoon", "dog"])
