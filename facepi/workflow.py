"""The seed's workflow as a library: align a dataset, train a gallery, classify, enrol.

The CLI (``facepi align|train|classify|enroll|forget|people``) is a thin layer
over these functions; the daemon uses ``Recognizer``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi.fileio import sha256_file
from facepi.identity import classify
from facepi.identity.gallery import Gallery, GalleryError, check_name, wrong_model
from facepi.vision import runtime
from facepi.vision.detect import Detector, DetectorParams
from facepi.vision.embed import Embedder
from facepi.vision.faces import DECODE_PIXELS, FacePipeline, PhotoFaces
from facepi.vision.images import IMAGE_SUFFIXES, ImageError, list_images, people_folders, read_photo

Progress = Callable[[int, int], None]


def load_pipeline(models_dir: str | os.PathLike[str] | None = None, embedder: str | None = None,
                  threads: int = 0, mode: str | None = None, margin: int | None = None,
                  detector_params: DetectorParams | None = None, embed_batch: int = 16) -> FacePipeline:
    return FacePipeline(Detector(models_dir, detector_params, threads),
                        Embedder(models_dir, embedder, threads, embed_batch), mode, margin)


# ---------------------------------------------------------------- align

@dataclass
class AlignReport:
    total: int = 0
    aligned: int = 0
    failures: list[str] = field(default_factory=list)


def align_dataset(pipeline: FacePipeline, input_dir: Path, output_dir: Path, multiple: bool = False,
                  progress: Progress | None = None) -> AlignReport:
    """Like the seed's align_dataset_mtcnn.py: one PNG crop per face, a bounding-box file."""
    folders = people_folders(input_dir)
    report = AlignReport(total=sum(len(v) for v in folders.values()))
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    done = 0
    for person, photos in folders.items():
        (output_dir / person).mkdir(exist_ok=True)
        for path in photos:
            done += 1
            result = pipeline.photo(path, "all" if multiple else "central", accept_aligned=False, embed=False)
            if result.error:
                report.failures.append(result.error)
            for i, face in enumerate(result.faces):
                name = f"{path.stem}.png" if len(result.faces) == 1 else f"{path.stem}_{i}.png"
                out = output_dir / person / name
                ok, png = cv2.imencode(".png", cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR))
                if not ok:
                    report.failures.append(f"{out}: could not encode PNG")
                    continue
                tmp = out.with_name(f".{out.name}.tmp")
                tmp.write_bytes(png.tobytes())
                tmp.replace(out)
                x1, y1, x2, y2 = (int(v / result.scale) for v in face.box[:4])  # in the stored photo
                lines.append(f"{out} {x1} {y1} {x2} {y2}")
            if result.faces:
                report.aligned += 1
            if progress:
                progress(done, report.total)
    (output_dir / "bounding_boxes.txt").write_text("".join(line + "\n" for line in lines))
    return report


# ---------------------------------------------------------------- gallery

