"""Every reader on real files: the raccoon photographs as VOC XML, CSV, a COCO JSON written here, and TFDS."""

import json
import os
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
