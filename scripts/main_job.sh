#!/usr/bin/env bash
# The main job, end to end on a fresh machine: installs keras_fpn, builds a Feature Pyramid over a
# keras.applications backbone (random weights: nothing is downloaded) and prints its levels, parameters and FLOPs.
# Arguments go to `keras-fpn pyramid`, e.g. `bash scripts/main_job.sh --backbone EfficientNetV2B0`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PYTHON" -m pip install --quiet -e .
"$PYTHON" -m keras_fpn.cli pyramid --backbone ResNet50 --weights none --image-size 512 640 "$@"
