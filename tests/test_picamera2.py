"""The Pi camera path against picamera2's contract (tests/picamera2_standin.py), on real face frames.

No Pi camera here: what runs is facepi's side of every picamera2 call it makes,
with picamera2's signatures, formats, shapes and failure modes (a Pi 4's ISP refuses
an RGB lores stream; unreleased requests starve the camera; a stall times out).
"""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import picamera2_standin as standin
import pytest
from test_always_on import video_frames

from facepi.demo import make_video
from facepi.door.frames import Frame


@pytest.fixture(scope="module")
def door_frames(tmp_path_factory, faces_root) -> list[np.ndarray]:
    photos = [sorted((faces_root / "val" / p).glob("*.jpg"))[0] for p in ("madonna", "elton_john")]
    return video_frames(make_video(photos, tmp_path_factory.mktemp("cam") / "door.avi", fps=10, hold=1.5, gap=1.0))


@pytest.fixture()
def camera(monkeypatch, door_frames):
    cam = standin.Picamera2
    cam.frames, cam.platform, cam.stall, cam.opened = door_frames, "vc4", False, []
    monkeypatch.setitem(sys.modules, "picamera2", standin.module())
    yield cam
    cam.frames, cam.opened, cam.stall = [], [], False


@pytest.mark.parametrize("platform", ["vc4", "pisp"])
def test_main_is_rgb_as_it_comes_and_detection_gets_the_isp_lores(camera, platform):
    from facepi.door.sources import Picamera2Source

    camera.platform = platform
    src = Picamera2Source(640, 480, timeout=2.0, lores_scale=0.45)  # 288x216: a YUV stride (320) wider than a row
    src.open()
    cam = camera.opened[-1]
    assert cam.camera_config["main"] == {"format": "BGR888", "size": (640, 480), "stride": 1920}
    assert src.lores_format == ("YUV420" if platform == "vc4" else "BGR888")  # a Pi 4 refuses RGB lores
    for i in range(8):  # more reads than the camera has buffers: each request must have been released
        shot = src.read()
        frame = camera.frames[i]
        assert np.array_equal(shot.rgb, frame)  # RGB, full resolution, no conversion on the way
        expected = cv2.resize(frame, (288, 216), interpolation=cv2.INTER_AREA)
        if platform == "vc4":  # YUV lores: its Y plane is the motion gate's image, RGB made only if detected on
            assert callable(shot.small) and shot.luma.shape == (216, 288)
            grey = cv2.cvtColor(expected, cv2.COLOR_RGB2GRAY).astype(int)
            diff = shot.luma.astype(int) - grey  # the same picture up to the YUV range's offset and scale
            assert np.abs(diff - np.median(diff)).mean() < 2 and abs(np.median(diff)) <= 16
        small = Frame(shot.rgb, shot.t, shot.t, small=shot.small).detect_copy()
        assert small.shape == (216, 288, 3)
        err = np.abs(small.astype(int) - expected).mean()
        assert err == 0 if platform == "pisp" else err < 4, err  # YUV 4:2:0 costs a little colour, nothing else
        age = time.monotonic() - shot.captured
        assert 0.025 < age < 0.5 and shot.t == shot.captured  # timed from the sensor's exposure, not the return
    assert cam.held == 0 and cam.max_held == 1
    assert "capture_request(wait=False)" in cam.calls and "wait(timeout=2.0)" in cam.calls
    src.close()
    assert cam.closed


def test_the_second_camera_of_a_pi_5_is_picamera2_colon_1(camera):
    from facepi.door.sources import make_source

    for uri, num in (("picamera2", 0), ("picamera2:1", 1)):
        make_source(uri, 640, 480, timeout=2.0).open()
        assert camera.opened[-1].camera_num == num
    with pytest.raises(Exception, match="not a camera index"):
        make_source("picamera2:x")


def test_without_downscale_there_is_no_lores(camera):
    from facepi.door.sources import Picamera2Source

    src = Picamera2Source(640, 480, timeout=2.0)
    src.open()
    shot = src.read()
    assert camera.opened[-1].camera_config["lores"] is None and shot.small is None
    src.close()


def test_a_stalled_camera_times_out_and_reopens(camera):
    from facepi.door.sources import Picamera2Source, SourceError

    src = Picamera2Source(640, 480, timeout=0.5, lores_scale=0.5)
    src.open()
    camera.stall = True
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no frame within 0.5 s \(camera stalled\)"):
        src.read()
    assert time.monotonic() - t0 < 2.0
    src.close()
    camera.stall = False
    src.open()  # what Capture does after a failed read
    shot = src.read()
    assert Frame(shot.rgb, shot.t, shot.t, small=shot.small).detect_copy().shape == (240, 320, 3)
    src.close()


def test_daemon_on_picamera2_detects_on_lores_and_names_the_visitors(camera, gallery4, tmp_path):
    from facepi import config
    from facepi.door.daemon import Daemon
    from facepi.door.notify import Notifier

    cfg = config.load(None, env={"FACEPI_MQTT_HOST": ""},
                      overrides={"source.uri": "picamera2", "recognition.gallery": str(gallery4),
                                 "detection.downscale": 0.5, "detection.minsize": 20})
    daemon = Daemon(cfg, Notifier({}))
    shapes: list[tuple[int, ...]] = []
    detect = daemon.pipeline.detector.detect
    daemon.pipeline.detector.detect = lambda img: (shapes.append(img.shape), detect(img))[1]  # type: ignore
    events: list[dict] = []
    daemon.publisher.event = events.append  # type: ignore[method-assign]
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and {e["name"] for e in events} != {"madonna", "elton_john"}:
            time.sleep(0.2)
    finally:
        daemon.stop_event.set()
        runner.join(30)
    assert result == [0]
    assert {e["name"] for e in events} == {"madonna", "elton_john"}, events
    assert shapes and max(s[0] for s in shapes) <= 240 and max(s[1] for s in shapes) <= 320  # lores only
    for e in events:  # boxes in main (640x480) pixels: the face of a 480-high frame is far above lores scale
        x, y, w, h = e["box"]
        assert w > 100 and x + w <= 640 and y + h <= 480, e["box"]
    assert min(daemon.latency_ms) >= 30  # counted from the sensor timestamp (30 ms before completion)
