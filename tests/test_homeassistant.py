"""Home Assistant: discovery through HA's own schema and templates, entities over a real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, Subscriber, one_face_photos, run_daemon

from facepi import config
from facepi.demo import make_video
from facepi.door.doors import seen_payload
from facepi.door.homeassistant import STRANGER as SHOWN
from facepi.door.homeassistant import discovery, household_discovery, is_household, is_ours, person_key

QUOTED = 'Anne "Annie" Smith'
# HA_VENV: a Home Assistant venv elsewhere (default ./.venv-ha, as scripts/test.sh makes it); not FACEPI_*,
# which the daemons started by the tests would refuse as an unknown key.
HA_PYTHON = Path(os.environ.get("HA_VENV", "") or ROOT / ".venv-ha") / "bin" / "python"


def configs(people: list[str], snapshot: bool = True) -> dict[str, dict]:
    return discovery("door", "Front door", "facepi/door", "homeassistant", people, snapshot, learning=True)


def test_device_name_comes_from_the_camera_id():
    assert config.load(None, env={"FACEPI_CAMERA_ID": "back_door"}).device_name == "Back door"
    cfg = config.load(None, env={"FACEPI_CAMERA_ID": "back_door"}, overrides={"camera_name": "Garden gate"})
    assert cfg.device_name == "Garden gate"


def test_every_config_is_ours_and_unique():
    c = configs(["alice", QUOTED, "Zoë"])
    assert all(is_ours(t, "homeassistant", "door") for t in c)
    assert len({p["unique_id"] for p in c.values()}) == len(c)
    assert person_key(QUOTED) != person_key('Anne "Annie" Smyth')
    assert not is_ours("homeassistant/sensor/facepi_doorbell/x/config", "homeassistant", "door")


def test_visitor_faces_have_entities_only_where_snapshots_are_allowed():
    """Learning with snapshot off: the Learning sensor, but no visitor image (a face leaving the Pi) and no
    naming box (nothing shown to name)."""
    off = {t.split("/")[1] + "/" + t.split("/")[3] for t in configs([], snapshot=False)}
    assert "sensor/learning" in off and not {"image/last_visitor", "text/name_visitor", "image/snapshot"} & off
    on = configs([], snapshot=True)
    image = on["homeassistant/image/facepi_door/last_visitor/config"]
    text = on["homeassistant/text/facepi_door/name_visitor/config"]
    assert image["json_attributes_topic"] == text["json_attributes_topic"] == "facepi/door/visitor_info"


def household(people: list[str]) -> dict[str, dict]:
    return household_discovery("home", "facepi/household/home", "homeassistant", people)


def test_the_household_device_is_the_same_from_every_daemon(tmp_path):
    """One device for the household, whatever camera publishes it: nothing of the camera in its configs,
    so two daemons' retained configs are byte for byte the same; it is not any camera's (is_ours)."""
    c = household(["alice", QUOTED])
    assert json.dumps(c, sort_keys=True) == json.dumps(household([QUOTED, "alice"]), sort_keys=True)
    assert all(is_household(t, "homeassistant", "home") and not is_ours(t, "homeassistant", "door") for t in c)
    assert not any(is_household(t, "homeassistant", "home") for t in configs(["alice"]))
    assert {p["device"]["identifiers"][0] for p in c.values()} == {"facepi_household_home"}
    assert len({p["unique_id"] for p in c.values()}) == len(c) == 1 + 2 * 2  # anyone; per person where and when
    assert not any("availability_topic" in p for p in c.values())  # the household is there while any door is
    assert not set(household(["alice"])) & set(configs(["alice"]))
    key = tmp_path / "household.key"
    key.write_text("k" * 32)
    env = {"FACEPI_MQTT_HOST": "localhost", "FACEPI_CAMERA_ID": "household_home", "FACEPI_HOUSEHOLD_ID": "home",
           "FACEPI_HOUSEHOLD_KEY_FILE": str(key)}
    with pytest.raises(config.ConfigError, match="household's own id"):  # its entities would be the household's
        config.load(None, env=env)


@pytest.mark.skipif(not HA_PYTHON.exists() and not os.environ.get("CI"),
                    reason="Home Assistant venv not made (scripts/test.sh makes it)")
def test_discovery_passes_home_assistants_own_schema_and_templates():
    """Home Assistant Core 2024.3.3 (pinned, in its own venv): every payload passes the platform's
    DISCOVERY_SCHEMA; every template renders as HA renders it, quotes in names included."""
    c = configs(["alice", QUOTED, "Zoë"]) | household(["alice", QUOTED, "Zoë"])
    base = "homeassistant/{}/facepi_door/{}/config"
    event = base.format("event", "recognition")
    last = base.format("sensor", "last_person")
    quoted = base.format("binary_sensor", f"present_{person_key(QUOTED)}")
    someone = base.format("binary_sensor", "someone")
    fps = base.format("sensor", "fps")
    ev = {"camera": "door", "timestamp": "2026-11-28T03:00:00.000+00:00", "name": QUOTED, "score": 0.8,
          "distance": 0.2, "box": [1, 2, 3, 4], "track_id": 1, "seq": 1, "run": "x", "model": "m"}
    renders = [[event, "value_template", json.dumps(ev)],
               [event, "value_template", json.dumps(ev | {"name": "unknown"})],
               [last, "value_template", json.dumps(ev)],
               [last, "value_template", json.dumps(ev | {"name": "unknown"})],
               [quoted, "value_template", json.dumps([QUOTED, "bob"])],
               [quoted, "value_template", json.dumps(["Anne"])],
               [someone, "value_template", "[]"],
               [someone, "value_template", json.dumps(["bob"])],
               [fps, "value_template", json.dumps({"fps": 7.5})]]
    # the naming box: its attributes follow visitor_info (cleared too), and what is typed goes out with the id
    # shown; the entity id is HA's own choice (2024.3.3 ignores default_entity_id), the template does not care
    name_box = base.format("text", "name_visitor")
    renders += [[name_box, "json_attributes_template", json.dumps({"visitor": "V7", "visits": 2})],
                [name_box, "json_attributes_template", ""]]
    commands = [[name_box, "command_template", QUOTED, "text.front_door_name_this_visitor", {"visitor": "V7"}],
                [name_box, "command_template", "bob", "text.front_door_name_this_visitor", {}]]
    # "Wrong name": the button carries the last recognition (the retained `last` event) and sends which it was
    wrong = base.format("button", "wrong_name")
    commands += [[wrong, "command_template", "PRESS", "button.front_door_wrong_name", ev | {"seq": 12}]]
    # the household: where and when a person was last seen (the seen topic), someone at any door (ON/OFF)
    house = "homeassistant/{}/facepi_household_home/{}/config"
    seen = seen_payload(QUOTED, "back", 'The "back" door', "2026-11-28T03:00:00.000+00:00")
    renders += [[house.format("sensor", f"seen_{person_key(QUOTED)}"), "value_template", seen],
                [house.format("sensor", f"seen_at_{person_key(QUOTED)}"), "value_template", seen]]
    # issue 24: a correction is an event type of its own; the visitor select follows visitor_info (cleared too)
    select = base.format("select", "visitor")
    renders += [[event, "value_template", json.dumps(ev | {"type": "correction", "name": "unknown", "was": QUOTED})],
                [select, "value_template", json.dumps({"visitor": "V7", "visits": 2})],
                [select, "value_template", ""]]
    # every attributes topic as Home Assistant takes it, a cleared (empty) visitor_info included: no warning
    image = base.format("image", "last_visitor")
    attributes = [[image, json.dumps({"visitor": "V7"})], [image, ""], [name_box, ""],
                  [base.format("sensor", "answer"), json.dumps({"ok": True, "message": "done"})]]
    proc = subprocess.run([str(HA_PYTHON), str(ROOT / "tests" / "ha_check.py")], capture_output=True, text=True,
                          input=json.dumps({"configs": c, "renders": renders, "commands": commands,
                                            "attributes": attributes}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {t: e for t, e in out["valid"].items() if e} == {}
    platforms = {t.split("/")[1] for t in out["valid"]}
    assert platforms == {"sensor", "event", "binary_sensor", "button", "image", "text", "select"}
    r = out["rendered"]
    fired = json.loads(r[0])
    assert fired == {"event_type": "recognized", "name": QUOTED, "was": None, "score": 0.8, "distance": 0.2,
                     "camera": "door", "timestamp": ev["timestamp"], "box": [1, 2, 3, 4], "seq": 1, "run": "x"}
    assert json.loads(r[1])["event_type"] == "unknown"
    correction = json.loads(r[13])
    assert (correction["event_type"], correction["name"], correction["was"]) == ("correction", "unknown", QUOTED)
    assert correction["event_type"] in c[event]["event_types"] and fired["event_type"] in c[event]["event_types"]
    assert r[14] == "V7" and r[15] == "None"  # the select's state: the visitor shown, or HA's "no value"
    assert out["attributes"] == [{"visitor": "V7"}, {}, {}, {"ok": True, "message": "done"}]  # never Erroneous JSON
    assert out["warnings"] == []
    assert r[2] == QUOTED and r[3] == SHOWN  # a stranger is "Stranger", never HA's own "unknown"
    assert r[4:8] == ["ON", "OFF", "OFF", "ON"]
    assert r[8] in ("7.5", 7.5)
    assert json.loads(r[9]) == {"visitor": "V7", "visits": 2} and json.loads(r[10]) == {}
    sent = [json.loads(p) for p in out["commands"]]
    assert sent[0] == {"visitor": "V7", "name": QUOTED}
    assert sent[1] == {"visitor": None, "name": "bob"}  # nothing shown: sent without an id, and refused
    assert sent[2] == {"name": QUOTED, "seq": 12, "run": "x"}  # the recognition shown, by its seq and run
    assert r[11] == 'The "back" door'
    assert r[12] == "2026-11-28T03:00:00.000+00:00"  # a timestamp sensor takes ISO 8601 with its offset
    anyone = house.format("binary_sensor", "anyone")
    assert out["valid"][anyone] is None and c[anyone]["state_topic"] == "facepi/household/home/anyone"


def test_entities_follow_the_gallery_and_the_dashboard_can_reload(broker, gallery4, faces_root, tmp_path):
    """A real daemon on a live-paced video, a real broker: retained Last person, presence on and off,
    a frame-sized snapshot of the announced face, forget + the Reload button removes the presence entity."""
    import shutil

    from facepi.vision.detect import Detector, DetectorParams

    g = tmp_path / "gallery.npz"
    shutil.copy(gallery4, g)
    photos = one_face_photos([sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]], tmp_path)
    video = make_video(photos * 12, tmp_path / "madonna.avi", fps=8, hold=1.5, gap=2.5)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_MQTT_SNAPSHOT": "1", "FACEPI_RECOGNITION_VISIT_GAP": "2.0"})
    try:
        base = "facepi/door"
        madonna = f"homeassistant/binary_sensor/facepi_door/present_{person_key('madonna')}/config"
        assert sub.wait_for(lambda: sub.on(f"{base}/last"), 60)
        assert json.loads(sub.on(f"{base}/last")[-1])["name"] == "madonna"
        assert sub.wait_for(lambda: sub.on(madonna) and
                            json.loads(sub.on(madonna)[-1])["state_topic"] == f"{base}/person")
        # presence: on while in view, off between visits (after presence_hold)
        person = f"{base}/person"
        assert sub.wait_for(lambda: b'["madonna"]' in sub.on(person) and sub.on(person)[-1] == b"[]")
        jpeg = sub.on(f"{base}/snapshot")[-1]
        view = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert view.shape == (480, 640, 3)  # the frame, not the 112x112 crop
        boxes, _ = Detector(params=DetectorParams(minsize=40)).detect(cv2.cvtColor(view, cv2.COLOR_BGR2RGB))
        ev = json.loads(sub.on(f"{base}/event")[-1])
        x, y, w, h = ev["box"]
        assert any(abs(b[0] - x) < 0.25 * w and abs(b[1] - y) < 0.25 * h for b in boxes)  # the announced face
        # forget madonna; the dashboard's Reload gallery button (the command topic) reloads
        r = subprocess.run([sys.executable, "-m", "facepi", "forget", "madonna", "--gallery", str(g)], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        sub.client.publish(f"{base}/command", "reload", qos=1)
        if not sub.wait_for(lambda: sub.on(madonna)[-1:] == [b""]):
            proc.send_signal(signal.SIGTERM)
            raise AssertionError(proc.communicate(timeout=60)[1][-3000:])
        assert sub.wait_for(lambda: json.loads(sub.on(f"{base}/last")[-1])["name"] == "unknown", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert "command: reload the gallery" in err and re.search(r"command[^\n]*: gallery reloaded", err)
    # Home Assistant restarting later (a new subscriber) gets the last person from the retained topic,
    # while the event topic (the event entity) has nothing retained to fire again
    later = Subscriber(broker.port, topics=(f"{base}/last", f"{base}/event"), name="ha-restarted")
    assert later.wait_for(lambda: later.on(f"{base}/last"), 10)
    time.sleep(1)
    later.close()
    assert json.loads(later.on(f"{base}/last")[-1])["name"] == "unknown" and later.on(f"{base}/event") == []
    assert all(retained for t, _, retained in later.messages if t == f"{base}/last")


def test_the_household_on_a_real_broker(broker, gallery4, faces_root, tmp_path):
    """Two doors of one household (front and back, one gallery, the same key file), a real mosquitto:
    madonna calls at the front door, nobody at the back. Her last-seen topic names the front door at a
    recent time; "Someone at any door" goes ON while she is in view and OFF after; the front daemon killed
    (SIGKILL) with her in view leaves its door retained ON, yet `anyone` goes OFF (its Last Will); forgotten,
    her household entities are cleared by the door still running."""
    from datetime import UTC, datetime

    from facepi.identity.store import open_store

    started = time.monotonic()
    g = tmp_path / "state" / "gallery.npz"
    g.parent.mkdir()
    g.write_bytes(gallery4.read_bytes())
    open_store(g)  # imported into its database once, before two daemons open it
    key = tmp_path / "household.key"
    key.write_text("a household key of more than 16 bytes\n")
    photos = one_face_photos([sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]], tmp_path)
    videos = {"front": make_video(photos * 8, tmp_path / "front.avi", fps=8, hold=3.0, gap=2.5),
              "back": make_video([], tmp_path / "back.avi", fps=8, gap=50.0)}
    env = {"FACEPI_HOUSEHOLD_ID": "home", "FACEPI_HOUSEHOLD_KEY_FILE": str(key),
           "FACEPI_RECOGNITION_VISIT_GAP": "2.0"}
    sub = Subscriber(broker.port)
    daemons = {cam: run_daemon(["--source", str(video), "--classifier", str(g), "--camera-id", cam,
                                "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)], env=env)
               for cam, video in videos.items()}
    house = "facepi/household/home"
    key_m = person_key("madonna")
    seen, anyone = f"{house}/seen/{key_m}", f"{house}/anyone"
    configs = [f"homeassistant/sensor/facepi_household_home/{k}_{key_m}/config" for k in ("seen", "seen_at")]

    def say(what: str) -> str:
        for proc in daemons.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return f"{what}: " + "\n".join(f"--- {cam}\n{proc.communicate(timeout=60)[1][-2000:]}"
                                       for cam, proc in daemons.items())

    try:
        # every daemon publishes the same household device; the back door's own is there too
        assert sub.wait_for(lambda: all(sub.on(c) for c in configs), 60), say("no household discovery")
        assert json.loads(sub.on(configs[0])[-1])["device"]["identifiers"] == ["facepi_household_home"]
        # 1. she is named at the front door: where and when
        assert sub.wait_for(lambda: sub.on(seen), 60), say("no last-seen")
        last = json.loads(sub.on(seen)[-1])
        assert last["person"] == "madonna" and last["camera"] == "front" and last["camera_name"] == "Front"
        assert abs((datetime.now(UTC) - datetime.fromisoformat(last["time"])).total_seconds()) < 30
        later = Subscriber(broker.port, topics=(seen,), name="ha-later")  # Home Assistant started later: retained
        assert later.wait_for(lambda: later.on(seen), 10) and later.messages[0][2]
        later.close()
        # 2. someone at any door: ON while she is in view, OFF after
        assert sub.wait_for(lambda: b"ON" in sub.on(anyone) and sub.on(anyone)[-1] == b"OFF", 30), \
            say(f"anyone: {sub.on(anyone)}")
        # 3. killed with her in view: its door stays retained ON, the household goes OFF (its Last Will)
        assert sub.wait_for(lambda: sub.on(anyone)[-1] == b"ON", 30), say("no second visit")
        daemons["front"].kill()
        killed = time.monotonic()
        assert sub.wait_for(lambda: sub.on(anyone)[-1] == b"OFF", 15), say("anyone stays ON")
        off_after = time.monotonic() - killed
        assert json.loads(sub.on(f"{house}/doors/front")[-1])["someone"] is True
        assert sub.on("facepi/front/availability")[-1] == b"offline"
        # 4. forgotten: the back door (still running) clears her household entities and whereabouts
        r = subprocess.run([sys.executable, "-m", "facepi", "forget", "madonna", "--gallery", str(g)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert sub.wait_for(lambda: all(sub.on(c)[-1:] == [b""] for c in configs) and sub.on(seen)[-1] == b"",
                            30), say("her configs stay")
    finally:
        daemons["back"].send_signal(signal.SIGTERM)
        _, err = daemons["back"].communicate(timeout=60)
        sub.close()
    assert daemons["back"].returncode == 0, err[-3000:]
    assert json.loads(sub.on(f"{house}/doors/back")[-1])["someone"] is False  # a clean stop: its door OFF
    print(f"anyone OFF {off_after:.2f} s after the SIGKILL; test {time.monotonic() - started:.0f} s")
