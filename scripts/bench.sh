#!/usr/bin/env bash
# The benchmark suite: installs keras_fpn with the `bench` extra (keras-hub, for the side-by-side column), then
# runs benchmarks/suite.py: keras_fpn vs keras-hub, the bfloat16 path, and scaling. About 15 minutes on a 2-core
# CPU; arguments go to the suite, e.g. `bash scripts/bench.sh --write` (update benchmarks/README.md) or
# `bash scripts/bench.sh --tiny` (a smoke run of every row on tiny backbones, about a minute; CI runs this one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PYTHON" -m pip install --quiet -e ".[bench]"
"$PYTHON" benchmarks/suite.py "$@"
