"""Who is it — or nobody we know. Two classifiers and one honest "unknown".

Both classifiers name a person, and both share one open-set rule: a face whose
cosine distance to that person's centroid is at most the threshold is that
person (``d <= t``, the one boundary rule used everywhere); above it, ``unknown``.

Where the threshold comes from, and why. A household gallery holds 2-6 people
and a few dozen photos: the handful of family-vs-family comparisons it offers
cannot estimate a 1 % false-accept rate (the threshold becomes one extreme
value, too loose or too strict). So the rule comes from the model, measured on
large in-the-wild data (CelebA dev, 143 identities: a stranger's photo against
one enrolled person's centroid, hundreds of thousands of comparisons) and
shipped in the manifest as operating points (per-comparison FAR -> distance).
A stranger at the door is compared with *every* enrolled person, so for a
gallery of n people and a target FAR per stranger, each comparison may accept
at most target/n (union bound) - and a further factor ``CLUSTERING`` less,
because stranger accepts cluster (a look-alike stranger matches at all their
photos, and a family's centroids are built from a few photos): on held-out
households (``bench/household.py``) target/n named 1.9 % of strangers for a 1 %
target, target/2n 0.86 %, target/4n 0.37 %, with the same share of family named.
The gallery's own strangers (leave-one-out) may make the rule stricter, never
looser, and only where there are enough of them to resolve the rate (>= 10/rate
comparisons).

- ``centroid``: nearest centroid on cosine distance (unit-length mean of a person's
  embeddings; scikit-learn's NearestCentroid has no cosine metric).
- ``svm``: the seed's linear SVM. Probabilities come from CalibratedClassifierCV
  (sigmoid) around ``SVC(kernel="linear")``, the supported route now that
  ``probability=True`` is deprecated.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facepi.identity.gallery import Gallery, GalleryError
from facepi.vision.embed import OperatingPoints

UNKNOWN = "unknown"
CLASSIFIERS = ("centroid", "svm")
DEFAULT_TARGET_FAR = 0.01
RESOLVE = 10  # comparisons needed per accepted stranger before a rate counts as measured
DUPLICATE = 0.03  # cosine distance under which two photos are the same shot (resized, recompressed)
CLUSTERING = 3  # stranger accepts cluster: the union bound over n people is divided by this too


@dataclass(frozen=True)
class Prediction:
    name: str  # a person, or "unknown"
    score: float  # 0..1: SVM probability, or cosine similarity to the centroid
    distance: float  # cosine distance to the candidate's centroid
    candidate: str  # the closest enrolled person, even when the answer is unknown


@dataclass(frozen=True)
class Calibration:
    threshold: float
    source: str  # "model" (measured operating points), "gallery" (stricter, own evidence), "default"
    target_far: float  # per stranger photo, against the whole gallery
    per_comparison_far: float  # target_far / (number of people x CLUSTERING)
    model_threshold: float | None  # the model's threshold at per_comparison_far
    gallery_far: float | None  # share of the gallery's own stranger comparisons accepted (d <= t)
    tar: float | None  # share of enrolled photos accepted by their own person (leave-one-out)
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
    Impostor: each photo vs every *other* person's centroid (one comparison each)."""
    sums = np.stack([embeddings[labels == i].sum(axis=0) for i in range(n)])
    counts = np.bincount(labels, minlength=n)
    genuine = []
    for e, lab in zip(embeddings, labels, strict=True):
        if counts[lab] >= 2:
            c = sums[lab] - e
            genuine.append(1.0 - float(e @ c) / float(np.linalg.norm(c)))
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    d = cosine_distances(embeddings, centroids)
    other = labels[:, None] != np.arange(n)[None, :]
    return np.asarray(genuine), d[other]


def threshold_for_far(impostor: np.ndarray, target_far: float) -> float:
    """The largest threshold at which at most ``target_far`` of strangers are accepted (``d <= t``)."""
    s = np.sort(np.asarray(impostor, np.float64))
    k = int(np.floor(target_far * len(s)))  # strangers we may accept
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], -np.inf))  # just below the (k+1)-th: it stays out


