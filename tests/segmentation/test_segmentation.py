"""Semantic segmentation: SemanticFPN (Panoptic FPN's semantic branch) and the U-Net baseline, their loss, data and
scores."""

import os

import keras
import numpy as np
import pytest

from keras_fpn.datasets.segmentation import load_segmentation_folder, segmentation_pipeline
from keras_fpn.datasets.shapes import SEGMENTATION_CLASSES, generate_segmentation_shapes
from keras_fpn.evaluation import SegmentationEvaluation
from keras_fpn.evaluation.segmentation import SegmentationScores, evaluate_segmentation
from keras_fpn.segmentation import SemanticFPN, SemanticFPNHead, UNet, segmentation_loss
from tests.testing import run_layer_test

SMALL = {"backbone": "MobileNetV3Small", "backbone_weights": None}


def _fpn(**kwargs):
    # BatchNorm momentum 0.9: a backbone trained from scratch in a few hundred steps (as the shapes detectors).
    return SemanticFPN(num_classes=len(SEGMENTATION_CLASSES), num_channels=32, head_filters=16,
                       backbone_kwargs={"backbone_kwargs": {"minimalistic": True}, "batchnorm_momentum": 0.9},
                       **SMALL, **kwargs)


def test_semantic_head_through_the_layer_harness():
    """P2-P5 in, logits at 4x P2's size out; each level gets max(1, l - 2) conv stages (the paper's Fig. 3)."""
    rng = np.random.default_rng(0)
    features = {f"P{level}": rng.normal(size=(2, 32 // 2 ** (level - 2), 24 // 2 ** (level - 2), 8)).astype(
        "float32") for level in range(2, 6)}
    run_layer_test(SemanticFPNHead, {"num_classes": 3, "filters": 8}, features, expected_output_shape=(2, 128, 96, 3))
    head = SemanticFPNHead(3, filters=8)
    head(features)
    assert [len(head.stages[f"P{level}"]) for level in range(2, 6)] == [1, 1, 2, 3]
    assert head.stages["P2"][0][1].groups == 8  # GroupNorm, 32 groups or the channels when fewer
    run_layer_test(SemanticFPNHead, {"num_classes": 3, "filters": 8, "aggregation": "concat", "norm": None},
                   features, expected_output_shape=(2, 128, 96, 3))


@pytest.mark.parametrize("build", ["fpn", "unet"])
def test_any_image_size_gives_maps_of_that_size(build):
    """Odd sizes are padded to the stride inside and the logits cropped back; `predict` gives class maps."""
    model = _fpn() if build == "fpn" else UNet(num_classes=3, decoder_filters=(16, 16, 8, 8, 8), **SMALL)
    images = np.random.default_rng(1).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    logits = model(images)
    assert tuple(logits.shape) == (2, 67, 93, model.num_classes) and logits.dtype == "float32"
    classes = model.predict(images, verbose=0)
    assert classes.shape == (2, 67, 93) and classes.dtype == np.int32
    np.testing.assert_array_equal(classes, np.argmax(keras.ops.convert_to_numpy(logits), axis=-1))


def test_loss_skips_the_ignore_label():
    """Cross-entropy over the labelled pixels only, by hand."""
    logits = np.random.default_rng(2).normal(size=(1, 2, 3, 4)).astype("float32")
    masks = np.array([[[0, 255, 3], [255, 255, 1]]])
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_probabilities[0, 0, 0, 0], log_probabilities[0, 0, 2, 3], log_probabilities[0, 1, 2, 1]])
    np.testing.assert_allclose(float(segmentation_loss(masks, logits)), expected, rtol=1e-5)
    assert float(segmentation_loss(np.full((1, 2, 3), 255), logits)) == 0.0


def test_scores_by_hand():
    """One confusion matrix over all batches; the ignore label is not counted; absent classes left out."""
    scores = SegmentationScores(num_classes=3)
    scores.update(np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]]))
    scores.update(np.array([[1, 255]]), np.array([[0, 2]]))
    np.testing.assert_array_equal(scores.confusion_matrix, [[1, 1, 0], [1, 2, 0], [0, 0, 0]])
    result = scores.result()
    assert result["per_class_iou"]["0"] == pytest.approx(1 / 3)
    assert result["per_class_iou"]["1"] == pytest.approx(2 / 4)
    assert np.isnan(result["per_class_iou"]["2"])
    assert result["mIoU"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="Received every_n_epochs=0"):
        SegmentationEvaluation(None, every_n_epochs=0)


