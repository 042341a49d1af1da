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
from facepi.door.liveness import DAY, Freshening
from facepi.door.track import Tracker
from facepi.door.visits import StrangerVisits
from facepi.identity import liveness as rules
from facepi.identity.classify import UNKNOWN, Prediction


def prob(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def calibration(rng: np.random.Generator, centre: float = 4.0) -> rules.Calibration:
    """A camera calibrated on 200 synthetic live scores (log-odds around ``centre``)."""
    return rules.calibrate(prob(rng.normal(centre, 1.0, 200)), "door")


def member_visit(rng: np.random.Generator, centre: float = 4.0) -> list[float]:
    return [float(x) for x in prob(rng.normal(centre, 1.0, 3))]


def month(f: Freshening, rng: np.random.Generator, photos: list[float], days: int = 60, centre: float = 4.0
          ) -> list[float]:
    """``days`` of 30 member visits and the ``photos`` (each a 3-frame visit recognised as the member) a day,
    each fed if judged live (as the door does); the threshold (log-odds) after each day."""
    z = [float(rules.log_odds(f.cal.threshold))]
    for day in range(days):
        visits = [member_visit(rng, centre) for _ in range(30)] + [[p] * 3 for p in photos]
        for k in rng.permutation(len(visits)):
            v = visits[k]
            if rules.combine(v) >= f.cal.threshold:
                f.feed(v, day * DAY + int(k))
        z.append(float(rules.log_odds(f.cal.threshold)))
    return z


def test_photos_presented_for_months_cannot_loosen_the_camera():
    """Pure logic, synthetic scores (the same attack on the real models and MSU's attacks:
    tests/test_liveness_daemon.py). Members come every day; so do photos recognised as them, for two months:
    plain ones (refused: they feed nothing), ones scored just under the threshold, and ones that pass. The
    threshold never goes below the calibration (adapt_floor 0), nor more than adapt_floor below it when
    loosening is allowed; each day it moves at most 0.5 log-odds."""
    rng = np.random.default_rng(0)
    cal = calibration(rng)
    anchor = float(rules.log_odds(cal.threshold))
    for photos in ([0.001] * 20, [float(prob(anchor - 0.1))] * 20, [float(prob(anchor + 0.1))] * 20):
        z = month(Freshening(cal, frames=100, every=DAY, floor=0.0), rng, photos)
        assert min(z) >= anchor - 1e-9, photos[0]
        z = month(Freshening(cal, frames=100, every=DAY, floor=1.0), rng, photos)
        assert min(z) >= anchor - 1.0 - 1e-9
        assert max(abs(b - a) for a, b in zip(z, z[1:], strict=False)) <= 0.5 + 1e-9
    f = Freshening(cal, frames=100, every=DAY, floor=0.0)
    month(f, rng, [0.001] * 20, days=3)
    assert f.fed <= 3 * 30 and f.cal.anchor == cal.anchor  # refused photos fed nothing; the anchor stays


def test_freshening_follows_the_members_without_ratcheting():
    """The same members as at calibration for two months: the threshold stays near it (fed only visits judged
    live, a sample cut at the threshold, it does not climb away). Members scoring higher (better light)
    tighten it; an uncalibrated camera is never freshened."""
    rng = np.random.default_rng(1)
    cal = calibration(rng)
    anchor = float(rules.log_odds(cal.threshold))
    z = month(Freshening(cal, frames=100, every=DAY), rng, [])
    assert max(z) <= anchor + 0.75, z
    assert np.mean(z[-30:]) <= anchor + 0.5
    brighter = month(Freshening(cal, frames=100, every=DAY), rng, [], days=20, centre=7.0)
    assert brighter[-1] > anchor + 1.5
    u = Freshening(rules.uncalibrated("door"))
    assert not u.feed([0.999] * 300, 0.0) and u.fed == 0 and u.status()["calibrated"] is None


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
    tr_ = Tracker(liveness=True, vote_frames=3, confirm_seconds=0.0)  # named on agreeing frames at once
    seen, t = frames(tr_, 3, 0.0, lambda e: member())
    tr = seen[0]
    assert tr.decision.name == "alice" and not tr_.announce(tr, t)  # not judged yet: wait
    assert tr_.names_in_view(t) == []
    tr_.judged(tr, True, 0.97)
    assert tr_.announce(tr, t) and tr_.names_in_view(t) == ["alice"]


def test_a_spoof_is_said_once_per_visit_never_present_never_a_visitor():
    tr_ = Tracker(liveness=True, vote_frames=3, confirm_seconds=0.0)  # named on agreeing frames at once
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


def test_the_door_uses_only_a_calibration_of_its_models_and_freshens_once_a_day_across_restarts(tmp_path):
    """The real liveness models at the door (no frames needed): a calibration made with other models is not
    used (the door says so, like uncalibrated); and the once-per-adapt_hours limit survives a restart (the
    freshened row says when)."""
    import time

    from facepi import config
    from facepi.door.liveness import DoorLiveness
    from facepi.vision.liveness import LivenessModel

    try:
        model = LivenessModel.load(threads=1)
    except Exception as e:  # noqa: BLE001 - a checkout without the converted liveness models
        pytest.skip(f"no liveness models: {e}")
    cfg = config.Config()
    cfg.camera_id, cfg.recognition.gallery = "door", str(tmp_path / "g.npz")
    cfg.liveness.adapt_frames = 10
    rng = np.random.default_rng(3)
    live = prob(rng.normal(4.0, 1.0, 200))
    rules.save(cfg.recognition.gallery, rules.calibrate(live, "door", models="other_a.tflite+other_b.tflite"))
    door = DoorLiveness(cfg, model)
    st = door.status()
    assert st["state"] == "uncalibrated" and "other liveness models" in st["says"], st
    assert door.threshold == cfg.liveness.uncalibrated_threshold
    mine = rules.calibrate(live, "door", models="+".join(model.files))
    rules.save(cfg.recognition.gallery, mine)
    door.reload()
    assert door.status()["state"] == "calibrated" and door.threshold == mine.threshold

    def save(cal: rules.Calibration) -> None:
        rules.save(cfg.recognition.gallery, cal)

    brighter = [float(x) for x in prob(rng.normal(7.0, 0.3, 10))]
    door = DoorLiveness(cfg, model, save)
    door.judge(brighter, time.time(), True)
    first = rules.load(cfg.recognition.gallery, "door")
    assert first.source == "door" and first.threshold > mine.threshold  # freshened (tightened) and saved
    again = DoorLiveness(cfg, model, save)  # the door restarts within the hour
    assert again.threshold == first.threshold
    again.judge(brighter, time.time(), True)
    assert again.threshold == first.threshold and rules.load(cfg.recognition.gallery, "door") == first
