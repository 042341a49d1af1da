"""LFW-style verification like the seed's ``validate_on_lfw.py``: pairs.txt, k folds.

Reported: accuracy (threshold chosen on the other folds) +- std, validation rate
at FAR 1e-3 (threshold interpolated on the other folds), AUC and EER. Distances
are cosine distances between L2-normalised embeddings (the seed's squared
Euclidean distance is exactly twice that, so every rate is the same).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facepi.vision.faces import FacePipeline

THRESHOLDS = np.arange(0.0, 2.0, 0.005)


class PairsError(ValueError):
    pass


def read_pairs(path: Path) -> tuple[int, list[tuple[str, int, str, int]]]:
    """Parse pairs.txt: a header 'folds n', then 'name i j' or 'name1 i name2 j' lines."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise PairsError(f"{path}: cannot read ({e.strerror})") from None
    if not lines or len(lines[0]) != 2 or not all(x.isdigit() for x in lines[0]):
        raise PairsError(f"{path}: first line must be '<folds> <pairs per fold>', got {lines[:1]}")
    folds = int(lines[0][0])
    pairs = []
    for n, f in enumerate(lines[1:], start=2):
        try:
            if len(f) == 3:
                pairs.append((f[0], int(f[1]), f[0], int(f[2])))
            elif len(f) == 4:
                pairs.append((f[0], int(f[1]), f[2], int(f[3])))
            else:
                raise ValueError
        except ValueError:
            raise PairsError(f"{path}:{n}: expected 'name i j' or 'name1 i name2 j', got {' '.join(f)!r}") from None
    if folds < 2 or len(pairs) < folds:
        raise PairsError(f"{path}: {len(pairs)} pairs cannot make {folds} folds")
    return folds, pairs


def _fold_ids(n: int, folds: int) -> np.ndarray:
    return np.minimum(np.arange(n) * folds // n, folds - 1)


def verification_report(dist: np.ndarray, same: np.ndarray, fold: np.ndarray, folds: int,
                        far_target: float = 1e-3) -> dict[str, Any]:
    try:  # an extra (facepi[svm]): this is a workstation benchmark, not the Pi's job
        from sklearn.metrics import roc_auc_score, roc_curve
    except ImportError:
        raise PairsError("validate-pairs needs scikit-learn: pip install 'facepi[svm]'") from None

    accs, vals, fars = [], [], []
    for k in range(folds):
        train, test = fold != k, fold == k
        acc_train = [np.mean((dist[train] < t) == same[train]) for t in THRESHOLDS]
        t_best = THRESHOLDS[int(np.argmax(acc_train))]
        accs.append(float(np.mean((dist[test] < t_best) == same[test])))
        far_train = np.array([np.mean(dist[train][~same[train]] < t) for t in THRESHOLDS])
        if far_train.max() >= far_target:
            last = np.flatnonzero(far_train <= far_target)
            lo = int(last[-1]) if len(last) else 0
            t_val = float(np.interp(far_target, far_train[lo:lo + 2], THRESHOLDS[lo:lo + 2])) \
                if lo + 1 < len(THRESHOLDS) else THRESHOLDS[lo]
        else:
            t_val = 0.0
        d_test, s_test = dist[test], same[test]
        vals.append(float(np.mean(d_test[s_test] < t_val)) if s_test.any() else 0.0)
        fars.append(float(np.mean(d_test[~s_test] < t_val)) if (~s_test).any() else 0.0)
    fpr, tpr, _ = roc_curve(same, -dist)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    return {"pairs": int(len(dist)), "folds": folds,
            "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "val_mean": float(np.mean(vals)), "val_std": float(np.std(vals)), "far_mean": float(np.mean(fars)),
            "far_target": far_target, "auc": float(roc_auc_score(same, -dist)),
            "eer": float((fpr[i] + 1 - tpr[i]) / 2)}


def validate(pipeline: FacePipeline, pairs_file: Path, image_dir: Path, ext: str = "jpg",
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    folds, pairs = read_pairs(pairs_file)
    fold_of_pair = _fold_ids(len(pairs), folds)
    paths = sorted({image_dir / n / f"{n}_{i:04d}.{ext}" for a, ia, b, ib in pairs
                    for n, i in ((a, ia), (b, ib))})
    emb: dict[Path, np.ndarray] = {}
    for k, p in enumerate(paths):
        if p.exists():
            r = pipeline.photo(p)
            if len(r.embeddings):
                emb[p] = r.embeddings[0]
        if progress:
            progress(k + 1, len(paths))
    dist, same, fold, missing = [], [], [], 0
    for (a, ia, b, ib), f in zip(pairs, fold_of_pair, strict=True):
        pa, pb = image_dir / a / f"{a}_{ia:04d}.{ext}", image_dir / b / f"{b}_{ib:04d}.{ext}"
        if pa not in emb or pb not in emb:
            missing += 1
            continue
        dist.append(1.0 - float(emb[pa] @ emb[pb]))
        same.append(a == b)
        fold.append(f)
    if not dist or all(same) or not any(same):
        raise PairsError(f"{pairs_file}: need both same and different pairs with faces in {image_dir}")
    report = verification_report(np.asarray(dist), np.asarray(same), np.asarray(fold), folds)
    report["missing_pairs"] = missing
    report["model"] = pipeline.embedder.name
    return report
