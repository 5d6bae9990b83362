import keras
import numpy as np
import pytest

from keras_fpn import FeaturePyramid
from tests.testing import assert_all_close, run_layer_test

# Odd, non-square sizes of a stride-8/16/32 backbone on a 200x264 image; small channel counts keep tests fast.
SIZES = {"C3": (25, 33), "C4": (13, 17), "C5": (7, 9)}
CHANNELS = {"C3": 6, "C4": 10, "C5": 12}


def make_features(batch=2, sizes=SIZES, channels=CHANNELS, seed=0):
    rng = np.random.default_rng(seed)
    return {
        key: rng.normal(size=(batch, *sizes[key], channels[key])).astype("float32") for key in sorted(sizes)
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_channels": 8},
        {"num_channels": 8, "fusion": "concat", "upsampling": "bilinear", "norm": "group", "norm_groups": 4},
        {"num_channels": 8, "extra_levels_from": "pyramid", "norm": "batch"},
        {"num_channels": 8, "top_down": False},
        {"num_channels": 8, "lateral": False, "min_level": 4, "max_level": 6},
        {"num_channels": 8, "min_level": 3, "max_level": 5, "kernel_regularizer": "l2"},
    ],
    ids=["paper", "concat-bilinear-group", "from-pyramid-batch", "no-top-down", "no-lateral-P4-P6", "no-extra"],
)
def test_layer_contract(kwargs):
    features = make_features()
    min_level, max_level = kwargs.get("min_level", 3), kwargs.get("max_level", 7)
    expected = {}
    height, width = SIZES["C5"]
    for level in range(min_level, max_level + 1):
        if level <= 5:
            size = SIZES[f"C{level}"]
        else:
            height, width = (height + 1) // 2, (width + 1) // 2
            size = (height, width)
        expected[f"P{level}"] = (2, *size, 8)
    run_layer_test(FeaturePyramid, kwargs, features, expected_output_shape=expected)


# -- numerics against a NumPy reference ---------------------------------------------------------------------


def np_conv2d_same(x, kernel, bias, stride=1):
    """Conv2D with TensorFlow's "same" padding (extra pad on the bottom/right)."""
    _, height, width, _ = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i : i + (out_h - 1) * stride + 1 : stride, j : j + (out_w - 1) * stride + 1 : stride]
            out += patch @ kernel[i, j]
    return out + (0 if bias is None else bias)


def np_resize_nearest(x, height, width):
    rows = np.minimum(((np.arange(height) + 0.5) * x.shape[1] / height).astype(int), x.shape[1] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * x.shape[2] / width).astype(int), x.shape[2] - 1)
    return x[:, rows][:, :, cols]


def np_feature_pyramid(layer, features, min_level, max_level, extra_levels_from):
    """The FPN of the paper written out in NumPy, with the layer's own weights."""

    def conv(conv_layer, x, stride=1):
        kernel = keras.ops.convert_to_numpy(conv_layer.kernel)
        return np_conv2d_same(x, kernel, keras.ops.convert_to_numpy(conv_layer.bias), stride)

    top = max(int(key[1:]) for key in features)
    merged = {top: conv(layer.lateral_convs[f"P{top}"], features[f"C{top}"])}
    for level in range(top - 1, min_level - 1, -1):
        c = features[f"C{level}"]
        up = np_resize_nearest(merged[level + 1], c.shape[1], c.shape[2])
        merged[level] = conv(layer.lateral_convs[f"P{level}"], c) + up
    outputs = {f"P{level}": conv(layer.output_convs[f"P{level}"], merged[level]) for level in range(min_level, top + 1)}
    x = features[f"C{top}"] if extra_levels_from == "backbone" else outputs[f"P{top}"]
    for level in range(top + 1, max_level + 1):
        if level > top + 1:
            x = np.maximum(x, 0)
        x = conv(layer.extra_convs[f"P{level}"], x, stride=2)
        outputs[f"P{level}"] = x
    return outputs


@pytest.mark.parametrize("extra_levels_from", ["backbone", "pyramid"])
def test_matches_numpy_reference(extra_levels_from):
    features = make_features(batch=1)
    layer = FeaturePyramid(num_channels=4, extra_levels_from=extra_levels_from, bias_initializer="random_normal")
    outputs = layer(features)
    expected = np_feature_pyramid(layer, features, 3, 7, extra_levels_from)
    assert list(outputs) == list(expected)
    for key in expected:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[key]), expected[key], atol=1e-4, rtol=1e-4)


def test_concat_fusion_uses_both_paths():
    features = make_features(batch=1)
    layer = FeaturePyramid(num_channels=4, fusion="concat", max_level=5)
    layer(features)
    assert tuple(layer.fuse_convs["P3"].kernel.shape) == (1, 1, 8, 4)
    assert set(layer.fuse_convs) == {"P3", "P4"}  # the top level has nothing to fuse with


