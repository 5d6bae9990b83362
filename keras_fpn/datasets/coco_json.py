"""A COCO-format annotation JSON (`images`, `annotations`, `categories`) and its image folder."""

import json
import os

import numpy as np

from keras_fpn.datasets.records import MalformedRecords, Record, clean_boxes, from_records


def load_coco_json(annotation_file, image_dir, skip_crowd=True, with_masks=False):
    """Reads a COCO-format detection dataset.

    COCO's `bbox` is `[x, y, width, height]` in pixels; it becomes pixel `xyxy`. Category ids (not necessarily
    contiguous: COCO's 80 classes use ids 1..90) become labels `0..K-1` in increasing id order. Images with no
    annotations are kept (they hold only negatives).

    Args:
        annotation_file: str, path of the JSON file.
        image_dir: str, the folder that `images[].file_name` is relative to.
        skip_crowd: bool, default True. Leave out `iscrowd` annotations (COCO training and evaluation ignore them).
        with_masks: bool, default False. Also give each box's instance mask (`"masks"` uint8 `[num_boxes, H, W]`),
            decoded from its `segmentation` (polygons or RLE, by pycocotools) when the image is read; an annotation
            without one is named in the error.

    Raises:
        ValueError: for a file that is not JSON or lacks the three lists, and for malformed entries (missing keys,
            unknown `category_id` or `image_id`, a `bbox` that is not four numbers), all of them in one message
            naming each entry (`annotations[12] (id 34)`) and what was expected.

    Returns:
        `DetectionData(dataset, class_names, num_images)`; `class_names[i]` is the name of the `i`-th category id.
    """
    if not os.path.exists(annotation_file):
        raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist.")
    with open(annotation_file) as file:
        try:
            data = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{annotation_file}, line {error.lineno} column {error.colno}: not valid JSON "
                             f"({error.msg}); expected a COCO detection file.") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{annotation_file} is not a COCO detection file: it has no {key!r} list.")
    problems = MalformedRecords(annotation_file)
    categories = []
    for index, category in enumerate(data["categories"]):
        missing = _missing(category, ("id", "name"))
        if missing:
            problems.add(f"categories[{index}]", f"no {missing}", "'id' and 'name'")
        else:
            categories.append(category)
    categories = sorted(categories, key=lambda category: category["id"])
    label_of = {category["id"]: index for index, category in enumerate(categories)}
    images = []
    for index, image in enumerate(data["images"]):
        missing = _missing(image, ("id", "file_name"))
        if missing:
            problems.add(f"images[{index}]", f"no {missing}", "'id' and 'file_name'")
        else:
            images.append(image)
    by_image = {image["id"]: ([], [], []) for image in images}
    for index, annotation in enumerate(data["annotations"]):
        where = f"annotations[{index}] (id {annotation.get('id')})" if isinstance(annotation, dict) else (
            f"annotations[{index}]")
        missing = _missing(annotation, ("image_id", "category_id", "bbox"))
        if missing:
            problems.add(where, f"no {missing}", "'image_id', 'category_id' and 'bbox'")
            continue
        if skip_crowd and annotation.get("iscrowd", 0):
            continue
        if annotation["category_id"] not in label_of:
            problems.add(where, f"category_id {annotation['category_id']!r} is not in 'categories'",
                         f"one of {sorted(label_of)}")
            continue
        if annotation["image_id"] not in by_image:
            problems.add(where, f"image_id {annotation['image_id']!r} is not in 'images'", "the id of an image")
            continue
        bbox = annotation["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            problems.add(where, f"bbox is {bbox!r}", "[x, y, width, height] in pixels")
            continue
        bbox = [problems.number(where, f"bbox[{position}]", value) for position, value in enumerate(bbox)]
        if None in bbox:
            continue
        if with_masks and not annotation.get("segmentation"):
            problems.add(where, "no 'segmentation'", "polygons or RLE, since masks were asked for")
            continue
        if with_masks:
            problem = _segmentation_problem(annotation["segmentation"])
            if problem:
                problems.add(where, problem, "polygons [[x1, y1, x2, y2, x3, y3, ...], ...] of at least 3 points, "
                                             "or RLE {'size': [height, width], 'counts': ...}")
                continue
        x, y, width, height = bbox
        boxes, labels, segmentations = by_image[annotation["image_id"]]
        boxes.append([x, y, x + width, y + height])
        labels.append(label_of[annotation["category_id"]])
        segmentations.append(annotation.get("segmentation"))
    problems.raise_if_any()
    records = []
    for image in images:
        boxes, labels, segmentations = by_image[image["id"]]
        boxes, labels, _, keep = clean_boxes(np.reshape(boxes, (-1, 4)), labels, image.get("width"),
                                             image.get("height"), f"{annotation_file} image {image['id']}",
                                             return_keep=True)
        masks = [segmentation for segmentation, kept in zip(segmentations, keep) if kept] if with_masks else None
        records.append(Record(os.path.join(image_dir, image["file_name"]), boxes, labels, masks))
    return from_records(records, [category["name"] for category in categories])


def _segmentation_problem(segmentation):
    """What is wrong with a COCO `segmentation`, as text, or None: pycocotools fails on these deep inside its C
    code (a 2-point polygon is read as a box: "Argument 'bb' has incorrect type")."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if "counts" not in segmentation or not (isinstance(size, (list, tuple)) and len(size) == 2):
            return f"segmentation is an RLE without 'counts' and a [height, width] 'size' ({segmentation!r:.60})"
        return None
    if not isinstance(segmentation, (list, tuple)):
        return f"segmentation is {type(segmentation).__name__} {segmentation!r:.40}"
    for number, polygon in enumerate(segmentation):
        if not isinstance(polygon, (list, tuple)) or not all(
                isinstance(value, (int, float)) and not isinstance(value, bool) for value in polygon):
            return f"segmentation[{number}] is {polygon!r:.40}, not a list of numbers"
        if len(polygon) % 2 or len(polygon) < 6:
            return (f"segmentation[{number}] has {len(polygon)} numbers ({len(polygon) / 2:g} points): "
                    f"{polygon!r:.60}")
    return None


def _missing(item, keys):
    """The keys `item` lacks, as text ("'bbox'", "'id', 'name'"), or "" when it has them all."""
    if not isinstance(item, dict):
        return f"fields (it is {type(item).__name__} {item!r:.40})"
    return ", ".join(repr(key) for key in keys if key not in item)
