#!/usr/bin/env bash
# Installs keras_fpn with its test extras, then runs the whole test suite: everything under the TensorFlow
# backend (slow tests included), then the backend-agnostic layer and op tests again under JAX.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for a quick local run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PYTHON" -m pip install --quiet -e ".[test]"
echo "== tests, TensorFlow backend"
KERAS_BACKEND=tensorflow "$PYTHON" -m pytest --durations=15 "$@"
echo "== layer and op tests, JAX backend"
KERAS_BACKEND=jax "$PYTHON" -m pytest tests/layers tests/ops "$@"
