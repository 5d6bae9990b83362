"""What every keras_fpn detector shares: the contract that export, evaluation and the CLI use, the target format,
input checks with readable errors, loss logging, and the Keras training hooks.

The contract (`Detector`): a detector has `backbone` (an `FPNBackbone`), `num_classes`, `bounding_box_format`,
`max_detections`, `input_multiple` (what its input sides are padded to), `iou_types` (what COCO evaluation scores),
and `detect(images)`, the in-graph inference that returns `{"boxes", "scores", "labels", "num_detections"}` (plus
`"masks"` for a mask head); `predict` and the exported SavedModel both call `detect`, and `evaluate_coco`,
pictures and the CLI only read `predict`'s dict. Its `compute_loss` reads `y` through `pixel_targets` and logs
through `log_losses`. A new detector plugs in by subclassing `Detector` (constructor: `check_arguments`,
`resolve_backbone`, build the graph, `super().__init__`, `init_contract`; `get_config`: extend the base one) and
naming itself in `keras_fpn.models.ARCHITECTURES`, without touching export, evaluation or the CLI.
"""

import keras
import numpy as np
from keras import ops
from keras.utils import bounding_boxes

from keras_fpn import presets
from keras_fpn.backbones.fpn_backbone import FPNBackbone
from keras_fpn.detection import checks
from keras_fpn.layers.levels import level_key
from keras_fpn.ops.boxes import to_original
from keras_fpn.utils.distribute import build_optimizer_before_tracing, num_replicas

# Keras's `fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle, ...)`:
# `shuffle` is the 7th argument after x and y.
_SHUFFLE_POSITION = 6
# The first words of the graph asserts whose errors `fit` shortens to the assert's own message.
_CHECK_MESSAGES = ("images contain", "images are smaller", "labels must", "boxes contain", "boxes have",
                   "every box lies", "the numbers of boxes and labels", "masks must")


def dense_targets(y):
    """`y = {"boxes", "labels"}` (the targets of every detector) checked, then as dense float32 boxes
    `[batch, M + 1, 4]` and int32 labels `[batch, M + 1]` padded with label -1 (ragged input accepted)."""
    if not isinstance(y, dict) or "boxes" not in y or "labels" not in y:
        raise ValueError(
            "Expected y = {'boxes': [batch, num_boxes, 4], 'labels': [batch, num_boxes]} padded with label -1; "
            f"received {type(y).__name__}{'' if not isinstance(y, dict) else ' with keys ' + str(sorted(y))}."
        )
    boxes, labels = checks.check_targets(y["boxes"], y["labels"])
    labels = checks.check_label_values(labels)
    if hasattr(boxes, "to_tensor"):  # tf.RaggedTensor
        boxes = boxes.to_tensor(default_value=0.0)
    if hasattr(labels, "to_tensor"):
        labels = labels.to_tensor(default_value=-1)
    boxes, labels = ops.cast(boxes, "float32"), ops.cast(labels, "int32")
    # One extra padding column, so a batch with no boxes at all (shape [batch, 0, 4]) still has something for the
    # IoU reductions to reduce over.
    batch = ops.shape(boxes)[0]
    boxes = ops.concatenate([boxes, ops.zeros((batch, 1, 4), "float32")], axis=1)
    labels = ops.concatenate([labels, -ops.ones((batch, 1), "int32")], axis=1)
    return boxes, labels


