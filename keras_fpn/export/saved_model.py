"""A SavedModel for TF Serving whose signatures do the whole job: decode, resize and pad, detect, NMS, map back."""

import json
import os
import re

SERVING_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


# Written beside each version: what model it is, so a later export can tell whether it adds a version of the same
# model or would make TF Serving switch to another one.
DESCRIPTION_FILE = "keras_fpn_model.json"


def describe(model, class_names=None):
    """What identifies a served model to its clients: its class, its name and its output classes."""
    return {"class": type(model).__name__, "name": model.name, "num_classes": int(model.num_classes),
            "class_names": list(class_names) if class_names else None}


def _same_model(old, new):
    return all(old.get(key) == new.get(key) for key in ("class", "num_classes", "class_names"))


def _check_export_dir(export_dir, description, new_version):
    """Refuses to add a version beside other ones unless asked to, and beside another model ever."""
    versions = _versions(export_dir)
    if not versions:
        return
    latest = os.path.join(export_dir, str(versions[-1]), DESCRIPTION_FILE)
    old = None
    if os.path.isfile(latest):
        with open(latest) as file:
            old = json.load(file)
    there = ("a model keras_fpn did not describe" if old is None else
             f"{old['class']} {old['name']!r} ({old['num_classes']} classes"
             + (f": {', '.join(old['class_names'])})" if old.get("class_names") else ")"))
    if old is not None and not _same_model(old, description):
        raise FileExistsError(
            f"{export_dir} already holds version {versions[-1]} of {there}; this is {description['class']} "
            f"{description['name']!r} ({description['num_classes']} classes). TF Serving would switch to it with "
            "other classes: export it to another folder.")
    if not new_version:
        raise FileExistsError(
            f"{export_dir} already holds version {versions[-1]} of {there}; pass new_version=True "
            f"(keras-fpn export --new-version) to add version {versions[-1] + 1} of the same model, or export to "
            "another folder.")


