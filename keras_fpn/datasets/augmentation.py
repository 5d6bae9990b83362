"""Box-aware augmentation from Keras's own preprocessing layers, with padding boxes kept out of harm's way."""

import keras


class Augmentation:
    """Random horizontal flip, scale jitter with crop or pad, translation and colour jitter for detection batches.

    Built from Keras's box-aware preprocessing layers (`RandomFlip`, `RandomZoom`, `RandomTranslation`,
    `RandomColorJitter`, called with `{"images", "bounding_boxes": {"boxes", "labels"}}`), which move every box,
    the `[0, 0, 0, 0]` padding boxes included, and clip boxes to the image. Afterwards boxes narrower or shorter than
    `min_box_size` pixels (objects pushed out of the frame) and the padding are set back to box `0` / label `-1`.
    `keras.layers.RandomCrop` is not used: in Keras 3.15 its boxes do not follow its crop on batches (measured in
    `tests/datasets/test_augmentation.py`); zooming in crops instead.

    Args:
        horizontal_flip: bool, default True.
        scale_range: `(min, max)` object scale, default `(0.75, 1.33)`; above 1 zooms in (the image is cropped),
            below 1 zooms out (the image is padded with zeros). None turns it off.
        translation: float, default 0.1. Largest shift as a fraction of height and width; 0 turns it off.
        brightness: float, default 0.1. Largest brightness shift as a fraction of 255; 0 turns it off.
        contrast: float, default 0.2. Contrast scaled by a factor in `[1 - contrast, 1 + contrast]`.
        saturation: `(low, high)` Keras `RandomSaturation` factor, default `(0.35, 0.65)`; 0.5 is no change.
            None turns it off.
        min_box_size: float, default 2. Boxes smaller than this (pixels) after augmentation are dropped.
        seed: int or None.

    Call arguments:
        images: float32 `[batch, height, width, 3]` in [0, 255].
        targets: `{"boxes": [batch, num_boxes, 4] pixel xyxy, "labels": [batch, num_boxes]}`, padded with label -1;
            optional `"masks"` `[batch, num_boxes, H, W]` instance masks are moved with their boxes (flip, zoom,
            translation; colour changes leave them alone);
            other keys pass through.

    Returns:
        `(images, targets)` of the same shapes and dtypes.

    Example:

    >>> import numpy as np
    >>> augment = Augmentation(seed=1)
    >>> images = np.zeros((2, 64, 64, 3), "float32")
    >>> targets = {"boxes": np.array([[[8, 8, 40, 40]], [[0, 0, 0, 0]]], "float32"),
    ...            "labels": np.array([[0], [-1]], "int32")}
    >>> images, targets = augment(images, targets)
    >>> [int(v) for v in targets["labels"][:, 0]]
    [0, -1]
    """

    def __init__(self, horizontal_flip=True, scale_range=(0.75, 1.33), translation=0.1, brightness=0.1,
                 contrast=0.2, saturation=(0.35, 0.65), min_box_size=2.0, seed=None):
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"Received scale_range={scale_range!r}; expected (min, max) with 0 < min <= max.")
        if not 0 <= translation < 1:
            raise ValueError(f"Received translation={translation}; expected 0 <= translation < 1.")
        self.horizontal_flip = horizontal_flip
        self.scale_range = scale_range
        self.translation = translation
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.min_box_size = min_box_size
        self.seed = seed
        box_format = {"bounding_box_format": "xyxy"}
        self.layers = []
        if horizontal_flip:
            self.layers.append(keras.layers.RandomFlip("horizontal", seed=seed, **box_format))
        if scale_range is not None and scale_range != (1, 1):
            # RandomZoom scales coordinates by 1 + factor: object scale s is factor 1/s - 1.
            zoom = (1.0 / scale_range[1] - 1.0, 1.0 / scale_range[0] - 1.0)
            self.layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed, **box_format))
        if translation:
            self.layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="constant",
                                                              seed=seed, **box_format))
        if brightness or contrast or saturation is not None:
            self.layers.append(keras.layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=brightness or None, contrast_factor=contrast or None,
                saturation_factor=saturation, seed=seed, **box_format,
            ))

    def __call__(self, images, targets):
        from keras import ops

        labels = ops.cast(targets["labels"], "int32")
        data = {"images": images, "bounding_boxes": {"boxes": targets["boxes"], "labels": labels}}
        masks = targets.get("masks")
        if masks is not None:
            # Instance masks [B, N, H, W] ride along as the layers' segmentation masks [B, H, W, N + 1] (one spare
            # channel, so images without objects still have one), moved by the same random transform as the
            # image and its boxes, nearest-neighbour.
            masks = ops.transpose(ops.cast(masks, "float32"), (0, 2, 3, 1))
            data["segmentation_masks"] = ops.pad(masks, [[0, 0], [0, 0], [0, 0], [0, 1]])
        for layer in self.layers:
            data = layer(data, training=True)
        boxes = ops.cast(data["bounding_boxes"]["boxes"], "float32")
        width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        valid = (labels >= 0) & (width >= self.min_box_size) & (height >= self.min_box_size)
        targets = dict(targets)
        targets["boxes"] = ops.where(valid[..., None], boxes, 0.0)
        targets["labels"] = ops.where(valid, labels, -1)
        if masks is not None:
            moved = ops.transpose(data["segmentation_masks"][..., :-1], (0, 3, 1, 2))
            targets["masks"] = ops.cast(moved >= 0.5, "uint8")
        return ops.clip(data["images"], 0.0, 255.0), targets

    def get_config(self):
        return {"horizontal_flip": self.horizontal_flip, "scale_range": self.scale_range,
                "translation": self.translation, "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "min_box_size": self.min_box_size, "seed": self.seed}
