"""Soak benchmark: the daemon for N minutes on a live camera, with the broker and the camera failing.

    .venv/bin/python bench/soak.py [--minutes 60] [--broker-every 5] [--camera-every 13] [--json]

Real parts throughout: a loopback MJPEG-over-HTTP camera (``tests/mjpeg_camera.py``)
loops a door video made from the 5-celebrity photos (visits of enrolled people and
a stranger between empty scene), Debian's mosquitto, and a persistent QoS 1
subscriber that counts what arrives. Every ``--broker-every`` minutes the broker
is killed for ``--broker-down`` seconds; every ``--camera-every`` minutes the camera
goes away for ``--camera-down`` seconds. Printed: RSS after warm-up and at the end,
events produced (the daemon's own count) against events received (distinct ``seq``
of this run), fps per window, source failures and reconnects, stalls, exit code.
Targets for 60 minutes: RSS growth < 5 MB after warm-up, 0 events lost, no stall.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Broker, Subscriber, free_port  # noqa: E402 (the tests' real-part helpers)
from facepi_convert import sources  # noqa: E402

from facepi.demo import make_video, prepare  # noqa: E402

WARM_UP = 120.0  # seconds before the RSS baseline: models, interpreter caches and paho settle


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def door_video(faces: Path, out: Path) -> tuple[Path, int, float]:
    """68 s: six visits (four enrolled people, one stranger), 2 s each, 8 s of empty door between.
    Returns the video, visits per loop and the loop's length in seconds."""
    people = ["ben_afflek", "elton_john", "madonna", "mindy_kaling", "jerry_seinfeld", "madonna"]
    photos = [sorted((faces / "val" / p).glob("*.jpg"))[i % 2] for i, p in enumerate(people)]
    hold, gap = 2.0, 8.0
    return make_video(photos, out, fps=8, hold=hold, gap=gap), len(people), gap + len(people) * (hold + gap)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--broker-every", type=float, default=5.0, help="minutes between broker kills")
    ap.add_argument("--broker-down", type=float, default=20.0, help="seconds the broker stays away")
    ap.add_argument("--camera-every", type=float, default=13.0, help="minutes between camera drops")
    ap.add_argument("--camera-down", type=float, default=10.0, help="seconds the camera stays away")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cache = sources.cache_dir()
    _, gallery = prepare(cache, log=lambda m: print(m, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="facepi-soak-"))
    video, visits_per_loop, loop_seconds = door_video(sources.celebrity_faces(cache), work / "door.avi")
    port = free_port()

    def camera() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "mjpeg_camera.py"), str(port), str(video),
                                 "--fps", "8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    broker = Broker(work / "broker")
    broker.start()
    cam = camera()
    time.sleep(1.0)
    sub = Subscriber(broker.port, topics=("facepi/soak/event", "facepi/soak/status"))
    log_path = work / "daemon.log"
    env = {**os.environ, "FACEPI_MQTT_STATUS_INTERVAL": "10", "FACEPI_MQTT_RECONNECT_MAX_SECONDS": "5",
           "FACEPI_SOURCE_RECONNECT_MAX_SECONDS": "5", "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "facepi", "run", "--source",
                                   f"http://127.0.0.1:{port}/door.mjpg", "--classifier", str(gallery),
                                   "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port),
                                   "--camera-id", "soak"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=log_file)
    start = time.monotonic()
    end = start + args.minutes * 60
    next_broker = start + args.broker_every * 60
    next_camera = start + args.camera_every * 60
    samples: list[dict] = []
    broker_kills = camera_drops = 0
    rss_base: float | None = None
    cpu_base = 0.0
    next_sample = start + 60
    while time.monotonic() < end and daemon.poll() is None:
        now = time.monotonic()
        if now >= next_broker:
            broker.stop()
            broker_kills += 1
            time.sleep(args.broker_down)
            broker.start()
            next_broker = now + args.broker_every * 60
        if now >= next_camera:
            cam.kill()
            cam.wait()
            camera_drops += 1
            time.sleep(args.camera_down)
            cam = camera()
            next_camera = now + args.camera_every * 60
        if rss_base is None and now - start >= WARM_UP:
            rss_base, cpu_base = rss_mb(daemon.pid), cpu_seconds(daemon.pid)
        if now >= next_sample:
            statuses = sub.on("facepi/soak/status")
            status = json.loads(statuses[-1]) if statuses else {}
            samples.append({"minute": round((now - start) / 60, 1), "rss_mb": round(rss_mb(daemon.pid), 1),
                            "fps": status.get("fps"), "source": status.get("source"),
                            "events": status.get("events"), "queue_depth": status.get("queue_depth")})
            if not args.json:
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
            next_sample += 60
        time.sleep(0.5)
    alive = daemon.poll() is None
    rss_end = rss_mb(daemon.pid) if alive else float("nan")
    cpu_end = cpu_seconds(daemon.pid) if alive else float("nan")
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=60)
    log = log_path.read_text()
    final = json.loads([line for line in log.splitlines() if "final status:" in line][-1].split("final status: ")[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {e["seq"] for e in sub.events("facepi/soak/event") if e.get("run") == final["run"]}
        if len(got) >= final["events"] - final["events_dropped"]:
            break
        time.sleep(0.5)
    sub.close()
    cam.kill()
    broker.stop()
    statuses = [json.loads(p) for p in sub.on("facepi/soak/status")]
    got = {e["seq"] for e in sub.events("facepi/soak/event") if e.get("run") == final["run"]}
    fps = [s["fps"] for s in samples if s["fps"] is not None]
    minutes = (time.monotonic() - start) / 60
    result = {
        "minutes": round(minutes, 1), "exit_code": code, "alive_until_the_end": alive,
        "rss_mb_after_warm_up": round(rss_base, 1) if rss_base else None,
        "rss_mb_end": round(rss_end, 1), "rss_growth_mb": round(rss_end - rss_base, 1) if rss_base else None,
        "cpu_share_of_one_core": round((cpu_end - cpu_base) / max(1.0, (minutes * 60 - WARM_UP)), 3),
        "events_produced": final["events"], "events_received": len(got),
        "events_lost": final["events"] - len(got), "events_dropped_by_bound": final["events_dropped"],
        "visits_shown": round(minutes * 60 / loop_seconds * visits_per_loop),
        "fps_per_minute_min": min(fps) if fps else None,
        "fps_per_minute_median": statistics.median(fps) if fps else None,
        "broker_kills": broker_kills, "camera_drops": camera_drops,
        "source_failures": final["source_failures"], "frame_errors": final["frame_errors"],
        "stalls": sum(1 for s in statuses if str(s.get("source", "")).startswith("stalled")),
        "log": str(log_path),
    }
    print(json.dumps(result, indent=None if args.json else 2))
    ok = code == 0 and result["events_lost"] == 0 and result["stalls"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
