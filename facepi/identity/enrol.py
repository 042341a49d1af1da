"""The checks a new face must pass before it joins the gallery, and the gallery's calibration.

Every change to who is family goes through ``facepi.identity.family``; the changes
that add faces (enrolling photos, naming a door visitor) call ``add_faces`` here:
no duplicate shots, no photo of someone enrolled under another name, no outlier, and
new faces for someone enrolled must match their existing enrolment. Then the
gallery is recalibrated with its model's measured rule.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepi.fileio import sha256_file
from facepi.identity import classify
from facepi.identity.gallery import Gallery, check_name
from facepi.vision import runtime
from facepi.vision.faces import DECODE_PIXELS, FacePipeline, PhotoFaces
from facepi.vision.images import ImageError, read_photo
from facepi.vision.photos import Progress, photos_of


def new_gallery(pipeline: FacePipeline, kind: str, target_far: float) -> Gallery:
    check_fit(kind, target_far)
    e = pipeline.embedder
    return Gallery(e.model_id, e.dim, meta={
        "classifier": kind, "target_far": target_far, "embedder": e.file, "precision": e.precision,
        "alignment": pipeline.mode, "margin": pipeline.margin,
        "person_keys": {}})  # made by this facepi: every person gets a new key (names.person_keys)


def check_fit(kind: str, target_far: float) -> None:
    if kind not in classify.CLASSIFIERS:
        raise ValueError(f"classifier {kind!r}: expected one of {classify.CLASSIFIERS}")
    classify.require(kind)
    if not 0.0 < target_far < 0.5:
        raise ValueError(f"target FAR {target_far}: expected a rate between 0 and 0.5, e.g. 0.01")


def recalibrate(gallery: Gallery, models_dir: str | os.PathLike[str] | None = None,
                operating_points: classify.OperatingPoints | None = None) -> classify.Calibration:
    """Choose the gallery's threshold with its model's measured rule (see facepi.identity.classify)."""
    entry = runtime.model_spec(gallery.meta["embedder"], models_dir).entry
    points = operating_points or classify.OperatingPoints.from_manifest(entry)
    default = (entry.get("default_threshold") or {}).get("distance")
    target = float(gallery.meta.get("target_far", classify.DEFAULT_TARGET_FAR))
    cal = classify.calibrate(gallery, points, target, default)
    gallery.meta["threshold"] = cal.threshold
    # A photo farther than this from its person's others resembles them less than 1 stranger in 20 does.
    gallery.meta["outlier_distance"] = points.threshold(OUTLIER_FAR) if points else cal.threshold + 0.1
    # The faces of one naming agree when each is nearer the others than 1 stranger in 1/AGREE_FAR would be.
    gallery.meta["agree_distance"] = points.threshold(AGREE_FAR) if points else cal.threshold
    gallery.meta["calibration"] = classify.calibration_dict(cal)
    gallery.meta["person_thresholds"] = classify.person_thresholds(gallery, cal.threshold)
    return cal


DUPLICATE = classify.DUPLICATE  # the same shot (resized, recompressed); beside the rules: the page reads it too
OUTLIER_FAR = 0.05  # an enrol photo matches its person worse than this share of strangers do: an outlier
DOOR = "door-"  # the start of a door-named face's source (after "NAME/"): not part of the anchor
LEARN = 0.6  # a door-named face of someone enrolled must be within this share of their accept distance
DRIFT = 0.25  # door namings may move a template this share of the person's accept distance (bench/drift.py)
AGREE_FAR = 0.01  # the faces of one naming must agree at this per-comparison FAR (bench/drift.py)


@dataclass
class EnrolReport:
    """What ``enroll`` did. ``problems`` refuse the enrolment unless forced; ``notes`` are said only;
    ``skipped`` name photos left out by a check while the person's other photos went in."""

    name: str
    added: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # unreadable photos, photos without a face
    calibration: classify.Calibration | None = None
    skipped: list[str] = field(default_factory=list)


