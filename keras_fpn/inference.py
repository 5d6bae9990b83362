"""Detection on image files: read, resize and pad as in training, detect, map boxes back to each image."""

import numpy as np


def detect_files(model, paths, image_size, batch_size=8):
    """Runs `model` on image files (JPEG, PNG, BMP, GIF; any size, grayscale and RGBA too).

    Each image goes through the same `resize_and_pad` as the training pipeline (aspect ratio kept, padded to a
    multiple of the coarsest stride), and the detections are mapped back to the file's own pixels.

    Args:
        model: a keras_fpn detector (`RetinaNet`, `FasterRCNN`, `MaskRCNN`).
        paths: sequence of image file paths.
        image_size: `(height, width)` the model was trained at.
        batch_size: int.

    Returns:
        A list, one dict per file: `{"path", "image" uint8 [H, W, 3], "boxes" float32 [D, 4] pixel xyxy,
        "scores" [D], "labels" int32 [D]}`.

    Raises:
        FileNotFoundError: a path does not exist. ValueError: a file is not an image.
    """
    import os

    import tensorflow as tf
    from keras.utils import bounding_boxes

    from keras_fpn.datasets.pipeline import resize_and_pad
    from keras_fpn.datasets.records import decode_image
    from keras_fpn.ops.boxes import to_original

    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"Image files not found: {missing}.")
    stride = model.input_multiple
    results = []
    for start in range(0, len(paths), batch_size):
        images, inputs, scales = [], [], []
        for path in paths[start:start + batch_size]:
            try:
                image = decode_image(tf.io.read_file(path))
            except tf.errors.InvalidArgumentError as error:
                raise ValueError(f"{path} is not an image TensorFlow can decode ({error.message}).") from None
            resized, _, scale = resize_and_pad(image, tf.zeros((0, 4)), image_size, stride)
            images.append(image.numpy())
            inputs.append(resized)
            scales.append(scale.numpy())
        batch = tf.stack(inputs)
        predictions = model.predict_on_batch(batch)
        height, width = int(batch.shape[1]), int(batch.shape[2])
        boxes = np.asarray(bounding_boxes.convert_format(
            np.asarray(predictions["boxes"], np.float32), model.bounding_box_format, "xyxy", height=height,
            width=width))
        for i, (image, scale) in enumerate(zip(images, scales)):
            count = int(predictions["num_detections"][i])
            original = to_original(boxes[i, :count], scale, image.shape[:2]).astype(np.float32)
            results.append({"path": paths[start + i], "image": image, "boxes": original,
                            "scores": np.asarray(predictions["scores"][i, :count], np.float32),
                            "labels": np.asarray(predictions["labels"][i, :count], np.int32)})
    return results
