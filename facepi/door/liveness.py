"""Liveness at the door: is the face about to be named a member live, or a photo or a screen held up?

Only a track whose decision names a member is scored (with ``[learning]`` on, also an announced
stranger, whose faces would otherwise become a visitor): a stranger and an empty door cost nothing.
A visit is judged once ``liveness.frames`` of its frames are scored, by the visit-level rule of
``facepi.identity.liveness`` against this camera's threshold; until then it is not announced and its
member is not present. A visit judged not live is announced as a *spoof* (``name`` "unknown", ``live``
false, ``resembles`` the member), never under the member's name, and its faces never become a visitor.

The camera's threshold is its calibration (``facepi liveness calibrate``, stored beside the gallery per
camera id, ``facepi.identity.liveness``). Without one the camera uses ``uncalibrated_threshold``, is
never freshened, and says so in its status. A calibrated camera is kept fresh at the door
(``Freshening``), in a way photos cannot loosen.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from facepi.config import Config
from facepi.door.track import Track, Tracker
from facepi.identity.classify import UNKNOWN

log = logging.getLogger(__name__)
DAY = 86400.0
RECHECK_MARGIN = 1.0  # log-odds under the threshold a live track's recent scores must fall to turn it not live


@dataclass
class Freshening:
    """Which visits may keep a calibrated camera's threshold fresh, how often, and how far: the door's policy
    around ``facepi.identity.liveness.freshen``, which does the statistics.

    Fed: only the frames of a member's visit judged live and recognised with margin (the caller's part): a
    photo that is refused feeds nothing, and a look-alike or a doubtful face never does. ``freshen`` follows
    the median of the frames (which the cut at the threshold barely moves: no ratchet), at most 0.5
    log-odds a time; the door does it at most once per ``every`` seconds and never lets it go more than
    ``floor`` log-odds below the last explicit calibration (its anchor): with the default 0, freshening
    tightens a camera or brings it back, never loosens it below what a person calibrated.
    """

    cal: Any  # facepi.identity.liveness.Calibration
    frames: int = 100
    every: float = DAY
    floor: float = 0.0
    pool: list[float] = field(default_factory=list)
    last: float | None = None  # when it was last freshened (wall clock)
    fed: int = 0  # visits taken

    def feed(self, scores: list[float], now: float) -> bool:
        """A member's visit judged live and recognised with margin: True if the calibration changed (save it)."""
        from facepi.identity import liveness as rules

        if not self.cal.calibrated:
            return False
        self.pool += [float(s) for s in scores]
        self.fed += 1
        if len(self.pool) < self.frames or (self.last is not None and now - self.last < self.every):
            return False
        new = rules.freshen(self.cal, self.pool)
        lowest = float(rules.log_odds(self.cal.anchor)) - self.floor
        if float(rules.log_odds(new.threshold)) < lowest:
            new = replace(new, threshold=rules.probability(lowest))
        changed = new.threshold != self.cal.threshold
        self.cal, self.pool, self.last = new, [], now
        return changed

    def status(self) -> dict[str, Any]:
        from facepi.identity import liveness as rules

        lowest = rules.probability(float(rules.log_odds(self.cal.anchor)) - self.floor) if self.cal.calibrated \
            else None
        return {"threshold": round(self.cal.threshold, 6), "source": self.cal.source,
                "calibrated": round(self.cal.anchor, 6) if self.cal.calibrated else None,
                "never_below": None if lowest is None else round(max(lowest, self.cal.floor), 6),
                "fresh_visits": self.fed, "fresh_frames_waiting": len(self.pool)}


def visit_score(scores: list[float]) -> float:
    """One score for a visit's frames: the calibration module's rule (the median log-odds)."""
    from facepi.identity import liveness as rules

    return float(rules.combine(scores))