def enroll(gallery: Gallery, pipeline: FacePipeline, name: str, paths: list[Path],
           progress: Progress | None = None, force: bool = False, largest_face: bool = False,
           models_dir: str | os.PathLike[str] | None = None,
           operating_points: classify.OperatingPoints | None = None, face: int | None = None) -> EnrolReport:
    """Add ``name``'s photos to ``gallery`` in memory, checking the gallery's health first.

    A photo the checks find ambiguous is skipped and named, and the person's other photos
    go in: a photo with several faces (unless ``largest_face`` or ``face``: the Nth from
    the left; a numbered preview PNG is written for it), one already enrolled under
    another name, one far from the person's others or not matching their enrolment. One
    doubtful photo in a phone's folder is what a household has; refusing them all for it
    taught nobody anything. The whole enrolment is still refused (nothing added) when
    more than half the photos are doubtful (the wrong folder, or somebody else's faces)
    and when the person as a whole matches someone enrolled. ``force``: everything goes in.
    Skipped and said: exact or near-duplicate photos, photos enrolled before
    (re-enrolling is idempotent). Photos that cannot be read or show no face are
    failures: named, and the rest go on.
    """
    name = check_name(name)
    models_dir = models_dir or pipeline.embedder.model.spec.path.parent
    report = EnrolReport(name)
    photos, report.failures = photos_of(paths)
    known = dict(zip(gallery.hashes, gallery.labels.tolist(), strict=True))
    select: str | int = face if face is not None else "largest" if largest_face else "central"
    embs, crops, used, hashes = [], [], [], []
    doubts: dict[str, str] = {}  # photo -> why it is ambiguous, found while reading the photos
    for i, path in enumerate(photos):
        if progress:
            progress(i + 1, len(photos))
        try:
            digest = sha256_file(path)
        except OSError as e:
            report.failures.append(f"{path}: cannot read ({e.strerror})")
            continue
        if face is not None:  # one face of a group photo: mum's face 2 is not dad's face 1 of the same file
            digest = hashlib.sha256(f"{digest} face {face}".encode()).hexdigest()
        if digest in hashes:
            report.notes.append(f"{path}: the same file as {photos[hashes.index(digest)]}; skipped")
            continue
        if digest in known:
            owner = gallery.people[known[digest]]
            if owner == name:
                report.notes.append(f"{path}: already enrolled as {owner}; skipped")
            else:  # never added twice, not even forced; it counts as a doubtful photo
                doubts[str(path)] = f"{path}: already enrolled as {owner}"
            continue
        r = pipeline.photo(path, select, accept_aligned=True)
        if r.error:
            report.failures.append(r.error)
            continue
        if r.others and face is None and not largest_face:
            doubts[str(path)] = _several_faces(r, len(r.boxes))
        embs.append(r.embeddings[0])
        crops.append(r.faces[0].crop)
        used.append(path)
        hashes.append(digest)
    if not embs:
        report.problems = list(doubts.values())
        return report
    x, names = np.stack(embs), [str(u) for u in used]
    judged = len(used) + sum(1 for d in doubts if d not in names)  # photos with a face, or already enrolled
    while True:  # the checks again on what is left: leaving a photo out changes the others' distances
        keep = [i for i in range(len(used)) if force or names[i] not in doubts]
        trial = EnrolReport(name, notes=list(report.notes), failures=list(report.failures))
        if force:
            trial.problems = list(doubts.values())
        if keep:
            add_faces(gallery, name, x[keep], [crops[i] for i in keep], [names[i] for i in keep],
                      [f"{name}/{used[i].name}" for i in keep], [hashes[i] for i in keep], trial, force,
                      models_dir, operating_points)
        if force or trial.added or (keep and not trial.problems):
            trial.skipped = [] if force else list(doubts.values())
            return trial
        # add_faces names a photo's problem "PHOTO: ..."; a problem that names no photo is the person's
        whose = [next((n for n in names if m.startswith(n + ": ")), None) for m in trial.problems]
        new: dict[str, str] = {}
        for n, m in zip(whose, trial.problems, strict=True):
            if n is not None and n not in doubts:
                new[n] = f"{new[n]}; {m.removeprefix(n + ': ')}" if n in new else m
        if None in whose or not new or len(doubts) + len(new) > judged / 2:
            # a problem of the person as a whole, or mostly doubtful photos: refused, every reason said
            trial.problems = list(doubts.values()) + trial.problems
            return trial
        doubts |= new