# -- sizes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [(200, 264), (224, 224), (97, 131), (64, 480)])
def test_dynamic_sizes_in_one_model(image_size):
    """One model with (None, None) inputs serves images of any size, odd and non-square included."""
    inputs = {key: keras.Input((None, None, channels), name=key) for key, channels in CHANNELS.items()}
    model = keras.Model(inputs, FeaturePyramid(num_channels=8)(inputs))
    height, width = image_size
    sizes = {}
    for level in (3, 4, 5):
        sizes[f"C{level}"] = (-(-height // 2**level), -(-width // 2**level))
    outputs = model.predict(make_features(batch=1, sizes=sizes), verbose=0)
    for level in (3, 4, 5):
        assert outputs[f"P{level}"].shape == (1, *sizes[f"C{level}"], 8)
    assert outputs["P7"].shape[1:3] == (-(-sizes["C5"][0] // 4), -(-sizes["C5"][1] // 4))


def test_valid_padding_sizes():
    """Backbones with valid padding give maps a little less than half the finer one (InceptionV3: 35/17/8)."""
    sizes = {"C3": (35, 46), "C4": (17, 22), "C5": (8, 10)}
    outputs = FeaturePyramid(num_channels=4)(make_features(batch=1, sizes=sizes))
    assert outputs["P3"].shape == (1, 35, 46, 4) and outputs["P4"].shape == (1, 17, 22, 4)


def test_c2_to_c5_input_and_levels_below_min_are_ignored():
    sizes = {"C2": (50, 66), **SIZES}
    channels = {"C2": 4, **CHANNELS}
    features = make_features(batch=1, sizes=sizes, channels=channels)
    outputs = FeaturePyramid(min_level=2, max_level=6, num_channels=4)(features)
    assert list(outputs) == ["P2", "P3", "P4", "P5", "P6"]
    assert FeaturePyramid(min_level=3, max_level=5, num_channels=4)(features)["P3"].shape == (1, 25, 33, 4)


# -- the paper's ablations cut the information path ------------------------------------------------------------


def _changes(layer, features, source, target):
    before = keras.ops.convert_to_numpy(layer(features)[target])
    changed = dict(features, **{source: features[source] + 1.0})
    after = keras.ops.convert_to_numpy(layer(changed)[target])
    return not np.allclose(before, after)


def test_top_down_switch():
    features = make_features(batch=1)
    assert _changes(FeaturePyramid(num_channels=4), features, "C5", "P3")
    no_top_down = FeaturePyramid(num_channels=4, top_down=False)
    assert not _changes(no_top_down, features, "C5", "P3")
    assert not _changes(no_top_down, features, "C4", "P3")
    assert _changes(no_top_down, features, "C3", "P3")


def test_lateral_switch():
    features = make_features(batch=1)
    assert _changes(FeaturePyramid(num_channels=4), features, "C3", "P3")
    no_lateral = FeaturePyramid(num_channels=4, lateral=False)
    assert not _changes(no_lateral, features, "C3", "P3")
    assert not _changes(no_lateral, features, "C4", "P3")
    assert _changes(no_lateral, features, "C5", "P3")


def test_extra_levels_source():
    features = make_features(batch=1)
    from_backbone = FeaturePyramid(num_channels=4)
    from_backbone(features)
    assert tuple(from_backbone.extra_convs["P6"].kernel.shape) == (3, 3, CHANNELS["C5"], 4)
    from_pyramid = FeaturePyramid(num_channels=4, extra_levels_from="pyramid")
    from_pyramid(features)
    assert tuple(from_pyramid.extra_convs["P6"].kernel.shape) == (3, 3, 4, 4)
    assert tuple(from_pyramid.extra_convs["P7"].kernel.shape) == (3, 3, 4, 4)


# -- parameters ---------------------------------------------------------------------------------------------------


def test_parameter_count_for_resnet50_channels():
    """RetinaNet's FPN on ResNet50 (C3-C5 = 512/1024/2048 channels), P3-P7 at 256, counted by hand."""
    c, levels = 256, {"C3": 512, "C4": 1024, "C5": 2048}
    laterals = sum(channels * c + c for channels in levels.values())  # 1x1 convs with bias
    outputs = 3 * (9 * c * c + c)  # 3x3 convs on P3-P5
    extras = (9 * 2048 * c + c) + (9 * c * c + c)  # P6 from C5, P7 from P6
    layer = FeaturePyramid(num_channels=c)
    layer.build({key: (None, None, None, channels) for key, channels in levels.items()})
    assert layer.count_params() == laterals + outputs + extras == 7_997_440


def test_weight_names_are_per_level():
    layer = FeaturePyramid(num_channels=4, name="fpn")
    layer(make_features(batch=1))
    names = {weight.path.split("/")[1] for weight in layer.weights}
    assert names == {
        "lateral_P3", "lateral_P4", "lateral_P5", "output_P3", "output_P4", "output_P5", "extra_P6", "extra_P7"
    }


# -- dtype policies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    layer = FeaturePyramid(num_channels=8, dtype=policy, upsampling="bilinear")
    outputs = layer(make_features(batch=1))
    compute_dtype = policy.split("_")[1]
    for value in outputs.values():
        assert keras.backend.standardize_dtype(value.dtype) == compute_dtype
        assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))).all()
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)


