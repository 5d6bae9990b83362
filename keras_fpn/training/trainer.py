"""Training a detector or a segmenter by its recipe: `model.fit` with checkpoints, resumption, evaluation (COCO AP or
mIoU) and TensorBoard."""

import json
import logging
import math
import os
import shutil
import tempfile
import time

import keras

from keras_fpn.training.checkpoint import TrainingCheckpoint, restore_checkpoint
from keras_fpn.training.distribute import is_chief
from keras_fpn.training.recipe import build_augmentation, build_optimizer

logger = logging.getLogger("keras_fpn")

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
# A recipe given in steps is run as epochs of this many steps, so progress, checkpoints and evaluation still come
# at epoch ends.
STEPS_PER_EPOCH_OF_STEP_RECIPES = 250


def fit_resumable(model, batches, epochs, steps_per_epoch, checkpoint_dir=None, checkpoint_every=None,
                  resume=True, callbacks=(), verbose="auto", write_checkpoints=True):
    """`model.fit` for `epochs` x `steps_per_epoch` steps that picks up where an interrupted run stopped.

    With `checkpoint_dir`, the whole model is checkpointed atomically at every epoch end and every
    `checkpoint_every` steps (`TrainingCheckpoint`). With `resume`, the newest checkpoint there is loaded first
    (model, optimizer state, step count) and training continues from its step, mid-epoch included: the rest of the
    interrupted epoch runs as a shorter epoch, so the run ends after the same number of optimizer steps as an
    uninterrupted one. Batches after a resume start again from the beginning of `batches` (shuffled anew).
    Under a `tf.distribute` strategy, call it inside `strategy.scope()` (the restored model is built there). With
    several workers, saving a model runs collective ops, so every worker saves; `write_checkpoints=False` (the
    workers other than the chief) sends those saves to a temporary folder that is deleted afterwards. All workers
    restore from `checkpoint_dir`, which they must all be able to read.

    Returns:
        `(model, history)`: the trained model (a new object when it was restored) and the metrics of every epoch run
        in this call, as a dict of lists.

    Raises:
        keras_fpn.training.CheckpointError: the newest checkpoint is damaged.
    """
    start_step = 0
    if checkpoint_dir and resume:
        restored = restore_checkpoint(checkpoint_dir)
        if restored is not None:
            model, start_step = restored
            print(f"Resuming from {checkpoint_dir} at step {start_step} of {epochs * steps_per_epoch}.", flush=True)
    callbacks = list(callbacks)
    scratch = None
    if checkpoint_dir:
        scratch = None if write_checkpoints else tempfile.mkdtemp(prefix="keras_fpn_worker_")
        callbacks.append(TrainingCheckpoint(scratch or checkpoint_dir, checkpoint_every))
    _work_around_multi_worker_fit(model)
    history = {}
    epoch, done = divmod(start_step, steps_per_epoch)
    while epoch < epochs:
        # The first epoch after a mid-epoch resume is the rest of the interrupted one.
        steps = steps_per_epoch - done if done else steps_per_epoch
        last = epoch + 1 if done else epochs
        run = model.fit(batches, initial_epoch=epoch, epochs=last, steps_per_epoch=steps, callbacks=callbacks,
                        verbose=verbose, shuffle=False)
        for key, values in run.history.items():
            history.setdefault(key, []).extend(values)
        epoch, done = last, 0
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return model, history


def _work_around_multi_worker_fit(model):
    """Keras 3's `fit` under `MultiWorkerMirroredStrategy` fails before the first step: its symbolic build reduces the
    first distributed batch with `strategy.reduce`, which that strategy refuses (keras-team/keras#20585, open;
    measured with Keras 3.15, TensorFlow 2.21). A model that records no strategy of its own takes the current one
    (`fit` runs inside `strategy.scope()`) and builds when its train function is traced, which works."""
    import tensorflow as tf

    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        model._distribute_strategy = None


