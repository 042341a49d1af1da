"""Liveness at the door: is the face about to be named a member live, or a photo or a screen held up?

Only a track whose decision names a member is scored (with ``[learning]`` on, also an announced
stranger, whose faces would otherwise become a visitor): a stranger and an empty door cost nothing.
A visit is judged once ``liveness.frames`` of its frames are scored, by the visit-level rule of
``facepi.identity.liveness`` against this camera's threshold; until then it is not announced and its
member is not present. A visit judged not live is announced as a *spoof* (``name`` "unknown", ``live``
false, ``resembles`` the member), never under the member's name, and its faces never become a visitor.

The camera's threshold comes from its calibration (``facepi liveness calibrate``, stored beside the
gallery per camera id). Without one the camera uses ``uncalibrated_threshold`` and says so in its
status. ``FreshThreshold`` keeps it fresh from members' visits, in a way photos cannot loosen.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepi.config import Config

log = logging.getLogger(__name__)
DAY = 86400.0
WINDOW = 50  # member visits the fresh threshold looks at
MIN_VISITS = 20  # ... before it moves at all


@dataclass
class FreshThreshold:
    """The camera's threshold, kept fresh from its members' live visits, bounded so photos cannot loosen it.

    Only visits judged live with ``margin`` to spare (and recognised with margin, the caller's part) are
    ``fed``: a refused photo feeds nothing, and a photo that passes barely does not feed either. The
    threshold follows the drift of the median of the last ``WINDOW`` fed scores from the median of the
    first full window (the baseline), so it tracks the camera's light, not any one visit; it moves at most
    ``step_per_day`` per day (a run of visits in one evening moves it by that at most), and never leaves
    [calibrated - floor, calibrated + ceiling] (``floor`` 0: never looser than calibrated, whatever is fed).
    """

    calibrated: float
    margin: float = 0.1
    step_per_day: float = 0.02
    floor: float = 0.0
    ceiling: float = 0.1
    threshold: float = field(init=False)
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    baseline: float | None = None
    fed: int = 0
    day: int | None = None  # the day (of the caller's clock) the moves below were made on
    moved_today: float = 0.0  # signed sum of today's moves

    def __post_init__(self) -> None:
        self.threshold = self.calibrated

    @property
    def lowest(self) -> float:
        return max(0.0, self.calibrated - self.floor)

    @property
    def highest(self) -> float:
        return min(1.0, self.calibrated + self.ceiling)

    def feed(self, score: float, t: float) -> bool:
        """A member's visit judged live with ``score`` at time ``t`` (seconds); True if it was taken."""
        if score < self.threshold + self.margin:
            return False
        self.scores.append(float(score))
        self.fed += 1
        if len(self.scores) < MIN_VISITS:
            return True
        median = float(np.median(self.scores))
        if self.baseline is None:
            self.baseline = median
        want = min(self.highest, max(self.lowest, self.calibrated + median - self.baseline))
        day = int(t // DAY)
        if day != self.day:
            self.day, self.moved_today = day, 0.0
        # today's moves together stay within step_per_day of where the day began
        start = self.threshold - self.moved_today
        move = min(start + self.step_per_day, max(start - self.step_per_day, want)) - self.threshold
        self.threshold += move
        self.moved_today += move
        return True

    def status(self) -> dict[str, Any]:
        return {"threshold": round(self.threshold, 4), "calibrated": round(self.calibrated, 4),
                "bounds": [round(self.lowest, 4), round(self.highest, 4)], "fresh_visits": self.fed}


def visit_score(scores: list[float]) -> float:
    """One score for a visit's frames: the calibration module's rule (``facepi.identity.liveness``)."""
    from facepi.identity import liveness as rules

    return float(rules.combine(scores))


class DoorLiveness:
    """The model, the camera's threshold and what the door says about them (``status``)."""

    def __init__(self, cfg: Config, model: Any = None) -> None:
        lc = cfg.liveness
        self.cfg, self.camera = cfg, cfg.camera_id
        if model is None:
            from facepi.vision.liveness import LivenessModel

            # one thread: for two 80x80 nets more threads cost more than they save (bench/liveness_cost.py)
            model = LivenessModel.load(cfg.models.dir or None, threads=1)
        self.model = model
        self.calibrated = calibrated_threshold(cfg.recognition.gallery, self.camera)
        start = self.calibrated if self.calibrated is not None else lc.uncalibrated_threshold
        self.fresh = FreshThreshold(start, lc.adapt_margin, lc.adapt_step_per_day, lc.adapt_floor, lc.adapt_ceiling)
        self.ms: deque[float] = deque(maxlen=300)
        self.checked = self.spoofs = 0
        if self.calibrated is None:
            log.warning("liveness: camera %s has no calibration (facepi liveness calibrate); until it has one a "
                        "visit is live above the default threshold %.3f", self.camera, start)
        else:
            log.info("liveness: camera %s calibrated, threshold %.4f", self.camera, start)

    @property
    def threshold(self) -> float:
        return self.fresh.threshold if self.cfg.liveness.adapt else self.fresh.calibrated

    def score(self, rgb: np.ndarray, box: np.ndarray) -> float:
        t0 = time.perf_counter()
        s = float(self.model.score(rgb, box))
        self.ms.append((time.perf_counter() - t0) * 1000)
        return s

    def judge(self, scores: list[float], t: float, recognised_with_margin: bool) -> tuple[bool, float]:
        """A visit's verdict (live?, its score); a live member's visit with margin keeps the threshold fresh."""
        combined = visit_score(scores)
        live = combined >= self.threshold
        self.checked += 1
        if not live:
            self.spoofs += 1
        elif recognised_with_margin and self.cfg.liveness.adapt:
            self.fresh.feed(combined, t)
        return live, combined

    def status(self) -> dict[str, Any]:
        """For the status topic and Home Assistant's diagnostics: calibrated or not, and what it does meanwhile."""
        state = "calibrated" if self.calibrated is not None else "uncalibrated"
        says = (f"threshold {self.threshold:.3f} (calibrated {self.calibrated:.3f})" if self.calibrated is not None
                else f"no calibration for camera {self.camera}: default threshold {self.threshold:.3f} "
                     f"(run facepi liveness calibrate)")
        ms = sorted(self.ms)
        return {"state": state, "says": says, "visits_checked": self.checked, "spoofs": self.spoofs,
                "ms_p50": round(ms[len(ms) // 2], 2) if ms else None} | self.fresh.status() \
            | ({"calibrated": None} if self.calibrated is None else {})


def calibrated_threshold(gallery: str | Path, camera: str) -> float | None:
    """This camera's calibrated threshold (``facepi.identity.liveness``), or None: not calibrated."""
    from facepi.identity import liveness as rules

    cal = rules.load_calibration(gallery, camera)
    return None if cal is None else float(cal.threshold)
