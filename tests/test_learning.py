"""Learning from the door: unknown visitors kept (opt-in), named from the CLI or the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Broker, Subscriber, one_face_photos, passwords, run_daemon

from facepi.demo import make_video
from facepi.identity.store import db_path
from facepi.identity.store import load as load_gallery
from facepi.identity.visitor_book import VisitorBook
from facepi.identity.visitor_file import Visitors
from facepi.identity.visitors import VisitorError

STRANGER = "mindy_kaling"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_store_groups_visits_bounds_itself_and_never_unpickles(tmp_path):
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    crops = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    store = Visitors.empty("m", 128)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    near = unit(np.stack([a + 0.05 * rng.normal(size=128) for _ in range(3)]))
    assert store.add_visit(crops, near, np.array([0.9, 0.5, 0.7]), same=0.7, keep=2, now=t0) == "V1"
    assert store.add_visit(crops[:1], unit(a[None] + 0.05), np.array([0.95]), same=0.7, keep=2,
                           now=t0 + timedelta(days=1)) == "V1"  # the same stranger, the next day
    assert store.add_visit(crops[:1], b[None], np.array([0.8]), same=0.7, keep=2, now=t0 + timedelta(days=2)) == "V2"
    v1 = store.visitors[0]
    assert (v1.visits, v1.first_seen[:10], v1.last_seen[:10]) == (2, "2026-11-01", "2026-11-02")
    kept_crops, _ = store.faces("V1")
    assert len(kept_crops) == 2  # the best two over both visits
    path = tmp_path / "v.npz"
    store.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = Visitors.load(path)
    assert [v.id for v in again.visitors] == ["V1", "V2"] and len(again.owner) == 3
    assert again.prune(max_visitors=10, keep_days=5, now=t0 + timedelta(days=6.5)) == ["V1"]  # unseen 5.5 days
    assert again.prune(max_visitors=0, keep_days=30, now=t0 + timedelta(days=7)) == ["V2"]
    np.savez(tmp_path / "evil.npz", header=np.array([{"x": 1}], dtype=object))
    with pytest.raises(VisitorError, match="not a facepi visitor store"):
        Visitors.load(tmp_path / "evil.npz")


@pytest.fixture(scope="module")
def stranger_video(tmp_path_factory, faces_root) -> Path:
    """The stranger twice (two photos), an enrolled person between: 2 s visits, 3 s apart."""
    work = tmp_path_factory.mktemp("stranger")
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), work)
    madonna = one_face_photos(sorted((faces_root / "val" / "madonna").glob("*.jpg")), work)
    return make_video([mindy[0], madonna[0], mindy[1]], work / "stranger.avi", fps=8, hold=2.0, gap=3.0)


def test_learning_is_off_by_default_and_stores_nothing(gallery4, stranger_video, tmp_path):
    store = tmp_path / "visitors.npz"
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(gallery4), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_PATH": str(store)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["unknown", "madonna", "unknown"]
    assert not store.exists() and "learning" not in err


def test_visitors_from_the_cli(gallery4, stranger_video, tmp_path):
    """The daemon keeps the stranger (both visits: one visitor); facepi visitors lists, draws, names him."""
    store, g = tmp_path / "visitors.npz", tmp_path / "g.npz"
    shutil.copy(gallery4, g)
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1",
                           "FACEPI_LEARNING_PATH": str(store)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    listed = subprocess.run([sys.executable, "-m", "facepi", "visitors", "--store", str(store), "--gallery", str(g),
                             "--json"], cwd=ROOT,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    visitors = json.loads(listed.stdout)["visitors"]
    assert [(v["id"], v["visits"]) for v in visitors] == [("V1", 2)], err[-2000:]
    assert 1 <= visitors[0]["faces"] <= 5
    assert db_path(g).stat().st_mode & 0o777 == 0o600  # visitors live in the gallery's database
    sheet = tmp_path / "sheet.png"
    r = subprocess.run([sys.executable, "-m", "facepi", "visitors", "--store", str(store), "--gallery", str(g),
                        "--sheet", str(sheet)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and sheet.read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "facepi", "visitors", "name", "V1", "unknown", "--store",
                          str(store), "--gallery", str(g)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "reserved" in bad.stderr  # names validated as enroll does
    r = subprocess.run([sys.executable, "-m", "facepi", "visitors", "name", "V1", STRANGER, "--store", str(store),
                        "--gallery", str(g)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert STRANGER in load_gallery(g).people
    assert VisitorBook(g).visitors() == []
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": ""})
    out, err = proc.communicate(timeout=120)
    assert [json.loads(line)["name"] for line in out.splitlines()] == [STRANGER, "madonna", STRANGER]


def test_name_the_last_visitor_from_the_dashboard(broker, gallery4, faces_root, tmp_path):
    """Home Assistant's "Name last visitor" over a real broker with the daemon running: the stranger's
    door crops are enrolled, the daemon reloads, and the stranger's next visit carries the name."""
    work = tmp_path / "w"
    work.mkdir()
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), work)
    video = make_video([mindy[0]] + [mindy[1]] * 6, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store),
                           "FACEPI_MQTT_SNAPSHOT": "1"})
    base = "facepi/door"
    try:
        configs = {t for t, _, _ in sub.messages if t.startswith("homeassistant/")}
        assert sub.wait_for(lambda: "homeassistant/text/facepi_door/name_visitor/config"
                            in {t for t, _, _ in sub.messages}, 30), configs
        assert sub.wait_for(lambda: any(json.loads(p).get("visitor") == "V1" for p in sub.on(f"{base}/learning")),
                            60)
        assert sub.wait_for(lambda: sub.on(f"{base}/visitor_info")[-1:] not in ([], [b""]), 10)
        image, info = sub.on(f"{base}/visitor")[-1], json.loads(sub.on(f"{base}/visitor_info")[-1])
        assert image[:2] == b"\xff\xd8" and info["visitor"] == "V1"  # the visitor's best crop, a JPEG, and its id
        # what Home Assistant's "Name this visitor" sends: the typed name with the id shown
        sub.client.publish(f"{base}/name_visitor", json.dumps({"visitor": info["visitor"], "name": STRANGER}), qos=1)
        assert sub.wait_for(lambda: any(json.loads(p).get("ok") for p in sub.on(f"{base}/answer")), 30), \
            sub.on(f"{base}/answer")
        named_at = len(sub.on(f"{base}/event"))
        assert sub.wait_for(lambda: any(json.loads(p)["name"] == STRANGER
                                        for p in sub.on(f"{base}/event")[named_at:]), 40)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert "learning: V1 enrolled as mindy_kaling" in err and re.search(r"learning[^\n]*: gallery reloaded", err)
    first = json.loads(sub.on(f"{base}/event")[0])
    assert first["name"] == "unknown" and first["visitor"] is None  # a first visit: its id comes when stored
    assert STRANGER in load_gallery(g).people


