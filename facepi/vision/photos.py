"""Photos in, embeddings out: the one "folder of people -> embeddings" loop.

``train``, ``enroll`` and ``evaluate`` all read photos through here, so a photo that
cannot be read or shows no face is named the same way everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepi.vision.detect import Detector, DetectorParams
from facepi.vision.embed import Embedder
from facepi.vision.faces import FacePipeline
from facepi.vision.images import IMAGE_SUFFIXES, list_images, people_folders

Progress = Callable[[int, int], None]


def load_pipeline(models_dir: str | os.PathLike[str] | None = None, embedder: str | None = None,
                  threads: int = 0, mode: str | None = None, margin: int | None = None,
                  detector_params: DetectorParams | None = None, embed_batch: int = 16) -> FacePipeline:
    return FacePipeline(Detector(models_dir, detector_params, threads),
                        Embedder(models_dir, embedder, threads, embed_batch), mode, margin)


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


@dataclass
class Embedded:
    """Embeddings of a folder of people: {person: [(photo, embedding or None)]}, and why photos failed."""

    people: dict[str, list[tuple[Path, np.ndarray | None]]]
    errors: list[str] = field(default_factory=list)

    @property
    def no_face(self) -> int:
        return sum(e is None for items in self.people.values() for _, e in items)


def embed_folder(pipeline: FacePipeline, root: Path, progress: Progress | None = None) -> Embedded:
    """ROOT/<person>/<photos> -> the central face's embedding of every photo (None: unreadable or no face)."""
    folders = people_folders(root)
    total = sum(len(v) for v in folders.values())
    out = Embedded({person: [] for person in folders})
    done = 0
    for person, photos in folders.items():
        for p in photos:
            r = pipeline.photo(p)
            out.people[person].append((p, None if r.error else r.embeddings[0]))
            if r.error:
                out.errors.append(r.error)
            done += 1
            if progress:
                progress(done, total)
    return out
