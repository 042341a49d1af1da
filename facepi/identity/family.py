"""The one guarded path for every change to who is family.

Enrolling photos, naming a door visitor, forgetting someone, removing one photo,
renaming, "that wasn't X", training a whole gallery, a household record and undoing
any of these are the verbs below, and all go through one private function (``_change``):
the gallery is read, changed in memory with the gallery's checks
(``facepi.identity.enrol``), recalibrated, and written with its journal entry in one
SQLite transaction (``facepi.identity.store``). Whether the change came from the
command line, MQTT, Home Assistant or the household is recorded; only the command line
may ``force`` past a check, and a forced change records the problems it overrode.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepi.identity.gallery import Gallery, GalleryError, check_name, shown, wrong_model
from facepi.identity.names import check_keys, lookalike, new_key, person_keys
from facepi.identity.recent import last_recognition
from facepi.identity.store import Change, Conflict, Store, open_store

log = logging.getLogger(__name__)
RETRIES = 5  # a change computed on a gallery another facepi changed meanwhile is recomputed this often


class Refused(GalleryError):
    """A change the gallery's checks refused; nothing was written."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass
class Done:
    """What a change did: the journal entry, and the gallery as it now is."""

    change: Change
    gallery: Gallery
    result: Any = None


Mutation = Callable[[Gallery | None], tuple[Gallery, str, dict[str, Any], Any]]


def _change(path: str | os.PathLike[str], what: str, origin: str, mutate: Mutation,
           also: Callable[[sqlite3.Connection, int], None] | None = None) -> Done:
    """Read the gallery, ``mutate`` it (returns the gallery, a summary, the evidence and any result;
    raises to refuse), write it with its journal entry; recomputed if another writer came first."""
    if origin not in ("cli", "mqtt", "ha", "daemon", "household", "web"):
        raise ValueError(f"origin {origin!r}: expected cli, mqtt, ha, daemon, household or web")
    store = open_store(path)
    for _ in range(RETRIES):
        base = store.version()
        current = store.gallery() if store.has_gallery() else None
        keys = person_keys(current.meta, current.people) if current is not None else {}
        sizes = _sizes(current) if current is not None else {}
        gallery, summary, detail, result = mutate(current)
        _check_names(gallery, keys)
        _check_sizes(gallery, sizes)
        try:
            done = store.commit(gallery, base, what, origin, summary, detail, also)
        except Conflict:
            continue
        log.info("gallery change %d (%s, from %s): %s", done.id, what, origin, summary)
        return Done(done, store.gallery(), result)
    raise GalleryError(f"{store.path}: changed by other facepi commands {RETRIES} times while this change was "
                       f"made; try again")


def _check_names(gallery: Gallery, before: dict[str, str]) -> None:
    """Every route's name rules, here once: a new person's name must not read as another person's (case,
    width, look-alike letters, invisible characters: ``names.skeleton``), and every person keeps a key of
    their own (``names.person_keys``), written into the gallery's settings with the change."""
    for name in gallery.people:
        if name not in before:
            same = lookalike(name, gallery.people)
            if same is not None:
                raise Refused(f"person name {shown(name)} reads as {same!r}, who is enrolled: a new person must "
                              f"have a name that looks different")
    keys = {name: before.get(name) or new_key(name) for name in gallery.people}
    try:
        check_keys(keys)
    except ValueError as e:
        raise Refused(str(e)) from None
    gallery.meta["person_keys"] = keys


MAX_FACES = 100  # enrolled faces per person: with MAX_EVIDENCE, a person's household record stays under 1 MiB
MAX_EVIDENCE = 100  # "that wasn't X" faces kept per person: the newest; older ones go (undoable) with the change


def _sizes(g: Gallery) -> dict[str, tuple[int, int]]:
    """(faces, evidence) per person."""
    faces = g.counts()
    people = {*g.people, *(a[0] for a in g.against)}
    return {p: (faces.get(p, 0), sum(1 for a in g.against if a[0] == p)) for p in people}


