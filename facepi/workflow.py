"""The seed's verbs as a library: align a dataset, train a gallery from folders, classify photos.

The CLI (``facepi align|train|classify|people``) is a thin layer over these; enrolling
and every other change to who is family is ``facepi.identity.family``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi.identity import classify
from facepi.identity.enrol import new_gallery, recalibrate
from facepi.identity.gallery import Gallery, GalleryError, check_name
from facepi.identity.recognize import Recognizer
from facepi.vision.faces import FacePipeline
from facepi.vision.images import ImageError, list_images, people_folders
from facepi.vision.photos import Progress, embed_folder


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
    embedded = embed_folder(pipeline, data_dir, progress)
    failures = list(embedded.errors)
    for person, items in embedded.people.items():
        if not items:
            failures.append(f"{data_dir / person}: no images")
            continue
        good = [(photo, e) for photo, e in items if e is not None]
        if good:
            gallery.add(person, np.stack([e for _, e in good]), [f"{person}/{photo.name}" for photo, _ in good])
        else:
            failures.append(f"{person}: no usable photo, not enrolled")
    if not gallery.people:
        raise GalleryError(f"{data_dir}: no face found in any photo; nothing to train")
    recalibrate(gallery, models_dir or pipeline.embedder.model.spec.path.parent)
    return gallery, failures


@dataclass
class ClassifyResult:
    path: str
    truth: str | None
    name: str | None  # None: no face
    score: float | None
    distance: float | None
    error: str | None = None
    live: bool | None = None  # with liveness: judged live on this camera's calibration
    liveness: float | None = None  # P(live)
    resembles: str | None = None  # judged not live: the member the face would have been named

    @property
    def correct(self) -> bool | None:
        return None if self.truth is None else self.name == self.truth


def classify_folder(recognizer: Recognizer, data_dir: Path, progress: Progress | None = None,
                    liveness: tuple[Any, Any] | None = None) -> tuple[list[ClassifyResult], float | None]:
    """Classify photos in DATA_DIR/<person>/ (accuracy known) or directly in DATA_DIR.

    A folder named after somebody not enrolled expects ``unknown``: that is what a
    door camera should say to them. Photos with no face count as wrong.
    ``liveness``: (LivenessModel, Calibration): every face is also judged live or not; one judged
    not live is never named a member (``name`` unknown, the member in ``resembles``).
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
        r = recognizer.pipeline.photo(path, keep_image=liveness is not None)
        if r.error:
            results.append(ClassifyResult(str(path), truth, None, None, None, r.error))
        else:
            p = recognizer.predict(r.embeddings[:1])[0]
            result = ClassifyResult(str(path), truth, p.name, p.score, p.distance)
            if liveness is not None:
                model, calibration = liveness
                result.liveness = model.score(r.image, r.faces[0].box)
                result.live = calibration.is_live(result.liveness)
                if not result.live and p.name != classify.UNKNOWN:
                    result.name, result.resembles = classify.UNKNOWN, p.name
            results.append(result)
        if progress:
            progress(i + 1, len(items))
    judged = [r for r in results if r.truth is not None]
    accuracy = (sum(bool(r.correct) for r in judged) / len(judged)) if judged else None
    return results, accuracy


def people_summary(gallery: Gallery) -> dict[str, Any]:
    return {"model": gallery.model, "people": gallery.counts(), **{
        k: gallery.meta.get(k) for k in ("classifier", "threshold", "alignment", "embedder")},
        "calibration": gallery.meta.get("calibration")}
