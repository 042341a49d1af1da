"""The best faces of each stranger's visit, gathered across the visit's tracks (``StrangerVisits``): what
``[learning]`` keeps of a visitor. (Moved out of facepi.door.track to keep that module small.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facepi.door.track import Track, Tracker

Face = tuple[float, np.ndarray, np.ndarray]  # (quality, aligned crop, embedding): what learning keeps


@dataclass
class StrangerVisits:
    """The best faces of each stranger's visit, however many tracks the visit took.

    A visit is the tracker's: a stranger (``Track.visitor``) from their announcement until
    nobody like them has been seen for ``visit_gap`` seconds. A track that breaks within it
    (a face turned away for longer than ``track_gap``) is given the same visitor again, so
    its faces are gathered here by visitor, not by track: keyed by track, one visit was
    stored as two. A track's faces wait with the track (it may still turn out to be someone
    enrolled); they join the visit only if it ends as an unknown visitor (with liveness on: one
    judged live; a photo's faces never reach the visitor store, so naming can never enrol them).
    """

    keep: int  # the best faces kept per track and per visit
    need_live: bool = False  # liveness on: only a visit judged live becomes a visitor (never a photo's faces)
    tracks: dict[int, tuple[Track, list[Face]]] = field(default_factory=dict)
    visits: dict[int, list[Face]] = field(default_factory=dict)  # visitor -> its faces so far

    def add(self, tr: Track, face: Face) -> None:
        _, faces = self.tracks.setdefault(tr.id, (tr, []))
        self._best(faces, [face])

    def ended(self, tracker: Tracker, final: bool = False) -> list[list[Face]]:
        """The visits that are over (``final``: all of them, the scene ends): their best faces, best first."""
        for tid in [tid for tid in self.tracks if final or tid not in tracker.tracks]:
            tr, faces = self.tracks.pop(tid)
            if tr.visitor is not None and tr.named is None and (tr.live is True or not self.need_live):
                self._best(self.visits.setdefault(tr.visitor, []), faces)
        alive = {tr.visitor for tr in tracker.tracks.values()}
        over = [v for v in self.visits if final or (v not in tracker.strangers and v not in alive)]
        return [self.visits.pop(v) for v in over]

    def _best(self, into: list[Face], faces: list[Face]) -> None:
        into += faces
        into.sort(key=lambda f: -f[0])
        del into[self.keep:]