def _multi_worker_logs(logs):
    """Under `MultiWorkerMirroredStrategy`, Keras 3 averages each replica's step logs with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars every metric returns ("Invalid reduction
    dimension 0 for input with 0 dimensions"; keras-team/keras#20585, Keras 3.15). Shape [1] logs reduce to the
    scalars Keras expects; other strategies and backends get the logs unchanged."""
    if keras.backend.backend() != "tensorflow" or not isinstance(logs, dict):
        return logs
    import tensorflow as tf

    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def resolve_backbone(backbone, backbone_weights, input_shape, min_level, max_level, num_channels, backbone_kwargs):
    """An `FPNBackbone` from what a detector's `backbone` argument may be: a `keras.applications` name, a model
    the user built (wrapped as it is, with its own weights and input size), a built `FPNBackbone`, or a
    serialized one (from `get_config`)."""
    backbone_kwargs = dict(backbone_kwargs or {})
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, str) or (isinstance(backbone, keras.Model) and not isinstance(backbone, FPNBackbone)):
        backbone = FPNBackbone(backbone, weights=backbone_weights, input_shape=input_shape, min_level=min_level,
                               max_level=max_level, num_channels=num_channels, **backbone_kwargs)
    if not isinstance(backbone, FPNBackbone) or backbone.return_features:
        raise ValueError(
            f"Received backbone={backbone!r}; expected a keras.applications name, a functional keras.Model "
            "taking images (e.g. a keras.applications instance), or an FPNBackbone that returns its pyramid "
            "(return_features=False)."
        )
    return backbone


def check_arguments(num_classes, bounding_box_format, box_weights=None):
    """The constructor checks every detector makes, with errors that name the argument."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"Received num_classes={num_classes!r}; expected a positive integer.")
    if box_weights is not None and len(box_weights) != 4:
        raise ValueError(f"Received box_weights={box_weights!r}; expected 4 numbers for (y, x, h, w).")
    check_box_format(bounding_box_format)


def image_size(images):
    """`(height, width)` of an image batch: Python ints where the shape is static, scalar tensors where not."""
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        dynamic = ops.shape(images)
        height = dynamic[1] if height is None else height
        width = dynamic[2] if width is None else width
    return height, width


def map_sizes(features):
    """`(height, width)` of a feature map, static where known and read at run time where not."""
    dynamic = ops.shape(features)
    return tuple(dynamic[i] if features.shape[i] is None else features.shape[i] for i in (1, 2))


def pad_to_at_least(images, size):
    """`(images padded with zeros at the bottom and right to at least size x size, [batch, 2] content sizes)`;
    the sizes are None when nothing needed padding. Boxes of the content are the same in the padded images."""
    if len(images.shape) != 4:
        return images, None  # named by check_images
    height, width = images.shape[1], images.shape[2]
    if height is not None and width is not None:
        if height >= size and width >= size:
            return images, None
        pad_height, pad_width = max(size - height, 0), max(size - width, 0)
    else:
        height, width = image_size(images)
        pad_height, pad_width = ops.maximum(size - height, 0), ops.maximum(size - width, 0)
    batch = ops.shape(images)[0]
    sizes = ops.tile(ops.cast(ops.stack([height, width])[None], "float32"), (batch, 1))
    return ops.pad(images, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]]), sizes


def check_resize(size_divisible, resize_min_size, resize_max_size):
    for name, value in (("size_divisible", size_divisible), ("resize_min_size", resize_min_size),
                        ("resize_max_size", resize_max_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"Received {name}={value!r}; expected a positive integer or None.")
    if (resize_min_size is None) != (resize_max_size is None):
        raise ValueError(f"Received resize_min_size={resize_min_size!r}, resize_max_size={resize_max_size!r}; "
                         "expected both or neither.")


def range_size(height, width, min_size, max_size):
    """torchvision's `GeneralizedRCNNTransform` rule: the size `(height, width)` takes when scaled by
    `min(min_size / short side, max_size / long side)`, each side floored (`interpolate` with
    `recompute_scale_factor=True`). Python ints in and out where the sizes are static, float64 tensors where not."""
    if isinstance(height, int) and isinstance(width, int):
        scale = min(min_size / min(height, width), max_size / max(height, width))
        return int(height * scale), int(width * scale)
    height, width = ops.cast(height, "float64"), ops.cast(width, "float64")
    scale = ops.minimum(min_size / ops.minimum(height, width), max_size / ops.maximum(height, width))
    return ops.cast(ops.floor(height * scale), "int32"), ops.cast(ops.floor(width * scale), "int32")


def resize_to_range(images, image_sizes, min_size, max_size):
    """`(images resized by range_size, [batch, 2] content sizes after resizing, [batch, 2] (y, x) ratios original
    / resized)`. `image_sizes` (None: the whole input) is each image's content; the batch is resized by one scale,
    the input's."""
    from keras_fpn.ops.resize import resize_to

    height, width = image_size(images)
    new_height, new_width = range_size(height, width, min_size, max_size)
    resized = resize_to(ops.cast(images, "float32"), new_height, new_width, "bilinear")
    batch = ops.shape(images)[0]
    size = ops.cast(ops.stack([height, width]), "float32")
    new_size = ops.cast(ops.stack([new_height, new_width]), "float32")
    ratios = ops.tile((size / new_size)[None], (batch, 1))
    if image_sizes is None:
        content = ops.tile(new_size[None], (batch, 1))
    else:
        content = ops.floor(ops.cast(image_sizes, "float32") / ratios)
    return resized, content, ratios