def _check_sizes(gallery: Gallery, before: dict[str, tuple[int, int]]) -> None:
    """A person's faces and evidence are bounded by design (so their record is always shared with the household):
    a change that takes someone past a bound (and grows them) is refused."""
    for person, (faces, evidence) in _sizes(gallery).items():
        was = before.get(person, (0, 0))
        if faces > MAX_FACES and faces > was[0]:
            raise Refused(f"{person} would have {faces} photos; at most {MAX_FACES} are kept per person (remove some "
                          f"first: facepi gallery check --sheet, facepi gallery remove)")
        if evidence > MAX_EVIDENCE and evidence > was[1]:
            raise Refused(f"{person} would have {evidence} corrections kept; at most {MAX_EVIDENCE}")


def _forced(report: Any, force: bool, origin: str) -> dict[str, Any]:
    """Refuse a report with problems (unless the CLI forces it); the evidence for the journal."""
    if report.problems and not force:
        raise Refused("; ".join(report.problems), report.problems)
    if force and origin != "cli":
        raise Refused(f"force is refused from {origin}: only the command line may override the checks")
    return {"forced": bool(force and report.problems), "overrode": report.problems if force else [],
            "notes": report.notes, "failures": report.failures, "skipped": getattr(report, "skipped", [])}


@dataclass
class Enrolment:
    """What ``enrol`` did: the change (None: refused, nothing written), the enrolment's report (every photo
    accounted for), and the gallery settings it changed, in words."""

    done: Done | None
    report: Any
    settings: list[str]


def enrol(path: str | os.PathLike[str], name: str, pipeline: Any, photos: list[Path], origin: str = "cli",
          force: bool = False, classifier: str | None = None, target_far: float | None = None,
          largest_face: bool = False, face: int | None = None, models_dir: str | os.PathLike[str] | None = None,
          progress: Any = None) -> Enrolment:
    """Enrol ``name`` from ``photos`` with ``pipeline`` (a ``FacePipeline``): every photo through the gallery's
    checks (``facepi.identity.enrol.enroll``); refused if they find problems, unless the CLI forces it. The
    first enrolment makes the gallery; ``classifier`` / ``target_far`` change an existing gallery's settings
    (recalibrated, and said)."""
    from facepi.identity.enrol import check_fit, enroll, new_gallery, recalibrate

    name = check_name(name)
    out = Enrolment(None, None, [])

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        if current is None:
            gallery = new_gallery(pipeline, classifier or "centroid", target_far or 0.01)
        else:
            gallery = current
            if gallery.model != pipeline.embedder.model_id:
                raise wrong_model(path, gallery.model, pipeline.embedder.model_id)
            changed = {k: v for k, v in (("classifier", classifier), ("target_far", target_far))
                       if v is not None and v != gallery.meta.get(k)}
            if changed:  # applied, and said: never silently ignored
                check_fit(changed.get("classifier", gallery.meta.get("classifier", "centroid")),
                          changed.get("target_far", gallery.meta.get("target_far", 0.01)))
                gallery.meta.update(changed)
                recalibrate(gallery, models_dir)
                out.settings = ["Gallery settings changed: " + ", ".join(f"{k} = {v}" for k, v in changed.items())]
        report = out.report = enroll(gallery, pipeline, name, photos, progress, force=force,
                                     largest_face=largest_face, models_dir=models_dir, face=face)
        if not report.added:
            raise Refused("nothing to add: " + "; ".join(report.problems or report.notes or report.failures
                                                           or ["no usable photo"]), report.problems)
        detail = _forced(report, force, origin) | {"name": name, "added": report.added,
                                                   "photos": gallery.sources[-report.added:],
                                                   "largest_face": largest_face}
        return gallery, f"enrolled {report.added} photo(s) of {name}", detail, report

    try:
        out.done = _change(path, "enrol", origin, mutate)
    except Refused:
        if out.report is None:
            raise
    return out


