"""Liveness per camera: calibration on real live frames, the poisoning attack on it, the decision on
real attacks, storage beside the gallery, and the CLI contract (calibrate, classify --liveness)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import MODELS, ROOT

from facepi.cli import main as facepi_main
from facepi.identity import liveness as decide
from facepi.identity.gallery import GalleryError
from facepi.vision import align
from facepi.vision.detect import Detector
from facepi.vision.images import read_rgb
from facepi.vision.liveness import LivenessModel

NUAA = ROOT.parent / "shared" / "data" / "liveness-dev" / "nuaa"
needs_data = pytest.mark.skipif(not NUAA.is_dir(), reason=f"{NUAA} absent (development data)")


def frames(kind: str, subject: str, step: int, n: int | None = None):
    return sorted((NUAA / kind / subject).glob("*.jpg"))[::step][:n]


@pytest.fixture(scope="module")
def scored():
    """P(live) of real NUAA frames (one webcam): calibration people, another person, attacks."""
    model, det = LivenessModel.load(MODELS, threads=1), Detector(MODELS, threads=1)

    def score(paths):
        out = []
        for p in paths:
            rgb = read_rgb(p)
            boxes, _ = det.detect(rgb)
            out.append(model.score(rgb, boxes[align.largest_face(boxes)]))
        return np.array(out)

    return {"calibration": score([p for s in ("0003", "0004", "0006", "0009") for p in frames("live", s, 6)]),
            "live": score(frames("live", "0002", 5, 5)), "attack": score(frames("attack", "0002", 20, 5)),
            "photos": score([p for s in ("0003", "0004", "0006", "0009") for p in frames("attack", s, 10)])}


@needs_data
def test_real_live_frames_pass_and_real_photos_fail_the_calibrated_threshold(scored):
    cal = decide.calibrate(scored["calibration"], "webcam")
    assert cal.frames == len(scored["calibration"]) >= 60 and cal.outliers == 0
    assert all(cal.is_live(s) for s in scored["live"]), (cal.threshold, scored["live"])
    assert not any(cal.is_live(s) for s in scored["attack"]), (cal.threshold, scored["attack"])
    assert cal.is_live(decide.combine(scored["live"])) and not cal.is_live(decide.combine(scored["attack"]))


@needs_data
def test_photos_presented_during_calibration_cannot_loosen_it_much(scored):
    """The poisoner holds printed photos to the camera while it is calibrated (frames the tool is told are live)."""
    clean = decide.calibrate(scored["calibration"], "webcam")
    live, photos = scored["calibration"], np.sort(scored["photos"])[::-1]
    # many photos among the live faces: refused, and the message says why
    with pytest.raises(decide.CalibrationRefused, match="score far below the others"):
        decide.calibrate(np.concatenate([live, photos[:10]]), "webcam")
    # mostly photos: refused (the typical face is not live)
    with pytest.raises(decide.CalibrationRefused):
        decide.calibrate(np.concatenate([live[:10], photos]), "webcam")
    # a clever poisoner: only their best photo, once (under the refusal limit) -> the floor holds
    poisoned = decide.calibrate(np.concatenate([live, photos[:1]]), "webcam")
    assert poisoned.threshold >= clean.floor * 0.9
    assert not any(poisoned.is_live(s) for s in scored["photos"])
    # and frame by frame at the door: photos offered again and again cannot walk the threshold down
    cal = clean
    for _ in range(20):
        cal = decide.freshen(cal, np.concatenate([live[:20], photos[:1]]))
    assert decide.log_odds(cal.threshold) >= decide.log_odds(clean.anchor) - decide.MAX_DRIFT - 1e-9
    assert not any(cal.is_live(s) for s in scored["photos"])


def test_freshening_follows_the_median_a_bounded_step_and_keeps_its_anchor():
    rng = np.random.default_rng(1)
    z = decide.log_odds

    def season(mean, n=300):
        return 1 / (1 + np.exp(-rng.normal(mean, 1.0, n)))

    cal = decide.calibrate(season(4.0), "door")
    # the door only sees faces that passed: fed those again and again, the threshold must not ratchet up
    step = cal
    for _ in range(20):
        s = season(4.0)
        step = decide.freshen(step, s[s >= step.threshold])
    assert abs(z(step.threshold) - z(cal.threshold)) < 0.15, (cal.threshold, step.threshold)
    up = decide.freshen(cal, season(8.0))  # a brighter season: stricter, a step at a time
    assert z(up.threshold) - z(cal.threshold) == pytest.approx(decide.MAX_STEP)
    lowest = max(z(cal.anchor) - decide.MAX_DRIFT, z(cal.floor))
    step = up
    for _ in range(20):  # a darker season, or photos shown at the door
        new = decide.freshen(step, season(1.0))
        assert z(step.threshold) - z(new.threshold) <= decide.MAX_STEP + 1e-9
        assert z(new.threshold) >= lowest - 1e-9
        step = new
    assert z(step.threshold) == pytest.approx(lowest)
    assert step.anchor == cal.anchor and step.source == "door"
    assert decide.freshen(cal, season(4.0, 3)) == cal  # too few frames: no change
    assert decide.freshen(decide.uncalibrated("door"), season(4.0)).threshold == decide.UNCALIBRATED


def test_combine_is_the_median_in_log_odds():
    assert decide.combine([0.9, 0.9, 0.0001]) == pytest.approx(0.9)
    assert decide.combine([0.01, 0.01, 0.999]) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        decide.combine([])


def test_too_few_frames_and_bad_camera_ids_are_refused():
    with pytest.raises(decide.CalibrationRefused, match="at least 10"):
        decide.calibrate([0.9] * 5, "door")
    with pytest.raises(ValueError, match="camera id"):
        decide.calibrate([0.9] * 20, "front door")


def test_stored_per_camera_beside_the_gallery(tmp_path):
    g = str(tmp_path / "gallery.npz")
    assert decide.load(g, "front") is None and decide.all_calibrations(g) == {}
    assert not decide.load_or_default(g, "front").calibrated
    cal = decide.calibrate(np.linspace(0.9, 0.999, 30), "front")
    decide.save(g, cal)
    decide.save(g, decide.calibrate(np.linspace(0.99, 0.9999, 30), "back"))
    assert decide.load(g, "front") == cal and set(decide.all_calibrations(g)) == {"back", "front"}
    made = decide.calibrate(np.linspace(0.9, 0.999, 30), "front", models="a.tflite+b.tflite")
    made.check_models(["a.tflite", "b.tflite"])
    with pytest.raises(ValueError, match="calibrate it again"):
        made.check_models(["c.tflite", "b.tflite"])
    con = sqlite3.connect(tmp_path / "gallery.db")
    con.execute("UPDATE liveness SET value = '{\"camera_id\": \"front\", \"threshold\": 7}' WHERE camera = 'front'")
    con.commit()
    con.close()
    with pytest.raises(GalleryError, match="liveness calibration of camera 'front' is damaged"):
        decide.load(g, "front")


@pytest.mark.parametrize("change, named", [({"threshold": 0.0}, "threshold 0.0"), ({"threshold": 1.0}, "threshold"),
                                           ({"floor": 0.99}, "floor 0.99"), ({"anchor": -1.0}, "anchor"),
                                           ({"target_bpcer": 0.9}, "target_bpcer"), ({"frames": 2}, "frames 2"),
                                           ({"source": "default"}, "source 'default'")])
def test_a_stored_row_out_of_range_is_refused_by_name(tmp_path, change, named):
    """A row that could not come out of calibrate/freshen (a threshold of 0 passes every photo) is damaged."""
    import dataclasses

    g = str(tmp_path / "gallery.npz")
    cal = decide.calibrate(np.linspace(0.9, 0.999, 30), "front")
    decide.save(g, cal)
    assert decide.load(g, "front") == cal
    decide.save(g, dataclasses.replace(cal, **change))
    with pytest.raises(GalleryError, match=f"camera 'front' is damaged.*{named}"):
        decide.load(g, "front")


@needs_data
def test_the_cli_contract_on_real_frames(tmp_path, capsys):
    """facepi liveness calibrate + facepi classify --liveness --camera-id --json on real webcam frames."""
    def link(paths, folder):
        folder.mkdir(parents=True)
        for p in paths:
            (folder / p.name).symlink_to(p)

    link([p for s in ("0003", "0004", "0006", "0009") for p in frames("live", s, 6)], tmp_path / "cal")
    link(frames("live", "0002", 4, 6), tmp_path / "enrol" / "alice")
    link(frames("live", "0002", 7)[-2:] + frames("attack", "0002", 30, 3), tmp_path / "test" / "alice")
    g = str(tmp_path / "g.npz")
    m = ["--models", str(MODELS)]
    assert facepi_main(["enroll", "alice", str(tmp_path / "enrol" / "alice"), "--gallery", g, "--force", *m]) in (0, 3)
    assert facepi_main(["gallery", "check", "--gallery", g, *m]) in (0, 1)
    assert "no camera calibrated" in capsys.readouterr().out
    assert facepi_main(["liveness", "calibrate", str(tmp_path / "cal"), "--camera-id", "webcam", "--gallery", g,
                        *m]) == 0
    assert "camera webcam: live when P(live) >=" in capsys.readouterr().out
    assert facepi_main(["classify", str(tmp_path / "test"), g, "--liveness", "--camera-id", "webcam", "--json",
                        *m]) == 0
    out = json.loads(capsys.readouterr().out)
    by = {r["path"].split("/")[-1]: r for r in out["results"]}
    attacks = {p.name for p in frames("attack", "0002", 30, 3)}
    for name, r in by.items():
        assert isinstance(r["live"], bool) and 0.0 <= r["liveness"] <= 1.0
        if name in attacks:
            assert r["live"] is False and r["name"] != "alice" and r["resembles"] == "alice", r
        else:
            assert r["live"] is True and r["name"] == "alice", r
    assert facepi_main(["gallery", "check", "--gallery", g, *m]) in (0, 1)
    assert "camera webcam: live when" in capsys.readouterr().out
    # the contract's edges: --liveness needs the camera; a calibration of photos is refused and not stored
    assert facepi_main(["classify", str(tmp_path / "test"), g, "--liveness", *m]) == 2
    link(frames("attack", "0003", 5, 20), tmp_path / "photos")
    assert facepi_main(["liveness", "calibrate", str(tmp_path / "photos"), "--camera-id", "porch", "--gallery", g,
                        *m]) == 2
    assert "Calibrate with live faces only" in capsys.readouterr().err
    assert decide.load(g, "porch") is None
