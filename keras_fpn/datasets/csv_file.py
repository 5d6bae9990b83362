"""A CSV of boxes, one row per box: `filename,width,height,class,xmin,ymin,xmax,ymax`."""

import csv
import os

from keras_fpn.datasets.records import MalformedRecords, Record, clean_boxes, from_records, label_map

COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def load_csv(csv_file, image_dir=None, class_names=None):
    """Reads a CSV of boxes (the format of the common VOC-to-CSV converters and of the raccoon dataset).

    Rows of one `filename` make one image, in the order the file first names it. A row with an empty `class`
    stands for an image with no objects. Boxes are pixel corners, clipped to `width` x `height`; an empty
    `width`/`height` means the size is not known (no clipping). Blank lines are skipped. Malformed rows (too few
    or too many fields, an empty file name, sizes or corners that are not numbers) raise one `ValueError` naming
    the file, the line and what was expected, for every such row at once.

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
    problems = MalformedRecords(csv_file)
    with open(csv_file, newline="") as file:
        reader = csv.reader(file)
        header = [name.strip() for name in next(reader, [])]
        missing = [column for column in COLUMNS if column not in header]
        if missing:
            raise ValueError(f"{csv_file} lacks the columns {missing}; expected a header with {list(COLUMNS)}.")
        for fields in reader:
            where = f"line {reader.line_num}"
            if not any(field.strip() for field in fields):
                continue  # blank lines are skipped, as the csv module does
            if len(fields) != len(header):
                problems.add(where, f"{len(fields)} fields ({','.join(fields)})",
                             f"{len(header)}, one per header column ({','.join(header)})")
                continue
            row = {name: value.strip() for name, value in zip(header, fields)}
            if not row["filename"]:
                problems.add(where, "filename is empty", "an image file name")
                continue
            size = [_size(problems, where, column, row[column]) for column in ("width", "height")]
            entry = images.setdefault(row["filename"], {"size": size, "names": [], "boxes": []})
            if not row["class"]:
                continue  # an image with no objects
            box = [problems.number(where, key, row[key]) for key in ("xmin", "ymin", "xmax", "ymax")]
            if None not in box:
                entry["boxes"].append(box)
                entry["names"].append(row["class"])
    problems.raise_if_any()
    class_names, labels_of = label_map([name for entry in images.values() for name in entry["names"]],
                                       class_names, csv_file)
    records = []
    for filename, entry in images.items():
        width, height = (value or 0 for value in entry["size"])
        boxes, labels, _ = clean_boxes(entry["boxes"], [labels_of[name] for name in entry["names"]], width, height,
                                       f"{csv_file} {filename}")
        records.append(Record(os.path.join(image_dir, filename), boxes, labels))
    return from_records(records, class_names)


def _size(problems, where, column, text):
    """A width or height: a whole number of pixels > 0, or empty for "not known" (None)."""
    if not text:
        return None
    value = problems.number(where, column, text, "a whole number of pixels")
    if value is not None and (value <= 0 or value != int(value)):
        problems.add(where, f"{column} is {text!r}", "a whole number of pixels greater than 0")
        return None
    return None if value is None else int(value)
