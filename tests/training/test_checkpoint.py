"""Checkpoints are atomic and verified; interrupted training resumes at its step and ends at the same count."""

import json
import os

import keras
import numpy as np
import pytest

from keras_fpn.training import CheckpointError, TrainingCheckpoint, fit_resumable, restore_checkpoint


def _model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return model


def _data():
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True))).repeat().batch(8)


class Interrupt(keras.callbacks.Callback):
    """Stands in for a killed process: raises after optimizer step `at`."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at:
            raise KeyboardInterrupt(f"interrupted at step {self.at}")


def test_checkpoints_every_n_steps_and_keeps_the_newest(tmp_path):
    model = _model()
    model.fit(_data(), shuffle=False, epochs=2, steps_per_epoch=5, verbose=0, callbacks=[TrainingCheckpoint(str(tmp_path), 3)])
    files = sorted(os.listdir(tmp_path))
    assert files == ["checkpoint.json", "ckpt-00000009.keras", "ckpt-00000010.keras"], files
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    assert index["latest"] == "ckpt-00000010.keras" and index["step"] == 10
    restored, step = restore_checkpoint(str(tmp_path))
    assert step == 10 and int(restored.optimizer.iterations.numpy()) == 10
    for a, b in zip(model.weights + model.optimizer.variables, restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_no_checkpoint_is_none(tmp_path):
    assert restore_checkpoint(str(tmp_path)) is None


def test_resume_mid_epoch_ends_at_the_same_step_count(tmp_path, capsys):
    directory = str(tmp_path / "checkpoints")
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        fit_resumable(model, _data(), epochs=3, steps_per_epoch=5, checkpoint_dir=directory, checkpoint_every=2,
                      callbacks=[Interrupt(at=7)], verbose=0)
    assert json.loads(open(os.path.join(directory, "checkpoint.json")).read())["step"] == 6
    resumed, history = fit_resumable(_model(), _data(), epochs=3, steps_per_epoch=5, checkpoint_dir=directory,
                                     checkpoint_every=2, verbose=0)
    assert "at step 6 of 15" in capsys.readouterr().out
    assert int(resumed.optimizer.iterations.numpy()) == 15
    assert len(history["loss"]) == 2  # the rest of epoch 2, then epoch 3
    # Nothing left to do: a third start restores step 15 and trains no further.
    again, history = fit_resumable(_model(), _data(), epochs=3, steps_per_epoch=5, checkpoint_dir=directory,
                                   verbose=0)
    assert int(again.optimizer.iterations.numpy()) == 15 and history == {}


def test_no_resume_starts_over(tmp_path):
    directory = str(tmp_path)
    fit_resumable(_model(), _data(), epochs=1, steps_per_epoch=4, checkpoint_dir=directory, verbose=0)
    model, _ = fit_resumable(_model(), _data(), epochs=1, steps_per_epoch=3, checkpoint_dir=directory,
                             resume=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 3


@pytest.mark.parametrize("damage, message", [
    (lambda path: open(path, "r+b").truncate(os.path.getsize(path) // 2), r"is damaged: \d+ bytes"),
    (lambda path: _flip_a_byte(path), r"is damaged: .*SHA-256"),
    (lambda path: os.remove(path), "is missing"),
])
def test_damaged_checkpoint_is_reported_not_loaded(tmp_path, damage, message):
    model = _model()
    model.fit(_data(), shuffle=False, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[TrainingCheckpoint(str(tmp_path))])
    path = tmp_path / "ckpt-00000002.keras"
    damage(str(path))
    with pytest.raises(CheckpointError, match=message) as error:
        restore_checkpoint(str(tmp_path))
    assert "ckpt-00000002.keras" in str(error.value)


def test_damaged_index_is_reported(tmp_path):
    (tmp_path / "checkpoint.json").write_text('{"latest": ')
    with pytest.raises(CheckpointError, match="checkpoint.json is damaged"):
        restore_checkpoint(str(tmp_path))


def test_partial_files_of_a_killed_write_are_ignored_and_cleaned(tmp_path):
    model = _model()
    model.fit(_data(), shuffle=False, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[TrainingCheckpoint(str(tmp_path))])
    partial = tmp_path / ".ckpt-00000004.keras.partial.keras"
    partial.write_bytes(b"PK\x03\x04 half a zip")  # what a kill during the next save leaves
    assert restore_checkpoint(str(tmp_path))[1] == 2
    model.fit(_data(), shuffle=False, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[TrainingCheckpoint(str(tmp_path))])
    assert not partial.exists()


def _flip_a_byte(path):
    with open(path, "r+b") as file:
        file.seek(os.path.getsize(path) // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps=0"):
        TrainingCheckpoint("x", every_n_steps=0)
    with pytest.raises(ValueError, match="keep=0"):
        TrainingCheckpoint("x", keep=0)
