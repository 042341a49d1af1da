"""Learning at the door, beside the frame loop: strangers' visits kept to be named later (opt-in),
namings from the dashboard, and "that wasn't X" corrections.

Every change to who is family goes through ``facepi.identity.family`` (never forced
from here); every file write happens on the store worker or the visitors thread, so a
long ``facepi enroll`` holding the gallery never stops recognition. Commands are
addressed by id (a visitor id, an event's run and seq), never "the last one", and
each gets a done or refused answer on ``learning``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from facepi.config import Config
from facepi.door.publish import Publisher
from facepi.door.track import Track, Tracker
from facepi.door.visits import Face, StrangerVisits
from facepi.door.worker import Worker
from facepi.identity import family, store
from facepi.identity.classify import UNKNOWN
from facepi.identity.gallery import Gallery
from facepi.identity.visitor_book import VisitorBook
from facepi.identity.visitors import JoinRule, Visitor, crop_quality, joins

log = logging.getLogger(__name__)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
STORE_FLUSH_SECONDS = 5.0  # at shutdown, for the visits still waiting (+ 10 s publisher < TimeoutStopSec=20)
NAMINGS_WAITING = 16


class Learning:
    def __init__(self, cfg: Config, publisher: Publisher, store_worker: Worker, gallery: Callable[[], Gallery],
                 join_rule: float | JoinRule, recognized: deque[tuple[str, int, str, np.ndarray, str]],
                 ask_reload: Callable[[str], None], stop: threading.Event) -> None:
        self.cfg, self.publisher, self.store_worker = cfg, publisher, store_worker
        self.gallery, self.join_rule, self.recognized = gallery, join_rule, recognized
        self.ask_reload, self.stop = ask_reload, stop
        # faces per stranger's visit (with liveness on: only a visit judged live is ever stored)
        self.visits = StrangerVisits(2 * cfg.learning.crops_per_visitor, cfg.liveness.enabled)
        self.corrections_asked: queue.SimpleQueue[tuple[str, int, str]] = queue.SimpleQueue()
        self.corrected: set[tuple[str, int]] = set()  # (run, seq) of the events corrected: once each
        # namings (visitor id, name) and "the store changed" (None), done by the visitors thread
        self.visitor_work: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=NAMINGS_WAITING)
        self.shown: tuple[str, int, str] | None = None  # the visitor on the dashboard: id, visits, last seen
        self.visitor_stamp: tuple[tuple[int, int], ...] | None = None
        self.visitors_seen: list[Visitor] = []
        self.selected: str | None = None  # a stored visitor chosen on the dashboard (None: the newest)
        self.centroids: tuple[list[str], list[np.ndarray]] = ([], [])  # stored visitors' faces (visitors thread)
        self.asked_show: str | None = None  # ... not yet answered

    def start(self) -> None:
        if self.cfg.learning.enabled:
            threading.Thread(target=self._visitors_thread, name="visitors", daemon=True).start()

    # ------------------------------------------------------------------ strangers' visits (opt-in)
    def keep_candidate(self, tr: Track, crop: np.ndarray, emb: np.ndarray) -> None:
        """A face of a track that may turn out to be an unknown visitor: kept (the best few) until its visit ends."""
        if self.cfg.learning.enabled:
            self.visits.add(tr, (crop_quality(tr.scores[-1], float(tr.box[2] - tr.box[0]), crop), crop, emb))

    def learn(self, tracker: Tracker, final: bool = False) -> None:
        """Stranger visits that have ended (``final``: every one, the scene ends) go to the visitor store:
        one visit each, however many tracks it took, written by the store worker, never on the loop."""
        if final or self.visits.tracks or self.visits.visits:
            for faces in self.visits.ended(tracker, final):
                self._store_visit(faces)

    def _store_visit(self, faces: list[Face]) -> None:
        g, lc = self.gallery(), self.cfg.learning
        crops, embs = np.stack([f[1] for f in faces]), np.stack([f[2] for f in faces])
        quality = np.array([f[0] for f in faces], np.float32)
        same, now = self.join_rule, datetime.now(UTC)  # the visit's time, not the write's
        book = self._book()

        def record() -> Visitor | None:
            try:
                v, _ = book.record(g.model, g.dim, crops, embs, quality, same, lc.crops_per_visitor,
                                   lc.max_visitors, lc.keep_days, now)
            except Exception as e:  # learning must never stop recognition
                log.error("learning: could not store the visitor: %s", e)
                return None
            return v

        self.store_worker.submit(record, self._visit_stored)

    def _visit_stored(self, v: Visitor | None) -> None:
        """On the loop, once the store worker has written a visit: say so on the dashboard."""
        if v is None:
            return
        log.info("learning: %s stored (%d visit(s))", v.id, v.visits)
        self.selected = None  # a new visit: the dashboard shows the newest visitor again
        self._visitors_changed()  # the dashboard's image follows the store (visitors thread)
        self.publisher.learning({"message": f"{v.id}: {v.visits} visit(s), last seen {v.last_seen}",
                                 "visitor": v.id, "visits": v.visits, "first_seen": v.first_seen,
                                 "last_seen": v.last_seen})

    def flush(self) -> None:
        """At shutdown: the visits still waiting are stored (a bounded wait: a store locked by another
        facepi must not hold up a stop), and said before the publisher goes."""
        left = self.store_worker.close(STORE_FLUSH_SECONDS)
        if left:
            log.error("learning: %d visit(s) not stored: the visitor store stayed locked for %g s", left,
                      STORE_FLUSH_SECONDS)
        self.store_worker.drain()

    # ------------------------------------------------------------------ "that wasn't X" (Wrong name)
    def ask_correction(self, name: str, seq: int, run: str) -> None:
        """From paho's thread: handed to the loop, which owns the recent recognitions."""
        self.corrections_asked.put((name, seq, run))

    def corrections(self) -> None:
        """On the loop: the corrections asked since the last pass."""
        while not self.corrections_asked.empty():
            self._correct(*self.corrections_asked.get())

    def _correct(self, name: str, seq: int, run: str) -> None:
        """Correct the recognition the dashboard showed (by its run and seq), on the store worker: any of the
        door's recent events (kept in the gallery's database), once per event; an unknown one has no name."""
        if name == UNKNOWN:
            self._refused(name, seq, f"event {seq} was a stranger (unknown): there is no name to correct")
            return
        if (run, seq) in self.corrected:
            self._refused(name, seq, f"event {seq} ({name}) was corrected already; a correction counts once")
            return
        hit = next((r for r in self.recognized if r[0] == run and r[1] == seq), None)
        gallery, models = self.cfg.recognition.gallery, self.cfg.models.dir or None
        if not store.exists(gallery) and (hit is None or hit[2] != name):  # no database: this run's memory only
            self._refused(name, seq, "not one of this run's recent recognitions" if hit is None else
                          f"event {seq} named {hit[2]}, not {name}")
            return

        def correct() -> tuple[bool, str]:
            try:
                if store.exists(gallery):  # by id, checked and marked corrected in the change's transaction
                    done = family.wrong_event(gallery, seq, run, name, "ha", models)
                else:
                    assert hit is not None
                    done = family.correct(gallery, name, hit[3][None],
                                          f"event {seq} at {self.cfg.camera_id}, {hit[4]}", "ha", models)
            except Exception as e:  # a refusal or an unreadable gallery: said, never fatal
                return False, str(e)
            self.corrected.add((run, seq))
            return True, done.change.summary

        self.store_worker.submit(correct, lambda result: self._corrected(name, *result))

    def _refused(self, name: str, seq: int, why: str) -> None:
        self.publisher.answer("wrong_name", False, f"not corrected: {why}")
        log.warning("correction of %s (event %d) refused: %s", name, seq, why)

    def _corrected(self, name: str, ok: bool, said: str) -> None:
        self.publisher.answer("wrong_name", ok, f"recorded: {said}" if ok else f"{name} not corrected: {said}")
        (log.info if ok else log.warning)("correction: %s", said)
        if ok:
            self.ask_reload("correction")

    # ------------------------------------------------------------------ the dashboard's visitor
    def ask_naming(self, vid: str, name: str) -> None:
        try:
            self.visitor_work.put_nowait((vid, name))
        except queue.Full:  # rate-limited upstream: only a stuck store fills this
            self.publisher.answer("name_visitor", False, f"{vid} not named: too many namings waiting", vid)

    def ask_show(self, vid: str) -> None:
        """From paho's thread: the dashboard's visitor select chose ``vid``; shown by the visitors thread."""
        self.selected = self.asked_show = vid
        self._visitors_changed()

    def visitor_of(self, face: np.ndarray) -> str | None:
        """On the loop, for an unknown event: the stored visitor this face joins (the store's own rule, on the
        faces the visitors thread last read), or None (a first visit: its id comes when it is stored)."""
        ids, centroids = self.centroids
        j = joins(centroids, face, self.join_rule) if centroids else None
        return None if j is None else ids[j]

    def _visitors_changed(self) -> None:
        """A visit was stored (or the store changed): show the newest visitor without waiting for the poll."""
        try:
            self.visitor_work.put_nowait(None)
        except queue.Full:
            pass

    def _visitors_thread(self) -> None:
        """Namings, and keeping the dashboard's visitor image true to the store, on their own thread:
        both read and write files (locks, a store of up to ~10 MB) that the frame loop must never wait on.
        The store is polled every few seconds too, so a visitor forgotten or named from the CLI, or expired,
        leaves the dashboard (and the broker's retained topics) without a signal."""
        said = ""
        work: tuple[str, str] | None = None
        first = True
        while not self.stop.is_set():
            try:
                if work is not None:
                    self._name_visitor(*work)
                self._show_newest_visitor(force=first)  # at start: clears what an earlier run left
                first, said = False, ""
            except Exception as e:  # never fatal: the next poll tries again (and says so once)
                if str(e) != said:
                    said = str(e)
                    log.error("learning: the visitor on the dashboard could not be updated: %s", e)
            try:
                work = self.visitor_work.get(timeout=3.0)
            except queue.Empty:
                work = None

    def _name_visitor(self, vid: str, name: str) -> None:
        """A naming from the dashboard, addressed by the visitor id it showed: enrol that visitor's door
        crops (the same guarded path as the CLI, never forced), say what happened on ``answer``. With a
        picture on the dashboard, only the visitor in it can be named: the name was typed under that face."""
        if self.cfg.mqtt.snapshot and (self.shown is None or self.shown[0] != vid):
            said = (f"{vid} not named {name}: the dashboard shows "
                    f"{self.shown[0] if self.shown else 'no visitor'}; a naming names the face shown")
            self.publisher.answer("name_visitor", False, said, vid)
            log.warning("learning: %s", said)
            return
        try:
            report = family.name_visitor(Path(self.cfg.recognition.gallery), vid, name, "mqtt", False,
                                         self.cfg.models.dir or None, Path(self.cfg.learning.path)).result
        except family.Refused as e:
            said = f"{vid} not named {name}: " + "; ".join(e.problems) if e.problems else str(e)
            self.publisher.answer("name_visitor", False, said, vid)
            log.warning("learning: %s", said)
            return
        except Exception as e:  # a bad name, no such visitor, a locked or unreadable file: said, never fatal
            self.publisher.answer("name_visitor", False, f"{vid} not named: {e}", vid)
            log.warning("learning: %s not named: %s", vid, e)
            return
        self.publisher.answer("name_visitor", True, f"{vid} enrolled as {report.name} ({report.added} face(s))",
                              vid)
        log.info("learning: %s enrolled as %s (%d face(s))", vid, report.name, report.added)
        self.ask_reload("learning")

    def _book(self) -> VisitorBook:
        """The visitors, in the gallery's database (an earlier [learning] path .npz is imported once)."""
        return VisitorBook(self.cfg.recognition.gallery, self.cfg.learning.path)

    def _show_newest_visitor(self, force: bool = False) -> None:
        """The dashboard shows the most recently seen visitor not yet named, forgotten or expired, or
        nothing (empty retained messages). Faces leave the Pi only with ``mqtt.snapshot``: without it the
        topics are cleared once at start (what an earlier configuration left) and never published."""
        lc = self.cfg.learning
        stamp = store.stamp(self.cfg.recognition.gallery)
        if stamp != self.visitor_stamp:
            book = self._book()
            self.visitors_seen = book.visitors()
            self.visitor_stamp = stamp
            faces = [book.faces(v.id)[1] for v in self.visitors_seen]
            self.centroids = ([v.id for v, f in zip(self.visitors_seen, faces, strict=True) if len(f)],
                              [unit(f.mean(axis=0)) for f in faces if len(f)])
        if not self.cfg.mqtt.snapshot:
            if force:
                self.publisher.visitor(b"", None)
            return
        oldest = datetime.now(UTC) - timedelta(days=lc.keep_days)
        stored = [v for v in self.visitors_seen if datetime.fromisoformat(v.last_seen) >= oldest]
        self.publisher.set_visitors([v.id for v in stored])  # the dashboard's choice of visitors
        v = next((v for v in stored if v.id == self.selected), stored[0] if stored else None)
        if (asked := self.asked_show) is not None:
            self.asked_show = None
            ok = v is not None and v.id == asked
            self.publisher.answer("show_visitor", ok, f"showing {asked}: type its name below" if ok else
                                  f"{asked} is not a stored visitor (forgotten, named or expired)", asked)
            force = force or ok
        shown = (v.id, v.visits, v.last_seen) if v else None
        if shown == self.shown and not force:
            return
        if v is None:
            self.publisher.visitor(b"", None)
            log.info("learning: no visitor to show; the dashboard's visitor image is cleared")
        else:
            crop = cv2.resize(self._book().best_crop(v.id), (224, 224), interpolation=cv2.INTER_CUBIC)
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes()
            self.publisher.visitor(jpeg, {"visitor": v.id, "visits": v.visits, "first_seen": v.first_seen,
                                          "last_seen": v.last_seen})
        self.shown = shown
