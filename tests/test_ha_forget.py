"""facepi ha forget CAMERA_ID: a camera that is gone disappears from Home Assistant (its retained discovery
configs and state topics cleared on a real mosquitto); another camera's stay as they were."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, Subscriber, run_daemon

from facepi import config
from facepi.door.ha_forget import ForgetError, forget_camera


def retained(port: int, name: str) -> dict[str, bytes]:
    """Everything the broker holds retained under facepi/# and homeassistant/#, as a new subscriber gets it."""
    sub = Subscriber(port, name=name)
    time.sleep(1.0)  # retained messages come right after the subscription
    sub.close()
    return {t: p for t, p, r in sub.messages if r}


def of(camera: str, topics) -> set[str]:
    return {t for t in topics if t.startswith(f"facepi/{camera}/") or f"/facepi_{camera}/" in t}


def test_forget_clears_one_camera_and_leaves_the_other(broker, gallery4, faces_root, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate([*sorted((faces_root / "val" / "madonna").glob("*.jpg"))[:2],
                           *sorted((faces_root / "val" / "mindy_kaling").glob("*.jpg"))[:2]]):
        (folder / f"{i:03d}.jpg").symlink_to(p)
    mqtt = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)]
    # learning and snapshots on: every retained topic facepi has (snapshot, visitor, visitor_info, learning)
    env = {"FACEPI_SOURCE_FPS": "4", "FACEPI_LEARNING_ENABLED": "1", "FACEPI_MQTT_SNAPSHOT": "1",
           "FACEPI_RECOGNITION_UNKNOWN_MIN_FRAMES": "1"}
    gallery = tmp_path / "gallery.npz"  # learning writes into the gallery's database: a copy
    gallery.write_bytes(gallery4.read_bytes())
    for cam in ("old_door", "front_door"):  # each runs through its folder and stops: offline, retained
        proc = run_daemon(["--source", str(folder), "--classifier", str(gallery), "--camera-id", cam, *mqtt],
                          env={**env, "FACEPI_LEARNING_PATH": str(tmp_path / f"{cam}.npz")})
        out, err = proc.communicate(timeout=120)
        # KNOWN: about 1 run in 8 of a folder this short aborts in C++ after its final status ("terminate
        # called without an active exception", exit -6), with the MQTT publisher or without; not this
        # test's subject (what the daemon left retained is), so only that abort is let through
        assert proc.returncode == 0 or (proc.returncode == -6 and "final status" in err and
                                        "terminate called without an active exception" in err), err[-3000:]
    before = retained(broker.port, "before")
    old, other = of("old_door", before), of("front_door", before)
    assert before["facepi/old_door/availability"] == b"offline"
    assert {"homeassistant/sensor/facepi_old_door/last_person/config",
            "homeassistant/button/facepi_old_door/reload/config", "facepi/old_door/availability",
            "facepi/old_door/status", "facepi/old_door/last", "facepi/old_door/person",
            "facepi/old_door/visitor", "facepi/old_door/learning"} <= old, sorted(old)
    assert {"homeassistant/sensor/facepi_front_door/last_person/config", "facepi/front_door/availability",
            "facepi/front_door/last"} <= other  # the other camera's own

    cfg = config.load(None, env={}, overrides={"mqtt.host": "127.0.0.1", "mqtt.port": broker.port})
    dry = forget_camera(cfg, "old_door", dry_run=True)
    assert set(dry.cleared) == old and retained(broker.port, "dry") == before  # a dry run clears nothing
    done = forget_camera(cfg, "old_door")
    assert set(done.cleared) == old and not done.online
    assert done.cleared[:len(done.discovery)] == done.discovery  # the entities first, then their state

    after = retained(broker.port, "after")
    assert of("old_door", after) == set(), sorted(of("old_door", after))  # nothing left for Home Assistant
    assert {t: p for t, p in after.items() if t in other} == {t: before[t] for t in other}  # untouched
    assert after == {t: p for t, p in before.items() if t not in old}
    again = forget_camera(cfg, "old_door")
    assert again.cleared == []

    # the command line: a JSON answer, and nothing to clear any more
    r = subprocess.run([sys.executable, "-m", "facepi", "ha", "forget", "old_door", "--mqtt-host", "127.0.0.1",
                        "--mqtt-port", str(broker.port), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and json.loads(r.stdout) == {"camera": "old_door", "cleared": [], "online": False,
                                                          "dry_run": False}, r.stderr


def test_a_running_camera_is_not_forgotten_unless_forced(broker, gallery4, faces_root, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(200):
        (folder / f"{i:03d}.jpg").symlink_to(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0])
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(folder), "--classifier", str(gallery4), "--camera-id", "live_door",
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)], env={"FACEPI_SOURCE_FPS": "1"})
    try:
        assert sub.wait_for(lambda: sub.on("facepi/live_door/availability")[-1:] == [b"online"], 60)
        assert sub.wait_for(lambda: any(t.endswith("/config") for t, _, _ in sub.messages), 10)
        cfg = config.load(None, env={}, overrides={"mqtt.host": "127.0.0.1", "mqtt.port": broker.port})
        with pytest.raises(ForgetError, match="camera live_door is online"):
            forget_camera(cfg, "live_door")
        r = subprocess.run([sys.executable, "-m", "facepi", "ha", "forget", "live_door", "--mqtt-host",
                            "127.0.0.1", "--mqtt-port", str(broker.port)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "is online" in r.stderr and "facepi@live_door" in r.stderr, r.stderr
        assert proc.poll() is None  # its own client id: the running daemon was not knocked off the broker
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert err.count("connected to MQTT broker") == 1, err[-3000:]


def test_unreachable_broker_and_bad_login_are_named(tmp_path):
    from conftest import Broker, free_port, passwords

    cfg = config.load(None, env={}, overrides={"mqtt.host": "127.0.0.1", "mqtt.port": free_port()})
    with pytest.raises(ForgetError, match="refused the connection: is the broker running"):
        forget_camera(cfg, "old_door")
    b = Broker(tmp_path / "auth", password_file=passwords(tmp_path / "pw", {"facepi": "right"}))
    b.start()
    try:
        cfg = config.load(None, env={"FACEPI_MQTT_PASSWORD": "wrong"},
                          overrides={"mqtt.host": "127.0.0.1", "mqtt.port": b.port})
        cfg.mqtt.username = "facepi"
        with pytest.raises(ForgetError, match="refused the connection: Not authorized"):
            forget_camera(cfg, "old_door")
    finally:
        b.stop()
    with pytest.raises(ForgetError, match="camera id"):
        forget_camera(cfg, "old door/#")
