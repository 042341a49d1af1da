"""The door's recent recognitions, in the gallery's database: what "that wasn't X" corrects
(``facepi gallery wrong NAME`` and Home Assistant's Wrong name button)."""

from __future__ import annotations

import numpy as np

from facepi.identity.store import Store, _blob, now_iso


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
