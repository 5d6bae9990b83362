"""Training on several devices or machines with TensorFlow's own distribution engine (`tf.distribute`)."""

import json
import os

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(RuntimeError):
    """The devices a strategy needs cannot be reached (no TPU)."""


def make_strategy(name="default", tpu=None):
    """A `tf.distribute.Strategy` by name.

    Args:
        name: `"default"` (one device), `"mirrored"` (every GPU of this machine, or every logical CPU device;
            gradients all-reduced after each step), `"multi_worker"` (`MultiWorkerMirroredStrategy`: the devices of
            every machine listed in the `TF_CONFIG` environment variable), or `"tpu"` (`TPUStrategy`).
        tpu: str or None, the TPU name or address for `"tpu"` (None: the TPU of this Colab / Cloud VM).

    Build and compile the model inside `strategy.scope()`; the batch size given to the pipeline is the global one,
    split evenly across replicas.

    Raises:
        ValueError: an unknown name, or `"multi_worker"` with a `TF_CONFIG` that does not describe a cluster.
        StrategyError: `"tpu"` where no TPU can be reached.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Received strategy={name!r}; expected one of {STRATEGIES}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy() alone takes the GPUs, or one CPU however many logical CPU devices there are.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        try:
            cluster = json.loads(config)["cluster"] if config else None
        except (ValueError, KeyError, TypeError):
            cluster = None
        if not cluster:
            raise ValueError(
                "strategy='multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
                f"(received TF_CONFIG={config!r})."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        raise StrategyError(f"strategy='tpu': no TPU could be reached ({error}).") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief():
    """True on the worker that writes files (checkpoints, logs, the trained model): worker 0 or the chief; True when
    not training on several machines."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return True
    try:
        config = json.loads(config)
    except ValueError:
        return True
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


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
    `train_on_batch` 28.1 s -> 12.9 s, later steps unchanged (0.143 vs 0.134 s), on the 2-core CI machine
    (`python benchmarks/first_step.py`). Under a strategy
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
