"""From a photo to aligned, embedded faces: detect -> align -> embed, in one place.

Commands and the daemon both go through ``FacePipeline`` so that a face is
aligned exactly the same way when it is enrolled and when it is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepi import align
from facepi.detect import Detector
from facepi.embed import Embedder
from facepi.images import ImageError, read_rgb

ALIGN_MODES = ("crop", "landmarks")
MAX_SIDE = 2000  # bigger photos are shrunk before detection: no door face needs more pixels


@dataclass
class Face:
    box: np.ndarray  # [x1, y1, x2, y2, score] in the (possibly shrunk) image
    landmarks: np.ndarray  # (5, 2) x, y
    crop: np.ndarray  # aligned RGB uint8 (S, S, 3)


@dataclass
class PhotoFaces:
    path: Path
    faces: list[Face]
    embeddings: np.ndarray  # (len(faces), D)
    error: str | None = None
    aligned_input: bool = False


class FacePipeline:
    def __init__(self, detector: Detector, embedder: Embedder, mode: str | None = None,
                 margin: int | None = None) -> None:
        mode = mode or embedder.alignment
        if mode not in ALIGN_MODES:
            raise ValueError(f"alignment mode {mode!r}: expected one of {ALIGN_MODES}")
        self.detector = detector
        self.embedder = embedder
        self.mode = mode
        self.margin = embedder.margin if margin is None else margin
        self.size = embedder.image_size

    def align(self, rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        if self.mode == "landmarks":
            return align.warp(rgb, landmarks, self.size, self.embedder.face_fraction)
        return align.crop(rgb, box, self.size, self.margin)

    def faces(self, rgb: np.ndarray, multiple: bool = False) -> list[Face]:
        """Faces in an RGB image; by default only the seed's choice (large and central)."""
        boxes, points = self.detector.detect(rgb)
        if len(boxes) == 0:
            return []
        order = range(len(boxes)) if multiple else [align.central_face(boxes, rgb.shape)]
        return [Face(boxes[i], points[i], self.align(rgb, boxes[i], points[i])) for i in order]

    def photo(self, path: Path, multiple: bool = False, accept_aligned: bool = True,
              embed: bool = True) -> PhotoFaces:
        """Read, detect, align and embed one photo; errors are returned, not raised.

        A photo that already is an aligned crop (square, exactly the model's size, as
        ``facepi align`` writes them) is embedded as it is, like the seed's classifier.py.
        """
        try:
            rgb = read_rgb(path)
        except ImageError as e:
            return PhotoFaces(path, [], np.empty((0, self.embedder.dim), np.float32), str(e))
        if accept_aligned and rgb.shape[:2] == (self.size, self.size):
            face = Face(np.array([0, 0, self.size, self.size, 1.0]), np.zeros((5, 2)), rgb)
            return PhotoFaces(path, [face], self.embedder.embed(rgb[None]), aligned_input=True)
        rgb = shrink(rgb)
        faces = self.faces(rgb, multiple)
        if not faces:
            return PhotoFaces(path, [], np.empty((0, self.embedder.dim), np.float32), f"{path}: no face found")
        embeddings = (self.embedder.embed(np.stack([f.crop for f in faces])) if embed
                      else np.empty((0, self.embedder.dim), np.float32))
        return PhotoFaces(path, faces, embeddings)


def shrink(rgb: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
