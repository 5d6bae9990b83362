"""Learning-rate warmup around any Keras schedule."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_fpn")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Multiplies a schedule by a factor rising linearly from `start_factor` to 1 over `warmup_steps` steps.

    This is the warmup of Goyal et al. 2017 (https://arxiv.org/abs/1706.02677) and of Detectron's RetinaNet
    recipe. Keras's `CosineDecay` has a warmup of its own, but `PiecewiseConstantDecay` (the paper's step schedule)
    has none; wrapping gives every schedule the same warmup.

    Args:
        schedule: a `LearningRateSchedule` or a float (constant learning rate).
        warmup_steps: int >= 0.
        start_factor: float in [0, 1], default 0. The factor at step 0.

    Example:

    >>> warm = LinearWarmup(0.01, warmup_steps=100, start_factor=0.5)
    >>> round(float(warm(0)), 4), round(float(warm(50)), 4), round(float(warm(500)), 4)
    (0.005, 0.0075, 0.01)
    """

    def __init__(self, schedule, warmup_steps, start_factor=0.0):
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"Received warmup_steps={warmup_steps!r}; expected an integer >= 0.")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"Received start_factor={start_factor!r}; expected 0 <= start_factor <= 1.")
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.start_factor = float(start_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        value = self.schedule(step) if callable(self.schedule) else ops.convert_to_tensor(self.schedule, "float32")
        if self.warmup_steps == 0:
            return value
        progress = ops.minimum(step / float(self.warmup_steps), 1.0)
        return value * (self.start_factor + (1.0 - self.start_factor) * progress)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps, "start_factor": self.start_factor}
