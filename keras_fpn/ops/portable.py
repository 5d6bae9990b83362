"""Tracing for graphs that leave TensorFlow: LiteRT (TFLite) files and ONNX files.

Under the TensorFlow backend, detection uses two TensorFlow ops that are fast there but that neither LiteRT's
builtin ops nor ONNX have: `combined_non_max_suppression` (NMS) and `crop_and_resize` (RoIAlign). Within
`portable()`, what is traced uses their portable forms instead: `keras_fpn.detection.nms.offset_nms` (TensorFlow's
`NonMaxSuppressionV5`: LiteRT's builtin `NON_MAX_SUPPRESSION_V5`, ONNX's `NonMaxSuppression`) and RoIAlign's
`"gather"` implementation (`keras.ops` gathers). Both give the same results as the ops they replace
(tests/export/test_formats.py compares the exports with `predict`).

`portable(decode_all_anchors=True)` also makes the dense detectors decode every anchor before selecting the top-k
boxes (`keras_fpn.detection.box_coding.decode_selected`), for LiteRT's dynamic-range quantization.
"""

import contextlib
import contextvars

_PORTABLE = contextvars.ContextVar("keras_fpn_portable", default=None)


@contextlib.contextmanager
def portable(decode_all_anchors=False):
    """Within this context, detection traces its portable ops (see the module docstring).

    Args:
        decode_all_anchors: bool, default False. Decode every anchor, then gather the top-k boxes, instead of
            gathering the top-k anchors from the constant anchor table (see `decode_selected`).
    """
    token = _PORTABLE.set({"decode_all_anchors": bool(decode_all_anchors)})
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def is_portable():
    """True while tracing within `portable()`."""
    return _PORTABLE.get() is not None


def decodes_all_anchors():
    """True while tracing within `portable(decode_all_anchors=True)`."""
    return bool(_PORTABLE.get() and _PORTABLE.get()["decode_all_anchors"])
