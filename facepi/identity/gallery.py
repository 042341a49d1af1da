"""The gallery: who is enrolled, as embeddings (never photos), in memory and as ``.npz``.

A ``Gallery`` holds the embeddings, their person labels, the aligned enrolment
crops (small, for ``facepi gallery check --sheet``: the picture that shows why
someone is not recognised) and its settings (the embedding model, the classifier
kind, the threshold and how it was chosen). It lives in the gallery's SQLite
database (``facepi.identity.store``; every change through ``facepi.identity.family``, journaled);
``.npz`` is the format of earlier facepi and of the seed's train/classify
workflow: read with ``allow_pickle=False`` (loading it can never execute code) and
written atomically (temp file + rename + fsync) with mode 0600, as an export.

The classifier is not pickled: scikit-learn objects can only be stored that way.
It is refit from the stored embeddings when the file is loaded instead, which is
deterministic and takes milliseconds for a household's gallery.
"""

from __future__ import annotations

import io
import json
import os
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import atomic_write_bytes
from facepi.identity.names import invisible, lookalike, person_keys, skeleton

FORMAT = "facepi-gallery/1"
RESERVED_NAMES = ("unknown", "stranger", "nobody")  # what facepi itself says for "not enrolled"
MAX_NAME = 64


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut at ``limit`` characters: a name sent from anywhere is never
    echoed whole into logs, answers and retained topics."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def check_name(name: str) -> str:
    """The name as enrolled (NFC), or GalleryError saying what is wrong. Quotes and non-ASCII are fine."""
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise GalleryError("person name is empty")
    hidden = [c for c in clean if invisible(c)]
    if hidden:
        raise GalleryError(f"person name {shown(name)}: contains invisible characters "
                           f"({', '.join(f'U+{ord(c):04X}' for c in sorted(set(hidden)))}); type the name without them")
    if skeleton(clean) in RESERVED_NAMES:  # "ｕｎｋｎｏｗｎ", "UNKNOWN", "unknоwn" (Cyrillic о) too
        raise GalleryError(f"person name {shown(name)} is reserved: facepi says {', '.join(RESERVED_NAMES)} "
                           f"for faces it does not know")
    bad = [c for c in clean if unicodedata.category(c).startswith("C") or c in "/\\+#"]
    if bad:
        raise GalleryError(f"person name {shown(name)}: contains {''.join(sorted(set(bad)))!r} (control characters, "
                           f"'/', '\\', and the MQTT wildcards '+' and '#' are not allowed)")
    if len(clean) > MAX_NAME:
        raise GalleryError(f"person name {shown(name)}: longer than {MAX_NAME} characters")
    return clean


UNIT_TOLERANCE = 1e-3  # a stored embedding is unit length within this (float32 rounding is ~1e-7)


def embedding_problem(e: np.ndarray) -> str | None:
    """What is wrong with one embedding (not finite, not unit length), or None. One NaN row made every
    distance NaN and everyone "unknown": such a row is refused when written and quarantined when read."""
    if not np.all(np.isfinite(e)):
        return f"{int((~np.isfinite(e)).sum())} value(s) not finite (NaN or infinity)"
    norm = float(np.linalg.norm(e))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        return f"length {norm:.6g}, expected 1 (+-{UNIT_TOLERANCE})"
    return None


def db_path(path: str | os.PathLike[str]) -> Path:
    """The database for a gallery path: itself for ``.db``, else the same name with ``.db``."""
    p = Path(path)
    return p if p.suffix == ".db" else p.with_suffix(".db")


def exists(path: str | os.PathLike[str]) -> bool:
    return db_path(path).exists()


class GalleryError(Exception):
    pass


class Conflict(GalleryError):
    """The gallery changed between reading it and writing the change: redo it on the fresh one."""


class Busy(GalleryError):
    """Another writer held the database's write lock longer than this caller waits: nothing was changed."""


