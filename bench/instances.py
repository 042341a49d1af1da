"""Memory per camera: 1, 2 and 3 ``facepi run`` instances side by side, as facepi@NAME runs them.

    .venv/bin/python bench/instances.py [--max 3] [--samples 5] [--warm 20] [--json]

Each instance is a separate ``facepi run`` (its own camera id, the same gallery, no broker: events print
as JSON lines) on the demo input (the door video of the 5-celebrity val photos, paced at its own 10 fps,
looped as a folder of its frames so that no instance runs out of input). Once every instance has
announced a visit and run ``--warm`` seconds, RSS and PSS are read from ``/proc/PID/smaps_rollup`` per
process, ``--samples`` times 2 s apart; printed: the median per process and the total, the marginal memory
of each extra instance (the footprint with N minus with N-1) and the total against one process's.

The sum of RSS counts the shared libraries once per instance. PSS charges a page shared by n processes
1/n to each, so it sums to the real total, but on a shared machine "n" includes unrelated programs that
map the same libraries (other Python processes). The footprint printed is each instance's private pages
(USS) plus the shared pages once: what N instances take on a Pi where nothing else maps those files.

To say what an instance is made of, the same numbers are read from one interpreter in stages (bare
Python; facepi's imports: numpy, OpenCV, the TFLite runtime, paho; the models loaded and run on a face),
and the daemon's mappings are grouped (anonymous memory: the Python heap, the models' bytes, TFLite's
arenas and packed weights, frames; the shared libraries; files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
        "Anonymous")


def uss(m: dict[str, float]) -> float:
    """Unique set size: the pages only this process maps (what stopping it would give back)."""
    return m["Private_Clean"] + m["Private_Dirty"]


def footprint(ms: list[dict[str, float]]) -> float:
    """What a set of processes takes on a host where nothing else maps their files: each one's private
    pages, plus the shared ones (libraries, mapped by every instance) once. Unlike PSS this does not
    depend on unrelated processes that happen to map the same libraries (other Python programs)."""
    return sum(uss(m) for m in ms) + max(m["Shared_Clean"] + m["Shared_Dirty"] for m in ms)


def rollup(pid: int) -> dict[str, float]:
    """/proc/PID/smaps_rollup in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in KEYS:
            out[key] = int(value.split()[0]) / 1024
    return out


