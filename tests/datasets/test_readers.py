"""Every reader on real files: the raccoon photographs as VOC XML, CSV, a COCO JSON written here, and TFDS."""

import json
import os
import re
import socket

import numpy as np
import pytest
import tensorflow as tf

from keras_fpn.datasets import load_coco_json, load_csv, load_tfds, load_voc
from tests.testing import csv_boxes, csv_rows, write_coco_json


def targets_of(data):
    """[(image shape, boxes, labels)] of a reader's dataset."""
    return [(tuple(image.shape), targets["boxes"].numpy(), targets["labels"].numpy())
            for image, targets in data.dataset]


def test_voc_reads_raccoon_as_written(raccoon):
    data = load_voc(raccoon)
    assert data.class_names == ("raccoon",) and data.num_images == 200
    image, targets = next(iter(data.dataset.take(1)))  # raccoon-1.xml: 650x417, one box 81,88,522,408
    assert image.dtype == tf.uint8 and tuple(image.shape) == (417, 650, 3)
    np.testing.assert_array_equal(targets["boxes"].numpy(), [[81, 88, 522, 408]])
    np.testing.assert_array_equal(targets["labels"].numpy(), [0])


def test_voc_split_and_csv_give_the_same_elements(raccoon):
    rows = csv_rows(os.path.join(raccoon, "data", "test_labels.csv"))
    filenames = list(dict.fromkeys(row["filename"] for row in rows))
    voc = targets_of(load_voc(raccoon, split=filenames))
    from_csv = targets_of(load_csv(os.path.join(raccoon, "data", "test_labels.csv"),
                                   image_dir=os.path.join(raccoon, "images")))
    expected = csv_boxes(rows)
    assert len(voc) == len(from_csv) == len(filenames) == 40
    for name, (shape, boxes, labels), (csv_shape, boxes_csv, labels_csv) in zip(filenames, voc, from_csv):
        size = next(row for row in rows if row["filename"] == name)
        assert shape == csv_shape == (int(size["height"]), int(size["width"]), 3), name
        np.testing.assert_array_equal(boxes, expected[name])
        np.testing.assert_array_equal(boxes_csv, expected[name])
        np.testing.assert_array_equal(labels, labels_csv)


def test_coco_json_reads_converted_raccoon(raccoon, tmp_path):
    rows = csv_rows(os.path.join(raccoon, "data", "test_labels.csv"))
    path = write_coco_json(tmp_path / "instances.json", rows)
    data = load_coco_json(str(path), os.path.join(raccoon, "images"))
    assert data.class_names == ("raccoon",) and data.num_images == 41
    elements = targets_of(data)
    expected = csv_boxes(rows)
    for name, (_, boxes, labels) in zip(expected, elements):
        np.testing.assert_allclose(boxes, expected[name], atol=1e-4)  # the crowd box is left out
        np.testing.assert_array_equal(labels, np.zeros(len(boxes)))
    assert elements[-1][1].shape == (0, 4) and elements[-1][2].shape == (0,)  # the image with no objects


