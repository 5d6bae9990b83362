"""Detection and segmentation on image files: read, resize (and pad) as in training, predict, map boxes or class
maps back to each image."""

import os
import sys

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def image_paths(paths):
    """`paths` with each folder replaced by its image files (by extension, sorted; not recursive).

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no image file.
    """
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"Image files not found: {missing}.")
    found = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))
            if not inside:
                raise FileNotFoundError(f"{path} is a folder without image files ({', '.join(IMAGE_EXTENSIONS)}).")
            found.extend(inside)
        else:
            found.append(path)
    return found


def read_images(paths):
    """`[(path, image uint8 tensor [H, W, 3])]` of the image files in `paths` (folders expanded by `image_paths`); a
    file that is not an image is skipped with a one-line warning on stderr."""
    import tensorflow as tf

    from keras_fpn.datasets.records import decode_image

    readable = []
    for path in image_paths(paths):
        try:
            readable.append((path, decode_image(tf.io.read_file(path))))
        except tf.errors.InvalidArgumentError:
            print(f"warning: skipped {path}: not an image TensorFlow can decode (JPEG, PNG, BMP, GIF)",
                  file=sys.stderr)
    return readable


def _detect_at_own_size(model, path, image):
    """One image through a model that resizes its input itself (`resize_min_size`, the converted torchvision
    models): given at its own size, boxes come back in its pixels."""
    from keras.utils import bounding_boxes

    image = image.numpy()
    predictions = model.predict_on_batch(image[None])
    count = int(predictions["num_detections"][0])
    boxes = np.asarray(bounding_boxes.convert_format(np.asarray(predictions["boxes"], np.float32),
                                                     model.bounding_box_format, "xyxy", height=image.shape[0],
                                                     width=image.shape[1]))
    result = {"path": path, "image": image, "boxes": boxes[0, :count].astype(np.float32),
              "scores": np.asarray(predictions["scores"][0, :count], np.float32),
              "labels": np.asarray(predictions["labels"][0, :count], np.int32)}
    if "masks" in predictions:
        result["masks"] = np.asarray(predictions["masks"][0, :count], np.float32)
    return result


def detect_files(model, paths, image_size, batch_size=8):
    """Runs `model` on image files (JPEG, PNG, BMP, GIF; any size, grayscale and RGBA too) and folders of them.

    Each image goes through the same `resize_and_pad` as the training pipeline (aspect ratio kept, padded to a
    multiple of the coarsest stride), or, for a model that resizes its input itself (`resize_min_size`: the
    converted torchvision models), is given to it one at a time at its own size; boxes are clipped to the image's own content before NMS (boxes in the padding
    are no detections) and mapped back to the file's own pixels. A file that is not an image is skipped with a
    one-line warning on stderr.

    Args:
        model: a keras_fpn detector (`RetinaNet`, `FasterRCNN`, `MaskRCNN`).
        paths: sequence of image file paths or folders.
        image_size: `(height, width)` the model was trained at.
        batch_size: int.

    Returns:
        A list, one dict per image read: `{"path", "image" uint8 [H, W, 3], "boxes" float32 [D, 4] pixel xyxy,
        "scores" [D], "labels" int32 [D]}`, plus `"masks"` `[D, S, S]` box-relative probabilities for a mask model
        (`keras_fpn.ops.paste_masks` with `"boxes"` pastes them into the image).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    import tensorflow as tf
    from keras.utils import bounding_boxes

    from keras_fpn.datasets.pipeline import resize_and_pad
    from keras_fpn.ops.boxes import content_sizes, to_original

    readable = read_images(paths)
    if getattr(model, "resize_min_size", None) is not None:
        return [_detect_at_own_size(model, path, image) for path, image in readable]
    results = []
    for start in range(0, len(readable), batch_size):
        images, inputs, scales = [], [], []
        for _, image in readable[start:start + batch_size]:
            resized, _, scale = resize_and_pad(image, tf.zeros((0, 4)), image_size, model.input_multiple)
            images.append(image.numpy())
            inputs.append(resized)
            scales.append(scale.numpy())
        batch = tf.stack(inputs)
        # Each image's resized content (the rest is padding): boxes are clipped to it, and boxes in the padding
        # never become detections.
        content = content_sizes(np.array([image.shape[:2] for image in images]), np.array(scales))
        predictions = model.predict_on_batch({"images": batch.numpy(), "image_sizes": content})
        height, width = int(batch.shape[1]), int(batch.shape[2])
        boxes = np.asarray(bounding_boxes.convert_format(
            np.asarray(predictions["boxes"], np.float32), model.bounding_box_format, "xyxy", height=height,
            width=width))
        for i, (image, scale) in enumerate(zip(images, scales)):
            count = int(predictions["num_detections"][i])
            result = {"path": readable[start + i][0], "image": image,
                      "boxes": to_original(boxes[i, :count], scale, image.shape[:2]).astype(np.float32),
                      "scores": np.asarray(predictions["scores"][i, :count], np.float32),
                      "labels": np.asarray(predictions["labels"][i, :count], np.int32)}
            if "masks" in predictions:  # box-relative: the same in the original image
                result["masks"] = np.asarray(predictions["masks"][i, :count], np.float32)
            results.append(result)
    return results


def segment_files(model, paths, image_size=None):
    """Runs a segmenter (`SemanticFPN`, `UNet`) on image files and folders of them, one image at a time.

    Args:
        model: a `keras_fpn.segmentation.Segmenter`.
        paths: sequence of image file paths or folders.
        image_size: `(height, width)` the model was trained at, or None. Each image is resized to it (bilinear) and
            its class map resized back (nearest neighbour); None runs each image at its own size.

    Returns:
        A list, one dict per image read: `{"path", "image" uint8 [H, W, 3], "class_map" int32 [H, W]}`.
    """
    import tensorflow as tf

    results = []
    for path, image in read_images(paths):
        height, width = int(image.shape[0]), int(image.shape[1])
        inputs = tf.cast(image, tf.float32)
        if image_size is not None:
            inputs = tf.image.resize(inputs, image_size, method="bilinear")
        class_map = model.predict_on_batch(inputs[None].numpy())[0]
        if image_size is not None:
            class_map = tf.image.resize(class_map[..., None], (height, width), method="nearest")[..., 0].numpy()
        results.append({"path": path, "image": image.numpy(), "class_map": np.asarray(class_map, np.int32)})
    return results
