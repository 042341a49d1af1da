"""The motion gate: spend the detector only when and where the door scene changes.

An always-on door camera watches an empty door almost all day. Before detection,
each frame is shrunk to a small blurred grey image (``width`` pixels wide) and
compared with a slowly adapting background. Three things must not count as motion:
- sensor noise: the blur and a per-pixel threshold (``pixel_threshold`` grey levels);
- slow light drift: the background follows the scene (``alpha`` per frame);
- the camera's own exposure steps: the frame is compared after matching its mean
  brightness to the background's (a step scales every pixel alike), and a change
  that covers most of the frame is looked at once (whole frame) and adopted as the
  new background, so a step costs one detection, not a stream of them.
What remains, when it covers at least ``min_area`` of the frame (inside the zone),
is motion, with a box around it. The daemon then detects on every frame while
there is motion or a live track, only every ``still_interval`` seconds on a still
scene (so a person standing motionless is still found), and on the region around
motion and tracks instead of the whole frame when that region is small.

Zones: an optional polygon (``[[x, y], ...]`` in 0..1 frame coordinates) of the
part of the view that matters; motion outside it is ignored, and so are faces
whose centre lies outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facepi.door.frames import shrink

NOISE_FACTOR = 5.0  # a change must be this many times the scene's noise (sigma) to count
RELATIVE = 0.18  # ... and this share of the scene's brightness (18 grey levels at a normal ~100)
Q25_SIGMA = 0.3186  # the 25th percentile of |x| for a normal x with sigma 1


@dataclass
class Motion:
    moving: bool
    area: float  # share of the (zone's) frame that changed
    box: np.ndarray | None  # [x1, y1, x2, y2] in frame pixels around the change, or None
    light: bool = False  # a change over most of the frame (light, exposure, a new scene): adopted


class MotionGate:
    def __init__(self, width: int = 160, pixel_threshold: float = 18.0, min_area: float = 0.004,
                 alpha: float = 0.05, light_area: float = 0.6, zone: list[list[float]] | None = None,
                 noise_factor: float = NOISE_FACTOR, relative: float = RELATIVE) -> None:
        self.width, self.pixel_threshold, self.min_area = width, pixel_threshold, min_area
        self.alpha, self.light_area = alpha, light_area
        self.noise_factor, self.relative = noise_factor, relative
        self.noise: float | None = None  # the scene's own change noise (grey levels, a robust sigma), running
        self.threshold = pixel_threshold  # this frame's: see threshold_for()
        self.previous: tuple[np.ndarray, float] | None = None  # the last small frame and its mean
        self.zone_points = zone
        self.background: np.ndarray | None = None
        self.mask: np.ndarray | None = None  # the zone at the small size (uint8 0/1), or None: everything
        self.inside: np.ndarray | None = None  # the same as booleans
        self.scale = 1.0

    def _small(self, image: np.ndarray) -> np.ndarray:
        """The small blurred grey image compared, from RGB or from a grey image (a frame's luma, at any
        size): made grey at full size, then shrunk by averaging (the noise the threshold sees)."""
        h, w = image.shape[:2]
        self.scale = self.width / w
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        grey = shrink(grey, (self.width, max(1, round(h * self.scale))))
        return cv2.GaussianBlur(grey.astype(np.float32), (5, 5), 0)  # in float: noise below a grey level shows

    def zone_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The zone as a 0/1 mask of ``shape`` (h, w), or None when there is no zone."""
        if not self.zone_points:
            return None
        h, w = shape
        pts = np.round(np.asarray(self.zone_points, np.float64) * [w, h]).astype(np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [pts], 1)
        return mask

    def reset(self) -> None:
        self.background = None
        self.noise = self.previous = None

    def threshold_for(self, small: np.ndarray, level: float, inside: np.ndarray | None) -> float:
        """How much a pixel must change to count, for this scene: ``relative`` of its brightness
        (a person, a shadow changes a dark scene by proportionally less), but never less than
        ``noise_factor`` x its own noise (a dark camera's gain makes noise), nor more than
        ``pixel_threshold`` (a normally lit scene: as before).

        The noise is measured between consecutive frames, not against the background (which
        holds the fading ghost of whoever just left): the 25th percentile of their difference
        (so most of the view may move without raising it) as a Gaussian sigma, followed at the
        background's rate down and ten times slower up (a visitor filling the view is no noise)."""
        previous, self.previous = self.previous, (small, level)
        if previous is not None and previous[0].shape == small.shape:
            step = (slice(None, None, 2), slice(None, None, 2))  # every 4th pixel: the blur shares them anyway
            pair = np.abs(small[step] - previous[0][step] * (level / max(previous[1], 1.0)))
            pair = pair.ravel() if inside is None else pair[inside[step]]
            k = pair.size // 4
            sigma = float(np.partition(pair, k)[k]) / Q25_SIGMA / np.sqrt(2.0) if pair.size else 0.0
            if self.noise is None:
                self.noise = sigma
            else:
                self.noise += (self.alpha if sigma < self.noise else self.alpha / 10) * (sigma - self.noise)
        noise = self.noise if self.noise is not None else self.pixel_threshold
        return min(self.pixel_threshold, max(self.noise_factor * noise, self.relative * level))

    def update(self, image: np.ndarray, full_width: int | None = None) -> Motion:
        """Compare one frame: RGB, or a grey image (its luma, at any size: ``full_width`` then says the
        frame's width, for the box in frame pixels)."""
        small = self._small(image)
        if full_width:
            self.scale = self.width / full_width
        if self.background is None or self.background.shape != small.shape:  # a new scene: look at it once
            self.background = small.copy()
            self.mask = self.zone_mask(small.shape)
            self.inside = self.mask.astype(bool) if self.mask is not None else None
            return Motion(True, 1.0, None, light=True)
        bg, inside = self.background, self.inside  # inside: None for the whole view (no mask to apply)
        level = float(small.mean() if inside is None else small[inside].mean())
        gain = level / max(float(bg.mean() if inside is None else bg[inside].mean()), 1.0)
        self.threshold = self.threshold_for(small, level, inside)
        changed = np.abs(small - bg * gain) > self.threshold
        if inside is not None:
            changed &= inside
        area = float(np.count_nonzero(changed)) / (small.size if inside is None else max(int(inside.sum()), 1))
        if area >= self.light_area:  # most of the view changed at once: look once (whole frame), then
            self.background = small.copy()  # adopt it, so an exposure step costs one detection
            return Motion(True, area, None, light=True)
        moving = area >= self.min_area
        # The background follows everything at one rate: a visitor who stands still fades into it within
        # seconds (the live track keeps the detector on them), and leaves no lasting ghost behind.
        self.background = bg + self.alpha * (small - bg)
        if not moving:
            return Motion(False, area, None)
        ys, xs = np.nonzero(changed)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64) / self.scale
        return Motion(True, area, box)


