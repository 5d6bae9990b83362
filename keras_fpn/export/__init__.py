from keras_fpn.export.formats import FORMATS, export_detector, read_metadata
from keras_fpn.export.saved_model import SERVING_OUTPUTS, export_saved_model, serving_module

__all__ = ["FORMATS", "SERVING_OUTPUTS", "export_detector", "export_saved_model", "read_metadata", "serving_module"]