def schedule_length(training, num_images, batch_size, epochs=None, steps_per_epoch=None):
    """`(epochs, steps_per_epoch)` for a recipe: from its `epochs` over `num_images`, or its total `steps`."""
    if steps_per_epoch is None:
        if "steps" in training and epochs is None:
            steps_per_epoch = min(STEPS_PER_EPOCH_OF_STEP_RECIPES, training["steps"])
        elif num_images:
            steps_per_epoch = max(1, math.ceil(num_images / batch_size))
        else:
            raise ValueError("The dataset does not say how many images it has: pass steps_per_epoch.")
    if epochs is None:
        epochs = max(1, training["steps"] // steps_per_epoch) if "steps" in training else training.get("epochs", 1)
    return epochs, steps_per_epoch


def train_detector(model, train_data, training, image_size, output_dir=None, val_data=None, epochs=None,
                   steps_per_epoch=None, batch_size=None, learning_rate=None, checkpoint_every=None, resume=True,
                   eval_every=1, verbose=1, seed=0, strategy=None):
    """Trains a detector (`RetinaNet`, `FasterRCNN` or `MaskRCNN`) on a reader's `DetectionData` by a recipe, with
    `model.fit`.

    The recipe (a zoo record's `"training"` section) gives the batch size, the length (epochs, or steps), the
    optimizer with its warmup schedule and weight decay, and the augmentation; the arguments here override them.
    Images are resized to `image_size` and padded to a multiple of the coarsest stride.

    With `output_dir`: checkpoints go to `checkpoints/` (resumed from when `resume`), TensorBoard logs to `logs/`,
    and the trained model to `model.keras` with `run.json` (class names, image size, recipe) beside it, which
    `keras-fpn evaluate / export / predict` read.

    With a `tf.distribute` `strategy` (see `keras_fpn.training.make_strategy`), build `model` inside
    `strategy.scope()`; the batch size is the global one, split across the replicas, and only the chief worker
    writes files.

    Args:
        model: a keras_fpn detector: `RetinaNet`, `FasterRCNN` or `MaskRCNN` (not compiled: it is compiled here with
            the recipe's optimizer). A `MaskRCNN` needs data read with masks, and its evaluation adds mask AP.
        train_data, val_data: `keras_fpn.datasets.DetectionData` (val_data optional: COCO metrics every
            `eval_every` epochs, logged as `val_AP`, ... in the history and TensorBoard).
        training: dict, the recipe.
        image_size: `(height, width)`.
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
        strategy: a `tf.distribute.Strategy` or None (the current one).

    Returns:
        `(model, history dict)`.

    Raises:
        ValueError: the training data is empty.
    """
    import contextlib
    from keras_fpn.datasets import detection_pipeline
    from keras_fpn.evaluation import COCOEvaluation
    from keras_fpn.utils.batchnorm import precise_batchnorm

    if train_data.num_images == 0:
        raise ValueError("The training data is empty: no images to train on.")
    batch_size = batch_size or training.get("batch_size", 8)
    epochs, steps_per_epoch = schedule_length(training, train_data.num_images, batch_size, epochs, steps_per_epoch)
    stride = model.input_multiple
    batches = detection_pipeline(train_data, batch_size, image_size, pad_to_multiple=stride,
                                 augmentation=build_augmentation(training, seed), shuffle=True, repeat=True,
                                 cache=bool(train_data.num_images and train_data.num_images <= 5000), seed=seed)
    # Only a source that does not count its images is read ahead (one batch) to find out whether it is empty.
    if train_data.num_images is None and not any(True for _ in batches.take(1)):
        raise ValueError("The training data is empty: no images to train on.")

    def scope():  # a strategy's scope object can be entered once only
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    chief = is_chief()
    with scope():
        model.compile(optimizer=build_optimizer(training, epochs * steps_per_epoch, learning_rate))
    callbacks = []
    if val_data is not None:
        val_batches = detection_pipeline(val_data, batch_size, image_size, pad_to_multiple=stride,
                                         with_image_info=True, cache=True)
        callbacks.append(COCOEvaluation(val_batches, every_n_epochs=eval_every, class_names=val_data.class_names,
                                        verbose=1 if verbose == 1 else 0,
                                        iou_type=model.iou_types))
    if output_dir and chief:
        os.makedirs(output_dir, exist_ok=True)
        # After the evaluation callback, so the COCO metrics it adds to the logs reach TensorBoard.
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq="epoch"))
    start = time.perf_counter()
    with scope():
        model, history = fit_resumable(
            model, batches, epochs, steps_per_epoch, os.path.join(output_dir, "checkpoints") if output_dir else None,
            checkpoint_every, resume, callbacks, verbose, write_checkpoints=chief,
        )
        if training.get("precise_batchnorm_batches"):
            precise_batchnorm(model, batches, training["precise_batchnorm_batches"],
                              verbose=1 if verbose == 1 else 0)
    logger.info("Trained %d epochs of %d steps in %.0fs", epochs, steps_per_epoch, time.perf_counter() - start)
    if output_dir:
        # Every worker saves (saving runs collective ops under MultiWorkerMirroredStrategy); only the chief keeps it.
        target = output_dir if chief else tempfile.mkdtemp(prefix="keras_fpn_worker_")
        save_run(model, target, train_data.class_names, image_size, training=training, epochs=epochs,
                 steps_per_epoch=steps_per_epoch, batch_size=batch_size)
        if not chief:
            shutil.rmtree(target, ignore_errors=True)
    return model, history