def test_coco_json_errors(raccoon, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_coco_json(str(tmp_path / "missing.json"), raccoon)
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        load_coco_json(str(tmp_path / "bad.json"), raccoon)


def test_csv_errors(raccoon, tmp_path):
    (tmp_path / "few.csv").write_text("filename,class,xmin\nraccoon-1.jpg,raccoon,1\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['width', 'height', 'ymin', 'xmax', 'ymax'\]"):
        load_csv(str(tmp_path / "few.csv"))
    with pytest.raises(FileNotFoundError, match="image files do not exist"):
        load_csv(os.path.join(raccoon, "data", "test_labels.csv"))  # images are not beside the CSV
    with pytest.raises(ValueError, match=r"classes \['raccoon'\] that are not in class_names"):
        load_csv(os.path.join(raccoon, "data", "test_labels.csv"), os.path.join(raccoon, "images"), ["dog"])


GOOD_ROW = "raccoon-1.jpg,650,417,raccoon,81,88,522,408"

# (malformed data row, what the error must say about its line). Each is written as line 3 of a CSV whose line 2 is
# GOOD_ROW; the message must start with the file and that line.
MALFORMED_CSV_ROWS = [
    ("img2.jpg,128,128", r"line 3: 3 fields \(img2.jpg,128,128\); expected 8, one per header column"),
    (GOOD_ROW + ",extra", r"line 3: 9 fields .*; expected 8"),
    (",650,417,raccoon,81,88,522,408", r"line 3: filename is empty; expected an image file name"),
    ("raccoon-1.jpg,128px,417,raccoon,81,88,522,408", r"line 3: width is '128px', not a number; expected a whole number"),
    ("raccoon-1.jpg,650,-5,raccoon,81,88,522,408", r"line 3: height is '-5'; expected a whole number of pixels greater"),
    ("raccoon-1.jpg,650.5,417,raccoon,81,88,522,408", r"line 3: width is '650.5'; expected a whole number"),
    ("raccoon-1.jpg,650,417,raccoon,,88,522,408", r"line 3: xmin is empty; expected a number"),
    ("raccoon-1.jpg,650,417,raccoon,81,abc,522,408", r"line 3: ymin is 'abc', not a number; expected a number"),
    ("raccoon-1.jpg,650,417,raccoon,81,88,nan,408", r"line 3: xmax is 'nan'; expected a number"),
]


@pytest.mark.parametrize("row, message", MALFORMED_CSV_ROWS)
def test_csv_malformed_rows_name_file_line_and_expectation(raccoon, tmp_path, row, message):
    path = tmp_path / "labels.csv"
    path.write_text(f"filename,width,height,class,xmin,ymin,xmax,ymax\n{GOOD_ROW}\n{row}\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}, {message}") as error:
        load_csv(str(path), image_dir=os.path.join(raccoon, "images"))
    assert "Traceback" not in str(error.value)


def test_csv_reports_every_malformed_row_at_once_and_skips_blank_lines(raccoon, tmp_path):
    path = tmp_path / "labels.csv"
    rows = [GOOD_ROW, "", "   ", GOOD_ROW] + [row for row, _ in MALFORMED_CSV_ROWS]
    path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError) as error:
        load_csv(str(path), image_dir=os.path.join(raccoon, "images"))
    text = str(error.value)
    assert text.startswith(f"{path}, line 6: 3 fields"), text  # blank lines 3 and 4 are not errors
    assert f"({len(MALFORMED_CSV_ROWS) - 1} more malformed record(s) below)" in text.splitlines()[0]
    assert [f"line {6 + index}" in text for index in range(len(MALFORMED_CSV_ROWS))] == [True] * len(
        MALFORMED_CSV_ROWS)
    path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n\n" + GOOD_ROW + "\n\n  \n")
    [(_, boxes, _)] = targets_of(load_csv(str(path), image_dir=os.path.join(raccoon, "images")))
    np.testing.assert_array_equal(boxes, [[81, 88, 522, 408]])


