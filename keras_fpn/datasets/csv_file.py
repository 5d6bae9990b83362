"""A CSV of boxes, one row per box: `filename,width,height,class,xmin,ymin,xmax,ymax`."""

import csv
import os

from keras_fpn.datasets.records import Record, clean_boxes, from_records, label_map

COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def load_csv(csv_file, image_dir=None, class_names=None):
    """Reads a CSV of boxes (the format of the common VOC-to-CSV converters and of the raccoon dataset).

    Rows of one `filename` make one image, in the order the file first names it. A row with an empty `class`
    stands for an image with no objects. Boxes are pixel corners, clipped to `width` x `height`.

    Args:
        csv_file: str, path of the CSV file, with a header naming at least the columns above (any order).
        image_dir: str or None, the folder `filename` is relative to; default the CSV's own folder.
        class_names: sequence of str, or None for the sorted names found.

    Returns:
        `DetectionData(dataset, class_names, num_images)`.
    """
    if not os.path.exists(csv_file):
        raise FileNotFoundError(f"CSV file {csv_file} does not exist.")
    image_dir = os.path.dirname(os.path.abspath(csv_file)) if image_dir is None else image_dir
    images = {}
    with open(csv_file, newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{csv_file} lacks the columns {missing}; expected a header with {list(COLUMNS)}.")
        for line, row in enumerate(reader, start=2):
            entry = images.setdefault(row["filename"], {"size": (row["width"], row["height"]), "names": [],
                                                        "boxes": []})
            if not row["class"].strip():
                continue
            try:
                entry["boxes"].append([float(row[key]) for key in ("xmin", "ymin", "xmax", "ymax")])
            except ValueError:
                raise ValueError(f"{csv_file}, line {line}: box corners must be numbers; received {row}.") from None
            entry["names"].append(row["class"].strip())
    class_names, labels_of = label_map([name for entry in images.values() for name in entry["names"]],
                                       class_names, csv_file)
    records = []
    for filename, entry in images.items():
        width, height = (int(float(value)) if value else 0 for value in entry["size"])
        boxes, labels, _ = clean_boxes(entry["boxes"], [labels_of[name] for name in entry["names"]], width, height,
                                       f"{csv_file} {filename}")
        records.append(Record(os.path.join(image_dir, filename), boxes, labels))
    return from_records(records, class_names)