def _versions(export_dir):
    """The version numbers in a TF Serving model folder, ascending."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(name) for name in os.listdir(export_dir) if re.fullmatch(r"\d+", name))


def _next_version(export_dir):
    return max(_versions(export_dir), default=0) + 1


def serving_module(model, image_size, pad_to_multiple=None, label_offset=1):
    """The `tf.Module` that `export_saved_model` saves; its tf.functions can also be called in process.

    It tracks the model's variables as plain `tf.Variable`s (each stored once) and no Keras object, so the
    SavedModel loads with TensorFlow alone. `label_offset` is added to the model's labels for `detection_classes`.
    """
    import tensorflow as tf
    from keras.utils import bounding_boxes

    from keras_fpn.datasets.pipeline import padded_size, resize_and_pad
    from keras_fpn.datasets.records import decode_image
    from keras_fpn.ops.boxes import content_sizes, to_original

    if model.resize_min_size is not None:
        return _self_resizing_module(model, label_offset)
    multiple = pad_to_multiple or model.input_multiple
    padded = padded_size(image_size, multiple)
    prepared_spec = (tf.TensorSpec([*padded, 3], tf.float32), tf.TensorSpec([2], tf.float32),
                     tf.TensorSpec([2], tf.int32))

    def prepare(image):
        resized, _, scale = resize_and_pad(image, tf.zeros([0, 4]), image_size, multiple)
        return resized, scale, tf.shape(image)[:2]

    mask_size = getattr(model, "mask_resolution", None)  # detectors with a mask head serve detection_masks

    def empty_result():
        result = {"detection_boxes": tf.zeros([0, model.max_detections, 4]),
                  "detection_scores": tf.zeros([0, model.max_detections]),
                  "detection_classes": tf.zeros([0, model.max_detections]),
                  "num_detections": tf.zeros([0])}
        if mask_size:
            result["detection_masks"] = tf.zeros([0, model.max_detections, mask_size, mask_size])
        return result

    def detect(images, scales, sizes):
        # An empty batch answers an empty result: convolutions of oneDNN's CPU kernels reject batch 0.
        return tf.cond(tf.shape(images)[0] > 0, lambda: run_detector(images, scales, sizes), empty_result)

    def run_detector(images, scales, sizes):
        # Boxes are clipped to each image's resized content (the rest is padding) before NMS.
        detections = model.detect(images, content_sizes(sizes, scales))
        boxes = bounding_boxes.convert_format(detections["boxes"], model.bounding_box_format, "xyxy",
                                              height=padded[0], width=padded[1])
        # Back to each original image (undo the resize, clip), then normalised to [ymin, xmin, ymax, xmax].
        boxes = to_original(boxes, scales[:, None, :], sizes[:, None, :])
        # Masks are box-relative, so not rescaled: the Object Detection API's and Model Garden's convention.
        return _normalized_outputs(detections, boxes, sizes[:, None, 0], sizes[:, None, 1], label_offset)

    def serve_encoded(images):
        def decode_and_prepare(encoded):
            return prepare(decode_image(encoded))

        return detect(*tf.map_fn(decode_and_prepare, images, fn_output_signature=prepared_spec))

    def serve_tensor(images):
        return detect(*tf.map_fn(prepare, images, fn_output_signature=prepared_spec))

    return _detector_module(model, serve_encoded, serve_tensor)


def _detector_module(model, serve_encoded, serve_tensor):
    """The `tf.Module` with the two signatures' functions: `serve_encoded(strings [batch])` and
    `serve_tensor(uint8 [batch, height, width, 3])`, the latter after a check of the channel count."""
    import tensorflow as tf

    class DetectorModule(tf.Module):
        def __init__(self):
            super().__init__(name="keras_fpn_detector")
            self.weights = [variable.value for variable in model.variables]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_encoded(self, images):
            return serve_encoded(images)

        # Any channel count is let in, so that a wrong one gets an error naming it rather than TensorFlow's
        # "Specified a list with shape [?,?,?,3] from a tensor with shape [...]".
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
        def serve_tensor(self, images):
            channels = tf.shape(images)[-1]
            message = tf.strings.format(
                "image_tensor: expected 3 channels (RGB), received {} (images of shape {}); convert grayscale or "
                "RGBA images to RGB first", (channels, tf.shape(images)), summarize=-1)
            check = tf.debugging.Assert(tf.equal(channels, 3), [message])
            with tf.control_dependencies([check]):
                images = tf.ensure_shape(tf.identity(images), [None, None, None, 3])
            return serve_tensor(images)

    return DetectorModule()


def _normalized_outputs(detections, boxes, height, width, label_offset):
    """The Object Detection API's outputs from `detections` and their `boxes` in pixel xyxy of the original
    images, whose `height` and `width` broadcast against `boxes[..., 0]`."""
    import tensorflow as tf

    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    valid = detections["labels"] >= 0
    normalized = tf.stack([boxes[..., 1] / height, boxes[..., 0] / width, boxes[..., 3] / height,
                           boxes[..., 2] / width], axis=-1)
    result = {
        "detection_boxes": tf.where(valid[..., None], normalized, 0.0),
        "detection_scores": tf.where(valid, detections["scores"], 0.0),
        "detection_classes": tf.cast(tf.where(valid, detections["labels"] + label_offset, 0), tf.float32),
        "num_detections": tf.cast(detections["num_detections"], tf.float32),
    }
    if "masks" in detections:
        result["detection_masks"] = tf.cast(detections["masks"], tf.float32)
    return result


def _self_resizing_module(model, label_offset):
    """The serving module of a model that resizes its input itself (`resize_min_size`: torchvision's rule, the
    converted torchvision models): each image goes through `predict`'s own path at its own size, one at a time
    (as torchvision runs a batch of one), so the served detections are `predict`'s."""
    import tensorflow as tf
    from keras.utils import bounding_boxes

    from keras_fpn.datasets.records import decode_image

    max_detections = model.max_detections
    mask_size = getattr(model, "mask_resolution", None)
    spec = {"detection_boxes": tf.TensorSpec([max_detections, 4], tf.float32),
            "detection_scores": tf.TensorSpec([max_detections], tf.float32),
            "detection_classes": tf.TensorSpec([max_detections], tf.float32),
            "num_detections": tf.TensorSpec([], tf.float32)}
    if mask_size:
        spec["detection_masks"] = tf.TensorSpec([max_detections, mask_size, mask_size], tf.float32)

    def detect_one(image):
        detections = model._detect_batch(image[None])
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        boxes = bounding_boxes.convert_format(detections["boxes"], model.bounding_box_format, "xyxy",
                                              height=height, width=width)
        result = _normalized_outputs(detections, boxes, height, width, label_offset)
        return {key: value[0] for key, value in result.items()}

    return _detector_module(
        model, lambda images: tf.map_fn(lambda encoded: detect_one(decode_image(encoded)), images,
                                        fn_output_signature=spec),
        lambda images: tf.map_fn(detect_one, images, fn_output_signature=spec))


def label_offset_for(class_names):
    """What `detection_classes` adds to a label: 1 (the Object Detection API's 1-based ids, label 0 is class 1),
    or 0 for a label layout that already keeps index 0 for the background (torchvision's COCO layout, where label
    `i` is COCO category id `i`)."""
    from keras_fpn.datasets.coco_categories import BACKGROUND

    return 0 if class_names and class_names[0] == BACKGROUND else 1


