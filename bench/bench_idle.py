"""Idle benchmark: what an empty door costs, per stage, with and without decoding, against a release.

    .venv/bin/python bench/bench_idle.py [--before c7f7ab7] [--empty 100] [--json]
    .venv/bin/python bench/bench_idle.py --pi [--empty 100]        # on a Pi: this checkout only
    .venv/bin/python bench/bench_idle.py --liveness [--minutes 1.5] # the visits clip without and with [liveness]

Two door videos from the 5-celebrity photos (``facepi.demo.door_scene``: sensor noise,
a slow drift of the light, one exposure step, people sliding in and out), played by
``facepi run`` paced like a 15 fps camera, this checkout and the release ``--before``
(a ``git archive`` of that commit, run from its own folder) side by side:

- the held-out-style clip: ``--empty`` s (100) of empty door, then one visitor (108 s),
  as MJPEG (decoded by OpenCV, as a network or USB camera's frames are) and, for this
  checkout, as raw YUV420 frames (``.y4m``: no decoding, as the Pi camera's ISP hands
  its lores stream over). Printed: the process's CPU (getrusage of the child: every
  thread, start-up included) as a share of one core over the whole clip, the share on
  the empty stretch after start-up (sampled from /proc), and the start-up's CPU-s;
- the visits clip (2 minutes, five visits, one visitor standing still 20 s): events per
  visit, names, the still visitor tracked, and first sighting (the face fully in view)
  -> event, p50/p95;
- the per-stage split of the empty door: each version's loop run in-process on the
  clip's empty stretch (frame times of a 15 fps camera, no pacing), CPU per stage in
  ms per second of video (10 ms/s = 1 % of a core): decode, colour conversion, the
  motion gate (its grey image and its comparison), the whole-frame looks, the rest of
  the loop's per-frame work.

CPU is CPU-seconds (user + system) of the measured process, which survive a busy
machine far better than wall time; ratios are against the release measured in the same
run. On a Pi (``--pi``) there is no release to compare: the same figures for this
checkout; ``--camera picamera2 --camera-seconds 120`` adds a run on the camera itself (point it
at an empty door).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
FPS = 15.0


def visits_plan(seconds: float, faces: Path) -> tuple[list[tuple[Path, float, float]], list[str]]:
    """Five visits over ``seconds``: (photo, first sighting, seconds in view), and the names expected."""
    who = ["ben_afflek", "elton_john", "madonna", "mindy_kaling", "jerry_seinfeld"]
    plan = [(0.12, who[0], 3.0), (0.30, who[1], 3.0), (0.45, who[2], 20.0), (0.72, who[3], 3.0),
            (0.88, who[4], 3.0)]
    visits = [(sorted((faces / "val" / name).glob("*.jpg"))[0], round(f * seconds, 1), hold)
              for f, name, hold in plan]
    return visits, ["unknown" if n == "mindy_kaling" else n for _, n, _ in plan]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(root: Path, video: Path | str, gallery: Path, env: dict[str, str] | None = None,
        seconds: float | None = None) -> dict:
    """``facepi run`` of the checkout at ``root`` on ``video`` (paced; a camera: stopped after ``seconds``);
    CPU from getrusage and /proc."""
    proc = subprocess.Popen([sys.executable, "-m", "facepi", "run", "--source", str(video), "--classifier",
                             str(gallery)], cwd=root,
                            env={**os.environ, "FACEPI_MQTT_HOST": "", "PYTHONPATH": str(root), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    at_ready: list[tuple[float, float]] = []
    events: list[tuple[float, dict]] = []
    err_lines: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            err_lines.append(line)
            if "ready:" in line and not ready.is_set():
                at_ready.append((time.monotonic(), cpu_seconds(proc.pid)))
                ready.set()

    def read_out() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            events.append((time.monotonic(), json.loads(line)))

    threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    ready.wait(300)
    samples: list[tuple[float, float]] = []
    status = 0
    while True:
        try:
            samples.append((time.monotonic() - at_ready[0][0], cpu_seconds(proc.pid)))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if seconds is not None and samples and samples[-1][0] > seconds:
            proc.terminate()  # the daemon's clean stop
            seconds = None
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join(10)
    if proc.returncode != 0:
        raise SystemExit(f"facepi run ({root}) failed ({proc.returncode}):\n{''.join(err_lines)[-3000:]}")
    final = json.loads([x for x in err_lines if "final status:" in x][-1].split("final status: ", 1)[1])
    return {"samples": samples, "events": [(t - at_ready[0][0], e) for t, e in events], "final": final,
            "cpu_total": usage.ru_utime + usage.ru_stime, "cpu_startup": at_ready[0][1]}


def cpu_summary(result: dict, seconds: float, busy: list[tuple[float, float]]) -> dict:
    """Whole clip (start-up included, getrusage) and the empty stretch after start-up (/proc samples)."""
    empty_cpu = empty_wall = 0.0
    samples = result["samples"]
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t0 > 5.0 and not any(a <= t1 and t0 <= b for a, b in busy):
            empty_cpu += c1 - c0
            empty_wall += t1 - t0
    return {"cpu_share_whole_clip": round(result["cpu_total"] / seconds, 4),
            "cpu_seconds_total": round(result["cpu_total"], 2), "cpu_seconds_startup": round(result["cpu_startup"], 2),
            "cpu_share_empty": round(empty_cpu / max(empty_wall, 1e-9), 4), "empty_seconds": round(empty_wall, 1),
            "frames_dropped": result["final"].get("frames_dropped"),
            "detect_share": result["final"].get("detect_share")}


def visit_summary(result: dict, visits: list[tuple[Path, float, float]], names: list[str]) -> dict:
    per_visit, latencies, right = [], [], 0
    for (_, start, hold), name in zip(visits, names, strict=True):
        mine = [(t, e) for t, e in result["events"] if start - 1.0 <= t <= start + hold + 3.0]
        per_visit.append(len(mine))
        if mine:
            latencies.append((mine[0][0] - start) * 1000)
            right += mine[0][1]["name"] == name
    return {"events_per_visit": per_visit, "events_outside_visits": len(result["events"]) - sum(per_visit),
            "names_right": f"{right}/{len(visits)}", "first_sighting_ms": [round(x) for x in latencies],
            "first_sighting_ms_p50": round(statistics.median(latencies)) if latencies else None,
            "first_sighting_ms_p95": round(sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)])
            if latencies else None,
            "still_visitor_one_event": per_visit[2] == 1}


# ------------------------------------------------------------------ the per-stage profile (in a child)
def profile(root: Path, video: Path, gallery: Path, seconds: float) -> dict:
    """The loop of the checkout at ``root`` on the first ``seconds`` of ``video`` (an empty door), in this
    process: CPU (process_time: every thread) per stage. Works on the release's API and this one's."""
    sys.path.insert(0, str(root))
    import cv2
    import numpy as np

    from facepi import config
    from facepi.door import motion
    from facepi.door.daemon import Daemon

    try:
        from facepi.door.frames import Frame  # this checkout
    except ImportError:
        Frame = None  # noqa: N806  (the release: RGB frames)
    spent: dict[str, float] = {}

    def timed(owner, name: str, key: str) -> None:  # type: ignore[no-untyped-def]
        fn = getattr(owner, name)

        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.process_time() - t
        setattr(owner, name, wrapper)

    cfg = config.load(None, env={"FACEPI_MQTT_HOST": ""},
                      overrides={"source.uri": str(video), "recognition.gallery": str(gallery)})
    d = Daemon(cfg)
    timed(motion.MotionGate, "update", "motion gate: compare")
    if Frame is not None:
        timed(Frame, "grey", "motion gate: grey image")
    timed(d.pipeline.detector, "detect", "whole-frame looks (detector)")
    d.pipeline.detector.detect(np.zeros((480, 640, 3), np.uint8))  # interpreters built: start-up, not idle
    spent.clear()
    raw = video.suffix == ".y4m"
    if raw:
        from facepi.door.sources import Y4MSource
        src = Y4MSource(video)
        src.open()
    else:
        cap = cv2.VideoCapture(str(video))
    n = 0
    total = time.process_time()
    while n < seconds * FPS:
        t0 = time.process_time()
        if raw:
            image = src.read().rgb
        else:
            ok, image = cap.read()
            if not ok:
                break
        t1 = time.process_time()
        spent["decode"] = spent.get("decode", 0.0) + t1 - t0
        t = n / FPS
        if Frame is not None:
            frame = Frame(image, t, time.monotonic(), n, fmt="I420" if raw else "BGR")
        else:
            frame = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # the release's source: to_rgb on every frame
            spent["colour conversion"] = spent.get("colour conversion", 0.0) + time.process_time() - t1
        t2 = time.process_time()
        d.process(frame, t, time.monotonic())
        spent["loop"] = spent.get("loop", 0.0) + time.process_time() - t2
        n += 1
    total = time.process_time() - total
    video_s = n / FPS
    inner = sum(v for k, v in spent.items() if k.startswith(("motion", "whole")))
    spent["rest of the loop's per-frame work"] = spent.pop("loop") - inner
    per_s = {k: round(v / video_s * 1000, 2) for k, v in spent.items()}
    return {"video_seconds": round(video_s, 1), "ms_cpu_per_second": per_s,
            "total_ms_per_second": round(total / video_s * 1000, 2), "looks": d.gating.detected}


# ------------------------------------------------------------------ the run
def release_tree(commit: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix=f"facepi-{commit}-"))
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    return out


def child_profile(root: Path, video: Path, gallery: Path, seconds: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--profile", str(root), str(video), str(gallery), str(seconds)],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"profile of {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parallel(jobs: dict[str, tuple]) -> dict[str, dict]:  # type: ignore[type-arg]
    results: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda k=k, a=a: results.__setitem__(k, run(*a))) for k, a in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != len(jobs):
        raise SystemExit(f"runs failed: {sorted(set(jobs) - set(results))}")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="c7f7ab7", help="the release to compare with (a commit of this repository)")
    ap.add_argument("--empty", type=float, default=100.0, help="seconds of empty door before the one visitor")
    ap.add_argument("--pi", action="store_true", help="this checkout only (no release to compare, e.g. on a Pi)")
    ap.add_argument("--camera", help="also run on this source (e.g. picamera2) for --camera-seconds, door empty")
    ap.add_argument("--camera-seconds", type=float, default=120.0)
    ap.add_argument("--liveness", action="store_true", help="instead: this checkout on the visits clip without "
                    "and with [liveness] (the empty door's CPU must not move)")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the visits clip")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", nargs=4, metavar=("ROOT", "VIDEO", "GALLERY", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile:
        root, video, gallery, seconds = args.profile
        print(json.dumps(profile(Path(root), Path(video), Path(gallery), float(seconds))))
        return 0

    sys.path.insert(0, str(ROOT))
    import cv2
    from facepi_convert import sources

    from facepi.demo import door_scene, prepare
    from facepi.door.sources import write_y4m

    def log(m: str) -> None:
        print(m, file=sys.stderr)
    cache = sources.cache_dir()
    _, gallery = prepare(cache, log=log)
    faces = sources.celebrity_faces(cache)
    work = Path(tempfile.mkdtemp(prefix="facepi-idle-"))
    vseconds = args.minutes * 60
    visits, names = visits_plan(vseconds, faces)
    vclip = door_scene(visits, work / "visits.avi", vseconds, FPS, exposure_step=round(0.62 * vseconds, 1))
    vbusy = [(start - 2.0, start + hold + 4.0) for _, start, hold in visits]  # slide in/out, visit gap
    if args.liveness:
        log(f"visits clip: {vseconds:.0f} s, without and with [liveness] ...")
        runs = parallel({"without_liveness": (ROOT, vclip, gallery),
                         "with_liveness": (ROOT, vclip, gallery, {"FACEPI_LIVENESS_ENABLED": "1"})})
        out = {k: cpu_summary(r, vseconds, vbusy) | visit_summary(r, visits, names) for k, r in runs.items()}
        w, o = out["with_liveness"], out["without_liveness"]
        out["cpu_empty_with_over_without"] = round(w["cpu_share_empty"] / max(o["cpu_share_empty"], 1e-9), 2)
        out["liveness"] = runs["with_liveness"]["final"].get("liveness")
        print(json.dumps(out, indent=None if args.json else 2))
        return 0
    seconds = args.empty + 8.0
    visitor = [(sorted((faces / "val" / "madonna").glob("*.jpg"))[0], args.empty, 4.0)]
    clip = door_scene(visitor, work / "held_out_style.avi", seconds, FPS, exposure_step=round(args.empty / 2, 1))
    cap = cv2.VideoCapture(str(clip))

    def decoded():  # type: ignore[no-untyped-def]
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raw = write_y4m(decoded(), work / "held_out_style.y4m", FPS)  # the same frames, decoded once, stored raw
    busy = [(args.empty - 2.0, seconds + 10)]
    before = None if args.pi else release_tree(args.before)
    roots = {"now": ROOT} | ({} if before is None else {"before": before})

    log(f"held-out-style clip: {seconds:.0f} s ({args.empty:.0f} s empty, then one visitor), "
        f"{' and '.join(roots)} ...")
    jobs = {f"{name}, mjpeg": (root, clip, gallery) for name, root in roots.items()}
    jobs["now, raw yuv420"] = (ROOT, raw, gallery)
    out: dict = {"clip": {k: cpu_summary(r, seconds, busy) for k, r in parallel(jobs).items()}}
    log(f"visits clip: {vseconds:.0f} s, five visits ...")
    vis = parallel({name: (root, vclip, gallery) for name, root in roots.items()})
    out["visits"] = {k: visit_summary(r, visits, names) for k, r in vis.items()}
    log("per-stage profile of the empty door ...")
    out["stages_ms_cpu_per_second"] = {f"{name}, mjpeg": child_profile(root, clip, gallery, args.empty)
                                       for name, root in roots.items()}
    out["stages_ms_cpu_per_second"]["now, raw yuv420"] = child_profile(ROOT, raw, gallery, args.empty)
    if args.camera:
        log(f"the camera {args.camera}: {args.camera_seconds:.0f} s ...")
        cam = run(ROOT, args.camera, gallery, seconds=args.camera_seconds)
        out["camera"] = cpu_summary(cam, cam["samples"][-1][0], []) | {"events": len(cam["events"])}
    c = out["clip"]
    out["targets"] = {
        "whole clip incl. decode and start-up <= 4 %": c["now, mjpeg"]["cpu_share_whole_clip"] <= 0.04,
        "raw frames, empty door <= 1 %": c["now, raw yuv420"]["cpu_share_empty"] <= 0.01,
    }
    if before is not None:
        b, n = c["before, mjpeg"], c["now, mjpeg"]
        out["ratio_before_over_now"] = {"whole clip": round(b["cpu_share_whole_clip"] / n["cpu_share_whole_clip"], 2),
                                        "empty door": round(b["cpu_share_empty"] / max(n["cpu_share_empty"], 1e-9), 2)}
        bp, np95 = out["visits"]["before"]["first_sighting_ms_p95"], out["visits"]["now"]["first_sighting_ms_p95"]
        out["targets"]["first sighting p95 not worse (within one frame)"] = (np95 or 1e9) <= (bp or 0) + 1000 / FPS
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
