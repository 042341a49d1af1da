"""What the door says: events (with a snapshot if allowed), presence, and the recognitions a
"wrong name" may point at.

An event is published once per decided visit (the tracker says when: ``recognized``, ``unknown``,
or a ``correction`` of a name said before); presence is the names seen within ``presence_hold`` of
*now*, so it empties when the camera dies. An event's snapshot is handed to the broker before the
event itself, so a notification built on the event shows the face that triggered it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np

from facepi.config import Config
from facepi.door.publish import Publisher
from facepi.door.track import Announcement, Track, Tracker, vote
from facepi.door.worker import Worker
from facepi.identity import events, recent, store
from facepi.identity.classify import UNKNOWN, Prediction

log = logging.getLogger(__name__)
RECORDS_QUEUE = 32  # event records waiting for the gallery's database (a few kB each)
RECORDS_FLUSH_SECONDS = 2.0  # at shutdown, after the visits' 5 s, within TimeoutStopSec with the publisher's 10 s
RECENT = 50  # recognitions a "wrong name" from the dashboard may address


def snapshot_jpeg(rgb: np.ndarray, box: np.ndarray, label: str, width: int = 640) -> bytes:
    """What a person looking at the dashboard needs: the frame (at most ``width`` wide) with the
    face's box and name drawn, not the 112x112 crop the model saw."""
    s = min(1.0, width / rgb.shape[1])
    view = cv2.cvtColor(cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb,
                        cv2.COLOR_RGB2BGR)
    x1, y1, x2, y2 = (int(round(float(v) * s)) for v in box[:4])
    cv2.rectangle(view, (x1, y1), (x2, y2), (0, 200, 0), 2)
    cv2.putText(view, label.encode("ascii", "replace").decode(), (x1, max(16, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                0.6, (0, 200, 0), 2, cv2.LINE_AA)
    return cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


class Announcer:
    """Events and presence for one camera; ``recognized`` keeps the recent named events by (run, seq)."""

    def __init__(self, cfg: Config, publisher: Publisher, tracker: Tracker, run_id: str, model: str) -> None:
        self.cfg, self.publisher, self.tracker = cfg, publisher, tracker
        self.run_id, self.model = run_id, model
        # what the gallery's database keeps of each event (recent recognitions for "wrong name", the page's
        # door events): a queue of its own, so a locked store drops these before it could cost a visit
        self.records = Worker("facepi-records", RECORDS_QUEUE)
        self.seq = 0
        self.latency_ms: deque[float] = deque(maxlen=300)
        self.time_to_name_ms: deque[float] = deque(maxlen=300)  # first sighting -> name, per recognized visit
        self.last_names: list[str] | None = None
        self.clock = (0.0, time.monotonic())  # (the last frame's time, time.monotonic() when it was processed)
        # run, seq, name, face, when
        self.recognized: deque[tuple[str, int, str, np.ndarray, str]] = deque(maxlen=RECENT)
        # with learning on: the stored visitor an unknown face is (Learning.visitor_of), else None
        self.visitor_of: Callable[[np.ndarray], str | None] | None = None

    def maybe(self, tr: Track, t: float, captured: float, rgb: np.ndarray | None = None) -> None:
        """Publish what ``tr``'s visit says now, if anything (the tracker decides)."""
        if not self.cfg.recognition.debug_every_frame and (said := self.tracker.announce(tr, t)):
            self.say(tr, said, captured, rgb)

    def final(self, decide: Callable[[np.ndarray], Prediction]) -> None:
        """The scene ends (a cut, the end of a file, a stop): every track still open is decided and said."""
        now = time.monotonic()
        for tr in self.tracker.finish(decide):
            if not self.cfg.recognition.debug_every_frame and (said := self.tracker.announce(tr, tr.last_t,
                                                                                             final=True)):
                self.say(tr, said, now)

    def ended(self, captured: float) -> None:
        """Tracks that left view while their name was being confirmed: decided on what was seen (their
        frame is gone, so no snapshot), never dropped silently."""
        for tr in self.tracker.ended:
            if not self.cfg.recognition.debug_every_frame and (said := self.tracker.announce(tr, tr.last_t,
                                                                                             left=True)):
                self.say(tr, said, captured)

    def say(self, tr: Track, said: Announcement, captured: float, rgb: np.ndarray | None = None) -> None:
        assert tr.decision is not None
        d = tr.decision
        extra: dict[str, Any] = {"type": "unknown" if said.kind == "spoof" else said.kind}
        if said.kind == "correction":
            extra |= {"was": said.was, "corrects": tr.said_seq}
        if said.kind == "recognized":
            self.time_to_name_ms.append(said.since * 1000)
        if said.name == UNKNOWN and self.visitor_of is not None and tr.embeddings:  # learning on: which visitor
            extra["visitor"] = self.visitor_of(vote(tr.embeddings, tr.weights))
        self.publish(tr, Prediction(said.name, d.score, d.distance, d.candidate), captured, rgb, extra)
        tr.said_seq = self.seq if said.name != UNKNOWN else None

    def publish(self, tr: Track, d: Prediction, captured: float, rgb: np.ndarray | None = None,
                extra: dict[str, Any] | None = None) -> None:
        """One event, its snapshot (where allowed) handed over before it. With liveness on, a member's face not
        judged live is never said under the member's name: ``name`` is unknown, ``live`` false (or null: not
        judged) and ``resembles`` names the member; a visit judged not live also goes to the ``spoof`` topic
        (with its picture where snapshots may)."""
        self.seq += 1
        x1, y1, x2, y2 = (float(v) for v in tr.box[:4])
        withheld = self.tracker.liveness and d.name != UNKNOWN and tr.live is not True
        name = UNKNOWN if withheld else d.name
        event = {"camera": self.cfg.camera_id, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "name": name, "score": round(d.score, 4), "distance": round(d.distance, 4),
                 "box": [round(x1), round(y1), round(x2 - x1), round(y2 - y1)], "track_id": tr.id,
                 "seq": self.seq, "run": self.run_id, "model": self.model} | (extra or {})
        if tr.live is not None or withheld:
            event |= {"live": tr.live, "liveness": None if tr.liveness is None else round(tr.liveness, 4)}
        if withheld:
            event["resembles"] = d.name
            if tr.live is False:  # ``last`` keeps it: Home Assistant's Last person must not read as the member
                event["spoof"] = True
        label = f"Not live (like {d.name})" if withheld else "Stranger" if name == UNKNOWN else name
        jpeg = snapshot_jpeg(rgb, tr.box, label) if self.cfg.mqtt.snapshot and rgb is not None else None
        if jpeg is not None:  # before its event: a notification built on the event shows this face
            self.publisher.snapshot(jpeg)
        self.publisher.event(event)
        self.latency_ms.append((time.monotonic() - captured) * 1000)
        if withheld and tr.live is False:
            self.publisher.spoof(event, jpeg)
            log.warning("event %d: a face like %s judged NOT live (liveness %.3f, track %d): announced as a spoof",
                        self.seq, d.name, tr.liveness or 0.0, tr.id)
        else:
            log.info("event %d: %s%s (distance %.3f, track %d)", self.seq, name,
                     f" (correction: was {event['was']})" if event.get("type") == "correction" else "", d.distance,
                     tr.id)
        if not withheld:  # a face not judged live is never offered to the page's "this is X"
            self.keep(event, tr)
        face = vote(tr.embeddings, tr.weights) if name != UNKNOWN and tr.embeddings else None
        if face is not None:  # what a "that wasn't X" for this event would correct
            self.recognized.append((self.run_id, self.seq, name, face, event["timestamp"]))
        if face is not None and store.exists(self.cfg.recognition.gallery):  # `gallery wrong NAME / --event SEQ`
            db, camera, run, seq = store.Store(self.cfg.recognition.gallery), self.cfg.camera_id, self.run_id, self.seq

            def remember() -> None:  # (never migrates an .npz gallery)
                recent.remember_event(db, run, seq, name, face, camera)
                recent.remember(db, name, face, camera)

            self.records.submit(remember, lambda _: None)

    def keep(self, event: dict, tr: Track) -> None:
        """The event with its face crop, for the page's review (``[web] events_kept``; 0: none)."""
        web = self.cfg.web
        if web.events_kept > 0 and tr.embeddings and store.exists(self.cfg.recognition.gallery):
            db, face, crop = store.Store(self.cfg.recognition.gallery), vote(tr.embeddings, tr.weights), tr.crop
            # with liveness on, kept with whether the face was judged live (a stranger's with [learning] off never
            # is): the page enrols no face not judged live
            live = (tr.live is True and tr.live_for == tr.decision.name) if self.tracker.liveness and \
                tr.decision is not None else None
            self.records.submit(lambda: events.record(db, event, face, crop, web.events_kept, web.events_days,
                                                      live), lambda _: None)

    def flush(self, timeout: float = RECORDS_FLUSH_SECONDS) -> None:
        """At shutdown, after the visits: the records still waiting get a short bounded wait, then are said."""
        left = self.records.close(timeout)
        if left:
            log.warning("%d event record(s) not kept (recent recognitions, the page's door events): the gallery "
                        "stayed locked", left)

    def frame_done(self, t: float) -> None:
        """A frame of time ``t`` was processed: the clock presence runs on."""
        self.clock = (t, time.monotonic())
        self.presence(self.clock[1])

    def presence(self, now: float) -> None:
        """The ``person`` topic: the names seen within presence_hold of *now*, in real time. Frame time
        runs on from the last frame by the real seconds since (a live camera's frame time is monotonic
        time already), so when frames stop (camera dead, reconnecting, stalled) the names expire as they
        would in an empty view: Home Assistant's presence goes OFF, while the Source sensor says why."""
        names = self.tracker.names_in_view(self.clock[0] + (now - self.clock[1]))
        if names != self.last_names:
            self.last_names = names
            self.publisher.person(names)