def by_mapping(pid: int) -> dict[str, dict[str, float]]:
    """RSS / PSS / private MB per kind of mapping: anonymous (heap, arenas, XNNPACK's packed weights,
    frames), shared libraries, the .tflite models, other files."""
    groups: dict[str, dict[str, float]] = {}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            path = head[5] if len(head) > 5 else ""
            kind = ("models (.tflite)" if path.endswith(".tflite") else
                    "libraries (.so)" if ".so" in Path(path).name else
                    "anonymous (heap, arenas, buffers)" if not path or path.startswith("[") else "other files")
            groups.setdefault(kind, {"Rss": 0.0, "Pss": 0.0, "Private": 0.0})
        elif head and head[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
            key = "Private" if head[0].startswith("Private") else head[0][:-1]
            groups[kind][key] += int(head[1]) / 1024
    return groups


STAGES = r"""
import json, sys, time
from pathlib import Path
def mem():
    return {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/smaps_rollup").read().splitlines()[1:]
            if l.split(":")[0] in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Anonymous")}
out = {"bare Python": mem()}
import numpy, cv2, paho.mqtt.client  # noqa
import facepi.door.daemon  # noqa: every module the daemon imports, the TFLite runtime included
from facepi.vision import runtime
runtime.interpreter_class()
out["+ facepi's imports (numpy, OpenCV, TFLite runtime, paho)"] = mem()
from facepi.demo import letterbox
from facepi.vision.images import read_rgb
from facepi.vision.detect import DetectorParams
from facepi.identity.recognize import Recognizer
rec = Recognizer(Path(sys.argv[1]), detector_params=DetectorParams(minsize=40), embed_batch=1)  # the daemon's defaults
rgb = letterbox(read_rgb(Path(sys.argv[2])))
for _ in range(3):
    faces, _ = rec.pipeline.faces(rgb)
    rec.predict(rec.pipeline.embedder.embed(__import__("numpy").stack([f.crop for f in faces])))
out["+ models loaded and run on a 640x480 frame"] = mem()
print(json.dumps(out))
"""


def stages(gallery: Path, photo: Path) -> dict[str, dict[str, float]]:
    proc = subprocess.run([sys.executable, "-c", STAGES, str(gallery), str(photo)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.splitlines()[-1])


def frames_folder(video: Path, out: Path, repeat: int) -> Path:
    """The demo video's frames as a folder of JPEGs, ``repeat`` times over (a folder source is paced by
    FACEPI_SOURCE_FPS and does not end while the benchmark samples)."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    names = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        name = out / f"f{len(names):05d}.jpg"
        cv2.imwrite(str(name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        names.append(name)
    cap.release()
    n = len(names)
    for r in range(1, repeat):
        for i, src in enumerate(names):
            (out / f"f{r * n + i:05d}.jpg").symlink_to(src.name)
    return out


def measure(n: int, folder: Path, gallery: Path, warm: float, samples: int, fps: float, work: Path) -> dict:
    env = {**os.environ, "FACEPI_MQTT_HOST": "", "FACEPI_SOURCE_FPS": str(fps), "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs, outs, errs = [], [], []
    for i in range(n):
        outs.append(work / f"n{n}-cam{i + 1}.out")
        errs.append(work / f"n{n}-cam{i + 1}.err")
        with outs[-1].open("w") as out, errs[-1].open("w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "facepi", "run", "--source", str(folder), "--classifier", str(gallery),
                 "--camera-id", f"cam{i + 1}"], cwd=ROOT, env=env, stdout=out, stderr=err))
    try:
        deadline = time.monotonic() + 300
        # warm: every instance has announced a visit (models, tracker and visits all in use)
        while not all(o.stat().st_size for o in outs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("an instance ended or announced nothing:\n" +
                                 "".join(e.read_text()[-2000:] for e in errs))
            time.sleep(0.2)
        time.sleep(warm)
        rows = []
        for _ in range(samples):
            rows.append([rollup(p.pid) for p in procs])
            time.sleep(2.0)
        groups = by_mapping(procs[0].pid)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    finals = []
    for e in errs:
        lines = [x for x in e.read_text().splitlines() if "final status:" in x]
        finals.append(json.loads(lines[-1].split("final status: ", 1)[1]) if lines else {})
    med = {k: [statistics.median(s[i][k] for s in rows) for i in range(n)] for k in KEYS}
    med["USS"] = [statistics.median(uss(s[i]) for s in rows) for i in range(n)]
    total = {k: sum(v) for k, v in med.items()}
    total["footprint"] = statistics.median(footprint(s) for s in rows)
    return {"n": n, "per_process": med, "total": total, "groups_first": groups,
            "fps": [f.get("fps") for f in finals], "events": [f.get("events") for f in finals]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max", type=int, default=3, help="instances at most (default: 3)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--warm", type=float, default=20.0, help="seconds after every instance's first event")
    ap.add_argument("--fps", type=float, default=10.0, help="pace of each instance's input (default: 10)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from facepi_convert import sources

    from facepi.demo import prepare

    video, gallery = prepare(log=lambda m: print(m, file=sys.stderr))
    photo = sorted((sources.celebrity_faces(sources.cache_dir()) / "val" / "madonna").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = frames_folder(video, Path(tmp) / "frames", repeat=4)
        staged = stages(gallery, photo)
        runs = [measure(n, folder, gallery, args.warm, args.samples, args.fps, Path(tmp))
                for n in range(1, args.max + 1)]
    report = {"stages": staged, "runs": runs, "cpus": os.cpu_count(), "fps": args.fps}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("One interpreter, in stages (MB):")
    print(f"  {'stage':58s} {'RSS':>7s} {'PSS':>7s} {'anon':>7s}")
    for name, m in staged.items():
        print(f"  {name:58s} {m['Rss']:7.1f} {m['Pss']:7.1f} {m['Anonymous']:7.1f}")
    print("\nOne instance's mappings, warm (MB):")
    for name, g in sorted(runs[0]["groups_first"].items(), key=lambda kv: -kv[1]["Rss"]):
        print(f"  {name:40s} RSS {g['Rss']:7.1f}  PSS {g['Pss']:7.1f}  private {g['Private']:7.1f}")
    print(f"\nInstances side by side (median of {args.samples} samples, {args.warm:g} s after each one's first "
          f"event, input at {args.fps:g} fps, {os.cpu_count()} CPUs; MB per process and in total):")
    print(f"  {'N':>2s} {'RSS':>7s} {'PSS':>7s} {'USS':>7s} {'anon':>7s} | {'sum RSS':>8s} {'sum PSS':>8s} "
          f"{'footprint':>9s} {'marginal':>8s} {'x one':>6s}  fps")
    one = runs[0]["total"]["footprint"]
    prev = 0.0
    for r in runs:
        per, tot = r["per_process"], r["total"]
        med = {k: statistics.median(v) for k, v in per.items()}
        print(f"  {r['n']:2d} {med['Rss']:7.1f} {med['Pss']:7.1f} {med['USS']:7.1f} {med['Anonymous']:7.1f} | "
              f"{tot['Rss']:8.1f} {tot['Pss']:8.1f} {tot['footprint']:9.1f} {tot['footprint'] - prev:8.1f} "
              f"{tot['footprint'] / one:6.2f}  {r['fps']}")
        prev = tot["footprint"]
    print("  (footprint: every instance's private pages plus the shared ones once; marginal: footprint with N "
          "minus with N-1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
