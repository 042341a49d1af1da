"""Frame sources: picamera2, OpenCV (V4L2 device, RTSP/HTTP stream, video file), a folder of images.

Every source yields RGB uint8 frames with a timestamp in seconds: media time for
files and folders (so visits are measured in the video's time even with
``--fast``), monotonic time for live cameras. ``Capture`` runs a source in its
own thread and keeps only the newest frame, so a slow frame never builds a
backlog; when a live source fails it logs, reopens with backoff and carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facepi.images import ImageError, list_images, read_frame, to_rgb

log = logging.getLogger("facepi.source")


class SourceError(Exception):
    pass


@dataclass
class Frame:
    rgb: np.ndarray
    t: float  # seconds: media time for files, monotonic time for live sources
    captured: float  # time.monotonic() when captured (latency is measured from here)
    index: int


class Source(Protocol):
    live: bool  # True: frames come in real time; failures are retried

    def open(self) -> None: ...
    def read(self) -> tuple[np.ndarray, float] | None:
        """Next RGB frame and its time; None at the end of a file or folder."""
        ...
    def close(self) -> None: ...


class FolderSource:
    """Images of a folder in name order, each shown for 1/fps seconds of media time."""

    live = False

    def __init__(self, folder: Path, fps: float = 2.0) -> None:
        self.folder, self.fps = folder, fps or 2.0
        self.files: list[Path] = []
        self.i = 0

    @property
    def frame_interval(self) -> float:
        return 1.0 / self.fps

    def open(self) -> None:
        self.files = list_images(self.folder)
        if not self.files:
            raise SourceError(f"{self.folder}: no images to replay")
        self.i = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        while self.i < len(self.files):
            path, t = self.files[self.i], self.i / self.fps
            self.i += 1
            try:
                return read_frame(path), t  # a 48 MP photo is not a 48 MP frame
            except ImageError as e:
                log.warning("skipping %s", e)
        return None

    def close(self) -> None:
        pass


class OpenCVSource:
    """cv2.VideoCapture: a device index or path (V4L2), an RTSP/HTTP URL, or a video file."""

    def __init__(self, uri: str, width: int = 640, height: int = 480) -> None:
        self.uri, self.width, self.height = uri, width, height
        self.is_file = Path(uri).is_file()
        self.live = not self.is_file
        self.cap: cv2.VideoCapture | None = None
        self.fps = 0.0
        self.n = 0

    @property
    def frame_interval(self) -> float:
        return 1.0 / self.fps if self.fps > 0 else 0.0

    def open(self) -> None:
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise SourceError(f"cannot open video source {self.uri!r}")
        if not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.cap, self.n = cap, 0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.cap is None:
            raise SourceError("source is not open")
        ok, bgr = self.cap.read()
        if not ok:
            if self.is_file:
                return None
            raise SourceError(f"{self.uri!r}: no frame (camera unplugged or stream dropped)")
        self.n += 1
        t = (self.n - 1) / self.fps if self.is_file and self.fps > 0 else time.monotonic()
        return to_rgb(bgr, self.uri), t

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (imported lazily: optional on other machines).

    A video configuration with the ``main`` stream at the configured size. Mind that
    picamera2's "RGB888" format yields BGR-ordered arrays; they are converted here.
    """

    live = True
    frame_interval = 0.0

    def __init__(self, width: int = 640, height: int = 480) -> None:
        self.size = (width, height)
        self.cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            raise SourceError("source 'picamera2' needs the picamera2 package: sudo apt install "
                              "python3-picamera2, and a venv made with --system-site-packages") from None
        cam = Picamera2()
        cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
        cam.start()
        self.cam = cam

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.cam is None:
            raise SourceError("camera is not open")
        try:
            bgr = self.cam.capture_array("main")
        except Exception as e:  # e.g. "Camera frontend has timed out"
            raise SourceError(f"picamera2: {e}") from None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic()

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            finally:
                self.cam = None


def make_source(uri: str, width: int = 640, height: int = 480, fps: float = 0.0) -> Source:
    if uri == "picamera2":
        return Picamera2Source(width, height)
    path = Path(uri)
    if path.is_dir():
        return FolderSource(path, fps or 2.0)
    if not (uri.isdigit() or "://" in uri or uri.startswith("/dev/") or path.is_file()):
        raise SourceError(f"source {uri!r}: not a camera index, /dev path, URL, video file or image folder")
    return OpenCVSource(uri, width, height)


class Capture:
    """Runs a source in a thread and keeps only the newest frame.

    Files and folders are paced at their own frame rate, like a live camera, unless
    ``fast``: then every frame is handed over (the reader waits for the consumer).
    """

    def __init__(self, source: Source, fast: bool = False, reconnect_max: float = 30.0) -> None:
        self.source, self.fast, self.reconnect_max = source, fast, reconnect_max
        self.cond = threading.Condition()
        self.frame: Frame | None = None
        self.ended = False
        self.stopping = False
        self.state = "starting"
        self.dropped = 0
        self.failures = 0
        self.count = 0
        self.thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self.source.open()
        self.state = "streaming"
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=5)
        self.source.close()

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet taken; None on timeout or at the end."""
        with self.cond:
            if self.frame is None and not self.ended:
                self.cond.wait(timeout)
            frame, self.frame = self.frame, None
            self.cond.notify_all()
            return frame

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.ended and self.frame is None

    def _run(self) -> None:
        backoff = 0.5
        start_wall: float | None = None
        start_t = 0.0
        while not self.stopping:
            try:
                got = self.source.read()
            except SourceError as e:
                self.failures += 1
                self.state = f"reconnecting ({e})"
                log.warning("source failed: %s; reopening in %.1f s", e, backoff)
                self.source.close()
                if self._sleep(backoff):
                    break
                backoff = min(backoff * 2, self.reconnect_max)
                try:
                    self.source.open()
                    self.state = "streaming"
                    backoff = 0.5
                    log.info("source reopened")
                except SourceError as e2:
                    log.warning("reopen failed: %s", e2)
                continue
            if got is None:
                break
            rgb, t = got
            if not self.source.live and not self.fast:  # pace files like a camera
                if start_wall is None:
                    start_wall, start_t = time.monotonic(), t
                delay = start_wall + (t - start_t) - time.monotonic()
                if delay > 0 and self._sleep(delay):
                    break
            frame = Frame(rgb, t, time.monotonic(), self.count)
            self.count += 1
            with self.cond:
                if self.fast and not self.source.live:
                    while self.frame is not None and not self.stopping:
                        self.cond.wait(0.5)
                if self.frame is not None:
                    self.dropped += 1
                self.frame = frame
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.state = "ended" if not self.stopping else "stopped"
            self.cond.notify_all()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stopping."""
        with self.cond:
            self.cond.wait_for(lambda: self.stopping, timeout=seconds)
            return self.stopping
