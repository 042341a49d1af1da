"""MTCNN face detection on the converted P/R/O-Nets (TFLite).

Follows the seed's ``detect_face.py`` step by step so that boxes and landmarks
match it (the converter verifies this on real photos): an image pyramid from
``minsize`` and ``factor``, PNet per pyramid level, NMS, box regression,
square-ing, RNet on 24x24 crops, ONet on 48x48 crops with five landmarks.
Coordinates use the seed's conventions (boxes are inclusive pixel corners; crops
are zero-padded where a box leaves the image) because the nets were trained on
exactly those crops.

Input is an RGB uint8 array (H, W, 3). The nets need no transposing: the
converter folded the seed's transposed-image convention into their weights.

Speed: interpreters are cached per input shape. A camera's frame size is fixed,
so after the first frame every pyramid level has its own allocated
interpreter, and RNet/ONet crops run in batches of power-of-two sizes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepi.vision import runtime

PNET_STRIDE = 2
PNET_CELL = 12
SCALE = 0.0078125  # 1/128: the nets take (x - 127.5) / 128


@dataclass(frozen=True)
class DetectorParams:
    """The seed's defaults: minsize 20, thresholds [0.6, 0.7, 0.7], factor 0.709."""

    minsize: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709

    def __post_init__(self) -> None:
        if self.minsize < 12:
            raise ValueError(f"minsize={self.minsize}: must be >= 12 (PNet's window)")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor={self.factor}: must be between 0 and 1")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds={self.thresholds}: need three values in [0, 1]")


