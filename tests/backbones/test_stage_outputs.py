import keras
import pytest

from keras_fpn.backbones import find_stage_outputs, measure_strides


def branchy_model():
    """A tiny backbone with the traps real ones have: valid padding, padding layers, and a branch whose layer
    comes last in topological order but sees only part of the stage."""
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(images)
    x = keras.layers.ZeroPadding2D(1, name="pad1")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, name="down1")(x)  # valid padding
    stage1 = keras.layers.Conv2D(4, 3, padding="same", name="stage1_out")(x)
    branch = keras.layers.Conv2D(4, 1, name="branch_1x1")(stage1)
    branch = keras.layers.ZeroPadding2D(1, name="pad2")(branch)
    branch = keras.layers.Conv2D(4, 3, strides=2, name="down2_conv")(branch)
    pooled = keras.layers.MaxPooling2D(2, name="down2_pool")(stage1)
    merged = keras.layers.Concatenate(name="stage2_out")([branch, pooled])
    return keras.Model(images, merged)


def test_measured_strides_of_a_toy_model():
    strides = measure_strides(branchy_model())
    assert strides["stem"] == 1 and strides["pad1"] == 1
    assert strides["down1"] == strides["stage1_out"] == strides["branch_1x1"] == strides["pad2"] == 2
    assert strides["down2_conv"] == strides["down2_pool"] == strides["stage2_out"] == 4


def test_stage_output_is_the_layer_the_whole_stage_flows_through():
    # "branch_1x1" and "pad2" come after "stage1_out" at stride 2, but only "stage1_out" feeds both
    # downsampling paths; a padding layer is never a stage output.
    assert find_stage_outputs(branchy_model()) == {1: "stage1_out", 2: "stage2_out"}


def test_resnet50_stage_outputs():
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    assert find_stage_outputs(model, 2, 5) == {
        2: "conv2_block3_out", 3: "conv3_block4_out", 4: "conv4_block6_out", 5: "conv5_block3_out"
    }
    assert find_stage_outputs(model)[1] == "conv1_relu"  # not "pool1_pad", the padding before the max pool


def test_inception_v3_picks_the_mixed_blocks():
    """Valid padding shrinks InceptionV3's maps below H/2^l; the reduction blocks' branch convs come later in
    topological order than the stage outputs they read."""
    model = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(None, None, 3))
    assert find_stage_outputs(model, 3, 5) == {3: "mixed2", 4: "mixed7", 5: "mixed10"}


def test_mobilenet_v2_uses_the_expanded_activation_before_each_downsampling():
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.35)
    assert find_stage_outputs(model, 3, 5) == {3: "block_6_expand_relu", 4: "block_13_expand_relu", 5: "out_relu"}


def test_missing_level():
    with pytest.raises(ValueError, match=r"has no output at level\(s\) \[3\]"):
        find_stage_outputs(branchy_model(), 1, 3)


def test_not_a_functional_model():
    with pytest.raises(ValueError, match="Expected a functional keras.Model"):
        find_stage_outputs(keras.layers.Dense(2))
