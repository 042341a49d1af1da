"""Liveness at the door, the pure logic: the fresh threshold photos cannot loosen, a member named only once
live, a spoof said once and never present, never a visitor; Home Assistant's Spoof entities through HA's own
schema. (The real model, real attack frames, the real daemon and broker: tests/test_liveness_daemon.py.)"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import ROOT
from test_homeassistant import HA_PYTHON

from facepi.door.homeassistant import discovery
from facepi.door.liveness import DAY, MIN_VISITS, FreshThreshold
from facepi.door.track import StrangerVisits, Tracker
from facepi.identity.classify import UNKNOWN, Prediction


def test_a_run_of_photos_cannot_loosen_the_fresh_threshold():
    """Photos are refused (they feed nothing) or pass barely (below the margin: they feed nothing either);
    even a flood of photos scored just above the margin cannot take the threshold below the floor."""
    f = FreshThreshold(0.8, margin=0.1, step_per_day=0.02, floor=0.0, ceiling=0.1)
    t = 0.0
    for s in [0.3, 0.5, 0.79, 0.85, 0.89] * 100:  # refused or barely live: none feeds
        t += 60
        assert not f.feed(s, t)
    assert f.threshold == 0.8 and f.fed == 0
    live = np.random.default_rng(0).uniform(0.95, 1.0, MIN_VISITS)
    for s in live:  # the members, live: the baseline
        t += 600
        f.feed(float(s), t)
    for _ in range(1000):  # an attacker whose photos score 0.905 (just over the margin), for 1000 visits
        t += 600
        f.feed(0.905, t)
        assert f.threshold >= 0.8  # floor 0: never looser than calibrated
    # a permitted loosening (floor 0.05) is bounded by it, and by the step per day
    g = FreshThreshold(0.8, margin=0.1, step_per_day=0.02, floor=0.05, ceiling=0.1)
    for s in live:
        g.feed(float(s), 0.0)
    for i in range(200):  # all in one day
        g.feed(0.905, 1.0 + i)
    assert g.threshold >= 0.8 - 0.02 - 1e-9
    for day in range(1, 30):
        for i in range(50):
            g.feed(0.905, day * DAY + i)
    assert g.threshold >= 0.75 - 1e-9


def test_the_fresh_threshold_follows_the_camera_within_bounds():
    f = FreshThreshold(0.6, margin=0.05, step_per_day=0.02, floor=0.0, ceiling=0.1)
    rng = np.random.default_rng(1)
    t = 0.0
    for _ in range(MIN_VISITS):
        f.feed(float(rng.uniform(0.7, 0.8)), t)
    assert f.threshold == pytest.approx(0.6)
    for day in range(1, 20):  # the light gets better: live members score higher
        for _ in range(10):
            f.feed(float(rng.uniform(0.9, 1.0)), day * DAY)
        assert f.threshold <= 0.6 + 0.02 * day + 1e-9
    assert f.threshold == pytest.approx(0.7)  # the ceiling
    assert f.status()["bounds"] == [0.6, 0.7]


def member(name: str = "alice") -> Prediction:
    return Prediction(name, 0.9, 0.2, name)


def stranger() -> Prediction:
    return Prediction(UNKNOWN, 0.1, 0.9, "alice")


def frames(tracker: Tracker, n: int, t0: float, decide) -> tuple[list, float]:
    """``n`` frames of one face (a real face's quality), embedded each frame; returns the tracks and the time."""
    box = np.array([[100, 100, 200, 220, 0.999]], np.float32)
    pts = np.array([[[130, 150], [170, 150], [150, 175], [135, 195], [165, 195]]], np.float32)
    seen, t = [], t0
    for i in range(n):
        t = t0 + i * 0.1
        seen = tracker.update(box, pts, t, (640, 480))
        for tr in seen:
            if tracker.wants_embedding(tr, t):
                tracker.add_embedding(tr, np.eye(128, dtype=np.float32)[0], t, decide)
    return seen, t


def test_a_member_is_named_and_present_only_once_judged_live():
    tr_ = Tracker(liveness=True, vote_frames=3)
    seen, t = frames(tr_, 3, 0.0, lambda e: member())
    tr = seen[0]
    assert tr.decision.name == "alice" and not tr_.announce(tr, t)  # not judged yet: wait
    assert tr_.names_in_view(t) == []
    tr_.judged(tr, True, 0.97)
    assert tr_.announce(tr, t) and tr_.names_in_view(t) == ["alice"]


def test_a_spoof_is_said_once_per_visit_never_present_never_a_visitor():
    tr_ = Tracker(liveness=True, vote_frames=3)
    seen, t = frames(tr_, 3, 0.0, lambda e: member())
    tr = seen[0]
    tr.live, tr.liveness = False, 0.12
    assert tr_.announce(tr, t)  # the spoof event
    assert not tr_.announce(tr, t + 0.1)
    seen, t = frames(tr_, 10, t + 0.1, lambda e: member())
    assert tr_.names_in_view(t) == [] and "alice" not in tr_.visiting
    # the track breaks (turned away) and comes back within visit_gap: the same presentation, no new event
    seen, t2 = frames(tr_, 3, t + 1.0, lambda e: member())
    assert seen[0] is not tr
    seen[0].live = False
    assert not tr_.announce(seen[0], t2)
    # the real alice, live, at the same door afterwards is announced as herself
    seen, t3 = frames(tr_, 3, t2 + 5.0, lambda e: member())
    tr_.judged(seen[0], True, 0.97)
    assert tr_.announce(seen[0], t3) and tr_.names_in_view(t3) == ["alice"]
    # a stranger's visit not judged live (or not judged) never becomes a visitor when liveness is on
    tk = Tracker(liveness=True, vote_frames=3, unknown_min_frames=3)
    visits = StrangerVisits(keep=4, need_live=True)
    seen, t = frames(tk, 6, 0.0, lambda e: stranger())
    s = seen[0]
    assert tk.announce(s, t) and s.visitor is not None
    visits.add(s, (1.0, np.zeros((112, 112, 3), np.uint8), np.eye(128, dtype=np.float32)[0]))
    for live, stored in ((None, 0), (False, 0), (True, 1)):
        s.live = live
        visits.tracks[s.id] = (s, [(1.0, np.zeros((112, 112, 3), np.uint8), np.eye(128, dtype=np.float32)[0])])
        visits.visits.clear()
        assert len(visits.ended(tk, final=True)) == stored, live


@pytest.mark.skipif(not HA_PYTHON.exists(), reason="no Home Assistant venv (.venv-ha)")
def test_the_spoof_entities_pass_home_assistants_schema():
    c = discovery("door", "Front door", "facepi/door", "homeassistant", ["alice"], True, learning=True, liveness=True)
    base = "homeassistant/{}/facepi_door/{}/config"
    spoof, rec, diag = base.format("event", "spoof"), base.format("event", "recognition"), \
        base.format("sensor", "liveness")
    assert base.format("image", "spoof_snapshot") in c
    assert base.format("event", "spoof") not in discovery("door", "D", "facepi/door", "homeassistant", [], True)
    ev = {"camera": "door", "timestamp": "2026-12-07T03:00:00.000+00:00", "name": "unknown", "score": 0.8,
          "distance": 0.2, "box": [1, 2, 3, 4], "track_id": 1, "seq": 1, "run": "x", "model": "m",
          "live": False, "liveness": 0.12, "resembles": "alice"}
    status = {"fps": 7, "liveness": {"state": "uncalibrated", "says": "no calibration for camera door: default "
                                     "threshold 0.900", "threshold": 0.9}}
    renders = [[spoof, "value_template", json.dumps(ev)], [rec, "value_template", json.dumps(ev)],
               [rec, "value_template", json.dumps(ev | {"live": True, "name": "alice"})],
               [rec, "value_template", json.dumps({k: v for k, v in ev.items() if k != "live"})],
               [diag, "value_template", json.dumps(status)], [diag, "json_attributes_template", json.dumps(status)],
               [diag, "value_template", json.dumps({"fps": 7})]]
    proc = subprocess.run([str(HA_PYTHON), str(ROOT / "tests" / "ha_check.py")], capture_output=True, text=True,
                          input=json.dumps({"configs": c, "renders": renders}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {t: e for t, e in out["valid"].items() if e} == {}
    r = out["rendered"]
    assert json.loads(r[0]) == {"event_type": "spoof", "resembles": "alice", "liveness": 0.12, "camera": "door",
                                "timestamp": ev["timestamp"], "box": [1, 2, 3, 4]}
    assert [json.loads(x)["event_type"] for x in r[1:4]] == ["spoof", "recognized", "unknown"]
    assert r[4].startswith("no calibration for camera door") and json.loads(r[5])["state"] == "uncalibrated"
    assert r[6] == "off"
