"""The door's recent events with their face crop, kept on the Pi for the household's page (``facepi web``):
what a "wrong name" or "this is X" on any of them points at.

They live in the gallery's database (0600, beside the visitors), in a table of their own made on first
use, and are bounded twice: at most ``keep`` events, none older than ``days`` (``[web] events_kept`` /
``events_days``; ``events_kept = 0`` keeps none, and deletes what was kept). An event is addressed by
(run, seq): the daemon's run id and its event counter, the pair every MQTT event carries.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from facepi.identity.store import CROP, Store, _blob

TABLE = """CREATE TABLE IF NOT EXISTS door_events (
    run TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, camera TEXT NOT NULL, name TEXT NOT NULL,
    distance REAL NOT NULL, embedding BLOB NOT NULL, crop BLOB, live INTEGER, PRIMARY KEY (run, seq))"""
# live: NULL the door's liveness check was off; 1 judged live; 0 not judged live (never scored, e.g. a stranger
# with [learning] off): such a face may be a photo or a screen, so the page never enrols it ("this is X")


@dataclass
class DoorEvent:
    run: str
    seq: int
    at: str
    camera: str
    name: str
    distance: float
    embedding: np.ndarray
    crop: np.ndarray | None
    live: bool | None = None  # None: liveness was off at the door; False: not judged live (never enrol it)


def record(store: Store, event: dict, embedding: np.ndarray, crop: np.ndarray | None, keep: int,
           days: float, live: bool | None = None) -> None:
    """Keep one announced event (``event`` as published: run, seq, timestamp, camera, name, distance) and
    drop what is beyond ``keep`` / older than ``days``. Off the frame loop (the daemon's store worker).
    ``live``: None when the door's liveness check is off, else whether the face was judged live."""
    if crop is not None and crop.shape[:2] != (CROP, CROP):  # FaceNet's 160 px crops: the gallery's size
        import cv2

        crop = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA)
    with store.connect(write=True) as con:
        con.execute(TABLE)
        if not _has_live(con):  # a table kept before liveness was recorded
            con.execute("ALTER TABLE door_events ADD COLUMN live INTEGER")
        if keep > 0:
            con.execute("INSERT OR REPLACE INTO door_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (event["run"], int(event["seq"]), event["timestamp"], event["camera"], event["name"],
                         float(event["distance"]), _blob(embedding, np.float32),
                         None if crop is None else _blob(crop, np.uint8), None if live is None else int(live)))
        _prune(con, keep, days)


def _prune(con: sqlite3.Connection, keep: int, days: float) -> None:
    cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    con.execute("DELETE FROM door_events WHERE at < ?", (cutoff,))
    con.execute("DELETE FROM door_events WHERE rowid NOT IN (SELECT rowid FROM door_events ORDER BY at DESC "
                "LIMIT ?)", (max(keep, 0),))


def _has_table(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE name = 'door_events'").fetchone() is not None


def _has_live(con: sqlite3.Connection) -> bool:
    return any(r[1] == "live" for r in con.execute("PRAGMA table_info(door_events)"))


def _columns(con: sqlite3.Connection) -> str:
    return "run, seq, at, camera, name, distance, embedding, crop, " + ("live" if _has_live(con) else "NULL")


def recent(store: Store, limit: int = 100) -> list[DoorEvent]:
    """The kept events, newest first ([] when there are none)."""
    if not store.path.exists():
        return []
    with store.connect() as con:
        if not _has_table(con):
            return []
        rows = con.execute(f"SELECT {_columns(con)} FROM door_events ORDER BY at DESC, seq DESC LIMIT ?",
                           (int(limit),)).fetchall()
    return [_event(r) for r in rows]


def get(store: Store, run: str, seq: int) -> DoorEvent | None:
    if not store.path.exists():
        return None
    with store.connect() as con:
        if not _has_table(con):
            return None
        r = con.execute(f"SELECT {_columns(con)} FROM door_events WHERE run = ? AND seq = ?",
                        (run, int(seq))).fetchone()
    return None if r is None else _event(r)


def _event(r: tuple) -> DoorEvent:
    crop = None if r[7] is None else np.frombuffer(r[7], np.uint8).reshape(CROP, CROP, 3)
    return DoorEvent(r[0], int(r[1]), r[2], r[3], r[4], float(r[5]), np.frombuffer(r[6], np.float32).copy(), crop,
                     None if r[8] is None else bool(r[8]))
