"""Counting a model's floating-point operations with TensorFlow's own profiler."""


def count_flops(model, input_shape, batch_size=1):
    """Counts the floating-point operations of one forward pass of `model`.

    Uses TensorFlow's graph profiler (`tf.compat.v1.profiler`) on the frozen inference graph, which counts a
    multiply-add as 2 operations (a 3x3 conv from 3 to 4 channels on an 8x8 map is 2*8*8*3*9*4 = 27,648 FLOPs).
    Requires the TensorFlow backend.

    Args:
        model: a Keras model taking one image tensor.
        input_shape: `(height, width, channels)` to count at; counts depend on the image size.
        batch_size: int, default 1.

    Returns:
        int, the number of FLOPs.
    """
    import tensorflow as tf

    return count_function_flops(lambda images: model(images, training=False),
                                tf.TensorSpec((batch_size, *input_shape), tf.float32))


def count_function_flops(function, *input_specs):
    """Counts the floating-point operations of `function` traced with `input_specs` (`tf.TensorSpec`s or nested
    structures of them), as `count_flops` does for a model; e.g. a `FeaturePyramid` on a dict of feature maps."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    concrete = tf.function(function).get_concrete_function(*input_specs)
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 profiler logs a deprecation notice on every call
    try:
        with tf.Graph().as_default() as graph:
            tf.graph_util.import_graph_def(graph_def, name="")
            options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            options["output"] = "none"
            profile = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options)
    finally:
        logger.setLevel(level)
    return int(profile.total_float_ops)