def calibrate(gallery: Gallery, points: OperatingPoints | None, target_far: float = DEFAULT_TARGET_FAR,
              default_threshold: float | None = None) -> Calibration:
    """The threshold for this gallery (see the module docstring for why it is chosen this way)."""
    n = len(gallery.people)
    genuine, impostor = (loo_distances(gallery.embeddings, gallery.labels, n) if n
                         else (np.empty(0), np.empty(0)))
    per = target_far / (max(n, 1) * CLUSTERING)
    if points is not None:
        t_model, source = points.threshold(per), "model"
        why = (f"the model's threshold for FAR {per:.2g} per comparison ({target_far:g} per stranger "
               f"over {max(n, 1)} enrolled, x{CLUSTERING} margin), measured on {points.measured_on}")
    elif default_threshold is not None:
        t_model, source = default_threshold, "default"
        why = "the model's default threshold (the manifest has no operating points; re-run facepi-convert)"
    else:
        raise GalleryError("the model's manifest entry has no operating points and no default_threshold; "
                           "re-run facepi-convert")
    t = t_model
    if len(impostor) >= RESOLVE / per:
        t_gallery = threshold_for_far(impostor, per)
        if t_gallery < t_model:
            t, source = t_gallery, "gallery"
            why = (f"the gallery's own {len(impostor)} stranger comparisons call for a stricter threshold "
                   f"than the model's {t_model:.4f}")
    far = float(np.mean(impostor <= t)) if len(impostor) else None
    tar = float(np.mean(genuine <= t)) if len(genuine) else None
    evidence = (f"on the gallery itself: {int(np.sum(impostor <= t))} of {len(impostor)} family-vs-family "
                f"comparisons accepted" + (f" (FAR < 1/{len(impostor)} cannot be shown with so few)"
                                           if len(impostor) and len(impostor) < RESOLVE / per else "")
                if len(impostor) else "no family-vs-family comparisons (fewer than two people)")
    if tar is not None:
        evidence += f"; {tar:.0%} of enrolled photos within their own person's threshold (leave-one-out)"
    return Calibration(t, source, target_far, per, t_model, far, tar, len(genuine), len(impostor),
                       f"{why}; {evidence}")


EVIDENCE_MARGIN = 1e-4  # a corrected person's accept distance stops this far short of the nearest evidence


def person_thresholds(gallery: Gallery, threshold: float) -> dict[str, float]:
    """Per person, the accept distance after "that wasn't X" corrections: the gallery's threshold, tightened
    just enough that every face kept as evidence against X falls outside it. Never looser than the rule."""
    out: dict[str, float] = {}
    n = len(gallery.people)
    if not n or not gallery.against:
        return out
    cents = unit_centroids(gallery.embeddings, gallery.labels, n)
    for person, emb, _label, _rid in gallery.against:
        if person not in gallery.people:
            continue
        d = 1.0 - float(emb @ cents[gallery.people.index(person)])
        out[person] = min(out.get(person, threshold), threshold, d - EVIDENCE_MARGIN)
    return out


def own_photos_named(gallery: Gallery, name: str) -> tuple[int, int]:
    """(how many of ``name``'s enrolled photos the gallery's rule names as ``name``, how many there are):
    what a correction costs the person it corrects."""
    idx = gallery.people.index(name)
    mine = gallery.embeddings[gallery.labels == idx]
    clf = Classifier(gallery, "centroid", float(gallery.meta["threshold"]))
    return sum(p.name == name for p in clf.predict(mine)), len(mine)


def require(kind: str) -> None:
    """Fail before any work when a classifier needs a library this install lacks (scikit-learn is an extra)."""
    if kind == "svm" and importlib.util.find_spec("sklearn") is None:
        raise ValueError("classifier 'svm' needs scikit-learn, which is not installed: pip install 'facepi[svm]', "
                         "or use the default --classifier centroid")


class Classifier:
    """Fitted from a gallery; ``predict(embeddings)`` returns one Prediction per row."""

    def __init__(self, gallery: Gallery, kind: str, threshold: float) -> None:
        if kind not in CLASSIFIERS:
            raise ValueError(f"classifier {kind!r}: expected one of {CLASSIFIERS}")
        self.gallery = gallery
        self.kind = kind
        self.threshold = threshold
        # "that wasn't X": per-person accept distances, only ever tighter than ``threshold``
        self.person_limits: dict[str, float] = {
            k: float(v) for k, v in (gallery.meta.get("person_thresholds") or {}).items()}
        # ... and the faces kept as evidence against a person: a face nearer to one of them than to that
        # person's centroid is not that person (a look-alike's later photos, not only the one corrected)
        self.evidence: dict[str, np.ndarray] = {}
        for person, emb, _label, _rid in gallery.against:
            self.evidence[person] = np.vstack([self.evidence.get(person, np.empty((0, gallery.dim))), emb[None]])
        n = len(gallery.people)
        # An empty gallery is valid (everyone was forgotten): every face is unknown.
        self.centroids = (unit_centroids(gallery.embeddings, gallery.labels, n) if n
                          else np.empty((0, gallery.dim), np.float32))
        self.svm: Any = None
        if kind == "svm" and n >= 2:
            # Imported here, and an extra (facepi[svm]): scikit-learn + scipy are ~200 MB on disk and
            # ~100 MB of RSS, which the centroid default never needs.
            require(kind)
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
        if not self.gallery.people:
            return [Prediction(UNKNOWN, 0.0, 2.0, UNKNOWN) for _ in embeddings]
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
        for row, row_x, b, s in zip(d, embeddings, best, score, strict=True):
            dist = float(row[b])
            person = self.gallery.people[int(b)]
            name = person if dist <= min(self.threshold, self.person_limits.get(person, self.threshold)) else UNKNOWN
            if name in self.evidence and float((1.0 - self.evidence[name] @ row_x).min()) < dist:
                name = UNKNOWN  # nearer to a face that "wasn't" them than to them
            out.append(Prediction(name, float(s), dist, person))
        return out


def calibration_dict(c: Calibration) -> dict:
    return asdict(c)
