"""Faces across frames: IoU tracks, identities voted over several frames, one announcement per visit.

A track is embedded on every frame until it has ``vote_frames`` embeddings, then
only every ``reidentify_seconds`` to confirm. Its identity is the classifier's
answer for the mean of its recent embeddings — several frames outvote one blurred
or turned face, as Frigate does. A person is announced once per visit; the visit
ends when nobody with that name has been in view for ``visit_gap`` seconds.
Unknown visitors are announced once per track.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facepi.classify import UNKNOWN, Prediction


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N, 4) and b (M, 4), [x1, y1, x2, y2]."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray
    landmarks: np.ndarray
    first_t: float
    last_t: float
    embeddings: list[np.ndarray] = field(default_factory=list)
    last_embed_t: float = float("-inf")
    decision: Prediction | None = None
    announced: str | None = None  # the name last announced for this track
    crop: np.ndarray | None = None


@dataclass
class Tracker:
    iou: float = 0.3
    visit_gap: float = 2.0
    vote_frames: int = 3
    reidentify_seconds: float = 1.0
    cooldown: float = 0.0
    tracks: dict[int, Track] = field(default_factory=dict)
    visiting: dict[str, float] = field(default_factory=dict)  # announced name -> last time in view
    last_announced: dict[str, float] = field(default_factory=dict)
    next_id: int = 1

    def update(self, boxes: np.ndarray, landmarks: np.ndarray, t: float) -> list[Track]:
        """Match this frame's faces to tracks; returns the tracks in view now."""
        live = [tr for tr in self.tracks.values() if t - tr.last_t <= self.visit_gap]
        self.tracks = {tr.id: tr for tr in live}
        seen: list[Track] = []
        if len(boxes):
            unmatched = set(range(len(boxes)))
            if live:
                m = iou_matrix(boxes[:, :4], np.stack([tr.box for tr in live]))
                for flat in np.argsort(-m, axis=None):  # greedy, best overlap first
                    i, j = divmod(int(flat), len(live))
                    if m[i, j] < self.iou:
                        break
                    if i in unmatched and live[j] not in seen:
                        unmatched.discard(i)
                        self._see(live[j], boxes[i], landmarks[i], t)
                        seen.append(live[j])
            for i in sorted(unmatched):
                tr = Track(self.next_id, boxes[i, :4].copy(), landmarks[i].copy(), t, t)
                self.next_id += 1
                self.tracks[tr.id] = tr
                seen.append(tr)
        for name, last in list(self.visiting.items()):
            if t - last > self.visit_gap:
                del self.visiting[name]
        for tr in seen:
            if tr.decision and tr.decision.name in self.visiting:
                self.visiting[tr.decision.name] = t
        return seen

    @staticmethod
    def _see(tr: Track, box: np.ndarray, landmarks: np.ndarray, t: float) -> None:
        tr.box, tr.landmarks, tr.last_t = box[:4].copy(), landmarks.copy(), t

    def wants_embedding(self, tr: Track, t: float) -> bool:
        if len(tr.embeddings) < self.vote_frames:
            return True
        return t - tr.last_embed_t >= self.reidentify_seconds

    def add_embedding(self, tr: Track, embedding: np.ndarray, t: float,
                      decide: Callable[[np.ndarray], Prediction]) -> None:
        tr.embeddings = (tr.embeddings + [embedding])[-self.vote_frames:]
        tr.last_embed_t = t
        if len(tr.embeddings) >= self.vote_frames:
            tr.decision = decide(vote(tr.embeddings))

    def announce(self, tr: Track, t: float) -> bool:
        """Whether this track's decision is news: a new visit, or a new unknown visitor."""
        d = tr.decision
        if d is None or tr.announced == d.name:
            return False
        tr.announced = d.name
        if d.name == UNKNOWN:
            return True
        if d.name in self.visiting:  # this person's visit was announced already
            self.visiting[d.name] = t
            return False
        self.visiting[d.name] = t
        if self.cooldown > 0 and t - self.last_announced.get(d.name, float("-inf")) < self.cooldown:
            return False
        self.last_announced[d.name] = t
        return True

    def finish(self, decide: Callable[[np.ndarray], Prediction]) -> list[Track]:
        """At the end of a file: decide tracks that saw fewer than vote_frames embeddings."""
        out = []
        for tr in self.tracks.values():
            if tr.decision is None and tr.embeddings:
                tr.decision = decide(vote(tr.embeddings))
                out.append(tr)
        return out

    def names_in_view(self, t: float) -> list[str]:
        return sorted({tr.decision.name for tr in self.tracks.values()
                       if tr.decision is not None and tr.last_t >= t})


def vote(embeddings: list[np.ndarray]) -> np.ndarray:
    """One embedding from several frames: their mean, back on the unit sphere."""
    m = np.mean(embeddings, axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)
