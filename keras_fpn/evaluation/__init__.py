from keras_fpn.evaluation.coco import evaluate_coco

__all__ = ["evaluate_coco"]
