from keras_fpn.datasets.shapes import SHAPE_CLASSES, generate_shapes, shapes_dataset

__all__ = ["SHAPE_CLASSES", "generate_shapes", "shapes_dataset"]
