"""The idle path: raw YUV420 frames (Y4MSource), frames made RGB only when needed, the whole-frame looks of
a still door. Real photos (a door scene of the 5-celebrity val photos), the real models and daemon."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import run_daemon

from facepi import config
from facepi.demo import door_scene
from facepi.door.frames import Frame
from facepi.door.gating import DetectGate
from facepi.door.sources import SourceError, Y4MSource, make_source, write_y4m
from facepi.door.track import Tracker
from facepi.vision.images import read_rgb

FPS = 10.0


def frames_of(video):  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(str(video))
    while True:
        ok, bgr = cap.read()
        if not ok:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def door(tmp_path_factory, faces_root):
    """12 s of door at 10 fps (madonna in view 4-7 s), as MJPEG and as raw YUV420."""
    work = tmp_path_factory.mktemp("idle")
    photo = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]
    avi = door_scene([(photo, 4.0, 3.0)], work / "door.avi", 12.0, FPS)
    return avi, write_y4m(frames_of(avi), work / "door.y4m", FPS)


def test_a_y4m_file_is_read_raw_without_decoding(door, faces_root):
    avi, y4m = door
    src = make_source(str(y4m))
    assert isinstance(src, Y4MSource) and not src.live
    src.open()
    shots = []
    while (shot := src.read()) is not None:
        shots.append(shot)
    src.close()
    assert len(shots) == 120 and src.fps == FPS and [s.t for s in shots[:3]] == [0.0, 0.1, 0.2]
    shot = shots[55]  # madonna in view
    assert shot.fmt == "I420" and shot.rgb.shape == (720, 640) and shot.rgb.base is not None  # a view
    frame = Frame(shot.rgb, shot.t, 0.0, fmt=shot.fmt)
    assert frame.size == (640, 480) and not frame.converted
    grey = frame.grey(160)
    assert grey.shape == (120, 160) and not frame.converted  # the gate's image: from the Y plane alone
    original = list(frames_of(avi))[55]
    assert np.abs(frame.rgb.astype(int) - original).mean() < 4  # 4:2:0 chroma: close, not equal
    assert frame.converted
    from facepi.vision.detect import Detector

    assert len(Detector().detect(frame.rgb)[0]) == 1  # her face, found on the raw frame


def test_a_bad_y4m_is_refused_naming_the_file(tmp_path, faces_root):
    rgb = read_rgb(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0])[:240, :320]
    good = write_y4m([rgb, rgb], tmp_path / "two.y4m", 15.0)
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(good.read_bytes()[:-1000])
    src = Y4MSource(cut)
    src.open()
    assert src.read() is not None
    with pytest.raises(SourceError, match=r"cut\.y4m: frame 2 is damaged or cut short"):
        src.read()
    odd = tmp_path / "odd.y4m"
    odd.write_bytes(b"YUV4MPEG2 W320 H240 F15:1 C444\nFRAME\n")
    with pytest.raises(SourceError, match=r"odd\.y4m: colour space C444"):
        Y4MSource(odd).open()
    junk = tmp_path / "junk.y4m"
    junk.write_bytes(b"not a video")
    with pytest.raises(SourceError, match=r"junk\.y4m: not a YUV4MPEG2 file"):
        Y4MSource(junk).open()


def test_the_daemon_on_raw_frames_names_the_visitor_as_on_the_video(gallery4, door):
    names = {}
    for video in door:
        proc = run_daemon(["--source", str(video), "--classifier", str(gallery4), "--fast"],
                          env={"FACEPI_MQTT_HOST": ""})
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        names[video.suffix] = [json.loads(line)["name"] for line in out.splitlines()]
    assert names[".avi"] == names[".y4m"] == ["madonna"], names


def test_an_empty_door_is_never_made_rgb_and_a_visitor_is(door, gallery4):
    """The daemon's own per-frame path on the raw frames: the frames the gate skips stay YUV (no conversion,
    nothing at full resolution); the frames it detects on, and those with madonna in view, are converted."""
    from facepi.door.daemon import Daemon

    cfg = config.load(None, env={"FACEPI_MQTT_HOST": ""},
                      overrides={"source.uri": str(door[1]), "recognition.gallery": str(gallery4)})
    d = Daemon(cfg)
    src = Y4MSource(door[1])
    src.open()
    converted, looked = [], []
    while (shot := src.read()) is not None:
        frame = Frame(shot.rgb, shot.t, 0.0, fmt="I420")
        before = d.gating.detected
        d.process(frame, shot.t, 0.0)
        converted.append(frame.converted)
        looked.append(d.gating.detected > before)
    assert converted == looked  # made RGB exactly when the detector ran on it
    empty = [c for i, c in enumerate(converted) if 10 <= i < 30 or i >= 100]  # 1-3 s, 10-12 s: nobody, still
    assert sum(empty) <= 3, converted  # a whole-frame look every 2 s, nothing else
    assert all(converted[45:65])  # 4.5-6.5 s: madonna in view, tracked on every frame


def test_a_still_door_is_looked_at_every_2_s_after_motion_then_every_10_s(faces_root):
    """Nobody arrives without moving: for idle_after (30 s) after the last motion a still scene is looked at
    whole every still_interval (2 s: someone who walked in and stood still, face unseen while moving), then
    every idle_interval (10 s): the net for a walk-in the gate missed. Motion brings the 2 s back."""
    cfg = config.load(None, env={})
    assert (cfg.motion.still_interval, cfg.motion.idle_after, cfg.motion.idle_interval) == (2.0, 30.0, 10.0)
    gate = DetectGate(cfg, Tracker())
    rng = np.random.default_rng(0)
    scene = cv2.resize(read_rgb(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]), (640, 480))
    person = scene.copy()
    person[100:300, 200:360] = 255 - person[100:300, 200:360]

    noise = [rng.normal(0, 2.0, scene.shape) for _ in range(7)]  # sensor noise, a new draw each frame

    def shown(rgb: np.ndarray, i: int) -> Frame:
        noisy = np.clip(rgb + noise[i % 7], 0, 255).astype(np.uint8)
        return Frame(cv2.cvtColor(noisy, cv2.COLOR_RGB2YUV_I420), 0.0, 0.0, fmt="I420")

    looks = []
    for i in range(900):  # 90 s at 10 fps; something moves at 60 s (one frame)
        t = i / 10
        roi = gate.where(shown(person if i == 600 else scene, i), t)
        if roi is not None:
            gate.last_detect_t = t  # what detect() records (no detector needed to count)
            looks.append(round(t, 1))
    quiet = [x for x in looks if 0 < x < 60]
    assert quiet == [float(x) for x in range(2, 31, 2)] + [40.0, 50.0], looks
    after = [x for x in looks if x >= 60]
    assert after == [round(60.0 + 2 * k, 1) for k in range(15)], after  # the change, then every 2 s again
