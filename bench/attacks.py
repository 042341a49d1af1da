"""Floods from a broker client against a running door (issue 28): what they cost the door.

    .venv/bin/python bench/attacks.py [--full] [--commands N] [--configs N] [--code DIR]

Each part runs a real ``facepi run`` (the 4-person 5-celebrity gallery) and Debian's mosquitto on a free
loopback port, both started here:

1. **Junk commands during visits.** The daemon watches a door video of four visits (the four enrolled
   people, 1.5 s each, 1.5 s apart) at the video's own pace; once it is ready, three ``mosquitto_pub -l``
   (Debian's C client) flood the three command topics (``command``, ``name_visitor``, ``wrong_name``) with
   ``--commands`` junk messages in all over 10.5 s (the attacker's review: 150,000 in 10.5 s). Printed:
   events expected (the visits), announced (the final status's ``events``), published (received by a
   subscriber), dropped (``events_dropped``), the daemon's exit code, and its log lines (all, and about
   the junk). Held: 0 dropped, published = expected.
2. **Junk retained discovery configs.** With the daemon running and settled, a client publishes
   ``--configs`` retained configs under the door's own discovery prefix
   (``homeassistant/sensor/facepi_door/junkN/config``, ~250 bytes each); then the broker restarts (it keeps
   them: persistence) and the daemon reconnects, which hands over every retained message it subscribes to.
   Printed: the daemon's RSS before and after (VmRSS, after 5 s of settling each) and how many junk configs
   are still retained (the daemon must leave them alone; counted after the daemon stopped, through a broker
   restarted with an unbounded queue). Held: RSS within +10 MB.

``--full``: 150,000 commands, 100,000 configs (a few minutes on a loaded 2-core machine); the default is a
fifth of each. ``--code DIR``: run the daemon from another checkout (``git worktree add /tmp/before
a34bfb7``) to measure the same floods before the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Broker, Subscriber, one_face_photos  # noqa: E402 (the tests' real-part helpers)
from facepi_convert import sources  # noqa: E402

from facepi.demo import make_video  # noqa: E402

PEOPLE = ("madonna", "elton_john", "ben_afflek", "jerry_seinfeld")
BASE = "facepi/door"
JUNK = {"command": "junk-reload", "name_visitor": "{junk naming", "wrong_name": "{junk correction"}
FLOOD_SECONDS = 10.5


def rss(pid: int) -> float:
    """The process's resident memory now, MB."""
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def gallery(work: Path, faces_root: Path) -> Path:
    """The four people's train photos, enrolled as the tests' gallery4 is."""
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    root = work / "enrol"
    root.mkdir()
    for person in PEOPLE:
        (root / person).symlink_to(faces_root / "train" / person)
    g, failures = train(load_pipeline(), root)
    assert not failures, failures
    g.save(work / "gallery.npz")
    return work / "gallery.npz"


def daemon(code: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "facepi", "run", *args], cwd=code,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(code), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_lines(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return lines


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def flood(port: int, topic: str, line: str, count: int, seconds: float) -> subprocess.Popen:
    """``count`` junk lines on ``topic`` over ``seconds``, through ``mosquitto_pub -l``."""
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "0", "-l", "-t", topic],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def feed() -> None:
        steps = int(seconds / 0.05)
        start = time.monotonic()
        for i in range(steps):
            n = count * (i + 1) // steps - count * i // steps
            pub.stdin.write((line + "\n").encode() * n)
            pub.stdin.flush()
            time.sleep(max(0.0, start + (i + 1) * 0.05 - time.monotonic()))
        pub.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    return pub


def broker_as_installed(workdir: Path) -> Broker:
    """The tests' mosquitto with Debian's default queue (max_queued_messages 1000: the tests raise it so that
    their own slow subscriber loses nothing), as a household's broker runs."""
    broker = Broker(workdir)
    broker.conf.write_text("\n".join(x for x in broker.conf.read_text().splitlines()
                                     if not x.startswith("max_queued_messages")) + "\n")
    broker.start()
    return broker


