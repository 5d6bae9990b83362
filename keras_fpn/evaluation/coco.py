"""COCO-style detection metrics computed by pycocotools itself."""

import contextlib
import io

import numpy as np

from keras_fpn.ops.boxes import content_sizes, to_original

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
                "AR_medium", "AR_large")


def _xyxy_to_xywh(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _per_class(evaluation, class_names):
    """AP and AP50 per class from pycocotools' precision table `[iou, recall, class, area, max_dets]`, at area
    "all" and 100 detections, averaged the way `COCOeval.summarize` averages: over entries that are not -1."""
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    metrics = {}
    for index, category in enumerate(evaluation.params.catIds):
        name = class_names[category] if class_names is not None else str(category)
        for key, values in (("AP", precision[:, :, index]), ("AP50", precision[0, :, index])):
            values = values[values > -1]
            metrics[f"{key}/{name}"] = float(np.mean(values)) if values.size else -1.0
    return metrics


IOU_TYPES = ("bbox", "segm")


def mask_to_rle(mask):
    """COCO RLE `{"size": [H, W], "counts": str}` of a 0/1 `[H, W]` mask (`pycocotools.mask.decode` reads it back
    once `counts` is encoded to bytes)."""
    from pycocotools import mask as mask_api

    encoded = mask_api.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")  # JSON-able, as COCO files hold it
    return encoded


def coco_metrics(ground_truth, detections, num_classes, class_names=None, per_class=False, iou_type="bbox"):
    """pycocotools' bbox or mask (segm) metrics.

    Args:
        ground_truth: list over images of `(height, width, boxes [M, 4] pixel xyxy, labels [M])`, plus
            `masks [M, height, width]` (0/1) as a fifth element for `iou_type="segm"`.
        detections: list over images of `(boxes [D, 4] pixel xyxy, scores [D], labels [D])`, plus
            `masks [D, height, width]` (0/1) for `"segm"`.
        num_classes: int.
        class_names: sequence of str or None; names the per-class keys.
        per_class: bool. Add `"AP/<class>"` and `"AP50/<class>"` for every class.
        iou_type: `"bbox"` (default) or `"segm"`: masks are RLE-encoded by pycocotools' mask API and compared by
            mask IoU, and the object areas (small / medium / large) are mask areas, as for COCO's segm metrics.

    Returns:
        dict of the 12 COCO summary numbers (`AP`, `AP50`, ..., `AR100`, ...), as floats in [0, 1]
        (-1 where pycocotools has nothing to average, e.g. no large objects), plus the per-class numbers.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"Received iou_type={iou_type!r}; expected one of {IOU_TYPES}.")
    segm = iou_type == "segm"
    if segm and not all(len(item) > 4 for item in ground_truth) or segm and not all(len(item) > 3
                                                                                   for item in detections):
        raise ValueError("iou_type='segm' needs masks in the ground truth and the detections (a MaskRCNN, and data "
                         "with masks).")
    if len(ground_truth) != len(detections):
        raise ValueError(f"Received ground truth for {len(ground_truth)} images and detections for "
                         f"{len(detections)}; expected one of each per image.")
    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(ground_truth, detections)):
        (height, width, boxes, labels), (det_boxes, det_scores, det_labels) = truth[:4], found[:3]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for index, (box, label) in enumerate(zip(_xyxy_to_xywh(boxes), np.asarray(labels).reshape(-1))):
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                          "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0}
            if segm:
                annotation["segmentation"] = mask_to_rle(truth[4][index])
                annotation["area"] = float(np.asarray(truth[4][index]).sum())
            annotations.append(annotation)
        for index, (box, score, label) in enumerate(zip(_xyxy_to_xywh(det_boxes), np.asarray(det_scores).reshape(-1),
                                                        np.asarray(det_labels).reshape(-1))):
            result = {"image_id": image_id, "category_id": int(label), "bbox": box.tolist(), "score": float(score)}
            if segm:
                result["segmentation"] = mask_to_rle(found[3][index])
            results.append(result)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i, "name": str(i)} for i in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        if not results:
            metrics = {name: 0.0 for name in METRIC_NAMES}
            if per_class:
                names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
                metrics.update({f"{key}/{name}": 0.0 for name in names for key in ("AP", "AP50")})
            return metrics
        evaluation = COCOeval(coco, coco.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, evaluation.stats)}
    if per_class:
        metrics.update(_per_class(evaluation, class_names))
    return metrics


def _masks_to_original(masks, scale, size):
    """`[N, H, W]` masks of the network input -> `[N, height, width]` of the original image: the resized image's
    region (the rest is padding), resized back (nearest)."""
    import tensorflow as tf

    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return np.zeros((0, *size), np.uint8)
    resized = (max(int(round(size[0] * float(scale[0]))), 1), max(int(round(size[1] * float(scale[1]))), 1))
    region = masks[:, :resized[0], :resized[1], None].astype(np.float32)
    return (tf.image.resize(region, size, method="nearest").numpy()[..., 0] >= 0.5).astype(np.uint8)


def collect_detections(model, dataset, verbose=0, with_masks=False):
    """Runs `model.predict_on_batch` over `dataset` and pairs each image's ground truth with its detections.

    Boxes (ground truth and predicted) are read in the model's `bounding_box_format` and returned as pixel xyxy.
    Where the targets carry `"image_size"` and `"scale"` (`detection_pipeline(..., with_image_info=True)`), both are
    mapped back to the original images, so areas (small/medium/large) are those of the original images.

    With `with_masks`, the targets' `"masks"` and the predictions' box-relative `"masks"` (pasted into the image
    with `keras_fpn.ops.paste_masks`) are added, in the same coordinates as the boxes.

    Returns:
        `(ground_truth, detections)` in the form `coco_metrics` takes.
    """
    import keras
    from keras.utils import bounding_boxes

    ground_truth, detections = [], []
    progress = keras.utils.Progbar(None, unit_name="batch") if verbose else None
    for step, (images, targets) in enumerate(dataset):
        height, width = int(images.shape[1]), int(images.shape[2])
        sizes = np.asarray(targets["image_size"]) if "image_size" in targets else None
        scales = np.asarray(targets["scale"]) if "scale" in targets else None
        if sizes is not None and scales is not None:
            # Each image's resized content (the rest is padding): boxes are clipped to it before NMS.
            predictions = model.predict_on_batch({"images": np.asarray(images),
                                                   "image_sizes": content_sizes(sizes, scales)})
        else:
            predictions = model.predict_on_batch(images)

        def to_xyxy(boxes):
            return np.asarray(bounding_boxes.convert_format(
                np.asarray(boxes, np.float32), model.bounding_box_format, "xyxy", height=height, width=width))

        gt_boxes, pred_boxes = to_xyxy(targets["boxes"]), to_xyxy(predictions["boxes"])
        gt_labels = np.asarray(targets["labels"])
        if with_masks:
            from keras_fpn.ops.masks import paste_masks

            if "masks" not in predictions or "masks" not in targets:
                raise ValueError("Mask metrics need a model that predicts masks (MaskRCNN) and targets with "
                                 "'masks' (e.g. load_shapes(..., with_masks=True) through detection_pipeline).")
            gt_masks = np.asarray(targets["masks"])
            pred_masks = np.asarray(paste_masks(predictions["masks"], pred_boxes, height, width,
                                                convention=model.mask_paste))
        for i in range(len(gt_labels)):
            keep = gt_labels[i] >= 0
            n = int(predictions["num_detections"][i])
            image_gt, image_pred = gt_boxes[i][keep], pred_boxes[i][:n]
            size = (height, width)
            truth = [gt_labels[i][keep]]
            found = [np.asarray(predictions["scores"][i][:n]), np.asarray(predictions["labels"][i][:n])]
            if with_masks:
                truth.append(gt_masks[i][keep])
                found.append(pred_masks[i][:n])
            if sizes is not None and scales is not None:
                size = tuple(int(v) for v in sizes[i])
                image_gt = to_original(image_gt, scales[i], size)
                image_pred = to_original(image_pred, scales[i], size)
                if with_masks:
                    truth[1] = _masks_to_original(truth[1], scales[i], size)
                    found[2] = _masks_to_original(found[2], scales[i], size)
            ground_truth.append((*size, image_gt, *truth))
            detections.append((image_pred, *found))
        if progress is not None:
            progress.update(step + 1)
    return ground_truth, detections


def label_map_by_names(model_names, dataset_names):
    """int array `[len(model_names)]`: each model label's label in the dataset, by class name, -1 where the dataset
    has no such class (e.g. a model with torchvision's 91 COCO labels on a COCO JSON's 80 categories).

    Raises:
        ValueError: a dataset class the model does not know, naming it.
    """
    index = {name: position for position, name in enumerate(dataset_names)}
    unknown = [name for name in dataset_names if name not in set(model_names)]
    if unknown:
        raise ValueError(f"The dataset's classes {unknown} are not among the model's {list(model_names)}.")
    return np.array([index.get(name, -1) for name in model_names], np.int64)


def remap_detections(detections, label_map):
    """`collect_detections`' detections with each label `l` replaced by `label_map[l]`; those mapped to -1 are
    dropped."""
    remapped = []
    for boxes, scores, labels, *masks in detections:
        mapped = label_map[np.asarray(labels, np.int64)]
        keep = mapped >= 0
        remapped.append((boxes[keep], scores[keep], mapped[keep], *(mask[keep] for mask in masks)))
    return remapped


def evaluation_batches(model, data, batch_size, image_size):
    """Batches of `data` (`DetectionData` or its dataset) as `model` is scored on them, with the image information
    that maps boxes back to the originals: resized to fit `image_size` and padded to `model.input_multiple`, or,
    for a model that resizes its input itself (`resize_min_size`: the converted torchvision models), each image
    alone at its own size: resizing here as well would resize twice (and by another rule than the model's
    short-side / long-side one for portrait images), and the model resizes a batch by one scale, the input's,
    while torchvision resizes each image by its own (`batch_size` is then 1, and the model pads)."""
    from keras_fpn.datasets import detection_pipeline

    multiple = model.input_multiple
    if getattr(model, "resize_min_size", None) is not None:
        batch_size, image_size, multiple = 1, None, 1
    return detection_pipeline(data, batch_size, image_size, pad_to_multiple=multiple, with_image_info=True)


def evaluate_coco(model, dataset, class_names=None, per_class=False, verbose=0, iou_type="bbox", label_map=None):
    """COCO metrics of `model` on `dataset`, by pycocotools.

    Args:
        model: a `RetinaNet` (anything with `predict_on_batch` returning `boxes`, `scores`, `labels`,
            `num_detections`, and `bounding_box_format`, `num_classes` attributes).
        dataset: batches of `(images, {"boxes", "labels"})`, optionally with `"image_size"` and `"scale"` (see
            `collect_detections`).
        class_names: sequence of str or None, for the per-class keys.
        per_class: bool. Add `"AP/<class>"` and `"AP50/<class>"`.
        verbose: int. 1 shows a progress bar over batches.
        iou_type: `"bbox"` (default), `"segm"` (mask AP of a `MaskRCNN` on data with `"masks"`), or
            `("bbox", "segm")`: both, the mask numbers under `"mask_AP"`, `"mask_AP50"`, ...
        label_map: None (the model's labels are the dataset's), or an int array from each model label to the
            dataset's label, -1 for classes the dataset lacks (`label_map_by_names`); `class_names` are then the
            dataset's.

    Returns:
        dict of `coco_metrics`.
    """
    iou_types = (iou_type,) if isinstance(iou_type, str) else tuple(iou_type)
    if not iou_types or any(kind not in IOU_TYPES for kind in iou_types):
        raise ValueError(f"Received iou_type={iou_type!r}; expected 'bbox', 'segm' or both.")
    ground_truth, detections = collect_detections(model, dataset, verbose, with_masks="segm" in iou_types)
    if not ground_truth:
        raise ValueError("The evaluation dataset is empty.")
    num_classes = model.num_classes
    if label_map is not None:
        label_map = np.asarray(label_map, np.int64)
        detections = remap_detections(detections, label_map)
        num_classes = len(class_names) if class_names is not None else int(label_map.max()) + 1
    metrics = {}
    for kind in iou_types:
        found = coco_metrics(ground_truth, detections, num_classes, class_names, per_class, kind)
        prefix = "mask_" if kind == "segm" and len(iou_types) > 1 else ""
        metrics.update({prefix + key: value for key, value in found.items()})
    return metrics


def _proposal_key(count):
    return f"AR{count // 1000}k" if count >= 1000 and count % 1000 == 0 else f"AR{count}"


def proposal_recall(ground_truth, proposals, max_proposals=(100, 1000)):
    """Class-agnostic average recall of region proposals, by pycocotools (the FPN paper's Table 1 metric).

    Args:
        ground_truth: list over images of `(height, width, boxes [M, 4] pixel xyxy, ...)` (labels are ignored).
        proposals: list over images of `(boxes [P, 4] pixel xyxy, scores [P])`, any order.
        max_proposals: the proposal counts to measure recall at (COCOeval's `maxDets`).

    Returns:
        dict: `AR100`, `AR1k`, ... (recall averaged over IoU 0.5:0.95 with at most that many proposals per image),
        and `AR1k_small`, `AR1k_medium`, `AR1k_large` for the largest count (-1 where there are no such objects).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(ground_truth, proposals)):
        images.append({"id": image_id, "height": int(truth[0]), "width": int(truth[1])})
        for box in _xyxy_to_xywh(truth[2]):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 0,
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score in zip(_xyxy_to_xywh(found[0]), np.asarray(found[1]).reshape(-1)):
            results.append({"image_id": image_id, "category_id": 0, "bbox": box.tolist(), "score": float(score)})
    counts = sorted(int(count) for count in max_proposals)
    keys = [_proposal_key(count) for count in counts]
    if not results or not annotations:
        metrics = {key: 0.0 for key in keys}
        metrics.update({f"{keys[-1]}_{size}": -1.0 for size in ("small", "medium", "large")})
        return metrics
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 0, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.params.useCats = 0
        evaluation.params.maxDets = counts
        evaluation.evaluate()
        evaluation.accumulate()
    recall = evaluation.eval["recall"]  # [iou thresholds, categories, area ranges (all, s, m, l), max dets]

    def mean(values):
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    metrics = {key: mean(recall[:, :, 0, index]) for index, key in enumerate(keys)}
    for area, size in ((1, "small"), (2, "medium"), (3, "large")):
        metrics[f"{keys[-1]}_{size}"] = mean(recall[:, :, area, -1])
    return metrics


def evaluate_proposals(model, dataset, max_proposals=(100, 1000)):
    """Average recall of a two-stage detector's RPN proposals (`model.propose`) on `dataset` (batches as for
    `evaluate_coco`; with `"image_size"` and `"scale"`, boxes are compared in the original images).

    Returns:
        dict of `proposal_recall`.
    """
    ground_truth, proposals = [], []
    for images, targets in dataset:
        boxes, scores, valid = (np.asarray(value) for value in model.propose(images, max(max_proposals)))
        gt_boxes, gt_labels = np.asarray(targets["boxes"], np.float64), np.asarray(targets["labels"])
        sizes = np.asarray(targets["image_size"]) if "image_size" in targets else None
        scales = np.asarray(targets["scale"]) if "scale" in targets else None
        for i in range(len(gt_labels)):
            image_gt, image_boxes = gt_boxes[i][gt_labels[i] >= 0], boxes[i][valid[i]]
            size = (int(images.shape[1]), int(images.shape[2]))
            if sizes is not None and scales is not None:
                size = tuple(int(v) for v in sizes[i])
                image_gt = to_original(image_gt, scales[i], size)
                image_boxes = to_original(image_boxes, scales[i], size)
            ground_truth.append((*size, image_gt))
            proposals.append((image_boxes, scores[i][valid[i]]))
    if not ground_truth:
        raise ValueError("The evaluation dataset is empty.")
    return proposal_recall(ground_truth, proposals, max_proposals)