def export_saved_model(model, export_dir, version=None, image_size=None, pad_to_multiple=None, new_version=False,
                       class_names=None):
    """Exports a detector as a SavedModel that TF Serving serves without keras or keras_fpn installed.

    Writes TF Serving's layout, `<export_dir>/<version>/saved_model.pb` + `variables/`, with two signatures
    (tag `serve`) that run everything in the graph: decode (`serving_default` only), resize keeping the aspect
    ratio to fit `image_size` and pad to a multiple of the coarsest stride (as `keras_fpn.datasets.detection_pipeline`
    does), the model (whose backbone normalises its own input), box decoding and per-class NMS
    (the model's `detect`, the code `predict` runs), and boxes mapped back to each original image.

    Signatures, input `images`:
        `serving_default`: `string [batch]`, encoded JPEG, PNG, GIF or BMP of any size each (TF Serving's REST API
            takes them as `{"b64": "..."}`); grayscale and RGBA are decoded to RGB.
        `image_tensor`: `uint8 [batch, height, width, 3]`, any size (another channel count is answered with
            "expected 3 channels (RGB), received N").

    Outputs (the TensorFlow Object Detection API's names and conventions, so its clients work unchanged; a
    `MaskRCNN` adds `detection_masks`, `[batch, 100, 28, 28]` probabilities relative to each detection's box, which
    `keras_fpn.ops.paste_masks` or any Object Detection API client pastes into the image):
        `detection_boxes`: float32 `[batch, max_detections, 4]`, `[ymin, xmin, ymax, xmax]` relative to the
            original image (0..1).
        `detection_scores`: float32 `[batch, max_detections]`, sorted, 0 past `num_detections`.
        `detection_classes`: float32 `[batch, max_detections]`, **1-based** class ids: label `i` of the model is
            class `i + 1`; 0 past `num_detections`. When `class_names[0]` is `"__background__"` (torchvision's
            COCO layout, whose label `i` is already COCO category id `i`), label `i` is class `i`.

    A model that resizes its input itself (`resize_min_size`: the converted torchvision models) is served by
    `predict`'s own path instead: each image at its own size, resized by the model's rule, `image_size` unused.
        `num_detections`: float32 `[batch]`.

    Only the model's variables are saved, each once (a Keras-3 `model.export` stores each weight twice).

    Args:
        model: a `RetinaNet` or `FasterRCNN` (any `keras_fpn.detection.detector.Detector`; TensorFlow backend).
        export_dir: str, the base folder TF Serving watches (`--model_base_path`).
        version: int or None; default one more than the highest version already there (1 in a new folder).
        image_size: `(height, width)` or int, the size images are resized to fit; default the model's own input
            size when it is fixed. Use the size the model was trained at.
        pad_to_multiple: int, default the model's `input_multiple`.
        new_version: bool, default False. Add a version beside the ones already in `export_dir`. Only a version of
            the same model (class, number of classes, class names) is ever added: TF Serving serves the newest
            version, and a detector with other classes would silently replace the one clients expect. A
            `keras_fpn_model.json` beside each version records what it is.
        class_names: sequence of str or None, recorded in `keras_fpn_model.json`.

    Returns:
        str, the path of the written version folder.

    Raises:
        FileExistsError: `export_dir` holds another model, or versions already and `new_version` is False, or
            `version` exists.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"export_saved_model traces the model into a TensorFlow graph: run it under the TensorFlow backend "
            f"(KERAS_BACKEND=tensorflow; this process runs {keras.backend.backend()}). A model trained under "
            f"{keras.backend.backend()} and saved with model.save('model.keras') loads there unchanged."
        )
    if model.resize_min_size is not None and image_size is None:
        image_size = (model.resize_min_size, model.resize_max_size)  # unused: the model resizes by its own rule
    if image_size is None:
        image_size = tuple(model.backbone.image_shape[:2])
        if None in image_size:
            raise ValueError(
                f"The model takes images of any size (input shape {model.backbone.image_shape}); pass "
                "image_size=(height, width), the size it was trained at, for the serving signature to resize to."
            )
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = tuple(int(side) for side in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"Received image_size={image_size!r}; expected (height, width).")
    path, description = version_folder(model, export_dir, version, new_version, class_names)
    module = serving_module(model, image_size, pad_to_multiple, label_offset_for(class_names))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve_encoded,
                                                  "image_tensor": module.serve_tensor})
    write_description(path, description)
    return path


def version_folder(model, export_dir, version, new_version, class_names):
    """`(path, description)` of the version folder a SavedModel of `model` goes to in `export_dir`, after TF
    Serving's checks (`_check_export_dir`): the next version when `version` is None."""
    version_given = version is not None
    version = _next_version(export_dir) if version is None else int(version)
    path = os.path.join(export_dir, str(version))
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists; TF Serving versions are immutable, pick another version.")
    description = describe(model, class_names)
    _check_export_dir(export_dir, description, new_version or version_given)
    return path, description


def write_description(path, description):
    """Writes `keras_fpn_model.json` beside a saved version: what model it is."""
    with open(os.path.join(path, DESCRIPTION_FILE), "w") as file:
        json.dump(description, file, indent=2)