def wrong_model(path: str | os.PathLike[str], model: str, expect: str) -> GalleryError:
    return GalleryError(f"{path}: built with embedding model {model!r}, but this facepi uses {expect!r}; "
                        f"embeddings of different models cannot be compared. Re-enrol from the original photos: "
                        f"facepi train PHOTOS_DIR {path}")


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
    row_ids: list[int | None] = field(default_factory=list)  # database row per face (None: not stored yet)
    # "That wasn't X": faces wrongly named as a person, kept as evidence against them (person, embedding,
    # label, row id); never matched, they only tighten that person's accept distance (see classify)
    against: list[tuple[str, np.ndarray, str, int | None]] = field(default_factory=list)
    # stored rows left out because their embedding is damaged (row id, person, what is wrong): see the store
    quarantined: list[tuple[int, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.embeddings.size == 0:
            self.embeddings = np.empty((0, self.dim), np.float32)
        self.hashes = (list(self.hashes) + [""] * len(self.labels))[:len(self.labels)]
        self.row_ids = (list(self.row_ids) + [None] * len(self.labels))[:len(self.labels)]

    def add(self, name: str, embeddings: np.ndarray, sources: list[str], hashes: list[str] | None = None,
            crops: np.ndarray | None = None) -> None:
        name = check_name(name)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise GalleryError(f"{name}: embeddings of shape {embeddings.shape}, expected (N, {self.dim})")
        if name not in self.people:
            same = lookalike(name, self.people)
            if same is not None:
                raise GalleryError(f"person name {shown(name)} reads as {same!r}, who is enrolled: a new person "
                                   f"must have a name that looks different (to add to {same}, use that name)")
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
        self.row_ids.extend([None] * len(embeddings))

    def remove(self, name: str) -> int:
        """Forget a person: their faces, and the evidence kept against them."""
        idx = self._index(name)
        removed = self._keep_rows(self.labels != idx)
        labels = self.labels
        self.labels = np.where(labels > idx, labels - 1, labels).astype(np.int32)
        self.people.pop(idx)
        self.against = [a for a in self.against if a[0] != name]
        return removed

    def _index(self, name: str) -> int:
        if name not in self.people:
            raise GalleryError(f"{name!r} is not enrolled (enrolled: {', '.join(self.people) or 'nobody'})")
        return self.people.index(name)

    def _keep_rows(self, keep: np.ndarray) -> int:
        """Keep only the face rows where ``keep`` is True; returns how many went."""
        removed = int((~keep).sum())
        flags = keep.tolist()
        self.embeddings, self.labels = self.embeddings[keep], self.labels[keep]
        self.sources = [s for s, k in zip(self.sources, flags, strict=True) if k]
        self.hashes = [h for h, k in zip(self.hashes, flags, strict=True) if k]
        self.row_ids = [r for r, k in zip(self.row_ids, flags, strict=True) if k]
        if self.crops is not None:
            self.crops = self.crops[keep]
        return removed

    def photos_of(self, name: str) -> list[int]:
        """The rows of a person's faces, in the order of the contact sheet (photo 1, 2, ...)."""
        return np.flatnonzero(self.labels == self._index(name)).tolist()

    def remove_photo(self, name: str, number: int) -> str:
        """Remove a person's photo ``number`` (1-based, as numbered on the contact sheet); returns its source.
        The last photo of a person cannot go this way: that is ``forget``."""
        rows = self.photos_of(name)
        if not 1 <= number <= len(rows):
            raise GalleryError(f"{name} has photos 1-{len(rows)}; there is no photo {number}")
        if len(rows) == 1:
            raise GalleryError(f"photo 1 is {name}'s only photo: use 'facepi forget {name}' to remove them")
        row = rows[number - 1]
        source = self.sources[row]
        keep = np.ones(len(self.labels), bool)
        keep[row] = False
        self._keep_rows(keep)
        return source

    def rename(self, old: str, new: str) -> int:
        """Rename a person (their faces and evidence move with them); returns their photo count."""
        idx = self._index(old)
        new = check_name(new)
        if new in self.people:
            raise GalleryError(f"{new!r} is already enrolled: renaming {old} would merge two people "
                               f"(forget one of them first)")
        same = lookalike(new, [p for p in self.people if p != old])
        if same is not None:
            raise GalleryError(f"person name {shown(new)} reads as {same!r}, who is enrolled: two people must "
                               f"have names that look different")
        self.people[idx] = new
        self.against = [(new if a[0] == old else a[0], *a[1:]) for a in self.against]  # type: ignore[misc]
        return int((self.labels == idx).sum())

    def keys(self) -> dict[str, str]:
        """Each person's key for topics and Home Assistant entities (``facepi.identity.names``)."""
        return person_keys(self.meta, self.people)

    def unsound_rows(self) -> str | None:
        """The first new row (not stored yet) whose embedding is damaged, in words; None if all are sound."""
        for k, e in enumerate(self.embeddings):
            if self.row_ids[k] is None and (bad := embedding_problem(e)):
                who = self.people[int(self.labels[k])]
                return f"a new face of {who} ({self.sources[k]}) has an embedding with {bad}"
        for person, emb, source, rid in self.against:
            if rid is None and (bad := embedding_problem(emb)):
                return f"evidence against {person} ({source}) has an embedding with {bad}"
        return None

    def counts(self) -> dict[str, int]:
        return {p: int((self.labels == i).sum()) for i, p in enumerate(self.people)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.npz`` format (an export, the seed's workflow). A gallery that lives in a database
        is changed through ``facepi.identity.store`` instead, so a journal entry goes with every change."""
        if Path(path).suffix == ".db" or exists(path):
            raise GalleryError(f"{path}: this gallery is kept in {db_path(path)}; change it with facepi "
                               f"enroll/forget/gallery, or export it with 'facepi gallery export FILE.npz'")
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
    def load_npz(cls, path: str | os.PathLike[str], expect_model: str | None = None) -> Gallery:
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
        except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile, json.JSONDecodeError) as e:
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
            raise wrong_model(path, header["model"], expect_model)
        for k, e in enumerate(embeddings):
            bad = embedding_problem(e)
            if bad:
                raise GalleryError(f"{path}: row {k} ({people[labels[k]]}, {header.get('sources', ['?'] * n)[k]}): "
                                   f"its embedding has {bad}; the file is damaged")
        model, dim = header.pop("model"), header.pop("dim")
        sources = header.pop("sources", [])
        hashes = header.pop("hashes", [])
        header.pop("format")
        return cls(model, dim, embeddings, labels, people, sources, header, hashes, crops)
