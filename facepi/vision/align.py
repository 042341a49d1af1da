"""Face alignment: turn a detection into the fixed-size crop an embedding model wants.

Two modes:
- ``crop``: the seed's ``align_dataset_mtcnn.py`` recipe (box grown by margin/2 on
  each side, clipped to the image, resized). FaceNet 20180408 was trained on
  crops like these.
- ``landmarks``: a similarity transform (rotation, scale, shift) that maps the
  five MTCNN landmarks onto a canonical template, so eyes and mouth land at the
  same pixels whatever the head roll.
"""

from __future__ import annotations

import cv2
import numpy as np

# The standard ArcFace 5-point template for 112x112 crops (eyes, nose, mouth corners).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def template(size: int, face_fraction: float = 1.0) -> np.ndarray:
    """The ArcFace template scaled to ``size`` pixels; ``face_fraction`` < 1 leaves more margin."""
    centre = np.float32(112 / 2)
    return ((ARCFACE_112 - centre) * face_fraction + centre) * np.float32(size / 112)


def crop(rgb: np.ndarray, box: np.ndarray, image_size: int = 160, margin: int = 32) -> np.ndarray:
    """Seed-compatible crop: box +- margin/2, clipped to the image, resized (bilinear)."""
    h, w = rgb.shape[:2]
    x1 = int(max(box[0] - margin / 2, 0))
    y1 = int(max(box[1] - margin / 2, 0))
    x2 = int(min(box[2] + margin / 2, w))
    y2 = int(min(box[3] + margin / 2, h))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {box[:4].tolist()} lies outside the {w}x{h} image")
    return cv2.resize(rgb[y1:y2, x1:x2], (image_size, image_size), interpolation=cv2.INTER_LINEAR)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, shift) taking ``src`` onto ``dst``.

    Every point counts, as in insightface's ``norm_crop`` (Umeyama) and OpenCV's
    ``FaceRecognizerSF.alignCrop``: the crops the embedders were trained on. (A
    robust fit such as LMEDS drops one or two of five landmarks on some faces and
    so cuts a different crop from the one the model knows.) Solved as the linear
    least-squares problem in (a, b, tx, ty) of x' = a x - b y + tx, y' = b x + a y + ty.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    if not np.all(np.isfinite(a)) or np.ptp(src, axis=0).max() < 1e-3:
        raise ValueError("landmarks are degenerate; cannot estimate a similarity transform")
    (p, q, tx, ty), *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[p, -q, tx], [q, p, ty]], np.float64)


def warp(rgb: np.ndarray, landmarks: np.ndarray, image_size: int = 160,
         face_fraction: float = 0.8) -> np.ndarray:
    """Similarity-warp so the five landmarks (5, 2) land on the canonical template (black border)."""
    matrix = similarity(landmarks, template(image_size, face_fraction))
    return cv2.warpAffine(rgb, matrix, (image_size, image_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def largest_face(boxes: np.ndarray) -> int:
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def central_face(boxes: np.ndarray, image_shape: tuple[int, ...]) -> int:
    """The seed's choice among several faces: large and near the image centre."""
    h, w = image_shape[:2]
    size = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    off_x = (boxes[:, 0] + boxes[:, 2]) / 2 - w / 2
    off_y = (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2
    return int(np.argmax(size - (off_x**2 + off_y**2) * 2.0))


def landmark_error(landmarks: np.ndarray) -> float:
    """How far five landmarks are from the shape of a face: the RMS residual of the best
    similarity onto the canonical template, as a share of the template's size.

    Real faces, frontal or turned a little, fit within a few per cent; MTCNN's rare
    false positives (a hand, a pattern on a coat) place their "eyes" and "mouth" where
    no similarity can make a face of them. Cheap: one 10x4 least-squares solve.
    """
    ref = template(112)
    try:
        matrix = similarity(landmarks, ref)
    except ValueError:
        return float("inf")
    moved = np.asarray(landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(np.mean(np.sum((moved - ref) ** 2, axis=1))) / 112)
