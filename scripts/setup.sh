#!/usr/bin/env bash
# Idempotent set-up used by both README commands: Debian packages, a venv in .venv,
# facepi installed (editable) with the extras asked for. Safe to run again and again;
# pip's cache (~/.cache/pip) and the model cache (~/.cache/facepi) make reruns fast.
#   scripts/setup.sh EXTRAS [DEBIAN_PACKAGE...]     (EXTRAS: e.g. convert,test; "" for none)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1-}
shift || true

apt_needed=()
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_needed+=(python3-venv)
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || apt_needed+=("$pkg")
done
if ((${#apt_needed[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing Debian packages: ${apt_needed[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.installed-$(sha256sum < pyproject.toml | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing facepi${extras:+[$extras]} into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
