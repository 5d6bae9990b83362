"""Tracing for graphs that leave TensorFlow: LiteRT (TFLite) files and ONNX files.

Under the TensorFlow backend, detection uses two TensorFlow ops that are fast there but that neither LiteRT's
builtin ops nor ONNX have: `combined_non_max_suppression` (NMS) and `crop_and_resize` (RoIAlign). Within
`portable()`, what is traced uses their portable forms instead: `keras_fpn.detection.nms.offset_nms` (TensorFlow's
`NonMaxSuppressionV5`: LiteRT's builtin `NON_MAX_SUPPRESSION_V5`, ONNX's `NonMaxSuppression`) and RoIAlign's
`"gather"` implementation (`keras.ops` gathers). Both give the same results as the ops they replace
(tests/export/test_formats.py compares the exports with `predict`).
"""

import contextlib
import contextvars

_PORTABLE = contextvars.ContextVar("keras_fpn_portable", default=False)


@contextlib.contextmanager
def portable():
    """Within this context, detection traces its portable ops (see the module docstring)."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def is_portable():
    """True while tracing within `portable()`."""
    return _PORTABLE.get()
