"""Checkpoints that survive a killed process: whole-model saves written atomically and verified on restore."""

import hashlib
import json
import logging
import os

import keras

logger = logging.getLogger("keras_fpn")

INDEX = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be trusted (missing, truncated, altered or unreadable)."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path, write):
    """Writes through a temporary file in the same folder, flushed to disk, then renamed over `path`: a reader sees
    the old file or the new one, never half of one, whenever the process dies."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.partial{os.path.splitext(name)[1]}")
    write(temporary)
    with open(temporary, "rb+") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, optimizer state and step count) every `every_n_steps` steps and at the end of
    every epoch, atomically, and keeps the `keep` newest.

    Each checkpoint is a `.keras` file `ckpt-<step>.keras`; `checkpoint.json` names the newest with its step and
    SHA-256, and is itself replaced atomically, after the file it names is complete. `restore_checkpoint` reads it
    back. Keras's own `BackupAndRestore` writes its files in place (a kill during the write leaves a damaged file
    and no intact one) and restarts an interrupted epoch from its first step; this callback does neither.

    Args:
        directory: str, the checkpoint folder (created).
        every_n_steps: int or None. Also save every this many optimizer steps; None saves at epoch ends only.
        keep: int, default 2. Checkpoints kept.
    """

    def __init__(self, directory, every_n_steps=None, keep=2):
        super().__init__()
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"Received every_n_steps={every_n_steps!r}; expected a positive integer or None.")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"Received keep={keep!r}; expected a positive integer.")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.keep = keep
        self._last_saved = None

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps:
            step = self._step()
            if step % self.every_n_steps == 0:
                self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        self.save(self._step())

    def save(self, step):
        """Saves the model as the checkpoint of `step` (nothing when that step is already saved)."""
        if step == self._last_saved:
            return
        os.makedirs(self.directory, exist_ok=True)
        name = f"ckpt-{step:08d}.keras"
        path = os.path.join(self.directory, name)
        _write_atomically(path, self.model.save)
        index = {"latest": name, "step": step, "sha256": _sha256(path), "bytes": os.path.getsize(path)}

        def write_index(target):
            with open(target, "w") as file:
                json.dump(index, file, indent=2)

        _write_atomically(os.path.join(self.directory, INDEX), write_index)
        self._last_saved = step
        old = sorted(entry for entry in os.listdir(self.directory)
                     if entry.startswith("ckpt-") and entry.endswith(".keras") and entry != name)
        # Older checkpoints beyond `keep`, and partial files of a process killed while writing.
        partial = [entry for entry in os.listdir(self.directory) if entry.startswith(".") and ".partial" in entry]
        for entry in old[: max(0, len(old) - (self.keep - 1))] + partial:
            os.remove(os.path.join(self.directory, entry))


def restore_checkpoint(directory):
    """The newest checkpoint in `directory` as `(model, step)`, or None when there is none.

    The model comes back compiled, with its optimizer state, so `fit` continues where the checkpoint left off.

    Raises:
        CheckpointError: `checkpoint.json` is unreadable, or the file it names is missing, has another size or
            SHA-256 (truncated or altered), or does not load. The message names the file; nothing is loaded.
    """
    index_path = os.path.join(directory, INDEX)
    if not os.path.exists(index_path):
        return None
    try:
        with open(index_path) as file:
            index = json.load(file)
        path, step = os.path.join(directory, index["latest"]), int(index["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"Checkpoint index {index_path} is damaged ({error}); delete the folder to start "
                              "over.") from None
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint {path} named by {index_path} is missing.")
    size, digest = os.path.getsize(path), _sha256(path)
    if size != index.get("bytes") or digest != index.get("sha256"):
        raise CheckpointError(
            f"Checkpoint {path} is damaged: {size} bytes with SHA-256 {digest[:12]}..., but it was saved as "
            f"{index.get('bytes')} bytes with SHA-256 {str(index.get('sha256'))[:12]}...; not loading it. Delete it "
            f"and {INDEX} to start over, or restore the file."
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise CheckpointError(f"Checkpoint {path} does not load: {error}") from error
    restored = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) if model.optimizer else -1
    if restored != step:
        raise CheckpointError(f"Checkpoint {path} holds optimizer step {restored}, but {index_path} says {step}.")
    logger.info("Restored %s at step %d", path, step)
    return model, step