def name_visitor(path: str | os.PathLike[str], vid: str, name: str, origin: str = "cli", force: bool = False,
                 models_dir: str | os.PathLike[str] | None = None,
                 legacy_visitors: str | os.PathLike[str] | None = None) -> Done:
    """Enrol door visitor ``vid``'s stored faces as ``name``; the visitor leaves the store in the same
    transaction. A naming must say which visitor it means: "the last one" changes while someone types."""
    from facepi.identity.enrol import enroll_crops
    from facepi.identity.visitor_book import VisitorBook
    from facepi.identity.visitors import VisitorError

    if not vid:
        raise VisitorError("a naming must say which visitor it names (e.g. V7); none given")
    if force and origin != "cli":
        raise Refused(f"force is refused from {origin}: only the command line may override the checks")
    name = check_name(name)
    book = VisitorBook(path, legacy_visitors)
    book.visitors()  # an earlier visitors.npz is imported first
    crops, embs = book.faces(vid)
    if not len(crops):
        raise VisitorError(f"{vid}: no faces stored")

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        if current is None:
            raise GalleryError(f"{Store(path).path}: no gallery to name {vid} into (enrol someone first)")
        if current.dim != embs.shape[1]:
            raise VisitorError(f"{vid} was seen with another embedding model than {current.model!r}")
        report = enroll_crops(current, name, embs, crops, [f"door-{vid}-{k + 1}" for k in range(len(crops))],
                              force, models_dir)
        if not report.added:
            raise Refused(f"{vid} not named {name}: " + "; ".join(report.problems or report.notes
                                                                  or ["nothing to add"]), report.problems)
        detail = _forced(report, force, origin) | {"visitor": vid, "name": name, "added": report.added}
        return current, f"named visitor {vid} as {name} ({report.added} door face(s))", detail, report

    def drop_visitor(con: sqlite3.Connection, cid: int) -> None:
        """The visitor leaves the store, marked as named by this change: undo brings them back."""
        if con.execute("UPDATE visitors SET named_by = ? WHERE id = ? AND named_by IS NULL", (cid, vid)).rowcount != 1:
            raise VisitorError(f"{vid}: no longer stored (forgotten, named or expired meanwhile)")

    return _change(path, "name visitor", origin, mutate, also=drop_visitor)


def name_face(path: str | os.PathLike[str], name: str, embedding: np.ndarray, crop: np.ndarray, label: str,
              origin: str = "web", models_dir: str | os.PathLike[str] | None = None) -> Done:
    """"This is NAME" on one door event: its face (embedding and crop) enrolled as ``name`` through the
    same checks as a visitor's naming (look-alike, outlier, somebody else's); never forced."""
    from facepi.identity.enrol import enroll_crops

    name = check_name(name)

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        g = _existing(current, path)
        if np.shape(embedding) != (g.dim,):
            raise GalleryError(f"{label}: a face of shape {np.shape(embedding)}, expected ({g.dim},)")
        report = enroll_crops(g, name, np.asarray(embedding, np.float32)[None], np.asarray(crop)[None], [label],
                              False, models_dir)
        if not report.added:
            raise Refused(f"{label} not named {name}: " + "; ".join(report.problems or report.notes
                                                                    or ["nothing to add"]), report.problems)
        detail = _forced(report, False, origin) | {"event": label, "name": name, "added": report.added}
        return g, f"named the face of {label} as {name}", detail, report

    return _change(path, "name face", origin, mutate)


def _recalibrated(gallery: Gallery, models_dir: str | os.PathLike[str] | None) -> Gallery:
    from facepi.identity.enrol import recalibrate

    recalibrate(gallery, models_dir)
    return gallery


def forget(path: str | os.PathLike[str], name: str, origin: str = "cli",
           models_dir: str | os.PathLike[str] | None = None) -> Done:
    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        g = _existing(current, path)
        removed = g.remove(name)
        return _recalibrated(g, models_dir), f"forgot {name} ({removed} photo(s))", {"name": name}, removed

    return _change(path, "forget", origin, mutate)


def remove_photo(path: str | os.PathLike[str], name: str, number: int, origin: str = "cli",
                 models_dir: str | os.PathLike[str] | None = None) -> Done:
    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        g = _existing(current, path)
        source = g.remove_photo(name, number)
        return (_recalibrated(g, models_dir), f"removed {name}'s photo {number} ({source})",
                {"name": name, "photo": number, "source": source}, source)

    return _change(path, "remove photo", origin, mutate)


