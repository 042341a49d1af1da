"""The gallery: who is enrolled, as embeddings (never photos), in one safe file.

One ``.npz`` file holds the embeddings, their person labels, the aligned enrolment
crops (small, for ``facepi gallery check --sheet``: the picture that shows why
someone is not recognised) and a JSON header (people, each photo's name and
sha256, the embedding model, the classifier kind, the threshold and how it was
chosen). It is read with ``allow_pickle=False``, so loading a gallery can never
execute code, and written atomically (temp file + rename + fsync) with mode 0600:
face templates are biometric data. ``locked()`` serialises read-modify-write, so
two ``facepi enroll`` at once both land.

The classifier is not pickled: scikit-learn objects can only be stored that way.
It is refit from the stored embeddings when the file is loaded instead, which is
deterministic and takes milliseconds for a household's gallery.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import sys
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import atomic_write_bytes

FORMAT = "facepi-gallery/1"
RESERVED_NAMES = ("unknown", "stranger", "nobody")  # what facepi itself says for "not enrolled"
MAX_NAME = 64


def check_name(name: str) -> str:
    """The name as enrolled (NFC), or GalleryError saying what is wrong. Quotes and non-ASCII are fine."""
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise GalleryError("person name is empty")
    if clean.casefold() in RESERVED_NAMES:
        raise GalleryError(f"person name {name!r} is reserved: facepi says {', '.join(RESERVED_NAMES)} "
                           f"for faces it does not know")
    bad = [c for c in clean if unicodedata.category(c).startswith("C") or c in "/\\+#"]
    if bad:
        raise GalleryError(f"person name {name!r}: contains {''.join(sorted(set(bad)))!r} (control characters, "
                           f"'/', '\\', and the MQTT wildcards '+' and '#' are not allowed)")
    if len(clean) > MAX_NAME:
        raise GalleryError(f"person name {name!r}: longer than {MAX_NAME} characters")
    return clean


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock for read-modify-write of the gallery at ``path`` (a ``.lock`` file beside it)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"facepi: {path} is being changed by another facepi; waiting ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
    hashes: list[str] = field(default_factory=list)  # sha256 of each row's photo file ("" if unknown)
    crops: np.ndarray | None = None  # (N, S, S, 3) uint8 aligned crops, or None (older galleries)

    def __post_init__(self) -> None:
        if self.embeddings.size == 0:
            self.embeddings = np.empty((0, self.dim), np.float32)
        self.hashes = (list(self.hashes) + [""] * len(self.labels))[:len(self.labels)]

    def add(self, name: str, embeddings: np.ndarray, sources: list[str], hashes: list[str] | None = None,
            crops: np.ndarray | None = None) -> None:
        name = check_name(name)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise GalleryError(f"{name}: embeddings of shape {embeddings.shape}, expected (N, {self.dim})")
        if name not in self.people:
            self.people.append(name)
        idx = self.people.index(name)
        if crops is not None and (self.crops is not None or not len(self.labels)):
            self.crops = crops if self.crops is None else np.concatenate([self.crops, crops])
        else:
            self.crops = None  # a gallery either has every row's crop or none
        self.embeddings = np.concatenate([self.embeddings, embeddings.astype(np.float32)])
        self.labels = np.concatenate([self.labels, np.full(len(embeddings), idx, np.int32)])
        self.sources.extend(sources)
        self.hashes.extend(hashes or [""] * len(embeddings))

    def remove(self, name: str) -> int:
        if name not in self.people:
            raise GalleryError(f"{name!r} is not enrolled (enrolled: {', '.join(self.people) or 'nobody'})")
        idx = self.people.index(name)
        keep = self.labels != idx
        removed = int((~keep).sum())
        self.embeddings, self.sources = self.embeddings[keep], [s for s, k in zip(self.sources, keep, strict=True) if k]
        self.hashes = [h for h, k in zip(self.hashes, keep, strict=True) if k]
        if self.crops is not None:
            self.crops = self.crops[keep]
        labels = self.labels[keep]
        self.labels = np.where(labels > idx, labels - 1, labels).astype(np.int32)
        self.people.pop(idx)
        return removed

    def counts(self) -> dict[str, int]:
        return {p: int((self.labels == i).sum()) for i, p in enumerate(self.people)}

    def save(self, path: str | os.PathLike[str]) -> None:
        header = {"format": FORMAT, "model": self.model, "dim": self.dim, "people": self.people,
                  "sources": self.sources, "hashes": self.hashes, **self.meta}
        arrays = {"embeddings": self.embeddings.astype(np.float32), "labels": self.labels.astype(np.int32),
                  "header": np.array(json.dumps(header))}
        if self.crops is not None:
            arrays["crops"] = self.crops.astype(np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue(), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str], expect_model: str | None = None) -> Gallery:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                embeddings = np.asarray(data["embeddings"], np.float32)
                labels = np.asarray(data["labels"], np.int32)
                crops = np.asarray(data["crops"], np.uint8) if "crops" in data.files else None
        except FileNotFoundError:
            raise GalleryError(f"{path}: no such gallery file (create it with 'facepi train' "
                               f"or 'facepi enroll')") from None
        except PermissionError:
            raise GalleryError(f"{path}: permission denied (galleries are 0600: run as the user who "
                               f"enrolled, e.g. sudo -u facepi)") from None
        except IsADirectoryError:
            raise GalleryError(f"{path}: is a folder, expected a gallery file (.npz)") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise GalleryError(f"{path}: not a facepi gallery ({type(e).__name__}: {e})") from None
        if header.get("format") != FORMAT:
            raise GalleryError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
        people = header.pop("people")
        n = len(embeddings)
        if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= len(people))) \
                or embeddings.shape[1:] != (header["dim"],) or (crops is not None and len(crops) != n):
            raise GalleryError(f"{path}: inconsistent arrays (embeddings {embeddings.shape}, "
                               f"labels {labels.shape}, {len(people)} people)")
        if expect_model is not None and header["model"] != expect_model:
            raise GalleryError(
                f"{path}: built with embedding model {header['model']!r}, but this facepi uses "
                f"{expect_model!r}; embeddings of different models cannot be compared. "
                f"Re-enrol from the original photos: facepi train PHOTOS_DIR {path}")
        model, dim = header.pop("model"), header.pop("dim")
        sources = header.pop("sources", [])
        hashes = header.pop("hashes", [])
        header.pop("format")
        return cls(model, dim, embeddings, labels, people, sources, header, hashes, crops)
