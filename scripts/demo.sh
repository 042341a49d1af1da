#!/usr/bin/env bash
# The main job, from a fresh machine: set-up (idempotent), then fetch the seed's models,
# convert them to TFLite in models/, verify them against TensorFlow and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh convert
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/facepi-convert "$@"
