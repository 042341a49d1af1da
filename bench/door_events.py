"""Door-video events: false "unknown" announcements per hour, with and without the face-quality gate.

    .venv/bin/python bench/door_events.py [--before DIR]

Two door videos from the 5-celebrity photos (every val photo one visit: the demo
video; every train photo one visit), each run through ``facepi run --fast`` on the
demo gallery (four people enrolled, ``mindy_kaling`` the stranger):
- **gated**: the defaults (an unknown face must be seen on 5 frames, detector score
  >= 0.95, landmark geometry of a face, >= 85 % of its box inside the frame);
- **ungated**: the same daemon with those gates off (1 frame, any score/shape/view);
- optionally **before**: another checkout of facepi (``--before``, e.g. a git
  worktree of an older commit) on the same videos.
Events are aligned with the visits in order (difflib): extra events are split into
false unknowns and repeated names; missed visits and wrong names are counted too.
Rates are per hour of video (media time).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi_convert import sources  # noqa: E402

from facepi.demo import make_video, prepare  # noqa: E402

FPS, HOLD, GAP = 10, 1.5, 3.0
UNGATED = {"FACEPI_RECOGNITION_UNKNOWN_MIN_FRAMES": "1", "FACEPI_RECOGNITION_MIN_FACE_SCORE": "0",
           "FACEPI_RECOGNITION_MAX_LANDMARK_ERROR": "1", "FACEPI_RECOGNITION_MIN_FACE_IN_VIEW": "0"}


def run(code: Path, video: Path, gallery: Path, env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "facepi", "run", "--source", str(video), "--classifier",
                           str(gallery), "--fast"], cwd=code, capture_output=True, text=True,
                          env={**os.environ, "FACEPI_MQTT_HOST": "", **env}, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"facepi run failed in {code}:\n{proc.stderr[-3000:]}")
    return [json.loads(line)["name"] for line in proc.stdout.splitlines()]


def score(expected: list[str], got: list[str]) -> dict[str, int]:
    out = {"events": len(got), "visits": len(expected), "false_unknown": 0, "repeated_name": 0, "missed": 0,
           "wrong_name": 0}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=expected, b=got, autojunk=False).get_opcodes():
        extra = got[j1:j2] if op == "insert" else got[j1 + (i2 - i1):j2] if op == "replace" else []
        out["false_unknown"] += sum(n == "unknown" for n in extra)
        out["repeated_name"] += sum(n != "unknown" for n in extra)
        if op in ("delete", "replace"):
            paired = min(i2 - i1, j2 - j1) if op == "replace" else 0
            out["wrong_name"] += paired
            out["missed"] += (i2 - i1) - paired
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="another facepi checkout to run on the same videos")
    args = ap.parse_args()
    cache = sources.cache_dir()
    faces = sources.celebrity_faces(cache)
    _, gallery = prepare(cache, log=lambda m: print(m, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="facepi-door-"))
    runs = {"gated": (ROOT, {}), "ungated": (ROOT, UNGATED)}
    if args.before:
        runs["before"] = (args.before.resolve(), {})
    totals = {k: {} for k in runs}
    hours = 0.0
    for split in ("val", "train"):
        photos = sorted(faces.glob(f"{split}/*/*.jpg"))
        video = make_video(photos, work / f"{split}.avi", fps=FPS, hold=HOLD, gap=GAP)
        hours += (GAP + len(photos) * (HOLD + GAP)) / 3600
        expected = ["unknown" if p.parent.name == "mindy_kaling" else p.parent.name for p in photos]
        for label, (code, env) in runs.items():
            s = score(expected, run(code, video, gallery, env))
            print(f"{split:5s} {label:8s} {json.dumps(s)}", file=sys.stderr)
            for k, v in s.items():
                totals[label][k] = totals[label].get(k, 0) + v
    print(f"\n{hours * 60:.1f} minutes of door video, {totals['gated']['visits']} visits "
          f"({sum(p.parent.name == 'mindy_kaling' for p in faces.glob('*/*/*.jpg'))} by the stranger)")
    print(f"{'run':8s} {'events':>6s} {'false unknown':>13s} {'per hour':>8s} {'repeats':>7s} {'missed':>6s} "
          f"{'wrong':>5s}")
    for label, t in totals.items():
        print(f"{label:8s} {t['events']:6d} {t['false_unknown']:13d} {t['false_unknown'] / hours:8.1f} "
              f"{t['repeated_name']:7d} {t['missed']:6d} {t['wrong_name']:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