def _several_faces(r: PhotoFaces, n: int) -> str:
    """Why a group photo is not enrolled as it is, in words, with a numbered preview to choose from."""
    import hashlib
    import tempfile

    from facepi.fileio import atomic_write_bytes
    from facepi.vision.faces import from_the_left, preview_png

    try:
        rgb, _ = read_photo(r.path, DECODE_PIXELS)
        # one preview per photo, written again on every try (they used to pile up in /tmp); 0600: faces
        # are personal; replaced by rename, so a link planted under its name is replaced, never followed
        tag = hashlib.sha256(str(r.path.resolve()).encode()).hexdigest()[:10]
        preview = Path(tempfile.gettempdir()) / f"facepi-faces-{os.getuid()}-{tag}-{r.path.stem[:40]}.png"
        atomic_write_bytes(preview, preview_png(rgb, r.boxes), mode=0o600)
        shown = f"the faces are numbered in {preview}"
    except (ImageError, OSError, ValueError) as e:
        shown = f"no preview ({e})"
    which = "a small face" if r.chosen is None else from_the_left(r.chosen, n)
    return (f"{r.path}: {n} faces; {which} (the most central) would be used. "
            f"Choose one with --face N, counted from the left ({shown}), or --largest-face")


def enroll_crops(gallery: Gallery, name: str, embeddings: np.ndarray, crops: np.ndarray, labels: list[str],
                 force: bool = False, models_dir: str | os.PathLike[str] | None = None,
                 one_person: bool = True) -> EnrolReport:
    """Enrol faces that are already aligned and embedded (a door visitor's best crops), with the same
    checks as ``enroll``. ``labels`` name each face in messages and in the gallery's sources.

    First the faces must agree with each other (``_one_person``; ``one_person=False`` is the rule before it,
    for bench/drift.py): a visit that shows two people (a photo of a member held up beside the attacker's
    own face, one track) is refused before the check against the member, which each face could pass alone
    while the visit's other faces move the member's template."""
    name = check_name(name)
    report = EnrolReport(name)
    if one_person:  # and anchored (see _matches_enrolment)
        if "agree_distance" not in gallery.meta:
            recalibrate(gallery, models_dir)
        _one_person(embeddings, labels, float(gallery.meta["agree_distance"]), report)
        if report.problems and not force:  # only the command line forces (family._forced)
            return report
    known = dict(zip(gallery.hashes, gallery.labels.tolist(), strict=True))
    keep, hashes = [], []
    for i, crop in enumerate(crops):
        digest = hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest()
        if digest in known:
            owner = gallery.people[known[digest]]
            (report.notes if owner == name else report.problems).append(
                f"{labels[i]}: already enrolled as {owner}" + ("; skipped" if owner == name else ""))
            continue
        keep.append(i)
        hashes.append(digest)
    if not keep:
        return report
    return add_faces(gallery, name, embeddings[keep], [crops[i] for i in keep], [labels[i] for i in keep],
                     [f"{name}/{labels[i]}" for i in keep], hashes, report, force, models_dir, None,
                     anchored=one_person, door=True)


