from keras_fpn.evaluation.callback import COCOEvaluation, SegmentationEvaluation
from keras_fpn.evaluation.coco import (METRIC_NAMES, coco_metrics, collect_detections, evaluate_coco,
                                       evaluate_proposals, evaluation_batches, proposal_recall)
from keras_fpn.evaluation.segmentation import SegmentationScores, evaluate_segmentation

__all__ = ["COCOEvaluation", "METRIC_NAMES", "coco_metrics", "collect_detections", "evaluate_coco", "evaluate_proposals",
           "evaluation_batches", "proposal_recall", "SegmentationEvaluation", "SegmentationScores",
           "evaluate_segmentation"]
