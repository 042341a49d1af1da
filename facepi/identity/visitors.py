"""Learning from the door (opt-in): what a visitor is, and when two visits are the same stranger.

With ``[learning] enabled = true`` the daemon keeps, for each announced unknown
visitor, the best few aligned crops of the visit (ranked by detector score, face
size and sharpness: ``crop_quality``) and their embeddings. A visit whose face
matches a stored visitor within the ``JoinRule`` distance (which tightens as the
store fills, so strangers stay apart at 50 visitors as at 1) is added to that
visitor: "V7: 4 visits, first seen ..., last seen ...". The visitors live in the
gallery's database (``visitor_book``; an earlier ``visitors.npz`` is imported once,
``visitor_file``), bounded by ``max_visitors`` and ``keep_days``.

``facepi visitors`` lists them (``--sheet`` draws their crops), ``facepi visitors
name V7 alice`` enrols V7's door crops through the guarded path
(``facepi.identity.family``), ``facepi visitors forget V7`` drops one. Home
Assistant names the visitor it shows, by its id ("Name this visitor").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facepi.identity.classify import CLUSTERING
from facepi.vision.embed import OperatingPoints

FORMAT = "facepi-visitors-1"


class VisitorError(Exception):
    pass


VISIT_FAR = 0.01  # per stranger visit over the whole store, as the gallery's default target (bench/learning.py)


@dataclass(frozen=True)
class JoinRule:
    """When a visit joins a stored visitor: the gallery's rule, applied to the visitor store.

    A stranger's visit is compared with *every* stored visitor, so a fixed distance
    (the model's 5 %-FAR point, 0.72) merges strangers more often the fuller the
    store: at 50 visitors nearly every stranger finds a look-alike. As in
    ``facepi.identity.classify.calibrate``, ``target`` is the false-accept rate per visit over
    the whole store; each comparison may accept ``target / (n_stored x CLUSTERING)``,
    and the distance comes from the model's measured operating points. The target
    was chosen on CelebA dev with ``bench/learning.py`` (merges vs re-visits joined).
    """

    points: OperatingPoints
    target: float = VISIT_FAR

    def distance(self, n_stored: int) -> float:
        """The join distance when ``n_stored`` visitors are stored (each one a comparison)."""
        return self.points.threshold(self.target / (max(n_stored, 1) * CLUSTERING))

    @classmethod
    def for_model(cls, embedder_file: str, models_dir: str | os.PathLike[str] | None = None,
                  target: float = VISIT_FAR) -> JoinRule:
        """The rule for the embedder the gallery was built with (its manifest entry's operating points)."""
        from facepi.vision import runtime

        entry = runtime.model_spec(embedder_file, models_dir).entry
        points = OperatingPoints.from_manifest(entry)
        if points is None:
            raise VisitorError(f"model {embedder_file!r}: its manifest entry has no operating points, so visits "
                               f"cannot be grouped by a measured rule; re-run facepi-convert")
        return cls(points, target)


@dataclass
class Visitor:
    id: str  # "V7"
    visits: int
    first_seen: str  # ISO 8601 UTC
    last_seen: str


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low for blur (Frigate penalises blur the same way)."""
    import cv2  # here, not at the top: the page (facepi web) lists visitors without OpenCV

    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def crop_quality(score: float, width: float, crop: np.ndarray) -> float:
    """Rank a visit's faces: detector score x face size x sharpness (each saturating)."""
    return score * min(width / 160.0, 1.0) * min(sharpness(crop) / 300.0, 1.0)


def joins(centroids: list[np.ndarray], face: np.ndarray, same: float | JoinRule) -> int | None:
    """The stored visitor (index) a visit's face joins: the nearest centroid within the join distance
    for this many visitors stored; None: a new visitor."""
    if not centroids:
        return None
    d = 1.0 - np.stack(centroids) @ face
    limit = same.distance(len(centroids)) if isinstance(same, JoinRule) else float(same)
    i = int(d.argmin())
    return i if d[i] <= limit else None