def rename(path: str | os.PathLike[str], old: str, new: str, origin: str = "cli",
           models_dir: str | os.PathLike[str] | None = None) -> Done:
    new = check_name(new)

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        g = _existing(current, path)
        n = g.rename(old, new)
        return _recalibrated(g, models_dir), f"renamed {old} to {new} ({n} photo(s))", {"from": old, "to": new}, n

    return _change(path, "rename", origin, mutate)


CORRECTION_MAX_LOSS = 0.10  # a correction may cost NAME at most this share of their own enrolled photos


def correct(path: str | os.PathLike[str], name: str, embeddings: np.ndarray, label: str, origin: str = "cli",
            models_dir: str | os.PathLike[str] | None = None, force: bool = False,
            also: Callable[[sqlite3.Connection, int], None] | None = None) -> Done:
    """"That wasn't NAME": the faces are kept as evidence against NAME, whose accept distance tightens
    just enough to exclude them (never looser than the gallery's rule; see enrol.recalibrate), and a
    face nearer to them than to NAME is not NAME.

    A correction that would cost NAME more than CORRECTION_MAX_LOSS of their own enrolled photos is of
    NAME themself (a press on a right recognition): refused, and from the command line only forced."""
    from facepi.identity.classify import own_photos_named

    embeddings = np.atleast_2d(np.asarray(embeddings, np.float32))
    if force and origin != "cli":
        raise Refused(f"force is refused from {origin}: only the command line may override the checks")

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        g = _existing(current, path)
        if name not in g.people:
            raise GalleryError(f"{name!r} is not enrolled (enrolled: {', '.join(g.people) or 'nobody'})")
        if embeddings.shape[1] != g.dim:
            raise GalleryError(f"correction: embeddings of shape {embeddings.shape}, expected (N, {g.dim})")
        before = float((g.meta.get("person_thresholds") or {}).get(name, g.meta.get("threshold", 0.0)))
        named_before, n = own_photos_named(g, name)
        g.against += [(name, e / max(float(np.linalg.norm(e)), 1e-12), label, None) for e in embeddings]
        mine = [k for k, a in enumerate(g.against) if a[0] == name]
        dropped = set(mine[:-MAX_EVIDENCE]) if len(mine) > MAX_EVIDENCE else set()  # the oldest go: bounded
        g.against = [a for k, a in enumerate(g.against) if k not in dropped]
        _recalibrated(g, models_dir)
        after = float(g.meta["person_thresholds"][name])
        named_after, _ = own_photos_named(g, name)
        lost = named_before - named_after
        problems = [] if lost <= CORRECTION_MAX_LOSS * n else [
            f"this face looks like {name} themself: {lost} of {name}'s {n} enrolled photos would no longer be "
            f"recognised as {name} (at most {CORRECTION_MAX_LOSS:.0%} may be); not recorded"]
        if problems and not force:
            raise Refused(problems[0] + ("; if it really was someone else: facepi gallery wrong --force"
                                         if origin == "cli" else ""), problems)
        moved = f"{before:.4f} -> {after:.4f}" if abs(after - before) >= 5e-5 else f"stays {after:.4f} (already beyond)"
        return (g, f"that wasn't {name} ({label}): {name}'s accept distance {moved}, "
                   f"{named_after} of {n} enrolled photos still recognised",
                {"name": name, "label": label, "faces": len(embeddings), "accept_before": before,
                 "accept_after": after, "own_photos_named": [named_before, named_after, n],
                 "forced": bool(problems), "overrode": problems, "evidence_dropped": len(dropped)}, after)

    return _change(path, "correction", origin, mutate, also)


