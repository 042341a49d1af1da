"""Who is family, kept in one SQLite database: the gallery, its journal and the door's visitors.

Why SQLite (the standard library's ``sqlite3``, WAL mode), as Frigate and Home Assistant
keep their state: a change to who is family and its journal entry are one transaction,
so there is never a gallery without the record of how it got there; readers (the daemon)
never wait for a writer; a visit stored at the door is a few rows, not a rewrite of a
whole file; and undo is data, not a pile of backup files.

Layout:
- ``faces``: one row per enrolled face (embedding, 112x112 crop, source, sha256) with the
  change that added it and the change that removed it (``removed_by``). Removed rows are
  what ``undo`` brings back; they are purged (biometric data is not kept for ever) once
  their change is more than ``UNDO_DEPTH`` changes and ``UNDO_DAYS`` days old. ``kind = 'against'`` rows are
  faces that were wrongly named as ``person`` ("that wasn't X"): evidence, never a match.
- ``journal``: every change (enrol, forget, naming, photo removed, rename, correction,
  train, migration, undo): when, what, from where (cli / mqtt / ha / web / migration), a
  one-line summary, its evidence (JSON), and the gallery settings before and after.
- ``settings``: the gallery's model, dimension and settings (classifier, threshold, ...).
- ``visitors`` / ``visitor_faces``: unknown visitors kept by the door (opt-in learning).
- ``household``: per person, the last winning signed record of the household's shared gallery
  (``facepi.identity.sync``; the counter is ``household_lamport`` in ``settings``).

Writers take SQLite's write lock only for the few milliseconds of a transaction
(``BEGIN IMMEDIATE``); minutes of embedding happen before it. A change computed from a
gallery that another writer changed meanwhile is refused (``Conflict``) and redone by the
caller on the fresh gallery. Files are created 0600: face templates are biometric data.

A ``.npz`` path (the format of earlier facepi, and the seed's train/classify workflow)
still works everywhere: the database lives beside it (``gallery.npz`` -> ``gallery.db``),
an existing ``.npz`` is imported on the first change and kept as ``gallery.npz.bak``, and
``facepi gallery export FILE.npz`` writes one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from facepi.identity.gallery import (  # noqa: F401 - re-exported
    FORMAT,
    Busy,
    Conflict,
    Gallery,
    GalleryError,
    db_path,
    embedding_problem,
    exists,
    wrong_model,
)

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
UNDO_DEPTH = 20  # changes that can be undone, and every change of the last UNDO_DAYS days; faces removed
UNDO_DAYS = 7  # by a change older than both are deleted for good
CROP = 112
BUSY_WAIT = [30.0]  # seconds a connection waits for another writer (this process's; the web page's: a few)
VISITOR_WAIT = 600.0  # seconds a visit waits for a long change (an enrol): written off the frame loop
ORIGINS = ("cli", "mqtt", "ha", "migration", "daemon", "household", "web")

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, what TEXT NOT NULL, origin TEXT NOT NULL,
    summary TEXT NOT NULL, detail TEXT NOT NULL, meta_before TEXT, meta_after TEXT,
    undoes INTEGER, undone_by INTEGER);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, person TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'face',
    embedding BLOB NOT NULL, crop BLOB, source TEXT NOT NULL, hash TEXT NOT NULL DEFAULT '',
    added_by INTEGER NOT NULL, removed_by INTEGER);
CREATE INDEX IF NOT EXISTS faces_live ON faces (removed_by, id);
CREATE TABLE IF NOT EXISTS recent (
    person TEXT PRIMARY KEY, at TEXT NOT NULL, camera TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS visitors (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, visits INTEGER NOT NULL,
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, named_by INTEGER);
CREATE TABLE IF NOT EXISTS visitor_faces (
    id INTEGER PRIMARY KEY, visitor TEXT NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    embedding BLOB NOT NULL, crop BLOB NOT NULL, quality REAL NOT NULL);
CREATE TABLE IF NOT EXISTS household (
    person TEXT PRIMARY KEY, lamport INTEGER NOT NULL, host TEXT NOT NULL, digest TEXT NOT NULL,
    payload BLOB NOT NULL);
"""


