"""The motion gate: pure logic on synthetic frames; end to end on a real door video with the real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, run_daemon

from facepi import config
from facepi.demo import door_scene
from facepi.door.motion import MotionGate, region

H, W = 240, 320


def scene(rng: np.random.Generator, light: float = 1.0, square: tuple[int, int] | None = None) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([60 + 80 * xx / W, 70 + 50 * yy / H, 90 + 20 * np.sin(xx / 19)], axis=-1) * light
    if square is not None:
        x, y = square
        img[y:y + 80, x:x + 60] = (200, 160, 140)
    return np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)


def test_noise_and_slow_light_drift_are_not_motion():
    rng = np.random.default_rng(0)
    gate = MotionGate()
    assert gate.update(scene(rng)).moving  # the first frame of a scene is looked at once
    moving = [gate.update(scene(rng, light=1.0 + 0.15 * i / 300)).moving for i in range(300)]
    assert not any(moving)


def test_someone_entering_is_motion_with_a_box_around_them():
    rng = np.random.default_rng(1)
    gate = MotionGate()
    for _ in range(10):
        gate.update(scene(rng))
    m = gate.update(scene(rng, square=(200, 100)))
    assert m.moving and not m.light
    x1, y1, x2, y2 = m.box
    assert 190 <= x1 <= 205 and 95 <= y1 <= 105 and 255 <= x2 <= 270 and 175 <= y2 <= 190


def test_an_exposure_step_settles_at_once():
    rng = np.random.default_rng(2)
    gate = MotionGate()
    for _ in range(10):
        gate.update(scene(rng))
    after = [gate.update(scene(rng, light=1.3)).moving for _ in range(20)]
    assert sum(after) <= 1  # at most one look (the whole frame), then still


def test_a_visitor_who_stands_still_fades_into_the_background_and_leaves_no_ghost():
    rng = np.random.default_rng(3)
    gate = MotionGate()
    for _ in range(10):
        gate.update(scene(rng))
    standing = [gate.update(scene(rng, square=(100, 60))).moving for _ in range(150)]
    assert standing[0] and not any(standing[-50:])  # the live track, not motion, keeps them detected
    gone = [gate.update(scene(rng)).moving for _ in range(150)]
    assert gone[0] and not any(gone[-50:])


def test_zone_ignores_motion_outside_it():
    rng = np.random.default_rng(4)
    gate = MotionGate(zone=[[0.0, 0.0], [0.4, 0.0], [0.4, 1.0], [0.0, 1.0]])  # the left 40 %
    for _ in range(10):
        gate.update(scene(rng))
    assert not gate.update(scene(rng, square=(220, 100))).moving  # the TV on the right
    assert gate.update(scene(rng, square=(20, 100))).moving


def test_region_and_zone_config():
    assert region([np.array([100, 100, 150, 160])], (480, 640), 0.5, 80) == (20, 20, 230, 240)
    assert region([], (480, 640), 0.5, 80) is None
    with pytest.raises(config.ConfigError, match="motion.zone"):
        config.load(None, env={"FACEPI_MOTION_ZONE": "0.1,0.1,0.5"})


@pytest.fixture(scope="module")
def door_video(tmp_path_factory, faces_root):
    visits = [(sorted((faces_root / "val" / p).glob("*.jpg"))[0], start, hold)
              for p, start, hold in (("madonna", 6.0, 3.0), ("mindy_kaling", 16.0, 3.0), ("elton_john", 26.0, 8.0))]
    return door_scene(visits, tmp_path_factory.mktemp("door") / "door.avi", 40.0, fps=10, exposure_step=36.0)


def run(gallery, video, env=None):
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", **(env or {})})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    final = json.loads([x for x in err.splitlines() if "final status:" in x][-1].split("final status: ")[1])
    return [json.loads(line)["name"] for line in out.splitlines()], final


def test_the_gate_keeps_every_event_and_skips_the_empty_door(gallery4, door_video):
    gated, final = run(gallery4, door_video)
    ungated, full = run(gallery4, door_video, {"FACEPI_MOTION_ENABLED": "0"})
    assert gated == ungated == ["madonna", "unknown", "elton_john"]
    assert full["detect_share"] == 1.0 and final["detect_share"] < 0.75  # 14 s of visitors in 40 s


def test_a_zone_hides_faces_outside_it(gallery4, door_video):
    names, _ = run(gallery4, door_video, {"FACEPI_MOTION_ZONE": "0,0,0.2,0,0.2,1,0,1"})
    assert names == []  # the visitors stand in the middle of the view, outside the zone


def test_detection_windows_come_in_few_sizes():
    from facepi.door.motion import window

    sizes = {(b[2] - b[0], b[3] - b[1]) for x in range(0, 600, 37) for y in range(0, 440, 29)
             if (b := window((x, y, x + 40, y + 40), (480, 640))) is not None}
    assert sizes == {(320, 240)}
    assert window((10, 10, 400, 300), (480, 640)) == (0, 0, 480, 360)
    assert window((0, 0, 600, 400), (480, 640)) is None
    left, top, right, bottom = window((600, 440, 640, 480), (480, 640))
    assert (right, bottom) == (640, 480)  # kept inside the frame


@pytest.fixture(scope="module")
def dark_door(tmp_path_factory, faces_root):
    """bench/dark_motion.py's door: twelve walk-ins, and the same door empty for 30 s."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import dark_motion

    return dark_motion, *dark_motion.videos(faces_root, tmp_path_factory.mktemp("dark"), empty_seconds=30.0)


def test_the_gate_sees_walk_ins_in_the_dark_and_no_more_noise(dark_door):
    """At 12 % brightness with a dark camera's noise (shot, read, row banding), the fixed 18-grey-level
    threshold saw 5 of 12 walk-ins (the detector finds 11 of their faces); the threshold that follows the
    scene's noise and brightness sees >= 11, with no false motion on the empty noisy door (none before
    either), and keeps 18 grey levels in daylight."""
    bench, walk_ins, empty, visits = dark_door
    dark = bench.measure(walk_ins, empty, visits, 0.12)
    assert dark["walk_ins_seen"] >= 11, dark
    assert dark["false_motion_frames"] == 0 and dark["empty_max_changed_area"] < dark["min_area"] / 2, dark
    assert dark["threshold_median"] < 6, dark
    day = bench.measure(walk_ins, empty, visits, 1.0)
    assert day["walk_ins_seen"] == 12 and day["false_motion_frames"] == 0 and day["threshold_median"] == 18, day
