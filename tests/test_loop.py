"""The frame loop never waits on a file, and one visit is counted once (issue 16, items 6 and 7a)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import STRANGER, Lines, hold_gallery_lock, one_face_photos, run_daemon
from test_always_on import ALICE, CAROL, NONE, NotifySocket, decide, face

from facepi.demo import make_video
from facepi.door.track import Tracker
from facepi.door.visits import StrangerVisits
from facepi.door.worker import Worker
from facepi.identity.visitor_book import VisitorBook

HOLD = 60.0  # seconds: a long enrol (a folder of phone photos on a Pi)
KNOWN = ["madonna", "elton_john", "ben_afflek", "jerry_seinfeld"]


@pytest.fixture(scope="module")
def busy_door(tmp_path_factory, faces_root) -> tuple[Path, list[str]]:
    """12 visits, one every 5 s (2 s in view, 3 s away; 63 s in all): the stranger on visits 1, 4,
    7 and 10 (two photos, alternately), household members between. Returns the video and the names
    each visit should be announced as."""
    work = tmp_path_factory.mktemp("busy")

    def photos(person: str) -> list[Path]:
        return one_face_photos(sorted((faces_root / "val" / person).glob("*.jpg")), work)

    stranger, known = photos(STRANGER), {p: photos(p) for p in KNOWN}
    shown, names = [], []
    for k in range(12):
        if k % 3 == 0:
            shown.append(stranger[(k // 3) % 2])
            names.append("unknown")
        else:
            person = KNOWN[(k - 1 - k // 3) % len(KNOWN)]
            shown.append(known[person][0])
            names.append(person)
    return make_video(shown, work / "busy.avi", fps=10, hold=2.0, gap=3.0), names


def test_a_long_enrol_never_stops_the_loop(gallery4, busy_door, tmp_path):
    """The gallery and the visitor store locked for 60 s while the door is busy (real time, learning on,
    a real AF_UNIX notify socket): the watchdog keeps being pinged, every visit is announced as it
    happens, and the stranger's visits are stored once the locks are let go."""
    video, names = busy_door
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    notify = NotifySocket(tmp_path / "notify")
    env = {"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store),
           "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s
    try:
        with hold_gallery_lock(g, visitors=store):
            lines = Lines(run_daemon(["--source", str(video), "--classifier", str(g)], env=env))
            assert lines.wait_for(lambda: any("READY=1" in d for _, d in notify.got), 60), \
                "".join(lines.err)[-3000:]
            held_from = time.monotonic()
            time.sleep(HOLD)
            held_to = time.monotonic()
            during = [json.loads(line)["name"] for line in list(lines.out)]
            stored_during = [line for line in list(lines.err) if "learning: V" in line]
        lines.proc.wait(timeout=90)  # the video ends 63 s in: the daemon ends on its own
        out, err = lines.finish()
    finally:
        notify.close()
    assert lines.proc.returncode == 0, err[-3000:]
    pings = [held_from] + [t for t in notify.pings() if held_from < t < held_to] + [held_to]
    longest = float(np.max(np.diff(pings)))
    print(f"\nlocks held {held_to - held_from:.1f} s: {len(pings) - 2} watchdog pings, longest gap "
          f"{longest:.2f} s; {len(during)} of {len(names)} visits announced while held")
    assert longest < 3.0, f"the watchdog went unpinged for {longest:.1f} s while the locks were held"
    assert len(during) >= 11 and during == names[:len(during)], (during, err[-3000:])
    assert stored_during == [], stored_during  # nothing could be stored: the store was locked
    assert [json.loads(line)["name"] for line in out.splitlines()] == names
    stored = VisitorBook(g, store).visitors()
    assert sum(v.visits for v in stored) == 4, (stored, err[-3000:])  # each stranger visit, once
    assert "learning: V1 stored" in err


def test_a_stranger_who_looks_away_is_one_visit(gallery4, faces_root, tmp_path):
    """The stranger's face is lost for 1 s (longer than track_gap, 0.5 s; shorter than visit_gap, 2 s):
    the track breaks, the visit does not. One announcement, and one visit stored, not two."""
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), tmp_path)[0]
    video = make_video([mindy, mindy], tmp_path / "away.avi", fps=8, hold=2.0, gap=1.0)
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)  # storing a visit moves the gallery into its database
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1",
                           "FACEPI_LEARNING_PATH": str(store)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["unknown"]
    assert [(v.id, v.visits) for v in VisitorBook(g, store).visitors()] == [("V1", 1)], err[-2000:]



