"""Anchors for every detector (RetinaNet's heads, the RPN of FasterRCNN and MaskRCNN), computed from the runtime
sizes of the pyramid maps.

Training matches every anchor, so it takes the whole table (`AnchorGenerator.__call__`). Decoding needs only the
anchors of the top-k winners, which `AnchorGenerator.lookups` computes from their indices (row, column and cell
shape) without the table, so an exported file stores no anchor table (it was 0.29 MB of float32 in the zoo's
320x320 phone detector).
"""

import functools
import math

import numpy as np
from keras import ops

DEFAULT_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)
CONVENTIONS = ("keras_fpn", "torchvision")


class AnchorGenerator:
    """Anchor boxes for pyramid levels `min_level..max_level`, in pixel `xyxy` format.

    At level `l` (stride `s = 2^l`) every map location `(i, j)` has its centre at `((j + 0.5) s, (i + 0.5) s)`
    and `len(scales) * len(aspect_ratios)` anchors of area `(anchor_scale * s * scale)^2` and height/width ratio
    `aspect_ratio` (RetinaNet: `anchor_scale=4`, so base sizes 32..512 on P3..P7, scales 2^0, 2^(1/3), 2^(2/3),
    ratios 1:2, 1:1, 2:1; the RPN of FasterRCNN and MaskRCNN: `anchor_scale=8` and the one scale 1, so 32..512 on
    P2..P6, the same ratios). Anchors are ordered level by level, then row, column, scale-major over
    `(scale, aspect_ratio)` pairs, the same order as the flattened head outputs.

    `convention="torchvision"` lays them as torchvision's `AnchorGenerator` does, which its trained weights
    need: sizes truncated to integers (`int(32 * 2 ** (1 / 3))` = 40), corners rounded to integers, the cell's
    anchors at the cell's top-left corner (`arange(width) * stride`, not its centre), the stride of a level taken
    as `image_size // map_size` of the padded input (121 instead of 128 for P7 of a 1216-wide input), and the
    anchors of a location ratio-major over `(aspect_ratio, scale)` pairs.

    Args:
        min_level: int, the finest level.
        max_level: int, the coarsest level.
        anchor_scale: float, default 4. Base anchor size in units of the level's stride.
        scales: sequence of float, multipliers of the base size.
        aspect_ratios: sequence of float, height / width.
        convention: `"keras_fpn"` (default) or `"torchvision"`.
    """

    def __init__(self, min_level, max_level, anchor_scale=4.0, scales=DEFAULT_SCALES,
                 aspect_ratios=DEFAULT_ASPECT_RATIOS, convention="keras_fpn"):
        if not 1 <= min_level <= max_level:
            raise ValueError(f"Received min_level={min_level}, max_level={max_level}; expected 1 <= min <= max.")
        if anchor_scale <= 0 or not scales or not aspect_ratios or min(scales) <= 0 or min(aspect_ratios) <= 0:
            raise ValueError(
                f"Received anchor_scale={anchor_scale}, scales={scales}, aspect_ratios={aspect_ratios}; "
                "expected positive numbers and non-empty sequences."
            )
        if convention not in CONVENTIONS:
            raise ValueError(f"Received convention={convention!r}; expected one of {CONVENTIONS}.")
        self.convention = convention
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
        if self.convention == "torchvision":
            # torchvision's AnchorGenerator.generate_anchors, in its float32 arithmetic.
            sizes = np.array([int(self.anchor_scale * stride * scale) for scale in self.scales], np.float32)
            heights = np.sqrt(np.array(self.aspect_ratios, np.float32))
            ws = ((1 / heights)[:, None] * sizes[None, :]).reshape(-1)
            hs = (heights[:, None] * sizes[None, :]).reshape(-1)
            return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2).tolist()
        rows = []
        for scale in self.scales:
            size = self.anchor_scale * stride * scale
            for ratio in self.aspect_ratios:
                height, width = size * math.sqrt(ratio), size / math.sqrt(ratio)
                rows.append((-width / 2, -height / 2, width / 2, height / 2))
        return rows

    def level_anchors(self, level, height, width, image_size=None):
        """Anchors `[height * width * A, 4]` of one level whose map is `height x width` (ints or tensors);
        `image_size` `(height, width)` of the padded input is needed by the torchvision convention."""
        stride_y, stride_x = self._strides(level, height, width, image_size)
        ys, xs = ops.cast(ops.arange(height), "float32"), ops.cast(ops.arange(width), "float32")
        if self.convention != "torchvision":  # torchvision: anchors at arange(size) * stride, not the cell centres
            ys, xs = ys + 0.5, xs + 0.5
        ys, xs = ys * stride_y, xs * stride_x
        cy, cx = ops.meshgrid(ys, xs, indexing="ij")
        centres = ops.stack([cx, cy, cx, cy], axis=-1)  # [h, w, 4]
        cells = ops.convert_to_tensor(self.cell_anchors(level), "float32")  # [A, 4]
        anchors = centres[:, :, None, :] + cells[None, None, :, :]
        return ops.reshape(anchors, (-1, 4))

    def _strides(self, level, height, width, image_size):
        """`(stride_y, stride_x)` of a level: `2^level`, or torchvision's `image_size // map_size`."""
        if self.convention != "torchvision":
            return 2.0**level, 2.0**level
        if image_size is None:
            raise ValueError("The torchvision anchor convention needs the input's image_size.")
        return (ops.cast(ops.floor_divide(image_size[0], height), "float32"),
                ops.cast(ops.floor_divide(image_size[1], width), "float32"))

    def anchors_at(self, level, height, width, index, image_size=None):
        """`level_anchors(level, height, width)[index]` for an int `index` of any shape (`[..., 4]`), computed from
        the index (location `index // A` at row-major `(row, column)`, cell shape `index % A`) with no table: the
        same float32 arithmetic as `level_anchors`, so the same values."""
        per_location = self.anchors_per_location
        index = ops.cast(index, "int32")
        location, cell = index // per_location, index % per_location
        row = ops.cast(location // ops.cast(width, "int32"), "float32")
        column = ops.cast(location % ops.cast(width, "int32"), "float32")
        stride_y, stride_x = self._strides(level, height, width, image_size)
        if self.convention != "torchvision":
            row, column = row + 0.5, column + 0.5
        cy, cx = row * stride_y, column * stride_x
        centres = ops.stack([cx, cy, cx, cy], axis=-1)
        return centres + ops.take(ops.convert_to_tensor(self.cell_anchors(level), "float32"), cell, axis=0)

    def lookups(self, level_shapes, image_size=None):
        """For `{level: (height, width)}`, one function per level, in level order, mapping an index into that
        level's anchors to the anchors (`anchors_at`); decoding passes them to `decode_selected`."""
        return [functools.partial(self.anchors_at, level, *level_shapes[level], image_size=image_size)
                for level in range(self.min_level, self.max_level + 1)]

    def __call__(self, level_shapes, image_size=None):
        """Anchors `[N, 4]` for `{level: (height, width)}`, concatenated in level order; `image_size` as in
        `level_anchors`."""
        return ops.concatenate(
            [self.level_anchors(level, *level_shapes[level], image_size=image_size)
             for level in range(self.min_level, self.max_level + 1)],
            axis=0,
        )


def table_lookups(anchors, level_sizes):
    """`AnchorGenerator.lookups` over a given table: one function per level mapping an index into the level's rows
    of `anchors [N, 4]` (`level_sizes` rows each, in order) to those rows."""
    starts, start = [], 0
    for size in level_sizes:  # ints, or scalar tensors for sizes known at run time
        starts.append(start)
        start = start + size
    return [functools.partial(_take_rows, anchors, start) for start in starts]


def _take_rows(anchors, start, index):
    return ops.take(anchors, index + start, axis=0)