def pyramid_scales(height: int, width: int, minsize: int, factor: float) -> list[float]:
    """Scales at which a 12-pixel PNet window covers faces from ``minsize`` up."""
    m = 12.0 / minsize
    side = min(height, width) * m
    scales = []
    k = 0
    while side >= 12:
        scales.append(m * factor**k)
        side *= factor
        k += 1
    return scales


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N, 4) and b (M, 4), [x1, y1, x2, y2]: the tracker and the converter's verifier
    both compare boxes with it."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression, returning kept indices, best first.

    Hand-written rather than ``cv2.dnn.NMSBoxes`` because MTCNN needs the
    'min' overlap (intersection over the smaller box) for its last stage and the
    seed's inclusive-pixel (+1) areas; both change which boxes survive.
    """
    if boxes.shape[0] == 0:
        return np.empty(0, dtype=np.intp)
    x1, y1, x2, y2, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s)
    keep = []
    while order.size > 0:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.intp)


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression (offsets relative to inclusive width/height)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] = boxes[:, 0:4] + reg[:, 0:4] * np.stack([w, h, w, h], axis=1)
    return out


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the nets see square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crop_padded(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray | None:
    """The seed's crop: 1-based inclusive box, zero-padded outside the image, resized."""
    x1, y1, x2, y2 = (int(v) - 1 for v in box[:4])  # to 0-based inclusive
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    if bw <= 0 or bh <= 0:
        return None
    h, w = image.shape[:2]
    patch = np.zeros((bh, bw, 3), np.float32)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
    if sx2 >= sx1 and sy2 >= sy1:
        patch[sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = image[sy1:sy2 + 1, sx1:sx2 + 1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def crop_batch(image: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray | None]:
    """``crop_padded`` for many boxes: the image is padded and made float once, then sliced."""
    if len(boxes) == 0:
        return []
    b = boxes[:, :4].astype(np.int64) - 1  # 0-based inclusive
    h, w = image.shape[:2]
    pad = int(max(0, -b[:, 0].min(), -b[:, 1].min(), b[:, 2].max() - (w - 1), b[:, 3].max() - (h - 1)))
    if pad > max(h, w):  # absurd boxes: do not allocate a huge canvas
        return [crop_padded(image, box, size) for box in boxes]
    canvas = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0).astype(np.float32)
    out: list[np.ndarray | None] = []
    for x1, y1, x2, y2 in b + pad:
        if x2 < x1 or y2 < y1:
            out.append(None)
        else:
            out.append(cv2.resize(canvas[y1:y2 + 1, x1:x2 + 1], (size, size), interpolation=cv2.INTER_AREA))
    return out


class Detector:
    """MTCNN on TFLite. ``detect(rgb)`` returns (boxes (N,5), landmarks (N,5,2))."""

    def __init__(self, models_dir: str | Path | None = None, params: DetectorParams | None = None,
                 threads: int = 0) -> None:
        self.params = params or DetectorParams()
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="pyramid")
        self.nets = {name: runtime.Model.load(f"mtcnn_{name}.tflite", models_dir, threads)
                     for name in ("pnet", "rnet", "onet")}

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
        boxes = self._stage1(rgb)
        if len(boxes):
            boxes = self._stage2(rgb, boxes)
        if len(boxes):
            return self._stage3(rgb, boxes)
        return np.empty((0, 5)), np.empty((0, 5, 2))

    def _stage1(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        p = self.params
        scales = pyramid_scales(h, w, p.minsize, p.factor)
        # The seed's INTER_AREA resizes cost as much as PNet itself; OpenCV runs them
        # on one core, so the levels are made on a small thread pool, all before PNet.
        def level(s: float) -> np.ndarray:
            resized = cv2.resize(img, (int(np.ceil(w * s)), int(np.ceil(h * s))), interpolation=cv2.INTER_AREA)
            return ((resized.astype(np.float32) - 127.5) * SCALE)[None]

        found = []
        for scale, x in zip(scales, self._pool.map(level, scales), strict=True):
            out = self.nets["pnet"].run(x)
            boxes = self._candidates(out["prob"][0], out["reg"][0], scale, p.thresholds[0])
            if len(boxes):
                found.append(boxes[nms(boxes, 0.5)])
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7)]
        # Stage 1 scales its offsets by x2 - x1 (not the inclusive + 1 of later stages).
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        moved = boxes[:, 0:4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
        boxes = square(np.column_stack([moved, boxes[:, 4]]))
        boxes[:, 0:4] = np.fix(boxes[:, 0:4])
        return boxes

    @staticmethod
    def _candidates(prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
        """PNet map cells above threshold -> boxes [x1, y1, x2, y2, score, 4 offsets]."""
        # Column-major order (x, then y) like the seed, so NMS ties break the same way.
        xs, ys = np.nonzero(prob.T >= threshold)
        if xs.size == 0:
            return np.empty((0, 9))
        score = prob[ys, xs]
        x1 = np.fix((PNET_STRIDE * xs + 1) / scale)
        y1 = np.fix((PNET_STRIDE * ys + 1) / scale)
        x2 = np.fix((PNET_STRIDE * xs + PNET_CELL) / scale)
        y2 = np.fix((PNET_STRIDE * ys + PNET_CELL) / scale)
        return np.column_stack([x1, y1, x2, y2, score, reg[ys, xs]])

    def _refine(self, img: np.ndarray, boxes: np.ndarray, net: str, size: int
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        crops = crop_batch(img, boxes, size)
        kept = [i for i, c in enumerate(crops) if c is not None]
        if not kept:
            return np.empty((0, 5)), {}
        x = (np.stack([crops[i] for i in kept]) - 127.5) * SCALE
        return boxes[kept], self.nets[net].run_batched(x.astype(np.float32))

    def _stage2(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes, out = self._refine(img, boxes, "rnet", 24)
        if not len(boxes):
            return boxes
        ok = out["prob"] > self.params.thresholds[1]
        boxes = np.column_stack([boxes[ok, :4], out["prob"][ok]])
        reg = out["reg"][ok]
        if not len(boxes):
            return boxes
        pick = nms(boxes, 0.7)
        return square(regress(boxes[pick], reg[pick]))

    def _stage3(self, img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.fix(boxes).astype(np.int32).astype(np.float64)
        boxes, out = self._refine(img, boxes, "onet", 48)
        if not len(boxes):
            return np.empty((0, 5)), np.empty((0, 5, 2))
        ok = out["prob"] > self.params.thresholds[2]
        boxes = np.column_stack([boxes[ok, :4], out["prob"][ok]])
        marks = out["landmarks"][ok]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = marks[:, 0:5] * w[:, None] + boxes[:, 0:1] - 1
        ys = marks[:, 5:10] * h[:, None] + boxes[:, 1:2] - 1
        points = np.stack([xs, ys], axis=2)
        boxes = regress(boxes, out["reg"][ok])
        pick = nms(boxes, 0.7, "min")
        return boxes[pick], points[pick]
