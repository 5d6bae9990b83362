"""A COCO-format annotation JSON (`images`, `annotations`, `categories`) and its image folder."""

import json
import os

import numpy as np

from keras_fpn.datasets.records import Record, clean_boxes, from_records


def load_coco_json(annotation_file, image_dir, skip_crowd=True):
    """Reads a COCO-format detection dataset.

    COCO's `bbox` is `[x, y, width, height]` in pixels; it becomes pixel `xyxy`. Category ids (not necessarily
    contiguous: COCO's 80 classes use ids 1..90) become labels `0..K-1` in increasing id order. Images with no
    annotations are kept (they hold only negatives).

    Args:
        annotation_file: str, path of the JSON file.
        image_dir: str, the folder that `images[].file_name` is relative to.
        skip_crowd: bool, default True. Leave out `iscrowd` annotations (COCO training and evaluation ignore them).

    Returns:
        `DetectionData(dataset, class_names, num_images)`; `class_names[i]` is the name of the `i`-th category id.
    """
    if not os.path.exists(annotation_file):
        raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist.")
    with open(annotation_file) as file:
        data = json.load(file)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{annotation_file} is not a COCO detection file: it has no {key!r} list.")
    categories = sorted(data["categories"], key=lambda category: category["id"])
    label_of = {category["id"]: index for index, category in enumerate(categories)}
    by_image = {image["id"]: ([], []) for image in data["images"]}
    for annotation in data["annotations"]:
        if skip_crowd and annotation.get("iscrowd", 0):
            continue
        if annotation["category_id"] not in label_of:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} has category_id "
                             f"{annotation['category_id']}, which is not in 'categories'.")
        x, y, width, height = annotation["bbox"]
        boxes, labels = by_image[annotation["image_id"]]
        boxes.append([x, y, x + width, y + height])
        labels.append(label_of[annotation["category_id"]])
    records = []
    for image in data["images"]:
        boxes, labels = by_image[image["id"]]
        boxes, labels, _ = clean_boxes(np.reshape(boxes, (-1, 4)), labels, image.get("width"), image.get("height"),
                                       f"{annotation_file} image {image['id']}")
        records.append(Record(os.path.join(image_dir, image["file_name"]), boxes, labels))
    return from_records(records, [category["name"] for category in categories])
