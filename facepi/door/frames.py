"""A frame as the loop gets it: the pixels in the source's own layout, converted only when needed.

An empty door is most frames. All the motion gate needs of one is a small grey image,
so a frame keeps what the source read (RGB, OpenCV's BGR, or planar YUV 4:2:0 as a
camera's ISP or a raw file gives it) and makes the full RGB image only when something
asks for it: detection, a face crop, a snapshot. On an empty frame that never happens.
``grey(width)`` makes the small luma image the gate compares: from the Y plane of a
YUV frame, or from a shrunk copy of a colour one (shrunk first, converted after).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

FORMATS = ("RGB", "BGR", "I420")  # I420: planar YUV 4:2:0, an (h * 3 / 2, w) uint8 array, full-range BT.601


def i420_size(image: np.ndarray) -> tuple[int, int]:
    """(w, h) of an I420 array."""
    return image.shape[1], image.shape[0] * 2 // 3


@dataclass
class Frame:
    image: np.ndarray  # what the source read, in ``fmt``
    t: float  # seconds: media time for files, monotonic time for live sources
    captured: float  # time.monotonic() when captured (latency is measured from here)
    index: int = 0
    cut: bool = False  # an unrelated scene: no face continues from the previous frame (photos)
    small: np.ndarray | Callable[[], np.ndarray] | None = None  # a smaller copy from the camera, for detection
    fmt: str = "RGB"
    luma: np.ndarray | None = None  # a grey image of the same view at any size (a camera's lores Y plane)
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the full frame, without converting it."""
        if self.fmt == "I420":
            return i420_size(self.image)
        return self.image.shape[1], self.image.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        w, h = self.size
        return h, w, 3

    @property
    def converted(self) -> bool:
        """True once the RGB image has been made (or the source gave RGB)."""
        return self.fmt == "RGB" or self._rgb is not None

    @property
    def rgb(self) -> np.ndarray:
        """The full frame in RGB, made on first use."""
        if self.fmt == "RGB":
            return self.image
        if self._rgb is None:
            code = cv2.COLOR_BGR2RGB if self.fmt == "BGR" else cv2.COLOR_YUV2RGB_I420
            self._rgb = cv2.cvtColor(self.image, code)
        return self._rgb

    def detect_copy(self) -> np.ndarray | None:
        """The camera's small copy for detection (made on first use where the source deferred it)."""
        if callable(self.small):
            self.small = self.small()
        return self.small

    def grey(self, width: int) -> np.ndarray:
        """A uint8 grey image ``width`` pixels wide (the frame's aspect), made without the full RGB image."""
        w, h = self.size
        size = (width, max(1, round(h * width / w)))
        if self.luma is not None:
            plane = self.luma
        elif self.fmt == "I420":
            plane = self.image[:h]  # the Y plane: a view, no copy
        else:  # grey at full size, then shrunk: 3x cheaper than shrinking the colour image
            source = self._rgb if self._rgb is not None else self.image
            plane = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY if source is self.image and self.fmt == "BGR"
                                 else cv2.COLOR_RGB2GRAY)
        return shrink(plane, size)


def shrink(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A grey image at ``size`` (w, h), averaged over the pixels it covers (as is where it already is)."""
    if (plane.shape[1], plane.shape[0]) == size:
        return plane
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
