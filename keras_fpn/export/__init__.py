from keras_fpn.export.saved_model import SERVING_OUTPUTS, export_saved_model, serving_module

__all__ = ["SERVING_OUTPUTS", "export_saved_model", "serving_module"]
