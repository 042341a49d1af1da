"""The household engine: this facepi's gallery <-> the household's signed records (``records``).

Transport-agnostic: ``outgoing()`` gives the records to publish for local changes,
``incoming()`` applies a record (through ``facepi.identity.family.apply_record``) or
answers a stale one with the winner. ``facepi.door.household`` runs it over MQTT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from facepi.identity import family
from facepi.identity import store as store_mod
from facepi.identity.gallery import Gallery, GalleryError, shown
from facepi.identity.records import (
    COUNTER,
    HOUSEHOLD_DDL,
    MAX_FACES,
    MAX_PAYLOAD,
    Record,
    Refusal,
    Row,
    body_of,
    gallery_digest,
    parse,
    person_digest,
    sign,
    topic_for,
    verify,
)

REPAIR_SECONDS = 5.0  # a topic's winner is published again at once, then at most this often, doubling
REPAIR_MAX = 300.0  # the longest wait between two repairs of one topic (cleared over and over); quiet this long: reset
MAX_JUMP = 1 << 20  # how far a record's counter may run ahead of the highest counter seen here
# refusals that say someone wrote junk on a person's topic (the winner is published again); not "other model",
# "other version" or "no gallery", which a facepi of the household may send, nor "cannot apply" (a local failure)
TAMPERED = ("too large", "malformed envelope", "bad signature", "malformed body", "wrong dimension", "not finite",
            "bad name", "wrong topic", "counter jump")
SAID = 20  # topics a refusal reason is logged for; the rest are only counted
log = logging.getLogger(__name__)


class _AppliedMeanwhile(Exception):
    """The record was applied by another engine on the same gallery file while this one prepared it."""


class HouseholdSync:
    """The transport-agnostic core: records out for local changes, records in applied (or repaired).

    ``blank``: the empty gallery to start from when this facepi has none yet (``blank_gallery()``).
    Thread-safe (one lock); each call is a few short SQLite transactions."""

    def __init__(self, gallery: str | os.PathLike[str], household: str, key: bytes, host: str,
                 topic: str = "facepi/household/{id}", blank: Gallery | None = None,
                 models_dir: str | os.PathLike[str] | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the household key must be at least 16 bytes")
        self.path = gallery
        self.store = store_mod.Store(gallery)
        self.household = household
        self._key = key
        self.host = host
        self.base = topic.replace("{id}", household).rstrip("/")
        self.blank = blank
        self.models_dir = models_dir
        self.lock = threading.RLock()
        self.refused: Counter[str] = Counter()
        self.applied = 0
        self.sent = 0
        self.seen: dict[str, tuple[int, str]] = {}  # this session: topic -> newest (lamport, host) the broker gave
        self._said: set[tuple[str, str]] = set()
        self.repaired: dict[str, tuple[float, float]] = {}  # topic -> (when its winner was last published again,
        #                                                              the wait before the next: the backoff)
        self.due: dict[str, float] = {}  # topic -> when its winner is to be published again (a repair held back)
        self.current: dict[str, tuple[int, str] | None] = {}  # known person's topic -> what the broker holds now

    def __repr__(self) -> str:  # the key never shows
        return f"HouseholdSync({self.household!r}, host={self.host!r}, gallery={str(self.store.path)!r})"

    @property
    def subscription(self) -> str:
        return f"{self.base}/gallery/+"

    # -- the store
    @contextlib.contextmanager
    def _txn(self):
        with self.store.connect(write=True) as con:
            con.execute(HOUSEHOLD_DDL)  # galleries made before the household table
            yield con

    @staticmethod
    def _settings(con: sqlite3.Connection) -> dict[str, str]:
        return dict(con.execute("SELECT key, value FROM settings").fetchall())

    def _model(self, settings: dict[str, str]) -> tuple[str | None, int | None]:
        if "model" in settings:
            return settings["model"], int(settings["dim"])
        return (self.blank.model, self.blank.dim) if self.blank is not None else (None, None)

    @staticmethod
    def _rows(con: sqlite3.Connection, person: str | None = None) -> dict[str, list[Row]]:
        """Every enrolled person's live rows (a person is enrolled while they have a face row)."""
        sql = "SELECT person, kind, embedding, source, hash FROM faces WHERE removed_by IS NULL"
        args: tuple[Any, ...] = ()
        if person is not None:
            sql, args = sql + " AND person = ?", (person,)
        out: dict[str, list[Row]] = {}
        for p, kind, emb, source, photo in con.execute(sql + " ORDER BY id", args):
            out.setdefault(p, []).append((kind, bytes(emb), source, photo))
        return {p: rows for p, rows in out.items() if any(r[0] == "face" for r in rows)}

    @staticmethod
    def _known(con: sqlite3.Connection, person: str) -> tuple[int, str, str, bytes] | None:
        r = con.execute("SELECT lamport, host, digest, payload FROM household WHERE person = ?", (person,)).fetchone()
        return None if r is None else (int(r[0]), str(r[1]), str(r[2]), bytes(r[3]))

    def _known_on(self, con: sqlite3.Connection, topic: str) -> tuple[int, str, str, bytes] | None:
        """The winner known for the person whose topic this is (names are hashed in topics: looked through)."""
        person = next((p for (p,) in con.execute("SELECT person FROM household") if topic_for(self.base, p) == topic),
                      None)
        return self._known(con, person) if person is not None else None

    @staticmethod
    def _put(con: sqlite3.Connection, rec: Record, payload: bytes) -> None:
        con.execute("INSERT OR REPLACE INTO household VALUES (?, ?, ?, ?, ?)",
                    (rec.person, rec.lamport, rec.host, rec.digest, payload))

    @staticmethod
    def _counter(con: sqlite3.Connection, at_least: int = 0) -> int:
        r = con.execute("SELECT value FROM settings WHERE key = ?", (COUNTER,)).fetchone()
        now = int(r[0]) if r else 0
        if at_least > now:
            con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (COUNTER, str(at_least)))
            now = at_least
        return now

    @staticmethod
    def _origin(con: sqlite3.Connection, person: str) -> str:
        r = con.execute("SELECT j.origin FROM faces f JOIN journal j ON j.id = COALESCE(f.removed_by, f.added_by) "
                        "WHERE f.person = ? ORDER BY j.id DESC LIMIT 1", (person,)).fetchone()
        return str(r[0]) if r else "unknown"

    # -- the API
    def people(self) -> dict[str, str]:
        """{person: content digest} of the local gallery."""
        if not self.store.path.exists():
            return {}
        try:
            with self.store.connect() as con:
                return {p: person_digest(r) for p, r in self._rows(con).items()}
        except GalleryError as e:
            if "no such table" in str(e):  # a database being created this instant by another writer
                return {}
            raise

    def digest(self) -> str:
        """The gallery's digest: equal on every facepi with the same gallery (for the daemon's status)."""
        return gallery_digest(self.people())

    def outgoing(self) -> list[tuple[str, bytes]]:
        """A signed record for every person whose rows differ from the last record known for them (new,
        changed, or gone: a tombstone); each becomes the known winner. Publish them retained, QoS 1."""
        self.store.migrate()  # a gallery still in an earlier facepi's .npz file is imported first
        if not self.store.path.exists():
            return []
        out: list[tuple[str, bytes]] = []
        with self.lock, self._txn() as con:
            model, _ = self._model(self._settings(con))
            if model is None:
                return []
            local = self._rows(con)
            known = {str(r[0]): str(r[1]) for r in con.execute("SELECT person, digest FROM household")}
            counter = self._counter(con)
            for person in sorted(set(local) | set(known)):
                rows = local.get(person, [])
                digest = person_digest(rows) if rows else ""
                if known.get(person, "") == digest:
                    continue
                if len(rows) > MAX_FACES:
                    self._say("too many faces", person, f"{shown(person)} has {len(rows)} rows; a household "
                              f"record holds at most {MAX_FACES}: not shared")
                    continue
                rec = Record(person, counter + 1, self.host, store_mod.now_iso(), self._origin(con, person),
                             not rows, rows)
                payload = sign(self._key, body_of(self.household, model, rec))
                if len(payload) > MAX_PAYLOAD:
                    self._say("too large", person, f"{shown(person)}'s record is {len(payload)} bytes (at most "
                              f"{MAX_PAYLOAD}): not shared")
                    continue
                counter += 1
                self._put(con, rec, payload)
                out.append((topic_for(self.base, person), payload))
                log.info("household: sending %s %s (lamport %d, %d row(s))", "tombstone of" if rec.deleted else
                         "record of", shown(person), rec.lamport, len(rows))
            self._counter(con, counter)
        self.sent += len(out)
        return out

    def incoming(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """A message from ``<topic>/gallery/+``: verified, then applied if it wins, ignored if already known,
        answered with the known winner if it is older (publish what this returns, retained). A person changed
        here and not sent yet keeps the local change (it goes out next, and wins)."""
        if not payload:  # a retained record cleared (by hand, or by someone on the broker): restored
            return self._restore(topic, "the record was cleared")
        self.store.migrate()  # an .npz gallery not imported yet is this facepi's own state: compared, not replaced
        try:
            body = verify(self._key, payload)
            with self.lock:
                model, dim = self._model(self._settings_now())
            rec = parse(body, self.household, model, dim)
            if topic != topic_for(self.base, rec.person):
                raise Refusal("wrong topic", f"a record of {shown(rec.person)} on another person's topic")
        except Refusal as r:
            self._refuse(r, topic)
            return self._restore(topic, f"a record refused ({r.reason})") if r.reason in TAMPERED else []
        with self.lock:
            try:
                with self._txn() as con:
                    highest = self._counter(con)
                    if rec.lamport > highest + MAX_JUMP:  # one record must not use up the counter for good
                        raise Refusal("counter jump", f"{shown(rec.person)}'s record from {shown(rec.host)} has "
                                      f"counter {rec.lamport}, more than {MAX_JUMP} past the highest seen here "
                                      f"({highest})")
                    self._counter(con, rec.lamport)
                    self.current[topic] = rec.order
                    known = self._known(con, rec.person)
                    if known is not None and rec.order <= known[:2]:
                        self.seen[topic] = max(self.seen.get(topic, (0, "")), known[:2] if rec.order < known[:2]
                                               else rec.order)
                        if rec.order < known[:2]:
                            return self._repair(topic, known[3], f"{shown(rec.person)}'s record from "
                                                f"{shown(rec.host)} (lamport {rec.lamport}) is older than the "
                                                "one known")
                        return []
                    self.seen[topic] = rec.order
                    local = self._rows(con, rec.person).get(rec.person, [])
                    mine = person_digest(local) if local else ""
                    if mine == rec.digest:
                        self._put(con, rec, payload)  # the same rows already: only the winner is recorded
                        return []
                    if mine != (known[2] if known is not None else ""):
                        # a local change not sent yet (made offline, or by the CLI with no daemon running) was
                        # made without seeing this record: it is recorded as seen, and the local change goes out
                        # next (outgoing) with a higher counter, so it wins everywhere
                        self._put(con, rec, payload)
                        log.info("household: %s changed here too, not sent yet; this change wins over %s's",
                                 shown(rec.person), shown(rec.host))
                        return []
            except Refusal as r:
                self._refuse(r, topic)
                return self._restore(topic, "a record refused (counter jump)")

            def record_winner(con: sqlite3.Connection, cid: int) -> None:
                """In the change's own transaction: another engine on this gallery file (a second camera of this
                Pi) may have applied the same record meanwhile; then this change is dropped, not made twice."""
                con.execute(HOUSEHOLD_DDL)
                now = self._known(con, rec.person)
                if now is not None and rec.order <= now[:2]:
                    raise _AppliedMeanwhile
                self._put(con, rec, payload)

            try:
                family.apply_record(self.path, rec.person, None if rec.deleted else [
                    (k, np.frombuffer(e, "<f4").astype(np.float32), s, h) for k, e, s, h in rec.faces],
                    blank=self.blank, models_dir=self.models_dir,
                    summary=(f"household: {'forgot' if rec.deleted else 'updated'} {rec.person} (from {rec.host}, "
                             f"lamport {rec.lamport}, {len(rec.faces)} row(s))"),
                    also=record_winner)
            except _AppliedMeanwhile:
                return []
            except (GalleryError, ValueError) as e:
                self._refuse(Refusal("cannot apply", f"{shown(rec.person)}: {e}"), topic)
                return []
            self.applied += 1
            log.info("household: applied %s's %s from %s (lamport %d)", shown(rec.person),
                     "tombstone" if rec.deleted else "record", shown(rec.host), rec.lamport)
            return []

    def _settings_now(self) -> dict[str, str]:
        if not self.store.path.exists():
            return {}
        try:
            with self.store.connect() as con:
                return self._settings(con)
        except GalleryError as e:
            if "no such table" in str(e):
                return {}
            raise

    def begin_session(self) -> None:
        """A new connection: forget which records the broker handed over (see ``missing``)."""
        with self.lock:
            self.seen = {}

    def missing(self) -> list[tuple[str, bytes]]:
        """Known winners the broker did not hand over this session (lost, or older there): to publish again."""
        if not self.store.path.exists():
            return []
        with self.lock, self._txn() as con:
            rows = con.execute("SELECT person, lamport, host, payload FROM household").fetchall()
        out = []
        for person, lamport, host, payload in rows:
            topic = topic_for(self.base, person)
            if self.seen.get(topic, (0, "")) < (int(lamport), str(host)):
                out.append((topic, bytes(payload)))
        return out

    def status(self) -> dict[str, Any]:
        return {"household": self.household, "digest": self.digest(), "sent": self.sent, "applied": self.applied,
                "refused": dict(self.refused)}

    def _refuse(self, r: Refusal, topic: str) -> None:
        self.refused[r.reason] += 1
        self._say(r.reason, topic, f"household: refused a record on {topic}: {r.reason} ({r})")

    def _restore(self, topic: str, why: str) -> list[tuple[str, bytes]]:
        """The winner known for the person whose topic this is (cleared on the broker, or junk written over it),
        to publish again (``_repair``); [] for a topic of nobody known here (junk there costs no memory)."""
        if not self.store.path.exists():
            return []
        with self.lock, self._txn() as con:
            known = self._known_on(con, topic)
            if known is None:
                return []
            self.current[topic] = None
            return self._repair(topic, known[3], why)

    def _repair(self, topic: str, winner: bytes, why: str) -> list[tuple[str, bytes]]:
        """The known winner, to publish again on ``topic``: at once the first time, then with a backoff (5 s,
        10 s, 20 s ... at most REPAIR_MAX; reset after a quiet REPAIR_MAX). A repair held back is not lost:
        it is due later (``due_repairs``), so a record cleared however often is restored, while a replay or
        clearing flood costs each facepi one message (and one log line) per topic per backoff step."""
        now = time.monotonic()
        with self.lock:
            last, wait = self.repaired.get(topic, (float("-inf"), 0.0))
            if now < last + wait:
                self.due.setdefault(topic, last + wait)
                return []
            self.due.pop(topic, None)
            self.repaired[topic] = (now, REPAIR_SECONDS if now - last > REPAIR_MAX else min(REPAIR_MAX, 2 * wait))
        log.info("household: %s; publishing the winner again on %s", why, topic)
        return [(topic, winner)]

    def due_repairs(self) -> list[tuple[str, bytes]]:
        """The repairs held back whose time has come, unless the broker holds the winner again meanwhile
        (another facepi restored it): call it every pass, and publish what it returns (retained)."""
        now = time.monotonic()
        with self.lock:
            topics = [t for t, when in self.due.items() if now >= when]
        out: list[tuple[str, bytes]] = []
        for topic in topics:
            with self.lock, self._txn() as con:
                self.due.pop(topic, None)
                known = self._known_on(con, topic)
                if known is not None and self.current.get(topic) != known[:2]:
                    out += self._repair(topic, known[3], "a repair held back by the backoff is due")
        return out

    def _say(self, reason: str, where: str, text: str) -> None:
        """Once per reason and topic, and at most SAID topics per reason: junk on a thousand topics is a
        few lines, and counted in the status."""
        if (reason, where) not in self._said and sum(r == reason for r, _ in self._said) < SAID:
            self._said.add((reason, where))
            log.warning("%s", text)


