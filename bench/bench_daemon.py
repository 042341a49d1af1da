"""Daemon benchmark: frames per second, capture-to-publish latency and peak RSS on a 640x480 video.

    .venv/bin/python bench/bench_daemon.py

Two runs of ``facepi run`` (stdout publisher; the same loop as with MQTT):
1. throughput: one face in view for the whole video, ``--fast`` (every frame processed);
2. live pace: visits of real photos at 15 fps, paced like a camera; frames the loop
   cannot keep up with are dropped, as on a live camera.
Figures come from the daemon's own final status line; peak RSS from /proc VmHWM.
Needs the pinned photos in the cache (facepi-convert fetch, or scripts/demo.sh once).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _proc import run_with_peak_rss  # noqa: E402

from facepi.demo import make_video, prepare  # noqa: E402
from facepi_convert import sources  # noqa: E402


def run(args: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """Run facepi; return (final status, peak RSS MB, wall seconds)."""
    _, err, mb, wall = run_with_peak_rss([sys.executable, "-m", "facepi", "run", *args], ROOT,
                                         {**os.environ, **env})
    final = [line for line in err.splitlines() if "final status:" in line][-1]
    return json.loads(final.split("final status: ", 1)[1]), mb, wall


def main() -> int:
    cache = sources.cache_dir()
    faces = sources.celebrity_faces(cache)
    _, gallery = prepare(cache)
    env = {"FACEPI_MQTT_HOST": "", "FACEPI_MODELS_THREADS": os.environ.get("THREADS", "2")}
    with tempfile.TemporaryDirectory() as tmp:
        one = make_video([sorted((faces / "val" / "madonna").glob("*.jpg"))[1]], Path(tmp) / "one.avi",
                         fps=15, hold=20, gap=0)
        visits = make_video(sorted((faces / "val").glob("*/*.jpg"))[::2], Path(tmp) / "visits.avi",
                            fps=15, hold=1.5, gap=1.5)
        s1, rss1, wall1 = run(["--source", str(one), "--classifier", str(gallery), "--fast"], env)
        s2, rss2, wall2 = run(["--source", str(visits), "--classifier", str(gallery)], env)
    print(f"facepi daemon benchmark, 640x480, {env['FACEPI_MODELS_THREADS']} TFLite threads, {os.cpu_count()} cores")
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
