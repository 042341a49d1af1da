"""Idle benchmark: CPU on an empty door scene with and without the motion gate, in the same run.

    .venv/bin/python bench/bench_idle.py [--minutes 4] [--json]
    .venv/bin/python bench/bench_idle.py --liveness [--minutes 1]   # gated, without and with [liveness]

A door video made from the 5-celebrity photos (``facepi.demo.door_scene``): an empty
scene with sensor noise, a slow drift of the light and one exposure step, and a
handful of visits (people slide into view, stay, slide out), one of them standing
still for 20 s. ``facepi run`` plays it paced like a 15 fps camera, once with the
gate (the default) and once without (``FACEPI_MOTION_ENABLED=0``). Printed per run:
CPU (user+sys of the process, sampled from /proc every 0.5 s) as a share of one
core on the empty stretches and overall, CPU seconds per minute of video, the
share of frames detected, events per visit and whether the names are right, and
the latency from a visit's first sighting (the face fully in view) to its event,
p50/p95 over the visits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facepi_convert import sources  # noqa: E402

from facepi.demo import door_scene, prepare  # noqa: E402

FPS = 15.0
TICK = os.sysconf("SC_CLK_TCK")


def visits_for(minutes: float, faces: Path) -> tuple[list[tuple[Path, float, float]], list[str], float]:
    """Visits spread over the video: (photo, first sighting, seconds in view), expected names, exposure step."""
    who = ["ben_afflek", "elton_john", "madonna", "mindy_kaling", "jerry_seinfeld"]
    seconds = minutes * 60
    plan = [(0.12, who[0], 3.0), (0.30, who[1], 3.0), (0.45, who[2], 20.0), (0.72, who[3], 3.0),
            (0.88, who[4], 3.0)]
    visits = [(sorted((faces / "val" / name).glob("*.jpg"))[0], round(f * seconds, 1), hold)
              for f, name, hold in plan]
    names = ["unknown" if n == "mindy_kaling" else n for _, n, _ in plan]
    return visits, names, round(0.62 * seconds, 1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(video: Path, gallery: Path, env: dict[str, str]) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "facepi", "run", "--source", str(video), "--classifier",
                             str(gallery)], cwd=ROOT, env={**os.environ, "FACEPI_MQTT_HOST": "", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    start: list[float] = []
    events: list[tuple[float, dict]] = []
    err_lines: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            err_lines.append(line)
            if "ready:" in line and not ready.is_set():
                start.append(time.monotonic())
                ready.set()

    def read_out() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            events.append((time.monotonic(), json.loads(line)))

    threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    ready.wait(120)
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        try:
            samples.append((time.monotonic() - start[0], cpu_seconds(proc.pid)))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.5)
    proc.wait()
    for t in threads:
        t.join(10)
    if proc.returncode != 0:
        raise SystemExit(f"facepi run failed ({proc.returncode}):\n{''.join(err_lines)[-3000:]}")
    final = json.loads([x for x in err_lines if "final status:" in x][-1].split("final status: ", 1)[1])
    return {"samples": samples, "events": [(t - start[0], e) for t, e in events], "final": final}


def summarise(result: dict, visits: list[tuple[Path, float, float]], names: list[str], seconds: float) -> dict:
    busy = [(start - 2.0, start + hold + 4.0) for _, start, hold in visits]  # slide in/out, visit gap
    samples = result["samples"]
    empty_cpu = empty_wall = 0.0
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t0 > 5.0 and not any(a <= t1 and t0 <= b for a, b in busy):  # after start-up, nobody there
            empty_cpu += c1 - c0
            empty_wall += t1 - t0
    total_cpu = samples[-1][1] - samples[0][1] if len(samples) > 1 else 0.0
    total_wall = samples[-1][0] - samples[0][0] if len(samples) > 1 else 1.0
    per_visit, latencies, right = [], [], 0
    for (_, start, hold), name in zip(visits, names, strict=True):
        mine = [(t, e) for t, e in result["events"] if start - 1.0 <= t <= start + hold + 3.0]
        per_visit.append(len(mine))
        if mine:
            latencies.append((mine[0][0] - start) * 1000)
            right += mine[0][1]["name"] == name
    stray = len(result["events"]) - sum(per_visit)
    return {"cpu_empty_share_of_a_core": round(empty_cpu / max(empty_wall, 1e-9), 3),
            "cpu_overall_share_of_a_core": round(total_cpu / max(total_wall, 1e-9), 3),
            "cpu_seconds_per_video_minute": round(total_cpu / (seconds / 60), 2),
            "empty_seconds_measured": round(empty_wall, 1),
            "detect_share": result["final"].get("detect_share"), "events_per_visit": per_visit,
            "events_outside_visits": stray, "names_right": f"{right}/{len(visits)}",
            "first_sighting_latency_ms": [round(x) for x in latencies],
            "first_sighting_latency_ms_p50": round(statistics.median(latencies)) if latencies else None,
            "first_sighting_latency_ms_p95": round(sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)])
            if latencies else None,
            "still_person_tracked": per_visit[2] == 1,
            **({"liveness": result["final"]["liveness"]} if "liveness" in result["final"] else {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--liveness", action="store_true", help="compare the gated run without and with [liveness] "
                    "(the empty door's CPU must not move) instead of gated and ungated")
    args = ap.parse_args()
    cache = sources.cache_dir()
    _, gallery = prepare(cache, log=lambda m: print(m, file=sys.stderr))
    visits, names, step = visits_for(args.minutes, sources.celebrity_faces(cache))
    seconds = args.minutes * 60
    video = door_scene(visits, Path(tempfile.mkdtemp(prefix="facepi-idle-")) / "door.avi", seconds, FPS,
                       exposure_step=step)
    out = {}
    if args.liveness:
        for label, env in (("without_liveness", {}), ("with_liveness", {"FACEPI_LIVENESS_ENABLED": "1"})):
            print(f"{label}: playing {seconds:.0f} s of door video at {FPS:g} fps ...", file=sys.stderr)
            out[label] = summarise(run(video, gallery, env), visits, names, seconds)
        w, o = out["with_liveness"], out["without_liveness"]
        out["cpu_empty_with_over_without"] = round(w["cpu_empty_share_of_a_core"] /
                                                   max(o["cpu_empty_share_of_a_core"], 1e-9), 2)
        out["liveness"] = w.pop("liveness", None)
        print(json.dumps(out, indent=None if args.json else 2))
        return 0
    for label, env in (("gated", {}), ("ungated", {"FACEPI_MOTION_ENABLED": "0"})):
        print(f"{label}: playing {seconds:.0f} s of door video at {FPS:g} fps ...", file=sys.stderr)
        out[label] = summarise(run(video, gallery, env), visits, names, seconds)
    g, u = out["gated"], out["ungated"]
    out["ratio_cpu_empty_ungated_over_gated"] = round(u["cpu_empty_share_of_a_core"] /
                                                      max(g["cpu_empty_share_of_a_core"], 1e-9), 1)
    frame_ms = 1000 / FPS
    out["latency_p95_difference_ms"] = (g["first_sighting_latency_ms_p95"] or 0) - \
        (u["first_sighting_latency_ms_p95"] or 0)
    out["latency_within_one_frame"] = out["latency_p95_difference_ms"] <= frame_ms
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
