"""What a detector's training step needs to know of `tf.distribute`: the replica count, sums over replicas, and an
optimizer built before tracing. Lives in utils (not training) because the detectors use it: the detection code
never imports keras_fpn.training."""


def num_replicas():
    """Replicas in sync under the current `tf.distribute` strategy (1 outside any, or on other backends)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(value):
    """`value` summed over the replicas of the current step (itself outside a replica context or with one)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def build_optimizer_before_tracing(model):
    """Creates `model.optimizer`'s variables eagerly, before Keras traces the train function.

    Without a `tf.distribute` strategy Keras 3's TensorFlow trainer defers building the optimizer to the first
    trace of the train step (`_maybe_symbolic_build` returns early). TensorFlow then creates every slot variable
    inside `tf.function` and traces the whole train step a second time, because its first trace created
    variables. Building it here first halves the first step: the 0.8M-parameter shapes model's first
    `train_on_batch` about twice as fast, later steps unchanged (`python benchmarks/first_step.py`; figures in
    benchmarks/README.md). Under a strategy
    Keras builds the optimizer in the strategy's scope itself, so nothing is done.
    """
    import keras

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return
    optimizer.build(model.trainable_variables)