def junk_commands(code: Path, work: Path, g: Path, video: Path, count: int) -> dict:
    broker = broker_as_installed(work / "broker-commands")
    sub = Subscriber(broker.port, topics=(f"{BASE}/event", f"{BASE}/status"), name="bench")
    proc = daemon(code, ["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                         "--mqtt-port", str(broker.port)],
                  {"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(work / "visitors.npz")})
    lines = read_lines(proc)
    try:
        if not wait_for(lambda: any("ready:" in x for x in lines) or proc.poll() is not None, 120):
            raise SystemExit("the daemon did not start:\n" + "".join(lines)[-3000:])
        pubs = [flood(broker.port, f"{BASE}/{kind}", text, count // len(JUNK), FLOOD_SECONDS)
                for kind, text in JUNK.items()]
        proc.wait(timeout=600)
        for p in pubs:
            p.wait(timeout=60)
        time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.stop()
    final = json.loads(sub.on(f"{BASE}/status")[-1])
    err = "".join(lines)
    if proc.returncode != 0:
        print(err[-4000:], file=sys.stderr)
    return {"junk commands": count, "events expected": len(PEOPLE), "events announced": final["events"],
            "events published": len(sub.on(f"{BASE}/event")), "events dropped": final["events_dropped"],
            "exit code": proc.returncode, "fps (last minute)": final.get("fps"),
            "frames dropped": final.get("frames_dropped"), "log lines": len(err.splitlines()),
            "log lines about the junk": sum("junk" in x and "WARNING" in x for x in err.splitlines()),
            "refusals counted in the log": sum(int(n) for n in re.findall(r"(\d+) more like this", err))}


def junk_configs(code: Path, work: Path, g: Path, count: int) -> dict:
    broker = broker_as_installed(work / "broker-configs")
    video = make_video([], work / "empty.avi", fps=8, gap=3600.0)
    proc = daemon(code, ["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                         "--mqtt-port", str(broker.port)], {"FACEPI_MQTT_RECONNECT_MAX_SECONDS": "1"})
    lines = read_lines(proc)
    prefix = "homeassistant/sensor/facepi_door"
    junk = [f"{prefix}/junk{i}/config" for i in range(count)]
    try:
        if not wait_for(lambda: any("connected to MQTT broker" in x for x in lines) or proc.poll() is not None,
                        120):
            raise SystemExit("the daemon did not start:\n" + "".join(lines)[-3000:])
        time.sleep(5)
        before = rss(proc.pid)
        mallory = Subscriber(broker.port, topics=(f"{BASE}/nothing",), name="mallory")
        for i, topic in enumerate(junk):
            mallory.client.publish(topic, json.dumps({"name": f"junk {i}", "state_topic": "x" * 200}), qos=0,
                                   retain=True)
            if i % 1000 == 999:
                mallory.client.publish(f"{BASE}/nothing", b"", qos=1).wait_for_publish(60)  # keep pace
        mallory.client.publish(f"{BASE}/nothing", b"", qos=1).wait_for_publish(60)  # the broker has them all
        mallory.close()
        time.sleep(5)
        live = rss(proc.pid)
        broker.stop()  # a restart: the daemon reconnects and subscribes again
        broker.start()
        if not wait_for(lambda: sum("connected to MQTT broker" in x for x in lines) >= 2, 60):
            raise SystemExit("the daemon did not reconnect:\n" + "".join(lines)[-3000:])
        time.sleep(5)
        after = rss(proc.pid)
        proc.terminate()
        proc.wait(timeout=60)
        broker.stop()  # counted with a queue that holds them all (the default one drops beyond 1000)
        broker.conf.write_text(broker.conf.read_text() + "max_queued_messages 0\n")
        broker.start()
        fresh = Subscriber(broker.port, topics=(f"{prefix}/+/config",), name="fresh")
        fresh.wait_for(lambda: len(fresh.messages) >= count, 60)
        time.sleep(1)
        fresh.close()
        with fresh.lock:
            kept = sum(1 for t, p, r in fresh.messages if r and p and t.startswith(f"{prefix}/junk"))
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    return {"junk configs": count, "RSS before MB": round(before, 1), "RSS after the junk MB": round(live, 1),
            "RSS after a reconnect MB": round(after, 1), "RSS rise MB": round(max(live, after) - before, 1),
            "junk configs left alone": kept,
            "log lines about the junk": sum("junk" in x for x in "".join(lines).splitlines())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the review's counts: 150,000 commands, 100,000 configs")
    ap.add_argument("--commands", type=int, default=None)
    ap.add_argument("--configs", type=int, default=None)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose daemon runs (default: this one)")
    ap.add_argument("--parts", default="commands,configs", help="which parts to run (default both)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    commands = args.commands or (150_000 if args.full else 30_000)
    configs = args.configs or (100_000 if args.full else 20_000)
    if not shutil.which("mosquitto_pub"):
        raise SystemExit("mosquitto_pub is not installed (Debian's mosquitto-clients)")
    faces_root = sources.celebrity_faces(sources.cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        g = gallery(work, faces_root)
        photos = one_face_photos([sorted((faces_root / "val" / p).glob("*.jpg"))[0] for p in PEOPLE], work)
        video = make_video(photos, work / "calls.avi", fps=8, hold=1.5, gap=1.5)
        results: dict = {"code": str(args.code)}
        if "commands" in args.parts:
            results["commands"] = junk_commands(args.code.resolve(), work, g, video, commands)
        if "configs" in args.parts:
            results["configs"] = junk_configs(args.code.resolve(), work, g, configs)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"daemon from {results['code']}")
        for part in ("commands", "configs"):
            for key, value in results.get(part, {}).items():
                print(f"  {key:30} {value}")
    c, k = results.get("commands"), results.get("configs")
    ok = (c is None or c["events dropped"] == 0 and c["events published"] == c["events expected"]) and \
        (k is None or k["RSS rise MB"] <= 10)
    print("held" if ok else "NOT held: events lost or memory kept")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