def test_generated_set_and_pipeline_keep_masks_on_their_images():
    images, masks = generate_segmentation_shapes(6, 64, seed=3)
    assert images.shape == (6, 64, 64, 3) and masks.shape == (6, 64, 64)
    assert set(np.unique(masks)) <= set(range(len(SEGMENTATION_CLASSES)))
    assert (masks == len(SEGMENTATION_CLASSES) - 1).any()  # thin lines are there
    again = generate_segmentation_shapes(6, 64, seed=3)
    np.testing.assert_array_equal(again[1], masks)
    # A mask that marks one image's own pixels stays on them through flips and nearest resizing: paint the
    # labelled pixels a pure colour and check the colour is found exactly where the mask says.
    painted = images.copy()
    painted[masks > 0] = (255, 0, 0)
    painted[masks == 0] = (0, 0, 255)
    for batch_images, batch_masks in segmentation_pipeline(painted, masks, batch_size=3, image_size=(48, 80)):
        batch_images, batch_masks = batch_images.numpy(), batch_masks.numpy()
        assert batch_masks.dtype == np.int32 and batch_masks.shape == (3, 48, 80)
        red = (batch_images[..., 0] > 250) & (batch_images[..., 2] < 5)
        blue = (batch_images[..., 2] > 250) & (batch_images[..., 0] < 5)
        assert np.all(batch_masks[red] > 0) and np.all(batch_masks[blue] == 0)


@pytest.mark.slow
def test_semantic_fpn_learns_shapes_and_saves(tmp_path):
    """600 steps on generated 64x64 shapes take mIoU well above an untrained model's, and the `.keras` file
    gives the same class maps."""
    keras.utils.set_random_seed(0)
    train = generate_segmentation_shapes(256, 64, seed=0)
    test = generate_segmentation_shapes(32, 64, seed=1)
    model = _fpn()
    before = evaluate_segmentation(model, *test)["mIoU"]
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    # The callback logs the scores of the model as the epoch leaves it: those evaluate_segmentation gives after fit.
    callback = SegmentationEvaluation(segmentation_pipeline(*test, batch_size=8, flip=False, shuffle=False),
                                      class_names=SEGMENTATION_CLASSES, per_class=True)
    history = model.fit(segmentation_pipeline(*train, batch_size=16, repeat=True), steps_per_epoch=600, epochs=1,
                        verbose=0, callbacks=[callback]).history
    after = evaluate_segmentation(model, *test, class_names=SEGMENTATION_CLASSES)
    # Measured: 0.115 untrained, 0.387 after (pixel accuracy 0.857).
    assert after["mIoU"] > max(0.25, before + 0.15), (before, after)
    assert history["val_mIoU"] == [pytest.approx(after["mIoU"])]
    assert history["val_pixel_accuracy"] == [pytest.approx(after["pixel_accuracy"])]
    assert history["val_IoU/line"] == [pytest.approx(after["per_class_iou"]["line"], nan_ok=True)]
    path = os.path.join(tmp_path, "semantic_fpn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(test[0][:4], verbose=0), model.predict(test[0][:4], verbose=0))


def test_the_documented_examples_run():
    """The README's segmentation example and the docstring examples of the segmentation modules run as written."""
    import doctest

    from keras_fpn.evaluation import segmentation as scores_module
    from keras_fpn.segmentation import semantic_fpn, unet
    from tests.test_readme import run_python_example

    namespace = run_python_example("SemanticFPN(", "the README example is run under TensorFlow")
    assert namespace["classes"].shape == (16, 64, 64)
    assert 0.0 <= namespace["scores"]["mIoU"] <= 1.0
    for module in (semantic_fpn, unet, scores_module):
        failed, attempted = doctest.testmod(module, extraglobs={"keras": keras})
        assert attempted > 0 and failed == 0, module.__name__


def test_a_voc_style_folder_reads_labels_not_colours(tmp_path):
    """Palette PNG masks (VOC's SegmentationClass) give their indices, 255 borders kept; resizing keeps labels."""
    from PIL import Image

    images, masks = generate_segmentation_shapes(3, (40, 56), seed=5)
    masks[:, 0, :] = 255  # a VOC-style void border
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(tmp_path / "JPEGImages" / f"im{index}.png")
        palette = Image.fromarray(mask, mode="P")
        palette.putpalette([value for k in range(256) for value in (k * 37 % 256, k * 91 % 256, k * 53 % 256)])
        palette.save(tmp_path / "SegmentationClass" / f"im{index}.png")
    read_images, read_masks = load_segmentation_folder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass")
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_masks, masks)
    _, resized = load_segmentation_folder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", (80, 112),
                                          names=["im1"])
    np.testing.assert_array_equal(resized[0], np.repeat(np.repeat(masks[1], 2, axis=0), 2, axis=1))
    Image.fromarray(images[0]).save(tmp_path / "SegmentationClass" / "im0.png")  # an RGB "mask"
    with pytest.raises(ValueError, match="expected label indices"):
        load_segmentation_folder(tmp_path / "JPEGImages", tmp_path / "SegmentationClass")