# ---------------------------------------------------------------- commands, access control, privacy (issue 16)

BASE = "facepi/door"
SHOWN = (f"{BASE}/visitor", f"{BASE}/visitor_info")
OLD_FACE = b"\xff\xd8 a face an earlier run left retained"


def test_a_naming_must_name_its_visitor():
    from facepi.door.commands import naming_request

    assert naming_request('{"visitor": " V7 ", "name": "alice"}') == ("V7", "alice")
    for text, why in [("alice", "which visitor it names, as JSON"), ('{"name": "alice"}', "which visitor"),
                      ('{"visitor": null, "name": "alice"}', "which visitor"), ('{"visitor": "V7"}', "no name"),
                      ('["V7", "alice"]', "as JSON")]:
        with pytest.raises(ValueError, match=why):
            naming_request(text)


def seed_visitor(store: Path, gallery: Path, photos: list[Path], days_ago: float = 0.0) -> str:
    """A visitor stored as the daemon stores one: real door-like crops and their embeddings."""
    from facepi.vision.photos import load_pipeline

    pipeline = load_pipeline()
    results = [pipeline.photo(p) for p in photos]
    crops = np.stack([r.faces[0].crop for r in results if not r.error])
    embs = np.stack([r.embeddings[0] for r in results if not r.error])
    g = load_gallery(gallery)
    v, _ = VisitorBook(gallery, store).record(g.model, g.dim, crops, embs, np.linspace(0.9, 0.5, len(crops)), same=0.72,
                                     keep=5, max_visitors=50, keep_days=30,
                                     now=datetime.now(UTC) - timedelta(days=days_ago))
    return v.id


def retained(port: int, topics: tuple[str, ...], name: str, **login) -> dict[str, bytes]:
    """What a client connecting now gets: the broker's retained messages on ``topics``."""
    fresh = Subscriber(port, topics=topics, name=name, **login)
    fresh.wait_for(lambda: False, 1.5)
    fresh.close()
    with fresh.lock:
        return {t: p for t, p, r in fresh.messages if r}


def answers(sub: Subscriber, command: str) -> list[dict]:
    return [a for a in sub.events(f"{BASE}/answer") if a.get("command") == command]


