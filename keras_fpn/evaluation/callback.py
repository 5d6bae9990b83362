"""Keras callbacks that score the model during `fit`: COCO AP for detectors, mIoU for segmenters."""

import keras

from keras_fpn.evaluation.coco import evaluate_coco
from keras_fpn.evaluation.segmentation import evaluate_segmentation


class _PeriodicEvaluation(keras.callbacks.Callback):
    """Scores the model every `every_n_epochs` epochs (`evaluate`, by subclasses) and adds the numbers to the
    epoch's logs under `prefix`, so that `History`, TensorBoard and `ModelCheckpoint(monitor=...)` after it see them."""

    def __init__(self, dataset, every_n_epochs=1, prefix="val_", class_names=None, per_class=False, verbose=0):
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"Received every_n_epochs={every_n_epochs!r}; expected a positive int.")
        self.dataset = dataset
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.class_names = class_names
        self.per_class = per_class
        self.verbose = verbose

    def evaluate(self):
        """`{name: float}` of the model on `self.dataset`."""
        raise NotImplementedError

    def summary(self, metrics):
        """The line printed after an evaluation when `verbose`."""
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        metrics = self.evaluate()
        if logs is not None:
            logs.update({f"{self.prefix}{name}": value for name, value in metrics.items()})
        if self.verbose:
            print(f"\nepoch {epoch + 1}: {self.summary(metrics)}")


class COCOEvaluation(_PeriodicEvaluation):
    """Runs `evaluate_coco` every `every_n_epochs` epochs and adds the numbers to the epoch's logs.

    The numbers land in `History` (`history.history["val_AP"]`) and in every callback after this one in the
    `callbacks` list: put it before `keras.callbacks.TensorBoard` to get `val_AP`, `val_AP50`... as TensorBoard
    scalars, and before `ModelCheckpoint(monitor="val_AP", mode="max")` to keep the best model.

    Args:
        dataset: evaluation batches, as `evaluate_coco` takes them (e.g. `detection_pipeline(...,
            with_image_info=True)`).
        every_n_epochs: int, default 1. Epochs in between are not scored (their logs lack the keys).
        prefix: str, default `"val_"`.
        class_names: sequence of str or None. per_class: bool, default False. Add `"<prefix>AP/<class>"` keys.
        verbose: int. 1 prints the summary numbers after each evaluation.
        iou_type: as `evaluate_coco`; `("bbox", "segm")` also logs mask AP (`val_mask_AP`, ...).
    """

    def __init__(self, dataset, every_n_epochs=1, prefix="val_", class_names=None, per_class=False, verbose=0,
                 iou_type="bbox"):
        super().__init__(dataset, every_n_epochs, prefix, class_names, per_class, verbose)
        self.iou_type = iou_type

    def evaluate(self):
        return evaluate_coco(self.model, self.dataset, self.class_names, self.per_class, iou_type=self.iou_type)

    def summary(self, metrics):
        masks = f", mask AP {metrics['mask_AP']:.3f}" if "mask_AP" in metrics else ""
        return (f"COCO AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, AP75 {metrics['AP75']:.3f}, "
                f"AR100 {metrics['AR100']:.3f}{masks}")


class SegmentationEvaluation(_PeriodicEvaluation):
    """Runs `evaluate_segmentation` every `every_n_epochs` epochs and adds `val_mIoU` and `val_pixel_accuracy`
    (with `per_class`, `val_IoU/<class>` too) to the epoch's logs: put it before `keras.callbacks.TensorBoard` or
    `ModelCheckpoint(monitor="val_mIoU", mode="max")` in the `callbacks` list.

    Args:
        dataset: a `tf.data` dataset of `(images, masks)` batches (e.g. `segmentation_pipeline(...)` of held-out
            data), finite.
        every_n_epochs: int, default 1. prefix: str, default `"val_"`.
        class_names: sequence of str or None (per-class keys by name, else by index). per_class: bool, default
            False. verbose: int, 1 prints the numbers after each evaluation.
    """

    def evaluate(self):
        scores = evaluate_segmentation(self.model, self.dataset, None, class_names=self.class_names)
        metrics = {"mIoU": scores["mIoU"], "pixel_accuracy": scores["pixel_accuracy"]}
        if self.per_class:
            metrics.update({f"IoU/{name}": value for name, value in scores["per_class_iou"].items()})
        return metrics

    def summary(self, metrics):
        return f"mIoU {metrics['mIoU']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f}"
