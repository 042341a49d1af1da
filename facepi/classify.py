"""Who is it — or nobody we know. Two classifiers and one honest "unknown".

Both classifiers name a person, and both share one open-set rule: if the face's
cosine distance to that person's centroid is above the threshold, the answer is
``unknown``. The threshold is calibrated on the gallery itself (leave-one-out
genuine distances vs. strangers simulated by leaving each person out) for a
target false-accept rate; where the gallery cannot calibrate, a default measured
once on real data and shipped in the model manifest is used, and the report says
so. Strangers recognised as someone the family knows is what users of every
existing tool complain about; this is the guard.

- ``centroid``: nearest centroid on cosine distance (unit-length mean of a person's
  embeddings; scikit-learn's NearestCentroid has no cosine metric).
- ``svm``: the seed's linear SVM. Probabilities come from CalibratedClassifierCV
  (sigmoid) around ``SVC(kernel="linear")``, the supported route now that
  ``probability=True`` is deprecated.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facepi.gallery import Gallery, GalleryError

UNKNOWN = "unknown"
CLASSIFIERS = ("centroid", "svm")
DEFAULT_TARGET_FAR = 0.01
MIN_IMPOSTORS = 20  # fewer simulated strangers than this cannot set a 1 % threshold


@dataclass(frozen=True)
class Prediction:
    name: str  # a person, or "unknown"
    score: float  # 0..1: SVM probability, or cosine similarity to the centroid
    distance: float  # cosine distance to the candidate's centroid
    candidate: str  # the closest enrolled person, even when the answer is unknown


@dataclass(frozen=True)
class Calibration:
    threshold: float
    source: str  # "gallery" or "default"
    target_far: float
    far: float | None  # on the gallery, at this threshold
    tar: float | None
    genuine_pairs: int
    impostor_pairs: int
    note: str


def unit_centroids(embeddings: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    c = np.stack([embeddings[labels == i].mean(axis=0) for i in range(n)])
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def cosine_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return 1.0 - x @ centroids.T


def loo_distances(embeddings: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Genuine: each photo vs its own person's centroid without it.
    Impostor: each photo vs the nearest *other* person's centroid (its person left out)."""
    sums = np.stack([embeddings[labels == i].sum(axis=0) for i in range(n)])
    counts = np.bincount(labels, minlength=n)
    genuine = []
    for e, lab in zip(embeddings, labels, strict=True):
        if counts[lab] >= 2:
            c = sums[lab] - e
            genuine.append(1.0 - float(e @ c) / float(np.linalg.norm(c)))
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    d = cosine_distances(embeddings, centroids)
    d[np.arange(len(labels)), labels] = np.inf
    impostor = d.min(axis=1) if n >= 2 else np.empty(0)
    return np.asarray(genuine), np.asarray(impostor)


def threshold_for_far(impostor: np.ndarray, target_far: float) -> float:
    """The largest threshold at which at most ``target_far`` of strangers are accepted (d < t)."""
    s = np.sort(impostor)
    k = int(np.floor(target_far * len(s)))  # strangers we may accept
    return float(s[min(k, len(s) - 1)])


def calibrate(gallery: Gallery, default_threshold: float | None, target_far: float = DEFAULT_TARGET_FAR
              ) -> Calibration:
    n = len(gallery.people)
    genuine, impostor = (loo_distances(gallery.embeddings, gallery.labels, n) if n
                         else (np.empty(0), np.empty(0)))
    if n < 2 or len(genuine) == 0 or len(impostor) < MIN_IMPOSTORS:
        why = ("a single person" if n < 2 else "no person with two or more photos" if len(genuine) == 0
               else f"only {len(impostor)} photos to play strangers (need {MIN_IMPOSTORS})")
        if default_threshold is None:
            raise GalleryError(f"the gallery cannot calibrate a threshold ({why}) and the model's "
                               f"manifest entry has no default_threshold; re-run facepi-convert")
        far = float(np.mean(impostor < default_threshold)) if len(impostor) else None
        tar = float(np.mean(genuine < default_threshold)) if len(genuine) else None
        return Calibration(default_threshold, "default", target_far, far, tar, len(genuine), len(impostor),
                           f"the gallery cannot calibrate ({why}); using the model's default threshold "
                           f"{default_threshold:.4f}, measured on real data for FAR {target_far:g}")
    t = threshold_for_far(impostor, target_far)
    far = float(np.mean(impostor < t))
    tar = float(np.mean(genuine < t))
    return Calibration(t, "gallery", target_far, far, tar, len(genuine), len(impostor),
                       f"calibrated on the gallery: FAR {far:.3f} and TAR {tar:.3f} at distance {t:.4f} "
                       f"({len(genuine)} genuine, {len(impostor)} stranger comparisons, leave-one-out)")


class Classifier:
    """Fitted from a gallery; ``predict(embeddings)`` returns one Prediction per row."""

    def __init__(self, gallery: Gallery, kind: str, threshold: float) -> None:
        if kind not in CLASSIFIERS:
            raise ValueError(f"classifier {kind!r}: expected one of {CLASSIFIERS}")
        if not gallery.people:
            raise GalleryError("the gallery is empty: enrol someone first (facepi enroll NAME PHOTOS)")
        self.gallery = gallery
        self.kind = kind
        self.threshold = threshold
        n = len(gallery.people)
        self.centroids = unit_centroids(gallery.embeddings, gallery.labels, n)
        self.svm: Any = None
        if kind == "svm" and n >= 2:
            # Imported here: scikit-learn costs ~100 MB of RSS, which the centroid default never needs.
            from sklearn.calibration import CalibratedClassifierCV
            from sklearn.model_selection import StratifiedKFold
            from sklearn.svm import SVC

            counts = np.bincount(gallery.labels, minlength=n)
            folds = int(min(5, counts.min()))
            base = SVC(kernel="linear")
            if folds >= 2:
                self.svm = CalibratedClassifierCV(base, method="sigmoid",
                                                  cv=StratifiedKFold(folds))
            else:  # someone has one photo: no held-out data to calibrate on
                self.svm = base
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self.svm.fit(gallery.embeddings, gallery.labels)

    def predict(self, embeddings: np.ndarray) -> list[Prediction]:
        if len(embeddings) == 0:
            return []
        d = cosine_distances(embeddings, self.centroids)
        if self.svm is None:
            best = d.argmin(axis=1)
            score = np.clip(1.0 - d[np.arange(len(d)), best], 0.0, 1.0)
        elif hasattr(self.svm, "predict_proba"):
            proba = self.svm.predict_proba(embeddings)
            best = self.svm.classes_[proba.argmax(axis=1)]
            score = proba.max(axis=1)
        else:
            dec = self.svm.decision_function(embeddings)
            dec = dec[:, None] if dec.ndim == 1 else dec
            proba = np.exp(dec - dec.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
            best = self.svm.classes_[proba.argmax(axis=1)] if proba.shape[1] > 1 else self.svm.predict(embeddings)
            score = proba.max(axis=1)
        out = []
        for row, b, s in zip(d, best, score, strict=True):
            dist = float(row[b])
            person = self.gallery.people[int(b)]
            name = person if dist <= self.threshold else UNKNOWN
            out.append(Prediction(name, float(s), dist, person))
        return out


def calibration_dict(c: Calibration) -> dict:
    return asdict(c)