def wrong_event(path: str | os.PathLike[str], seq: int, run: str | None = None, name: str | None = None,
                origin: str = "cli", models_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Done:
    """"That wasn't X" for the door's recognition ``seq`` (of ``run``; None: the newest run with that seq), any
    of the last recent.EVENTS: accepted once per event (a replay is refused), never on an ``unknown`` one."""
    from facepi.identity import recent

    try:
        ev = recent.addressed(Store(path), seq, run, name)
    except GalleryError as e:
        raise Refused(str(e)) from None
    return correct(path, ev.person, ev.embedding[None], f"event {seq} at {ev.camera}, {ev.at}", origin, models_dir,
                   force, lambda con, cid: recent.mark_corrected(con, ev.run, ev.seq, cid))  # once, in its change


def wrong_last(path: str | os.PathLike[str], name: str, origin: str = "cli",
               models_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Done:
    """"That wasn't NAME" for the daemon's last recognition of NAME (Home Assistant's "Wrong name")."""
    store = Store(path)
    last = last_recognition(store, name)
    if last is None:
        raise GalleryError(f"no recognition of {name!r} recorded yet (the daemon records the last face it "
                           f"named per person)")
    at, camera, emb = last
    done = correct(path, name, emb[None], f"recognition at {camera}, {at}", origin, models_dir, force)
    with store.connect(write=True) as con:
        con.execute("DELETE FROM recent WHERE person = ? AND at = ?", (name, at))
    return done


def replace(path: str | os.PathLike[str], gallery: Gallery, what: str = "train", origin: str = "cli",
            summary: str | None = None) -> Done:
    """A whole new gallery (``facepi train``): one change, so it can be undone too."""
    gallery.row_ids = [None] * len(gallery.labels)

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        return (gallery, summary or f"{what}: {len(gallery.people)} people, {len(gallery.labels)} photos",
                {"people": gallery.counts()}, None)

    return _change(path, what, origin, mutate)


def apply_record(path: str | os.PathLike[str], person: str, faces: list[tuple[str, np.ndarray, str, str]] | None,
                 blank: Gallery | None = None, summary: str = "", origin: str = "household",
                 models_dir: str | os.PathLike[str] | None = None,
                 also: Callable[[sqlite3.Connection, int], None] | None = None) -> Done:
    """Replace ``person``'s rows with ``faces`` ((kind 'face' | 'against', embedding, source, hash) each), or
    remove them (``faces`` None): a signed household record (facepi.identity.sync), recalibrated and journaled.

    The signature is the authorisation: the member-match checks of a local enrol are not run again (the sending
    facepi ran them), the structural ones are (the name, the model's dimension). ``blank``: the empty gallery
    to start from on a facepi with no gallery yet. ``also``: the household table's update, in the same
    transaction."""
    if check_name(person) != person:
        raise Refused(f"person name {person!r} is not as enrolled (NFC, trimmed)")

    def mutate(current: Gallery | None) -> tuple[Gallery, str, dict[str, Any], Any]:
        if current is None:
            if blank is None:
                raise GalleryError(f"{Store(path).path}: no gallery yet to apply a household record to")
            current = Gallery(blank.model, blank.dim, meta=dict(blank.meta))
        g = current
        removed = g.remove(person) if person in g.people else 0
        if faces is not None:
            rows = [f for f in faces if f[0] == "face"]
            for kind, emb, _source, _hash in faces:
                if kind not in ("face", "against") or np.shape(emb) != (g.dim,):
                    raise Refused(f"{person}: a household row of kind {kind!r}, shape {np.shape(emb)}; "
                                  f"expected face/against, ({g.dim},)")
            if rows:
                g.add(person, np.stack([np.asarray(f[1], np.float32) for f in rows]), [f[2] for f in rows],
                      [f[3] for f in rows])
            g.against += [(person, np.asarray(f[1], np.float32), f[2], None) for f in faces if f[0] == "against"]
        text = summary or (f"household: {person} ({len(faces)} row(s))" if faces is not None else
                           f"household: forgot {person} ({removed} photo(s))")
        detail = {"name": person, "removed": removed, "added": 0 if faces is None else len(faces)}
        return _recalibrated(g, models_dir), text, detail, None

    return _change(path, "household", origin, mutate, also=also)


def undo(path: str | os.PathLike[str], origin: str = "cli") -> tuple[Change, Change]:
    store = open_store(path)
    if not store.path.exists():
        raise GalleryError(f"{store.path}: nothing to undo (no change recorded yet)")
    return store.undo(origin)


def _existing(current: Gallery | None, path: str | os.PathLike[str]) -> Gallery:
    if current is None:
        raise GalleryError(f"{Path(path)}: no gallery yet (facepi train or facepi enroll makes one)")
    return current
