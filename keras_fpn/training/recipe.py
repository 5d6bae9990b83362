"""From a training recipe (the `"training"` section of a zoo record) to a Keras optimizer and an augmentation."""

import keras

from keras_fpn.training.schedules import LinearWarmup

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}
SCHEDULES = ("constant", "cosine", "step")
# Normalization scales/offsets and biases get no weight decay (as in Detectron and timm): decaying them only
# fights the normalization.
NO_DECAY = ["bias", "gamma", "beta"]


def learning_rate_schedule(learning_rate, total_steps):
    """A `LearningRateSchedule` from a recipe's `learning_rate` dict.

    Keys: `peak` (float), `schedule` (`"constant"`, `"cosine"` to `peak * final_factor`, or `"step"`: multiplied
    by `decay_factor` at each fraction of training in `decay_at`), `warmup_steps`, `warmup_start_factor`.
    """
    unknown = sorted(set(learning_rate) - {"peak", "schedule", "decay_at", "decay_factor", "final_factor",
                                           "warmup_steps", "warmup_start_factor"})
    if unknown or "peak" not in learning_rate:
        raise ValueError(f"Received learning_rate={learning_rate!r}; expected a dict with 'peak' and some of "
                         "'schedule', 'decay_at', 'decay_factor', 'final_factor', 'warmup_steps', "
                         "'warmup_start_factor'.")
    if total_steps < 1:
        raise ValueError(f"Received total_steps={total_steps}; expected at least 1 training step.")
    peak = float(learning_rate["peak"])
    kind = learning_rate.get("schedule", "constant")
    if kind == "constant":
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay([total_steps], [peak, peak])
    elif kind == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(peak, total_steps,
                                                          alpha=learning_rate.get("final_factor", 0.0))
    elif kind == "step":
        factor = learning_rate.get("decay_factor", 0.1)
        # PiecewiseConstantDecay switches after its boundary: the step at `fraction * total_steps` is the first
        # with the decayed rate.
        boundaries = [max(0, round(fraction * total_steps) - 1) for fraction in learning_rate.get("decay_at", [])]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [peak * factor ** i for i in range(len(boundaries) + 1)])
    else:
        raise ValueError(f"Received learning_rate schedule {kind!r}; expected one of {SCHEDULES}.")
    warmup = min(int(learning_rate.get("warmup_steps", 0)), total_steps)
    return LinearWarmup(schedule, warmup, learning_rate.get("warmup_start_factor", 0.0))


def build_optimizer(training, total_steps, learning_rate=None):
    """The recipe's optimizer with its schedule, weight decay (not on biases and norms) and gradient clipping.

    Args:
        training: dict, a recipe: `optimizer` (`{"name": "sgd" | "adam" | "adamw", **arguments}`), `learning_rate`
            (see `learning_rate_schedule`), `weight_decay` (float or None), `global_clipnorm` (float or None).
        total_steps: int, the length of training, for the schedule.
        learning_rate: float or None, overrides the recipe's peak learning rate.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    settings = dict(training.get("optimizer") or {"name": "sgd", "momentum": 0.9})
    name = settings.pop("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"Received optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}.")
    rate = dict(training.get("learning_rate") or {"peak": 0.01})
    if learning_rate is not None:
        rate["peak"] = learning_rate
    optimizer = OPTIMIZERS[name](
        learning_rate=learning_rate_schedule(rate, total_steps),
        weight_decay=training.get("weight_decay"),
        global_clipnorm=training.get("global_clipnorm"),
        **settings,
    )
    if training.get("weight_decay"):
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def build_augmentation(training, seed=None):
    """`keras_fpn.datasets.Augmentation` from the recipe's `augmentation` dict, or None when it has none."""
    from keras_fpn.datasets import Augmentation

    settings = training.get("augmentation")
    if not settings:
        return None
    # JSON has no tuples; Augmentation compares ranges with tuples.
    settings = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    return Augmentation(**settings, seed=seed)
