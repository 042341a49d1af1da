"""The door's visitors in the gallery's database: what the daemon stores per visit and the CLI lists,
names and forgets (``facepi visitors``), and the visitors' contact sheet."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from facepi.fileio import atomic_write_bytes
from facepi.identity.store import VISITOR_WAIT
from facepi.identity.visitor_file import Visitors
from facepi.identity.visitors import JoinRule, Visitor, VisitorError, joins


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

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the visitor tables; a gallery still in an .npz file beside it is imported
        first, so the two never disagree. It may wait for a long change (an enrol): off the frame loop."""
        self.store.migrate()
        with self.store.connect(write=True, wait=VISITOR_WAIT) as con:
            yield con

    def _rows(self) -> list[tuple[str, int, int, str, str]]:
        """(id, seq, visits, first_seen, last_seen) per stored visitor."""
        if not self.store.path.exists():
            return []
        with self.store.connect() as con:
            return [tuple(r) for r in con.execute(  # type: ignore[misc]
                "SELECT id, seq, visits, first_seen, last_seen FROM visitors WHERE named_by IS NULL ORDER BY seq")]

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
        with self._txn() as con:
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
        with self._txn() as con:
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
            with self._txn() as con:
                self._import_legacy(con)
        rows = self._rows()
        return sorted((Visitor(r[0], r[2], r[3], r[4]) for r in rows), key=lambda v: v.last_seen, reverse=True)

    def faces(self, vid: str, con=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        """A visitor's stored crops and embeddings, best first (VisitorError if there is no such visitor)."""
        if con is None:
            self._require()
            if not self.store.path.exists():
                raise VisitorError(f"{vid[:16]!r}: no such visitor (no visitors stored yet)")
            with self.store.connect() as c:
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
    import cv2  # only the sheet draws: listing and naming visitors (the page) need no OpenCV

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
