"""A Keras callback that scores the model with pycocotools during `fit`."""

import keras

from keras_fpn.evaluation.coco import evaluate_coco


class COCOEvaluation(keras.callbacks.Callback):
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
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"Received every_n_epochs={every_n_epochs!r}; expected a positive int.")
        self.dataset = dataset
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.class_names = class_names
        self.per_class = per_class
        self.verbose = verbose
        self.iou_type = iou_type

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        metrics = evaluate_coco(self.model, self.dataset, self.class_names, self.per_class, iou_type=self.iou_type)
        if logs is not None:
            logs.update({f"{self.prefix}{name}": value for name, value in metrics.items()})
        if self.verbose:
            masks = f", mask AP {metrics['mask_AP']:.3f}" if "mask_AP" in metrics else ""
            print(f"\nepoch {epoch + 1}: COCO AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, "
                  f"AP75 {metrics['AP75']:.3f}, AR100 {metrics['AR100']:.3f}{masks}")
