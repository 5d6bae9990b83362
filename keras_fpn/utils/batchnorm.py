"""BatchNorm controls for training detectors from scratch and for fine-tuning."""

import keras
from keras import ops


def batchnorm_layers(model):
    """Every `BatchNormalization` layer inside `model`, nested models included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNorm layer in `model`.

    keras.applications keep momentum 0.99 to 0.999; on a short from-scratch schedule the moving statistics then
    lag far behind the weights and inference-mode outputs collapse. 0.9 follows them within tens of steps.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Received momentum={momentum}; expected 0 <= momentum < 1.")
    for layer in batchnorm_layers(model):
        layer.momentum = momentum


def freeze_batchnorm(model):
    """Freezes every BatchNorm layer: fixed statistics and affine weights, inference mode also while training
    (Keras 3 runs a non-trainable BatchNormalization in inference mode). For fine-tuning pretrained backbones."""
    for layer in batchnorm_layers(model):
        layer.trainable = False


def precise_batchnorm(model, dataset, num_batches=50, verbose=1):
    """Recomputes BatchNorm population statistics as the plain average over `num_batches` training batches.

    Like detectron2's PreciseBN: after training, the exponential moving averages reflect the weights of many steps
    ago; this replaces them with statistics of the final weights. Each BatchNorm's momentum is set to
    `k / (k + 1)` at the k-th batch, which makes its moving mean and variance the running average of the batch
    statistics, then restored. Only BatchNorm variables change.

    Args:
        model: a Keras model containing BatchNorm layers (frozen ones are left alone).
        dataset: iterable of `(images, ...)` or images, e.g. the training `tf.data.Dataset`.
        num_batches: int, how many batches to average over.
        verbose: 0 or 1, show a progress bar.

    Returns:
        The number of batches used.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    if verbose:  # say what the bar below is: it follows the last epoch's lines
        print(f"Precise BatchNorm: recomputing the statistics of {len(layers)} BatchNorm layers over {num_batches} "
              "training batches", flush=True)
    progress = keras.utils.Progbar(num_batches, verbose=verbose, unit_name="batch")
    used = 0
    try:
        for batch in dataset:
            if used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = used / (used + 1.0)
            model(ops.convert_to_tensor(images), training=True)
            used += 1
            progress.update(used)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return used
