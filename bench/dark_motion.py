"""The motion gate in the dark: walk-ins seen, and false motion on the empty scene, at 12 % brightness.

    .venv/bin/python bench/dark_motion.py [--brightness 0.12] [--json]

The door video of ``facepi.demo.door_scene`` (twelve walk-ins of the 5-celebrity val
photos: each person slides in from the right over 0.5 s, stays 2 s, slides out; light
drifting slowly), then darkened to ``--brightness`` of its light with the noise a dark
camera adds at high gain: shot noise (variance grows with the signal), read noise, and
row banding that changes every frame (see :func:`dark`). A second, empty video of the
same door gives the false motion. Each frame goes through ``MotionGate`` as the daemon
uses it. Printed: walk-ins seen (the gate says "moving" between 0.5 s before and 0.5 s
after the face is fully in view), frames with false motion on the empty scene (after the
first second) and the largest share of it that changed (motion needs ``min_area``), the
median threshold the gate used, and how many of the walk-ins' faces the detector finds on
the dark frame (for reference: what the gate must not hide). ``--old`` measures a gate with
the fixed threshold (``pixel_threshold`` grey levels whatever the scene) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi.demo import door_scene  # noqa: E402
from facepi.door.frames import Frame  # noqa: E402
from facepi.door.motion import MotionGate  # noqa: E402

FPS, HOLD, GAP, LEAD = 15.0, 2.0, 4.0, 4.0


def dark(rgb: np.ndarray, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` as a camera at high gain shows it at ``brightness`` of its light: the signal scaled down,
    then per pixel and channel shot noise (variance 1.5 x the signal, in grey levels) and read noise
    (sigma 4), and a banding offset per row (sigma 1.5), new every frame. At full light (1.0) the frame
    as it is (the door scene's own mild noise: a camera at low gain)."""
    if brightness >= 1.0:
        return rgb
    signal = rgb.astype(np.float32) * brightness
    h, w = signal.shape[:2]
    sigma = np.sqrt(1.5 * signal + 16.0)
    noisy = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    noisy += 1.5 * rng.standard_normal((h, 1, 1), dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def walk_ins(faces: Path, n: int = 12) -> list[tuple[Path, float, float]]:
    """n visits (photo, first sighting, hold), the val photos in turn over the five people."""
    people = sorted(p for p in (faces / "val").iterdir() if p.is_dir())
    photos = [sorted(people[i % len(people)].glob("*.jpg"))[i // len(people)] for i in range(n)]
    return [(p, LEAD + i * (HOLD + GAP), HOLD) for i, p in enumerate(photos)]


def frames(video: Path):  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def measure(visits_video: Path, empty_video: Path, visits: list[tuple[Path, float, float]], brightness: float,
            gate: MotionGate | None = None, detector=None) -> dict:  # type: ignore[no-untyped-def]
    """Walk-ins seen and false-motion frames for one gate (a fresh default gate when None)."""
    rng = np.random.default_rng(0)
    gate = gate or MotionGate()
    moving_at: list[float] = []
    faces_found = 0
    looks = {round((start + 0.5) * FPS) for _, start, _ in visits}
    thresholds = []
    for i, rgb in enumerate(frames(visits_video)):
        frame = dark(rgb, brightness, rng)
        m = gate.update(Frame(frame, i / FPS, 0.0).grey(gate.width), frame.shape[1])  # as the daemon does
        thresholds.append(getattr(gate, "threshold", gate.pixel_threshold))
        if i > 0 and m.moving:
            moving_at.append(i / FPS)
        if detector is not None and i in looks:
            faces_found += int(len(detector.detect(frame)[0]) > 0)
    seen = sum(any(start - 0.5 <= t <= start + 0.5 for t in moving_at) for _, start, _ in visits)
    gate.reset()
    false, n, most = 0, 0, 0.0
    for i, rgb in enumerate(frames(empty_video)):
        m = gate.update(Frame(dark(rgb, brightness, rng), i / FPS, 0.0).grey(gate.width), rgb.shape[1])
        if i >= FPS:
            n += 1
            false += int(m.moving)
            most = max(most, m.area)
    return {"walk_ins_seen": seen, "walk_ins": len(visits), "false_motion_frames": false, "empty_frames": n,
            "empty_max_changed_area": round(most, 5), "min_area": gate.min_area,
            "threshold_median": round(float(np.median(thresholds)), 2),
            "faces_found_by_detector": faces_found if detector is not None else None}


def videos(faces: Path, workdir: Path, empty_seconds: float = 60.0
           ) -> tuple[Path, Path, list[tuple[Path, float, float]]]:
    """The walk-ins' door video, the empty door's, and the walk-ins (photo, first sighting, hold)."""
    visits = walk_ins(faces)
    seconds = visits[-1][1] + HOLD + GAP
    return (door_scene(visits, workdir / "walk_ins.avi", seconds, FPS),
            door_scene([], workdir / "empty.avi", empty_seconds, FPS, seed=1), visits)


def main() -> int:
    from facepi_convert import sources

    from facepi.vision.detect import Detector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brightness", type=float, default=0.12)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--old", action="store_true", help="the fixed threshold: no noise or brightness scaling")
    args = ap.parse_args()
    walk, empty, visits = videos(sources.celebrity_faces(sources.cache_dir()), Path(tempfile.mkdtemp()))
    def gate() -> MotionGate:
        return MotionGate(relative=float("inf")) if args.old else MotionGate()

    out = {"dark": measure(walk, empty, visits, args.brightness, gate(), detector=Detector()),
           "daylight": measure(walk, empty, visits, 1.0, gate())}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