def train_segmenter(model, train, training, class_names, output_dir=None, val=None, epochs=None,
                    steps_per_epoch=None, batch_size=None, learning_rate=None, checkpoint_every=None, resume=True,
                    eval_every=1, verbose=1, seed=0):
    """Trains a segmenter (`SemanticFPN`, `UNet`) on in-memory images and masks by a recipe, with `model.fit`: the
    segmentation counterpart of `train_detector` (same recipe keys, checkpoints, resumption and run folder).

    Args:
        model: a `SemanticFPN` or `UNet`, not compiled (compiled here with the recipe's optimizer).
        train: `(images uint8 [N, H, W, 3], masks [N, H, W])`; val: the same, or None. With `val`,
            `SegmentationEvaluation` logs `val_mIoU` and `val_pixel_accuracy` every `eval_every` epochs.
        training: dict, the recipe. class_names: sequence of str, written to `run.json`.
        output_dir, epochs, steps_per_epoch, batch_size, learning_rate, checkpoint_every, resume, verbose, seed:
            as `train_detector`.

    Returns:
        `(model, history dict)`.
    """
    from keras_fpn.datasets.segmentation import segmentation_pipeline
    from keras_fpn.evaluation import SegmentationEvaluation

    images, masks = train
    if len(images) == 0:
        raise ValueError("The training data is empty: no images to train on.")
    batch_size = batch_size or training.get("batch_size", 8)
    epochs, steps_per_epoch = schedule_length(training, len(images), batch_size, epochs, steps_per_epoch)
    batches = segmentation_pipeline(images, masks, batch_size, shuffle=True, repeat=True, seed=seed)
    model.compile(optimizer=build_optimizer(training, epochs * steps_per_epoch, learning_rate))
    callbacks = []
    if val is not None:
        held_out = segmentation_pipeline(*val, batch_size=batch_size, flip=False, shuffle=False)
        callbacks.append(SegmentationEvaluation(held_out, every_n_epochs=eval_every, class_names=class_names,
                                                verbose=1 if verbose == 1 else 0))
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq="epoch"))
    start = time.perf_counter()
    model, history = fit_resumable(model, batches, epochs, steps_per_epoch,
                                   os.path.join(output_dir, "checkpoints") if output_dir else None, checkpoint_every,
                                   resume, callbacks, verbose)
    logger.info("Trained %d epochs of %d steps in %.0fs", epochs, steps_per_epoch, time.perf_counter() - start)
    if output_dir:
        save_run(model, output_dir, class_names, images.shape[1:3], training=training, epochs=epochs,
                 steps_per_epoch=steps_per_epoch, batch_size=batch_size)
    return model, history


def save_run(model, output_dir, class_names, image_size, **details):
    """Saves `model.keras` and `run.json` (class names, image size, and `details`) in `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    model.save(os.path.join(output_dir, MODEL_FILE))
    with open(os.path.join(output_dir, RUN_FILE), "w") as file:
        json.dump({"class_names": list(class_names), "image_size": list(image_size), **details}, file, indent=2)


def load_run(path):
    """`(model, run dict)` from a training output folder (or a `.keras` file, whose `run.json` is optional).

    Raises:
        FileNotFoundError: no model there.
    """
    model_path = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"No trained model at {path!r}: expected a .keras file or a folder holding "
                                f"{MODEL_FILE} (what `keras-fpn train --output-dir` writes).")
    run_path = os.path.join(os.path.dirname(model_path), RUN_FILE)
    run = {}
    if os.path.isfile(run_path):
        with open(run_path) as file:
            run = json.load(file)
    return keras.saving.load_model(model_path), run
