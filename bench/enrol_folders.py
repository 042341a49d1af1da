"""Enrol each person of the 5-celebrity set from their whole, unsorted train/ folder, one after another,
as a household would with a phone's folder: how many photos go in, how many are skipped (and why), how
many enrolments are refused. ``python bench/enrol_folders.py [--facepi-root CHECKOUT]``: the checkout's
``python -m facepi`` is run, so an older checkout can be measured the same way."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--facepi-root", type=Path, default=ROOT)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from facepi_convert import sources

    faces = sources.celebrity_faces(sources.cache_dir()) / "train"
    env = {**os.environ, "PYTHONPATH": str(args.facepi_root)}
    totals = {"photos": 0, "enrolled": 0, "skipped": 0, "failed": 0, "refused people": 0}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery.npz"
        for person in sorted(p.name for p in faces.iterdir()):
            folder = faces / person
            n = len(list(folder.iterdir()))
            r = subprocess.run([sys.executable, "-m", "facepi", "enroll", person, str(folder), "--gallery",
                                str(gallery)], cwd=args.facepi_root, env=env, capture_output=True, text=True)
            m = re.search(r"Enrolled (\d+) photo", r.stdout)
            enrolled = int(m.group(1)) if m else 0
            skipped = r.stderr.count("facepi: skipped:")
            failed = len(re.findall(r"facepi: .*(no face found|not a decodable)", r.stderr))
            refused = r.stderr.count("facepi: refused:")
            print(f"{person:<16} {n:>3} photos: exit {r.returncode}, {enrolled} enrolled, {skipped} skipped, "
                  f"{failed} without a face, {refused} refusal reason(s)")
            for line in r.stderr.splitlines():
                if "skipped:" in line or "refused:" in line or "note:" in line:
                    print(f"    {line.replace(str(folder) + '/', '')[:200]}")
            totals["photos"] += n
            totals["enrolled"] += enrolled
            totals["skipped"] += skipped
            totals["failed"] += failed
            totals["refused people"] += int(r.returncode == 2)
    print(", ".join(f"{k}: {v}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
