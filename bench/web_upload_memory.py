"""Peak memory of the web page's enrolment child (``facepi.web.uploads.enrol`` in a process of its own, as
``facepi web`` runs it) for phone-sized photos: a 12 MP JPEG and a 48 MP HEIC (8064x6048, an iPhone's
largest), each made here from a real face photo. The unit's MemoryMax is 500M; the reference is the same
child with the models loaded and no photo decoded (a first enrolment of a 0.1 MP photo).

    nice .venv/bin/python bench/web_upload_memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import re, sys
from pathlib import Path
from facepi.web import uploads
try:
    lines, _ = uploads.enrol(Path(sys.argv[1]), "Test", [Path(sys.argv[2])], "", 1)
    said = lines[0][1]
except Exception as e:
    said = f"refused: {e}"
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(hwm / 1024, said[:80])
"""

def peak(photo: Path, tmp: Path) -> tuple[float, str]:
    """The child's peak RSS enrolling ``photo`` into a copy of the gallery (an existing one, as at home)."""
    import shutil

    gallery = tmp / f"g-{photo.stem}.db"
    shutil.copy(tmp / "base.db", gallery)
    out = subprocess.run([sys.executable, "-c", CHILD, str(gallery), str(photo)], capture_output=True, text=True,
                         check=True).stdout.strip().split(" ", 1)
    return float(out[0]), out[1]

def main() -> None:
    import pillow_heif
    from PIL import Image

    root = Path.home() / ".cache/facepi"
    faces = sorted(root.rglob("5-celebrity-faces-dataset/train/madonna/*.jpg"))
    face = faces[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from facepi.identity import family
        from facepi.vision.photos import load_pipeline

        family.enrol(tmp / "base.db", "Test", load_pipeline(), faces[1:6])  # the household's gallery
        im = Image.open(face).convert("RGB")
        small = tmp / "small.jpg"
        im.resize((300, 400)).save(small, quality=90)
        jpeg12 = tmp / "phone12mp.jpg"
        im.resize((3024, 4032)).save(jpeg12, quality=90)
        heic48 = tmp / "phone48mp.heic"
        pillow_heif.from_pillow(im.resize((6048, 8064))).save(heic48, quality=50)
        ref, _ = peak(small, tmp)
        print(f"reference (models loaded, 0.1 MP photo): {ref:.0f} MB peak RSS")
        for p in (jpeg12, heic48):
            mb, said = peak(p, tmp)
            print(f"{p.name}: {mb:.0f} MB peak RSS ({mb / ref:.2f}x the reference; MemoryMax 500 MB): {said}")

if __name__ == "__main__":
    main()
