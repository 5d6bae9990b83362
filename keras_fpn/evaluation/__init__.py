from keras_fpn.evaluation.callback import COCOEvaluation
from keras_fpn.evaluation.coco import (METRIC_NAMES, coco_metrics, collect_detections, evaluate_coco,
                                       evaluate_proposals, evaluation_batches, proposal_recall)

__all__ = ["COCOEvaluation", "METRIC_NAMES", "coco_metrics", "collect_detections", "evaluate_coco", "evaluate_proposals",
           "evaluation_batches", "proposal_recall"]
