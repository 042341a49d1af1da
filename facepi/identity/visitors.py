"""Learning from the door (opt-in): unknown visitors' best faces, kept locally, to be named later.

With ``[learning] enabled = true`` the daemon keeps, for each announced unknown
visitor, the best few aligned crops of the visit (ranked by detector score, face
size and sharpness) and their embeddings. A visit whose face matches a stored
visitor (within the ``JoinRule`` distance, which tightens as the store fills, so
strangers stay apart at 50 visitors as at 1) is added to that visitor:
"V7: 4 visits, first seen ..., last seen ...". The store is one
``.npz`` file (no pickle), written atomically, mode 0600, under the same kind of
lock as the gallery, and bounded: ``max_visitors`` (the longest unseen go first)
and ``keep_days``.

``facepi visitors`` lists them (``--sheet`` draws their crops), ``facepi visitors
name V7 alice`` enrols V7's door crops into the gallery with the same checks as
``enroll`` (door crops, same camera, same light: the best enrolment data there
is), ``facepi visitors forget V7`` drops one. Home Assistant can do the same from
the dashboard ("Name last visitor").
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from facepi.fileio import atomic_write_bytes
from facepi.identity.classify import CLUSTERING, OperatingPoints

FORMAT = "facepi-visitors-1"


class VisitorError(Exception):
    pass


VISIT_FAR = 0.01  # per stranger visit over the whole store, as the gallery's default target (bench/learning.py)


@dataclass(frozen=True)
class JoinRule:
    """When a visit joins a stored visitor: the gallery's rule, applied to the visitor store.

    A stranger's visit is compared with *every* stored visitor, so a fixed distance
    (the model's 5 %-FAR point, 0.72) merges strangers more often the fuller the
    store: at 50 visitors nearly every stranger finds a look-alike. As in
    ``facepi.identity.classify.calibrate``, ``target`` is the false-accept rate per visit over
    the whole store; each comparison may accept ``target / (n_stored x CLUSTERING)``,
    and the distance comes from the model's measured operating points. The target
    was chosen on CelebA dev with ``bench/learning.py`` (merges vs re-visits joined).
    """

    points: OperatingPoints
    target: float = VISIT_FAR

    def distance(self, n_stored: int) -> float:
        """The join distance when ``n_stored`` visitors are stored (each one a comparison)."""
        return self.points.threshold(self.target / (max(n_stored, 1) * CLUSTERING))

    @classmethod
    def for_model(cls, embedder_file: str, models_dir: str | os.PathLike[str] | None = None,
                  target: float = VISIT_FAR) -> JoinRule:
        """The rule for the embedder the gallery was built with (its manifest entry's operating points)."""
        from facepi.vision import runtime

        entry = runtime.model_spec(embedder_file, models_dir).entry
        points = OperatingPoints.from_manifest(entry)
        if points is None:
            raise VisitorError(f"model {embedder_file!r}: its manifest entry has no operating points, so visits "
                               f"cannot be grouped by a measured rule; re-run facepi-convert")
        return cls(points, target)


@dataclass
class Visitor:
    id: str  # "V7"
    visits: int
    first_seen: str  # ISO 8601 UTC
    last_seen: str


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low for blur (Frigate penalises blur the same way)."""
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def crop_quality(score: float, width: float, crop: np.ndarray) -> float:
    """Rank a visit's faces: detector score x face size x sharpness (each saturating)."""
    return score * min(width / 160.0, 1.0) * min(sharpness(crop) / 300.0, 1.0)


def joins(centroids: list[np.ndarray], face: np.ndarray, same: float | JoinRule) -> int | None:
    """The stored visitor (index) a visit's face joins: the nearest centroid within the join distance
    for this many visitors stored; None: a new visitor."""
    if not centroids:
        return None
    d = 1.0 - np.stack(centroids) @ face
    limit = same.distance(len(centroids)) if isinstance(same, JoinRule) else float(same)
    i = int(d.argmin())
    return i if d[i] <= limit else None


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
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
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


class VisitorBook:
    """The daemon's and the CLI's door to the visitors, kept in the gallery's database
    (``facepi.identity.store``): every call is one short transaction, and a visit adds a few rows
    instead of rewriting the store. ``path`` is the gallery path (``gallery.npz`` or ``.db``);
    ``legacy`` an earlier ``visitors.npz`` store, imported on first use and kept as ``.bak``.
    """

    def __init__(self, path: str | os.PathLike[str], legacy: str | os.PathLike[str] | None = None) -> None:
        from facepi.identity.store import Store

        self.store = Store(path)
        self.legacy = Path(legacy) if legacy else None

    def _import_legacy(self, con) -> None:  # noqa: ANN001 - sqlite3.Connection
        """An earlier .npz visitor store is moved into the database once (kept as .bak)."""
        if self.legacy is None or self.legacy.suffix != ".npz" or not self.legacy.is_file():
            return
        old = Visitors.load(self.legacy)
        for i, v in enumerate(old.visitors):
            seq = int(v.id[1:]) if v.id[1:].isdigit() else i + 1
            con.execute("INSERT OR IGNORE INTO visitors (id, seq, visits, first_seen, last_seen) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (v.id, seq, v.visits, v.first_seen, v.last_seen))
            rows = np.flatnonzero(old.owner == i)
            con.executemany("INSERT INTO visitor_faces (visitor, embedding, crop, quality) VALUES (?, ?, ?, ?)",
                            [(v.id, old.embeddings[r].astype(np.float32).tobytes(),
                              old.crops[r].astype(np.uint8).tobytes(), float(old.quality[r])) for r in rows])
        os.replace(self.legacy, self.legacy.with_name(self.legacy.name + ".bak"))

    def record(self, model: str, dim: int, crops: np.ndarray, embeddings: np.ndarray, quality: np.ndarray,
               same: float | JoinRule, keep: int, max_visitors: int, keep_days: float,
               now: datetime | None = None) -> tuple[Visitor, list[str]]:
        """Store one visit's best faces; returns the visitor it joined (or made) and the ids pruned.

        ``same``: the join distance, or a rule with ``distance(n_stored)`` (the more visitors stored,
        the stricter, so strangers are not merged as the store grows)."""
        now = now or datetime.now(UTC)
        stamp = now.isoformat(timespec="seconds")
        face = embeddings.astype(np.float32).mean(axis=0)
        face /= max(float(np.linalg.norm(face)), 1e-12)
        with self.store.visitors_txn() as con:
            self._import_legacy(con)
            seen = dict(con.execute("SELECT key, value FROM settings WHERE key IN ('visitor_model', "
                                    "'visitor_seq')").fetchall())
            if seen.get("visitor_model", model) != model:
                con.execute("DELETE FROM visitors")  # embeddings of another model cannot be compared
            rows = con.execute("SELECT visitor, embedding FROM visitor_faces").fetchall()
            ids = [r[0] for r in con.execute("SELECT id FROM visitors WHERE named_by IS NULL ORDER BY seq")]
            centroids = []
            for vid in ids:
                c = np.mean([np.frombuffer(r[1], np.float32) for r in rows if r[0] == vid] or
                            [np.zeros(dim, np.float32)], axis=0)
                centroids.append(c / max(float(np.linalg.norm(c)), 1e-12))
            j = joins(centroids, face, same)
            if j is not None:
                vid = ids[j]
                con.execute("UPDATE visitors SET visits = visits + 1, last_seen = ? WHERE id = ?", (stamp, vid))
            else:
                seq = int(seen.get("visitor_seq", "0")) + 1
                vid = f"V{seq}"
                con.execute("INSERT INTO visitors (id, seq, visits, first_seen, last_seen) VALUES (?, ?, 1, ?, ?)",
                            (vid, seq, stamp, stamp))
                con.execute("INSERT OR REPLACE INTO settings VALUES ('visitor_seq', ?)", (str(seq),))
            con.execute("INSERT OR REPLACE INTO settings VALUES ('visitor_model', ?)", (model,))
            con.executemany("INSERT INTO visitor_faces (visitor, embedding, crop, quality) VALUES (?, ?, ?, ?)",
                            [(vid, embeddings[k].astype(np.float32).tobytes(), crops[k].astype(np.uint8).tobytes(),
                              float(quality[k])) for k in range(len(crops))])
            con.execute("DELETE FROM visitor_faces WHERE visitor = ? AND id NOT IN (SELECT id FROM visitor_faces "
                        "WHERE visitor = ? ORDER BY quality DESC LIMIT ?)", (vid, vid, keep))
            gone = [r[0] for r in con.execute("SELECT id FROM visitors WHERE named_by IS NULL AND last_seen < ?",
                                              ((now - timedelta(days=keep_days)).isoformat(timespec="seconds"),))]
            left = [r[0] for r in con.execute("SELECT id FROM visitors WHERE named_by IS NULL ORDER BY last_seen")
                    if r[0] not in gone]
            gone += left[:max(0, len(left) - max_visitors)]
            con.executemany("DELETE FROM visitors WHERE id = ?", [(g,) for g in gone])
            row = con.execute("SELECT id, visits, first_seen, last_seen FROM visitors WHERE id = ?", (vid,)).fetchone()
        visitor = Visitor(*row) if row else Visitor(vid, 1, stamp, stamp)
        return visitor, gone

    def _require(self) -> None:
        """A command on visitors of a gallery that does not exist says so (and creates nothing)."""
        legacy = self.store.legacy
        if not self.store.path.exists() and not (legacy is not None and legacy.is_file()) \
                and not (self.legacy is not None and self.legacy.is_file()):
            raise VisitorError(f"{self.store.path}: no such gallery database (check --gallery, or the config's "
                               f"[recognition] gallery)")

    def forget(self, vid: str) -> Visitor:
        self._require()
        with self.store.visitors_txn() as con:
            self._import_legacy(con)
            row = con.execute("SELECT id, visits, first_seen, last_seen FROM visitors "
                              "WHERE id = ? AND named_by IS NULL", (vid,)).fetchone()
            if row is None:
                raise VisitorError(self._missing(con, vid))
            con.execute("DELETE FROM visitors WHERE id = ?", (vid,))
        return Visitor(*row)

    @staticmethod
    def _missing(con, vid: str) -> str:  # noqa: ANN001 - sqlite3.Connection
        ids = [r[0] for r in con.execute("SELECT id FROM visitors WHERE named_by IS NULL ORDER BY seq")]
        return f"{vid[:16]!r}: no such visitor (stored: {', '.join(ids) or 'none'})"

    def visitors(self) -> list[Visitor]:
        """Every stored visitor, the most recently seen first ([] when there is no store yet)."""
        if self.legacy is not None and self.legacy.is_file():
            with self.store.visitors_txn() as con:
                self._import_legacy(con)
        rows = self.store.visitor_rows()
        return sorted((Visitor(r[0], r[2], r[3], r[4]) for r in rows), key=lambda v: v.last_seen, reverse=True)

    def faces(self, vid: str, con=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        """A visitor's stored crops and embeddings, best first (VisitorError if there is no such visitor)."""
        if con is None:
            self._require()
            if not self.store.path.exists():
                raise VisitorError(f"{vid[:16]!r}: no such visitor (no visitors stored yet)")
            with self.store._connect() as c:
                return self.faces(vid, c)
        if con.execute("SELECT 1 FROM visitors WHERE id = ? AND named_by IS NULL", (vid,)).fetchone() is None:
            raise VisitorError(self._missing(con, vid))
        rows = con.execute("SELECT crop, embedding FROM visitor_faces WHERE visitor = ? ORDER BY quality DESC",
                           (vid,)).fetchall()
        crops = np.stack([np.frombuffer(r[0], np.uint8).reshape(112, 112, 3) for r in rows]) if rows else \
            np.empty((0, 112, 112, 3), np.uint8)
        embs = np.stack([np.frombuffer(r[1], np.float32) for r in rows]) if rows else np.empty((0, 0), np.float32)
        return crops, embs

    def best_crop(self, vid: str) -> np.ndarray:
        """The visitor's best stored face (RGB, 112x112)."""
        return self.faces(vid)[0][0]

    def as_visitors(self) -> Visitors:
        """Everything, in memory (for the sheet and listings)."""
        vs = sorted(self.visitors(), key=lambda v: int(v.id[1:]) if v.id[1:].isdigit() else 0)
        crops, embs, owner = [], [], []
        dim = 0
        for i, v in enumerate(vs):
            c, e = self.faces(v.id)
            crops.append(c)
            embs.append(e)
            owner += [i] * len(c)
            dim = e.shape[1] if len(e) else dim
        store = Visitors.empty("", dim)
        store.visitors = vs
        if owner:
            store.crops, store.embeddings = np.concatenate(crops), np.concatenate([e for e in embs if len(e)])
            store.owner, store.quality = np.array(owner, np.int32), np.zeros(len(owner), np.float32)
        return store


def sheet(store: Visitors, path: Path, columns: int = 5) -> int:
    """A PNG with one row per visitor (id, visits, last seen) and its best crops; returns the rows."""
    if not store.visitors:
        raise VisitorError("no visitors stored: nothing to draw")
    s = store.crops.shape[1]
    cell, label_w = s + 8, 230
    rows = []
    for v in store.visitors:
        crops, _ = store.faces(v.id)
        row = np.full((cell, label_w + columns * cell, 3), 255, np.uint8)
        cv2.putText(row, f"{v.id}: {v.visits} visit(s)", (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(row, f"last {v.last_seen[:16]}", (4, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1,
                    cv2.LINE_AA)
        for k, crop in enumerate(crops[:columns]):
            x = label_w + k * cell + 4
            row[4:4 + s, x:x + s] = crop
        rows.append(row)
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))
    if not ok:
        raise VisitorError(f"{path}: could not encode the sheet")
    atomic_write_bytes(path, png.tobytes(), mode=0o600)
    return len(rows)
