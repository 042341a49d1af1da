"""Someone at any door: the pure aggregation of the household's door states (facepi.door.doors)."""

from __future__ import annotations

import json
import random

import pytest

from facepi.door.doors import MAX_DOORS, Doors, door_payload, seen_payload

H = "facepi/household/home"


def door(camera: str, someone: bool) -> tuple[str, bytes]:
    return f"{H}/doors/{camera}", door_payload(camera, someone, f"facepi/{camera}/availability").encode()


def avail(camera: str, state: str) -> tuple[str, bytes]:
    return f"facepi/{camera}/availability", state.encode()


def test_a_door_counts_only_while_its_camera_is_online():
    d = Doors(H)
    assert d.subscription == f"{H}/doors/+"
    assert d.message(*door("front", True)) == ["facepi/front/availability"]  # watched from now on
    assert not d.anyone  # its availability not known yet
    assert d.message(*avail("front", "online")) == []
    assert d.anyone and d.in_view() == ["front"]
    d.message(*avail("front", "offline"))  # killed with someone in view: its Last Will
    assert not d.anyone
    d.message(*avail("front", "online"))  # back (a restart publishes its door at once)
    d.message(*door("front", False))
    assert not d.anyone
    assert d.message(*door("front", True)) == []  # already watched
    d.message(*door("back", False))
    d.message(*avail("back", "online"))
    assert d.in_view() == ["front"]
    d.message(f"{H}/doors/front", b"")  # cleared (facepi ha forget)
    assert not d.anyone and d.watched == ["facepi/back/availability", "facepi/front/availability"]


def test_junk_on_the_door_topics_counts_for_nothing():
    d = Doors(H)
    for payload in (b"ON", b"[]", b'{"someone": 1, "availability": "a"}', b'{"someone": true}',
                    b'{"someone": true, "availability": "facepi/+/availability"}', b"\xff"):
        assert d.message(f"{H}/doors/x", payload) == []
        assert not d.doors
    d.message(f"{H}/doors/a/b", door_payload("a", True, "t"))  # not a door topic
    assert not d.doors
    for i in range(MAX_DOORS + 10):
        d.message(*door(f"cam{i}", True))
    assert len(d.doors) == len(d.watched) == MAX_DOORS


def test_anyone_is_published_once_settled_and_on_each_change():
    d = Doors(H)
    d.message(*door("front", True))
    assert d.connected(now=100.0, settle=1.0) == ["facepi/front/availability"]
    d.message(*avail("front", "online"))
    assert d.changed(100.5) is None  # the broker may still be handing over retained states
    assert d.changed(101.0) is True
    assert d.changed(102.0) is None  # unchanged: nothing to publish
    d.message(*door("front", False))
    assert d.changed(103.0) is False
    d.connected(now=200.0, settle=1.0)  # a reconnect: published again once settled
    assert d.changed(201.0) is False


@pytest.mark.parametrize("side", [True, False])
def test_every_daemon_ends_on_the_same_anyone_whatever_the_interleaving(side):
    """The door and availability messages of a run, each topic's in its order, interleaved differently
    for each of three daemons (an availability topic is seen from its retained message on, once a door
    names it); each publishes on every change of its view. Whatever order the broker then
    gets their `anyone` messages in (each daemon's own in order), the last one is the final aggregate."""
    rng = random.Random(7)
    history = {  # per topic, in order: what the broker received
        "front": [door("front", True), door("front", False), door("front", True)],
        "front_a": [avail("front", "online"), avail("front", "offline")],  # killed with someone in view
        "back": [door("back", False), door("back", True), door("back", False)],
        "back_a": [avail("back", "online")],
        "side": [door("side", False), door("side", side)],
        "side_a": [avail("side", "online")],
    }
    for _ in range(200):
        published = []  # (daemon, value) in the order each daemon published
        for daemon in range(3):
            d = Doors(H)
            d.connected(0.0, settle=0.0)
            queues = {k: list(v) for k, v in history.items()}
            retained: dict[str, bytes] = {}  # what the broker holds, as this daemon's timeline goes
            watched: set[str] = set()
            while any(queues.values()):
                topic, payload = queues[rng.choice([k for k, q in queues.items() if q])].pop(0)
                retained[topic] = payload
                if topic.startswith(H) or topic in watched:
                    for new in d.message(topic, payload):  # subscribed: the broker hands over its retained
                        watched.add(new)
                        if new in retained:
                            d.message(new, retained[new])
                if (value := d.changed(1.0)) is not None:
                    published.append((daemon, value))
        streams = [[v for who, v in published if who == daemon] for daemon in range(3)]
        merged = []  # the broker receives the three daemons' messages interleaved, each stream in order
        while any(streams):
            merged.append(rng.choice([s for s in streams if s]).pop(0))
        assert merged[-1] is side  # front is offline, back is empty: the side door decides


def test_payloads():
    assert json.loads(door_payload("front", True, "facepi/front/availability")) == {
        "camera": "front", "someone": True, "availability": "facepi/front/availability"}
    assert json.loads(seen_payload("Zoë", "front", "Front door", "2026-01-01T00:00:00.000+00:00")) == {
        "person": "Zoë", "camera": "front", "camera_name": "Front door", "time": "2026-01-01T00:00:00.000+00:00"}


def test_forgetting_a_camera_clears_its_door(tmp_path):
    from facepi import config
    from facepi.door.ha_forget import camera_topics

    key = tmp_path / "household.key"
    key.write_text("k" * 32)
    cfg = config.load(None, env={"FACEPI_MQTT_HOST": "localhost", "FACEPI_HOUSEHOLD_ID": "home",
                                 "FACEPI_HOUSEHOLD_KEY_FILE": str(key)})
    assert f"{H}/doors/old_door" in camera_topics(cfg, "old_door")[1]
    assert not any("/doors/" in t for t in camera_topics(config.load(None, env={}), "old_door")[1])
