"""The door's recent recognitions, in the gallery's database: what "that wasn't X" corrects
(``facepi gallery wrong NAME``, ``facepi gallery wrong --event SEQ`` and Home Assistant's Wrong name button).

Every recognition of the door is kept by its ``run`` and ``seq`` (the last ``EVENTS``; an ``unknown`` event has
no name to correct), with the change that corrected it: a correction is accepted once per
recognition, however often the same press is replayed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from facepi.identity.gallery import GalleryError
from facepi.identity.store import Store, _blob, now_iso

EVENTS = 50  # events kept for "wrong name" by id
TABLE = """CREATE TABLE IF NOT EXISTS recent_events (
    run TEXT NOT NULL, seq INTEGER NOT NULL, person TEXT NOT NULL, at TEXT NOT NULL, camera TEXT NOT NULL,
    embedding BLOB, corrected_by INTEGER, PRIMARY KEY (run, seq))"""  # made by the first event (older databases too)


@dataclass(frozen=True)
class Event:
    run: str
    seq: int
    person: str  # the name said, or "unknown"
    at: str
    camera: str
    embedding: np.ndarray | None  # the face named (None for unknown)
    corrected_by: int | None  # the journal change that corrected it


def remember(store: Store, person: str, embedding: np.ndarray, camera: str) -> None:
    """The last face the daemon named ``person``."""
    with store.connect(write=True) as con:
        con.execute("INSERT OR REPLACE INTO recent VALUES (?, ?, ?, ?)",
                    (person, now_iso(), camera, _blob(embedding, np.float32)))


def last_recognition(store: Store, person: str) -> tuple[str, str, np.ndarray] | None:
    """(when, camera, embedding) of the last face named ``person``, or None."""
    if not store.path.exists():
        return None
    with store.connect() as con:
        r = con.execute("SELECT at, camera, embedding FROM recent WHERE person = ?", (person,)).fetchone()
    return None if r is None else (r[0], r[1], np.frombuffer(r[2], np.float32).copy())


def remember_event(store: Store, run: str, seq: int, person: str, embedding: np.ndarray | None, camera: str) -> None:
    """An event of the door, addressable by (run, seq); only the newest EVENTS are kept."""
    with store.connect(write=True) as con:
        con.execute(TABLE)
        con.execute("INSERT OR REPLACE INTO recent_events VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (run, seq, person, now_iso(), camera,
                     None if embedding is None else _blob(embedding, np.float32)))
        con.execute("DELETE FROM recent_events WHERE rowid NOT IN "
                    "(SELECT rowid FROM recent_events ORDER BY rowid DESC LIMIT ?)", (EVENTS,))


def event(store: Store, seq: int, run: str | None = None) -> Event | None:
    """The event ``seq`` of ``run`` (None: of the newest run that has one), or None."""
    if not store.path.exists():
        return None
    with store.connect() as con:
        try:
            r = con.execute("SELECT run, seq, person, at, camera, embedding, corrected_by FROM recent_events "
                            "WHERE seq = ? AND (? IS NULL OR run = ?) ORDER BY rowid DESC LIMIT 1",
                            (seq, run, run)).fetchone()
        except sqlite3.OperationalError:  # no event recorded yet in this database
            return None
    if r is None:
        return None
    emb = None if r[5] is None else np.frombuffer(r[5], np.float32).copy()
    return Event(r[0], int(r[1]), r[2], r[3], r[4], emb, r[6])


def mark_corrected(con: sqlite3.Connection, run: str, seq: int, change: int) -> None:
    """In a change's transaction: the event is corrected by ``change``; GalleryError (the change is rolled
    back) if another correction of it came first."""
    if con.execute("UPDATE recent_events SET corrected_by = ? WHERE run = ? AND seq = ? AND corrected_by IS NULL",
                   (change, run, seq)).rowcount != 1:
        raise GalleryError(f"event {seq} was corrected already; a correction counts once")


def corrected(store: Store, run: str, seq: int) -> int | None:
    """The change that corrected event (run, seq), if any."""
    if not store.path.exists():
        return None
    with store.connect() as con:
        try:
            r = con.execute("SELECT corrected_by FROM recent_events WHERE run = ? AND seq = ?",
                            (run, seq)).fetchone()
        except sqlite3.OperationalError:
            return None
    return None if r is None else r[0]


def addressed(store: Store, seq: int, run: str | None = None, name: str | None = None) -> Event:
    """The recognition a "wrong name" by id may correct; GalleryError saying why not (none such, another
    name, corrected already)."""
    ev = event(store, seq, run)
    if ev is None or ev.embedding is None or ev.person == "unknown":
        raise GalleryError(f"no event {seq}{f' of run {run}' if run else ''} among the door's last {EVENTS} "
                           f"recognitions: an unknown event has no name to correct (facepi gallery log shows the "
                           f"corrections made)")
    if name is not None and name != ev.person:
        raise GalleryError(f"event {seq} named {ev.person}, not {name}")
    if ev.corrected_by is not None:
        raise GalleryError(f"event {seq} ({ev.person}) was corrected already (change {ev.corrected_by}); "
                           f"a correction counts once")
    return ev
