"""Daemon benchmark: frames per second, capture-to-publish latency and peak RSS on a 640x480 video.

    .venv/bin/python bench/bench_daemon.py
    .venv/bin/python bench/bench_daemon.py --source picamera2 [--seconds 120 --width 1280 --height 960
                                           --downscale 0.5]          (on a Pi: the real camera)

Two runs of ``facepi run`` (stdout publisher; the same loop as with MQTT):
1. throughput: one face in view for the whole video, ``--fast`` (every frame processed);
2. live pace: visits of real photos at 15 fps, paced like a camera; frames the loop
   cannot keep up with are dropped, as on a live camera.
Figures come from the daemon's own final status line; peak RSS from /proc VmHWM.
Needs the pinned photos in the cache (facepi-convert fetch, or scripts/demo.sh once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _proc import run_with_peak_rss  # noqa: E402
from facepi_convert import sources  # noqa: E402

from facepi.demo import make_video, prepare  # noqa: E402
from facepi.vision import runtime  # noqa: E402


def run(args: list[str], env: dict[str, str], seconds: float | None = None) -> tuple[dict, float, float]:
    """Run facepi; return (final status, peak RSS MB, wall seconds)."""
    _, err, mb, wall = run_with_peak_rss([sys.executable, "-m", "facepi", "run", *args], ROOT,
                                         {**os.environ, **env}, seconds)
    final = [line for line in err.splitlines() if "final status:" in line][-1]
    return json.loads(final.split("final status: ", 1)[1]), mb, wall


def live(args: argparse.Namespace, gallery: Path, env: dict[str, str]) -> int:
    """A live camera for ``--seconds``: walk up to it (the demo gallery knows the 5-celebrity people: hold
    their photos up, or enrol yourself with facepi enroll into a gallery passed as --gallery)."""
    env |= {"FACEPI_SOURCE_WIDTH": str(args.width), "FACEPI_SOURCE_HEIGHT": str(args.height),
            "FACEPI_DETECTION_DOWNSCALE": str(args.downscale)}
    s, rss, wall = run(["--source", args.source, "--classifier", str(args.gallery or gallery)], env, args.seconds)
    print(f"facepi daemon on {args.source}, {args.width}x{args.height}, detection at x{args.downscale}, "
          f"{s['model']}, {wall:.0f} s: {s['fps']:.1f} fps, {s['frames']} frames, {s['frames_dropped']} dropped, "
          f"{s['events']} events; detect p50/p95 {s['detect_ms_p50']}/{s['detect_ms_p95']} ms; embed p50/p95 "
          f"{s['embed_ms_p50']}/{s['embed_ms_p95']} ms; latency (from the sensor timestamp on picamera2) p50/p95 "
          f"{s['latency_ms_p50']}/{s['latency_ms_p95']} ms; peak RSS {rss:.0f} MB")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="a live source instead of the videos, e.g. picamera2 or /dev/video0")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--downscale", type=float, default=1.0)
    ap.add_argument("--gallery", type=Path, help="default: the demo gallery (5-celebrity people)")
    args = ap.parse_args()
    cache = sources.cache_dir()
    faces = sources.celebrity_faces(cache)
    _, gallery = prepare(cache)
    env = {"FACEPI_MQTT_HOST": "", "FACEPI_MODELS_THREADS": os.environ.get("THREADS", "0")}
    if args.source:
        return live(args, gallery, env)
    with tempfile.TemporaryDirectory() as tmp:
        one = make_video([sorted((faces / "val" / "madonna").glob("*.jpg"))[1]], Path(tmp) / "one.avi",
                         fps=15, hold=20, gap=0)
        visits = make_video(sorted((faces / "val").glob("*/*.jpg"))[::2], Path(tmp) / "visits.avi",
                            fps=15, hold=1.5, gap=1.5)
        s1, rss1, wall1 = run(["--source", str(one), "--classifier", str(gallery), "--fast"], env)
        s2, rss2, wall2 = run(["--source", str(visits), "--classifier", str(gallery)], env)
    threads = int(env["FACEPI_MODELS_THREADS"]) or runtime.default_threads()
    print(f"facepi daemon benchmark, 640x480, {threads} TFLite threads, {os.cpu_count()} cores")
    print(f"1. one face in view, every frame processed (--fast): {s1['fps']:.1f} fps over {s1['frames']} frames; "
          f"detect p50/p95 {s1['detect_ms_p50']}/{s1['detect_ms_p95']} ms; peak RSS {rss1:.0f} MB")
    print(f"2. 15 fps video paced like a camera, {s2['events']} visits: {s2['fps']:.1f} fps processed, "
          f"{s2['frames_dropped']} frames dropped; capture-to-publish latency p50/p95 "
          f"{s2['latency_ms_p50']}/{s2['latency_ms_p95']} ms; detect p50/p95 {s2['detect_ms_p50']}/"
          f"{s2['detect_ms_p95']} ms; embed p50/p95 {s2['embed_ms_p50']}/{s2['embed_ms_p95']} ms; "
          f"peak RSS {rss2:.0f} MB")
    print("targets: >= 15 fps with one face, p95 latency <= 150 ms, RSS <= 250 MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