def test_cli_reports_a_malformed_csv_as_a_usage_error(raccoon, tmp_path, capsys):
    from keras_fpn import cli

    path = tmp_path / "labels.csv"
    path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\nimg2.jpg,128,128\n")
    code = cli.main(["train", "--model", "retinanet_mobilenetv3small_shapes", "--dataset", f"csv:{path}"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith(f"keras-fpn: error: {path}, line 2: 3 fields"), error


def voc_copy(raccoon, tmp_path, xml_text, stem="raccoon-1"):
    """A one-image VOC folder (`JPEGImages/`, `Annotations/`) linking a raccoon photograph."""
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    os.symlink(os.path.join(raccoon, "images", f"{stem}.jpg"), tmp_path / "JPEGImages" / f"{stem}.jpg")
    (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml_text)
    return str(tmp_path)


def voc_xml(objects, width=650, height=417):
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, difficult, (x1, y1, x2, y2) in objects
    )
    return f"<annotation><filename>raccoon-1.jpg</filename><size><width>{width}</width><height>{height}</height>" \
           f"<depth>3</depth></size>{body}</annotation>"


def test_voc_clips_and_drops_degenerate_boxes_and_skips_difficult(raccoon, tmp_path, caplog):
    objects = [("raccoon", 0, (81, 88, 700, 408)),  # past the right edge: clipped to 650
               ("raccoon", 0, (100, 50, 100, 90)),  # no width: dropped, with a warning
               ("raccoon", 1, (10, 10, 50, 50))]  # difficult
    folder = voc_copy(raccoon, tmp_path, voc_xml(objects))
    [(_, boxes, _)] = targets_of(load_voc(folder))
    np.testing.assert_array_equal(boxes, [[81, 88, 650, 408], [10, 10, 50, 50]])
    assert "dropped a box with no area" in caplog.text
    [(_, boxes, _)] = targets_of(load_voc(folder, skip_difficult=True))
    np.testing.assert_array_equal(boxes, [[81, 88, 650, 408]])


def test_voc_errors(raccoon, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none of the folders \['JPEGImages', 'images'\]"):
        load_voc(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/train.txt does not exist"):
        load_voc(raccoon, split="train")
    with pytest.raises(FileNotFoundError, match="has no annotation file"):
        load_voc(raccoon, split=["raccoon-9999"])
    with pytest.raises(ValueError, match="not in class_names"):
        load_voc(raccoon, class_names=["cat"])


OBJECT = "<object><name>raccoon</name><bndbox><xmin>81</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax></bndbox></object>"
MALFORMED_VOC = [
    ("<annotation><object>", r"raccoon-1.xml: not valid XML \(.*\); expected a VOC <annotation> document"),
    ("<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
     "</annotation>", r"raccoon-1.xml: <object> 1 has no <name>; expected the class name"),
    (f"<annotation>{OBJECT}<object><name>raccoon</name></object></annotation>",
     r"raccoon-1.xml: <object> 2 has no <bndbox>; expected <bndbox> with xmin"),
    (f"<annotation>{OBJECT.replace('<xmin>81', '<xmin>8l')}</annotation>",
     r"raccoon-1.xml: <object> 1 <xmin> is '8l', not a number; expected a number"),
    (f"<annotation>{OBJECT.replace('<ymax>408</ymax>', '')}</annotation>",
     r"raccoon-1.xml: <object> 1 <ymax> is empty; expected a number"),
    (f"<annotation><size><width>wide</width><height>417</height></size>{OBJECT}</annotation>",
     r"raccoon-1.xml: <size><width> is 'wide', not a number; expected a whole number of pixels"),
]


@pytest.mark.parametrize("xml_text, message", MALFORMED_VOC)
def test_voc_malformed_files_name_the_file_and_expectation(raccoon, tmp_path, xml_text, message):
    folder = voc_copy(raccoon, tmp_path, xml_text)
    with pytest.raises(ValueError, match=f"^{re.escape(os.path.join(folder, 'Annotations'))}, {message}"):
        load_voc(folder)


COCO_IMAGE = {"id": 1, "file_name": "raccoon-1.jpg", "width": 650, "height": 417}
COCO_ANNOTATION = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [81, 88, 441, 320]}
MALFORMED_COCO = [
    ({"categories": [{"id": 1}]}, r"categories\[0\]: no 'name'; expected 'id' and 'name'"),
    ({"images": [{"id": 1}]}, r"images\[0\]: no 'file_name'; expected 'id' and 'file_name'"),
    ({"annotations": [{"id": 7, "image_id": 1, "category_id": 1}]},
     r"annotations\[0\] \(id 7\): no 'bbox'; expected 'image_id', 'category_id' and 'bbox'"),
    ({"annotations": [{**COCO_ANNOTATION, "category_id": 3}]},
     r"annotations\[0\] \(id 7\): category_id 3 is not in 'categories'; expected one of \[1\]"),
    ({"annotations": [{**COCO_ANNOTATION, "image_id": 99}]},
     r"annotations\[0\] \(id 7\): image_id 99 is not in 'images'; expected the id of an image"),
    ({"annotations": [{**COCO_ANNOTATION, "bbox": [1, 2, 3]}]},
     r"annotations\[0\] \(id 7\): bbox is \[1, 2, 3\]; expected \[x, y, width, height\] in pixels"),
    ({"annotations": [{**COCO_ANNOTATION, "bbox": [1, 2, "3", None]}]},
     r"annotations\[0\] \(id 7\): bbox\[3\] is empty; expected a number"),
    ({"annotations": ["not an object"]},
     r"annotations\[0\]: no fields \(it is str 'not an object'\); expected 'image_id'"),
]


@pytest.mark.parametrize("change, message", MALFORMED_COCO)
def test_coco_json_malformed_entries_name_the_entry_and_expectation(raccoon, tmp_path, change, message):
    data = {"images": [COCO_IMAGE], "annotations": [COCO_ANNOTATION],
            "categories": [{"id": 1, "name": "raccoon"}], **change}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}, {message}"):
        load_coco_json(str(path), os.path.join(raccoon, "images"))


def test_coco_json_that_is_not_json_names_line_and_column(raccoon, tmp_path):
    path = tmp_path / "instances.json"
    path.write_text('{"images": [],\n "annotations": [}')
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}, line 2 column 18: not valid JSON"):
        load_coco_json(str(path), raccoon)


