import math

import keras
import numpy as np
import pytest

from keras_fpn.detection import AnchorGenerator


def test_hand_computed_anchors_at_p3():
    generator = AnchorGenerator(3, 3, anchor_scale=4.0, scales=(1.0,), aspect_ratios=(0.5, 1.0, 2.0))
    anchors = keras.ops.convert_to_numpy(generator({3: (2, 3)}))
    assert anchors.shape == (2 * 3 * 3, 4)
    r = 32 / math.sqrt(2) / 2  # half the short side of a 1:2 anchor of area 32^2
    # location (row 0, col 0): centre (4, 4); ratio 0.5 is wide (h = 32 sqrt(.5), w = 32 / sqrt(.5))
    np.testing.assert_allclose(anchors[0], [4 - 2 * r, 4 - r, 4 + 2 * r, 4 + r], atol=1e-4)
    np.testing.assert_allclose(anchors[1], [-12, -12, 20, 20], atol=1e-5)
    np.testing.assert_allclose(anchors[2], [4 - r, 4 - 2 * r, 4 + r, 4 + 2 * r], atol=1e-4)
    # location (row 0, col 1): centre x moves by the stride
    np.testing.assert_allclose(anchors[4], [-4, -12, 28, 20], atol=1e-5)
    # location (row 1, col 0): centre y = 12
    np.testing.assert_allclose(anchors[3 * 3 + 1], [-12, -4, 20, 28], atol=1e-5)


def test_retinanet_defaults():
    generator = AnchorGenerator(3, 7)
    assert generator.anchors_per_location == 9
    sides = [cell[2] - cell[0] for cell in generator.cell_anchors(7)]
    # square anchors at P7: 512 * 2^(k/3)
    np.testing.assert_allclose(sides[1::3], [512, 512 * 2 ** (1 / 3), 512 * 2 ** (2 / 3)], rtol=1e-6)
    anchors = generator({3: (80, 80), 4: (40, 40), 5: (20, 20), 6: (10, 10), 7: (5, 5)})
    assert anchors.shape == (9 * (6400 + 1600 + 400 + 100 + 25), 4)  # 76,725 at 640x640


def test_odd_and_runtime_sizes():
    generator = AnchorGenerator(3, 4, scales=(1.0,), aspect_ratios=(1.0,))
    anchors = keras.ops.convert_to_numpy(generator({3: (13, 17), 4: (7, 9)}))
    assert anchors.shape == (13 * 17 + 7 * 9, 4)
    np.testing.assert_allclose(anchors[13 * 17 - 1], [16 * 8 + 4 - 16, 12 * 8 + 4 - 16, 16 * 8 + 4 + 16, 12 * 8 + 4 + 16])


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received min_level=4, max_level=3"):
        AnchorGenerator(4, 3)
    with pytest.raises(ValueError, match="expected positive numbers"):
        AnchorGenerator(3, 4, aspect_ratios=(0.0,))


def test_torchvision_convention():
    """torchvision's AnchorGenerator for RetinaNet, worked by hand: sizes int(32 * 2^(k/3)) = 32, 40, 50; corners
    rounded; ratio-major order; anchors at arange * stride with stride = image_size // map_size."""
    generator = AnchorGenerator(3, 7, convention="torchvision")
    cells = generator.cell_anchors(3)
    # ratio 0.5 (h/w): w = size * sqrt(2), h = size / sqrt(2); halves rounded
    np.testing.assert_array_equal(cells[:3], [[-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18]])
    np.testing.assert_array_equal(cells[3:6], [[-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25]])
    np.testing.assert_array_equal(cells[6], [-11, -23, 11, 23])
    # P7 of a 1216-wide, 800-high input (P7 map 7 x 10): strides 800 // 7 = 114 and 1216 // 10 = 121.
    anchors = keras.ops.convert_to_numpy(generator.level_anchors(7, 7, 10, image_size=(800, 1216)))
    square = generator.cell_anchors(7)[3]
    last = anchors[-9 + 3]  # row 6, column 9, the first square anchor
    np.testing.assert_array_equal(last, [9 * 121 + square[0], 6 * 114 + square[1], 9 * 121 + square[2],
                                         6 * 114 + square[3]])
    with pytest.raises(ValueError, match="needs the input's image_size"):
        generator.level_anchors(7, 7, 10)
    with pytest.raises(ValueError, match="Received convention='detectron2'"):
        AnchorGenerator(3, 7, convention="detectron2")


@pytest.mark.parametrize("convention", ["keras_fpn", "torchvision"])
def test_anchors_at_indices_are_the_table_rows(convention):
    """Decoding computes the anchors of its top-k indices (`lookups`) instead of taking rows of the table: the same
    values, bit for bit, on odd map sizes, at every level, for map sizes known at trace time or (TensorFlow) only at
    run time."""
    generator = AnchorGenerator(3, 5, convention=convention)
    shapes, image = {3: (13, 17), 4: (7, 9), 5: (4, 5)}, (104, 136)
    table = keras.ops.convert_to_numpy(generator(shapes, image))
    index = np.random.default_rng(0).integers(0, 13 * 17 * 9, (2, 50)).astype("int32")
    index[0, :3] = [0, 13 * 17 * 9 - 1, 17 * 9 + 4]  # first and last anchor, row 1 column 0 cell 4
    start = 0
    for level, lookup in zip(shapes, generator.lookups(shapes, image)):
        size = shapes[level][0] * shapes[level][1] * 9
        level_index = index % size
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(lookup(level_index)), table[start + level_index])
        start += size
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([2], tf.int32), tf.TensorSpec([2, 50], tf.int32)])
    def runtime(size, level_index):
        return generator.lookups({3: (size[0], size[1]), 4: (7, 9), 5: (4, 5)}, image)[0](level_index)

    np.testing.assert_array_equal(runtime(tf.constant([13, 17]), index).numpy(), table[index])