def pad_to_multiple(images, multiple, pad_value=None):
    """Images padded at the bottom and right to sides that are multiples of `multiple`, with `pad_value` (a
    pixel, per channel; None pads with 0)."""
    height, width = image_size(images)
    pad_height, pad_width = (-height) % multiple, (-width) % multiple
    if pad_value is None:
        return ops.pad(images, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]])
    value = ops.convert_to_tensor(pad_value, images.dtype)
    return ops.pad(images - value, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]]) + value


PIXEL_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw")


def to_input_pixels(boxes, ratios, resized_height, resized_width, bounding_box_format):
    """Boxes `[batch, N, 4]` in a pixel `bounding_box_format` of the resized input, back in the original input's
    pixels (torchvision's `resize_boxes`): `keras_fpn.ops.boxes.to_original` with the scale `1 / ratios`."""
    boxes = bounding_boxes.convert_format(boxes, bounding_box_format, "xyxy", height=resized_height,
                                          width=resized_width)
    original = ratios * ops.cast(ops.stack([resized_height, resized_width]), "float32")[None]
    boxes = to_original(boxes, (1.0 / ratios)[:, None, :], original[:, None, :])
    return bounding_boxes.convert_format(boxes, "xyxy", bounding_box_format)


def content_limits(image_sizes, height, width, rank):
    """`(height, width)` to clip boxes `[batch, ..., 4]` of rank `rank` to: the input's own size, or each image's
    content size `[batch, 2]` shaped to broadcast against `boxes[..., 0]`."""
    if image_sizes is None:
        return height, width
    image_sizes = ops.cast(image_sizes, "float32")
    shape = (-1,) + (1,) * (rank - 2)
    return ops.reshape(image_sizes[:, 0], shape), ops.reshape(image_sizes[:, 1], shape)


def check_box_format(bounding_box_format):
    try:
        bounding_boxes.convert_format(ops.zeros((1, 4)), bounding_box_format, "xyxy", height=1, width=1)
    except Exception:  # noqa: BLE001 - Keras raises several types for an unknown format
        raise ValueError(
            f"Received bounding_box_format={bounding_box_format!r}; expected a format that "
            "keras.utils.bounding_boxes.convert_format knows: 'xyxy', 'yxyx', 'xywh', 'center_xywh', "
            "'center_yxhw', 'rel_xyxy', 'rel_yxyx', 'rel_xywh', 'rel_center_xywh'."
        ) from None


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