def test_namings_by_id_answers_rate_limits_and_the_image_follows_the_store(broker, gallery4, faces_root, tmp_path):
    """Two strangers at the door. The dashboard's image shows the newest with its id; a naming without an id is
    refused and says why; a reload and a naming sent together both run (one rate limit per kind), a second naming
    at once is refused as rate-limited; after the naming the image moves to the other stranger, and after
    `facepi visitors forget` it is cleared. Before all that, what an earlier run left retained for a visitor who
    has since expired is cleared at start. A fresh client reads the broker's retained topics after each step."""
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    r = subprocess.run([sys.executable, "-m", "facepi", "forget", "elton_john", "--gallery", str(g)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    val = faces_root / "val"
    seed_visitor(store, g, sorted((val / "jerry_seinfeld").glob("*.jpg"))[:3], days_ago=40)  # expired
    earlier = Subscriber(broker.port, topics=(BASE + "/x",), name="earlier-run")
    earlier.client.publish(SHOWN[0], OLD_FACE, qos=1, retain=True).wait_for_publish(5)
    earlier.client.publish(SHOWN[1], json.dumps({"visitor": "V1"}), qos=1, retain=True).wait_for_publish(5)
    earlier.close()
    mindy = one_face_photos(sorted((val / STRANGER).glob("*.jpg")), tmp_path)[0]
    elton = one_face_photos(sorted((val / "elton_john").glob("*.jpg")), tmp_path)[0]
    madonna = one_face_photos(sorted((val / "madonna").glob("*.jpg")), tmp_path)[0]
    video = make_video([mindy, elton] + [madonna] * 12, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store),
                           "FACEPI_MQTT_SNAPSHOT": "1"})
    info = f"{BASE}/visitor_info"

    def shown() -> str | None:
        last = sub.on(info)[-1:]
        return json.loads(last[0])["visitor"] if last and last[0] else None

    try:
        assert sub.wait_for(lambda: sub.on(SHOWN[0])[-1:] == [b""] and sub.on(info)[-1:] == [b""], 30)
        assert retained(broker.port, SHOWN, "fresh-1") == {}  # the expired visitor's face is gone from the broker
        # both strangers stored: the image shows the newest (elton), with its id
        assert sub.wait_for(lambda: len({a["visitor"] for a in sub.events(f"{BASE}/learning")
                                         if "visits" in a}) == 2, 60), sub.events(f"{BASE}/learning")
        first, newest = [a["visitor"] for a in sub.events(f"{BASE}/learning") if "visits" in a][:2]
        assert sub.wait_for(lambda: shown() == newest, 10)
        kept = retained(broker.port, SHOWN, "fresh-2")
        assert kept[SHOWN[0]][:2] == b"\xff\xd8" and json.loads(kept[info])["visitor"] == newest
        # a naming without an id ("the last visitor") is refused, and says why
        sub.client.publish(f"{BASE}/name_visitor", "elton_john", qos=1)
        assert sub.wait_for(lambda: answers(sub, "name_visitor"), 15)
        refused = answers(sub, "name_visitor")[0]
        assert not refused["ok"] and "which visitor" in refused["message"], refused
        time.sleep(5.5)  # past the naming's rate limit
        sub.client.publish(f"{BASE}/command", "reload", qos=1)
        sub.client.publish(f"{BASE}/name_visitor", json.dumps({"visitor": newest, "name": "elton_john"}), qos=1)
        sub.client.publish(f"{BASE}/name_visitor", json.dumps({"visitor": first, "name": "x"}), qos=1)
        assert sub.wait_for(lambda: answers(sub, "command") and len(answers(sub, "name_visitor")) == 3, 30), \
            sub.events(f"{BASE}/learning")
        assert answers(sub, "command")[0]["ok"], answers(sub, "command")
        limited, named = sorted(answers(sub, "name_visitor")[1:], key=lambda a: a["ok"])
        assert named["ok"] and named["visitor"] == newest and "elton_john" in named["message"], named
        assert not limited["ok"] and "at most one" in limited["message"], limited
        assert "elton_john" in load_gallery(g).people
        # the image moves on to the other stranger
        assert sub.wait_for(lambda: shown() == first, 10)
        assert json.loads(retained(broker.port, SHOWN, "fresh-3")[info])["visitor"] == first
        # forgotten from the CLI: the daemon notices, and the face leaves the broker
        r = subprocess.run([sys.executable, "-m", "facepi", "visitors", "forget", first, "--store", str(store),
                            "--gallery", str(g)],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sub.wait_for(lambda: shown() is None and sub.on(SHOWN[0])[-1:] == [b""], 15)
        assert retained(broker.port, SHOWN, "fresh-4") == {}
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert proc.returncode == 0, err[-3000:]


def test_retained_commands_never_run_and_faces_stay_home_without_snapshots(broker, gallery4, faces_root,
                                                                           tmp_path):
    """A retained reload and a retained naming left on the broker before the daemon starts: neither runs, not at
    start and not after the broker restarts (the daemon reconnects and gets them again), and each is logged once.
    With `mqtt.snapshot` off the stranger's visit is stored but no face is published, no image entity is made,
    and the face an earlier run left retained is cleared."""
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    val = faces_root / "val"
    mindy = one_face_photos(sorted((val / STRANGER).glob("*.jpg")), tmp_path)
    vid = seed_visitor(store, g, mindy[:3])
    earlier = Subscriber(broker.port, topics=(BASE + "/x",), name="earlier")
    for topic, payload in [(f"{BASE}/command", "reload"),
                           (f"{BASE}/name_visitor", json.dumps({"visitor": vid, "name": STRANGER})),
                           (SHOWN[0], OLD_FACE)]:
        earlier.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    earlier.close()
    madonna = one_face_photos(sorted((val / "madonna").glob("*.jpg")), tmp_path)[0]
    video = make_video([mindy[3]] + [madonna] * 8, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store)})
    try:
        assert sub.wait_for(lambda: any("visits" in a for a in sub.events(f"{BASE}/learning")), 60)
        assert sub.wait_for(lambda: sub.on(SHOWN[0])[-1:] == [b""], 10)
        broker.stop()
        broker.start()
        assert sub.wait_for(lambda: sub.on(f"{BASE}/availability").count(b"online") >= 2, 30)
        time.sleep(3)  # the retained commands are handed over again on resubscribing
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert sub.events(f"{BASE}/answer") == []  # nothing ran, nothing answered
    assert STRANGER not in load_gallery(g).people and vid in [v.id for v in VisitorBook(g, store).visitors()]
    assert "command: reload" not in err and "gallery reloaded" not in err
    for topic in ("command", "name_visitor"):
        assert len(re.findall(f"ignored a retained message on {BASE}/{topic}", err)) == 1, err[-3000:]
    assert not [p for p in sub.on(SHOWN[0]) + sub.on(SHOWN[1]) if p and p != OLD_FACE]  # no face, no id published
    assert not [t for t, p, _ in sub.messages if "/image/" in t and "last_visitor" in t and p]
    assert retained(broker.port, SHOWN, "fresh") == {}


