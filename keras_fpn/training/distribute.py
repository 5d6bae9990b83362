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