def backend_input(x):
    """`x` as the backend's `predict_on_batch` takes it: a TensorFlow tensor (from `tf.data`) becomes a NumPy array
    under the other backends (in a dict `{"images", "image_sizes"}` too)."""
    if isinstance(x, dict):
        return {key: backend_input(value) for key, value in x.items()}
    if keras.backend.backend() != "tensorflow" and type(x).__module__.startswith("tensorflow"):
        return np.asarray(x)
    return x


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

    Backends: under JAX everything (training, decoding, NMS) is `keras.ops` and runs jit-compiled, as Keras compiles
    by default there. Under TensorFlow, `predict` uses TensorFlow's own NMS, and the input checks its graph asserts;
    neither has an XLA kernel, so a detector does not ask for XLA there (`jit_compile="auto"` resolves to False, on
    GPU machines too). A `.keras` file records the saving backend's choice; loading decides anew ("auto").

    Inference options every detector takes as keyword arguments (torchvision's `GeneralizedRCNNTransform`, which
    the converted torchvision models need; `keras_fpn.convert`):
    - `resize_min_size`, `resize_max_size`: ints or None (default: `predict` takes images at the size given).
      When set, `predict` and the SavedModel resize each batch (bilinear, half-pixel centres: PyTorch's
      `interpolate(..., align_corners=False)`) by `min(resize_min_size / short side, resize_max_size / long
      side)`, sizes floored, and return boxes in the input's pixels. torchvision's detectors use 800 and 1333.
    - `size_divisible`: int or None (default: `2 ** max_level`). What the input sides are padded to
      (`input_multiple`); torchvision pads to 32. Padding uses the backbone's `pad_value` (the pixel that its
      preprocessing maps to 0, as torchvision pads normalised images with zeros).

    Class attributes a detector sets when it has a mask head: `uses_masks` (its `y` needs `"masks"`, and readers
    should load them) and `mask_resolution` (the side of its box-relative predicted masks).
    """

    # What the command line, export and evaluation do with the model: "detection" (boxes) or "segmentation".
    task = "detection"
    uses_masks = False
    mask_resolution = None
    mask_paste = "keras_fpn"

    def __init__(self, *args, size_divisible=None, resize_min_size=None, resize_max_size=None, **kwargs):
        check_resize(size_divisible, resize_min_size, resize_max_size)
        super().__init__(*args, **kwargs)
        if keras.backend.backend() == "tensorflow":
            self.supports_jit = False  # CombinedNonMaxSuppression and Assert have no XLA kernels
        self.size_divisible = size_divisible
        self.resize_min_size = resize_min_size
        self.resize_max_size = resize_max_size

    def init_contract(self, backbone, num_classes, bounding_box_format, max_detections, loss_names):
        """Sets the contract's attributes and one `Mean` tracker per loss (`{name}_tracker`, logged as `name`),
        plus `dropped_boxes_tracker` (boxes `fit` ignored: outside the image or without area). Called by each
        detector's constructor after `super().__init__`."""
        if self.resize_min_size is not None and bounding_box_format not in PIXEL_FORMATS:
            raise ValueError(f"Received bounding_box_format={bounding_box_format!r} with resize_min_size; a model "
                             f"that resizes its input returns boxes in the input's pixels: one of {PIXEL_FORMATS}.")
        self.backbone = backbone
        self.num_classes = num_classes
        self.bounding_box_format = bounding_box_format
        self.max_detections = max_detections
        for name in loss_names:
            setattr(self, f"{name}_tracker", keras.metrics.Mean(name=name))
        self.dropped_boxes_tracker = keras.metrics.Sum(name="dropped_boxes")

    @property
    def input_multiple(self):
        """What the input's height and width are padded to (`size_divisible`, by default the coarsest pyramid
        stride, so that every level tiles the image exactly): the training pipeline, the CLI and the exporter pad
        to it."""
        return self.size_divisible or 2 ** self.backbone.max_level

    @property
    def iou_types(self):
        """What COCO evaluation scores for this detector: `("bbox",)`, plus `"segm"` with a mask head."""
        return ("bbox", "segm") if self.uses_masks else ("bbox",)

    # -- training: targets, anchors and losses shared by every detector ----------------------------------------

    def pixel_targets(self, images, y):
        """`y` checked and in pixels: `(boxes [batch, M + 1, 4] xyxy clipped to the image, labels [batch, M + 1]
        (-1 for padding and for boxes left without area), number of boxes dropped, image height, image width)`."""
        boxes, labels = dense_targets(y)
        height, width = image_size(images)
        boxes = checks.check_box_scale(boxes, labels, height, width, self.bounding_box_format)
        boxes = bounding_boxes.convert_format(boxes, self.bounding_box_format, "xyxy", height=height, width=width)
        boxes, labels = checks.check_target_values(boxes, labels, self.num_classes, self.bounding_box_format)
        boxes, labels, dropped = checks.clip_and_drop(boxes, labels, height, width)
        return boxes, labels, dropped, height, width

    def anchors_from(self, y_pred, images=None):
        """`(anchors [N, 4] pixel xyxy, anchors per level)` for the pyramid maps in `y_pred`, on the levels of
        `self.anchor_generator`: sizes read from the maps themselves (static where known, at run time where not),
        so anchors and head outputs agree for every backbone and image size. `images` (the input batch) gives the
        input size that the torchvision anchor convention derives its strides from."""
        shapes, per_level, size = self._anchor_grid(y_pred, images)
        return self.anchor_generator(shapes, size), per_level

    def anchor_lookups(self, y_pred, images=None):
        """`anchors_from` for decoding: `(one function per level mapping indices to anchors, anchors per level)`
        (`AnchorGenerator.lookups`), so decoding computes only the anchors it selects and no table is built."""
        shapes, per_level, size = self._anchor_grid(y_pred, images)
        return self.anchor_generator.lookups(shapes, size), per_level

    def _anchor_grid(self, y_pred, images):
        generator = self.anchor_generator
        shapes = {level: map_sizes(y_pred[level_key("P", level)])
                  for level in range(generator.min_level, generator.max_level + 1)}
        per_level = [height * width * generator.anchors_per_location for height, width in shapes.values()]
        return shapes, per_level, None if images is None else image_size(images)

    def log_losses(self, losses, dropped, weights=None):
        """Logs each loss of `{name: value}` (to `{name}_tracker`) and the dropped boxes; returns their sum, each
        times its `weights[name]` (default 1), plus any layer losses. Under `tf.distribute` a replica's loss is its share of the global batch's, so the
        trackers (which average over replicas) log it times the replica count."""
        replicas = num_replicas()
        for name, value in losses.items():
            getattr(self, f"{name}_tracker").update_state(value * replicas)
        self.dropped_boxes_tracker.update_state(dropped)
        weights = weights or {}
        loss = sum(value * weights[name] if name in weights else value for name, value in losses.items())
        if self.losses:
            loss = loss + ops.sum(self.losses) / replicas
        return loss

    def compile_from_config(self, config):
        # Keras records jit_compile as resolved by the backend that saved the file (True under JAX, False here
        # under TensorFlow); the loading backend decides again: XLA under JAX, none under TensorFlow.
        super().compile_from_config({**config, "jit_compile": "auto"})

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

    def predict(self, x, *args, **kwargs):
        self._check_image_shape(x)
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_image_shape(x)
        return super().predict_on_batch(backend_input(x))

    def _check_image_shape(self, x):
        """The static image checks in Python for in-memory input: Keras retraces `predict` with relaxed shapes
        after calls of different ranks, and the traced check can then no longer name a wrong rank. Images smaller
        than the coarsest stride are fine here: `predict` pads them."""
        if _is_tf_dataset(x) or not hasattr(x, "shape") or getattr(x.shape, "rank", 0) is None:
            return
        checks.check_image_shape(tuple(x.shape), 1)

    def _check_in_memory(self, x, y):
        batch = _in_memory_batch(x, y)
        if batch is not None:
            checks.check_in_memory_batch(*batch, self.num_classes, self.bounding_box_format)
            if self.uses_masks and "masks" in y:
                checks.check_in_memory_masks(y["masks"], batch[0], batch[1])

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


    # -- input checks -------------------------------------------------------------------------------------------

    def _checked(self, data):
        """The batch with its images checked before the forward pass, so a bad batch gets an error naming the
        problem rather than Keras's message about some layer's input; the targets are checked in
        `compute_loss` (see `keras_fpn.detection.checks`)."""
        if isinstance(data, (tuple, list)) and data:
            return type(data)([checks.check_images(data[0], self.input_multiple), *data[1:]])
        return checks.check_images(data, self.input_multiple)

    def train_step(self, *args):
        # The batch is the last argument on every backend (JAX passes the training state first).
        return _multi_worker_logs(super().train_step(*args[:-1], self._checked(args[-1])))

    def test_step(self, *args):
        return _multi_worker_logs(super().test_step(*args[:-1], self._checked(args[-1])))

    # -- inference ----------------------------------------------------------------------------------------------

    def detect(self, images, image_sizes=None):
        """Detections `{"boxes" [batch, max_detections, 4] in bounding_box_format, "scores", "labels" (-1 past
        num_detections), "num_detections" [batch]}` of checked images, in the graph: what `predict` returns and
        what the exported SavedModel serves.

        `image_sizes`: None (the whole input is image) or `[batch, 2]` `(height, width)` of each image's content,
        which lies at the top left of a zero-padded input (as `resize_and_pad` lays it). Boxes are clipped to it,
        and boxes left narrower or lower than `keras_fpn.ops.boxes.MIN_BOX_SIZE` dropped before NMS (torchvision's
        `remove_small_boxes`), so a box in the padding never takes a detection slot."""
        raise NotImplementedError

    def predict_step(self, *args):
        if len(args) == 2:  # the JAX trainer: (state, data), and the state comes back with the detections
            return self._stateless_predict_step(*args)
        return self._detect_batch(args[0])

    def _detect_batch(self, data):
        """`detect` on what `predict` is given: images, `(images, ...)`, or `{"images", "image_sizes"}`. Images
        smaller than the coarsest stride are padded at the bottom and right, their own size kept as the content
        size (boxes are unaffected)."""
        images = data[0] if isinstance(data, (tuple, list)) else data
        image_sizes = None
        if isinstance(images, dict):
            images, image_sizes = images["images"], images.get("image_sizes")
        if self.resize_min_size is None:
            images, padded_sizes = pad_to_at_least(images, self.input_multiple)
            if image_sizes is None:
                image_sizes = padded_sizes
            return self.detect(checks.check_images(images, self.input_multiple), image_sizes)
        images = checks.check_images(images, 1)
        resized, content_sizes, ratios = resize_to_range(images, image_sizes, self.resize_min_size,
                                                         self.resize_max_size)
        height, width = image_size(resized)
        detections = self.detect(pad_to_multiple(resized, self.input_multiple, self.backbone.pad_value),
                                 content_sizes)
        detections["boxes"] = to_input_pixels(detections["boxes"], ratios, height, width, self.bounding_box_format)
        return detections

    def _stateless_predict_step(self, state, data):
        """`detect` as a pure function of the model state, as JAX's `predict` runs it (jit-compiled)."""
        trainable, non_trainable = state
        mapping = [*zip(self.trainable_variables, trainable), *zip(self.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = self._detect_batch(data)
        updated = [scope.get_current_value(variable) for variable in self.non_trainable_variables]
        return outputs, [new if new is not None else old for new, old in zip(updated, non_trainable)]


    # -- export ---------------------------------------------------------------------------------------------------

    def export(self, filepath, format="tf_saved_model", verbose=True, input_signature=None, **kwargs):
        """Keras's `model.export`, with the whole detector inside: uint8 images of one fixed size in, detections
        out (the backbone's preprocessing, decoding, NMS, boxes in input pixels), for `format` `"tf_saved_model"`,
        `"litert"` (a `.tflite` file) or `"onnx"` (an `.onnx` file). Arguments and outputs:
        `keras_fpn.export.formats.export_detector` (`image_size=(height, width)` when the model takes any size,
        `class_names` for the label map). For TF Serving (encoded images of any size, resized inside) use
        `keras_fpn.export.export_saved_model`."""
        from keras_fpn.export.formats import export_detector

        return export_detector(self, filepath, format, verbose=verbose, input_signature=input_signature, **kwargs)

    # -- precision -----------------------------------------------------------------------------------------------

    def with_dtype(self, dtype="bfloat16"):
        """A copy of this model whose layers keep their weights in, and compute in, `dtype`: the fast inference
        path on hardware with native bfloat16 (recent x86 CPUs with AVX512-BF16 or AMX, TPUs, Ampere+ GPUs).

        Every layer, the backbone's included, is rebuilt with the `dtype` policy and given this model's weights,
        cast once. Raw outputs stay float32 and decoding and NMS run in float32, so `predict`, `evaluate_coco`
        and `export_saved_model` work on the copy unchanged (the SavedModel then stores `dtype` weights). Speed
        and accuracy against float32: `benchmarks/README.md` ("bfloat16").

        Args:
            dtype: a float dtype policy name: `"bfloat16"` (default), `"float16"`, `"float32"`, or a mixed policy
                (`"mixed_bfloat16"`: float32 weights cast at every call; meant for training).

        Returns:
            A new, uncompiled model of the same class (this model is unchanged).
        """
        name = getattr(dtype, "name", dtype)
        if name not in ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"Received dtype={dtype!r}; expected 'bfloat16', 'float16', 'float32', "
                             "'mixed_bfloat16' or 'mixed_float16'.")
        policy = keras.dtype_policies.get(name)

        def retyped(config):
            # A serialized backbone names each layer's policy; every one becomes `dtype`.
            if isinstance(config, dict):
                if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
                    return {**config, "config": {**config["config"], "name": policy.name}}
                return {key: retyped(value) for key, value in config.items()}
            if isinstance(config, list):
                return [retyped(value) for value in config]
            return config

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            copy = type(self).from_config(retyped(self.get_config()))
        finally:
            keras.config.set_dtype_policy(previous)
        copy.set_weights(self.get_weights())
        return copy


    # -- serialization -----------------------------------------------------------------------------------------

    def get_config(self):
        """The arguments every detector shares; each detector adds its own. The backbone is stored built (with
        its weights' layout), so the pyramid arguments only describe it."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "backbone_weights": None,
            "min_level": self.backbone.min_level,
            "max_level": self.backbone.max_level,
            "num_channels": self.backbone.num_channels,
            "input_shape": self.backbone.image_shape,
            "backbone_kwargs": {},
            "bounding_box_format": self.bounding_box_format,
            "size_divisible": self.size_divisible,
            "resize_min_size": self.resize_min_size,
            "resize_max_size": self.resize_max_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- presets -----------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name, num_classes=None, backbone_weights="preset", **kwargs):
        """Builds the named configuration of the model zoo (`keras_fpn.models.list()`), or of a JSON record file.

        The record's `architecture` must be this class's (`keras_fpn.models.build` picks the class for you).

        Args:
            name: str, a zoo name such as `"retinanet_resnet50_fpn"`, or the path of a record `.json` file.
            num_classes: int or None. None takes the record's (80 for the COCO models).
            backbone_weights: `"preset"` (default: the record's, `"imagenet"` for the COCO models), `"imagenet"`,
                None (random), or a local weights file.
            **kwargs: further constructor arguments, overriding the record's (e.g. `score_threshold`,
                `input_shape`).

        Example:

        >>> model = RetinaNet.from_preset("retinanet_mobilenetv3small_shapes", num_classes=2)
        >>> model.num_classes, model.backbone.max_level
        (2, 5)
        """
        return cls(**presets.preset_arguments(cls, name, num_classes=num_classes, backbone_weights=backbone_weights,
                                              **kwargs))
