"""Semantic-segmentation scores from one confusion matrix accumulated over a dataset: mean IoU, per-class IoU and
pixel accuracy. The matrix is Keras's own (`keras.metrics.MeanIoU`, which skips an `ignore_class`); this module
reads the other scores off it.

>>> import numpy as np
>>> scores = SegmentationScores(num_classes=2)
>>> scores.update(np.array([[0, 0, 1, 255]]), np.array([[0, 1, 1, 0]]))
>>> {key: round(value, 3) for key, value in scores.result().items() if key != "per_class_iou"}
{'mIoU': 0.5, 'pixel_accuracy': 0.667}
"""

import numpy as np

from keras_fpn.segmentation.segmenter import IGNORE_LABEL


class SegmentationScores:
    """Accumulates `(masks, predicted class maps)` and scores them.

    Args:
        num_classes: int. ignore_label: int, default 255 (those pixels are not counted).
        class_names: sequence of str or None, names for `per_class_iou`.
    """

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL, class_names=None):
        import keras

        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.metric = keras.metrics.MeanIoU(num_classes, ignore_class=ignore_label, sparse_y_pred=True)

    def update(self, masks, predictions):
        """Adds a batch: integer `masks` and `predictions`, the same shape (`[batch, H, W]`)."""
        masks, predictions = np.asarray(masks), np.asarray(predictions)
        if masks.shape != predictions.shape:
            raise ValueError(f"Received masks of shape {masks.shape} and predictions of shape {predictions.shape}; "
                             "expected the same shape.")
        self.metric.update_state(masks.reshape(-1), predictions.reshape(-1))

    @property
    def confusion_matrix(self):
        """`[num_classes, num_classes]` pixel counts, rows the true class, columns the predicted one."""
        return np.asarray(self.metric.total_cm, np.float64)

    def result(self):
        """`{"mIoU", "pixel_accuracy", "per_class_iou": {name: IoU}}`. mIoU averages the classes that occur in the
        masks or the predictions (Keras's convention: a class absent from both is left out)."""
        matrix = self.confusion_matrix
        true_positive = np.diag(matrix)
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
        return {"mIoU": float(np.nanmean(iou)) if np.any(union > 0) else 0.0,
                "pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
                "per_class_iou": {name: float(value) for name, value in zip(self.class_names, iou)}}


def evaluate_segmentation(model, images, masks, batch_size=8, class_names=None):
    """Scores a segmentation model on `images [N, H, W, 3]` and their `masks [N, H, W]` (or on a `tf.data`
    dataset of `(images, masks)` batches when `masks` is None): `SegmentationScores.result()`."""
    scores = SegmentationScores(model.num_classes, model.ignore_label, class_names)
    if masks is None:
        for batch_images, batch_masks in images:
            scores.update(batch_masks, model.predict_on_batch(batch_images))
    else:
        for start in range(0, len(images), batch_size):
            scores.update(masks[start:start + batch_size], model.predict_on_batch(images[start:start + batch_size]))
    return scores.result()