def test_only_home_assistant_can_name_a_visitor(tmp_path, gallery4, faces_root):
    """The documented acl_file (docs/privacy-security.md) on the real mosquitto with a password_file: another
    client's naming never reaches the daemon (no answer, gallery unchanged); the Home Assistant account's does."""
    page = (ROOT / "docs" / "privacy-security.md").read_text()
    section = page[page.index("## MQTT access control"):]
    start = section.index("```text\n") + len("```text\n")
    (tmp_path / "acl").write_text(section[start:section.index("```", start)])
    logins = {"facepi": "pi-secret", "homeassistant": "ha-secret", "guest": "guest-secret"}
    broker = Broker(tmp_path / "broker", password_file=passwords(tmp_path / "passwd", logins),
                    acl_file=tmp_path / "acl")
    broker.start()
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    val = faces_root / "val"
    vid = seed_visitor(store, g, one_face_photos(sorted((val / STRANGER).glob("*.jpg")), tmp_path)[:3])
    madonna = one_face_photos(sorted((val / "madonna").glob("*.jpg")), tmp_path)[0]
    video = make_video([madonna] * 8, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    ha = Subscriber(broker.port, topics=("facepi/#",), name="ha", username="homeassistant",
                    password=logins["homeassistant"])
    guest = Subscriber(broker.port, topics=("facepi/+/event",), name="guest", username="guest",
                       password=logins["guest"])
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store),
                           "FACEPI_MQTT_USERNAME": "facepi", "FACEPI_MQTT_PASSWORD": logins["facepi"]})
    naming = json.dumps({"visitor": vid, "name": STRANGER})
    try:
        assert ha.wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"online"], 60)
        time.sleep(1)
        guest.client.publish(f"{BASE}/name_visitor", naming, qos=1).wait_for_publish(5)
        time.sleep(6)  # past any rate limit: had it arrived, it would have been answered by now
        assert answers(ha, "name_visitor") == [] and STRANGER not in load_gallery(g).people
        ha.client.publish(f"{BASE}/name_visitor", naming, qos=1).wait_for_publish(5)
        assert ha.wait_for(lambda: answers(ha, "name_visitor"), 30)
        assert answers(ha, "name_visitor")[0]["ok"], answers(ha, "name_visitor")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        ha.close()
        guest.close()
        broker.stop()
    assert proc.returncode == 0, err[-3000:]
    assert STRANGER in load_gallery(g).people and len(answers(ha, "name_visitor")) == 1
