"""Open-set measurement: how often family is named, at how many strangers accepted.

Enrol ``enrol`` photos of each known person, probe with their other photos, and
play strangers with photos of people never enrolled. Reported: closed-set top-1,
TAR at FAR 1 % and 0.1 % with the thresholds that achieve them, and the FAR/TAR
of a given (default) threshold. A probe is a true accept only when the nearest
centroid is the right person *and* it is within the threshold.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from facepi.identity.classify import cosine_distances, threshold_for_far, unit_centroids
from facepi.vision.photos import Embedded


def split_people(people: list[str], seed: int, enrolled_fraction: float = 0.5) -> tuple[list[str], list[str]]:
    order = sorted(people)
    random.Random(seed).shuffle(order)
    k = int(round(len(order) * enrolled_fraction))
    return sorted(order[:k]), sorted(order[k:])


def evaluate(known: Embedded, strangers: Embedded, enrol: int = 5, default_threshold: float | None = None,
             fars: tuple[float, ...] = (0.01, 0.001)) -> dict[str, Any]:
    names, gallery, labels, probes, probe_labels = [], [], [], [], []
    for person, items in sorted(known.people.items()):
        embs = [e for _, e in items if e is not None]
        if len(embs) < enrol + 1:
            continue  # needs photos to enrol and at least one to probe
        names.append(person)
        gallery += embs[:enrol]
        labels += [len(names) - 1] * enrol
        probes += embs[enrol:]
        probe_labels += [len(names) - 1] * (len(embs) - enrol)
    stranger_embs = [e for items in strangers.people.values() for _, e in items if e is not None]
    if not names or not probes or not stranger_embs:
        raise ValueError("evaluation needs enrolled people with more than "
                         f"{enrol} photos each and at least one stranger photo")
    centroids = unit_centroids(np.stack(gallery), np.asarray(labels), len(names))
    dp = cosine_distances(np.stack(probes), centroids)
    best = dp.argmin(axis=1)
    correct = best == np.asarray(probe_labels)
    probe_d = dp[np.arange(len(dp)), best]
    stranger_d = cosine_distances(np.stack(stranger_embs), centroids).min(axis=1)

    def rates(t: float) -> tuple[float, float]:
        return float(np.mean(stranger_d <= t)), float(np.mean(correct & (probe_d <= t)))

    report: dict[str, Any] = {
        "enrolled_people": len(names), "enrol_photos_each": enrol, "probe_photos": len(probes),
        "stranger_people": len(strangers.people), "stranger_photos": len(stranger_embs),
        "no_face_photos": known.no_face + (strangers.no_face if strangers is not known else 0),
        "top1": float(correct.mean()), "at_far": {},
        "genuine_distances": probe_d[correct].tolist(), "stranger_distances": stranger_d.tolist(),
    }
    for far in fars:
        t = threshold_for_far(stranger_d, far)
        got_far, tar = rates(t)
        report["at_far"][f"{far:g}"] = {"threshold": t, "far": got_far, "tar": tar}
    if default_threshold is not None:
        got_far, tar = rates(default_threshold)
        report["default_threshold"] = {"threshold": default_threshold, "far": got_far, "tar": tar}
    return report


def tar_far_curve(report: dict[str, Any], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(far, tar) pairs over thresholds (correct identification required for a true accept)."""
    g = np.asarray(report["genuine_distances"])
    s = np.asarray(report["stranger_distances"])
    n_probe = report["probe_photos"]
    ts = np.linspace(0, 2, points)
    far = np.array([np.mean(s <= t) for t in ts])
    tar = np.array([np.sum(g <= t) / n_probe for t in ts])
    return far, tar


def plot(report: dict[str, Any], path: Path, title: str = "") -> None:
    """Score histograms with the thresholds marked, and the TAR-FAR curve (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'facepi[plot]'") from None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(0, 1.6, 81)
    a.hist(report["genuine_distances"], bins, alpha=0.6, label="enrolled people (correct match)")
    a.hist(report["stranger_distances"], bins, alpha=0.6, label="strangers (nearest person)")
    for key, row in report["at_far"].items():
        a.axvline(row["threshold"], ls="--", color="k", lw=1)
        a.text(row["threshold"], a.get_ylim()[1] * 0.9, f" FAR {key}", fontsize=8)
    if "default_threshold" in report:
        a.axvline(report["default_threshold"]["threshold"], color="r", lw=1.5, label="default threshold")
    a.set_xlabel("cosine distance to the nearest enrolled person")
    a.set_ylabel("photos")
    a.legend(fontsize=8)
    far, tar = tar_far_curve(report)
    b.semilogx(np.clip(far, 1e-4, 1), tar)
    b.set_xlabel("false accept rate (strangers named)")
    b.set_ylabel("true accept rate (family named correctly)")
    b.grid(True, which="both", alpha=0.3)
    b.set_xlim(1e-4, 1)
    b.set_ylim(0, 1)
    fig.suptitle(title or f"top-1 {report['top1']:.3f}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def train_val_report(train: Embedded, val: Embedded, kind: str, points: Any,
                     model: str = "", target_far: float = 0.01, default_threshold: float | None = None
                     ) -> dict[str, Any]:
    """The 5-celebrity protocol: closed set (train -> val), then each person held out of training.

    Held out, a person's val photos should come back ``unknown``; everyone else's
    should still be named, at the threshold the gallery calibrates for itself.
    """
    from facepi.identity.classify import Classifier, calibrate, calibration_dict
    from facepi.identity.gallery import Gallery

    dim = next(e for items in train.people.values() for _, e in items if e is not None).shape[0]
    probes = [(p, e) for p, items in sorted(val.people.items()) for _, e in items if e is not None]
    x = np.stack([e for _, e in probes])

    def gallery(exclude: str | None) -> Gallery:
        g = Gallery(model, dim)
        for person, items in sorted(train.people.items()):
            embs = [e for _, e in items if e is not None]
            if person != exclude and embs:
                g.add(person, np.stack(embs), [])
        return g

    g = gallery(None)
    cal = calibrate(g, points, target_far, default_threshold)
    preds = Classifier(g, kind, cal.threshold).predict(x)
    report: dict[str, Any] = {
        "classifier": kind, "val_photos": sum(len(v) for v in val.people.values()), "val_no_face": val.no_face,
        "closed_set_correct": sum(p.name == t for p, (t, _) in zip(preds, probes, strict=True)),
        "calibration": calibration_dict(cal), "held_out": []}
    for out in sorted(train.people):
        g = gallery(out)
        cal = calibrate(g, points, target_far, default_threshold)
        preds = Classifier(g, kind, cal.threshold).predict(x)
        pairs = list(zip(preds, probes, strict=True))
        report["held_out"].append({
            "person": out, "threshold": cal.threshold, "source": cal.source,
            "unknown": sum(p.name == "unknown" for p, (t, _) in pairs if t == out),
            "of": sum(t == out for _, (t, _) in pairs),
            "others_named": sum(p.name == t for p, (t, _) in pairs if t != out),
            "others": sum(t != out for _, (t, _) in pairs)})
    return report
