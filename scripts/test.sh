#!/usr/bin/env bash
# Installs keras_fpn with its test extras, then runs the whole test suite: everything under the TensorFlow
# backend (slow tests included), then the backend-agnostic layer and op tests and the JAX detector tests
# (tests/backends: fit, predict with keras.ops NMS, a .keras file loaded under TensorFlow) under JAX. Prints the 15
# slowest tests and the total time (measured times: benchmarks/README.md).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick tier.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PYTHON" -m pip install --quiet -e ".[test]"
start=$SECONDS
echo "== tests, TensorFlow backend"
# Two worker processes (pytest-xdist; KERAS_FPN_TEST_WORKERS to change): most tests spend their time tracing in
# single-threaded Python, so on 2 cores this is 1.5x faster than one process (benchmarks/README.md). Modules marked
# xdist_group stay on one worker, so their module fixtures (a trained run, an export) are built once.
KERAS_BACKEND=tensorflow "$PYTHON" -m pytest -n "${KERAS_FPN_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@"
echo "== layer, op and detector tests, JAX backend"
# One test file per worker: each file's module fixtures (a trained detector) are built once.
KERAS_BACKEND=jax "$PYTHON" -m pytest -n "${KERAS_FPN_TEST_WORKERS:-2}" --dist loadfile tests/layers tests/ops \
    tests/backends "$@"
elapsed=$((SECONDS - start))
echo "== test suite done in $((elapsed / 60)) min $((elapsed % 60)) s (installation not counted)"
