"""An earlier facepi's visitor store (``visitors.npz``, before visitors lived in the gallery's database):
read once to be imported (``VisitorBook``), and the in-memory store the grouping benchmarks use."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from facepi.fileio import atomic_write_bytes
from facepi.identity.visitors import FORMAT, JoinRule, Visitor, VisitorError, joins


@dataclass
class Visitors:
    model: str
    dim: int
    visitors: list[Visitor]
    crops: np.ndarray  # (N, S, S, 3) uint8
    embeddings: np.ndarray  # (N, dim) float32, unit length
    owner: np.ndarray  # (N,) index into ``visitors``
    quality: np.ndarray  # (N,) float32
    next_id: int = 1

    @classmethod
    def empty(cls, model: str, dim: int, size: int = 112) -> Visitors:
        return cls(model, dim, [], np.empty((0, size, size, 3), np.uint8), np.empty((0, dim), np.float32),
                   np.empty(0, np.int32), np.empty(0, np.float32))

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: str | None = None, dim: int | None = None) -> Visitors:
        """The store at ``path``; an empty one if there is none yet (``model``/``dim`` given)."""
        path = Path(path)
        if not path.exists() and model is not None and dim is not None:
            return cls.empty(model, dim)
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {k: np.asarray(data[k]) for k in ("crops", "embeddings", "owner", "quality")}
        except FileNotFoundError:
            raise VisitorError(f"{path}: no visitors yet (the daemon keeps them with [learning] enabled = true)") \
                from None
        except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise VisitorError(f"{path}: not a facepi visitor store ({type(e).__name__}: {e})") from None
        if header.get("format") != FORMAT:
            raise VisitorError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
        store = cls(header["model"], header["dim"], [Visitor(**v) for v in header["visitors"]],
                    arrays["crops"].astype(np.uint8), arrays["embeddings"].astype(np.float32),
                    arrays["owner"].astype(np.int32), arrays["quality"].astype(np.float32), header["next_id"])
        n = len(store.owner)
        if len(store.crops) != n or len(store.embeddings) != n or (n and store.owner.max() >= len(store.visitors)):
            raise VisitorError(f"{path}: inconsistent arrays")
        if model is not None and store.model != model:
            raise VisitorError(f"{path}: visitors seen with model {store.model!r}, the daemon now uses {model!r}; "
                               f"forget them (delete the file) to start again")
        return store

    def save(self, path: str | os.PathLike[str]) -> None:
        header = {"format": FORMAT, "model": self.model, "dim": self.dim, "next_id": self.next_id,
                  "visitors": [asdict(v) for v in self.visitors]}
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.array(json.dumps(header)), crops=self.crops,
                            embeddings=self.embeddings.astype(np.float32), owner=self.owner.astype(np.int32),
                            quality=self.quality.astype(np.float32))
        atomic_write_bytes(path, buf.getvalue(), mode=0o600)

    def centroid(self, i: int) -> np.ndarray:
        c = self.embeddings[self.owner == i].mean(axis=0)
        return c / max(float(np.linalg.norm(c)), 1e-12)

    def add_visit(self, crops: np.ndarray, embeddings: np.ndarray, quality: np.ndarray, same: float | JoinRule,
                  keep: int = 5, now: datetime | None = None) -> str:
        """Store a visit's faces (its best ``keep``); joined to the nearest stored visitor if within ``same``:
        a ``JoinRule`` (its distance for the visitors stored now), or a fixed distance (older callers).
        Returns the visitor's id."""
        now = now or datetime.now(UTC)
        stamp = now.isoformat(timespec="seconds")
        face = embeddings.mean(axis=0)
        face /= max(float(np.linalg.norm(face)), 1e-12)
        j = joins([self.centroid(i) for i in range(len(self.visitors))], face, same)
        if j is not None:
            i = j
            v = self.visitors[i]
            v.visits += 1
            v.last_seen = stamp
        else:
            i = len(self.visitors)
            self.visitors.append(Visitor(f"V{self.next_id}", 1, stamp, stamp))
            self.next_id += 1
        self.crops = np.concatenate([self.crops, crops.astype(np.uint8)])
        self.embeddings = np.concatenate([self.embeddings, embeddings.astype(np.float32)])
        self.owner = np.concatenate([self.owner, np.full(len(crops), i, np.int32)])
        self.quality = np.concatenate([self.quality, quality.astype(np.float32)])
        self._trim(i, keep)
        return self.visitors[i].id

    def _trim(self, i: int, keep: int) -> None:
        """A visitor keeps its ``keep`` best faces over all visits."""
        rows = np.flatnonzero(self.owner == i)
        drop = rows[np.argsort(-self.quality[rows])][keep:]
        self._drop(np.isin(np.arange(len(self.owner)), drop))

    def _drop(self, rows: np.ndarray) -> None:
        keep = ~rows
        self.crops, self.embeddings = self.crops[keep], self.embeddings[keep]
        self.owner, self.quality = self.owner[keep], self.quality[keep]

    def index(self, vid: str) -> int:
        ids = [v.id for v in self.visitors]
        if vid not in ids:
            raise VisitorError(f"{vid!r}: no such visitor (stored: {', '.join(ids) or 'none'})")
        return ids.index(vid)

    def faces(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """A visitor's stored crops and embeddings, best first."""
        rows = np.flatnonzero(self.owner == self.index(vid))
        rows = rows[np.argsort(-self.quality[rows])]
        return self.crops[rows], self.embeddings[rows]

    def remove(self, vid: str) -> Visitor:
        i = self.index(vid)
        self._drop(self.owner == i)
        self.owner = np.where(self.owner > i, self.owner - 1, self.owner).astype(np.int32)
        return self.visitors.pop(i)

    def prune(self, max_visitors: int, keep_days: float, now: datetime | None = None) -> list[str]:
        """Forget visitors unseen for ``keep_days``, then the longest unseen beyond ``max_visitors``."""
        now = now or datetime.now(UTC)
        gone = [v.id for v in self.visitors
                if datetime.fromisoformat(v.last_seen) < now - timedelta(days=keep_days)]
        by_age = sorted((v for v in self.visitors if v.id not in gone), key=lambda v: v.last_seen)
        gone += [v.id for v in by_age[:max(0, len(by_age) - max_visitors)]]
        for vid in gone:
            self.remove(vid)
        return gone

    def last(self) -> Visitor | None:
        return max(self.visitors, key=lambda v: v.last_seen) if self.visitors else None