class DoorLiveness:
    """The model, the camera's calibration and what the door says about them (``status``)."""

    def __init__(self, cfg: Config, model: Any = None, save: Callable[[Any], None] | None = None) -> None:
        from facepi.identity import liveness as rules

        lc = cfg.liveness
        self.cfg, self.camera, self.save = cfg, cfg.camera_id, save
        if model is None:
            from facepi.vision.liveness import LivenessModel

            # one thread: for two 80x80 nets more threads cost more than they save (bench/liveness_cost.py)
            model = LivenessModel.load(cfg.models.dir or None, threads=1)
        self.model = model
        self.ms: deque[float] = deque(maxlen=300)
        self.checked = self.spoofs = 0
        # a visit's scores not yet judged, by member (a track that breaks keeps its visit's scores), last seen
        self.unjudged: dict[str, tuple[list[float], float]] = {}
        self.fresh = Freshening(rules.uncalibrated(self.camera), lc.adapt_frames, lc.adapt_hours * 3600,
                                lc.adapt_floor)
        self.running, self.other_models = False, None
        self.reload()
        self.running = True

    def reload(self) -> None:
        """The camera's calibration as stored now (at start, and when the gallery's database changed). A
        damaged one stops the start (named); while running, the calibration in use is kept, and said."""
        from facepi.identity import liveness as rules

        try:
            cal = rules.load(self.cfg.recognition.gallery, self.camera)
        except Exception as e:
            if self.running:  # keep what we have
                log.error("liveness: %s; the calibration in use is kept", e)
                return
            raise
        self.other_models = None
        if cal is not None:
            try:  # a threshold holds for the models that scored its frames only
                cal.check_models(list(getattr(self.model, "files", [])))
            except ValueError as e:
                self.other_models, cal = str(e), None
        if cal is None:
            cal = replace(rules.uncalibrated(self.camera), threshold=self.cfg.liveness.uncalibrated_threshold)
        if cal == self.fresh.cal:
            return
        self.fresh.cal, self.fresh.pool = cal, []
        # freshened at most once per adapt_hours, across restarts too: a door-freshened row says when
        self.fresh.last = _epoch(cal.at) if cal.source == "door" else None
        if cal.calibrated:
            log.info("liveness: %s", cal.describe())
        else:
            log.warning("liveness: camera %s has no %s (facepi liveness calibrate); until it has one a "
                        "visit is live at P(live) >= %.3f ([liveness] uncalibrated_threshold)", self.camera,
                        f"usable calibration ({self.other_models})" if self.other_models else "calibration",
                        cal.threshold)

    @property
    def threshold(self) -> float:
        return float(self.fresh.cal.threshold)

    def score(self, rgb: np.ndarray, box: np.ndarray) -> float:
        t0 = time.perf_counter()
        s = float(self.model.score(rgb, box))
        self.ms.append((time.perf_counter() - t0) * 1000)
        return s

    def check(self, rgb: np.ndarray, visible: list[Track], t: float, tracker: Tracker, accept: float,
              learning: bool) -> None:
        """Score the faces that would be named a member (with learning on, an announced stranger too, whose
        faces would become a visitor) until their visit has ``liveness.frames`` scores, then judge it. The
        scores of a member's visit are pooled across its tracks (a face lost for a moment starts a new track;
        its visit goes on for ``visit_gap``), so a visit of broken tracks is judged too, never left unsaid."""
        frames, gap = self.cfg.liveness.frames, self.cfg.recognition.visit_gap
        for key, (_, last) in list(self.unjudged.items()):
            if t - last > gap:
                del self.unjudged[key]
        for tr in visible:
            d = tr.decision
            if d is None:
                continue
            if tr.live_for != d.name:  # the verdict and its scores belong to the name they were taken for
                tr.rejudge()
            if tr.live is True and d.name != UNKNOWN:
                self._recheck(rgb, tr, tracker)
                continue
            if tr.live is not None:
                continue
            if d.name == UNKNOWN and not (learning and tr.announced == UNKNOWN):
                continue
            s = self.score(rgb, np.append(tr.box, tr.scores[-1]))
            tr.live_scores.append(s)
            key = _visit_key(tr)
            pooled = self.unjudged.pop(key, ([], t))[0] + [s]
            if len(pooled) >= frames:
                self._verdict(tr, pooled, tracker, accept)
            else:
                self.unjudged[key] = (pooled, t)

    def _recheck(self, rgb: np.ndarray, tr: Track, tracker: Tracker) -> None:
        """A member judged live stays checked for the track's whole life, one frame in ``recheck_frames``
        (member tracks only): the member swapped for a photo or a screen of themselves in the same spot keeps
        the track and the name, so only the scores can tell. When the median of the last 2 x ``frames`` such
        scores falls ``RECHECK_MARGIN`` below the threshold the track is no longer live: presence drops, a spoof
        is said."""
        from facepi.identity import liveness as rules

        every, frames = self.cfg.liveness.recheck_frames, self.cfg.liveness.frames
        if every <= 0 or tr.frames % every:
            return
        tr.rechecks = (tr.rechecks + [self.score(rgb, np.append(tr.box, tr.scores[-1]))])[-2 * frames:]
        if len(tr.rechecks) >= 2 * frames:
            combined = visit_score(tr.rechecks)
            # a live face's scores wander around the threshold over a long visit; a photo's fall far below it
            if float(rules.log_odds(combined)) < float(rules.log_odds(self.threshold)) - RECHECK_MARGIN:
                self.spoofs += 1
                log.warning("liveness: track %d, judged live as %s, now scores %.3f (under %.4g): no longer live",
                            tr.id, tr.live_for, combined, self.threshold)
                tracker.judged(tr, False, combined)

    def finish(self, tracks: list[Track], tracker: Tracker, accept: float) -> None:
        """The scene ends (end of a file, a cut, a stop): a visit still open is judged on the frames it has
        (a member with none is never named)."""
        for tr in tracks:
            if tr.live is None and tr.live_scores and tr.decision is not None:
                self._verdict(tr, self.unjudged.pop(_visit_key(tr), (tr.live_scores, 0.0))[0], tracker, accept)
        self.unjudged.clear()

    def _verdict(self, tr: Track, scores: list[float], tracker: Tracker, accept: float) -> None:
        d = tr.decision
        assert d is not None
        margin = d.name != UNKNOWN and d.distance <= (1 - self.cfg.liveness.adapt_margin) * accept
        tracker.judged(tr, *self.judge(scores, time.time(), margin))

    def judge(self, scores: list[float], now: float, recognised_with_margin: bool) -> tuple[bool, float]:
        """A visit's verdict (live?, its score); a live member's visit recognised with margin keeps the
        threshold fresh (``Freshening``)."""
        combined = visit_score(scores)
        live = combined >= self.threshold
        self.checked += 1
        if not live:
            self.spoofs += 1
        elif recognised_with_margin and self.cfg.liveness.adapt and self.fresh.feed(scores, now):
            log.info("liveness: freshened from members' visits: %s", self.fresh.cal.describe())
            if self.save:
                self.save(self.fresh.cal)
        return live, combined

    def status(self) -> dict[str, Any]:
        """For the status topic and Home Assistant's diagnostics: calibrated or not, and what it does meanwhile."""
        cal = self.fresh.cal
        says = (f"threshold {cal.threshold:.4g} ({cal.source} {cal.at[:10]})" if cal.calibrated
                else f"no {'usable ' if self.other_models else ''}calibration for camera {self.camera}"
                     f"{' (made with other liveness models)' if self.other_models else ''}: live at P(live) >= "
                     f"{cal.threshold:.3g} meanwhile (run facepi liveness calibrate)")
        ms = sorted(self.ms)
        return {"state": "calibrated" if cal.calibrated else "uncalibrated", "says": says,
                "visits_checked": self.checked, "spoofs": self.spoofs,
                "ms_p50": round(ms[len(ms) // 2], 2) if ms else None} | self.fresh.status()


def _epoch(iso: str) -> float | None:
    """Wall-clock seconds of a stored ISO time (``Calibration.at``); None if it has none."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _visit_key(tr: Track) -> str:
    """Whose visit a track's scores belong to: the member's name; a stranger's own track."""
    assert tr.decision is not None
    return tr.decision.name if tr.decision.name != UNKNOWN else f"\0track {tr.id}"
