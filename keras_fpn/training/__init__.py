from keras_fpn.training.checkpoint import CheckpointError, TrainingCheckpoint, restore_checkpoint
from keras_fpn.training.distribute import STRATEGIES, StrategyError, is_chief, make_strategy
from keras_fpn.training.recipe import build_augmentation, build_optimizer, learning_rate_schedule
from keras_fpn.training.schedules import LinearWarmup
from keras_fpn.training.trainer import (fit_resumable, load_run, save_run, schedule_length, train_detector,
                                        train_segmenter)
