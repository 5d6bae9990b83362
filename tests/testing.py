"""The one shared harness for keras_fpn layers: the same checks for every layer, no special cases."""

import csv
import inspect
import json
import os
import tempfile

import keras
import numpy as np

BASE_LAYER_CONFIG_KEYS = {"name", "trainable", "dtype"}


# -- small detectors shared by the tests ----------------------------------------------------------------------


def tiny_convnet(channels=(8, 8, 16, 16, 16), input_shape=(None, None, 3)):
    """A five-stage functional ConvNet (strides 2 to 32: Conv 3x3 stride 2 + BatchNorm + ReLU per stage).

    The backbone of the unit tests' detectors. FPNBackbone finds its stages by measured stride like any
    keras.applications model, and the detector code never sees a difference; but its train step traces in a few
    seconds, where MobileNetV3Small's 300 variables take about 20 s (tests that are about keras.applications
    models keep using them).
    """
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for stage, filters in enumerate(channels, start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"stage{stage}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"stage{stage}_bn")(x)
        x = keras.layers.ReLU(name=f"stage{stage}_relu")(x)
    return keras.Model(inputs, x, name="tiny_convnet")


def tiny_retinanet(num_classes=3, **kwargs):
    """A RetinaNet on `tiny_convnet`, P3-P5 with 16 channels and one 16-channel conv per head.

    Keyword arguments override these (e.g. `backbone="MobileNetV3Small"` for a keras.applications backbone).
    """
    from keras_fpn import RetinaNet

    args = dict(backbone=tiny_convnet(), backbone_weights=None, min_level=3, max_level=5, num_channels=16,
                head_filters=16, head_depth=1)
    args.update(kwargs)
    return RetinaNet(num_classes=num_classes, **args)


TRAINED_TINY_RETINANET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "trained",
                                      "tiny_retinanet_shapes.weights.h5")


def trained_tiny_retinanet(weights=TRAINED_TINY_RETINANET):
    """A RetinaNet on a wider `tiny_convnet` (112,527 parameters) for 128x128 shapes, with the weights that
    tests/fixtures/make_trained_tiny_retinanet.py trained (AP 0.365, AP50 0.539 on 100 held-out images): the tests'
    detector whose scores mean something, for checks that random weights cannot make (int8 export). `weights=None`
    leaves it untrained."""
    model = tiny_retinanet(backbone=tiny_convnet(channels=(16, 16, 32, 32, 32)), num_channels=32, head_filters=32,
                           head_depth=2)
    model(np.zeros((1, 128, 128, 3), "float32"))
    if weights is not None:
        model.load_weights(weights)
    return model


def constructor_arguments(cls):
    """Names of `cls.__init__`'s explicit arguments (not self, *args or **kwargs)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def assert_config_matches_constructor(layer, init_kwargs):
    """`get_config()` holds exactly the constructor's arguments, with the values that were passed."""
    config = layer.get_config()
    assert set(config) - BASE_LAYER_CONFIG_KEYS == constructor_arguments(type(layer)), (
        f"get_config() keys {sorted(set(config) - BASE_LAYER_CONFIG_KEYS)} differ from the constructor "
        f"arguments {sorted(constructor_arguments(type(layer)))}"
    )
    primitive = (bool, int, float, str, type(None))
    for key, value in init_kwargs.items():
        # Objects given by name ("l2", "glorot_uniform") are stored serialized; compare plain values only.
        if isinstance(value, primitive) and isinstance(config[key], primitive):
            assert config[key] == value, f"get_config()[{key!r}] is {config[key]!r}; constructed with {value!r}"


def _symbolic_like(inputs):
    """Symbolic inputs with unknown batch and spatial sizes, keeping channels and dtype."""

    def make(name, x):
        return keras.Input(shape=(None,) * (len(x.shape) - 2) + (x.shape[-1],), dtype=keras.backend.standardize_dtype(x.dtype), name=name)

    if isinstance(inputs, dict):
        return {key: make(key, value) for key, value in inputs.items()}
    return make("inputs", inputs)


def _shapes(structure):
    return keras.tree.map_structure(lambda x: tuple(x.shape), structure)


def assert_all_close(actual, expected, atol=1e-6):
    actual, expected = keras.tree.flatten(actual), keras.tree.flatten(expected)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=atol, rtol=0)