def stamp(path: str | os.PathLike[str]) -> tuple[tuple[int, int], ...] | None:
    """Changes when the gallery does (the database and its write-ahead log, or an .npz file): a cheap
    stat, no lock, for the daemon's watch."""
    db = db_path(path)
    files = [db, db.with_name(db.name + "-wal")] if db.exists() else [Path(path)]
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out) or None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _blob(a: np.ndarray, dtype: Any) -> bytes:
    return np.ascontiguousarray(a, dtype).tobytes()


@dataclass
class Change:
    """One journal entry."""

    id: int
    at: str
    what: str
    origin: str
    summary: str
    detail: dict[str, Any]
    undoes: int | None
    undone_by: int | None


class Store:
    """One gallery database. Each method is one short transaction; nothing is held between calls."""

    def __init__(self, path: str | os.PathLike[str], legacy: str | os.PathLike[str] | None = None) -> None:
        self.path = db_path(path)
        self.legacy = Path(legacy) if legacy is not None else (Path(path) if Path(path).suffix == ".npz" else None)

    # ------------------------------------------------------------ connection
    @contextlib.contextmanager
    def connect(self, write: bool = False, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """A connection; with ``write``, inside ``BEGIN IMMEDIATE`` (committed on success), waiting at most
        ``wait`` seconds (default ``BUSY_WAIT``) for another writer; past it, ``Busy``."""
        wait = BUSY_WAIT[0] if wait is None else wait
        if not self.path.exists():
            if not write:
                raise GalleryError(f"{self.path}: no such gallery (create it with 'facepi train' or 'facepi enroll')")
            self._create()
        try:
            con = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        except sqlite3.Error as e:
            raise GalleryError(f"{self.path}: cannot open the gallery database ({e})") from None
        try:
            con.execute("PRAGMA foreign_keys = ON")
            if write:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            else:
                yield con
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):  # a writer
                raise Busy(f"{self.path}: the gallery is busy (another change is being written); try again in a "
                           f"moment") from None
            raise GalleryError(f"{self.path}: not a facepi gallery database ({e})") from None
        finally:
            con.close()

    def _create(self) -> None:
        """A new database, 0600 from its first byte (face templates are biometric data), and complete
        before anyone can open it: made under a private name and linked into place, so a second facepi
        (another camera's instance on the same gallery) never finds it without its tables."""
        if not self.path.parent.is_dir():  # a typo'd path must not become a gallery no door reads
            raise GalleryError(f"{self.path}: no such folder {self.path.parent} (nothing created: a typo in the "
                               f"path? make the folder first if it is meant)")
        if self.path.exists():
            return
        new = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        with contextlib.suppress(FileNotFoundError):
            new.unlink()  # left by a process of this pid that died here
        os.close(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            con = sqlite3.connect(new, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode = WAL")
                con.executescript(SCHEMA)
                con.execute("INSERT OR IGNORE INTO settings VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            finally:
                con.close()
            with contextlib.suppress(FileExistsError):  # made by another facepi meanwhile: theirs is kept
                os.link(new, self.path)
        finally:
            new.unlink(missing_ok=True)

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the database's write lock (what a change holds for milliseconds); for tests and tools."""
        with self.connect(write=True):
            yield

    # ------------------------------------------------------------ the gallery
    def version(self) -> int:
        """The newest journal entry's id: a change computed at one version is refused at another."""
        if not self.path.exists():
            return 0
        with self.connect() as con:
            return int(con.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()[0])

    def has_gallery(self) -> bool:
        if not self.path.exists():
            return False
        with self.connect() as con:
            return con.execute("SELECT 1 FROM settings WHERE key = 'model'").fetchone() is not None

    def gallery(self, expect_model: str | None = None) -> Gallery:
        """The gallery as it is now (live faces, in the order they were added), with ``row_ids`` and the
        correction evidence (``against``)."""
        with self.connect() as con:
            return self._gallery(con, expect_model)

    def _gallery(self, con: sqlite3.Connection, expect_model: str | None = None) -> Gallery:
        settings = dict(con.execute("SELECT key, value FROM settings").fetchall())
        if "model" not in settings:
            raise GalleryError(f"{self.path}: holds no gallery yet (facepi train or facepi enroll makes one)")
        model, dim = settings["model"], int(settings["dim"])
        if expect_model is not None and model != expect_model:
            raise wrong_model(self.path, model, expect_model)
        try:
            meta = json.loads(settings.get("meta", "{}"))
        except (ValueError, TypeError) as e:
            raise GalleryError(f"{self.path}: settings 'meta' is not JSON ({e}); restore a backup") from None
        rows = con.execute("SELECT id, person, embedding, crop, source, hash FROM faces "
                           "WHERE removed_by IS NULL AND kind = 'face' ORDER BY id").fetchall()
        rows, quarantined = self._sound(rows, dim)
        people: list[str] = []
        for r in rows:
            if r[1] not in people:
                people.append(r[1])
        g = Gallery(model, dim, meta=meta)
        if rows:
            g.embeddings = np.stack([self._array(r[2], np.float32, (dim,), r[0], "embedding") for r in rows])
            g.labels = np.array([people.index(r[1]) for r in rows], np.int32)
            g.crops = (np.stack([self._array(r[3], np.uint8, (CROP, CROP, 3), r[0], "crop") for r in rows])
                       if all(r[3] is not None for r in rows) else None)
        g.people, g.sources, g.hashes = people, [r[4] for r in rows], [r[5] for r in rows]
        g.row_ids = [int(r[0]) for r in rows]
        against, bad = self._sound(con.execute("SELECT id, person, embedding, source FROM faces "
                                               "WHERE removed_by IS NULL AND kind = 'against' ORDER BY id").fetchall(),
                                   dim)
        g.quarantined = quarantined + bad
        g.against = [(str(r[1]), self._array(r[2], np.float32, (dim,), r[0], "embedding").copy(), str(r[3]),
                      int(r[0])) for r in against]
        return g

    def _sound(self, rows: list[Any], dim: int) -> tuple[list[Any], list[tuple[int, str, str]]]:
        """The rows whose embedding is sound, and the others (quarantined: left out, logged, named by
        ``facepi gallery check``; one NaN row would make every distance NaN and everyone unknown)."""
        good, bad = [], []
        for r in rows:
            problem = embedding_problem(self._array(r[2], np.float32, (dim,), r[0], "embedding"))
            if problem is None:
                good.append(r)
            else:
                bad.append((int(r[0]), str(r[1]), problem))
                log.warning("%s: face row %d of %s left out: its embedding has %s (facepi gallery check; "
                            "remove it with facepi gallery undo or restore a backup)", self.path, r[0], r[1], problem)
        return good, bad

    def _array(self, blob: Any, dtype: Any, shape: tuple[int, ...], row: int, what: str) -> np.ndarray:
        """A stored array, or GalleryError naming the file and the row: raw numbers only, never unpickled."""
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not isinstance(blob, bytes) or len(blob) != size:
            got = len(blob) if isinstance(blob, bytes) else type(blob).__name__
            raise GalleryError(f"{self.path}: face row {row}: its {what} is {got} bytes, expected {size} "
                               f"({shape} {np.dtype(dtype).name}); the database is damaged: restore a backup, or "
                               f"undo the change that wrote it (facepi gallery log)")
        return np.frombuffer(blob, dtype).reshape(shape)

    def commit(self, new: Gallery, base: int | None, what: str, origin: str, summary: str,
               detail: dict[str, Any] | None = None,
               also: Callable[[sqlite3.Connection, int], None] | None = None) -> Change:
        """Write ``new`` (a gallery read at version ``base``, changed in memory) as one journaled change.

        Rows of the old gallery missing from ``new.row_ids`` (or renamed) are marked removed; rows
        without an id are added. ``base`` None: no conflict check (a first gallery, a migration).
        ``also(con, change_id)``: more work in the same transaction (a named visitor is marked named by it)."""
        if origin not in ORIGINS:
            raise ValueError(f"origin {origin!r}: expected one of {ORIGINS}")
        with self.connect(write=True) as con:
            version = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()[0])
            if base is not None and version != base:
                raise Conflict(f"{self.path}: changed by another facepi meanwhile (version {base} -> {version})")
            old_meta = con.execute("SELECT value FROM settings WHERE key = 'meta'").fetchone()
            meta_after = json.dumps(new.meta)
            cid = self._journal(con, what, origin, summary, detail or {}, old_meta[0] if old_meta else None,
                                meta_after)
            for key, value in (("model", new.model), ("dim", str(new.dim)), ("meta", meta_after)):
                con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))
            live = {int(r[0]): (r[1], r[2]) for r in con.execute(
                "SELECT id, person, kind FROM faces WHERE removed_by IS NULL")}
            keep = {rid for rid, person, _ in new.quarantined if rid in live and person in new.people}
            ids = list(getattr(new, "row_ids", [None] * len(new.labels)))
            if bad := new.unsound_rows():
                raise GalleryError(f"{self.path}: not written: {bad}")
            for k in range(len(new.labels)):
                rid, person = ids[k], new.people[int(new.labels[k])]
                if rid is not None and rid in live and live[rid] == (person, "face"):
                    keep.add(rid)
                    continue
                crop = new.crops[k] if new.crops is not None else None
                con.execute("INSERT INTO faces (person, kind, embedding, crop, source, hash, added_by) "
                            "VALUES (?, 'face', ?, ?, ?, ?, ?)",
                            (person, _blob(new.embeddings[k], np.float32),
                             None if crop is None else _blob(crop, np.uint8), new.sources[k], new.hashes[k], cid))
            for person, emb, source, rid in getattr(new, "against", []):
                if rid is not None and rid in live and live[rid] == (person, "against"):
                    keep.add(rid)
                    continue
                con.execute("INSERT INTO faces (person, kind, embedding, crop, source, hash, added_by) "
                            "VALUES (?, 'against', ?, NULL, ?, '', ?)",
                            (person, _blob(emb, np.float32), source, cid))
            gone = [rid for rid in live if rid not in keep]
            con.executemany("UPDATE faces SET removed_by = ? WHERE id = ?", [(cid, rid) for rid in gone])
            if also is not None:
                also(con, cid)
            self._purge(con)
            return self._change(con, cid)

    def _journal(self, con: sqlite3.Connection, what: str, origin: str, summary: str, detail: dict[str, Any],
                 meta_before: str | None, meta_after: str | None, undoes: int | None = None) -> int:
        cur = con.execute("INSERT INTO journal (at, what, origin, summary, detail, meta_before, meta_after, undoes) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (now_iso(), what, origin, summary, json.dumps(detail), meta_before, meta_after, undoes))
        return int(cur.lastrowid or 0)

    @staticmethod
    def _oldest_undoable(con: sqlite3.Connection) -> int:
        """The id of the oldest change that can still be undone: the last UNDO_DEPTH changes, undos not
        counted (walking back must not use up the window it walks in), and every change of the last UNDO_DAYS
        (20 quick changes, e.g. repeated corrections, must not purge a forget made a minute before)."""
        ids = [int(r[0]) for r in con.execute("SELECT id FROM journal WHERE undoes IS NULL ORDER BY id DESC "
                                              "LIMIT ?", (UNDO_DEPTH,))]
        by_count = ids[-1] if len(ids) == UNDO_DEPTH else 0
        since = (datetime.now(UTC) - timedelta(days=UNDO_DAYS)).isoformat(timespec="seconds")
        by_time = con.execute("SELECT MIN(id) FROM journal WHERE undoes IS NULL AND at >= ?", (since,)).fetchone()[0]
        return by_count if by_time is None else min(by_count, int(by_time))

    def _purge(self, con: sqlite3.Connection) -> None:
        """Faces removed (and visitors named) by changes older than the undo window are deleted for good."""
        oldest = self._oldest_undoable(con)
        con.execute("DELETE FROM faces WHERE removed_by IS NOT NULL AND removed_by < ?", (oldest,))
        con.execute("DELETE FROM visitors WHERE named_by IS NOT NULL AND named_by < ?", (oldest,))

    def _change(self, con: sqlite3.Connection, cid: int) -> Change:
        r = con.execute("SELECT id, at, what, origin, summary, detail, undoes, undone_by FROM journal WHERE id = ?",
                        (cid,)).fetchone()
        return Change(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])

    def log(self, limit: int | None = None) -> list[Change]:
        """The journal, newest first."""
        if not self.path.exists():
            return []
        with self.connect() as con:
            ids = [int(r[0]) for r in con.execute("SELECT id FROM journal ORDER BY id DESC" +
                                                  (f" LIMIT {int(limit)}" if limit else ""))]
            return [self._change(con, i) for i in ids]

    def undo(self, origin: str = "cli") -> tuple[Change, Change]:
        """Restore the gallery as it was before the newest change not yet undone (an undo is not itself
        undone by the next undo: repeated undos walk back). Returns (the change undone, the undo)."""
        with self.connect(write=True) as con:
            row = con.execute("SELECT id FROM journal WHERE undone_by IS NULL AND undoes IS NULL "
                              "AND what != 'migration' ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                raise GalleryError(f"{self.path}: nothing to undo")
            target = self._change(con, int(row[0]))
            if target.id < self._oldest_undoable(con):
                raise GalleryError(f"{self.path}: change {target.id} ({target.what}) is older than the last "
                                   f"{UNDO_DEPTH} changes and {UNDO_DAYS} days; its removed faces are gone for good")
            before, after = con.execute("SELECT meta_before, meta_after FROM journal WHERE id = ?",
                                        (target.id,)).fetchone()
            uid = self._journal(con, "undo", origin, f"undid change {target.id}: {target.summary}",
                                {"undoes": target.id}, after, before, undoes=target.id)
            con.execute("UPDATE journal SET undone_by = ? WHERE id = ?", (uid, target.id))
            con.execute("UPDATE faces SET removed_by = ? WHERE added_by = ? AND removed_by IS NULL", (uid, target.id))
            con.execute("UPDATE faces SET removed_by = NULL WHERE removed_by = ?", (target.id,))
            con.execute("UPDATE visitors SET named_by = NULL WHERE named_by = ?", (target.id,))  # back in the store
            if before is None:
                con.execute("DELETE FROM settings WHERE key IN ('model', 'dim', 'meta')")
            else:
                con.execute("INSERT OR REPLACE INTO settings VALUES ('meta', ?)", (before,))
            return target, self._change(con, uid)

    # ------------------------------------------------------------ migration and export
    def migrate(self) -> Path | None:
        """Import an earlier ``.npz`` gallery beside the database (first use); see ``facepi.identity.legacy``."""
        from facepi.identity.legacy import migrate

        return migrate(self)


def open_store(path: str | os.PathLike[str]) -> Store:
    """The store for a gallery path, with an earlier ``.npz`` gallery imported on first use."""
    store = Store(path)
    store.migrate()
    return store


def load(path: str | os.PathLike[str], expect_model: str | None = None) -> Gallery:
    """Read the gallery at ``path`` without changing anything: its database if there is one, else an
    ``.npz`` file (the seed's format, an export, or a gallery not yet migrated)."""
    p = Path(path)
    store = Store(p)
    if store.path.exists() and (store.has_gallery() or not p.is_file() or p.suffix != ".npz"):
        if p.suffix == ".npz" and p.is_file():
            from facepi.identity.legacy import stray_npz

            stray_npz(store)
        return store.gallery(expect_model)
    if p.suffix == ".db":
        raise GalleryError(f"{p}: no such gallery (create it with 'facepi train' or 'facepi enroll')")
    return Gallery.load_npz(p, expect_model)


__all__ = ["FORMAT", "Busy", "Change", "Conflict", "Store", "db_path", "exists", "load", "open_store"]