def photos_of(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand photo files and folders; name what is not a photo."""
    photos, problems = [], []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                problems.append(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            photos.extend(found)
        elif p.is_file():
            photos.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return photos, problems


def embed_photos(pipeline: FacePipeline, photos: list[Path], progress: Progress | None = None,
                 start: int = 0, total: int | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings of the one (central) face in each photo; failures named."""
    embs, used, failures = [], [], []
    for i, path in enumerate(photos):
        r = pipeline.photo(path)
        if r.error:
            failures.append(r.error)
        else:
            embs.append(r.embeddings[0])
            used.append(path.name)
        if progress:
            progress(start + i + 1, total or len(photos))
    dim = pipeline.embedder.dim
    return (np.stack(embs) if embs else np.empty((0, dim), np.float32)), used, failures


def new_gallery(pipeline: FacePipeline, kind: str, target_far: float) -> Gallery:
    check_fit(kind, target_far)
    e = pipeline.embedder
    return Gallery(e.model_id, e.dim, meta={
        "classifier": kind, "target_far": target_far, "embedder": e.file, "precision": e.precision,
        "alignment": pipeline.mode, "margin": pipeline.margin})


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
    gallery.meta["calibration"] = classify.calibration_dict(cal)
    gallery.meta["person_thresholds"] = classify.person_thresholds(gallery, cal.threshold)
    return cal


def train(pipeline: FacePipeline, data_dir: Path, kind: str = "centroid",
          target_far: float = classify.DEFAULT_TARGET_FAR, progress: Progress | None = None,
          models_dir: str | os.PathLike[str] | None = None) -> tuple[Gallery, list[str]]:
    """Like the seed's ``classifier.py TRAIN``: one folder per person, raw photos or aligned crops."""
    folders = people_folders(data_dir)
    if not folders:
        raise GalleryError(f"{data_dir}: no person folders (expected DATA_DIR/<person>/<photos>)")
    for person in folders:
        check_name(person)
    gallery = new_gallery(pipeline, kind, target_far)
    failures: list[str] = []
    total = sum(len(v) for v in folders.values())
    done = 0
    for person, photos in folders.items():
        if not photos:
            failures.append(f"{data_dir / person}: no images")
            continue
        embs, used, failed = embed_photos(pipeline, photos, progress, done, total)
        done += len(photos)
        failures += failed
        if len(embs):
            gallery.add(person, embs, [f"{person}/{u}" for u in used])
        else:
            failures.append(f"{person}: no usable photo, not enrolled")
    if not gallery.people:
        raise GalleryError(f"{data_dir}: no face found in any photo; nothing to train")
    recalibrate(gallery, models_dir or pipeline.embedder.model.spec.path.parent)
    return gallery, failures


# ---------------------------------------------------------------- enrol, with the gallery's health checked

DUPLICATE = 0.03  # cosine distance under which two photos are the same shot (resized, recompressed)
OUTLIER_FAR = 0.05  # an enrol photo matches its person worse than this share of strangers do: an outlier


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
    import tempfile

    from facepi.vision.faces import from_the_left, preview_png

    try:
        rgb, _ = read_photo(r.path, DECODE_PIXELS)
        fd, preview = tempfile.mkstemp(prefix=f"facepi-faces-{r.path.stem}-", suffix=".png")
        with os.fdopen(fd, "wb") as f:  # 0600: faces are personal
            f.write(preview_png(rgb, r.boxes))
        shown = f"the faces are numbered in {preview}"
    except (ImageError, OSError, ValueError) as e:
        shown = f"no preview ({e})"
    which = "a small face" if r.chosen is None else from_the_left(r.chosen, n)
    return (f"{r.path}: {n} faces; {which} (the most central) would be used. "
            f"Choose one with --face N, counted from the left ({shown}), or --largest-face")


def enroll_crops(gallery: Gallery, name: str, embeddings: np.ndarray, crops: np.ndarray, labels: list[str],
                 force: bool = False, models_dir: str | os.PathLike[str] | None = None) -> EnrolReport:
    """Enrol faces that are already aligned and embedded (a door visitor's best crops), with the same
    checks as ``enroll``. ``labels`` name each face in messages and in the gallery's sources."""
    import hashlib

    name = check_name(name)
    report = EnrolReport(name)
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
                     [f"{name}/{labels[i]}" for i in keep], hashes, report, force, models_dir, None)


def name_visitor(store_path: Path, vid: str, gallery_path: Path, name: str, force: bool = False,
                 models_dir: str | os.PathLike[str] | None = None, origin: str = "cli") -> tuple[str, EnrolReport]:
    """Enrol door visitor ``vid``'s stored crops as ``name`` through the one guarded path
    (``facepi.identity.family.name_visitor``); ``store_path`` is an earlier ``visitors.npz`` to import, if any.
    Refusals come back as the report's problems (nothing changed)."""
    from facepi.identity import family

    try:
        done = family.name_visitor(gallery_path, vid, name, origin, force, models_dir, store_path)
    except family.Refused as e:
        report = EnrolReport(check_name(name))
        report.problems = e.problems or [str(e)]
        return vid, report
    return vid, done.result


def add_faces(gallery: Gallery, name: str, x: np.ndarray, crops: list[np.ndarray], used: list[str],
              sources: list[str], hashes: list[str], report: EnrolReport, force: bool,
              models_dir: str | os.PathLike[str] | None,
              operating_points: classify.OperatingPoints | None) -> EnrolReport:
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
    _matches_enrolment(gallery, name, x, used, report)
    _same_person_elsewhere(gallery, name, x, float(gallery.meta["threshold"]), report)
    _outliers(gallery, name, x, used, float(gallery.meta["outlier_distance"]), report)
    if report.problems and not force:
        return report
    gallery.add(name, x, sources, hashes, np.stack(crops))
    report.added = len(x)
    report.calibration = recalibrate(gallery, models_dir, operating_points)
    return report


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


