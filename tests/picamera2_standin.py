"""A stand-in for the picamera2 calls facepi makes: picamera2's signatures, formats and shapes.

picamera2 needs a Raspberry Pi's libcamera, so it cannot run here. This object serves
real frames (a video of real faces) the way picamera2 hands them over, so facepi's
camera path is checked against the contract it relies on:

- ``create_video_configuration(main=, lores=, ...)`` then ``configure``: on a Pi 4
  ("vc4") a lores stream must be YUV (``RuntimeError: lores stream must be YUV``), on a
  Pi 5 ("pisp") it may be RGB; lores may not exceed main.
- libcamera's format names: "BGR888" arrays are R,G,B in memory, "RGB888" are B,G,R;
  "YUV420" is planar I420 whose rows are ``stride`` bytes apart (stride padded to
  64 here), ``make_array`` giving shape (h * 3 / 2, stride), ``make_buffer`` the flat
  bytes.
- ``capture_request(wait=False)`` returns a job, ``wait(job, timeout)`` the request
  or ``TimeoutError``; every request holds one of ``buffer_count`` buffers until
  ``release()`` (a camera whose buffers are all held stalls, as a real one does).
- ``get_metadata()["SensorTimestamp"]``: ns on CLOCK_BOOTTIME at the exposure, a
  little before the request completes.
"""

from __future__ import annotations

import time
import types

import cv2
import numpy as np


def _stride(width: int, bytes_per_pixel: int) -> int:
    return -(-width * bytes_per_pixel // 64) * 64


class CompletedRequest:
    def __init__(self, cam: Picamera2, rgb: np.ndarray, stamp_ns: int) -> None:
        self.cam, self.rgb, self.stamp_ns = cam, rgb, stamp_ns
        self.released = False

    def _stream(self, name: str) -> np.ndarray:
        if self.released:
            raise RuntimeError("request already released")
        cfg = self.cam.camera_config[name]
        w, h = cfg["size"]
        image = cv2.resize(self.rgb, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != self.rgb.shape[1::-1] \
            else self.rgb.copy()
        fmt = cfg["format"]
        if fmt == "BGR888":
            return image  # R,G,B in memory
        if fmt == "RGB888":
            return image[:, :, ::-1].copy()
        if fmt == "YUV420":
            i420 = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).reshape(-1)
            stride = cfg["stride"]
            out = np.zeros(stride * h * 3 // 2, np.uint8)
            y, u, v = i420[:w * h], i420[w * h:w * h * 5 // 4], i420[w * h * 5 // 4:]
            out[:stride * h].reshape(h, stride)[:, :w] = y.reshape(h, w)
            half = stride // 2
            base = stride * h
            out[base:base + half * (h // 2)].reshape(h // 2, half)[:, :w // 2] = u.reshape(h // 2, w // 2)
            base += half * (h // 2)
            out[base:base + half * (h // 2)].reshape(h // 2, half)[:, :w // 2] = v.reshape(h // 2, w // 2)
            return out
        raise RuntimeError(f"stand-in: format {fmt} not modelled")

    def make_array(self, name: str = "main") -> np.ndarray:
        data = self._stream(name)
        if self.cam.camera_config[name]["format"] == "YUV420":
            w, h = self.cam.camera_config[name]["size"]
            return data.reshape(h * 3 // 2, self.cam.camera_config[name]["stride"])
        return data

    def make_buffer(self, name: str = "main") -> np.ndarray:
        return self._stream(name).reshape(-1)

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.stamp_ns, "ExposureTime": 20000, "FrameDuration": 33333}

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.cam.held -= 1


class Job:
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    def get_result(self, timeout: float | None = None):  # type: ignore[no-untyped-def]
        return self.fn(timeout)


class Picamera2:
    """Set ``Picamera2.frames`` (RGB arrays, looped), ``platform`` ("vc4" or "pisp") and ``stall`` first."""

    frames: list[np.ndarray] = []
    platform = "vc4"
    fps = 10.0
    stall = False  # True: no frame ever completes (libcamera's "Camera frontend has timed out")
    exposure_s = 0.03  # the sensor timestamp is this far before the request completes
    opened: list[Picamera2] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.camera_config: dict | None = None
        self.started = False
        self.closed = False
        self.held = 0
        self.max_held = 0
        self.served = 0
        self.calls: list[str] = []
        Picamera2.opened.append(self)

    def create_video_configuration(self, main: dict | None = None, lores: dict | None = None, raw=None,
                                   transform=None, colour_space=None, buffer_count: int = 6, controls=None,
                                   display: str | None = "main", encode: str | None = "main", queue: bool = True,
                                   sensor=None, use_case: str = "video") -> dict:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        config = {"use_case": use_case, "buffer_count": buffer_count, "queue": queue, "main": main,
                  "lores": None if lores is None else {"format": "YUV420", "size": main["size"], **lores},
                  "controls": dict(controls or {})}
        return config

    def configure(self, config: dict) -> None:
        self.calls.append("configure")
        main, lores = config["main"], config["lores"]
        for name, stream in (("main", main), ("lores", lores)):
            if stream is None:
                continue
            if stream["format"] not in ("BGR888", "RGB888", "YUV420"):
                raise RuntimeError(f"stand-in: {name} format {stream['format']} not modelled")
            stream["size"] = tuple(stream["size"])
            stream["stride"] = _stride(stream["size"][0], 3 if stream["format"] != "YUV420" else 1)
        if lores is not None:
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self.platform == "vc4" and lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
        self.camera_config = config

    def stream_configuration(self, name: str = "main") -> dict:
        assert self.camera_config is not None
        return self.camera_config[name]

    def start(self) -> None:
        assert self.camera_config is not None, "start() before configure()"
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def _next(self, timeout: float | None) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("Camera is not running")
        if self.stall or self.held >= self.camera_config["buffer_count"]:
            time.sleep(timeout if timeout is not None else 3600)
            raise TimeoutError
        time.sleep(1.0 / self.fps)
        rgb = self.frames[self.served % len(self.frames)]
        self.served += 1
        self.held += 1
        self.max_held = max(self.max_held, self.held)
        stamp = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - int(self.exposure_s * 1e9)
        return CompletedRequest(self, rgb, stamp)

    def capture_request(self, wait: bool | None = None, flush=None, signal_function=None):  # type: ignore[no-untyped-def]
        self.calls.append(f"capture_request(wait={wait})")
        job = Job(self._next)
        return job if wait is False else job.get_result()

    def capture_array(self, name: str = "main", wait: bool | None = None, signal_function=None):  # type: ignore[no-untyped-def]
        raise AssertionError("facepi should capture requests (both streams, metadata, a timeout), not arrays")

    def wait(self, job: Job, timeout: float | None = None):  # type: ignore[no-untyped-def]
        self.calls.append(f"wait(timeout={timeout})")
        return job.get_result(timeout)


def module() -> types.ModuleType:
    """The stand-in as the ``picamera2`` module (for ``sys.modules``)."""
    m = types.ModuleType("picamera2")
    m.Picamera2 = Picamera2  # type: ignore[attr-defined]
    return m
