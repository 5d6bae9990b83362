from keras_fpn.export.formats import FORMATS, export_detector, read_metadata
from keras_fpn.export.saved_model import SERVING_OUTPUTS, export_saved_model, serving_module
from keras_fpn.export.segmentation import SEGMENTATION_OUTPUTS, export_segmentation_saved_model

__all__ = ["FORMATS", "SEGMENTATION_OUTPUTS", "SERVING_OUTPUTS", "export_detector", "export_saved_model",
           "export_segmentation_saved_model", "read_metadata", "serving_module"]