def region(boxes: list[np.ndarray], frame_shape: tuple[int, ...], margin: float, min_side: float
           ) -> tuple[int, int, int, int] | None:
    """One rectangle (x1, y1, x2, y2) around the given boxes, grown by ``margin`` x their size (at least
    ``min_side`` pixels each way) and clipped to the frame; None when there are no boxes."""
    if not boxes:
        return None
    b = np.stack([np.asarray(x[:4], np.float64) for x in boxes])
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    grow_x = max((x2 - x1) * margin, min_side)
    grow_y = max((y2 - y1) * margin, min_side)
    h, w = frame_shape[:2]
    return (int(max(0, x1 - grow_x)), int(max(0, y1 - grow_y)), int(min(w, x2 + grow_x)), int(min(h, y2 + grow_y)))


WINDOWS = (0.5, 0.75)  # detection windows as fractions of the frame's sides (then the whole frame)


def window(roi: tuple[int, int, int, int], frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The smallest of a few fixed window sizes (half, three quarters of the frame) that holds ``roi``,
    centred on it and kept inside the frame; None when only the whole frame holds it.

    Fixed sizes matter: the detector keeps one interpreter per input shape, and a
    window of a new size every frame would build new ones (tens of ms each) again
    and again; with three sizes, every shape is built once.
    """
    h, w = frame_shape[:2]
    x1, y1, x2, y2 = roi
    for f in WINDOWS:
        ww, wh = int(w * f) // 2 * 2, int(h * f) // 2 * 2
        if x2 - x1 <= ww and y2 - y1 <= wh:
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            left = min(max(0, cx - ww // 2), w - ww)
            top = min(max(0, cy - wh // 2), h - wh)
            return left, top, left + ww, top + wh
    return None