def test_global_mixed_policy_is_respected():
    keras.config.set_dtype_policy("mixed_bfloat16")
    outputs = FeaturePyramid(num_channels=8)(make_features(batch=1))
    assert keras.backend.standardize_dtype(outputs["P3"].dtype) == "bfloat16"


# -- errors users can act on -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_level": 1, "max_level": 0}, "Received min_level=1, max_level=0"),
        ({"num_channels": 0}, "Received num_channels=0"),
        ({"fusion": "max"}, "Received fusion='max'"),
        ({"upsampling": "bicubic"}, "Received upsampling='bicubic'"),
        ({"extra_levels_from": "c5"}, "Received extra_levels_from='c5'"),
        ({"norm": "layer"}, "Received norm='layer'"),
        ({"norm": "group", "num_channels": 10, "norm_groups": 4}, "Received norm_groups=4"),
        ({"top_down": False, "lateral": False}, "top_down=False and lateral=False"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeaturePyramid(**kwargs)


@pytest.mark.parametrize(
    "features, message",
    [
        ({"C3": np.zeros((1, 8, 8, 4)), "X4": np.zeros((1, 4, 4, 4))}, "Received inputs key 'X4'"),
        ({"C3": np.zeros((1, 8, 8, 4)), "C5": np.zeros((1, 2, 2, 4))}, r"levels \[3, 5\]; expected contiguous"),
        ({"C3": np.zeros((8, 8, 4)), "C4": np.zeros((4, 4, 4))}, "of rank 3"),
        ({"C4": np.zeros((1, 8, 8, 4)), "C5": np.zeros((1, 4, 4, 4))}, "Received min_level=3 with input levels"),
    ],
    ids=["bad-key", "non-contiguous", "rank-3", "min-level-missing"],
)
def test_input_errors(features, message):
    features = {key: value.astype("float32") for key, value in features.items()}
    with pytest.raises(ValueError, match=message):
        FeaturePyramid(num_channels=4)(features)


def test_tensor_instead_of_dict():
    with pytest.raises(ValueError, match="expects a dict of backbone maps"):
        FeaturePyramid(num_channels=4)(np.zeros((1, 8, 8, 4), "float32"))


def test_two_calls_reuse_weights():
    layer = FeaturePyramid(num_channels=4)
    features = make_features(batch=1)
    first = layer(features)
    count = len(layer.weights)
    assert_all_close(layer(features), first)
    assert len(layer.weights) == count


def test_extra_levels_use_keras_same_padding_one_pixel_later_than_torchvision():
    """The documented convention (docs/detectors.md, "Numerics"): P6 = a stride-2 3x3 conv with Keras "same" padding, which on
    an even side pads 0 before and 1 after. With a kernel that passes only its centre tap, P6[i, j] is therefore
    C5[2i + 1, 2j + 1]; PyTorch's padding=1 (torchvision, detectron2) would give C5[2i, 2j]."""
    p6, c5 = _centre_tap_p6(FeaturePyramid(min_level=5, max_level=6, num_channels=2), (1, 4, 6, 2))
    np.testing.assert_allclose(p6[0], c5[0, 1::2, 1::2], atol=1e-6)
    assert not np.allclose(p6[0], c5[0, 0::2, 0::2])


def _centre_tap_p6(fpn, shape):
    """`(P6, C5)` as NumPy for a random C5 of `shape`, with P6's conv set to pass only its kernel's centre tap."""
    c5 = keras.random.normal(shape, seed=1)
    fpn({"C5": c5})
    conv = fpn.extra_convs["P6"]
    centre = np.zeros(tuple(conv.kernel.shape), "float32")
    centre[1, 1] = np.eye(shape[-1])
    conv.kernel.assign(centre)
    conv.bias.assign(np.zeros(tuple(conv.bias.shape), "float32"))
    return keras.ops.convert_to_numpy(fpn({"C5": c5})["P6"]), keras.ops.convert_to_numpy(c5)


def test_symmetric_extra_padding_samples_as_torchvision():
    """`extra_padding="symmetric"` pads 1 on every side (PyTorch's padding=1): with the centre-tap kernel, P6[i, j]
    is C5[2i, 2j], as in torchvision's LastLevelP6P7; the sizes stay ceil(n / 2) and the option round-trips."""
    fpn = FeaturePyramid(min_level=5, max_level=6, num_channels=2, extra_padding="symmetric")
    p6, c5 = _centre_tap_p6(fpn, (1, 4, 7, 2))
    np.testing.assert_allclose(p6[0], c5[0, 0::2, 0::2], atol=1e-6)
    assert FeaturePyramid.from_config(fpn.get_config()).extra_padding == "symmetric"
    with pytest.raises(ValueError, match="Received extra_padding='valid'"):
        FeaturePyramid(extra_padding="valid")
