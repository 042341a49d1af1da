"""From a photo to aligned, embedded faces: detect -> align -> embed, in one place.

Commands and the daemon both go through ``FacePipeline`` so that a face is
aligned exactly the same way when it is enrolled and when it is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepi import align
from facepi.detect import Detector
from facepi.embed import Embedder
from facepi.images import DECODE_PIXELS, DETECT_PIXELS, ImageError, read_photo, shrink

ALIGN_MODES = ("crop", "landmarks")
__all__ = ["DECODE_PIXELS", "DETECT_PIXELS", "FacePipeline", "detect_bounded"]
SELECTIONS = ("central", "largest", "all")


@dataclass
class Face:
    box: np.ndarray  # [x1, y1, x2, y2, score] in the image the crop was cut from
    landmarks: np.ndarray  # (5, 2) x, y, same coordinates
    crop: np.ndarray  # aligned RGB uint8 (S, S, 3)


@dataclass
class PhotoFaces:
    path: Path
    faces: list[Face]
    embeddings: np.ndarray  # (len(faces), D)
    error: str | None = None
    aligned_input: bool = False
    scale: float = 1.0  # pixels of the decoded photo per pixel of the stored one (boxes / scale: stored)
    others: int = 0  # further faces of comparable size that were not chosen (``select`` central/largest)


def detect_bounded(detector: Detector, rgb: np.ndarray, max_pixels: float = DETECT_PIXELS,
                   scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN on a copy of at most ``max_pixels``; boxes and landmarks in ``rgb``'s coordinates
    divided by ``scale`` (pass ``read_photo``'s scale to get the stored photo's coordinates)."""
    small, s = shrink(rgb, max_pixels)
    boxes, points = detector.detect(small)
    if s * scale != 1.0 and len(boxes):
        boxes = boxes.copy()
        boxes[:, :4] /= s * scale
        points = points / (s * scale)
    return boxes, points


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

    def detect(self, rgb: np.ndarray, max_pixels: float = DETECT_PIXELS) -> tuple[np.ndarray, np.ndarray]:
        return detect_bounded(self.detector, rgb, max_pixels)

    def faces(self, rgb: np.ndarray, select: str = "central") -> tuple[list[Face], int]:
        """Faces in an RGB image, and how many comparable faces were left out.

        ``central``: the seed's choice (large and near the centre); ``largest``; ``all``.
        A face counts as "left out" when its side is at least half the chosen one's:
        small faces far behind the subject are background, not a second person.
        """
        if select not in SELECTIONS:
            raise ValueError(f"face selection {select!r}: expected one of {SELECTIONS}")
        boxes, points = self.detect(rgb)
        if len(boxes) == 0:
            return [], 0
        if select == "all":
            order = list(range(len(boxes)))
        elif select == "largest":
            order = [align.largest_face(boxes)]
        else:
            order = [align.central_face(boxes, rgb.shape)]
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        others = int(np.sum(side >= 0.5 * side[order[0]])) - len(order) if select != "all" else 0
        return [Face(boxes[i], points[i], self.align(rgb, boxes[i], points[i])) for i in order], others

    def photo(self, path: Path, select: str = "central", accept_aligned: bool = True,
              embed: bool = True) -> PhotoFaces:
        """Read, detect, align and embed one photo; errors are returned, not raised.

        A photo that already is an aligned crop (square, exactly the model's size, as
        ``facepi align`` writes them) is embedded as it is, like the seed's classifier.py.
        """
        empty = np.empty((0, self.embedder.dim), np.float32)
        try:
            rgb, scale = read_photo(path, DECODE_PIXELS)
        except ImageError as e:
            return PhotoFaces(path, [], empty, str(e))
        if accept_aligned and rgb.shape[:2] == (self.size, self.size):
            face = Face(np.array([0, 0, self.size, self.size, 1.0]), np.zeros((5, 2)), rgb)
            return PhotoFaces(path, [face], self.embedder.embed(rgb[None]), aligned_input=True)
        faces, others = self.faces(rgb, select)
        if not faces:
            return PhotoFaces(path, [], empty, f"{path}: no face found", scale=scale)
        embeddings = self.embedder.embed(np.stack([f.crop for f in faces])) if embed else empty
        return PhotoFaces(path, faces, embeddings, scale=scale, others=others)
