#!/usr/bin/env bash
# The offline converter (workstation): set-up with TensorFlow, then fetch, convert, verify, report.
#   scripts/convert.sh [fetch|convert|verify] [--precisions ...]   (flags of facepi-convert)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh convert
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/facepi-convert "$@"