def _matches_enrolment(gallery: Gallery, name: str, x: np.ndarray, used: list[str], report: EnrolReport) -> None:
    """New faces for someone already enrolled must match *their existing enrolment* at the gallery's own
    accept rule: a mean that includes the newcomers would let five photos of somebody else vouch for
    each other (an impostor's crops sent as "alice" from any broker client)."""
    if name not in gallery.people:
        return
    idx = gallery.people.index(name)
    mine = gallery.embeddings[gallery.labels == idx]
    if not len(mine):
        return
    c = mine.mean(axis=0)
    c /= max(float(np.linalg.norm(c)), 1e-12)
    t = float((gallery.meta.get("person_thresholds") or {}).get(name, gallery.meta["threshold"]))
    for i, e in enumerate(x):
        d = 1.0 - float(e @ c)
        if d > t:
            report.problems.append(f"{used[i]}: does not match {name}'s enrolled photos (distance {d:.2f}, "
                                   f"{name} is recognised up to {t:.2f}): somebody else, or a poor photo")


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


# ---------------------------------------------------------------- recognise

class Recognizer:
    """A gallery, its classifier and the matching pipeline: embeddings -> predictions."""

    def __init__(self, gallery_path: Path, models_dir: str | os.PathLike[str] | None = None,
                 embedder: str | None = None, threads: int = 0,
                 detector_params: DetectorParams | None = None, pipeline: FacePipeline | None = None,
                 embed_batch: int = 16) -> None:
        self.gallery = Gallery.load(gallery_path)  # read once: its settings choose the pipeline
        meta = self.gallery.meta
        self.pipeline = pipeline or load_pipeline(
            models_dir, embedder or meta.get("embedder"), threads, meta.get("alignment"),
            meta.get("margin"), detector_params, embed_batch)
        if self.gallery.model != self.pipeline.embedder.model_id:
            raise wrong_model(gallery_path, self.gallery.model, self.pipeline.embedder.model_id)
        self.classifier = classify.Classifier(self.gallery, meta.get("classifier", "centroid"),
                                              float(meta["threshold"]))

    def predict(self, embeddings: np.ndarray) -> list[classify.Prediction]:
        return self.classifier.predict(embeddings)


@dataclass
class ClassifyResult:
    path: str
    truth: str | None
    name: str | None  # None: no face
    score: float | None
    distance: float | None
    error: str | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.truth is None else self.name == self.truth


def classify_folder(recognizer: Recognizer, data_dir: Path, progress: Progress | None = None
                    ) -> tuple[list[ClassifyResult], float | None]:
    """Classify photos in DATA_DIR/<person>/ (accuracy known) or directly in DATA_DIR.

    A folder named after somebody not enrolled expects ``unknown``: that is what a
    door camera should say to them. Photos with no face count as wrong.
    """
    if not data_dir.is_dir():
        raise ImageError(f"{data_dir}: not a folder")
    folders = people_folders(data_dir)
    items: list[tuple[Path, str | None]] = [(p, None) for p in list_images(data_dir)]
    for person, photos in folders.items():
        truth = person if person in recognizer.gallery.people else classify.UNKNOWN
        items += [(p, truth) for p in photos]
    if not items:
        raise ImageError(f"{data_dir}: no images (looked in it and its sub-folders)")
    results = []
    for i, (path, truth) in enumerate(items):
        r = recognizer.pipeline.photo(path)
        if r.error:
            results.append(ClassifyResult(str(path), truth, None, None, None, r.error))
        else:
            p = recognizer.predict(r.embeddings[:1])[0]
            results.append(ClassifyResult(str(path), truth, p.name, p.score, p.distance))
        if progress:
            progress(i + 1, len(items))
    judged = [r for r in results if r.truth is not None]
    accuracy = (sum(bool(r.correct) for r in judged) / len(judged)) if judged else None
    return results, accuracy


def people_summary(gallery: Gallery) -> dict[str, Any]:
    return {"model": gallery.model, "people": gallery.counts(), **{
        k: gallery.meta.get(k) for k in ("classifier", "threshold", "alignment", "embedder")},
        "calibration": gallery.meta.get("calibration")}
