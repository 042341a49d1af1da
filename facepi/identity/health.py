"""``facepi gallery check``: why is somebody not recognised? The gallery's health, per person.

Per person: photo count, spread (mean distance of their photos to their own
centroid), outliers (a photo farther from the person's other photos than the
threshold: probably someone else), near-duplicate photos, and the nearest other
person (two people closer than the threshold will be confused). Then the
threshold and the evidence it stands on. The contact sheet shows every stored
enrolment crop, grouped by person, outliers framed red and near-duplicates
orange: the picture a user looks at to see what the gallery really holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import atomic_write_bytes
from facepi.identity import classify
from facepi.identity.classify import DUPLICATE
from facepi.identity.gallery import Gallery

RED, ORANGE = (220, 30, 30), (255, 150, 0)
# What the frames mean, on the sheet itself: a sheet opened days later, or sent to someone, explains itself.
LEGEND = ((RED, "red: far from the person's other photos - probably someone else (facepi gallery remove NAME N)"),
          (ORANGE, "orange: the same shot twice (near-duplicate)"))
LEGEND_TEXT = "; ".join(text for _, text in LEGEND)


def _quoted(name: str) -> str:
    import shlex

    return shlex.quote(name)


def check(gallery: Gallery) -> dict[str, Any]:
    t = gallery.meta.get("threshold")
    t = float(t) if t is not None else None
    limit = gallery.meta.get("outlier_distance", None if t is None else t + 0.1)
    n = len(gallery.people)
    cents = classify.unit_centroids(gallery.embeddings, gallery.labels, n) if n else np.empty((0, gallery.dim))
    people, warnings = [], []
    for i, name in enumerate(gallery.people):
        rows = np.flatnonzero(gallery.labels == i)
        x = gallery.embeddings[rows]
        spread = float(np.mean(1.0 - x @ cents[i]))
        outliers = []
        if len(x) >= 3 and limit is not None:
            total = x.sum(axis=0)
            for r, e in zip(rows, x, strict=True):
                rest = total - e
                d = 1.0 - float(e @ rest) / float(np.linalg.norm(rest))
                if d > limit:
                    outliers.append({"row": int(r), "number": int(np.flatnonzero(rows == r)[0]) + 1,
                                     "photo": gallery.sources[r], "distance": round(d, 4)})
        dup = []
        sim = 1.0 - x @ x.T
        for a in range(len(x)):
            for b in range(a + 1, len(x)):
                if sim[a, b] < DUPLICATE:
                    dup.append([gallery.sources[rows[a]], gallery.sources[rows[b]]])
        nearest, nearest_d = None, None
        if n >= 2:
            d = 1.0 - cents @ cents[i]
            d[i] = np.inf
            j = int(d.argmin())
            nearest, nearest_d = gallery.people[j], float(d[j])
            if t is not None and nearest_d <= t:
                warnings.append(f"{name} and {nearest} are closer ({nearest_d:.2f}) than the threshold "
                                f"({t:.2f}): they will be confused; enrol clearer photos of both")
        if len(x) < 3:
            warnings.append(f"{name}: only {len(x)} photo(s); 4-8 photos in different light recognise better")
        for o in outliers:
            warnings.append(f"{name}: photo {o['number']} ({o['photo']}) is far from the other photos "
                            f"({o['distance']:.2f}): probably someone else, or a poor photo (facepi gallery "
                            f"remove {_quoted(name)} {o['number']}; undo: facepi gallery undo)")
        limits = gallery.meta.get("person_thresholds") or {}
        accept = float(limits.get(name, t)) if t is not None else None
        corrections = sum(1 for a in gallery.against if a[0] == name)
        people.append({"name": name, "photos": len(x), "spread": round(spread, 4), "outliers": outliers,
                       "accept_distance": None if accept is None else round(accept, 4), "corrections": corrections,
                       "duplicates": dup, "nearest": nearest,
                       "nearest_distance": None if nearest_d is None else round(nearest_d, 4)})
    cal = gallery.meta.get("calibration") or {}
    damaged = [{"row": rid, "person": person, "problem": problem} for rid, person, problem in gallery.quarantined]
    errors = [f"{d['person']}: face row {d['row']} is damaged (its embedding has {d['problem']}) and is left out of "
              f"recognition; undo the change that wrote it (facepi gallery log) or restore a backup" for d in damaged]
    return {"model": gallery.model, "classifier": gallery.meta.get("classifier"), "threshold": t,
            "evidence": cal.get("note", "no calibration recorded"), "people": people, "warnings": warnings,
            "damaged": damaged, "errors": errors}


def _legend(width: int) -> np.ndarray:
    """A strip above the crops: each frame colour as a swatch, and what it means in words."""
    import cv2  # drawing only: the health report itself (the page's marks) needs no OpenCV

    line = 22
    strip = np.full((len(LEGEND) * line + 6, width, 3), 255, np.uint8)
    for i, (colour, text) in enumerate(LEGEND):
        y = 4 + i * line
        strip[y:y + 16, 4:28] = colour
        cv2.putText(strip, text, (36, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def contact_sheet(gallery: Gallery, report: dict[str, Any], path: Path, columns: int = 8) -> int:
    """Write a PNG with one row block per person; returns how many crops it shows."""
    import cv2

    if gallery.crops is None or not len(gallery.crops):
        raise ValueError(f"{path}: this gallery stores no enrolment crops (enrolled before facepi stored "
                         f"them, or empty); enrol again to see them")
    s = gallery.crops.shape[1]
    cell, label_h = s + 8, 22
    marks: dict[int, tuple[int, int, int]] = {}
    for p in report["people"]:
        for o in p["outliers"]:
            marks[o["row"]] = RED
        for a, b in p["duplicates"]:
            for src in (a, b):
                marks.setdefault(gallery.sources.index(src), ORANGE)
    blocks = []
    for i, name in enumerate(gallery.people):
        rows = np.flatnonzero(gallery.labels == i)
        lines = (len(rows) + columns - 1) // columns
        block = np.full((label_h + lines * cell, columns * cell, 3), 255, np.uint8)
        cv2.putText(block, f"{name} ({len(rows)})", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for k, r in enumerate(rows):
            y, x = label_h + (k // columns) * cell, (k % columns) * cell
            block[y:y + cell, x:x + cell] = marks.get(int(r), (255, 255, 255))
            block[y + 4:y + 4 + s, x + 4:x + 4 + s] = gallery.crops[r]
            # the photo's number, as `facepi gallery remove NAME NUMBER` counts: white on a dark tag
            cv2.rectangle(block, (x + 4, y + 4), (x + 30, y + 20), (0, 0, 0), -1)
            cv2.putText(block, str(k + 1), (x + 6, y + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                        cv2.LINE_AA)
        blocks.append(block)
    sheet = np.concatenate([_legend(columns * cell), *blocks])
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: could not encode the contact sheet")
    atomic_write_bytes(path, png.tobytes(), mode=0o600)
    return int(sum(len(np.flatnonzero(gallery.labels == i)) for i in range(len(gallery.people))))
