"""`tensorflow-datasets` detection datasets: `coco/2017`, `voc/2007`, `voc/2012`, or any dataset with an
`objects/bbox` + `objects/label` feature."""

import socket
import urllib.parse

from keras_fpn.datasets.records import DetectionData


def _unreachable_hosts(builder, timeout):
    """Download hosts of `builder` (from TFDS's checksum files) that cannot be reached within `timeout` seconds."""
    hosts = sorted({urllib.parse.urlparse(url).hostname for url in (builder.url_infos or {})} - {None})
    unreachable = []
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError:
            unreachable.append(host)
    return unreachable


def prepared_builder(name, data_dir=None, download=False, connect_timeout=5.0, is_wanted=None, wanted=""):
    """The TFDS builder of `name`, prepared: named errors for an unknown dataset, one whose features `is_wanted`
    rejects (`wanted` says what was expected), and one not prepared in `data_dir` (see `load_tfds`)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"Unknown TFDS dataset {name!r}: {str(error).splitlines()[0]}") from None
    features = builder.info.features
    if is_wanted is not None and not is_wanted(features):
        raise ValueError(f"TFDS dataset {name!r} is not {wanted}; it has {sorted(features.keys())}.")
    if not builder.is_prepared():
        where = builder.data_dir
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {where}. Prepare it where there is a network connection "
                f"(`tfds build {name} --data_dir DIR`, or download=True) and pass that data_dir."
            )
        unreachable = _unreachable_hosts(builder, connect_timeout)
        if unreachable:
            raise ConnectionError(
                f"Cannot download TFDS dataset {name!r}: no connection to {unreachable} within {connect_timeout}s. "
                f"Prepare it on a machine with a network connection (`tfds build {name} --data_dir DIR`) and copy "
                "DIR here."
            )
        builder.download_and_prepare()
    return builder


def load_tfds(name, split="train", data_dir=None, download=False, skip_crowd=True, shuffle_files=False,
              connect_timeout=5.0):
    """Reads a detection dataset from `tensorflow-datasets` as `(image, {"boxes", "labels"})`.

    TFDS boxes (`tfds.features.BBoxFeature`: relative `ymin, xmin, ymax, xmax`) become pixel `xyxy`; labels are the
    dataset's own class indices, `class_names` its `objects/label` names.

    Without a network connection TFDS retries each download for minutes. Here, when the data is not already
    prepared in `data_dir`: with `download=False` (default) a `FileNotFoundError` says how to prepare it; with
    `download=True` the dataset's download hosts are probed first (`connect_timeout` seconds each) and a
    `ConnectionError` names those that cannot be reached.

    Args:
        name: str, a TFDS name such as `"coco/2017"`, `"voc/2007"`, `"voc/2012"`.
        split: str, a TFDS split (`"train"`, `"validation"`, `"test"`, `"train[:10%]"`...).
        data_dir: str or None, TFDS's data folder (default `~/tensorflow_datasets`).
        download: bool, default False. Download and prepare the data when it is not in `data_dir`.
        skip_crowd: bool, default True. Leave out `objects/is_crowd` boxes where the dataset has them (COCO).
        shuffle_files: bool, passed to TFDS.
        connect_timeout: float, seconds to wait for each download host.

    Returns:
        `DetectionData(dataset, class_names, num_images)`.
    """
    import tensorflow as tf

    def is_detection(features):
        return "objects" in features and "bbox" in features["objects"] and "label" in features["objects"]

    builder = prepared_builder(name, data_dir, download, connect_timeout, is_detection,
                               "a detection dataset: expected features 'objects/bbox' and 'objects/label'")
    objects = builder.info.features["objects"]
    dataset = builder.as_dataset(split=split, shuffle_files=shuffle_files)
    has_crowd = "is_crowd" in objects

    def convert(example):
        image = example["image"]
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(example["objects"]["bbox"], (-1, 4)), axis=-1)
        boxes = tf.stack([xmin * size[1], ymin * size[0], xmax * size[1], ymax * size[0]], axis=-1)
        labels = tf.cast(example["objects"]["label"], tf.int32)
        if skip_crowd and has_crowd:
            keep = tf.logical_not(example["objects"]["is_crowd"])
            boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)
        return image, {"boxes": boxes, "labels": labels}

    try:
        num_images = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        num_images = None
    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return DetectionData(dataset, tuple(objects["label"].names), num_images)
