"""Faces across frames: tracks, identities voted over several frames, one announcement per visit.

Three clocks, kept apart:
- a **track** continues while its face is missed for at most ``track_gap`` seconds
  (a few frames) and its embeddings keep agreeing; a face that turns out to be
  someone else (further than ``split_distance`` from the track's own faces) starts
  a new track, so Bob stepping into the spot Alice just left is never reported as Alice;
- a **visit** of a name ends when nobody with that name has been in view for
  ``visit_gap`` seconds: a name is announced once per visit (and, with ``cooldown``,
  not again within that many seconds). Unknown visitors are remembered by their
  faces for a visit too, so a stranger whose track breaks is not announced twice;
- **presence** (the retained ``person`` topic) keeps a name for ``presence_hold``
  seconds after its face was last seen, so one missed detection does not flap it.
  The caller asks for it with the time it is *now* (``names_in_view``), frames or not:
  a camera that stops sending frames empties it. A stranger is present only once the
  quality gate below has let them be announced.

A track is embedded on every frame while its identity is being settled (its first ``confirm_seconds`` +
``naming.HOLD_SECONDS``, and whenever its latest look disagrees with its name), else every
``reidentify_seconds``. Its vote is the classifier's answer for the quality-weighted mean of its recent
embeddings (detector score x face size, as Frigate weights its votes); a member's name is said only on
agreeing evidence over the frames so far, and a name that went out is taken back with a correction, never
silently (``facepi.door.naming``). A face is announced as *unknown* ("someone at the door") only after it was
seen on ``unknown_min_frames`` frames with a detector score and a landmark geometry of a real face, mostly
inside the frame: hands and patterns that fool MTCNN for a frame or two, and a face printed on a shirt cut by
the frame's edge, are not announced. Such a face, once judged (``ignored``), is not presence either, and does
not keep the daemon's detector on every frame; its spot is remembered for ``rejected_memory`` seconds, so the
same poster found again a still_interval later is not judged afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facepi.door import naming
from facepi.door.naming import Announcement, Look
from facepi.identity.classify import UNKNOWN, Prediction
from facepi.vision.align import landmark_error
from facepi.vision.detect import iou_matrix

SPOOF = "\0spoof:"  # visiting's key for a member's spoofed visit (no name starts with NUL)


@dataclass
class Track:
    id: int
    box: np.ndarray  # [x1, y1, x2, y2] (the detector's score is kept in ``scores``)
    landmarks: np.ndarray
    first_t: float
    last_t: float
    frames: int = 1  # detections joined to this track
    scores: list[float] = field(default_factory=list)  # detector score per detection (recent)
    errors: list[float] = field(default_factory=list)  # landmark_error per detection (recent)
    inside: list[float] = field(default_factory=list)  # share of the box inside the frame (recent)
    embeddings: list[np.ndarray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    last_embed_t: float = float("-inf")
    decision: Prediction | None = None
    announced: str | None = None  # the name last announced (or deliberately not) for this track
    named: str | None = None  # the member this track was announced as (sure), until taken back
    said_seq: int | None = None  # the event that said its name (the announcer's seq), for a correction
    looks: list[Look] = field(default_factory=list)  # each embedded frame's own answer (recent)
    agreed: Prediction | None = None  # the answer for the vote of the recent looks (naming.sure_name)
    visitor: int | None = None  # the unknown visitor this track was found to be
    suspect: bool = False  # born where a face the gate turned down was: ignored until judged itself
    live_scores: list[float] = field(default_factory=list)  # liveness per frame scored (door/liveness.py)
    live: bool | None = None  # the visit's liveness verdict; None: not judged (or liveness off)
    liveness: float | None = None  # the visit's combined liveness score
    live_for: str | None = None  # the decided name ``live_scores`` and ``live`` belong to (a new name: re-judged)
    rechecks: list[float] = field(default_factory=list)  # a live member's scores since the verdict (recent)
    crop: np.ndarray | None = None  # the aligned face of its last embedding: kept with its event (facepi web)

    def see(self, box: np.ndarray, landmarks: np.ndarray, t: float, frame_size: tuple[int, int] | None) -> None:
        self.box, self.landmarks, self.last_t = box[:4].astype(np.float64), landmarks.copy(), t
        self.frames += 1
        self._quality(box, landmarks, frame_size)

    def _quality(self, box: np.ndarray, landmarks: np.ndarray, frame_size: tuple[int, int] | None) -> None:
        self.scores = (self.scores + [float(box[4]) if len(box) > 4 else 1.0])[-15:]
        self.errors = (self.errors + [landmark_error(landmarks)])[-15:]
        self.inside = (self.inside + [in_view(box, frame_size)])[-15:]

    @property
    def weight(self) -> float:
        """This frame's say in the vote: detector score x face size (width, pixels)."""
        return max(self.scores[-1], 1e-3) * max(float(self.box[2] - self.box[0]), 1.0)

    def rejudge(self) -> None:
        """The decided name changed: the verdict and scores were another name's (a photo held where a live
        person was), so the track is judged again, as its new name, from new frames."""
        self.live, self.liveness, self.live_scores, self.rechecks = None, None, [], []
        self.live_for = None if self.decision is None else self.decision.name

    def looks_like_a_face(self, min_score: float, max_error: float, min_inside: float, min_width: float = 0.0
                          ) -> bool:
        """A detector score, a landmark geometry, a size and a view (not cut by the frame's edge) of a
        real face, as medians over the track's recent frames (the size: the current box)."""
        return bool(self.scores) and float(np.median(self.scores)) >= min_score and \
            float(np.median(self.errors)) <= max_error and float(np.median(self.inside)) >= min_inside and \
            float(self.box[2] - self.box[0]) >= min_width


