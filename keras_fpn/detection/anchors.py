"""Anchors for every detector (RetinaNet's heads, the RPN of FasterRCNN and MaskRCNN), computed from the runtime
sizes of the pyramid maps."""

import math

from keras import ops

DEFAULT_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


class AnchorGenerator:
    """Anchor boxes for pyramid levels `min_level..max_level`, in pixel `xyxy` format.

    At level `l` (stride `s = 2^l`) every map location `(i, j)` has its centre at `((j + 0.5) s, (i + 0.5) s)`
    and `len(scales) * len(aspect_ratios)` anchors of area `(anchor_scale * s * scale)^2` and height/width ratio
    `aspect_ratio` (RetinaNet: `anchor_scale=4`, so base sizes 32..512 on P3..P7, scales 2^0, 2^(1/3), 2^(2/3),
    ratios 1:2, 1:1, 2:1; the RPN of FasterRCNN and MaskRCNN: `anchor_scale=8` and the one scale 1, so 32..512 on
    P2..P6, the same ratios). Anchors are ordered level by level, then row, column, scale-major over
    `(scale, aspect_ratio)` pairs, the same order as the flattened head outputs.

    Args:
        min_level: int, the finest level.
        max_level: int, the coarsest level.
        anchor_scale: float, default 4. Base anchor size in units of the level's stride.
        scales: sequence of float, multipliers of the base size.
        aspect_ratios: sequence of float, height / width.
    """

    def __init__(self, min_level, max_level, anchor_scale=4.0, scales=DEFAULT_SCALES,
                 aspect_ratios=DEFAULT_ASPECT_RATIOS):
        if not 1 <= min_level <= max_level:
            raise ValueError(f"Received min_level={min_level}, max_level={max_level}; expected 1 <= min <= max.")
        if anchor_scale <= 0 or not scales or not aspect_ratios or min(scales) <= 0 or min(aspect_ratios) <= 0:
            raise ValueError(
                f"Received anchor_scale={anchor_scale}, scales={scales}, aspect_ratios={aspect_ratios}; "
                "expected positive numbers and non-empty sequences."
            )
        self.min_level = min_level
        self.max_level = max_level
        self.anchor_scale = float(anchor_scale)
        self.scales = tuple(float(s) for s in scales)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)

    @property
    def anchors_per_location(self):
        return len(self.scales) * len(self.aspect_ratios)

    def cell_anchors(self, level):
        """The `[A, 4]` anchors of one location centred at 0, as Python floats: `(x1, y1, x2, y2)` rows."""
        stride = 2.0**level
        rows = []
        for scale in self.scales:
            size = self.anchor_scale * stride * scale
            for ratio in self.aspect_ratios:
                height, width = size * math.sqrt(ratio), size / math.sqrt(ratio)
                rows.append((-width / 2, -height / 2, width / 2, height / 2))
        return rows

    def level_anchors(self, level, height, width):
        """Anchors `[height * width * A, 4]` of one level whose map is `height x width` (ints or tensors)."""
        stride = 2.0**level
        ys = (ops.cast(ops.arange(height), "float32") + 0.5) * stride
        xs = (ops.cast(ops.arange(width), "float32") + 0.5) * stride
        cy, cx = ops.meshgrid(ys, xs, indexing="ij")
        centres = ops.stack([cx, cy, cx, cy], axis=-1)  # [h, w, 4]
        cells = ops.convert_to_tensor(self.cell_anchors(level), "float32")  # [A, 4]
        anchors = centres[:, :, None, :] + cells[None, None, :, :]
        return ops.reshape(anchors, (-1, 4))

    def __call__(self, level_shapes):
        """Anchors `[N, 4]` for `{level: (height, width)}`, concatenated in level order."""
        return ops.concatenate(
            [self.level_anchors(level, *level_shapes[level]) for level in range(self.min_level, self.max_level + 1)],
            axis=0,
        )
