import numpy as np
import pytest
from matplotlib.image import imread

from keras_fpn.visualization import save_detection_grid


def colour_fraction(picture, rgb):
    return np.mean(np.all(np.abs(picture[..., :3] - np.array(rgb) / 255.0) < 0.08, axis=-1))


def test_grid_png_shows_ground_truth_and_detections(tmp_path):
    images = np.full((3, 64, 96, 3), 40, np.uint8)
    detections = {"boxes": np.array([[[10, 10, 50, 40], [0, 0, 5, 5]]] * 3, np.float32),
                  "scores": np.array([[0.9, 0.1]] * 3), "labels": np.array([[1, 0]] * 3)}
    ground_truth = {"boxes": np.array([[[12, 12, 52, 42], [0, 0, 0, 0]]] * 3, np.float32),
                    "labels": np.array([[1, -1]] * 3)}
    path = save_detection_grid(str(tmp_path / "grid.png"), images, detections, ground_truth, ["a", "b"], columns=2)
    picture = imread(path)
    # 2 columns x 2 rows of 3-inch panels at 100 dpi, as high as the 64x96 images are: 600 x 2 * 200 pixels.
    assert picture.shape[:2] == (400, 600)
    assert colour_fraction(picture, (0xFF, 0x17, 0x44)) > 0.001  # detection red
    assert colour_fraction(picture, (0x00, 0xC8, 0x53)) > 0.001  # ground-truth green


def test_nothing_drawn_below_threshold(tmp_path):
    images = np.full((1, 64, 64, 3), 40, np.uint8)
    detections = [(np.array([[10, 10, 50, 40]]), np.array([0.2]), np.array([0]))]
    picture = imread(save_detection_grid(str(tmp_path / "none.png"), images, detections, score_threshold=0.3))
    assert colour_fraction(picture, (0xFF, 0x17, 0x44)) == 0.0


def test_masks_of_a_mask_rcnn_are_tinted_in(tmp_path):
    images = np.full((1, 64, 64, 3), 40, np.uint8)
    detections = {"boxes": np.array([[[8, 8, 56, 56]]], np.float32), "scores": np.array([[0.9]]),
                  "labels": np.array([[0]]), "masks": np.ones((1, 1, 28, 28), np.float32)}
    with_masks = imread(save_detection_grid(str(tmp_path / "masks.png"), images, detections))
    detections.pop("masks")
    without = imread(save_detection_grid(str(tmp_path / "boxes.png"), images, detections))
    # The tint: half the image's grey (40) and half the first mask colour (255, 23, 68).
    tint = (0.5 * 40 + 0.5 * 255, 0.5 * 40 + 0.5 * 23, 0.5 * 40 + 0.5 * 68)
    assert colour_fraction(with_masks, tint) > 0.2 and colour_fraction(without, tint) == 0.0


def test_labels_of_overlapping_boxes_do_not_cover_each_other():
    """Three detections on almost the same box (what NMS keeps across classes) get three readable labels: their
    rendered label boxes do not overlap. A label with room keeps its place at its box's corner."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from keras_fpn.visualization import draw_boxes

    figure = Figure(figsize=(3, 2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes([0, 0, 1, 1])
    boxes = np.array([[20, 30, 120, 90], [21, 31, 118, 92], [22, 29, 119, 88], [150, 60, 190, 95]], np.float32)
    draw_boxes(axes, np.full((100, 200, 3), 40, np.uint8), boxes, np.array([0, 1, 2, 0]),
               np.array([0.9, 0.8, 0.7, 0.6]), ["rectangle", "ellipse", "triangle"])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    extents = [text.get_bbox_patch().get_window_extent(renderer) for text in axes.texts]
    assert len(extents) == 4
    for i in range(3):
        for j in range(i + 1, 4):
            assert not extents[i].overlaps(extents[j]), (i, j, extents[i], extents[j])
    assert axes.texts[3].get_position() == (150.0, 60.0)


def test_class_maps_are_blended_by_hand():
    from keras_fpn.visualization import CLASS_COLORS, blend_class_map

    image = np.full((2, 3, 3), 100, np.uint8)
    class_map = np.array([[0, 1, 2], [255, 1, 21]])
    blended = blend_class_map(image, class_map, alpha=0.25)
    assert blended.dtype == np.uint8
    np.testing.assert_array_equal(blended[0, 0], [100, 100, 100])  # background: left alone
    np.testing.assert_array_equal(blended[1, 0], [100, 100, 100])  # the ignore label: left alone
    for (y, x), k in (((0, 1), 1), ((1, 1), 1), ((0, 2), 2), ((1, 2), 1)):  # class 21 takes colour 21 % 20
        np.testing.assert_array_equal(blended[y, x], np.round(0.75 * 100 + 0.25 * CLASS_COLORS[k]))
    with pytest.raises(ValueError, match=r"class map of shape \(3, 2\) for an image of shape \(2, 3, 3\)"):
        blend_class_map(image, class_map.T)


def test_segmentation_grid_shows_predictions_beside_masks(tmp_path):
    from PIL import Image

    from keras_fpn.visualization import save_segmentation_grid

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    masks = rng.integers(0, 4, (3, 40, 60))
    path = save_segmentation_grid(str(tmp_path / "seg.png"), images, masks[::-1], masks=masks,
                                  class_names=["background", "a", "b", "c"], columns=2)
    width, height = Image.open(path).size
    assert (width, height) == (1200, int(round((3 * 40 / 60 * 2 + 0.6) * 100)))  # 2 images x 2 panels per row
    with pytest.raises(ValueError, match="3 images, 2 class maps and 3 masks"):
        save_segmentation_grid(str(tmp_path / "bad.png"), images, masks[:2], masks=masks)
