"""Live or not: the decision, each camera's calibration, and how a visit's frames are combined.

The score (facepi.vision.liveness: P(live) from MiniFASNet) means different things under
different cameras: measured, the threshold that refuses 5 % of live faces on one camera refuses
74 % on another. So each camera gets its own threshold, from live faces that camera saw:
``facepi liveness calibrate FRAMES --camera-id ID``, kept in the gallery's database beside the
gallery (table ``liveness``, one JSON row per camera id).

Statistics are taken on the log-odds ``z = log(p / (1 - p))``: live scores pile up near 1.0 on
a good camera (MSU: 0.9995-0.99998), where differences that matter are invisible on the
probability scale.

The threshold is the ``bpcer`` quantile of the camera's live scores (a stated share of live
faces refused), with three guards against someone holding photos or a screen to the camera
while it is calibrated (poisoning: their low scores would drag the quantile down and let their
photos pass later):

1. **Robust anchor.** The median ``m`` and the MAD scale ``s`` of the frames move little while
   fewer than half the frames are attacks. A frame below ``m - OUTLIER_K * s``, or under
   ``ATTACK_LIKE`` on any camera, is far from this camera's live faces (on the development data no
   live frame is: NUAA's lowest is at m - 2.4 s and P(live) 0.06); if more than
   ``MAX_OUTLIER_SHARE`` of the frames are such outliers, or the median face is not live by the
   model's own rule, the calibration is **refused**, naming how many and what to do.
2. **Floor.** The threshold is never below ``m - FLOOR_K * s`` (nor ``ATTACK_LIKE``): frames
   scoring just above the outlier cut (a cleverer poisoner) can lower it at most to that floor.
3. **Bounded drift.** Freshening at the door (``freshen``) follows the shift of the live faces'
   median, moves the threshold at most ``MAX_STEP`` (log-odds) per update and never more than
   ``MAX_DRIFT`` below the threshold of the last explicit calibration (the anchor), nor below its
   floor; a camera never calibrated is not freshened.

A camera without calibration uses the model's own rule, P(live) >= 0.5 (minivision's decision),
and says so (``gallery check``, the status): on the development data that refuses 11 % of NUAA's
live frames and accepts half of MSU's replay attacks — calibrate.

A visit is combined from its frames' scores by the **median log-odds** (``combine``): one lucky
frame of a photo cannot make a visit live, one blurred live frame cannot refuse it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from facepi.identity.gallery import GalleryError
from facepi.identity.store import Store, now_iso

# The share of the calibration's live faces the threshold refuses. On other people of the same camera the
# share refused came out higher (NUAA, leave-one-person-out: 1.5 % at 1 %, 6.9 % at 5 %): people differ.
DEFAULT_BPCER = 0.01
UNCALIBRATED = 0.5  # the model's own rule (minivision: live wins the softmax) until a camera is calibrated
MIN_FRAMES = 10  # faces needed to calibrate
OUTLIER_K = 4.0  # a frame below m - K s is not like this camera's live faces
MAX_OUTLIER_SHARE = 0.02  # more outliers than this: the calibration is refused
FLOOR_K = 2.5  # the threshold never goes below m - FLOOR_K s
ATTACK_LIKE = 0.05  # P(live) under this looks like an attack on any camera (NUAA: no live frame, 99.8 % of photos)
LOW_SHARE = 0.45  # a separate low cluster is looked for among the lowest 45 % of the frames
GAP_K = 1.0  # a gap wider than this many MAD scales (of the frames above it) separates a cluster
MIN_GAP = 1.0  # log-odds: and wider than this (a tight handful of frames has a tiny scale)
MIN_MEDIAN = 0.5  # the typical calibration face must be live by the model's own rule
MIN_SCALE = 0.25  # log-odds: the MAD scale is at least this (a handful of near-identical frames)
MAX_STEP = 0.5  # log-odds a door update may move the threshold
MAX_DRIFT = 1.0  # log-odds the door may loosen below the last explicit calibration
Z_LIMIT = 30.0  # log-odds are clipped to +-30 (P(live) 1 - 1e-13)
CAMERA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TABLE = "CREATE TABLE IF NOT EXISTS liveness (camera TEXT PRIMARY KEY, value TEXT NOT NULL)"


class CalibrationRefused(ValueError):
    """The frames cannot calibrate this camera (too few, or too many look like attacks)."""


def log_odds(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-13, 1 - 1e-13)
    return np.clip(np.log(p) - np.log1p(-p), -Z_LIMIT, Z_LIMIT)


def probability(z: float) -> float:
    return float(1.0 / (1.0 + math.exp(-z)))


def check_camera_id(camera_id: str) -> str:
    if not isinstance(camera_id, str) or not CAMERA_ID.fullmatch(camera_id):
        raise ValueError(f"camera id {camera_id!r}: use 1-64 letters, digits, '_' or '-' (as in camera_id)")
    return camera_id


@dataclass(frozen=True)
class Calibration:
    """One camera's liveness threshold and the evidence it stands on."""

    camera_id: str
    threshold: float  # P(live) at or above which a face is live
    source: str  # "calibrate" (facepi liveness calibrate), "door" (freshened at the door), "default"
    target_bpcer: float  # the share of live faces the threshold is meant to refuse
    frames: int  # live faces it was computed from (0: default)
    median: float  # median P(live) of those frames
    scale: float  # MAD scale of their log-odds
    floor: float  # P(live): the threshold may never go below this (guard 2)
    anchor: float  # P(live) of the last explicit calibration (guard 3)
    outliers: int = 0  # frames far below the others (not used)
    refused_share: float = 0.0  # share of the calibration's own faces below the threshold (>= target: the floor)
    gap: float = 0.0  # log-odds from the median to the threshold at the explicit calibration (``freshen`` keeps it)
    at: str = ""
    models: str = ""  # which liveness models the scores came from

    @property
    def calibrated(self) -> bool:
        return self.source != "default"

    def is_live(self, score: float) -> bool:
        return bool(score >= self.threshold)

    def check_models(self, files: list[str]) -> None:
        """A threshold holds for the models that scored its frames only: refuse it for others."""
        if self.calibrated and self.models and self.models != "+".join(files):
            raise ValueError(f"camera {self.camera_id}: its liveness calibration was made with {self.models}, "
                             f"the models now are {'+'.join(files)}: calibrate it again (facepi liveness "
                             f"calibrate FRAMES --camera-id {self.camera_id})")

    def describe(self) -> str:
        if not self.calibrated:
            return (f"camera {self.camera_id}: liveness not calibrated; meanwhile the model's own rule "
                    f"(live when P(live) >= {UNCALIBRATED}), measured to be loose on some cameras: run "
                    f"'facepi liveness calibrate FRAMES --camera-id {self.camera_id}'")
        return (f"camera {self.camera_id}: live when P(live) >= {self.threshold:.6g} ({self.source} {self.at}, "
                f"{self.frames} live faces, {100 * self.refused_share:.1f} % of them refused, target "
                f"{100 * self.target_bpcer:g} %; "
                f"median {self.median:.6g}, never below {self.floor:.6g})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def uncalibrated(camera_id: str) -> Calibration:
    """What a camera uses before it is calibrated: the model's own rule."""
    return Calibration(check_camera_id(camera_id), UNCALIBRATED, "default", DEFAULT_BPCER, 0, UNCALIBRATED,
                       0.0, UNCALIBRATED, UNCALIBRATED)


def _robust(z: np.ndarray) -> tuple[float, float]:
    m = float(np.median(z))
    return m, max(1.4826 * float(np.median(np.abs(z - m))), MIN_SCALE)


def _low_cluster(z: np.ndarray) -> tuple[int, float, float]:
    """The frames of a separate low cluster: (how many, the gap above them, the lowest score above the gap).

    The median and MAD of the whole set move with a poisoner's frames (measured: three iPhone replays among
    MSU's 15 live faces took the floor from P(live) 0.9952 to 0.978), so the floor cannot be trusted to stop
    them. Live faces of one camera form one continuous tail; frames below a gap wider than ``GAP_K`` MAD scales
    *of the frames above the gap*, and under those frames' floor, are a cluster of their own: refused."""
    zs = np.sort(z)
    found = (0, 0.0, 0.0)
    for i in range(int(LOW_SHARE * len(zs))):
        m, s = _robust(zs[i + 1:])
        gap = float(zs[i + 1] - zs[i])
        if gap > max(GAP_K * s, MIN_GAP) and zs[0] < m - FLOOR_K * s:
            found = (i + 1, gap, float(zs[i + 1]))
    return found


def calibrate(scores: np.ndarray | list[float], camera_id: str, bpcer: float = DEFAULT_BPCER,
              models: str = "") -> Calibration:
    """A camera's calibration from P(live) of live faces it saw (module docstring: the rule and guards)."""
    check_camera_id(camera_id)
    if not 0.0 < bpcer < 0.5:
        raise ValueError(f"bpcer {bpcer}: expected a share of live faces refused between 0 and 0.5")
    z = log_odds(np.asarray(scores, np.float64))
    if len(z) < MIN_FRAMES:
        raise CalibrationRefused(f"{len(z)} face(s): calibrating needs at least {MIN_FRAMES} live faces "
                                 f"seen by this camera")
    m, s = _robust(z)
    if m < 0.0:
        raise CalibrationRefused(
            f"the typical face of these {len(z)} scores P(live) {probability(m):.3g}, under the model's own "
            f"{UNCALIBRATED}: photos or screens, or a picture too poor to judge (light, focus)? Calibrate with "
            f"live faces only, in this camera's usual light")
    cut = max(m - OUTLIER_K * s, float(log_odds(ATTACK_LIKE)))
    outliers = int(np.sum(z < cut))
    if outliers > MAX_OUTLIER_SHARE * len(z):
        raise CalibrationRefused(
            f"{outliers} of {len(z)} faces score far below the others (P(live) under "
            f"{probability(cut):.3g}, the rest around {probability(m):.3g}): photos or screens "
            f"held to the camera, or another camera's frames? Calibrate with live faces only, from this camera")
    low, gap, above = _low_cluster(z[z >= cut])  # the outliers under the cut are guard 1's (never in the quantile)
    if low:
        raise CalibrationRefused(
            f"{low} of {len(z)} faces score apart below the others (P(live) up to {probability(above - gap):.4g}, "
            f"then a gap of {gap:.2f} log-odds up to {probability(above):.4g}), low enough to move the threshold: "
            f"photos or screens held to the camera? Calibrate with live faces only, from this camera")
    kept = z[z >= cut]
    floor = max(m - FLOOR_K * s, float(log_odds(ATTACK_LIKE)))
    t = max(float(np.quantile(kept, bpcer)), floor)
    return Calibration(camera_id, probability(t), "calibrate", bpcer, len(z), probability(m), s,
                       probability(floor), probability(t), outliers, float(np.mean(z < t)), m - t, now_iso(), models)


def freshen(cal: Calibration, scores: np.ndarray | list[float]) -> Calibration:
    """The door's update from frames of members' visits judged live (``MIN_FRAMES`` at least).

    The door only sees live faces that passed the threshold: a quantile of them would sit above the
    threshold every time and ratchet it up. Their median barely notices the few refused, so the
    threshold **follows the median's shift** (a darker season, a cleaned lens), keeping the distance
    ``gap`` between median and threshold that the explicit calibration measured. Each update moves it at
    most ``MAX_STEP``; it never goes below ``anchor - MAX_DRIFT`` nor the calibration's floor (log-odds).
    A camera never calibrated is not freshened (it keeps the model's own rule until calibrated), nor
    by frames whose median is not live by the model's own rule.
    """
    z = log_odds(np.asarray(scores, np.float64))
    if not cal.calibrated or len(z) < MIN_FRAMES:
        return cal
    m = float(np.median(z))
    if m < 0.0:
        return cal
    old_t = float(log_odds(cal.threshold))
    t = old_t + max(-MAX_STEP, min(MAX_STEP, m - cal.gap - old_t))
    t = max(t, float(log_odds(cal.anchor)) - MAX_DRIFT, float(log_odds(cal.floor)))
    return replace(cal, threshold=probability(t), source="door", frames=len(z), median=probability(m),
                   at=now_iso())


def combine(scores: np.ndarray | list[float]) -> float:
    """One visit's P(live) from its frames': the median in log-odds (robust to single frames)."""
    if len(scores) == 0:
        raise ValueError("combine: a visit with no scored frame")
    return probability(float(np.median(log_odds(np.asarray(scores, np.float64)))))


# ------------------------------------------------------------------ stored beside the gallery
def save(gallery: str, cal: Calibration) -> None:
    """Store ``cal`` for its camera in the gallery's database (one transaction)."""
    with Store(gallery).connect(write=True) as con:
        con.execute(TABLE)
        con.execute("INSERT OR REPLACE INTO liveness VALUES (?, ?)", (cal.camera_id, json.dumps(cal.to_json())))


def _from_row(store: Store, camera: str, text: str) -> Calibration:
    try:
        data = json.loads(text)
        cal = Calibration(**data)
        numbers = ("threshold", "target_bpcer", "median", "scale", "floor", "anchor", "refused_share", "gap")
        if any(type(getattr(cal, k)) not in (int, float) or not math.isfinite(getattr(cal, k)) for k in numbers):
            raise ValueError("a number is missing or not a number")
        if cal.camera_id != camera:
            raise ValueError(f"camera {cal.camera_id!r} in the row of camera {camera!r}")
        _check_ranges(cal)
    except (ValueError, TypeError, RecursionError) as e:
        raise GalleryError(f"{store.path}: the liveness calibration of camera {camera!r} is damaged ({e}); "
                           f"calibrate it again (facepi liveness calibrate)") from None
    return cal


def _check_ranges(cal: Calibration) -> None:
    """A stored row is used as a threshold at the door: one that could not come out of ``calibrate`` or
    ``freshen`` (a threshold of 0 passes every photo) is refused, naming the field and what was expected."""
    for k in ("threshold", "median", "floor", "anchor"):
        if not 0.0 < getattr(cal, k) < 1.0:
            raise ValueError(f"{k} {getattr(cal, k)!r}: expected a P(live) strictly between 0 and 1")
    if cal.floor > cal.threshold or cal.floor > cal.anchor:
        raise ValueError(f"floor {cal.floor!r} above the threshold {cal.threshold!r} or the anchor {cal.anchor!r}")
    if not 0.0 < cal.target_bpcer < 0.5:
        raise ValueError(f"target_bpcer {cal.target_bpcer!r}: expected a share between 0 and 0.5")
    if not 0.0 <= cal.refused_share <= 1.0 or cal.scale < 0.0:
        raise ValueError(f"refused_share {cal.refused_share!r} (0-1) or scale {cal.scale!r} (>= 0)")
    if type(cal.frames) is not int or cal.frames < (MIN_FRAMES if cal.calibrated else 0):
        raise ValueError(f"frames {cal.frames!r}: expected at least {MIN_FRAMES} faces")
    if cal.source not in ("calibrate", "door"):
        raise ValueError(f"source {cal.source!r}: expected 'calibrate' or 'door'")


def load(gallery: str, camera_id: str) -> Calibration | None:
    """This camera's stored calibration, or None (use ``uncalibrated``)."""
    check_camera_id(camera_id)
    return all_calibrations(gallery).get(camera_id)


def load_or_default(gallery: str, camera_id: str) -> Calibration:
    return load(gallery, camera_id) or uncalibrated(camera_id)


def all_calibrations(gallery: str) -> dict[str, Calibration]:
    store = Store(gallery)
    if not store.path.exists():
        return {}
    with store.connect() as con:
        try:
            rows = con.execute("SELECT camera, value FROM liveness ORDER BY camera").fetchall()
        except sqlite3.OperationalError:  # no table: nothing calibrated yet
            return {}
    return {str(c): _from_row(store, str(c), str(v)) for c, v in rows}
