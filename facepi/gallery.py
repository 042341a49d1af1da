"""The gallery: who is enrolled, as embeddings (never photos), in one safe file.

One ``.npz`` file holds the embeddings, their person labels and a JSON header
(people, the embedding model, the classifier kind, the threshold and how it was
calibrated). It is read with ``allow_pickle=False``, so loading a gallery can
never execute code, and written atomically (temp file + rename).

The classifier is not pickled: scikit-learn objects can only be stored that way.
It is refit from the stored embeddings when the file is loaded instead, which is
deterministic and takes milliseconds for a household's gallery.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import atomic_write_bytes

FORMAT = "facepi-gallery/1"


class GalleryError(Exception):
    pass


@dataclass
class Gallery:
    model: str  # embedding model id, e.g. facenet-20180408-102900
    dim: int
    embeddings: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    people: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # photo file names, for the record
    meta: dict[str, Any] = field(default_factory=dict)  # classifier, threshold, calibration, ...

    def __post_init__(self) -> None:
        if self.embeddings.size == 0:
            self.embeddings = np.empty((0, self.dim), np.float32)

    def add(self, name: str, embeddings: np.ndarray, sources: list[str]) -> None:
        if not name or name == "unknown" or "/" in name:
            raise GalleryError(f"person name {name!r}: must be non-empty, not 'unknown', without '/'")
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise GalleryError(f"{name}: embeddings of shape {embeddings.shape}, expected (N, {self.dim})")
        if name not in self.people:
            self.people.append(name)
        idx = self.people.index(name)
        self.embeddings = np.concatenate([self.embeddings, embeddings.astype(np.float32)])
        self.labels = np.concatenate([self.labels, np.full(len(embeddings), idx, np.int32)])
        self.sources.extend(sources)

    def remove(self, name: str) -> int:
        if name not in self.people:
            raise GalleryError(f"{name!r} is not enrolled (enrolled: {', '.join(self.people) or 'nobody'})")
        idx = self.people.index(name)
        keep = self.labels != idx
        removed = int((~keep).sum())
        self.embeddings, self.sources = self.embeddings[keep], [s for s, k in zip(self.sources, keep, strict=True) if k]
        labels = self.labels[keep]
        self.labels = np.where(labels > idx, labels - 1, labels).astype(np.int32)
        self.people.pop(idx)
        return removed

    def counts(self) -> dict[str, int]:
        return {p: int((self.labels == i).sum()) for i, p in enumerate(self.people)}

    def save(self, path: str | os.PathLike[str]) -> None:
        header = {"format": FORMAT, "model": self.model, "dim": self.dim, "people": self.people,
                  "sources": self.sources, **self.meta}
        buf = io.BytesIO()
        np.savez(buf, embeddings=self.embeddings.astype(np.float32), labels=self.labels.astype(np.int32),
                 header=np.array(json.dumps(header)))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str], expect_model: str | None = None) -> Gallery:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                embeddings = np.asarray(data["embeddings"], np.float32)
                labels = np.asarray(data["labels"], np.int32)
        except FileNotFoundError:
            raise GalleryError(f"{path}: no such gallery file (create it with 'facepi train' "
                               f"or 'facepi enroll')") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise GalleryError(f"{path}: not a facepi gallery ({type(e).__name__}: {e})") from None
        if header.get("format") != FORMAT:
            raise GalleryError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
        people = header.pop("people")
        n = len(embeddings)
        if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= len(people))) \
                or embeddings.shape[1:] != (header["dim"],):
            raise GalleryError(f"{path}: inconsistent arrays (embeddings {embeddings.shape}, "
                               f"labels {labels.shape}, {len(people)} people)")
        if expect_model is not None and header["model"] != expect_model:
            raise GalleryError(
                f"{path}: built with embedding model {header['model']!r}, but this facepi uses "
                f"{expect_model!r}; embeddings of different models cannot be compared. "
                f"Re-enrol from the original photos: facepi train PHOTOS_DIR {path}")
        model, dim = header.pop("model"), header.pop("dim")
        sources = header.pop("sources", [])
        header.pop("format")
        return cls(model, dim, embeddings, labels, people, sources, header)