def add_faces(gallery: Gallery, name: str, x: np.ndarray, crops: list[np.ndarray], used: list[str],
              sources: list[str], hashes: list[str], report: EnrolReport, force: bool,
              models_dir: str | os.PathLike[str] | None,
              operating_points: classify.OperatingPoints | None, anchored: bool = True,
              door: bool = False) -> EnrolReport:
    """The gallery's health checks, then the faces added (unless a problem and not ``force``)."""
    kept: list[str | None] = list(used)
    _near_duplicates(gallery, name, x, kept, report)
    keep = [i for i in range(len(kept)) if kept[i] is not None]
    x, crops = x[keep], [crops[i] for i in keep]
    used, sources, hashes = [used[i] for i in keep], [sources[i] for i in keep], [hashes[i] for i in keep]
    if not len(x):
        return report
    if "outlier_distance" not in gallery.meta:
        recalibrate(gallery, models_dir, operating_points)
    _matches_enrolment(gallery, name, x, used, report, anchored, LEARN if door and anchored else 1.0)
    if anchored:
        _drift(gallery, name, x, report)
    _same_person_elsewhere(gallery, name, x, float(gallery.meta["threshold"]), report)
    _outliers(gallery, name, x, used, float(gallery.meta["outlier_distance"]), report)
    if report.problems and not force:
        return report
    gallery.add(name, x, sources, hashes, np.stack(crops))
    report.added = len(x)
    report.calibration = recalibrate(gallery, models_dir, operating_points)
    return report


def _one_person(x: np.ndarray, labels: list[str], limit: float, report: EnrolReport) -> None:
    """The faces of one naming are one person: each within ``limit`` of the mean of the others (a face of
    someone else, or a visit mixing two people, is named; the naming is refused whole, never split, since the
    household named the face it saw and cannot say which of two people that was)."""
    if len(x) < 2:
        return
    total = x.sum(axis=0)
    far = []
    for i, e in enumerate(x):
        rest = total - e
        d = 1.0 - float(e @ rest) / max(float(np.linalg.norm(rest)), 1e-12)
        if d > limit:
            far.append(f"{labels[i]} ({d:.2f})")
    if far:
        report.problems.append(f"the visit's faces are not one person: {', '.join(far)} far from the visit's other "
                               f"faces (one person's faces agree within {limit:.2f}); not named")


def _near_duplicates(gallery: Gallery, name: str, x: np.ndarray, used: list[str | None],
                     report: EnrolReport) -> None:
    """Drop (set to None in ``used``) photos that are the same shot as an enrolled or an earlier one."""
    for i in range(len(x)):
        if len(gallery.labels):
            d = 1.0 - gallery.embeddings @ x[i]
            j = int(d.argmin())
            if d[j] < DUPLICATE:
                owner = gallery.people[gallery.labels[j]]
                msg = f"{used[i]}: the same shot as {gallery.sources[j]} (distance {d[j]:.3f})"
                if owner == name:
                    report.notes.append(msg + "; skipped")
                else:
                    report.problems.append(msg + f", enrolled as {owner}")
                used[i] = None
                continue
        for j in range(i):
            if used[j] is not None and 1.0 - float(x[j] @ x[i]) < DUPLICATE:
                report.notes.append(f"{used[i]}: the same shot as {used[j]} "
                                    f"(distance {1.0 - float(x[j] @ x[i]):.3f}); skipped")
                used[i] = None
                break


def _matches_enrolment(gallery: Gallery, name: str, x: np.ndarray, used: list[str], report: EnrolReport,
                       anchored: bool = True, margin: float = 1.0) -> None:
    """New faces for someone already enrolled must match *their existing enrolment* at the gallery's own
    accept rule: a mean that includes the newcomers would let five photos of somebody else vouch for
    each other (an impostor's crops sent as "alice" from any broker client).

    ``anchored``: their enrolment *from photos* where they have any, not the faces named at the door since:
    against a template that door namings move, each naming could move it further (a visit with a morph of
    the member and the attacker's face, named five times, had the attacker's unseen photos named as the
    member: bench/drift.py). ``margin``: a share of their accept distance a face must be within (a door naming:
    ``LEARN``; a face that only just passes is as likely a look-alike as them)."""
    if name not in gallery.people:
        return
    idx = gallery.people.index(name)
    rows = np.flatnonzero(gallery.labels == idx)
    anchor = [r for r in rows if not gallery.sources[r].rsplit("/", 1)[-1].startswith(DOOR)]
    mine = gallery.embeddings[anchor if anchored and anchor else rows]
    if not len(mine):
        return
    c = mine.mean(axis=0)
    c /= max(float(np.linalg.norm(c)), 1e-12)
    t = float((gallery.meta.get("person_thresholds") or {}).get(name, gallery.meta["threshold"]))
    t *= margin
    for i, e in enumerate(x):
        d = 1.0 - float(e @ c)
        if d > t:
            report.problems.append(f"{used[i]}: does not match {name}'s enrolled photos (distance {d:.2f}, "
                                   f"{name} is {'learnt from the door' if margin < 1 else 'recognised'} up to "
                                   f"{t:.2f}): somebody else, or a poor photo")


