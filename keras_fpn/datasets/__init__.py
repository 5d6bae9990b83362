from keras_fpn.datasets.augmentation import Augmentation
from keras_fpn.datasets.coco_json import load_coco_json
from keras_fpn.datasets.csv_file import load_csv
from keras_fpn.datasets.pipeline import detection_pipeline, resize_and_pad
from keras_fpn.datasets.records import DetectionData
from keras_fpn.datasets.shapes import SHAPE_CLASSES, generate_shapes, load_shapes, shapes_dataset
from keras_fpn.datasets.tfds_reader import load_tfds
from keras_fpn.datasets.voc import load_voc

__all__ = ["Augmentation", "DetectionData", "SHAPE_CLASSES", "detection_pipeline", "generate_shapes", "load_coco_json",
           "load_csv", "load_shapes", "load_tfds", "load_voc", "resize_and_pad", "shapes_dataset"]
