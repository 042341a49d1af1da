"""Photo intake on phone photos: peak memory and time, against the old way, in the same run.

    .venv/bin/python bench/bench_intake.py [--runs 3]

Each measurement is a fresh process (peak RSS from ``wait4``), as a user's command is:

- ``facepi detect`` and ``facepi enroll`` on a 12 MP and a 48 MP phone photo (a
  5-celebrity photo upscaled, stored sideways with an EXIF Orientation tag);
- the reference: what facepi did before (full-size ``IMREAD_UNCHANGED`` decode, no
  EXIF, shrink to 2000 px, MTCNN), same photo, same models;
- detection over 100 CelebA dev photos of mixed sizes (``../shared/data/celeba-dev``,
  read in place; skipped when absent): RSS at the end with the byte-bounded
  interpreter cache, and with the cache unbounded (the old behaviour).

Targets (issue 8): 12 MP <= 350 MB and <= 1.5 s; 48 MP <= 500 MB; 100 mixed photos <= ~300 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi.demo import phone_photo  # noqa: E402

OLD_WAY = """
import sys, cv2, numpy as np
from facepi.vision.detect import Detector
data = np.fromfile(sys.argv[1], np.uint8)
img = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
h, w = img.shape[:2]
s = min(1.0, 2000 / max(h, w))
img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img
print(len(Detector().detect(img)[0]), "faces")
"""

MIXED = """
import sys, resource
from pathlib import Path
from facepi.vision.images import people_folders
from facepi.vision.photos import load_pipeline
pipe = load_pipeline()
if sys.argv[2] == "unbounded":
    for m in pipe.detector.nets.values():
        m.max_cached, m.max_cached_bytes = 10**9, 10**15
photos = [p for ps in people_folders(Path(sys.argv[1])).values() for p in ps][:100]
found = sum(bool(pipe.photo(p, embed=False).faces) for p in photos)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
cached = sum(len(m.cache) for m in pipe.detector.nets.values())
print(f"{found}/{len(photos)} with a face, RSS {rss:.0f} MB, {cached} interpreters cached")
"""


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS MB, wall seconds, last line of output) of one fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{cmd}: exit status {status >> 8}")
    return usage.ru_maxrss / 1024, wall, (out.strip().splitlines() or [""])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--celeba", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-dev")
    args = ap.parse_args()
    from facepi_convert import sources

    faces = sources.celebrity_faces(sources.cache_dir())
    src = sorted((faces / "val" / "madonna").glob("*.jpg"))[0]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'photo':<8}{'command':<30}{'peak RSS MB':>12}{'seconds':>9}   (median of {args.runs})")
        for mp in (12, 48):
            photo = Path(tmp) / f"phone_{mp}mp.jpg"
            phone_photo(src, photo, mp, orientation=6)
            rows = {
                "facepi detect": [py, "-m", "facepi", "detect", str(photo)],
                "facepi enroll": [py, "-m", "facepi", "enroll", "m", str(photo), "--gallery",
                                  str(Path(tmp) / "g.npz")],
                "reference (before: full decode)": [py, "-c", OLD_WAY, str(photo)],
            }
            results = {}
            for label, cmd in rows.items():
                runs = []
                for _ in range(args.runs):
                    Path(tmp, "g.npz").unlink(missing_ok=True)
                    runs.append(measure(cmd))
                rss = statistics.median(r[0] for r in runs)
                sec = statistics.median(r[1] for r in runs)
                results[label] = (rss, sec)
                print(f"{mp:>3} MP   {label:<30}{rss:>12.0f}{sec:>9.2f}   {runs[-1][2][:60]}")
            ref = results["reference (before: full decode)"]
            det = results["facepi detect"]
            print(f"         detect vs reference: {ref[0] / det[0]:.1f}x less memory, {ref[1] / det[1]:.1f}x faster")
        if args.celeba.is_dir():
            print("\n100 CelebA dev photos of mixed sizes, detection only:")
            for mode in ("bounded", "unbounded"):
                rss, sec, line = measure([py, "-c", MIXED, str(args.celeba), mode])
                print(f"   cache {mode:<10} peak RSS {rss:.0f} MB, {sec:.1f} s: {line}")
        else:
            print(f"\n{args.celeba}: absent, mixed-size measurement skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