def run_layer_test(layer_cls, init_kwargs, inputs, expected_output_shape=None):
    """Builds `layer_cls(**init_kwargs)` and checks the contract every keras_fpn layer keeps.

    1. `get_config()` holds exactly the constructor arguments, with the values passed;
    2. an eager call gives outputs whose shapes equal `compute_output_shape` (and `expected_output_shape`);
    3. a symbolic call on inputs of unknown batch and spatial size gives the same structure and channels;
    4. `from_config(get_config())` with the same weights gives identical outputs;
    5. a functional model around it, saved to `.keras` and loaded, gives identical outputs.

    Returns the eager outputs for further checks.
    """
    layer = layer_cls(**init_kwargs)
    assert_config_matches_constructor(layer, init_kwargs)

    eager = layer(inputs)
    _assert_same_shapes(_shapes(eager), layer.compute_output_shape(_shapes(inputs)))
    if expected_output_shape is not None:
        _assert_same_shapes(_shapes(eager), expected_output_shape)

    symbolic_inputs = _symbolic_like(inputs)
    symbolic = layer(symbolic_inputs)
    # The same structure, and the same last dimension wherever the symbolic call knows it (a flattened output such
    # as the RPN head's [batch, H * W * A] cannot know it for unknown H and W).
    symbolic_last = keras.tree.flatten(keras.tree.map_structure(lambda x: x.shape[-1], symbolic))
    eager_last = keras.tree.flatten(keras.tree.map_structure(lambda x: x.shape[-1], eager))
    assert len(symbolic_last) == len(eager_last)
    assert all(s is None or s == e for s, e in zip(symbolic_last, eager_last)), (symbolic_last, eager_last)
    model = keras.Model(symbolic_inputs, symbolic)
    assert_all_close(model(inputs), eager)

    clone = layer_cls.from_config(layer.get_config())
    clone(inputs)
    clone.set_weights(layer.get_weights())
    assert_all_close(clone(inputs), eager)

    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_all_close(loaded(inputs), eager, atol=0)
    return eager


def _assert_same_shapes(actual, expected):
    if isinstance(actual, dict):
        assert isinstance(expected, dict) and list(actual) == list(expected), (list(actual), expected)
        for key in actual:
            _assert_same_shapes(actual[key], expected[key])
        return
    assert tuple(actual) == tuple(expected), f"shape {tuple(actual)} != expected {tuple(expected)}"


def find_raccoon():
    """The raccoon photographs (`../shared/datasets/raccoon` from the project root), or None.

    Looked for in `$KERAS_FPN_RACCOON`, then as `shared/datasets/raccoon` beside the project root or any folder
    above it (a clone elsewhere on the machine finds it from `/work/shared`). The data is never copied here.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.environ.get("KERAS_FPN_RACCOON", "")]
    folder = root
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        candidates.append(os.path.join(folder, "shared", "datasets", "raccoon"))
    candidates.append("/work/shared/datasets/raccoon")
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "annotations")):
            return candidate
    return None


# -- raccoon CSV helpers shared by the reader and evaluation tests ----------------------------------------------


def csv_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def csv_boxes(rows):
    """{filename: boxes [M, 4]} from CSV rows, in row order."""
    boxes = {}
    for row in rows:
        boxes.setdefault(row["filename"], []).append([float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
    return {name: np.array(value, np.float32) for name, value in boxes.items()}


def write_coco_json(path, rows, category_id=7, crowd_box=True, empty_image=True):
    """The raccoon CSV rows as a COCO detection file (xywh boxes), with an extra crowd box and an unlabelled
    image so that those paths are exercised too."""
    images, annotations = [], []
    for image_id, name in enumerate(dict.fromkeys(row["filename"] for row in rows), start=1):
        row0 = next(row for row in rows if row["filename"] == name)
        images.append({"id": image_id, "file_name": name, "width": int(row0["width"]),
                       "height": int(row0["height"])})
        for row in rows:
            if row["filename"] == name:
                x1, y1, x2, y2 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
    if crowd_box:
        annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": category_id,
                            "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 1})
    if empty_image:
        images.append({"id": len(images) + 1, "file_name": images[0]["file_name"], "width": images[0]["width"],
                       "height": images[0]["height"]})
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": category_id, "name": "raccoon", "supercategory": "animal"}]}, file)
    return path