def test_the_saved_model_serves_class_maps_at_each_images_size(tmp_path):
    """Encoded images of two sizes in one request: each class map equals predict's on that image, padded with 255."""
    import tensorflow as tf

    from keras_fpn.export import export_segmentation_saved_model

    model = UNet(num_classes=3, decoder_filters=(16, 16, 8, 8, 8), **SMALL)
    images = [generate_segmentation_shapes(1, size, seed=index)[0][0] for index, size in enumerate(((45, 70),
                                                                                                    (64, 50)))]
    path = export_segmentation_saved_model(model, str(tmp_path / "export"), class_names=["a", "b", "c"])
    served = tf.saved_model.load(path).signatures["serving_default"]
    outputs = served(images=tf.stack([tf.io.encode_png(image) for image in images]))
    np.testing.assert_array_equal(outputs["image_size"].numpy(), [[45, 70], [64, 50]])
    maps = outputs["class_map"].numpy()
    assert maps.shape == (2, 64, 70)
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        np.testing.assert_array_equal(maps[index, :height, :width], model.predict(image[None], verbose=0)[0])
        assert np.all(maps[index, height:] == 255) and np.all(maps[index, :, width:] == 255)


def test_coco_instances_become_class_maps(tmp_path):
    """Category i is i + 1 in id order, background 0; a small instance listed before a large one it lies on stays
    visible; crowd regions are ignored (255); an image without annotations is all background."""
    import json

    from PIL import Image

    from keras_fpn.datasets.segmentation import load_coco_semantic

    def square(x1, y1, x2, y2):
        return [[x1, y1, x2, y1, x2, y2, x1, y2]]

    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / name)
    coco = {"images": [{"id": 5, "file_name": "a.png", "width": 30, "height": 20},
                       {"id": 6, "file_name": "b.png", "width": 30, "height": 20}],
            "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
            "annotations": [
                {"id": 1, "image_id": 5, "category_id": 3, "bbox": [5, 5, 4, 4], "segmentation": square(5, 5, 9, 9)},
                {"id": 2, "image_id": 5, "category_id": 7, "bbox": [2, 2, 12, 12],
                 "segmentation": square(2, 2, 14, 14)},
                {"id": 3, "image_id": 5, "category_id": 3, "bbox": [20, 8, 6, 8], "iscrowd": 1,
                 "segmentation": square(20, 8, 26, 16)}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    images, maps, names = load_coco_semantic(str(tmp_path / "instances.json"), str(tmp_path))
    assert names == ("background", "cat", "dog") and images.shape == (2, 20, 30, 3) and maps.dtype == np.uint8
    first = maps[0]
    assert first[7, 7] == 1  # the cat, on top of the larger dog
    assert first[3, 12] == 2 and first[12, 3] == 2  # the dog around it
    assert first[12, 23] == 255  # the crowd region
    assert first[0, 0] == 0 and first[18, 28] == 0 and first[12, 17] == 0
    assert set(np.unique(first)) == {0, 1, 2, 255}
    assert not maps[1].any()
    small = load_coco_semantic(str(tmp_path / "instances.json"), str(tmp_path), image_size=(10, 15), max_images=1)
    assert small[0].shape == (1, 10, 15, 3) and small[1][0, 3, 3] == 1  # nearest neighbour: labels stay labels


def test_a_prepared_tfds_segmentation_dataset_reads_with_its_label_map(tmp_path):
    """A TFDS dataset with `image` and `segmentation_mask` (built here from generated shapes, stored as a
    1-based trimap like oxford_iiit_pet's) reads back with the label map applied and values it lacks ignored."""
    import tensorflow_datasets as tfds

    from keras_fpn.datasets.segmentation import load_tfds_segmentation

    images, masks = generate_segmentation_shapes(4, 32, seed=3)
    stored = np.where(masks > 0, 1, 2).astype(np.uint8)  # 1 object, 2 background ...
    stored[:, 0, :] = 3  # ... and 3 a border row, as a trimap

    class ShapesTrimap(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for index in range(len(images)):
                yield index, {"image": images[index], "segmentation_mask": stored[index, ..., None]}

    ShapesTrimap(data_dir=str(tmp_path)).download_and_prepare()
    read_images, read_masks = load_tfds_segmentation("shapes_trimap", data_dir=str(tmp_path),
                                                     label_map={1: 1, 2: 0})
    assert read_images.shape == (4, 32, 32, 3) and read_masks.shape == (4, 32, 32)
    expected = {tuple(np.where(masks[i] > 0, 1, 0)[1:].ravel()) for i in range(4)}  # TFDS orders by key hash
    assert {tuple(mask[1:].ravel()) for mask in read_masks} == expected
    assert (read_masks[:, 0] == 255).all()  # the border value is not in the label map: ignored
    with pytest.raises(ValueError, match="'mnist' is not a segmentation dataset"):
        load_tfds_segmentation("mnist", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="'oxford_iiit_pet' is not prepared"):
        load_tfds_segmentation("oxford_iiit_pet", data_dir=str(tmp_path))
