#!/usr/bin/env bash
# The main job, from a fresh machine: set-up (idempotent, no TensorFlow needed), then the
# door-camera daemon on the bundled demo input: a video made from real photos (four people
# enrolled, a fifth a stranger). With no broker configured, events print as JSON lines.
#   scripts/demo.sh [--fast] [--mqtt-host localhost] ...   (flags of 'facepi demo')
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ""
exec .venv/bin/facepi demo "$@"
