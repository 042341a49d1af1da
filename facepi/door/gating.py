"""Where on a frame to run the detector, if anywhere: the motion gate, the zone, and the faces just seen.

MTCNN is most of a frame's cost on a Pi. A still scene needs it only every
``motion.still_interval``; a moving one only around the motion and the faces being
followed; a face missed for a moment keeps its region looked at, or a still visitor's
next sighting could come after their visit has ended.
"""

from __future__ import annotations

import cv2
import numpy as np

from facepi.config import Config
from facepi.door.frames import Frame
from facepi.door.motion import MotionGate, region, window
from facepi.door.track import Track, Tracker
from facepi.vision.detect import Detector, iou_matrix

Region = tuple[int, int, int, int]


class DetectGate:
    """Decides per frame where to detect (``where``), runs the detector there (``detect``) and keeps
    the faces to look for when they are missed for a moment (``remember``)."""

    def __init__(self, cfg: Config, tracker: Tracker) -> None:
        self.cfg, self.tracker = cfg, tracker
        mc = cfg.motion
        zone = [list(mc.zone[i:i + 2]) for i in range(0, len(mc.zone), 2)] or None
        self.gate = MotionGate(mc.width, mc.pixel_threshold, mc.min_area, mc.alpha, zone=zone) if mc.enabled \
            else None
        self.zone_cache: np.ndarray | None = None
        self.detected = 0  # frames the detector ran on (the rest: a still scene, skipped by the gate)
        self.last_detect_t = float("-inf")
        self.last_motion_t = float("-inf")  # the last frame that moved or had a face in view
        self.last_face_t = float("-inf")
        self.last_faces: list[np.ndarray] = []

    def reset(self) -> None:
        """A cut in the input (the next file of a folder): the background starts again."""
        if self.gate is not None:
            self.gate.reset()
        self.last_motion_t = float("-inf")

    def where(self, frame: Frame | np.ndarray, t: float) -> Region | None:
        """The motion gate's answer: None (skip this frame), or the rectangle to run the detector on.
        The gate reads the frame's small luma image only: an empty frame is never converted to RGB."""
        h, w = frame.shape[:2]
        full = (0, 0, w, h)
        if self.gate is None:
            return full
        if isinstance(frame, Frame):
            m = self.gate.update(frame.grey(self.gate.width), w)
        else:
            m = self.gate.update(frame)
        if m.moving and (not m.light or self.last_motion_t == float("-inf")):  # a light change is looked at
            self.last_motion_t = t  # once (below) and is nobody arriving; a new scene (the start) is watched
        if m.light:  # most of the view changed (a new scene, light, someone right at the lens): look at it all
            return full
        live = [tr.box for tr in self.tracker.tracks.values()
                if t - tr.last_t <= self.tracker.track_gap and not self.tracker.ignored(tr)]
        if not live and t - self.last_face_t <= self.tracker.visit_gap:
            live = self.last_faces  # a face missed for a moment: keep looking, or a still visitor's
            # next sighting could come a still_interval later, after their visit has ended
        if live:
            self.last_motion_t = t
        if not m.moving and not live:
            return full if t - self.last_detect_t >= self.look_interval(t) else None
        mc = self.cfg.motion
        roi = region(([m.box] if m.box is not None else []) + live, (h, w), mc.region_margin,
                     2.0 * self.cfg.detection.minsize)
        win = window(roi, (h, w)) if roi is not None else None
        if win is None or (win[2] - win[0]) * (win[3] - win[1]) > mc.region_max_share * w * h:
            return full
        return win

    def look_interval(self, t: float) -> float:
        """How often a still scene is looked at whole: every ``still_interval`` for ``idle_after`` seconds
        after the last motion or face (someone who walked in and then stood still, face unseen while they
        moved), then every ``idle_interval`` (nobody arrives without moving: the slow look is the net for a
        walk-in the gate missed)."""
        mc = self.cfg.motion
        return mc.still_interval if t - self.last_motion_t <= mc.idle_after else max(mc.idle_interval,
                                                                                      mc.still_interval)

    def detect(self, detector: Detector, rgb: np.ndarray, roi: Region, t: float,
               small: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN on the region (of the camera's small copy, or downscaled here); boxes and landmarks in
        frame pixels, zone applied. Counted as a detection only once the detector has answered: a frame that
        fails is looked at again on the next one."""
        if small is not None:  # the ISP already made it (picamera2 lores): no resize on the CPU
            scale = small.shape[1] / rgb.shape[1]
            x1, y1, x2, y2 = (int(v * scale) for v in roi)
            part, ox, oy = small[y1:y2, x1:x2], x1 / scale, y1 / scale
        else:
            x1, y1, x2, y2 = roi
            scale, ox, oy = self.cfg.detection.downscale, x1, y1
            part = rgb[y1:y2, x1:x2]
            if scale < 1.0:
                part = cv2.resize(part, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, points = detector.detect(np.ascontiguousarray(part))
        self.detected += 1
        self.last_detect_t = t
        if len(boxes):
            boxes = boxes.copy()
            boxes[:, :4] = boxes[:, :4] / scale + [ox, oy, ox, oy]
            points = points / scale + [ox, oy]
            if self.gate is not None and self.gate.zone_points:
                zone = self._zone(rgb.shape[:2])
                cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2).astype(int), 0, rgb.shape[1] - 1)
                cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2).astype(int), 0, rgb.shape[0] - 1)
                keep = zone[cy, cx].astype(bool)
                boxes, points = boxes[keep], points[keep]
        return boxes, points

    def remember(self, visible: list[Track], t: float) -> None:
        """The faces to keep looking for when missed for a moment (see ``where``); not one the quality
        gate has turned down: it is no reason to detect on every frame."""
        faces = [tr.box.copy() for tr in visible if not self.tracker.ignored(tr)]
        if faces:
            self.last_face_t, self.last_faces = t, faces
        elif self.last_faces and visible:
            turned_down = np.stack([tr.box for tr in visible])
            self.last_faces = [b for b in self.last_faces if iou_matrix(b[None], turned_down).max() < self.tracker.iou]

    def _zone(self, shape: tuple[int, int]) -> np.ndarray:
        if self.zone_cache is None or self.zone_cache.shape != shape:
            assert self.gate is not None
            self.zone_cache = self.gate.zone_mask(shape)
        return self.zone_cache
