"""Photo intake: every photo facepi reads comes through here, upright, as RGB uint8, bounded in memory.

Why one place: phone photos are 12-48 MP JPEGs, often stored sideways with an EXIF
Orientation tag. Decoding one at full size costs ~150 MB per 48 MP before any
work, and MTCNN on it gigabytes more; ignoring the tag turns a portrait face on
its side, where no detector finds it. So:

- the header is read first (Pillow opens lazily: size only, no pixels), and a
  photo larger than ``MAX_PIXELS`` is refused before anything is decoded (a
  "decompression bomb" is a small file that decodes to gigapixels), as is one of a
  format decoded whole (not JPEG) over ``MAX_WHOLE_PIXELS``;
- JPEGs are decoded reduced in the DCT (``cv2.IMREAD_REDUCED_COLOR_2/4/8``), by the
  largest factor that still leaves ``min_pixels``: a 12 MP photo decodes to 3 MP,
  a 48 MP one to 3 MP, which is plenty for a 112-160 px face crop;
- OpenCV applies the EXIF orientation while decoding (every flag but
  ``IMREAD_UNCHANGED`` does), so what comes out is upright;
- HEIC/HEIF (every iPhone's default) is decoded by pillow-heif (the maintained libheif
  binding), which applies the photo's rotation (``irot``, which an iPhone writes beside its
  EXIF Orientation, void then), reduced straight from libheif's buffer; AVIF and GIF by
  Pillow, reduced before ``exif_transpose``: upright, and never a second full-size copy;
- the formats without reduced decoding (all but JPEG) may have at most
  ``MAX_WHOLE_PIXELS``, checked from the header before decoding.

Which files count as photos is derived from the formats read here (``READERS``), so a
folder holds exactly the photos that work one by one.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

pillow_heif.register_heif_opener()  # Pillow opens .heic/.heif from here on
# Pillow's name for each format facepi reads -> who decodes its pixels. OpenCV where it can (reduced
# JPEG decoding, EXIF applied); Pillow for the formats OpenCV does not read.
READERS = {"JPEG": "opencv", "MPO": "opencv", "PNG": "opencv", "BMP": "opencv", "WEBP": "opencv",
           "TIFF": "opencv", "PPM": "opencv", "HEIF": "pillow", "AVIF": "pillow", "GIF": "pillow"}
Image.init()
IMAGE_SUFFIXES = {ext for ext, fmt in Image.registered_extensions().items() if fmt in READERS}
MAX_PIXELS = 100_000_000  # larger than any phone's photo (a 108 MP sensor is 12000x9000)
# Only JPEG decodes reduced (in the DCT); every other format is decoded whole (3 bytes a pixel, then cut
# down): at most this many pixels, so a 48 MP phone HEIC (8064x6048) enrols and a 292 kB 9999x9999 PNG
# (682 MB to enrol before) is refused from its header.
MAX_WHOLE_PIXELS = 50_000_000
# A photo is detected on a copy of at most DETECT_PIXELS (1000x750 at 4:3: a face of
# minsize 20 there is 3 % of the picture, smaller than any enrolment or door face) and
# decoded at no less than DECODE_PIXELS, where its crops are cut. MTCNN's memory grows
# with the pixels it sees (~200 bytes a pixel at PNet's first level with XNNPACK), so
# this is what keeps a 12-48 MP phone photo within a Pi's memory.
DETECT_PIXELS = 750_000
DECODE_PIXELS = 1_500_000
REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageError(Exception):
    pass


def to_rgb(image: np.ndarray, source: str = "image", bgr: bool = True) -> np.ndarray:
    """Convert a decoded frame (gray, BGR/RGB, BGRA/RGBA, 8/16-bit) to RGB uint8."""
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


def header_size(path: Path, data: bytes | np.ndarray) -> tuple[int, int, str]:
    """(width, height, format) from the file's header alone; nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as im:
                return im.width, im.height, str(im.format)
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: larger than {MAX_PIXELS // 1_000_000} megapixels "
                         f"(refused before decoding)") from None
    except Exception:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ... on junk
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or not an image)") from None


def too_large(path: Path | str, w: int, h: int, limit: int, what: str = "a photo") -> str:
    """The words for a photo refused by its size (from its header: nothing was decoded)."""
    return (f"{path}: too large: {w}x{h} is {w * h / 1e6:.0f} MP; {what} may have at most {limit // 1_000_000} MP "
            f"(refused before decoding; resize it)")


def reduction(pixels: int, min_pixels: float) -> int:
    """The largest power-of-two decode reduction (1, 2, 4, 8) that keeps at least ``min_pixels``."""
    k = 1
    while k < 8 and pixels / (2 * k) ** 2 >= min_pixels:
        k *= 2
    return k


