"""Household sync: how fast three doors agree, what a change costs on the wire, what a door costs in memory.

    .venv/bin/python bench/household_sync.py [--changes 20] [--json]

Three ``facepi run`` daemons (front, back, garage; ``[household] id = "home"``, one key) and Debian's
mosquitto, on one machine. The daemons watch one cheap live source (a loopback MJPEG camera serving one
still, empty door scene at 1 fps) and start with no gallery at all (a newly installed household: each
starts with an empty gallery of its embedder). Then ``--changes`` changes are made with the CLI, a user's
way (``facepi enroll`` from 4 real 5-celebrity train photos, ``facepi gallery rename``, ``facepi forget``),
one at a time, on front, back, garage, front, ... in turn. For each: the time from the CLI command's exit
to equal digests in all three gallery files (read every 50 ms with ``HouseholdSync.digest``), and the bytes
published on the household's topics meanwhile (a subscriber counting payload sizes, retained included).

Printed: median and worst convergence, median bytes per change (and per kind), and the memory of the three
daemons at the end (RSS, PSS and private memory from /proc/PID/smaps_rollup), with the marginal memory of an
extra door: (PSS of all three - PSS of the first alone, measured before the others started) / 2.
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
sys.path.insert(0, str(ROOT / "tests"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from conftest import Broker, Subscriber, free_port  # noqa: E402 (the tests' real-part helpers)
from facepi_convert import sources  # noqa: E402

from facepi.identity.sync import HouseholdSync  # noqa: E402

HOME, KEY = "home", b"bench household key, 32 bytes!!"
DOORS = ("front", "back", "garage")
PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


def memory(pid: int) -> dict[str, float]:
    """MB of RSS, PSS and private (clean + dirty) memory, from /proc/PID/smaps_rollup."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
            "private": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def portraits(faces_root: Path, n: int = 4) -> dict[str, list[Path]]:
    from facepi.vision.photos import load_pipeline

    pipe = load_pipeline()
    return {p: [f for f in sorted((faces_root / "train" / p).glob("*.jpg")) if not pipe.photo(f).others][:n]
            for p in PEOPLE}


