"""COCO-style detection metrics computed by pycocotools itself."""

import contextlib
import io

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
                "AR_medium", "AR_large")


def _xyxy_to_xywh(boxes):
    boxes = np.asarray(boxes, np.float64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_metrics(ground_truth, detections, num_classes):
    """pycocotools' bbox metrics.

    Args:
        ground_truth: list over images of `(height, width, boxes [M, 4] pixel xyxy, labels [M])`.
        detections: list over images of `(boxes [D, 4] pixel xyxy, scores [D], labels [D])`.
        num_classes: int.

    Returns:
        dict of the 12 COCO summary numbers (`AP`, `AP50`, ..., `AR100`, ...), as floats in [0, 1]
        (-1 where pycocotools has nothing to average, e.g. no large objects).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, ((height, width, boxes, labels), (det_boxes, det_scores, det_labels)) in enumerate(
        zip(ground_truth, detections)
    ):
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for box, label in zip(_xyxy_to_xywh(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score, label in zip(_xyxy_to_xywh(det_boxes).reshape(-1, 4), np.asarray(det_scores).reshape(-1),
                                     np.asarray(det_labels).reshape(-1)):
            results.append({"image_id": image_id, "category_id": int(label), "bbox": box.tolist(),
                            "score": float(score)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i, "name": str(i)} for i in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        if not results:
            return {name: 0.0 for name in METRIC_NAMES}
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluation.stats)}


def evaluate_coco(model, dataset, verbose=0):
    """Runs `model.predict` over `dataset` of `(images, {"boxes", "labels"})` and scores it with pycocotools.

    Ground-truth and predicted boxes are read in the model's `bounding_box_format` and converted to pixel xyxy.
    Returns the dict of `coco_metrics`.
    """
    from keras.utils import bounding_boxes

    ground_truth, detections = [], []
    for images, targets in dataset:
        height, width = int(images.shape[1]), int(images.shape[2])
        predictions = model.predict_on_batch(images)
        gt_boxes = np.asarray(bounding_boxes.convert_format(
            np.asarray(targets["boxes"], np.float32), model.bounding_box_format, "xyxy", height=height, width=width))
        pred_boxes = np.asarray(bounding_boxes.convert_format(
            np.asarray(predictions["boxes"], np.float32), model.bounding_box_format, "xyxy", height=height,
            width=width))
        gt_labels = np.asarray(targets["labels"])
        for i in range(len(gt_labels)):
            keep = gt_labels[i] >= 0
            ground_truth.append((height, width, gt_boxes[i][keep], gt_labels[i][keep]))
            n = int(predictions["num_detections"][i])
            detections.append((pred_boxes[i][:n], predictions["scores"][i][:n], predictions["labels"][i][:n]))
    return coco_metrics(ground_truth, detections, model.num_classes)
