"""What every keras_fpn detector shares around Keras's training loop: input checks with readable errors, and no
Keras warning the user did not cause.

A detector subclasses `Detector` and has `num_classes` and `bounding_box_format`; its `compute_loss` runs the graph
checks of `keras_fpn.detection.checks`. Export, evaluation and the CLI only use the `keras.Model` API and the
`predict` output dict, so a new detector plugs in without touching them.
"""

import keras
import numpy as np

from keras_fpn.detection import checks
from keras_fpn.training.distribute import build_optimizer_before_tracing

# Keras's `fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle, ...)`:
# `shuffle` is the 7th argument after x and y.
_SHUFFLE_POSITION = 6
# The first words of the graph asserts whose errors `fit` shortens to the assert's own message.
_CHECK_MESSAGES = ("images contain", "images are smaller", "labels must", "boxes contain", "boxes have",
                   "every box lies", "the numbers of boxes and labels")


def _is_tf_dataset(x):
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def _in_memory_batch(x, y):
    """`(images, boxes, labels)` as NumPy arrays when `x`/`y` are in-memory arrays, lists or eager tensors of the
    documented shapes; None otherwise (datasets, ragged targets: the graph checks handle those)."""
    if not isinstance(y, dict) or "boxes" not in y or "labels" not in y or _is_tf_dataset(x):
        return None
    if not isinstance(x, (np.ndarray, list, tuple)) and not (hasattr(x, "shape") and hasattr(x, "dtype")):
        return None
    if any(type(value).__name__ == "RaggedTensor" for value in (x, y["boxes"], y["labels"])):
        return None
    try:
        images, boxes, labels = (np.asarray(value) for value in (x, y["boxes"], y["labels"]))
    except (ValueError, TypeError):  # ragged nested lists
        return None
    if (images.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4 or labels.ndim != 2
            or any(array.dtype.kind not in "fiub" for array in (images, boxes, labels))):
        return None  # the shape and dtype checks of the traced step name these
    return images, boxes, labels


def _readable(error):
    """A `tf.errors.InvalidArgumentError` from one of the checks' graph asserts, with the assert's message first
    (TensorFlow puts "Graph execution error:" and the graph's traceback before it)."""
    message = error.message
    start = message.rfind("assertion failed: ")
    if start < 0 or not any(text in message[start:] for text in _CHECK_MESSAGES):
        return None
    text = message[start + len("assertion failed: "):].split("\n\t [[{{node", 1)[0].strip()
    # "[message] [values]": TensorFlow brackets each data item and escapes quotes.
    text = " ".join(" ".join(text.split()).replace("\\'", "'").split("] ["))
    text = text[1:] if text.startswith("[") else text
    text = text[:-1] if text.endswith("]") and text.count("]") > text.count("[") else text
    return type(error)(error.node_def, error.op, f"{text}\n\n(found by a graph check while the step ran; the "
                                                 f"original error follows)\n{message}")


class Detector(keras.Model):
    """Base class of keras_fpn's detectors (not used directly).

    `fit` adds, for every detector:
    - in-memory `x`/`y` (NumPy arrays, lists, eager tensors) checked in Python before anything is traced: a
      `ValueError` whose first line names the problem and shows the first offending values whole
      (`keras_fpn.detection.checks.check_in_memory_batch`); `tf.data` input is checked by the graph asserts, whose
      `InvalidArgumentError` then starts with the same words;
    - `shuffle=False` for `tf.data` input when the caller did not pass `shuffle` (Keras ignores it there and, from
      3.13, warns about its own default);
    - the optimizer built before the first step is traced (see `build_optimizer_before_tracing`).
    """

    def fit(self, x=None, y=None, *args, **kwargs):
        if _is_tf_dataset(x) and len(args) <= _SHUFFLE_POSITION and "shuffle" not in kwargs:
            kwargs["shuffle"] = False
        self._check_in_memory(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_in_memory(validation[0], validation[1])
        return self._with_readable_errors(super().fit, x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_in_memory(x, y)
        return self._with_readable_errors(super().evaluate, x, y, *args, **kwargs)

    def _check_in_memory(self, x, y):
        batch = _in_memory_batch(x, y)
        if batch is not None:
            checks.check_in_memory_batch(*batch, self.num_classes, self.bounding_box_format)

    @staticmethod
    def _with_readable_errors(function, *args, **kwargs):
        if keras.backend.backend() != "tensorflow":
            return function(*args, **kwargs)
        import tensorflow as tf

        try:
            return function(*args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            readable = _readable(error)
            if readable is None:
                raise
            raise readable from None

    def make_train_function(self, force=False):
        build_optimizer_before_tracing(self)
        return super().make_train_function(force)
