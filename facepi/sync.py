"""One household gallery, shared by every facepi of the household over its MQTT broker.

Why this shape:

- **A record is the whole state of one person** after a change (their face rows and the "that wasn't
  them" evidence: embeddings, sources and photo hashes; never crops or photos), or a tombstone when they
  were forgotten or renamed away. Each person is a last-writer-wins register: of two records for the same
  person the one with the higher ``(lamport, host)`` wins everywhere, so every facepi ends with the same
  rows whatever order the records arrive in, however often, and however late; different people never
  conflict. The Lamport counter (persisted in the gallery's ``settings``) is raised past every record
  seen, so a change made after seeing a record always wins over it; ``host`` breaks ties between changes
  made concurrently.
- **One retained topic per person** (``<topic>/gallery/<sha256(name)[:16]>``, QoS 1): the broker keeps
  the newest record of each person, so a facepi that was off (or a new one with an empty gallery) catches
  up from the retained records alone: it subscribes, applies what the broker hands it, waits a short
  settle time, and only then sends its own changes. The name is hashed because a topic cannot hold
  every name.
- **Repair**: a facepi that receives a record older than the winner it knows publishes the winner again,
  so a host that comes back and publishes something stale cannot leave it retained for newcomers. After
  each (re)connect, winners the broker did not hand back are published again (a broker that lost its
  retained store is refilled).
- **Signed**: the envelope is ``{"body": <canonical JSON>, "hmac": <HMAC-SHA256(household key, body)>}``,
  checked with ``hmac.compare_digest`` before the body is parsed. Anyone with the broker but not the key
  can at most delete retained messages (the senders' next repair restores them), never change who is
  family. A refused record is logged once per reason and topic and never touches the gallery.
- **Offline-safe**: what changes locally while no broker (or no daemon) is there is found by comparing
  each person's content digest with the last record known for them (``household`` table), and sent on
  the next connection. A remote record is applied through ``facepi.family.apply_record`` (recalibrated,
  journaled, undoable), with the household table's update in the same transaction.

What a record costs (measured: ``tests/test_sync.py::test_what_a_record_costs``): a MobileFaceNet (192-d)
person with 5 photos is 6,462 bytes on the wire, ~1.2 kB per face (768 float32 bytes as base64, its
source and photo hash, JSON-escaped once more inside the envelope) plus ~0.5 kB of header, signature and
envelope; a tombstone is 297 bytes. A FaceNet (512-d) face costs ~3 kB.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facepi import family
from facepi import store as store_mod
from facepi.gallery import Gallery, GalleryError, check_name, shown

log = logging.getLogger("facepi.sync")

VERSION = 1
MAX_PAYLOAD = 1 << 20  # bytes: a larger message is refused unread
MAX_FACES = 1000  # rows per person in one record
MAX_LAMPORT = 1 << 53
SETTLE = 2.0  # seconds after the subscription is acknowledged before local changes are sent
COUNTER = "household_lamport"  # the Lamport counter's key in the gallery's settings
BODY_KEYS = {"v", "household", "model", "person", "lamport", "host", "time", "origin", "deleted", "faces"}
FACE_KEYS = {"kind", "embedding", "source", "hash"}
KINDS = ("face", "against")
HOUSEHOLD_DDL = ("CREATE TABLE IF NOT EXISTS household (person TEXT PRIMARY KEY, lamport INTEGER NOT NULL, "
                 "host TEXT NOT NULL, digest TEXT NOT NULL, payload BLOB NOT NULL)")

Row = tuple[str, bytes, str, str]  # (kind, float32 little-endian embedding bytes, source, photo hash)


class Refusal(Exception):
    """A record that is not applied: ``reason`` is short and stable (for counting), the message says more."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


# ------------------------------------------------------------------ records


def topic_for(base: str, person: str) -> str:
    """The retained topic of one person's record (names may hold characters no topic can)."""
    return f"{base}/gallery/{hashlib.sha256(person.encode('utf-8')).hexdigest()[:16]}"


def person_digest(rows: list[Row]) -> str:
    """sha256 over a person's rows in a canonical order: hosts with the same rows agree byte for byte."""
    h = hashlib.sha256()
    for kind, emb, source, photo in sorted(rows):
        h.update(json.dumps([kind, source, photo, len(emb)]).encode("utf-8") + b"\n" + emb)
    return h.hexdigest()