def in_view(box: np.ndarray, frame_size: tuple[int, int] | None) -> float:
    """Share of the box's area inside the frame (w, h): a face cut by the edge is a poor view."""
    if frame_size is None:
        return 1.0
    w, h = frame_size
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    area = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
    return max(0.0, min(x2, w) - max(x1, 0.0)) * max(0.0, min(y2, h) - max(y1, 0.0)) / area


def new_track(track_id: int, box: np.ndarray, landmarks: np.ndarray, t: float,
              frame_size: tuple[int, int] | None = None) -> Track:
    tr = Track(track_id, box[:4].astype(np.float64), landmarks.copy(), t, t)
    tr._quality(box, landmarks, frame_size)
    return tr


def vote(embeddings: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """One embedding from several frames: their (weighted) mean, back on the unit sphere."""
    m = np.average(np.asarray(embeddings), axis=0, weights=weights)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


@dataclass
class Tracker:
    iou: float = 0.3
    visit_gap: float = 2.0
    vote_frames: int = 3
    reidentify_seconds: float = 1.0
    cooldown: float = 0.0
    confirm_seconds: float = 0.5  # how long a member's face must keep agreeing before the name is said
    threshold: float = 2.0  # the classifier's accept distance (the daemon's; naming.CLEAR is a share of it)
    track_gap: float = 0.5
    presence_hold: float = 1.5
    split_distance: float = 0.7
    unknown_min_frames: int = 5
    min_face_score: float = 0.95
    max_landmark_error: float = 0.12
    min_face_in_view: float = 0.85
    min_face_width: float = 0.0  # pixels: the detector's minsize (its refined boxes can come out smaller)
    rejected_memory: float = 30.0  # seconds a spot whose face the gate turned down is remembered
    liveness: bool = False  # a member is named (present, announced) only once the visit is judged live
    tracks: dict[int, Track] = field(default_factory=dict)
    visiting: dict[str, float] = field(default_factory=dict)  # announced name -> last time in view
    last_announced: dict[str, float] = field(default_factory=dict)
    present: dict[str, float] = field(default_factory=dict)  # decided name -> last time its face was seen
    strangers: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)  # visitor -> (face, last seen)
    rejected: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (box, last seen): gate said no
    next_id: int = 1
    splits: int = 0
    corrections: int = 0  # names taken back (correction events)
    ended: list[Track] = field(default_factory=list)  # the last update's ended tracks, never announced

    def update(self, boxes: np.ndarray, landmarks: np.ndarray, t: float,
               frame_size: tuple[int, int] | None = None) -> list[Track]:
        """Match this frame's faces ([x1, y1, x2, y2, score] rows; frame_size (w, h)) to tracks;
        returns the tracks in view."""
        live = [tr for tr in self.tracks.values() if t - tr.last_t <= self.track_gap]
        self.ended = [tr for tr in self.tracks.values() if t - tr.last_t > self.track_gap and tr.announced is None
                      and tr.decision is not None and tr.frames >= self.unknown_min_frames]  # the announcer settles
        for tr in self.tracks.values():
            if t - tr.last_t > self.track_gap and self.ignored(tr):
                self._reject(tr)
        self.tracks = {tr.id: tr for tr in live}
        self.rejected = [(box, last) for box, last in self.rejected if t - last <= self.rejected_memory]
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
                        live[j].see(boxes[i], landmarks[i], t, frame_size)
                        seen.append(live[j])
            for i in sorted(unmatched):
                seen.append(self._new(boxes[i], landmarks[i], t, frame_size))
        for tr in seen:
            self._in_view(tr, t)
        for table, keep in ((self.visiting, self.visit_gap), (self.present, self.presence_hold)):
            for name, last in list(table.items()):
                if t - last > keep:
                    del table[name]
        for v, (_face, last) in list(self.strangers.items()):
            if t - last > self.visit_gap:
                del self.strangers[v]
        return seen

    def _new(self, box: np.ndarray, landmarks: np.ndarray, t: float,
             frame_size: tuple[int, int] | None = None) -> Track:
        tr = new_track(self.next_id, box, landmarks, t, frame_size)
        self.next_id += 1
        self.tracks[tr.id] = tr
        if self.rejected:
            tr.suspect = bool((iou_matrix(tr.box[None], np.stack([b for b, _ in self.rejected])) >= self.iou).any())
        return tr

    def ignored(self, tr: Track) -> bool:
        """A face the quality gate turns down (cut by the frame's edge, too small, not shaped like a face)
        that is nobody enrolled: never announced, so not presence, and no reason to detect every frame.
        A track is judged on its own frames once it has ``unknown_min_frames``; before that, by its spot."""
        if tr.announced == UNKNOWN or tr.named is not None or (tr.decision is not None and
                                                                tr.decision.name != UNKNOWN):
            return False
        if tr.frames < self.unknown_min_frames:
            return tr.suspect
        return not tr.looks_like_a_face(self.min_face_score, self.max_landmark_error, self.min_face_in_view,
                                        self.min_face_width)

    def _reject(self, tr: Track) -> None:
        """Remember where an ignored track ended (one entry per spot)."""
        box = tr.box[None]
        self.rejected = [(b, last) for b, last in self.rejected if iou_matrix(box, b[None])[0, 0] < self.iou]
        self.rejected.append((tr.box.copy(), tr.last_t))

    def unproven(self, tr: Track) -> bool:
        """A member's face not (yet) judged live *as this member*, with liveness on: not named, not present."""
        return self.liveness and tr.decision is not None and tr.decision.name != UNKNOWN and \
            (tr.live is not True or tr.live_for != tr.decision.name)

    def judged(self, tr: Track, live: bool, score: float) -> None:
        """The visit's liveness verdict: a live member is present from this frame on."""
        tr.live, tr.liveness = live, score
        if not live:  # not present, and a name said for it (a live face's, swapped for a photo) does not stand
            for name in {tr.decision.name if tr.decision else None, tr.named} - {None}:
                self.present.pop(name, None)
            tr.named = tr.announced = None  # the spoof is news (announce)
        self._in_view(tr, tr.last_t)

    def _in_view(self, tr: Track, t: float) -> None:
        """Presence: a member once named (sure), "unknown" once someone at the door was announced."""
        if self.unproven(tr) and tr.named is None:  # a spoof presented on: the same spoofed visit, not news again
            assert tr.decision is not None
            if tr.live is False and SPOOF + tr.decision.name in self.visiting:
                self.visiting[SPOOF + tr.decision.name] = t
            return
        if tr.named is not None:
            self.present[tr.named] = t
            if tr.named in self.visiting:
                self.visiting[tr.named] = t
        elif tr.announced == UNKNOWN:
            self.present[UNKNOWN] = t
        if tr.named is None and tr.agreed is not None and tr.agreed.name in self.visiting:
            self.visiting[tr.agreed.name] = t  # the same face being confirmed again (a track broke): one visit
        if tr.visitor in self.strangers:
            self.strangers[tr.visitor] = (self.strangers[tr.visitor][0], t)

    def wants_embedding(self, tr: Track, t: float) -> bool:
        """Every frame while the identity is being settled (bounded in time), then every reidentify_seconds;
        a named track whose latest look disagrees is looked at four times as often until it is settled."""
        if len(tr.embeddings) < self.vote_frames or t - tr.first_t <= self.confirm_seconds + naming.HOLD_SECONDS:
            return True
        contested = tr.named is not None and bool(tr.looks) and tr.looks[-1].name != tr.named
        return t - tr.last_embed_t >= self.reidentify_seconds / (4 if contested else 1)

    def add_embedding(self, tr: Track, embedding: np.ndarray, t: float,
                      decide: Callable[[np.ndarray], Prediction]) -> Track:
        """Add a face to its track's vote; returns the track it joined (a new one if it disagrees)."""
        p = decide(embedding)
        # a named member in another pose, still within split_distance of their centroid, is not somebody else
        if tr.embeddings and cosine_distance(embedding, vote(tr.embeddings, tr.weights)) > self.split_distance and \
                not (tr.named is not None and p.candidate == tr.named and p.distance <= self.split_distance):
            del self.tracks[tr.id]  # somebody else is in this spot now: the old track ends here
            old = tr
            tr = self._new(np.append(old.box, old.scores[-1]), old.landmarks, t)
            tr.inside = old.inside[-1:]
            self.splits += 1
        tr.embeddings = (tr.embeddings + [embedding])[-self.vote_frames:]
        tr.weights = (tr.weights + [tr.weight])[-self.vote_frames:]
        tr.looks = (tr.looks + [Look(t, self._clearly(p), p.name, embedding, tr.weights[-1])])[-naming.WINDOW:]
        tr.agreed = decide(vote(*naming.recent_faces(tr.looks)))
        tr.last_embed_t = t
        if len(tr.embeddings) >= self.vote_frames:
            tr.decision = decide(vote(tr.embeddings, tr.weights))
            if self.liveness and tr.live_for != tr.decision.name:
                tr.rejudge()
            self._in_view(tr, t)
        return tr

    def announce(self, tr: Track, t: float, final: bool = False, left: bool = False) -> Announcement | None:
        """What this track's visit says now, if anything: a member's name once the evidence agrees
        (``naming.sure_name``), "someone at the door" (unknown) once the quality gate lets the face in
        and no name is about to be said, or a correction of a name said before.

        ``final``: the track ends now (end of a file, a scene cut): no more frames to wait for (the quality gate
        holds). ``left``: it left view mid-confirmation: the rule as it stands, else someone at the door.
        """
        d = tr.decision
        if d is None:
            return None
        if tr.named is not None:
            return self._taken_back(tr, t, final)
        if self.unproven(tr):  # liveness on: a member's name only for a face judged live; a spoof once per visit
            return Announcement("spoof", d.name, since=t - tr.first_t) if \
                tr.live is False and tr.announced != d.name and self._spoof(tr, t) else None
        sure = naming.sure_name(tr.looks, self._agreed(tr), self.confirm_seconds, final)
        if sure is not None:
            return self._name(tr, sure, t)
        if tr.announced == UNKNOWN:
            return None
        if self._agreed(tr) in self.visiting or not (final or left) and naming.leaning(tr.looks, d.name) and \
                t - tr.first_t < self.confirm_seconds + naming.HOLD_SECONDS:
            return None  # a name about to be said waits a moment; a member whose visit goes on is no news
        if not (final or tr.frames >= self.unknown_min_frames) or \
                not tr.looks_like_a_face(self.min_face_score, self.max_landmark_error, self.min_face_in_view,
                                         self.min_face_width):
            return None  # not yet (or never): too brief, not shaped like a face, or cut by the edge
        tr.announced = UNKNOWN
        self.present[UNKNOWN] = t
        return Announcement("unknown", UNKNOWN, since=t - tr.first_t) if self._new_stranger(tr, t) else None

    def _clearly(self, p: Prediction) -> str:
        """A frame's answer: a member only when clear of the threshold (naming.CLEAR), else unknown."""
        return p.name if p.name == UNKNOWN or p.distance <= naming.CLEAR * self.threshold else UNKNOWN

    @staticmethod
    def _agreed(tr: Track) -> str:  # the vote of the recent looks (or, before any, the track's vote)
        return (tr.agreed or tr.decision or Prediction(UNKNOWN, 0.0, 2.0, UNKNOWN)).name

    def _name(self, tr: Track, name: str, t: float) -> Announcement | None:
        """The member is sure: said once per visit (and not again within ``cooldown``); with liveness on, only
        once the track is judged live as this member."""
        if self.liveness and not (tr.live is True and tr.live_for == name):
            return None
        tr.named = tr.announced = name
        self.present[name] = t
        if name in self.visiting:  # this person's visit was announced already
            self.visiting[name] = t
            return None
        self.visiting[name] = t
        if self.cooldown > 0 and t - self.last_announced.get(name, float("-inf")) < self.cooldown:
            return None
        self.last_announced[name] = t
        return Announcement("recognized", name, since=t - tr.first_t)

    def _taken_back(self, tr: Track, t: float, final: bool) -> Announcement | None:
        """A correction when the name said for this track no longer holds (``naming.taken_back``)."""
        assert tr.decision is not None and tr.named is not None
        was = tr.named
        if not naming.taken_back(tr.looks, was, self._agreed(tr)):
            return None
        self.corrections += 1
        self.present.pop(was, None)
        self.visiting.pop(was, None)
        now = naming.sure_name(tr.looks, self._agreed(tr), self.confirm_seconds, final)
        if now is not None and self.liveness and not (tr.live is True and tr.live_for == now):
            now = None  # not judged live as the new name (a photo held where a live person was): not named
        if now is not None:
            tr.named = tr.announced = now
            self.present[now] = self.visiting[now] = t
        else:
            tr.named, tr.announced = None, UNKNOWN
            self.present[UNKNOWN] = t
            self._new_stranger(tr, t)  # a visitor like any other stranger's (learning keeps its faces)
        return Announcement("correction", now or UNKNOWN, was=was, since=t - tr.first_t)

    def _spoof(self, tr: Track, t: float) -> bool:
        """A visit judged not live: said once per visit (a spoof of the same member within visit_gap is the
        same presentation), never as the member, and never present."""
        assert tr.decision is not None
        key = SPOOF + tr.decision.name
        tr.announced = tr.decision.name
        seen = key in self.visiting
        self.visiting[key] = t
        return not seen

    def _new_stranger(self, tr: Track, t: float) -> bool:
        face = vote(tr.embeddings, tr.weights)
        for v, (known, _) in self.strangers.items():
            if cosine_distance(face, known) <= self.split_distance:  # the same visitor, track broken
                tr.visitor = v
                self.strangers[v] = (known, t)
                return False
        tr.visitor = self.next_id
        self.next_id += 1
        self.strangers[tr.visitor] = (face, t)
        return True

    def finish(self, decide: Callable[[np.ndarray], Prediction]) -> list[Track]:
        """The tracks end now (end of a file, a scene cut): decide those with fewer than vote_frames
        embeddings; returns every track, for a final announcement."""
        for tr in self.tracks.values():
            if tr.decision is None and tr.embeddings:
                tr.decision = decide(vote(tr.embeddings, tr.weights))
        return list(self.tracks.values())

    def cut(self) -> None:
        """An unrelated scene follows (the next photo of a folder): nothing continues across it."""
        self.tracks.clear()
        self.visiting.clear()
        self.present.clear()
        self.strangers.clear()
        self.rejected.clear()

    def names_in_view(self, t: float) -> list[str]:
        """Who is in view at ``t`` (the tracker's clock; later than the last frame when frames stop)."""
        return sorted(name for name, last in self.present.items() if t - last <= self.presence_hold)
