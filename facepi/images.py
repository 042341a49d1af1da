"""Reading photos as RGB uint8, whatever they are (grayscale, RGBA, 16-bit), with named errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 100_000_000  # an 8000x8000 photo (64 MP) is fine; it is shrunk before detection


class ImageError(Exception):
    pass


def to_rgb(image: np.ndarray, source: str = "image", bgr: bool = True) -> np.ndarray:
    """Convert a decoded image (gray, BGR/RGB, BGRA/RGBA, 8/16-bit) to RGB uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image
    raise ImageError(f"{source}: unsupported image shape {image.shape}")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a photo from disk as RGB uint8; a clear ImageError names the file otherwise."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or not an image)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{path}: {image.shape[1]}x{image.shape[0]} is larger than "
                         f"{MAX_PIXELS // 1_000_000} megapixels")
    return to_rgb(image, str(path))


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def people_folders(root: Path) -> dict[str, list[Path]]:
    """{person: [photos]} for a folder holding one sub-folder per person."""
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (expected one sub-folder per person)")
    return {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir()}
