"""One string names a dataset: `shapes`, `shapes:scales`, `tfds:NAME`, `voc:DIR`, `coco:JSON,DIR` or
`csv:FILE[,IMAGE_DIR]`."""

import os

FORMS = ("shapes", "shapes:scales", "tfds:NAME", "voc:DIR", "coco:JSON,IMAGE_DIR", "csv:FILE[,IMAGE_DIR]")
# Generated shapes: a training set and a held-out set from other seeds.
SHAPES = {"train": (2000, 1), "validation": (200, 2), "test": (200, 3)}


def _existing(spec, path, what):
    """`path`, or a FileNotFoundError naming the dataset `spec` and what `path` should have been."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Dataset {spec!r}: {what} {path!r} does not exist.")
    return path


def _limit(data, max_images):
    from keras_fpn.datasets.records import DetectionData

    if max_images is None or (data.num_images is not None and data.num_images <= max_images):
        return data
    return DetectionData(data.dataset.take(max_images), data.class_names,
                         max_images if data.num_images is None else min(max_images, data.num_images))


def load_dataset(spec, split="train", class_names=None, max_images=None, image_size=128, with_masks=False):
    """Reads the dataset named by `spec` with the matching `keras_fpn.datasets` reader.

    Args:
        spec: str, one of
            `shapes` (generated; `split` "train" 2000 images, "validation"/"test" 200 held-out ones),
            `shapes:scales` (the same splits of the scale study's shapes, `keras_fpn.datasets.shapes.SCALES`: 256x256,
            up to 12 objects of 8-160 px; `image_size` is ignored),
            `tfds:NAME` (`load_tfds(NAME, split)`, e.g. `tfds:coco/2017`, `tfds:voc/2007`),
            `voc:DIR` (`load_voc`: all annotated images, or the ImageSets list `split` when DIR has one),
            `coco:JSON,IMAGE_DIR` (`load_coco_json`),
            `csv:FILE[,IMAGE_DIR]` (`load_csv`; images beside FILE by default).
        split: str, the split of `tfds:`, `voc:` and `shapes`; ignored by `coco:` and `csv:`, whose files are splits.
        class_names: sequence or None: fixes the label order of `voc:` and `csv:` (pass the training set's names
            when reading its validation set).
        max_images: int or None, read at most this many images.
        image_size: int, the side of generated shapes images.
        with_masks: bool, default False. Also read instance masks (for `MaskRCNN`): `shapes` and `coco:` have them;
            the other readers do not.

    Returns:
        `DetectionData`.

    Raises:
        ValueError: `spec` has none of the forms above. FileNotFoundError: a named file or folder does not exist.
    """
    from keras_fpn.datasets.coco_json import load_coco_json
    from keras_fpn.datasets.csv_file import load_csv
    from keras_fpn.datasets.shapes import load_shapes
    from keras_fpn.datasets.tfds_reader import load_tfds
    from keras_fpn.datasets.voc import load_voc

    kind, _, rest = spec.partition(":")
    if with_masks and kind not in ("shapes", "coco"):
        raise ValueError(f"Received dataset {spec!r} for a model that trains on instance masks; 'shapes' and "
                         "'coco:JSON,IMAGE_DIR' (segmentation polygons or RLE) give masks, the TFDS, VOC and CSV "
                         "readers give boxes only.")

    if kind == "shapes" and rest in ("", "scales"):
        from keras_fpn.datasets.shapes import SCALES

        num_images, seed = SHAPES.get(split, SHAPES["train"])
        options = SCALES if rest else {"image_size": image_size}
        data = load_shapes(num_images if max_images is None else min(num_images, max_images), seed=seed,
                           with_masks=with_masks, **options)
    elif kind == "tfds" and rest:
        data = load_tfds(rest, split=split or "train")
    elif kind == "voc" and rest:
        directory = _existing(spec, rest, "folder")
        has_lists = os.path.isdir(os.path.join(directory, "ImageSets", "Main"))
        split = {"validation": "val"}.get(split, split)  # VOC's own name for it
        data = load_voc(directory, split=split if has_lists else None, class_names=class_names)
    elif kind == "coco" and rest.count(",") == 1:
        annotation_file, image_dir = rest.split(",")
        data = load_coco_json(_existing(spec, annotation_file, "annotation file"),
                              _existing(spec, image_dir, "image folder"),
                              with_masks=with_masks)
    elif kind == "csv" and rest and rest.count(",") <= 1:
        csv_file, _, image_dir = rest.partition(",")
        _existing(spec, csv_file, "file")
        data = load_csv(csv_file, _existing(spec, image_dir, "image folder") if image_dir else None, class_names)
    else:
        raise ValueError(f"Received dataset {spec!r}; expected one of {', '.join(FORMS)}.")
    return _limit(data, max_images)


SEGMENTATION_FORMS = ("shapes", "tfds:NAME", "voc:DIR", "coco:JSON,IMAGE_DIR")
# Generated segmentation shapes: as SHAPES, fewer images (a map per pixel is more to learn from than boxes).
SEGMENTATION_SHAPES = {"train": (1000, 1), "validation": (200, 2), "test": (200, 3)}


def load_segmentation_dataset(spec, split="train", max_images=None, image_size=(64, 64)):
    """Reads the semantic-segmentation dataset named by `spec` into memory, for `keras-fpn train / evaluate` of a
    segmentation record.

    Args:
        spec: `shapes` (generated, `keras_fpn.datasets.shapes.generate_segmentation_shapes`: "train" 1,000 images,
            "validation"/"test" 200 held-out ones), `tfds:NAME` (a dataset with a `segmentation_mask`), `voc:DIR`
            (PASCAL VOC: `JPEGImages/`, `SegmentationClass/`, the split's list in `ImageSets/Segmentation/`) or
            `coco:JSON,IMAGE_DIR` (instances painted into class maps).
        split: str, the split of `shapes`, `tfds:` and `voc:`.
        max_images: int or None. image_size: `(height, width)` every image and mask is resized to.

    Returns:
        `(images uint8 [N, H, W, 3], masks uint8 [N, H, W], class_names)`; without names in the data (TFDS, VOC
        folders of other label sets) the classes are named by index.
    """
    from keras_fpn.datasets import segmentation
    from keras_fpn.datasets.shapes import SEGMENTATION_CLASSES, generate_segmentation_shapes

    kind, _, rest = spec.partition(":")
    image_size = tuple(image_size)

    if kind == "shapes" and not rest:
        if image_size[0] != image_size[1]:
            raise ValueError(f"Generated shapes are square; received image size {image_size}.")
        num_images, seed = SEGMENTATION_SHAPES.get(split, SEGMENTATION_SHAPES["train"])
        images, masks = generate_segmentation_shapes(
            num_images if max_images is None else min(num_images, max_images), image_size[0], seed=seed)
        return images, masks, SEGMENTATION_CLASSES
    if kind == "tfds" and rest:
        images, masks = segmentation.load_tfds_segmentation(rest, split or "train", image_size=image_size,
                                                            max_images=max_images)
    elif kind == "voc" and rest:
        directory = _existing(spec, rest, "folder")
        voc_split = {"validation": "val"}.get(split, split)  # VOC's own name for it
        listing = os.path.join(directory, "ImageSets", "Segmentation", f"{voc_split}.txt")
        names = None
        if os.path.isfile(listing):
            with open(listing) as file:
                names = file.read().split()
        images, masks = segmentation.load_segmentation_folder(
            _existing(spec, os.path.join(directory, "JPEGImages"), "image folder"),
            _existing(spec, os.path.join(directory, "SegmentationClass"), "mask folder"), image_size,
            names[:max_images] if names and max_images else names)
    elif kind == "coco" and rest.count(",") == 1:
        annotation_file, image_dir = rest.split(",")
        return segmentation.load_coco_semantic(_existing(spec, annotation_file, "annotation file"),
                                               _existing(spec, image_dir, "image folder"), image_size, max_images)
    else:
        raise ValueError(f"Received dataset {spec!r} for a segmentation model; expected one of "
                         f"{', '.join(SEGMENTATION_FORMS)}.")
    if max_images is not None:
        images, masks = images[:max_images], masks[:max_images]
    labels = masks[masks != 255]
    return images, masks, tuple(str(k) for k in range(int(labels.max()) + 1 if labels.size else 1))