def test_a_stop_while_the_store_is_locked_is_bounded_and_said(gallery4, faces_root, tmp_path):
    """The video ends while another facepi holds the visitor store: the daemon waits for it a bounded
    time (within systemd's TimeoutStopSec with the publisher's own wait), then stops and says what
    was not stored, instead of hanging on the lock."""
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), tmp_path)[0]
    video = make_video([mindy], tmp_path / "one.avi", fps=8, hold=2.0, gap=1.0)
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    with hold_gallery_lock(g, visitors=store):
        proc = run_daemon(["--source", str(video), "--classifier", str(g), "--fast"],
                          env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1",
                               "FACEPI_LEARNING_PATH": str(store)})
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["unknown"]
    assert "learning: 1 visit(s) not stored: the visitor store stayed locked for 5 s" in err
    assert VisitorBook(g, store).visitors() == []

# ------------------------------------------------------------------ pure logic: synthetic tracks, real threads
DAVE = np.eye(4)[3]  # a second stranger (orthogonal to everyone)


def door(tracker: Tracker, visits: StrangerVisits, script: list[tuple[float, float, np.ndarray | None]]) -> list:
    """Play [(start, end, who)] at 10 fps through the tracker as the daemon does; every embedded face is a
    learning candidate of quality t. Returns the visits that ended, as lists of (t, who) per visit."""
    ended = []
    for start, end, who in script:
        for t in np.arange(start, end, 0.1):
            boxes, lms = face() if who is not None else NONE
            for tr in tracker.update(boxes, lms, float(t), (640, 480)):
                if tracker.wants_embedding(tr, float(t)):
                    tr = tracker.add_embedding(tr, who, float(t), decide)
                    visits.add(tr, (float(t), np.zeros((2, 2, 3), np.uint8), who))
                tracker.announce(tr, float(t))
            ended += visits.ended(tracker)
    return [[(round(q, 1), int(np.argmax(e))) for q, _, e in v] for v in ended]


def test_a_track_that_breaks_within_a_visit_is_one_visit():
    tracker, visits = Tracker(track_gap=0.3, visit_gap=2.0), StrangerVisits(keep=100)
    ended = door(tracker, visits, [(0, 1.5, CAROL), (1.5, 2.5, None), (2.5, 4, CAROL), (4, 7, None)])
    assert len(ended) == 1  # the face was gone 1 s: a new track, the same visit
    times = [t for t, _ in ended[0]]
    assert min(times) < 1.5 and max(times) > 2.5  # both tracks' faces, in one visit
    assert tracker.next_id > 3  # (the track did break: two tracks and a visitor id were given out)
    ended = door(tracker, visits, [(7, 8.5, CAROL), (8.5, 11, None), (11, 12, ALICE), (12, 15, None)])
    assert len(ended) == 1 and ended[0][0][1] == 2  # 3 s away: a new visit; Alice is enrolled: not kept
    door(tracker, visits, [(15, 16, CAROL), (16, 17, DAVE)])
    last = visits.ended(tracker, final=True)  # the scene ends: every visit with it
    assert [{int(np.argmax(e)) for _, _, e in v} for v in last] == [{2}, {3}]


def test_the_store_worker_never_makes_the_loop_wait_and_drops_the_oldest_when_full():
    """Jobs queue behind one that waits (a locked store); submitting never waits, a full queue drops its
    oldest job and counts it, and results come back only through drain() (the loop's thread)."""
    release, got = threading.Event(), []
    worker = Worker("test", size=2)
    worker.submit(lambda: release.wait(30), lambda r: got.append(("first", r)))
    deadline = time.monotonic() + 5
    while not worker.running and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for k in range(4):
        worker.submit(lambda k=k: k, got.append)
    assert time.perf_counter() - t0 < 0.05
    assert (worker.dropped, worker.pending) == (2, 3)
    worker.drain()
    assert got == []
    release.set()
    assert worker.close(10) == 0
    worker.drain()
    assert got == [("first", True), 2, 3]
