"""Recipes become the optimizers and schedules they describe."""

import keras
import numpy as np
import pytest

from keras_fpn.training import LinearWarmup, build_augmentation, build_optimizer, learning_rate_schedule


def _values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_linear_warmup_by_hand():
    warm = LinearWarmup(0.01, warmup_steps=100, start_factor=0.5)
    assert _values(warm, [0, 50, 100, 1000]) == pytest.approx([0.005, 0.0075, 0.01, 0.01])
    assert _values(LinearWarmup(0.02, warmup_steps=0), [0, 7]) == pytest.approx([0.02, 0.02])


def test_step_schedule_with_warmup_is_the_papers():
    # 90k steps: x0.1 at 60k and 80k, warmup over 500 steps from 1/3 (Detectron's RetinaNet 1x).
    schedule = learning_rate_schedule({"peak": 0.01, "schedule": "step", "decay_at": [2 / 3, 8 / 9],
                                       "decay_factor": 0.1, "warmup_steps": 500, "warmup_start_factor": 1 / 3},
                                      total_steps=90_000)
    values = _values(schedule, [0, 250, 500, 59_999, 60_000, 79_999, 80_000, 89_999])
    assert values == pytest.approx([0.01 / 3, 0.01 * 2 / 3, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rel=1e-5)


def test_cosine_schedule_decays_to_its_final_factor():
    schedule = learning_rate_schedule({"peak": 1e-3, "schedule": "cosine", "final_factor": 0.1}, 100)
    assert _values(schedule, [0, 50, 100]) == pytest.approx([1e-3, 0.55e-3, 1e-4], rel=1e-5)


def test_schedule_survives_serialization():
    optimizer = build_optimizer({"optimizer": {"name": "sgd", "momentum": 0.9},
                                 "learning_rate": {"peak": 0.1, "schedule": "step", "decay_at": [0.5],
                                                   "warmup_steps": 10, "warmup_start_factor": 0.1}}, 100)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    steps = [0, 5, 10, 49, 50, 99]
    assert isinstance(restored._learning_rate, LinearWarmup)
    assert _values(restored._learning_rate, steps) == pytest.approx(_values(optimizer._learning_rate, steps))


def test_weight_decay_skips_biases_and_norms():
    optimizer = build_optimizer({"optimizer": {"name": "sgd"}, "learning_rate": {"peak": 1.0},
                                 "weight_decay": 0.5}, 10)
    layer = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")
    norm = keras.layers.BatchNormalization()
    layer.build((None, 1))
    norm.build((None, 1))
    variables = [*layer.trainable_variables, *norm.trainable_variables]
    optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
    kernel, bias, gamma, _ = (float(np.ravel(v.numpy())[0]) for v in variables)
    assert kernel == pytest.approx(0.5) and bias == 1.0 and gamma == 1.0  # zero gradient: only decay moves


def test_global_clipnorm_and_optimizer_arguments():
    optimizer = build_optimizer({"optimizer": {"name": "adamw", "beta_1": 0.8}, "learning_rate": {"peak": 1e-4},
                                 "weight_decay": 0.05, "global_clipnorm": 10.0}, 10)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.beta_1 == 0.8 and optimizer.global_clipnorm == 10.0 and optimizer.weight_decay == 0.05


def test_learning_rate_override():
    optimizer = build_optimizer({"learning_rate": {"peak": 0.01}}, 10, learning_rate=0.5)
    assert float(optimizer._learning_rate(0)) == pytest.approx(0.5)


@pytest.mark.parametrize("training, message", [
    ({"optimizer": {"name": "rmsprop"}}, r"Received optimizer 'rmsprop'; expected one of \['adam', 'adamw', 'sgd'\]"),
    ({"learning_rate": {"peak": 0.1, "schedule": "linear"}}, r"schedule 'linear'; expected one of"),
    ({"learning_rate": {"rate": 0.1}}, r"expected a dict with 'peak'"),
])
def test_bad_recipes_are_named(training, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(training, 10)


def test_augmentation_from_recipe():
    assert build_augmentation({"augmentation": None}) is None
    augmentation = build_augmentation({"augmentation": {"horizontal_flip": True, "scale_range": [0.5, 2.0],
                                                        "translation": 0.0, "brightness": 0.0, "contrast": 0.0,
                                                        "saturation": None}}, seed=1)
    assert [type(layer).__name__ for layer in augmentation.layers] == ["RandomFlip", "RandomZoom"]