def _drift(gallery: Gallery, name: str, x: np.ndarray, report: EnrolReport) -> None:
    """Faces named at the door may widen a template, not move it: with them, the person's mean must stay within
    ``DRIFT`` x their accept distance of the mean of their photos (genuine door faces scatter around it; a
    morph pulls every time in the same direction, toward the attacker: bench/drift.py)."""
    if name not in gallery.people:
        return
    rows = np.flatnonzero(gallery.labels == gallery.people.index(name))
    anchor = [r for r in rows if not gallery.sources[r].rsplit("/", 1)[-1].startswith(DOOR)]
    if not anchor:
        return
    a = gallery.embeddings[anchor].mean(axis=0)
    a /= max(float(np.linalg.norm(a)), 1e-12)
    c = np.concatenate([gallery.embeddings[rows], x]).mean(axis=0)
    c /= max(float(np.linalg.norm(c)), 1e-12)
    t = float((gallery.meta.get("person_thresholds") or {}).get(name, gallery.meta["threshold"]))
    d = 1.0 - float(a @ c)
    if d > DRIFT * t:
        report.problems.append(f"these faces would move {name}'s template {d:.3f} from {name}'s enrolled photos "
                               f"(at most {DRIFT * t:.3f}): too unlike them to learn from the door; enrol photos "
                               f"of {name} from the command line instead")


def _same_person_elsewhere(gallery: Gallery, name: str, x: np.ndarray, threshold: float,
                           report: EnrolReport) -> None:
    """A new person whose photos match someone enrolled: one person under two names?"""
    others = [p for p in gallery.people if p != name]
    if not others:
        return
    c = x.mean(axis=0)
    c /= np.linalg.norm(c)
    idx = [gallery.people.index(p) for p in others]
    cents = classify.unit_centroids(gallery.embeddings, gallery.labels, len(gallery.people))[idx]
    d = 1.0 - cents @ c
    j = int(d.argmin())
    if d[j] <= threshold:
        report.problems.append(f"{name} looks like {others[j]} (distance {d[j]:.2f}, the threshold is "
                               f"{threshold:.2f}): the same person under two names?")


def _outliers(gallery: Gallery, name: str, x: np.ndarray, used: list[str], limit: float,
              report: EnrolReport) -> None:
    """A photo far from the person's other photos is probably someone else (Frigate drops such photos)."""
    mine = gallery.embeddings[gallery.labels == gallery.people.index(name)] if name in gallery.people \
        else np.empty((0, x.shape[1]), np.float32)
    allx = np.concatenate([mine, x])
    if len(allx) < 3:
        return  # with two photos, neither can be told to be the odd one
    total = allx.sum(axis=0)
    for i, e in enumerate(x):
        rest = total - e
        d = 1.0 - float(e @ rest) / float(np.linalg.norm(rest))
        if d > limit:
            report.problems.append(f"{used[i]}: far from {name}'s other photos (distance {d:.2f}; beyond "
                                   f"{limit:.2f}, 1 stranger in 20 matches better): probably someone else, "
                                   f"or a poor photo")
