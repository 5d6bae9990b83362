"""A PASCAL VOC folder: `JPEGImages/` (or `images/`) and `Annotations/` (or `annotations/`) of XML files."""

import os
import xml.etree.ElementTree as ElementTree

from keras_fpn.datasets.records import Record, clean_boxes, from_records, label_map

IMAGE_DIRS = ("JPEGImages", "images")
ANNOTATION_DIRS = ("Annotations", "annotations")


def _find_dir(directory, names):
    for name in names:
        if os.path.isdir(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise FileNotFoundError(f"{directory} is not a PASCAL VOC folder: it has none of the folders {list(names)}.")


def _split_ids(directory, split):
    if split is None:
        return None
    if isinstance(split, str):
        path = os.path.join(directory, "ImageSets", "Main", f"{split}.txt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"split={split!r}: {path} does not exist; pass a list of image ids instead.")
        with open(path) as file:
            return [line.split()[0] for line in file if line.strip()]
    return [os.path.splitext(os.path.basename(str(name)))[0] for name in split]


def _parse(path, image_dir, skip_difficult):
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{path} is not valid VOC XML: {error}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    filename = root.findtext("filename") or f"{stem}.jpg"
    if not os.path.exists(os.path.join(image_dir, filename)):
        filename = f"{stem}.jpg"  # some tools write a stale <filename>; the XML's own name is the VOC convention
    size = root.find("size")
    width = int(float(size.findtext("width"))) if size is not None else 0
    height = int(float(size.findtext("height"))) if size is not None else 0
    names, boxes = [], []
    for obj in root.iter("object"):
        if skip_difficult and obj.findtext("difficult", "0").strip() == "1":
            continue
        box = obj.find("bndbox")
        names.append(obj.findtext("name").strip())
        boxes.append([float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")])
    return os.path.join(image_dir, filename), names, boxes, width, height


def load_voc(directory, split=None, class_names=None, skip_difficult=False):
    """Reads a PASCAL VOC folder.

    Box corners are taken as written in `<bndbox>` (pixels), clipped to the image's `<size>`; boxes left with no
    area are dropped with a logged warning.

    Args:
        directory: str, the folder holding `JPEGImages/` or `images/`, and `Annotations/` or `annotations/`.
        split: None (every XML file, sorted), a split name read from `ImageSets/Main/<split>.txt`, or a list of
            image ids or file names (e.g. the filenames of a CSV split).
        class_names: sequence of str, or None for the sorted names found. Fixes label order across splits.
        skip_difficult: bool, default False. Leave out objects marked `<difficult>1</difficult>`.

    Returns:
        `DetectionData(dataset, class_names, num_images)`; see `keras_fpn.datasets.DetectionData`.
    """
    image_dir = _find_dir(directory, IMAGE_DIRS)
    annotation_dir = _find_dir(directory, ANNOTATION_DIRS)
    ids = _split_ids(directory, split)
    if ids is None:
        ids = sorted(os.path.splitext(name)[0] for name in os.listdir(annotation_dir) if name.endswith(".xml"))
    parsed = []
    for image_id in ids:
        path = os.path.join(annotation_dir, f"{image_id}.xml")
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image id {image_id!r} has no annotation file {path}.")
        parsed.append((path, *_parse(path, image_dir, skip_difficult)))
    class_names, labels_of = label_map([name for item in parsed for name in item[2]], class_names, directory)
    records = []
    for xml_path, image_path, names, boxes, width, height in parsed:
        boxes, labels, _ = clean_boxes(boxes, [labels_of[name] for name in names], width, height, xml_path)
        records.append(Record(image_path, boxes, labels))
    return from_records(records, class_names)
