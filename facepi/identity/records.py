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
  the next connection. A remote record is applied through ``facepi.identity.family.apply_record`` (recalibrated,
  journaled, undoable), with the household table's update in the same transaction.

What a record costs (measured: ``tests/test_sync.py::test_what_a_record_costs``): a MobileFaceNet (192-d)
person with 5 photos is 6,462 bytes on the wire, ~1.2 kB per face (768 float32 bytes as base64, its
source and photo hash, JSON-escaped once more inside the envelope) plus ~0.5 kB of header, signature and
envelope; a tombstone is 297 bytes. A FaceNet (512-d) face costs ~3 kB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facepi.identity.gallery import Gallery, GalleryError, check_name, shown

log = logging.getLogger(__name__)

VERSION = 1
MAX_PAYLOAD = 1 << 20  # bytes: a larger message is refused unread
MAX_FACES = 1000  # rows per person in one record
MAX_LAMPORT = 1 << 53
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
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
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
    except (ValueError, RecursionError):
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
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", host):  # a camera id: it goes into journals and logs
        raise Refusal("malformed body", f"host {shown(host)}: expected a camera id")
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
    gallery yet applies household records to (the same settings as ``facepi.identity.enrol.new_gallery``)."""
    from facepi.identity import classify
    from facepi.vision import runtime

    manifest = runtime.load_manifest(models_dir)
    spec = runtime.model_spec(embedder or manifest["default_embedder"], models_dir)
    entry, pre = spec.entry, spec.preprocessing
    return Gallery(str(entry["model"]), int(entry["embedding_dim"]), meta={
        "classifier": kind, "target_far": classify.DEFAULT_TARGET_FAR if target_far is None else target_far,
        "embedder": spec.file,
        "precision": str(entry.get("precision", "?")), "alignment": pre.get("alignment", "crop"),
        "margin": int(pre.get("margin", 32))})
