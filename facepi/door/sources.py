"""Frame sources: picamera2, OpenCV (V4L2 device, RTSP/HTTP stream, video file), a folder of images.

Every source yields RGB uint8 frames with a timestamp in seconds: media time for
files and folders (so visits are measured in the video's time even with
``--fast``), monotonic time for live cameras. Every wait on a camera is bounded
(FFmpeg open/read timeouts for streams, a ``wait`` timeout for picamera2). A source
may say more than (rgb, t): a ``Shot`` also carries when the sensor took the frame
and a small copy made by the camera's ISP for detection (picamera2).
"""

from __future__ import annotations

import logging
import mmap
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from facepi.redact import mask
from facepi.vision.images import ImageError, list_images, read_frame, to_rgb

log = logging.getLogger(__name__)


class SourceError(Exception):
    pass


class Shot(NamedTuple):
    """What a source read: a plain ``(rgb, t)`` is a Shot too."""

    rgb: np.ndarray  # the frame in ``fmt`` (frames.FORMATS): converted to RGB only when something needs it
    t: float
    captured: float | None = None  # time.monotonic() of the exposure, where the camera says (sensor timestamp)
    small: np.ndarray | Callable[[], np.ndarray] | None = None  # the same view, smaller, made by the camera
    # (picamera2's lores): detect on it; a callable makes it (from YUV) only when a frame is detected on
    fmt: str = "RGB"
    luma: np.ndarray | None = None  # a grey image of the same view (picamera2's lores Y plane): motion reads it


class Source(Protocol):
    live: bool  # True: frames come in real time; failures are retried

    def open(self) -> None: ...
    def read(self) -> Shot | tuple[np.ndarray, float] | None:
        """Next RGB frame and its time (or a Shot); None at the end of a file or folder."""
        ...
    def close(self) -> None: ...


class FolderSource:
    """Images of a folder in name order, each shown for 1/fps seconds of media time.

    Every photo is its own scene (``cuts``): faces are never joined across photos.
    """

    live = False
    cuts = True

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
    """cv2.VideoCapture: a device index or path (V4L2), an RTSP/HTTP URL, or a video file.

    Network streams get FFmpeg's open and read timeouts, so a camera that goes
    silent fails a read (and is reopened) instead of blocking it forever. A file
    with damaged frames is read past them (seeking over each one) up to
    ``max_bad_frames`` in a row; beyond that it ends with an error that names the
    frame, never as if the video were over.
    """

    def __init__(self, uri: str, width: int = 640, height: int = 480, timeout: float = 10.0,
                 max_bad_frames: int = 50) -> None:
        self.uri, self.width, self.height = uri, width, height
        self.timeout, self.max_bad_frames = timeout, max_bad_frames
        self.is_file = Path(uri).is_file()
        self.live = not self.is_file
        self.cap: cv2.VideoCapture | None = None
        self.fps = 0.0
        self.total = 0
        self.bad_frames = 0  # skipped because unreadable (files)
        self.next = 0  # the next frame index a file has not delivered yet

    @property
    def frame_interval(self) -> float:
        return 1.0 / self.fps if self.fps > 0 else 0.0

    def open(self) -> None:
        if "://" in self.uri:
            ms = int(self.timeout * 1000)
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(int(self.uri) if self.uri.isdigit() else self.uri)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video source {mask(self.uri)!r}")
        if not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.is_file else 0
        self.cap, self.next = cap, 0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.cap is None:
            raise SourceError("source is not open")
        if not self.is_file:
            ok, bgr = self.cap.read()
            if not ok:
                raise SourceError(f"{mask(self.uri)!r}: no frame (camera unplugged, stream dropped or silent "
                                  f"for {self.timeout:g} s)")
            return as_read(bgr, mask(self.uri), time.monotonic())
        bad = 0
        while True:
            pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES))
            ok, bgr = self.cap.read()
            if ok and pos >= self.next:
                self.next = pos + 1
                return as_read(bgr, self.uri, pos / self.fps if self.fps > 0 else float(pos))
            if ok:
                continue  # a seek landed before the damage (on a key frame): read on to where we were
            if self.total <= 0 or max(pos, self.next) >= self.total:
                return None  # the end of the video
            bad += 1
            self.bad_frames += 1
            if bad > self.max_bad_frames or self.next + bad >= self.total:
                raise SourceError(f"{self.uri}: unreadable from frame {self.next + 1} of {self.total} on (the file "
                                  f"is damaged; gave up after {bad} unreadable frames in a row)")
            log.warning("%s: frame %d of %d is unreadable; skipped", self.uri, self.next + bad, self.total)
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, self.next + bad)  # seek over it, never back

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def as_read(bgr: np.ndarray, name: str, t: float) -> Shot:
    """OpenCV's frame as it comes (8-bit BGR: converted only when needed), anything else as RGB."""
    if bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3:
        return Shot(bgr, t, fmt="BGR")
    return Shot(to_rgb(bgr, name), t)


