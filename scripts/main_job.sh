#!/usr/bin/env bash
# The main job, end to end on a fresh machine: installs keras_fpn; prints the pyramid of a ResNet50-FPN
# (levels, parameters, FLOPs); trains a small RetinaNet from scratch on generated shapes (random weights: nothing
# is downloaded), reports pycocotools mAP on held-out images, draws detections to runs/demo/detections.png,
# exports a SavedModel for TF Serving and runs one served prediction through it. About 6 minutes on a 2-core CPU.
# Arguments go to `keras-fpn demo`, e.g. `bash scripts/main_job.sh --steps 300` for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PYTHON" -m pip install --quiet -e .
"$PYTHON" -m keras_fpn.cli pyramid --backbone ResNet50 --weights none --image-size 512 640
"$PYTHON" -m keras_fpn.cli demo "$@"
