"""An announcement a household can act on (issue 24; issue 28 items 2 and 4), on the real daemon and broker:
the picture before its event, "wrong name" on an older event by id (MQTT and CLI) accepted once, a name taken
back with a correction event, the command answer still readable after a visit, a forged visitor_info that
cannot redirect a naming, and naming the second-newest visitor from Home Assistant's entities.
The naming rule itself (look-alikes, time to name) is measured in bench/lookalikes.py; its pure logic here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
from conftest import ROOT, Subscriber, one_face_photos, run_daemon
from test_learning import seed_visitor

from facepi.demo import make_video
from facepi.door import naming
from facepi.door.naming import Look
from facepi.identity.classify import UNKNOWN
from facepi.identity.store import Store, open_store
from facepi.identity.store import load as load_gallery

BASE = "facepi/door"
STRANGER = "mindy_kaling"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facepi", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def looks(names: str, dt: float = 0.1) -> list[Look]:
    """'aaua': one look per letter, a = alice, u = unknown, ``dt`` apart."""
    named = {"a": "alice", "n": UNKNOWN, "u": UNKNOWN}  # n: inside alice's threshold, not clear of it
    return [Look(i * dt, named[c], "alice" if c in "an" else UNKNOWN, np.zeros(2), 1.0) for i, c in enumerate(names)]


def test_a_name_needs_agreeing_looks_over_time():
    """Pure logic: one lucky view (however many frames) names nobody; two thirds of the looks over
    confirm_seconds do; a name is taken back only when the looks have left it."""
    assert naming.sure_name(looks("aaa"), "alice", 0.5) is None  # 0.2 s of evidence
    assert naming.sure_name(looks("aaaaaa"), "alice", 0.5) == "alice"
    assert naming.sure_name(looks("auauau"), "alice", 0.5) is None  # half is not enough
    assert naming.sure_name(looks("aaaaaa"), UNKNOWN, 0.5) is None  # the vote of the looks must agree
    assert naming.sure_name(looks("a"), "alice", 0.5, final=True) == "alice"  # a photo of a folder: no more looks
    assert naming.sure_name(looks("nnnnnn"), "alice", 0.5) is None  # near the threshold: longer, and all agree
    assert naming.sure_name(looks("nnnnnnnnnnn"), "alice", 0.5) == "alice"
    assert naming.sure_name(looks("nnnnnnnnnnu"), "alice", 0.5) is None
    assert not naming.taken_back(looks("aaaaaau"), "alice", UNKNOWN)
    assert naming.taken_back(looks("aauuuuuu"), "alice", UNKNOWN)
    assert not naming.taken_back(looks("aauuuuuu"), "alice", "alice")


def snapshots_before_each_event(sub: Subscriber) -> list[tuple[int, bytes]]:
    """For every event, in arrival order: how many snapshots had arrived before it, and the last of them."""
    out, count, last = [], 0, b""
    with sub.lock:
        for topic, payload, _ in sub.messages:
            if topic == f"{BASE}/snapshot" and payload:
                count, last = count + 1, payload
            elif topic == f"{BASE}/event":
                out.append((count, last))
    return out


def test_pictures_corrections_and_wrong_name_by_id(broker, gallery4, faces_root, tmp_path):
    """A loose threshold names the stranger as family (event 1); madonna comes next (event 2) and stays.
    Every event's snapshot arrives before it. "Wrong name" on event 1 (older: madonna's is the last shown) is
    accepted over MQTT; the same press replayed is refused. `facepi gallery wrong --event 2 --force` while
    madonna is in view: the daemon takes her name back with a correction event (presence follows); the CLI
    refuses the same event again, and an unknown event plainly has nothing to correct. The answer to the last
    command is still on the broker after the next visit's notice."""
    g = tmp_path / "g.npz"
    shutil.copy(gallery4, g)
    open_store(g)  # a database: the daemon records its events for `gallery wrong --event`
    val = faces_root / "val"
    mindy = one_face_photos(sorted((val / STRANGER).glob("*.jpg")), tmp_path)[0]
    madonna = one_face_photos(sorted((val / "madonna").glob("*.jpg")), tmp_path)[0]
    video = make_video([mindy], tmp_path / "a.avi", fps=8, hold=2.5, gap=1.0)
    long = make_video([madonna], tmp_path / "b.avi", fps=8, hold=25.0, gap=3.0)
    door = tmp_path / "door"
    door.mkdir()
    import cv2

    frames = []
    for v in (video, long):  # one video: the stranger, then madonna for 25 s
        cap = cv2.VideoCapture(str(v))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
    out = cv2.VideoWriter(str(door / "door.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 8, frames[0].shape[1::-1])
    for f in frames:
        out.write(f)
    out.release()
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(door / "door.avi"), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_RECOGNITION_THRESHOLD": "0.99", "FACEPI_MQTT_SNAPSHOT": "1",
                           "FACEPI_LEARNING_ENABLED": "1"})
    events = lambda: sub.events(f"{BASE}/event")  # noqa: E731
    answers = lambda: [a for a in sub.events(f"{BASE}/answer") if a.get("command") == "wrong_name"]  # noqa: E731

    def press(ev: dict) -> dict:
        n = len(answers())
        sub.client.publish(f"{BASE}/wrong_name", json.dumps({"name": ev["name"], "seq": ev["seq"], "run": ev["run"]}),
                           qos=1)
        assert sub.wait_for(lambda: len(answers()) > n, 30), answers()
        return answers()[n]

    try:
        assert sub.wait_for(lambda: any(e["name"] == "madonna" for e in events()), 60), events()
        wrong, right = events()[0], next(e for e in events() if e["name"] == "madonna")
        assert wrong["name"] not in (UNKNOWN, "madonna") and wrong["type"] == "recognized", events()
        assert wrong["seq"] < right["seq"]
        forced = cli("gallery", "wrong", "--event", str(right["seq"]), "--force", "--gallery", str(g))
        assert forced.returncode == 0, forced.stderr
        a = press(wrong)  # the older event, by its id
        assert a["ok"] and f"that wasn't {wrong['name']}" in a["message"], a
        assert sub.wait_for(lambda: any(e.get("type") == "correction" for e in events()), 30), events()
        fix = next(e for e in events() if e.get("type") == "correction")
        assert (fix["was"], fix["name"], fix["corrects"]) == ("madonna", UNKNOWN, right["seq"]), fix
        assert sub.wait_for(lambda: "madonna" not in json.loads(sub.on(f"{BASE}/person")[-1]), 10)
        time.sleep(5.2)  # past the wrong_name rate limit: the replay is refused for what it is
        a = press(wrong)
        assert not a["ok"] and "corrected already" in a["message"], a
        again = cli("gallery", "wrong", "--event", str(right["seq"]), "--force", "--gallery", str(g))
        assert again.returncode == 2 and "corrected already" in again.stderr, again.stderr
        nothing = cli("gallery", "wrong", "--event", str(fix["seq"]), "--gallery", str(g))
        assert nothing.returncode == 2 and "no name to correct" in nothing.stderr, nothing.stderr
        # the visit ends as an unknown visitor: its notice on `learning` leaves the answer readable
        assert sub.wait_for(lambda: any("visits" in json.loads(p) for p in sub.on(f"{BASE}/learning")), 60)
        kept = Subscriber(broker.port, topics=(f"{BASE}/answer",), name="fresh")
        assert kept.wait_for(lambda: kept.on(f"{BASE}/answer"), 10)
        kept.close()
        assert "corrected already" in json.loads(kept.on(f"{BASE}/answer")[-1])["message"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    pictures = snapshots_before_each_event(sub)
    assert [n for n, _ in pictures] == list(range(1, len(pictures) + 1)), pictures  # each event's own, before it
    assert all(p[:2] == b"\xff\xd8" for _, p in pictures)
    assert [c.what for c in Store(g).log()].count("correction") == 2  # one each, never the replays
    status = json.loads(sub.on(f"{BASE}/status")[-1])
    assert status["corrections"] == 1 and status["time_to_name_ms_p95"] is not None


def test_a_forged_visitor_info_cannot_redirect_a_naming(broker, gallery4, faces_root, tmp_path):
    """Two stored visitors: the newer comes back (its unknown event names it), and the dashboard shows it.
    Someone else writes visitor_info (retained) naming the older one: the daemon restores its own at once,
    and a naming sent for the forged id is refused (it was typed under the other face). Home Assistant's
    visitor select lists both; choosing the second-newest shows its picture and id, and the name typed then
    enrols that visitor."""
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    assert cli("forget", "elton_john", "--gallery", str(g)).returncode == 0
    val = faces_root / "val"
    older = seed_visitor(store, g, one_face_photos(sorted((val / STRANGER).glob("*.jpg")), tmp_path)[:3],
                         days_ago=1)
    elton = one_face_photos(sorted((val / "elton_john").glob("*.jpg")), tmp_path)
    newer = seed_visitor(store, g, elton[:3])
    madonna = one_face_photos(sorted((val / "madonna").glob("*.jpg")), tmp_path)[0]
    video = make_video([elton[0]] + [madonna] * 12, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_MQTT_SNAPSHOT": "1",
                           "FACEPI_LEARNING_PATH": str(store)})
    info, select = f"{BASE}/visitor_info", "homeassistant/select/facepi_door/visitor/config"
    shown = lambda: json.loads(sub.on(info)[-1])["visitor"] if sub.on(info)[-1:] not in ([], [b""]) else None  # noqa: E731
    answers = lambda kind: [a for a in sub.events(f"{BASE}/answer") if a.get("command") == kind]  # noqa: E731
    try:
        # a returning visitor's unknown event carries the stored visitor's id (learning on)
        assert sub.wait_for(lambda: sub.on(f"{BASE}/event"), 60)
        first = json.loads(sub.on(f"{BASE}/event")[0])
        assert (first["name"], first["visitor"]) == (UNKNOWN, newer), first
        assert sub.wait_for(lambda: any(json.loads(p).get("visitor") == newer and json.loads(p).get("visits") == 2
                                        for p in sub.on(f"{BASE}/learning")), 60)  # that visit stored: newer still
        assert sub.wait_for(lambda: shown() == newer, 60)
        assert sub.wait_for(lambda: sub.on(select) and json.loads(sub.on(select)[-1])["options"] == [newer, older],
                            10), sub.on(select)
        picture = sub.on(f"{BASE}/visitor")[-1]
        forger = Subscriber(broker.port, topics=(f"{BASE}/x",), name="forger")
        forger.client.publish(info, json.dumps({"visitor": older}), qos=1, retain=True).wait_for_publish(5)
        forger.close()
        assert sub.wait_for(lambda: shown() == newer and len(sub.on(info)) >= 3, 10), sub.on(info)
        fresh = Subscriber(broker.port, topics=(info,), name="fresh")
        assert fresh.wait_for(lambda: fresh.on(info), 10)
        fresh.close()
        assert json.loads(fresh.on(info)[-1])["visitor"] == newer  # what Home Assistant reads now
        # a naming sent for the forged id (as if Home Assistant had read it in between) is refused
        sub.client.publish(f"{BASE}/name_visitor", json.dumps({"visitor": older, "name": "vicente"}), qos=1)
        assert sub.wait_for(lambda: answers("name_visitor"), 20)
        refused = answers("name_visitor")[0]
        assert not refused["ok"] and "names the face shown" in refused["message"], refused
        assert "vicente" not in load_gallery(g).people
        # Home Assistant's select: the second-newest visitor, its picture and id, then the name typed
        sub.client.publish(f"{BASE}/show_visitor", older, qos=1)
        assert sub.wait_for(lambda: shown() == older, 20), answers("show_visitor")
        assert sub.on(f"{BASE}/visitor")[-1] != picture and answers("show_visitor")[0]["ok"]
        time.sleep(5.2)  # one naming per 5 s
        assert shown() == older
        sub.client.publish(f"{BASE}/name_visitor", json.dumps({"visitor": older, "name": STRANGER}), qos=1)
        assert sub.wait_for(lambda: len(answers("name_visitor")) == 2, 30), answers("name_visitor")
        assert answers("name_visitor")[1]["ok"], answers("name_visitor")
        assert STRANGER in load_gallery(g).people
        assert sub.wait_for(lambda: shown() == newer, 20)  # the named visitor leaves the list
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert "visitor_info was written by someone else: restored" in err