def read_rgb(path: str | Path) -> np.ndarray:
    """A photo upright (EXIF orientation applied) at full size, as RGB uint8."""
    return read_photo(path)[0]


def read_photo(path: str | Path, min_pixels: float | None = None) -> tuple[np.ndarray, float]:
    """A photo upright (EXIF orientation applied) as RGB uint8, and its scale (decoded / stored pixels).

    ``min_pixels``: a JPEG larger than this may be decoded reduced (by 2, 4 or 8 in
    each direction) as long as at least this many pixels remain. ``None``: full size.
    A clear ImageError names the file for anything that is not a usable photo.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    w, h, fmt = header_size(path, data)
    if w * h > MAX_PIXELS:
        raise ImageError(too_large(path, w, h, MAX_PIXELS))
    if fmt not in READERS:
        raise ImageError(f"{path}: a {fmt} image; facepi reads {', '.join(sorted(READERS))} "
                         f"(files ending {', '.join(sorted(IMAGE_SUFFIXES))})")
    if fmt not in ("JPEG", "MPO") and w * h > MAX_WHOLE_PIXELS:
        raise ImageError(f"{path}: too large: a {w}x{h} {fmt} ({w * h / 1e6:.0f} MP) is larger than "
                         f"{MAX_WHOLE_PIXELS // 1_000_000} megapixels; only a JPEG is decoded reduced, a {fmt} is "
                         f"decoded whole (refused before decoding: save it smaller, or as JPEG)")
    if READERS[fmt] == "pillow":
        rgb = _pillow_decode(path, data, reduction(w * h, min_pixels) if min_pixels else 1, fmt)
        return rgb, max(rgb.shape[:2]) / max(w, h)
    k = reduction(w * h, min_pixels) if min_pixels and fmt in ("JPEG", "MPO") else 1
    image = cv2.imdecode(data, REDUCED[k])
    del data  # the file's bytes are not needed past here
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or not an image)")
    if min_pixels and k == 1 and image.shape[0] * image.shape[1] > 4 * min_pixels:
        image = shrink(image, 4 * min_pixels)[0]  # a large PNG/WebP/TIFF: one smaller copy, the full one freed
    if image.ndim == 3 and image.shape[2] == 3:  # in place: no second full-size copy
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image), max(image.shape[:2]) / max(w, h)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), max(image.shape[:2]) / max(w, h)


def _pillow_decode(path: Path, data: np.ndarray, k: int, fmt: str = "") -> np.ndarray:
    """Decode with Pillow, upright, as RGB uint8, reduced ``k`` times in each direction (k = 1: full size).

    No reduced decoding exists for these formats: the photo is decoded whole (a 48 MP HEIC is 145 MB of
    pixels for that moment), reduced at once, and only the reduced copy is turned upright and converted:
    never a second full-size copy."""
    try:
        if fmt == "HEIF":  # libheif's own buffer, viewed (not copied) by numpy, then one small copy
            # libheif has applied the photo's rotation (irot/imir); its EXIF Orientation is void then (Pillow's
            # HEIF plugin resets it to 1 for that reason: pillow_heif.set_orientation), so no exif_transpose
            full = np.asarray(pillow_heif.open_heif(io.BytesIO(memoryview(data)), convert_hdr_to_8bit=True))
            return np.ascontiguousarray(to_rgb(shrink(full, full.shape[0] * full.shape[1] / k**2)[0] if k > 1
                                               else full, str(path), bgr=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as im:
                im.load()
                small = im.reduce(k) if k > 1 else im
                small.info = dict(small.info) | {"exif": im.info.get("exif", b"")}
                small = ImageOps.exif_transpose(small.convert("RGB"))
                return np.asarray(small, dtype=np.uint8)
    except Exception:  # libheif, libavif and Pillow raise various errors on a damaged file
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or not an image)") from None


def read_frame(path: str | Path) -> np.ndarray:
    """A photo as a camera-sized frame (folder sources): upright, at most ``DECODE_PIXELS``."""
    return shrink(read_photo(path, DECODE_PIXELS)[0], DECODE_PIXELS)[0]


def shrink(rgb: np.ndarray, max_pixels: float) -> tuple[np.ndarray, float]:
    """A copy of at most ``max_pixels`` (INTER_AREA) and the scale applied (1.0: the image itself)."""
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, 1.0
    s = float(np.sqrt(max_pixels / (h * w)))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / w


def list_images(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise ImageError(f"{folder}: cannot list the folder ({e.strerror})") from None


def people_folders(root: Path) -> dict[str, list[Path]]:
    """{person: [photos]} for a folder holding one sub-folder per person."""
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder (expected one sub-folder per person)")
    try:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    except OSError as e:
        raise ImageError(f"{root}: cannot list the folder ({e.strerror})") from None
    return {d.name: list_images(d) for d in subdirs}