def plan(count: int) -> list[tuple[str, str, list[str]]]:
    """(door, kind, CLI arguments after the command) for ``count`` changes: enrol, rename, forget in turn."""
    enrolled: dict[str, str] = {}  # base person -> current name
    out = []
    for i in range(count):
        door = DOORS[i % len(DOORS)]
        missing = [p for p in PEOPLE if p not in enrolled]
        kind = ("enrol", "enrol", "rename", "forget")[i % 4]
        if kind != "enrol" and not enrolled:
            kind = "enrol"
        if kind == "enrol" and not missing:
            kind = "rename"
        if kind == "enrol":
            enrolled[missing[0]] = missing[0]
            out.append((door, kind, ["enroll", missing[0]]))
        elif kind == "rename":
            base = sorted(enrolled)[i % len(enrolled)]
            old, new = enrolled[base], base if enrolled[base] != base else f"{base}_2"
            enrolled[base] = new
            out.append((door, kind, ["gallery", "rename", old, new]))
        else:
            base = sorted(enrolled)[i % len(enrolled)]
            out.append((door, kind, ["forget", enrolled.pop(base)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    faces_root = sources.celebrity_faces(sources.cache_dir())
    photos = portraits(faces_root)
    work = Path(tempfile.mkdtemp(prefix="household-sync-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    broker = Broker(work / "broker")
    broker.start()
    still = work / "empty.jpg"  # an empty door scene: the daemons idle at 1 fps
    rng = np.random.default_rng(0)
    cv2.imwrite(str(still), np.clip(rng.normal(100, 6, (480, 640, 3)), 0, 255).astype(np.uint8))
    port = free_port()
    cam = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mjpeg_camera.py"), str(port), str(still),
                            "--fps", "1"])
    keyfile = work / "household_key"
    keyfile.write_bytes(KEY)
    galleries = {d: work / d / "gallery.db" for d in DOORS}
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    wire: list[tuple[float, int]] = []
    lock = threading.Lock()
    sub = Subscriber(broker.port, topics=(f"facepi/household/{HOME}/#",), name="bench-wire")

    def count(client, userdata, msg) -> None:
        with lock:
            wire.append((time.monotonic(), len(msg.payload)))

    sub.client.on_message = count
    alone: dict[str, float] = {}
    try:
        time.sleep(0.5)
        for door in DOORS:
            (work / door).mkdir()
            toml = work / door / "facepi.toml"
            toml.write_text(f'camera_id = "{door}"\n[source]\nuri = "http://127.0.0.1:{port}/video.mjpg"\n'
                            f'[models]\nthreads = 1\n[recognition]\ngallery = "{galleries[door]}"\n'
                            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ndiscovery = false\n'
                            f'[household]\nid = "{HOME}"\nkey_file = "{keyfile}"\n')
            log = open(work / door / "daemon.log", "w")  # noqa: SIM115 - open for the daemon's lifetime
            logs.append(log)
            procs[door] = subprocess.Popen([sys.executable, "-m", "facepi", "run", "--config", str(toml)], cwd=ROOT,
                                           env=env, stdout=subprocess.DEVNULL, stderr=log)
            deadline = time.monotonic() + 120
            while "ready: source" not in (work / door / "daemon.log").read_text():
                if time.monotonic() > deadline or procs[door].poll() is not None:
                    raise SystemExit(f"{door} did not start:\n{(work / door / 'daemon.log').read_text()[-3000:]}")
                time.sleep(0.2)
            if door == DOORS[0]:
                time.sleep(5)  # settled: models loaded, first frames through
                alone = memory(procs[door].pid)
        time.sleep(5)

        def digests() -> list[str]:
            return [HouseholdSync(galleries[d], HOME, KEY, "probe").digest() for d in DOORS]

        rows = []
        for door, kind, cli in plan(args.changes):
            extra = [str(p) for p in photos[cli[1]]] if kind == "enrol" else []
            cmd = [sys.executable, "-m", "facepi", *cli, *extra, "--gallery", str(galleries[door])]
            t0 = time.monotonic()
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            if r.returncode not in (0, 3):
                raise SystemExit(f"{' '.join(cli)} on {door} failed ({r.returncode}): {r.stderr[-2000:]}")
            t1 = time.monotonic()
            while len(set(digests())) != 1:
                if time.monotonic() - t1 > 60:
                    raise SystemExit(f"no convergence after {' '.join(cli)} on {door}: {digests()}")
                time.sleep(0.05)
            converged = time.monotonic() - t1
            time.sleep(1.0)  # repairs and late answers count to this change
            with lock:
                sent = [n for t, n in wire if t >= t0]
                wire.clear()
            rows.append({"door": door, "kind": kind, "change": " ".join(cli), "cli_s": round(t1 - t0, 2),
                         "converged_s": round(converged, 3), "bytes": sum(sent), "messages": len(sent)})
            if not args.json:
                print(f"{door:7s} {' '.join(cli):40s} cli {t1 - t0:4.1f} s  converged {converged * 1000:6.0f} ms  "
                      f"{sum(sent):6d} B in {len(sent)} message(s)", flush=True)
        mem = {d: memory(p.pid) for d, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            p.wait(timeout=60)
        for log in logs:
            log.close()
        cam.kill()
        sub.close()
        broker.stop()
    times = [r["converged_s"] for r in rows]
    total_pss = sum(m["pss"] for m in mem.values())
    summary = {
        "changes": len(rows), "converged_median_s": round(statistics.median(times), 3),
        "converged_worst_s": round(max(times), 3),
        "bytes_median": statistics.median(r["bytes"] for r in rows),
        "bytes_by_kind": {k: statistics.median(r["bytes"] for r in rows if r["kind"] == k)
                          for k in sorted({r["kind"] for r in rows})},
        "memory_mb": {d: {k: round(v, 1) for k, v in m.items()} for d, m in mem.items()},
        "pss_first_alone_mb": round(alone["pss"], 1), "pss_total_mb": round(total_pss, 1),
        "marginal_pss_per_extra_door_mb": round((total_pss - alone["pss"]) / (len(DOORS) - 1), 1),
        "exit_codes": {d: p.returncode for d, p in procs.items()}, "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"\n{len(rows)} changes: convergence median {summary['converged_median_s'] * 1000:.0f} ms, worst "
          f"{summary['converged_worst_s'] * 1000:.0f} ms (CLI exit -> equal digests in all three galleries)")
    print(f"bytes on the household topics per change: median {summary['bytes_median']:.0f} "
          f"({', '.join(f'{k} {v:.0f}' for k, v in summary['bytes_by_kind'].items())})")
    for d, m in summary["memory_mb"].items():
        print(f"{d:7s} RSS {m['rss']:6.1f} MB  PSS {m['pss']:6.1f} MB  private {m['private']:6.1f} MB")
    print(f"PSS: first door alone {summary['pss_first_alone_mb']} MB, three doors {summary['pss_total_mb']} MB: "
          f"{summary['marginal_pss_per_extra_door_mb']} MB per extra door")
    print(f"daemon exit codes: {summary['exit_codes']}")


if __name__ == "__main__":
    main()
