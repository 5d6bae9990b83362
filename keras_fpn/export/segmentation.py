"""A SavedModel for TF Serving of a semantic-segmentation model (`SemanticFPN`, `UNet`): encoded images in, each
image's class map at its original size out. TF Serving's layout and version checks are the detectors'
(`keras_fpn.export.saved_model`)."""

from keras_fpn.export.saved_model import version_folder, write_description

SEGMENTATION_OUTPUTS = ("class_map", "image_size")


def segmentation_serving_module(model, image_size=None):
    """The `tf.Module` `export_segmentation_saved_model` saves: `serve_encoded(strings [batch])`."""
    import tensorflow as tf

    module = tf.Module()
    module.model = model

    def decode(data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(images):
        sizes = tf.map_fn(lambda data: tf.shape(decode(data))[:2], images, fn_output_signature=tf.int32)
        max_height, max_width = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])

        def segment(index):
            image = decode(images[index])
            height, width = tf.shape(image)[0], tf.shape(image)[1]
            x = tf.cast(image, tf.float32)[None]
            if image_size is not None:
                x = tf.image.resize(x, image_size, method="bilinear")
            logits = model(x, training=False)
            if image_size is not None:  # the logits back at the original size, then the arg-max
                logits = tf.image.resize(logits, tf.stack([height, width]), method="bilinear")
            classes = tf.argmax(logits[0], axis=-1, output_type=tf.int32)
            return tf.pad(classes, [[0, max_height - height], [0, max_width - width]],
                          constant_values=model.ignore_label)

        maps = tf.map_fn(segment, tf.range(tf.shape(images)[0]), fn_output_signature=tf.int32)
        return {"class_map": maps, "image_size": sizes}

    module.serve_encoded = serve_encoded
    return module


def export_segmentation_saved_model(model, export_dir, version=None, image_size=None, new_version=False,
                                    class_names=None):
    """Exports a segmentation model as a SavedModel that TF Serving serves without keras or keras_fpn.

    Signature `serving_default`, input `images`: `string [batch]`, encoded JPEG, PNG, GIF or BMP of any size each.
    Outputs: `class_map` int32 `[batch, max height, max width]`, each image's class map at its own size, padded
    with the model's `ignore_label` (255) past it; `image_size` int32 `[batch, 2]` (height, width).

    Args:
        model: a `keras_fpn.segmentation.Segmenter` (TensorFlow backend).
        export_dir, version, new_version, class_names: as `keras_fpn.export.export_saved_model`.
        image_size: `(height, width)` or None (default: each image at its own size, as `predict`). When given, each
            image is resized to it for the model (the size it was trained at) and the logits resized back.

    Returns:
        str, the path of the written version folder.
    """
    import tensorflow as tf

    path, description = version_folder(model, export_dir, version, new_version, class_names)
    image_size = None if image_size is None else tuple(int(side) for side in image_size)
    module = segmentation_serving_module(model, image_size)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve_encoded})
    write_description(path, description)
    return path