def gallery_digest(digests: dict[str, str]) -> str:
    """sha256 over the sorted (person, content digest) pairs: equal on hosts with the same gallery."""
    return hashlib.sha256(json.dumps(sorted(digests.items()), separators=(",", ":")).encode("utf-8")).hexdigest()


def sign(key: bytes, body: str) -> bytes:
    """The envelope published for ``body``."""
    mac = hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "hmac": mac}, separators=(",", ":")).encode("utf-8")


def verify(key: bytes, payload: bytes) -> str:
    """The body of a signed envelope, checked before it is parsed; Refusal otherwise."""
    if len(payload) > MAX_PAYLOAD:
        raise Refusal("too large", f"a {len(payload)}-byte record (at most {MAX_PAYLOAD})")
    try:
        env = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Refusal("malformed envelope", "not JSON") from None
    if not isinstance(env, dict) or not isinstance(env.get("body"), str) or set(env) != {"body", "hmac"}:
        raise Refusal("malformed envelope", 'expected {"body": "...", "hmac": "..."}')
    mac = env["hmac"]
    try:
        body = env["body"].encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal("malformed envelope", "the body is not UTF-8") from None
    if not isinstance(mac, str) or not hmac.compare_digest(
            mac.encode("ascii", "replace"), hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")):
        raise Refusal("bad signature", "not signed with this household's key")
    return env["body"]


@dataclass
class Record:
    person: str
    lamport: int
    host: str
    time: str
    origin: str
    deleted: bool
    faces: list[Row] = field(default_factory=list)

    @property
    def order(self) -> tuple[int, str]:
        return (self.lamport, self.host)

    @property
    def digest(self) -> str:
        """The person's content digest ("" for a tombstone)."""
        return "" if self.deleted else person_digest(self.faces)


def body_of(household: str, model: str, rec: Record) -> str:
    faces = [{"kind": k, "embedding": base64.b64encode(e).decode("ascii"), "source": s, "hash": h}
             for k, e, s, h in rec.faces]
    return json.dumps({"v": VERSION, "household": household, "model": model, "person": rec.person,
                       "lamport": rec.lamport, "host": rec.host, "time": rec.time, "origin": rec.origin,
                       "deleted": rec.deleted, "faces": faces}, sort_keys=True, separators=(",", ":"))


def _text(d: dict[str, Any], key: str, most: int, least: int = 0) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not least <= len(v) <= most:
        raise Refusal("malformed body", f"{key!r} is not a string of {least}-{most} characters")
    return v


def parse(body: str, household: str, model: str | None, dim: int | None) -> Record:
    """The record in a verified body, checked field by field; Refusal otherwise."""
    try:
        d = json.loads(body)
    except ValueError:
        raise Refusal("malformed body", "not JSON") from None
    if not isinstance(d, dict) or set(d) != BODY_KEYS:
        raise Refusal("malformed body", f"expected the keys {sorted(BODY_KEYS)}")
    if d["v"] != VERSION or isinstance(d["v"], bool):
        raise Refusal("other version", f"record version {str(d['v'])[:10]!r}, this facepi reads {VERSION}")
    if _text(d, "household", 64) != household:
        raise Refusal("other household", f"household {shown(d['household'])}")
    if model is None or dim is None:
        raise Refusal("no gallery", "no gallery and no model to apply household records to")
    if _text(d, "model", 128) != model:
        raise Refusal("other model", f"embedding model {shown(d['model'])}, this gallery's is {model!r}")
    person = _text(d, "person", 256, 1)
    try:
        if check_name(person) != person:
            raise GalleryError("not as enrolled (NFC, trimmed)")
    except GalleryError as e:
        raise Refusal("bad name", f"person {shown(person)}: {e}") from None
    lamport = d["lamport"]
    if not isinstance(lamport, int) or isinstance(lamport, bool) or not 0 < lamport < MAX_LAMPORT:
        raise Refusal("malformed body", "'lamport' is not a positive integer")
    host, when, origin = _text(d, "host", 64, 1), _text(d, "time", 64), _text(d, "origin", 32)
    deleted, faces = d["deleted"], d["faces"]
    if not isinstance(deleted, bool) or not isinstance(faces, list) or len(faces) > MAX_FACES:
        raise Refusal("malformed body", f"'deleted' is not true/false, or 'faces' not a list of at most {MAX_FACES}")
    if deleted and faces:
        raise Refusal("malformed body", "a tombstone with faces")
    rows: list[Row] = []
    for f in faces:
        if not isinstance(f, dict) or set(f) != FACE_KEYS or f["kind"] not in KINDS:
            raise Refusal("malformed body", f"a face is not {{{', '.join(sorted(FACE_KEYS))}}} of kind face/against")
        try:
            emb = base64.b64decode(_text(f, "embedding", 4 * dim * 2), validate=True)
        except (binascii.Error, ValueError):
            raise Refusal("malformed body", "an embedding is not base64") from None
        if len(emb) != 4 * dim:
            raise Refusal("wrong dimension", f"an embedding of {len(emb)} bytes, {model} has {dim} float32 values")
        if not np.isfinite(np.frombuffer(emb, "<f4")).all():
            raise Refusal("not finite", "an embedding holds NaN or infinity")
        rows.append((f["kind"], emb, _text(f, "source", 1024), _text(f, "hash", 128)))
    if not deleted and not any(r[0] == "face" for r in rows):
        raise Refusal("malformed body", "a record without a face (a person who is gone is a tombstone)")
    return Record(person, lamport, host, when, origin, deleted, rows)


def blank_gallery(embedder: str | None = None, models_dir: str | os.PathLike[str] | None = None,
                  kind: str = "centroid", target_far: float | None = None) -> Gallery:
    """An empty gallery of the embedder in the model manifest (no model is loaded): what a facepi with no
    gallery yet applies household records to (the same settings as ``workflow.new_gallery``)."""
    from facepi import classify, runtime

    manifest = runtime.load_manifest(models_dir)
    spec = runtime.model_spec(embedder or manifest["default_embedder"], models_dir)
    entry, pre = spec.entry, spec.preprocessing
    return Gallery(str(entry["model"]), int(entry["embedding_dim"]), meta={
        "classifier": kind, "target_far": classify.DEFAULT_TARGET_FAR if target_far is None else target_far,
        "embedder": spec.file,
        "precision": str(entry.get("precision", "?")), "alignment": pre.get("alignment", "crop"),
        "margin": int(pre.get("margin", 32))})


def host_id() -> str:
    return socket.gethostname()[:64] or "facepi"


# ------------------------------------------------------------------ the engine


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

    def __repr__(self) -> str:  # the key never shows
        return f"HouseholdSync({self.household!r}, host={self.host!r}, gallery={str(self.store.path)!r})"

    @property
    def subscription(self) -> str:
        return f"{self.base}/gallery/+"

    # -- the store
    @contextlib.contextmanager
    def _txn(self):
        with self.store._connect(write=True) as con:
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
            with self.store._connect() as con:
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
        if not payload:
            return []  # a retained record cleared by hand; the next repair restores it
        try:
            body = verify(self._key, payload)
            with self.lock:
                model, dim = self._model(self._settings_now())
            rec = parse(body, self.household, model, dim)
            if topic != topic_for(self.base, rec.person):
                raise Refusal("wrong topic", f"a record of {shown(rec.person)} on another person's topic")
        except Refusal as r:
            self._refuse(r, topic)
            return []
        with self.lock:
            with self._txn() as con:
                self._counter(con, rec.lamport)
                known = self._known(con, rec.person)
                if known is not None and rec.order <= known[:2]:
                    self.seen[topic] = max(self.seen.get(topic, (0, "")), known[:2] if rec.order < known[:2]
                                           else rec.order)
                    if rec.order < known[:2]:
                        log.info("household: %s's record from %s (lamport %d) is older than the one known; "
                                 "publishing that again", shown(rec.person), shown(rec.host), rec.lamport)
                        return [(topic, known[3])]
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
            try:
                family.apply_record(self.path, rec.person, None if rec.deleted else [
                    (k, np.frombuffer(e, "<f4").astype(np.float32), s, h) for k, e, s, h in rec.faces],
                    blank=self.blank, models_dir=self.models_dir,
                    summary=(f"household: {'forgot' if rec.deleted else 'updated'} {rec.person} (from {rec.host}, "
                             f"lamport {rec.lamport}, {len(rec.faces)} row(s))"),
                    also=lambda con, cid: (con.execute(HOUSEHOLD_DDL), self._put(con, rec, payload)))
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
            with self.store._connect() as con:
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

    def _say(self, reason: str, where: str, text: str) -> None:
        if (reason, where) not in self._said:
            self._said.add((reason, where))
            log.warning("%s", text)


# ------------------------------------------------------------------ the MQTT adapter


class MqttHouseholdSync:
    """Runs a HouseholdSync with its own paho-mqtt 2.x client.

    Messages are queued by paho's thread and handled in ``poll()`` (called by ``start()``'s thread, or by the
    caller): incoming records first, then, once the subscription has settled, local changes (the gallery's
    stamp changed, or a new connection) and the winners the broker did not hand back."""

    def __init__(self, sync: HouseholdSync, host: str, port: int = 1883, *, username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None, client_id: str | None = None,
                 keepalive: int = 30, settle: float = SETTLE, interval: float = 1.0,
                 reconnect_max: float = 30.0, resync_every: float = 60.0) -> None:
        import paho.mqtt.client as mqtt

        self.sync = sync
        self.host, self.port, self.keepalive = host, port, keepalive
        self.settle, self.interval, self.resync_every = settle, interval, resync_every
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"facepi-household-{sync.host}")
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=ca_file or None, certfile=cert_file or None, keyfile=key_file or None)
        self.client.reconnect_delay_set(1, int(max(1, reconnect_max)))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected = False
        self.settle_at: float | None = None  # when the retained records will have arrived
        self.synced = False  # this connection's first outgoing() done
        self.last_stamp: Any = None
        self.last_sync = 0.0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: Any, blank: Gallery | None = None, host: str | None = None,
                    **kw: Any) -> MqttHouseholdSync:
        """The adapter for a loaded facepi.config.Config with ``[household] id`` set."""
        if not cfg.household.id or not cfg.household_key:
            raise ValueError("[household] id and its key are not set")
        sync = HouseholdSync(cfg.recognition.gallery, cfg.household.id, cfg.household_key, host or cfg.camera_id,
                             cfg.household.topic, blank, cfg.models.dir or None)
        m = cfg.mqtt
        return cls(sync, m.host, m.port, username=m.username or None, password=cfg.mqtt_password, tls=m.tls,
                   ca_file=m.ca_file, cert_file=m.cert_file, key_file=m.key_file,
                   client_id=f"{m.client_id or 'facepi-' + cfg.camera_id}-household", keepalive=m.keepalive,
                   reconnect_max=m.reconnect_max_seconds, **kw)

    # -- paho's thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("household: the broker refused the connection: %s", reason_code)
            return
        self.connected = True
        self.settle_at, self.synced = None, False
        self.sync.begin_session()
        client.subscribe(self.sync.subscription, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.settle_at = time.monotonic() + self.settle

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected, self.settle_at, self.synced = False, None, False

    def _on_message(self, client, userdata, msg) -> None:
        self.inbox.put((msg.topic, bytes(msg.payload)))

    # -- the caller's thread
    def start(self, thread: bool = True) -> None:
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if thread:
            self.thread = threading.Thread(target=self._run, name="facepi-household", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll(wait=self.interval)
            except Exception:  # noqa: BLE001 - the thread must outlive one bad pass (a locked gallery, ...)
                log.exception("household: sync pass failed; retrying")
                self.stopping.wait(self.interval)

    @property
    def settled(self) -> bool:
        return self.connected and self.settle_at is not None and time.monotonic() >= self.settle_at

    def poll(self, wait: float = 0.0) -> int:
        """Handle what arrived, then send local changes once settled; returns the messages published."""
        out: list[tuple[str, bytes]] = []
        try:
            item: tuple[str, bytes] | None = self.inbox.get(timeout=wait) if wait > 0 else self.inbox.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            out += self.sync.incoming(*item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                item = None
        if self.settled:
            stamp = store_mod.stamp(self.sync.path)
            now = time.monotonic()
            if not self.synced:
                self.synced = True
                out += self.sync.outgoing() + self.sync.missing()
                self.last_stamp, self.last_sync = stamp, now
            elif stamp != self.last_stamp or now - self.last_sync > self.resync_every:
                self.last_stamp, self.last_sync = stamp, now
                out += self.sync.outgoing()
        for topic, payload in out:
            self.client.publish(topic, payload, qos=1, retain=True)
        return len(out)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


__all__ = ["HouseholdSync", "MqttHouseholdSync", "Record", "Refusal", "blank_gallery", "gallery_digest",
           "parse", "person_digest", "sign", "topic_for", "verify"]
