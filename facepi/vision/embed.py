"""Face embeddings on a converted model, with the preprocessing its manifest entry names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from facepi.vision import runtime


@dataclass(frozen=True)
class OperatingPoints:
    """The model's measured thresholds: per-comparison false-accept rate -> cosine distance."""

    far: tuple[float, ...]  # ascending
    distance: tuple[float, ...]  # ascending with far
    measured_on: str = ""

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> OperatingPoints | None:
        op = entry.get("operating_points")
        if not op:
            return None
        return cls(tuple(op["far"]), tuple(op["distance"]), str(op.get("measured_on", "")))

    def threshold(self, far: float) -> float:
        """Distance at this per-comparison FAR, interpolated in log(FAR); below the smallest
        measured rate, the strictest measured threshold (never a looser one)."""
        x = np.log10(np.asarray(self.far))
        return float(np.interp(np.log10(max(far, 1e-12)), x, self.distance,
                               left=self.distance[0], right=self.distance[-1]))



class Embedder:
    """``embed(crops)``: aligned RGB uint8 crops (N, S, S, 3) -> L2-normalised float32 (N, D)."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None, file: str | None = None,
                 threads: int = 0, max_batch: int = 16) -> None:
        manifest = runtime.load_manifest(models_dir)
        file = file or manifest.get("default_embedder")
        if not file:
            raise runtime.ModelError("the manifest names no default_embedder; pass a model file")
        self.model = runtime.Model.load(file, models_dir, threads)
        entry = self.model.spec.entry
        if entry.get("kind") != "embedder":
            raise runtime.ModelError(f"{file}: not an embedding model (kind {entry.get('kind')!r})")
        pre = self.model.spec.preprocessing
        self.file = file
        self.model_id = str(entry["model"])
        self.precision = str(entry.get("precision", "?"))
        self.dim = int(entry["embedding_dim"])
        self.image_size = int(pre["image_size"])
        self.alignment = str(pre.get("alignment", "crop"))
        self.margin = int(pre.get("margin", 32))
        self.face_fraction = float(pre.get("face_fraction", 0.8))  # landmark template scale
        self.mean = np.float32(pre["mean"])
        self.scale = np.float32(pre["scale"])
        self.max_batch = max_batch
        self.output = self.model.spec.outputs[0]["name"]
        # The open-set rule measured on real data (see facepi.identity.classify).
        self.operating_points = OperatingPoints.from_manifest(entry)
        default = entry.get("default_threshold") or {}
        self.default_threshold: float | None = default.get("distance")

    @property
    def name(self) -> str:
        """Which model and precision: goes into every event and gallery."""
        return f"{self.model_id}/{self.precision}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if crops.ndim != 4 or crops.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected RGB crops (N, {self.image_size}, {self.image_size}, 3), "
                             f"got {crops.shape}")
        if len(crops) == 0:
            return np.empty((0, self.dim), np.float32)
        x = (crops.astype(np.float32) - self.mean) * self.scale
        emb = self.model.run_batched(x, self.max_batch)[self.output]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-12)).astype(np.float32)
