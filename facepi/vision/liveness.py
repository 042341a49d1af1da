"""Is this face live, or a photo / a screen held to the camera? MiniFASNet on TFLite.

Two passive anti-spoofing nets (minivision's MiniFASNetV2 and MiniFASNetV1SE,
converted and verified against the ONNX originals by ``facepi-convert``) each look
at the face with some context around it — the MTCNN box scaled x2.7 and x4.0
about its centre — because the tell-tale signs of an attack (a photo's border, a
phone's bezel, moire, the flat print) sit around the face as much as on it. Each
gives P(live) (softmax class 1); the score is their mean, as in minivision's own
test script (summed softmax). The threshold is not here: it is per camera
(facepi.identity.liveness), because the same score means different things under
different cameras.

The crop rule is minivision's (its models were trained on exactly these crops):
the box (x1, y1, x2, y2) scaled by ``s`` about its centre, width and height
separately (not made square). At the frame edge:

- the crop never leaves the frame and is never padded: a crop that would cross an
  edge is **shifted** back inside, so the face is off-centre in it (towards that
  edge);
- if even the shifted crop would not fit (a face larger than frame / s), ``s`` is
  first **reduced** to the largest scale that fits (less context, same aspect).

Corners are truncated to integers and the inclusive region is resized to 80x80
with bilinear interpolation (cv2's default), as minivision does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from facepi.vision import runtime

IMAGE_SIZE = 80


class LivenessUnavailable(runtime.ModelError):
    """The models directory has no liveness models (an older checkout, or not converted)."""


def context_box(box: np.ndarray, frame_shape: tuple[int, ...], scale: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) inclusive integer corners of the context crop (module docstring: the rule)."""
    h_img, w_img = frame_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    s = min((h_img - 1) / bh, (w_img - 1) / bw, scale)
    cx, cy = x1 + bw / 2, y1 + bh / 2
    nw, nh = bw * s, bh * s
    left, top, right, bottom = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > w_img - 1:
        left, right = left - (right - w_img + 1), w_img - 1.0
    if bottom > h_img - 1:
        top, bottom = top - (bottom - h_img + 1), h_img - 1.0
    return int(left), int(top), int(right), int(bottom)


def context_crop(rgb: np.ndarray, box: np.ndarray, scale: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """The model input for one face: BGR float32 0-255, (size, size, 3)."""
    x1, y1, x2, y2 = context_box(box, rgb.shape, scale)
    region = rgb[y1:y2 + 1, x1:x2 + 1, ::-1]  # RGB -> BGR
    return cv2.resize(np.ascontiguousarray(region), (size, size)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class _Net:
    model: runtime.Model
    scale: float
    live_class: int
    output: str


class LivenessModel:
    """Both MiniFASNet nets, loaded once; ``score(rgb, box)`` -> P(live) in [0, 1]."""

    def __init__(self, nets: list[_Net]) -> None:
        self.nets = nets

    @classmethod
    def load(cls, models_dir: str | os.PathLike[str] | None = None, threads: int = 1) -> LivenessModel:
        manifest = runtime.load_manifest(models_dir)
        files = manifest.get("default_liveness") or []
        if not files:
            raise LivenessUnavailable(
                f"{runtime.models_dir() if models_dir is None else models_dir}/manifest.json names no liveness "
                "models (default_liveness); run 'facepi-convert --liveness-only' or update the checkout")
        nets = []
        for file in files:
            model = runtime.Model.load(file, models_dir, threads)
            entry, pre = model.spec.entry, model.spec.preprocessing
            if entry.get("kind") != "liveness" or int(pre.get("image_size", 0)) != IMAGE_SIZE:
                raise runtime.ModelError(f"{model.spec.path}: not an 80x80 liveness model (kind {entry.get('kind')!r})")
            nets.append(_Net(model, float(entry["context_scale"]), int(pre.get("live_class", 1)),
                             model.spec.outputs[0]["name"]))
        return cls(nets)

    @property
    def files(self) -> list[str]:
        return [n.model.spec.file for n in self.nets]

    def crops(self, rgb: np.ndarray, box: np.ndarray) -> list[np.ndarray]:
        """One BGR 80x80 float crop per net, at that net's context scale."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {rgb.dtype} {rgb.shape}")
        return [context_crop(rgb, box, n.scale) for n in self.nets]

    def net_scores(self, rgb: np.ndarray, box: np.ndarray) -> list[float]:
        """P(live) of each net (for measurement; ``score`` is their mean)."""
        out = []
        for net, crop in zip(self.nets, self.crops(rgb, box), strict=True):
            logits = net.model.run(crop[None])[net.output][0]
            out.append(float(softmax(logits)[net.live_class]))
        return out

    def score(self, rgb: np.ndarray, box: np.ndarray) -> float:
        """P(live) of the face in ``box`` (MTCNN x1, y1, x2, y2[, score]) of an RGB uint8 frame."""
        return float(np.mean(self.net_scores(rgb, box)))
