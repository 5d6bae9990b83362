"""The mask head of Mask R-CNN (He et al. 2017, arXiv 1703.06870) on the pyramid: the layer, its targets and its
loss.

Defaults and sources (torchvision `models/detection/mask_rcnn.py` and `roi_heads.py`, detectron2
`Base-RCNN-FPN.yaml` / `MaskRCNNConvUpsampleHead`): RoIAlign 14x14 (sampling ratio 2) from the level Eq. 1 picks;
4 x (3x3 conv, 256 channels, ReLU), a 2x2 stride-2 transposed conv + ReLU, a 1x1 conv to one 28x28 mask per class;
trained on the positive RoIs with per-pixel sigmoid cross-entropy of the ground-truth class's mask, whose target is
the instance mask cropped to the RoI and resized to 28x28 (RoIAlign on the mask, thresholded at 0.5).
"""

import keras
from keras import ops

from keras_fpn.detection.roi_align import crop_and_resize_boxes, sample_regions
from keras_fpn.utils.distribute import sum_over_replicas


@keras.saving.register_keras_serializable(package="keras_fpn")
class MaskHead(keras.layers.Layer):
    """`depth` x (3x3 conv + ReLU), a 2x2 stride-2 transposed conv + ReLU, and a 1x1 conv to `num_classes` mask
    logits: `[R, S, S, C]` pooled RoI features in, `[R, 2S, 2S, num_classes]` out (torchvision's
    `MaskRCNNHeads` + `MaskRCNNPredictor`, detectron2's `MaskRCNNConvUpsampleHead`).

    Args:
        num_classes: int. filters: int, default 256. depth: int, default 4.
        norm: None (default, convs with biases) or `"batch"`: convs without biases, each followed by
            BatchNormalization (torchvision's v2 `MaskRCNNHeads(..., norm_layer=nn.BatchNorm2d)`).
        norm_epsilon: float, default 1e-3 (Keras's); torchvision's `nn.BatchNorm2d` is 1e-5.
    """

    def __init__(self, num_classes, filters=256, depth=4, norm=None, norm_epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "batch"):
            raise ValueError(f"Received norm={norm!r}; expected None or 'batch'.")
        self.num_classes, self.filters, self.depth = num_classes, filters, depth
        self.norm, self.norm_epsilon = norm, norm_epsilon
        init = keras.initializers.HeNormal()  # detectron2's c2_msra_fill
        self.convs = [keras.layers.Conv2D(filters, 3, padding="same", activation=None if norm else "relu",
                                          use_bias=norm is None, kernel_initializer=init, dtype=self.dtype_policy,
                                          name=f"conv{index + 1}") for index in range(depth)]
        self.norms = [keras.layers.BatchNormalization(epsilon=norm_epsilon, dtype=self.dtype_policy,
                                                      name=f"conv{index + 1}_norm")
                      for index in range(depth if norm else 0)]
        self.upsample = keras.layers.Conv2DTranspose(filters, 2, strides=2, activation="relu",
                                                     kernel_initializer=init, dtype=self.dtype_policy,
                                                     name="upsample")
        self.predictor = keras.layers.Conv2D(num_classes, 1, dtype=self.dtype_policy, name="predictor",
                                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for index, conv in enumerate(self.convs):
            conv.build(shape)
            shape = (*shape[:3], self.filters)
            if self.norms:
                self.norms[index].build(shape)
        self.upsample.build(shape)
        self.predictor.build((shape[0], None, None, self.filters))
        self.built = True

    def call(self, x, training=None):
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = ops.relu(self.norms[index](x, training=training))
        return self.predictor(self.upsample(x))

    def compute_output_shape(self, input_shape):
        size = lambda side: None if side is None else 2 * side  # noqa: E731
        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "filters": self.filters, "depth": self.depth,
                "norm": self.norm, "norm_epsilon": self.norm_epsilon}


def mask_targets(masks, rois, gt_index, resolution):
    """Each RoI's target: its matched instance mask cropped to the RoI and resized to `resolution` squared.

    Args:
        masks: `[batch, M, H, W]` instance masks (0/1). rois: `[batch, R, 4]` pixel xyxy.
        gt_index: `[batch, R]` int, the mask of each RoI. resolution: int.

    Returns:
        float32 `[batch, R, resolution, resolution]` of 0 and 1: RoIAlign (one sample per output pixel, the
        half-pixel convention) of the mask, thresholded at 0.5, as detectron2 makes its targets.
    """
    if keras.backend.backend() != "tensorflow":
        return _mask_targets_gather(masks, rois, gt_index, resolution)
    import tensorflow as tf

    masks = tf.cast(tf.convert_to_tensor(masks) > 0, tf.float32)  # nonzero marks the object (0/1 or 0/255)
    batch, count = tf.shape(masks)[0], tf.shape(masks)[1]
    height, width = tf.shape(masks)[2], tf.shape(masks)[3]
    flat = tf.reshape(masks, [-1, height, width, 1])
    flat = tf.pad(flat, [[0, 0], [1, 1], [1, 1], [0, 0]])  # outside the image the mask is 0
    rois = tf.cast(rois, tf.float32)
    num_rois = tf.shape(rois)[1]
    index = tf.reshape(tf.cast(gt_index, tf.int32) + tf.range(batch)[:, None] * count, [-1])
    boxes = crop_and_resize_boxes(tf.reshape(rois, [-1, 4]), 1.0, height, width, resolution, 1)
    crops = tf.image.crop_and_resize(flat, boxes, index, [resolution, resolution], method="bilinear")
    return tf.reshape(tf.cast(crops[..., 0] >= 0.5, tf.float32), [batch, num_rois, resolution, resolution])


def _mask_targets_gather(masks, rois, gt_index, resolution):
    """`mask_targets` in `keras.ops` (JAX): the same samples (one per output pixel, zero outside the image)."""
    masks = ops.cast(ops.convert_to_tensor(masks) > 0, "float32")  # nonzero marks the object
    batch, count, height, width = (ops.shape(masks)[i] for i in range(4))
    flat = ops.reshape(masks, (batch, -1, 1))
    gt_index = ops.cast(gt_index, "int32")
    size = ops.ones_like(gt_index)
    rois = ops.cast(rois, "float32") - 0.5  # pixel i is centred at i + 0.5 in image coordinates
    samples = sample_regions(flat, gt_index * height * width, size * height, size * width, rois, resolution,
                             border="zero")
    return ops.cast(samples[..., 0] >= 0.5, "float32")


def mask_loss(logits, targets, labels, valid):
    """Per-pixel sigmoid cross-entropy of each positive RoI's ground-truth-class mask, averaged over its pixels,
    then over the positive RoIs (of the global batch, under `tf.distribute`).

    Args:
        logits: `[batch, R, S, S, K]`. targets: `[batch, R, S, S]` 0/1. labels: `[batch, R]` (K = background).
        valid: `[batch, R]` bool.
    """
    num_classes = int(logits.shape[-1])
    positive = valid & (labels < num_classes)
    class_index = ops.minimum(labels, num_classes - 1)[:, :, None, None, None]
    logits = ops.take_along_axis(logits, class_index, axis=-1)[..., 0]
    per_pixel = keras.losses.binary_crossentropy(targets[..., None], logits[..., None], from_logits=True)
    per_roi = ops.mean(per_pixel, axis=(2, 3))
    positive_f = ops.cast(positive, "float32")
    total = ops.maximum(sum_over_replicas(ops.sum(positive_f)), 1.0)
    return ops.sum(per_roi * positive_f) / total
