"""From a photo to aligned, embedded faces: detect -> align -> embed, in one place.

Commands and the daemon both go through ``FacePipeline`` so that a face is
aligned exactly the same way when it is enrolled and when it is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facepi.vision import align
from facepi.vision.detect import Detector
from facepi.vision.embed import Embedder
from facepi.vision.images import DECODE_PIXELS, DETECT_PIXELS, ImageError, read_photo, shrink

ALIGN_MODES = ("crop", "landmarks")
__all__ = ["DECODE_PIXELS", "DETECT_PIXELS", "FacePipeline", "detect_bounded"]
SELECTIONS = ("central", "largest", "all")
NUMBERED = 3  # a face whose side is under 1/NUMBERED of the largest one's is not offered as --face N


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
    # every face found, left to right, as a person counts them ("the second face from the left"), and
    # which of them was chosen (0-based); boxes in the decoded photo, like ``faces``
    boxes: np.ndarray = field(default_factory=lambda: np.empty((0, 5), np.float32))
    chosen: int | None = None
    image: np.ndarray | None = None  # the decoded RGB photo the boxes refer to (``keep_image``: liveness)


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def from_the_left(k: int, n: int) -> str:
    """Face ``k`` (0-based, counted left to right) of ``n`` as a person says it: a pixel range means
    nothing to somebody looking at a family photo, "the second face from the left" does."""
    if n == 1:
        return "the only face"
    if n == 2:
        return "the face on the left" if k == 0 else "the face on the right"
    return f"the {ORDINALS[k] if k < len(ORDINALS) else f'{k + 1}th'} face from the left"


def left_to_right(boxes: np.ndarray) -> np.ndarray:
    """Indices of ``boxes`` ordered by their centre from left to right (how ``--face N`` counts)."""
    return np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")


def preview_png(rgb: np.ndarray, boxes: np.ndarray, width: int = 640) -> bytes:
    """A small PNG of the photo with every face boxed and numbered 1, 2, ... as ``boxes`` are ordered
    (left to right): what a user looks at to choose ``--face N`` in a group photo."""
    h, w = rgb.shape[:2]
    s = min(1.0, width / w)
    img = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) \
        if s < 1.0 else rgb.copy()
    thick = max(2, img.shape[1] // 200)
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (int(round(float(v) * s)) for v in b[:4])
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 220, 0), thick)
        label = str(i + 1)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.9, 2)
        ty = max(th + 8, y1)
        cv2.rectangle(img, (x1, ty - th - 8), (x1 + tw + 8, ty), (0, 220, 0), -1)
        cv2.putText(img, label, (x1 + 4, ty - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the preview PNG")
    return png.tobytes()


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

    def faces(self, rgb: np.ndarray, select: str | int = "central") -> tuple[list[Face], int]:
        """Faces in an RGB image, and how many comparable faces were left out.

        ``central``: the seed's choice (large and near the centre); ``largest``; ``all``;
        an int N: the Nth face from the left (1-based, as the preview numbers them).
        A face counts as "left out" when its side is at least half the chosen one's:
        small faces far behind the subject are background, not a second person.
        """
        faces, others, _, _ = self.choose(rgb, select)
        return faces, others

    def choose(self, rgb: np.ndarray, select: str | int = "central"
               ) -> tuple[list[Face], int, np.ndarray, int | None]:
        """``faces`` and, as well, the numbered faces' boxes left to right and which one was chosen
        (0-based; None if the chosen face is not numbered, or for ``all``). Faces smaller than a third
        of the largest are not numbered: a hand, a poster or a face far behind, not a person to choose."""
        if not isinstance(select, int) and select not in SELECTIONS:
            raise ValueError(f"face selection {select!r}: expected one of {SELECTIONS} or a face number")
        boxes, points = self.detect(rgb)
        if len(boxes) == 0:
            return [], 0, boxes, None
        ltr = left_to_right(boxes)
        boxes, points = boxes[ltr], points[ltr]
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        numbered = np.flatnonzero(side >= side.max() / NUMBERED)
        if select == "all":
            order = list(range(len(boxes)))
        elif isinstance(select, int):
            if not 1 <= select <= len(numbered):
                raise ValueError(f"face {select}: this photo shows {len(numbered)} face(s), numbered "
                                 f"1-{len(numbered)} from the left")
            order = [int(numbered[select - 1])]
        elif select == "largest":
            order = [align.largest_face(boxes)]
        else:
            order = [align.central_face(boxes, rgb.shape)]
        others = int(np.sum(side >= 0.5 * side[order[0]])) - len(order) if select != "all" else 0
        faces = [Face(boxes[i], points[i], self.align(rgb, boxes[i], points[i])) for i in order]
        chosen = np.flatnonzero(numbered == order[0]) if select != "all" else []
        return faces, others, boxes[numbered], (int(chosen[0]) if len(chosen) else None)

    def photo(self, path: Path, select: str | int = "central", accept_aligned: bool = True,
              embed: bool = True, keep_image: bool = False) -> PhotoFaces:
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
            return PhotoFaces(path, [face], self.embedder.embed(rgb[None]), aligned_input=True,
                              image=rgb if keep_image else None)
        try:
            faces, others, boxes, chosen = self.choose(rgb, select)
        except ValueError as e:  # --face N in a photo with fewer faces
            return PhotoFaces(path, [], empty, f"{path}: {e}", scale=scale)
        if not faces:
            return PhotoFaces(path, [], empty, f"{path}: no face found", scale=scale)
        embeddings = self.embedder.embed(np.stack([f.crop for f in faces])) if embed else empty
        return PhotoFaces(path, faces, embeddings, scale=scale, others=others, boxes=boxes, chosen=chosen,
                          image=rgb if keep_image else None)
