"""A PASCAL VOC folder: `JPEGImages/` (or `images/`) and `Annotations/` (or `annotations/`) of XML files."""

import os
import xml.etree.ElementTree as ElementTree

from keras_fpn.datasets.records import MalformedRecords, Record, clean_boxes, from_records, label_map

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


def _parse(path, image_dir, skip_difficult, problems):
    """`(image path, names, boxes, width, height)` of one XML file, or None after recording what is wrong."""
    where = os.path.basename(path)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        problems.add(where, f"not valid XML ({error})", "a VOC <annotation> document")
        return None
    stem = os.path.splitext(where)[0]
    filename = (root.findtext("filename") or "").strip() or f"{stem}.jpg"
    if not os.path.exists(os.path.join(image_dir, filename)):
        filename = f"{stem}.jpg"  # some tools write a stale <filename>; the XML's own name is the VOC convention
    size = root.find("size")
    width = height = 0  # no <size>: not known, no clipping
    if size is not None:
        width, height = (problems.number(where, f"<size><{key}>", size.findtext(key), "a whole number of pixels")
                         for key in ("width", "height"))
    names, boxes = [], []
    for index, obj in enumerate(root.iter("object"), start=1):
        if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not name:
            problems.add(where, f"<object> {index} has no <name>", "the class name")
        if box is None:
            problems.add(where, f"<object> {index} has no <bndbox>", "<bndbox> with xmin, ymin, xmax, ymax")
            continue
        corners = [problems.number(where, f"<object> {index} <{key}>", box.findtext(key))
                   for key in ("xmin", "ymin", "xmax", "ymax")]
        if name and None not in corners:
            names.append(name)
            boxes.append(corners)
    return os.path.join(image_dir, filename), names, boxes, int(width or 0), int(height or 0)


def load_voc(directory, split=None, class_names=None, skip_difficult=False):
    """Reads a PASCAL VOC folder.

    Box corners are taken as written in `<bndbox>` (pixels), clipped to the image's `<size>`; boxes left with no
    area are dropped with a logged warning. Malformed files (bad XML, an object without `<name>` or `<bndbox>`,
    sizes or corners that are not numbers) raise one `ValueError` naming each file and what was expected.

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
    parsed, problems = [], MalformedRecords(annotation_dir)
    for image_id in ids:
        path = os.path.join(annotation_dir, f"{image_id}.xml")
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image id {image_id!r} has no annotation file {path}.")
        fields = _parse(path, image_dir, skip_difficult, problems)
        if fields is not None:
            parsed.append((path, *fields))
    problems.raise_if_any()
    class_names, labels_of = label_map([name for item in parsed for name in item[2]], class_names, directory)
    records = []
    for xml_path, image_path, names, boxes, width, height in parsed:
        boxes, labels, _ = clean_boxes(boxes, [labels_of[name] for name in names], width, height, xml_path)
        records.append(Record(image_path, boxes, labels))
    return from_records(records, class_names)