class Y4MSource:
    """Raw frames from a YUV4MPEG2 file (``.y4m``, 4:2:0): planar YUV as a camera's ISP hands it over
    (the Pi camera's lores stream is YUV420), with nothing to decode.

    The file is memory-mapped and every frame is a view into it, so a frame costs
    no copy and no conversion until something needs its RGB image; what the loop
    itself spends on an empty door can be measured apart from decoding. ``ffmpeg -i
    door.mp4 -pix_fmt yuv420p door.y4m`` makes one; so does :func:`write_y4m`. Paced at
    the header's frame rate like a video file.
    """

    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fps = 0.0
        self.size = (0, 0)
        self.data: np.ndarray | None = None
        self.map: mmap.mmap | None = None
        self.first = 0  # byte offset of the first frame
        self.i = 0

    @property
    def frame_interval(self) -> float:
        return 1.0 / self.fps

    def open(self) -> None:
        with open(self.path, "rb") as f:
            header = f.readline(1024)
        if not header.startswith(b"YUV4MPEG2 ") or not header.endswith(b"\n"):
            raise SourceError(f"{self.path}: not a YUV4MPEG2 file (expected a 'YUV4MPEG2 W.. H.. F..' header)")
        tags = {t[:1]: t[1:] for t in header.decode("ascii", "replace").split()[1:]}
        colour = tags.get("C", "420")
        if not colour.startswith("420") or tags.get("I", "p") not in ("p", "?"):
            raise SourceError(f"{self.path}: colour space C{colour}, interlacing I{tags.get('I')}: "
                              f"only progressive 4:2:0 (C420jpeg, C420, C420mpeg2) is read")
        try:
            w, h = int(tags["W"]), int(tags["H"])
            num, den = (int(x) for x in tags.get("F", "30:1").split(":"))
        except (KeyError, ValueError):
            raise SourceError(f"{self.path}: the header {header[:80]!r} has no usable W, H and F tags") from None
        if w % 2 or h % 2 or w <= 0 or h <= 0 or num <= 0 or den <= 0:
            raise SourceError(f"{self.path}: size {w}x{h} at {num}:{den} fps: expected even sides and a rate > 0")
        self.size, self.fps, self.first, self.i = (w, h), num / den, len(header), 0
        with open(self.path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.data = np.frombuffer(self.map, np.uint8)  # a plain array over the mapping: views cost nothing

    def read(self) -> Shot | None:
        if self.data is None:
            raise SourceError("source is not open")
        w, h = self.size
        frame = w * h * 3 // 2
        start = self.first + self.i * (6 + frame)
        if start >= len(self.data):
            return None
        if bytes(self.data[start:start + 6]) != b"FRAME\n" or start + 6 + frame > len(self.data):
            raise SourceError(f"{self.path}: frame {self.i + 1} is damaged or cut short (expected 'FRAME' and "
                              f"{frame} bytes at byte {start})")
        image = self.data[start + 6:start + 6 + frame].reshape(h * 3 // 2, w)
        t = self.i / self.fps
        self.i += 1
        return Shot(image, t, fmt="I420")

    def close(self) -> None:
        self.data = self.map = None  # the mapping goes when the last frame viewing it does


def write_y4m(frames, path: Path, fps: float) -> Path:  # type: ignore[no-untyped-def]
    """Write RGB frames (an iterable of (h, w, 3) uint8) as a YUV4MPEG2 4:2:0 file (full-range BT.601)."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        for i, rgb in enumerate(frames):
            if i == 0:
                f.write(f"YUV4MPEG2 W{rgb.shape[1]} H{rgb.shape[0]} F{round(fps * 1000)}:1000 Ip A1:1 "
                        f"C420jpeg\n".encode())
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    tmp.replace(path)
    return path


class Picamera2Source:
    """The Raspberry Pi camera, used the way picamera2's own face examples use it.

    One request gives two streams: ``main`` at the configured size (crops and
    snapshots in full resolution) and, when ``lores_scale`` < 1, ``lores`` at that
    fraction of it, downscaled by the ISP for free, which detection runs on.
    Formats need no per-frame conversion of the large image: ``main`` is "BGR888",
    which in libcamera's naming is R,G,B in memory, so the array is RGB as it comes.
    ``lores`` is RGB too where the ISP allows (Pi 5); a Pi 4's ISP makes lores only
    in YUV420 ("lores stream must be YUV"), converted here at its small size.
    Every capture is a request waited for at most ``timeout`` seconds (a libcamera
    stall, "Camera frontend has timed out", becomes a failed read that is retried)
    and always released. A frame's time is the sensor's own timestamp
    (``SensorTimestamp``, CLOCK_BOOTTIME ns) on the monotonic clock, so latency
    counts from the exposure, not from the moment the call returned.
    """

    live = True
    frame_interval = 0.0

    def __init__(self, width: int = 640, height: int = 480, timeout: float = 10.0, lores_scale: float = 1.0,
                 camera: int = 0) -> None:
        self.camera = camera  # picamera2's camera number: a Pi 5 has two camera ports
        self.size = (width, height)
        self.timeout = timeout
        self.lores = (int(width * lores_scale) // 2 * 2, int(height * lores_scale) // 2 * 2) \
            if lores_scale < 1.0 else None
        self.lores_format: str | None = None
        self.lores_stride = 0
        self.cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            raise SourceError("source 'picamera2' needs the picamera2 package: sudo apt install "
                              "python3-picamera2, and a venv made with --system-site-packages") from None
        try:
            cam = Picamera2(self.camera)
        except Exception as e:  # no camera, camera busy, ...
            raise SourceError(f"picamera2: cannot open camera {self.camera}: {e}") from None
        try:
            main = {"size": self.size, "format": "BGR888"}
            for fmt in ("BGR888", "YUV420") if self.lores else (None,):
                lores = {"size": self.lores, "format": fmt} if fmt else None
                try:
                    cam.configure(cam.create_video_configuration(main=main, lores=lores))
                    break
                except RuntimeError as e:  # a Pi 4: "lores stream must be YUV"
                    if fmt != "BGR888" or "lores" not in str(e):
                        raise
            self.lores_format = fmt
            if self.lores:
                self.lores_stride = int(cam.stream_configuration("lores")["stride"])
            cam.start()
        except Exception as e:
            cam.close()
            raise SourceError(f"picamera2: cannot start the camera: {e}") from None
        self.cam = cam
        log.info("picamera2: main %dx%d RGB%s", *self.size,
                 f", lores {self.lores[0]}x{self.lores[1]} {self.lores_format} for detection" if self.lores else "")

    def read(self) -> Shot:
        if self.cam is None:
            raise SourceError("camera is not open")
        try:
            job = self.cam.capture_request(wait=False)
            request = self.cam.wait(job, timeout=self.timeout)
        except TimeoutError:
            raise SourceError(f"picamera2: no frame within {self.timeout:g} s (camera stalled)") from None
        except Exception as e:  # e.g. "Camera frontend has timed out"
            raise SourceError(f"picamera2: {e}") from None
        try:
            rgb = request.make_array("main")
            small = luma = None
            if self.lores_format == "BGR888":
                small = request.make_array("lores")
            elif self.lores_format == "YUV420":
                buf = request.make_buffer("lores")  # a copy: it outlives the request
                small = partial(yuv420_to_rgb, buf, self.lores, self.lores_stride)  # RGB only if detected on
                luma = np.asarray(buf, np.uint8).reshape(-1)[:self.lores_stride * self.lores[1]].reshape(
                    self.lores[1], self.lores_stride)[:, :self.lores[0]]  # the Y plane: motion reads it as it is
            stamp = request.get_metadata().get("SensorTimestamp")
        finally:
            request.release()  # an unreleased request holds a camera buffer: a few of them stall the camera
        captured = sensor_time(stamp)
        return Shot(rgb, captured, captured, small, luma=luma)

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            finally:
                self.cam = None


def yuv420_to_rgb(buf: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """A planar YUV420 (I420) buffer with rows ``stride`` bytes apart, as RGB (its rows cropped to ``size``)."""
    w, h = size
    buf = np.asarray(buf, np.uint8).reshape(-1)
    if stride == w:
        return cv2.cvtColor(buf[:w * h * 3 // 2].reshape(h * 3 // 2, w), cv2.COLOR_YUV2RGB_I420)
    half = stride // 2
    y = buf[:stride * h].reshape(h, stride)[:, :w]
    u = buf[stride * h:stride * h + half * (h // 2)].reshape(h // 2, half)[:, :w // 2]
    v = buf[stride * h + half * (h // 2):stride * h + 2 * half * (h // 2)].reshape(h // 2, half)[:, :w // 2]
    i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)


def sensor_time(stamp_ns: int | None) -> float:
    """A libcamera SensorTimestamp (CLOCK_BOOTTIME ns) on time.monotonic(); now where it is missing or implausible."""
    now = time.monotonic()
    if not stamp_ns:
        return now
    t = (stamp_ns - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) / 1e9 + now
    return t if now - 10.0 <= t <= now else now  # another clock than documented: do not invent latency


def make_source(uri: str, width: int = 640, height: int = 480, fps: float = 0.0, timeout: float = 10.0,
                max_bad_frames: int = 50, detect_scale: float = 1.0) -> Source:
    if m := re.fullmatch(r"picamera2(?::([0-9]))?", uri):  # "picamera2:1": the second camera of a Pi 5
        return Picamera2Source(width, height, timeout, detect_scale, int(m.group(1) or 0))
    check_uri(uri)
    if uri.endswith(".y4m") and Path(uri).is_file():
        return Y4MSource(Path(uri))
    if Path(uri).is_dir():
        return FolderSource(Path(uri), fps or 2.0)
    return OpenCVSource(uri, width, height, timeout, max_bad_frames)


def check_uri(uri: str) -> None:
    """SourceError if ``source.uri`` cannot be a source: a file, folder or device that is not there is said as
    such ("no such file"), anything else that is no camera index, /dev path, URL, file or folder as that.
    Opens nothing: check-config uses it too."""
    if re.fullmatch(r"picamera2(?::([0-9]))?", uri) or uri.isdigit() or "://" in uri:
        return
    path = Path(uri)
    if path.is_dir() or path.is_file():
        return
    if uri.startswith("/dev/"):
        if not path.exists():
            raise SourceError(f"source {uri!r}: no such device (is the camera plugged in? v4l2-ctl --list-devices "
                              f"lists them)")
        return
    if "/" in uri or path.suffix:
        raise SourceError(f"source {mask(uri)!r}: no such file or folder")
    raise SourceError(f"source {mask(uri)!r}: not a camera index, /dev path, URL, video file or image folder")
