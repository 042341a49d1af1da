"""The seed's workflow as a library: align a dataset, train a gallery, classify, enrol.

The CLI (``facepi align|train|classify|enroll|forget|people``) is a thin layer
over these functions; the daemon uses ``Recognizer``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi import classify
from facepi.detect import Detector, DetectorParams
from facepi.embed import Embedder
from facepi.faces import FacePipeline
from facepi.gallery import Gallery, GalleryError
from facepi.images import IMAGE_SUFFIXES, ImageError, list_images, people_folders

Progress = Callable[[int, int], None]


def load_pipeline(models_dir: str | os.PathLike[str] | None = None, embedder: str | None = None,
                  threads: int = 2, mode: str | None = None, margin: int | None = None,
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
            result = pipeline.photo(path, multiple=multiple, accept_aligned=False, embed=False)
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
                x1, y1, x2, y2 = (int(v) for v in face.box[:4])
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
    if kind not in classify.CLASSIFIERS:
        raise ValueError(f"classifier {kind!r}: expected one of {classify.CLASSIFIERS}")
    e = pipeline.embedder
    return Gallery(e.model_id, e.dim, meta={
        "classifier": kind, "target_far": target_far, "embedder": e.file, "precision": e.precision,
        "alignment": pipeline.mode, "margin": pipeline.margin})


def recalibrate(gallery: Gallery, default_threshold: float | None) -> classify.Calibration:
    target = float(gallery.meta.get("target_far", classify.DEFAULT_TARGET_FAR))
    cal = classify.calibrate(gallery, default_threshold, target)
    gallery.meta["threshold"] = cal.threshold
    gallery.meta["calibration"] = classify.calibration_dict(cal)
    return cal


def train(pipeline: FacePipeline, data_dir: Path, kind: str = "centroid",
          target_far: float = classify.DEFAULT_TARGET_FAR, progress: Progress | None = None
          ) -> tuple[Gallery, list[str]]:
    """Like the seed's ``classifier.py TRAIN``: one folder per person, raw photos or aligned crops."""
    folders = people_folders(data_dir)
    if not folders:
        raise GalleryError(f"{data_dir}: no person folders (expected DATA_DIR/<person>/<photos>)")
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
    recalibrate(gallery, pipeline.embedder.default_threshold)
    return gallery, failures


def enroll(gallery: Gallery, pipeline: FacePipeline, name: str, paths: list[Path],
           progress: Progress | None = None) -> tuple[int, list[str]]:
    photos, problems = photos_of(paths)
    embs, used, failures = embed_photos(pipeline, photos, progress)
    if len(embs):
        gallery.add(name, embs, [f"{name}/{u}" for u in used])
        recalibrate(gallery, pipeline.embedder.default_threshold)
    return len(embs), problems + failures


# ---------------------------------------------------------------- recognise

class Recognizer:
    """A gallery, its classifier and the matching pipeline: embeddings -> predictions."""

    def __init__(self, gallery_path: Path, models_dir: str | os.PathLike[str] | None = None,
                 embedder: str | None = None, threads: int = 2,
                 detector_params: DetectorParams | None = None, pipeline: FacePipeline | None = None,
                 embed_batch: int = 16) -> None:
        header_only = Gallery.load(gallery_path)
        meta = header_only.meta
        self.pipeline = pipeline or load_pipeline(
            models_dir, embedder or meta.get("embedder"), threads, meta.get("alignment"),
            meta.get("margin"), detector_params, embed_batch)
        self.gallery = Gallery.load(gallery_path, expect_model=self.pipeline.embedder.model_id)
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