def test_voc_image_sets_split(raccoon, tmp_path):
    folder = voc_copy(raccoon, tmp_path, voc_xml([("raccoon", 0, (81, 88, 522, 408))]))
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("raccoon-1\n")
    assert load_voc(folder, split="val").num_images == 1


# -- tensorflow-datasets ---------------------------------------------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")
RACCOON_FOR_TFDS = {}  # the builder below reads its folder from here: TFDS builders take no constructor data


class RaccoonDetection(tfds.core.GeneratorBasedBuilder):
    """The raccoon test split as a TFDS detection dataset, built locally from the photographs."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=["raccoon"]),
            }),
        }))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        folder = RACCOON_FOR_TFDS["folder"]
        rows = csv_rows(os.path.join(folder, "data", "test_labels.csv"))
        for name, boxes in csv_boxes(rows).items():
            row = next(row for row in rows if row["filename"] == name)
            width, height = float(row["width"]), float(row["height"])
            bboxes = [tfds.features.BBox(ymin=min(y1 / height, 1), xmin=min(x1 / width, 1),
                                         ymax=min(y2 / height, 1), xmax=min(x2 / width, 1))
                      for x1, y1, x2, y2 in boxes]
            yield name, {"image": os.path.join(folder, "images", name),
                         "objects": {"bbox": bboxes, "label": [0] * len(bboxes)}}


def test_tfds_reads_a_prepared_detection_dataset(raccoon, tmp_path):
    RACCOON_FOR_TFDS["folder"] = raccoon
    builder = RaccoonDetection(data_dir=str(tmp_path))
    builder.download_and_prepare()
    data = load_tfds("raccoon_detection", split="test", data_dir=str(tmp_path))
    assert data.class_names == ("raccoon",) and data.num_images == 40
    rows = csv_rows(os.path.join(raccoon, "data", "test_labels.csv"))
    expected = csv_boxes(rows)
    by_shape = {}
    for name, boxes in expected.items():
        row = next(row for row in rows if row["filename"] == name)
        by_shape.setdefault((int(row["height"]), int(row["width"]), 3, len(boxes)), []).append(boxes)
    for shape, boxes, labels in targets_of(data):  # TFDS orders examples by key hash: match on size and boxes
        candidates = by_shape[(*shape, len(boxes))]
        errors = [np.abs(np.minimum(c, [shape[1], shape[0]] * 2) - boxes).max() for c in candidates]
        assert min(errors) < 0.05, (shape, boxes)  # float32 relative coordinates, times the image size
        np.testing.assert_array_equal(labels, np.zeros(len(boxes)))


def test_tfds_fails_fast_when_not_prepared(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"'voc/2007' is not prepared .*tfds build voc/2007"):
        load_tfds("voc/2007", split="test", data_dir=str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    # Offline, TFDS itself would retry each download for minutes; the reader probes the hosts first.
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ConnectionError, match=r"Cannot download TFDS dataset 'coco/2017': no connection to"):
        load_tfds("coco/2017", split="validation", data_dir=str(tmp_path), download=True)


def test_tfds_rejects_non_detection_and_unknown_datasets(tmp_path):
    with pytest.raises(ValueError, match="'mnist' is not a detection dataset"):
        load_tfds("mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown TFDS dataset 'no_such_dataset'"):
        load_tfds("no_such_dataset", data_dir=str(tmp_path))


def test_coco_json_masks_from_polygons_and_rle_equal_pycocotools(raccoon, tmp_path):
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    # raccoon-1.jpg is 650 x 417: a polygon, an uncompressed RLE and a compressed RLE on it.
    height, width = 417, 650
    square = np.zeros((height, width), np.uint8)
    square[100:200, 300:420] = 1
    compressed = mask_api.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode("ascii")
    flat = square.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    uncompressed = {"size": [height, width], "counts": runs[:-1] if runs[-1] == 0 else runs}
    polygon = [[81.0, 88.0, 522.0, 88.0, 300.0, 408.0]]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [81, 88, 441, 320], "segmentation": polygon},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [300, 100, 120, 100], "segmentation": uncompressed},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [300, 100, 120, 100], "segmentation": compressed},
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "raccoon-1.jpg", "width": width,
                                            "height": height}],
                                "annotations": annotations, "categories": [{"id": 1, "name": "raccoon"}]}))
    data = load_coco_json(str(path), os.path.join(raccoon, "images"), with_masks=True)
    image, targets = next(iter(data.dataset))
    masks = targets["masks"].numpy()
    assert masks.shape == (3, height, width) and masks.dtype == np.uint8
    coco = COCO(str(path))
    for index, annotation in enumerate(coco.loadAnns([1, 2, 3])):
        np.testing.assert_array_equal(masks[index], coco.annToMask(annotation), err_msg=f"annotation {index + 1}")
    np.testing.assert_array_equal(masks[1], square)
    # Without masks asked for, the same file reads as boxes only; with masks, a missing segmentation is named.
    assert "masks" not in next(iter(load_coco_json(str(path), os.path.join(raccoon, "images")).dataset))[1]
    annotations[0].pop("segmentation")
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "raccoon-1.jpg", "width": width,
                                            "height": height}],
                                "annotations": annotations, "categories": [{"id": 1, "name": "raccoon"}]}))
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 1\): no 'segmentation'"):
        load_coco_json(str(path), os.path.join(raccoon, "images"), with_masks=True)


@pytest.mark.parametrize("segmentation, message", [
    ([[10.0, 10.0, 50.0, 60.0]], r"segmentation\[0\] has 4 numbers \(2 points\)"),
    ([[10.0, 10.0, 50.0, 60.0, 30.0]], r"segmentation\[0\] has 5 numbers"),
    ([["a", 1, 2, 3, 4, 5]], r"segmentation\[0\] is \['a', 1, 2, 3, 4, 5\], not a list of numbers"),
    ({"counts": [1, 2]}, r"segmentation is an RLE without 'counts' and a \[height, width\] 'size'"),
])
def test_coco_json_malformed_segmentations_are_named_at_read_time(raccoon, tmp_path, segmentation, message):
    # pycocotools itself fails on a 2-point polygon deep in its C code ("Argument 'bb' has incorrect type").
    data = {"images": [COCO_IMAGE], "annotations": [{**COCO_ANNOTATION, "segmentation": segmentation}],
            "categories": [{"id": 1, "name": "raccoon"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, annotations\[0\] \(id 7\): {message}"):
        load_coco_json(str(path), os.path.join(raccoon, "images"), with_masks=True)
    assert load_coco_json(str(path), os.path.join(raccoon, "images")).num_images == 1  # boxes only: fine
