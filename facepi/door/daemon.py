"""``facepi run``: the door-camera loop. source -> detect -> track -> embed -> decide -> publish.

Start-up does everything that can be done once (models, gallery, classifier,
source, broker connection); the per-frame loop only detects, matches tracks,
embeds the tracks that need it and publishes news. What can wait on a file or
a lock (visitor store writes, gallery reloads) runs on worker threads whose
results the loop picks up each pass, so a long ``facepi enroll`` never stops
recognition or the watchdog. SIGTERM/SIGINT stop it cleanly (queue flushed,
``offline`` published, exit 0); SIGHUP reloads the gallery without a restart.
A file or folder source ends like a clean shutdown.

Health is progress, not liveness: the systemd watchdog is pinged only while
frames arrive or the camera is being reopened; a source call blocked for longer
than ``source.stall_seconds`` stops the pings (systemd restarts the service, or
without a watchdog the daemon exits 4) and says so in the journal and ``status``.
One frame that fails is logged and counted; only ``max_frame_errors`` in a row end
the daemon. Exit codes: 0 clean, 1 the source or the frame loop failed, 2 bad
configuration or credentials, 3 events of a file never delivered, 4 stalled.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi.config import Config
from facepi.door.capture import Capture, Frame, make_source
from facepi.door.motion import MotionGate, region, window
from facepi.door.notify import Notifier
from facepi.door.publish import make_publisher
from facepi.door.track import Face, StrangerVisits, Track, Tracker, iou_matrix, vote
from facepi.identity import family, store
from facepi.identity.classify import UNKNOWN, Prediction
from facepi.identity.visitors import JoinRule, Visitor, VisitorBook, VisitorError, crop_quality
from facepi.redact import mask, with_password
from facepi.vision import runtime
from facepi.vision.detect import DetectorParams
from facepi.vision.faces import FacePipeline
from facepi.workflow import Recognizer, name_visitor

log = logging.getLogger("facepi.daemon")
FPS_WINDOW = 60.0  # seconds: status.fps is the rate over the last minute, so a stall shows at once
EXIT_FAILED, EXIT_CONFIG, EXIT_UNDELIVERED, EXIT_STALLED = 1, 2, 3, 4
STORE_QUEUE = 16  # visits waiting for the visitor store (each at most 2 x crops_per_visitor crops, ~40 KB each)
STORE_FLUSH_SECONDS = 5.0  # at shutdown, for the visits still waiting (+ 10 s publisher < TimeoutStopSec=20)


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


def _pct(values: deque[float], q: float) -> float | None:
    return round(float(np.percentile(list(values), q)), 1) if values else None


class Worker:
    """One background thread for the work that may wait on a file or a lock (the visitor store, a
    gallery reload), so that the frame loop never does: a ``facepi enroll`` holding the gallery for
    a minute must not stop recognition, nor the watchdog pings that keep the service alive.

    Jobs run in order. At most ``size`` wait; a full queue drops its oldest job and counts it (a
    store locked for long loses old visits, never frames). A job's result comes back through
    ``drain()``, which the frame loop calls on every pass, so what it did is published from the
    loop's thread as everything else.
    """

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self.jobs: deque[tuple[Callable[[], Any], Callable[[Any], None]]] = deque()
        self.done: deque[tuple[Callable[[Any], None], Any]] = deque()  # appends and pops are thread-safe
        self.cond = threading.Condition()
        self.running = False
        self.closing = False
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Queue ``job`` (run on the worker); ``then(result)`` runs on the caller's thread at ``drain()``."""
        with self.cond:
            if len(self.jobs) >= self.size:
                self.jobs.popleft()
                self.dropped += 1
                log.warning("%s: %d jobs waiting; the oldest dropped (%d so far)", self.name, self.size,
                            self.dropped)
            self.jobs.append((job, then))
            self.cond.notify()

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self.cond:
            return len(self.jobs) + self.running

    def drain(self) -> None:
        while self.done:
            then, result = self.done.popleft()
            then(result)

    def close(self, timeout: float) -> int:
        """Let the queued jobs finish, waiting at most ``timeout`` s; returns how many did not."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.closing = True
            self.cond.notify_all()
            while self.jobs or self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return len(self.jobs) + self.running

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.jobs and not self.closing:
                    self.cond.wait()
                if not self.jobs:
                    return
                job, then = self.jobs.popleft()
                self.running = True
            try:
                self.done.append((then, job()))
            except Exception:  # a job says what went wrong itself; this is for the unforeseen
                log.exception("%s: a background job failed", self.name)
            finally:
                with self.cond:
                    self.running = False
                    self.cond.notify_all()


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        det = cfg.detection
        self.params = DetectorParams(det.minsize, tuple(det.thresholds), det.factor)  # type: ignore[arg-type]
        self.recognizer = self._load_recognizer()
        self.pipeline = self.recognizer.pipeline
        self._log_backends()
        r = cfg.recognition
        self.tracker = Tracker(iou=r.iou, visit_gap=r.visit_gap, vote_frames=r.vote_frames,
                               reidentify_seconds=r.reidentify_seconds, cooldown=r.cooldown, track_gap=r.track_gap,
                               presence_hold=r.presence_hold, split_distance=self._split_distance(),
                               unknown_min_frames=r.unknown_min_frames, min_face_score=r.min_face_score,
                               max_landmark_error=r.max_landmark_error, min_face_in_view=r.min_face_in_view,
                               min_face_width=float(det.minsize))
        self.publisher = make_publisher(cfg)
        src = cfg.source
        self.source_name = mask(src.uri)
        self.capture = Capture(make_source(with_password(src.uri, src.username, cfg.camera_password), src.width,
                                           src.height, src.fps, src.read_timeout_seconds, src.max_bad_frames,
                                           cfg.detection.downscale),
                               src.fast, src.reconnect_max_seconds, name=self.source_name)
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.run_id = uuid.uuid4().hex[:12]  # per start: subscribers tell a restart from lost events
        self.seq = 0
        self.det_ms: deque[float] = deque(maxlen=300)
        self.emb_ms: deque[float] = deque(maxlen=300)
        self.latency_ms: deque[float] = deque(maxlen=300)
        self.frame_times: deque[float] = deque()
        self.frames = 0
        self.frame_errors = 0
        self.errors_in_a_row = 0
        self.started = time.monotonic()
        self.last_names: list[str] | None = None
        self.clock = (0.0, time.monotonic())  # (the last frame's time, time.monotonic() when it was processed)
        self.reload_error: str | None = None
        self.reload_reasons: list[str] = []  # why the next reload happens: SIGHUP, command, gallery changed
        self.stalled: str | None = None
        self.files_seen: Any = None
        self.version_seen: Any = None
        self.gallery_stamp = self._gallery_stamp()
        self.next_gallery_check = 0.0
        self.corrections_asked: queue.SimpleQueue[tuple[str, int, str]] = queue.SimpleQueue()
        self.recognized: deque[tuple[str, int, str, np.ndarray, str]] = deque(maxlen=50)  # run, seq, name, face, when
        # the model never changes while the daemon runs (a gallery of another model is refused): built once
        self.join_rule = self._join_rule() if cfg.learning.enabled else self.tracker.split_distance
        self.visits = StrangerVisits(2 * cfg.learning.crops_per_visitor)  # learning: faces per stranger's visit
        self.store_worker = Worker("facepi-visitors", STORE_QUEUE)  # visitor store writes, off the frame loop
        self.loader = Worker("facepi-gallery", 1)  # gallery reloads (file reads), off the frame loop
        self.gallery_generation = 0  # bumped by every swap: a reload started before one is stale
        # namings (visitor id, name) and "the store changed" (None), done by the visitors thread: off the frame loop
        self.visitor_work: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=16)
        self.shown: tuple[str, int, str] | None = None  # the visitor on the dashboard: id, visits, last seen
        self.visitor_stamp: tuple[tuple[int, int], ...] | None = None
        self.visitors_seen: list[Visitor] = []
        mc = cfg.motion
        zone = [list(mc.zone[i:i + 2]) for i in range(0, len(mc.zone), 2)] or None
        self.gate = MotionGate(mc.width, mc.pixel_threshold, mc.min_area, mc.alpha, zone=zone) if mc.enabled \
            else None
        self.zone_cache: np.ndarray | None = None
        self.detected = 0  # frames the detector ran on (the rest: a still scene, skipped by the gate)
        self.last_detect_t = float("-inf")
        self.last_face_t = float("-inf")
        self.last_faces: list[np.ndarray] = []

    def _load_recognizer(self, pipeline: FacePipeline | None = None) -> Recognizer:
        """The gallery and its classifier; on reload, on the running pipeline (no interpreter rebuilt)."""
        r, m = self.cfg.recognition, self.cfg.models
        rec = Recognizer(Path(r.gallery), m.dir or None, m.embedder or None, m.threads,
                         self.params, pipeline=pipeline, embed_batch=m.embed_batch)
        if self.cfg.recognition.threshold > 0:
            rec.classifier.threshold = self.cfg.recognition.threshold
        log.info("gallery %s: %d people, threshold %.4f, model %s", self.cfg.recognition.gallery,
                 len(rec.gallery.people), rec.classifier.threshold, rec.pipeline.embedder.name)
        return rec

    def _log_backends(self) -> None:
        """Say once what each model really runs on (XNNPACK or not, threads): read, not assumed."""
        models = [*self.pipeline.detector.nets.values(), self.pipeline.embedder.model]
        for m in models:
            log.info("model %s: %s", m.spec.file, runtime.describe(m.backend()))

    def _join_rule(self) -> float | JoinRule:
        """When a stranger's visit joins a stored visitor: the model's rule shared over the visitors stored
        (strangers stay apart as the store grows); a fixed split distance for a model without one."""
        try:
            return JoinRule.for_model(self.recognizer.gallery.meta["embedder"], self.cfg.models.dir or None)
        except (VisitorError, KeyError) as e:
            log.warning("learning: %s; visits join within the split distance", e)
            return self.tracker.split_distance

    def _split_distance(self) -> float:
        """How far a face may be from its track's own faces before it is somebody else."""
        if self.cfg.recognition.split_distance > 0:
            return self.cfg.recognition.split_distance
        measured = self.recognizer.gallery.meta.get("outlier_distance")  # the model's 5 %-FAR distance
        return float(measured) if measured else 1.5 * self.recognizer.classifier.threshold

    # ------------------------------------------------------------------ lifecycle
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self._ask_reload("SIGHUP"))

    def run(self) -> int:
        self.capture.start()
        self.publisher.on_command = lambda text: self._ask_reload("command")  # "Reload gallery" on the dashboard
        self.publisher.on_name = self._ask_naming  # from paho's thread to the visitors thread
        self.publisher.on_wrong = self._ask_correction  # "Wrong name" on the dashboard: to the store worker
        if self.cfg.learning.enabled:
            threading.Thread(target=self._visitors_thread, name="visitors", daemon=True).start()
        self.publisher.set_people(self.recognizer.gallery.people)
        self.publisher.start()
        self.notifier.ready(f"serving {self.source_name}")
        log.info("ready: source %s, publishing %s, run %s", self.source_name,
                 f"to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt.host else "on stdout", self.run_id)
        last_status = 0.0
        code = 0
        try:
            while not self.stop_event.is_set():
                self.store_worker.drain()
                while not self.corrections_asked.empty():
                    self._correct(*self.corrections_asked.get())
                self.loader.drain()
                if self.reload_event.is_set() and not self.loader.pending:
                    self.reload_event.clear()
                    self._reload_in_background(self._reload_why())
                if self.publisher.fatal:
                    log.error("%s", self.publisher.fatal)
                    code = EXIT_CONFIG
                    break
                frame = self.capture.get(timeout=0.5)
                if frame is None:
                    if self.capture.finished:
                        if self.capture.error:
                            code = EXIT_FAILED
                        break
                elif not self._process_isolated(frame):
                    code = EXIT_FAILED
                    break
                now = time.monotonic()
                self._presence(now)  # with frames or without: a dead camera empties it
                if self._check_stall(now):
                    if self.notifier.watchdog_interval is None:  # nobody else will restart us
                        code = EXIT_STALLED
                        break
                else:
                    self.notifier.watchdog()
                self.publisher.flush()
                if now >= self.next_gallery_check and not self.loader.pending:
                    self.next_gallery_check = now + 2.0  # enroll/forget/visitors name: picked up without a signal
                    self._reload_in_background(None)
                if now - last_status >= self.cfg.mqtt.status_interval:
                    last_status = now
                    self._publish_status()
            self._final_announcements()
        finally:
            self.notifier.stopping()
            self.capture.stop()
            self._flush_store()
            self.publisher.person([])
            final = self.status() | {"source": "stopped" if not self.capture.error else
                                     f"failed: {self.capture.error}"}
            self.publisher.status(final)
            log.info("final status: %s", json.dumps(final))
            undelivered = self.publisher.stop(timeout=10.0)
        if code == 0 and not self.capture.source.live and (undelivered or self.publisher.dropped):
            log.error("%d event(s) of this file were never delivered (%d dropped, %d still queued)",
                      undelivered + self.publisher.dropped, self.publisher.dropped, undelivered)
            code = EXIT_UNDELIVERED
        return code

    def _publish_status(self) -> None:
        status = self.status()
        self.publisher.status(status)
        self.notifier.status(f"{status['fps']} fps, source {status['source']}, {status['events']} events"
                             + (f", {self.stalled}" if self.stalled else ""))

    def _check_stall(self, now: float) -> bool:
        """True while a source call has been blocked for longer than source.stall_seconds."""
        blocked = self.capture.blocked_for(now)
        if blocked <= self.cfg.source.stall_seconds:
            if self.stalled:
                log.warning("source %s moves again after a stall", self.source_name)
                self.stalled = None
            return False
        if not self.stalled:
            self.stalled = (f"stalled: the source has been inside {self.capture.busy_in}() for {blocked:.0f} s "
                            f"(source.stall_seconds = {self.cfg.source.stall_seconds:g}); watchdog pings stopped")
            log.error("%s", self.stalled)
            self._publish_status()
        return True

    def _process_isolated(self, frame: Frame) -> bool:
        """One frame that fails (a degenerate face, an OpenCV error) is logged and counted, not fatal;
        False once max_frame_errors have failed in a row."""
        try:
            if frame.cut:
                self._final_announcements()
                self.tracker.cut()
                if self.gate is not None:
                    self.gate.reset()
            self.process(frame.rgb, frame.t, frame.captured, frame.small)
        except Exception:
            self.frame_errors += 1
            self.errors_in_a_row += 1
            limit = self.cfg.recognition.max_frame_errors
            if self.frame_errors <= 3 or self.frame_errors % 100 == 0:
                log.exception("frame %d failed (%d so far, %d in a row; the daemon stops at %d in a row)",
                              frame.index, self.frame_errors, self.errors_in_a_row, limit)
            if self.errors_in_a_row >= limit:
                log.error("%d frames in a row failed: stopping", self.errors_in_a_row)
                return False
            return True
        self.errors_in_a_row = 0
        return True

    def _final_announcements(self) -> None:
        now = time.monotonic()
        for tr in self.tracker.finish(self._decide):
            if not self.cfg.recognition.debug_every_frame and self.tracker.announce(tr, tr.last_t, final=True):
                assert tr.decision is not None
                self._publish(tr, tr.decision, now)
        self._learn(final=True)

    # ------------------------------------------------------------------ learning (opt-in)
    def _keep_candidate(self, tr: Track, crop: np.ndarray, emb: np.ndarray) -> None:
        """A face of a track that may turn out to be an unknown visitor: kept (the best few) until its visit ends."""
        self.visits.add(tr, (crop_quality(tr.scores[-1], float(tr.box[2] - tr.box[0]), crop), crop, emb))

    def _learn(self, final: bool = False) -> None:
        """Stranger visits that have ended (``final``: every one, the scene ends) go to the visitor store:
        one visit each, however many tracks it took, written by the store worker, never on this loop."""
        for faces in self.visits.ended(self.tracker, final):
            self._store_visit(faces)

    def _store_visit(self, faces: list[Face]) -> None:
        g, lc = self.recognizer.gallery, self.cfg.learning
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
        self._visitors_changed()  # the dashboard's image follows the store (visitors thread)
        self.publisher.learning({"message": f"{v.id}: {v.visits} visit(s), last seen {v.last_seen}",
                                 "visitor": v.id, "visits": v.visits, "first_seen": v.first_seen,
                                 "last_seen": v.last_seen})

    def _flush_store(self) -> None:
        """At shutdown: the visits still waiting are stored (a bounded wait: a store locked by another
        facepi must not hold up a stop), and said before the publisher goes."""
        left = self.store_worker.close(STORE_FLUSH_SECONDS)
        if left:
            log.error("learning: %d visit(s) not stored: the visitor store stayed locked for %g s", left,
                      STORE_FLUSH_SECONDS)
        self.store_worker.drain()
        self.loader.close(0.0)

    # ------------------------------------------------------------------ "that wasn't X" (Wrong name)
    def _ask_correction(self, name: str, seq: int, run: str) -> None:
        """From paho's thread: handed to the loop, which owns the recent recognitions."""
        self.corrections_asked.put((name, seq, run))

    def _correct(self, name: str, seq: int, run: str) -> None:
        """Correct the recognition the dashboard showed (by its run and seq), on the store worker."""
        hit = next((r for r in self.recognized if r[0] == run and r[1] == seq), None)
        if hit is None or hit[2] != name:
            why = ("not one of this run's recent recognitions" if hit is None else
                   f"event {seq} named {hit[2]}, not {name}")
            self.publisher.answer("wrong_name", False, f"not corrected: {why}")
            log.warning("correction of %s (event %d) refused: %s", name, seq, why)
            return
        _run, _seq, _name, face, when = hit
        gallery, models = self.cfg.recognition.gallery, self.cfg.models.dir or None

        def correct() -> tuple[bool, str]:
            try:
                done = family.correct(gallery, name, face[None], f"event {seq} at {self.cfg.camera_id}, {when}",
                                      "ha", models)
            except Exception as e:  # a refusal or an unreadable gallery: said, never fatal
                return False, str(e)
            return True, done.change.summary

        self.store_worker.submit(correct, lambda result: self._corrected(name, *result))

    def _corrected(self, name: str, ok: bool, said: str) -> None:
        self.publisher.answer("wrong_name", ok, f"recorded: {said}" if ok else f"{name} not corrected: {said}")
        (log.info if ok else log.warning)("correction: %s", said)
        if ok:
            self._ask_reload("correction")

    # ------------------------------------------------------------------ the dashboard's visitor (learning)
    def _ask_naming(self, vid: str, name: str) -> None:
        try:
            self.visitor_work.put_nowait((vid, name))
        except queue.Full:  # rate-limited upstream: only a stuck store fills this
            self.publisher.answer("name_visitor", False, f"{vid} not named: too many namings waiting", vid)

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
        while not self.stop_event.is_set():
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
        crops (the same guarded path as the CLI, never forced), say what happened on ``learning``."""
        lc = self.cfg.learning
        try:
            vid, report = name_visitor(Path(lc.path), vid, Path(self.cfg.recognition.gallery), name,
                                       models_dir=self.cfg.models.dir or None, origin="mqtt")
        except Exception as e:  # a bad name, no such visitor, a locked or unreadable file: said, never fatal
            self.publisher.answer("name_visitor", False, f"{vid} not named: {e}", vid)
            log.warning("learning: %s not named: %s", vid, e)
            return
        if not report.added or report.problems:
            why = "; ".join(report.problems or report.notes or report.failures) or "nothing to add"
            self.publisher.answer("name_visitor", False, f"{vid} not named {report.name}: {why}", vid)
            log.warning("learning: %s not named %s: %s", vid, report.name, why)
            return
        self.publisher.answer("name_visitor", True, f"{vid} enrolled as {report.name} ({report.added} face(s))",
                              vid)
        log.info("learning: %s enrolled as %s (%d face(s))", vid, report.name, report.added)
        self._ask_reload("learning")

    def _book(self) -> VisitorBook:
        """The visitors, in the gallery's database (an earlier [learning] path .npz is imported once)."""
        return VisitorBook(self.cfg.recognition.gallery, self.cfg.learning.path)

    def _show_newest_visitor(self, force: bool = False) -> None:
        """The dashboard shows the most recently seen visitor not yet named, forgotten or expired, or
        nothing (empty retained messages). Faces leave the Pi only with ``mqtt.snapshot``: without it the
        topics are cleared once at start (what an earlier configuration left) and never published."""
        lc = self.cfg.learning
        if not self.cfg.mqtt.snapshot:
            if force:
                self.publisher.visitor(b"", None)
            return
        stamp = store.stamp(self.cfg.recognition.gallery)
        if stamp != self.visitor_stamp:
            self.visitors_seen = self._book().visitors()
            self.visitor_stamp = stamp
        oldest = datetime.now(UTC) - timedelta(days=lc.keep_days)
        v = next((v for v in self.visitors_seen if datetime.fromisoformat(v.last_seen) >= oldest), None)
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

    def _gallery_stamp(self) -> tuple[Any, ...] | None:
        """What changes when the gallery does: for a database, its journal's version, read only when its
        files changed (visits stored there change the files, not the gallery); for an .npz, its stat."""
        files = store.stamp(self.cfg.recognition.gallery)
        if files != self.files_seen:
            self.files_seen = files
            db = store.Store(self.cfg.recognition.gallery)
            try:
                self.version_seen = db.version() if db.path.exists() else files
            except Exception:  # unreadable now: the reload says why
                self.version_seen = files
        return (self.version_seen,)

    def _ask_reload(self, why: str) -> None:
        """Ask the main loop to reload; every reason asked before it does is named in its log line."""
        if why not in self.reload_reasons:
            self.reload_reasons.append(why)
        self.reload_event.set()

    def _reload_why(self) -> str:
        why = ", ".join(self.reload_reasons) or "reload"
        self.reload_reasons.clear()
        return why

    def _reload(self) -> None:
        """Reload now, on the caller's thread (for a caller that needs the new gallery at once)."""
        self._swap_gallery((self.gallery_generation, *self._load_gallery(self._reload_why())))

    def _reload_in_background(self, why: str | None) -> None:
        """Load the gallery on the loader thread and swap it in on the loop, at its next pass.
        ``why`` None: only if the gallery's file changed (enroll, forget, visitors name)."""
        seen, generation = self.gallery_stamp, self.gallery_generation

        def load() -> tuple[int, str, tuple[int, int] | None, Recognizer | None, str | None] | None:
            if why is None and self._gallery_stamp() == seen:
                return None
            return (generation, *self._load_gallery(why or "gallery changed"))

        self.loader.submit(load, self._swap_gallery)

    def _load_gallery(self, why: str) -> tuple[str, tuple[int, int] | None, Recognizer | None, str | None]:
        stamp = self._gallery_stamp()  # before the read: a change during it is seen at the next check
        try:
            return why, stamp, self._load_recognizer(self.pipeline), None
        except Exception as e:  # keep serving with the old gallery, and say so where it is seen
            return why, stamp, None, f"gallery not reloaded: {e}"

    def _swap_gallery(self, loaded: tuple[int, str, tuple[int, int] | None, Recognizer | None, str | None] | None
                      ) -> None:
        if loaded is None:
            return
        generation, why, stamp, rec, error = loaded
        if generation != self.gallery_generation:  # a reload on the loop came in between: this one is older
            self._ask_reload(why)
            return
        self.gallery_generation += 1
        self.gallery_stamp = stamp
        if rec is None:
            self.reload_error = error
            log.error("%s: %s", why, error)
            if "command" in why:  # the dashboard's button gets an answer
                self.publisher.answer("command", False, error or "gallery not reloaded")
            return
        self.recognizer, self.reload_error = rec, None
        self.tracker.split_distance = self._split_distance()
        self.publisher.set_people(rec.gallery.people)
        log.info("%s: gallery reloaded", why)
        if "command" in why:
            self.publisher.answer("command", True, f"gallery reloaded: {len(rec.gallery.people)} people")

    # ------------------------------------------------------------------ per frame
    def process(self, rgb: np.ndarray, t: float, captured: float, small: np.ndarray | None = None) -> None:
        """One frame: detect (on ``small`` where the camera made one), track, embed, announce."""
        t0 = time.perf_counter()
        roi = self._where_to_detect(rgb, t)
        if roi is None:
            boxes, points = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        else:
            boxes, points = self._detect(rgb, roi, small)
            self.detected += 1
            self.last_detect_t = t
            self.det_ms.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()
        self.frames += 1
        now = time.monotonic()
        self.frame_times.append(now)
        while self.frame_times and now - self.frame_times[0] > FPS_WINDOW:
            self.frame_times.popleft()
        visible = self.tracker.update(boxes, points, t, (rgb.shape[1], rgb.shape[0]))
        todo = [tr for tr in visible if self.tracker.wants_embedding(tr, t) or self.cfg.recognition.debug_every_frame]
        if todo:
            crops = np.stack([self.pipeline.align(rgb, tr.box, tr.landmarks) for tr in todo])
            embs = self.pipeline.embedder.embed(crops)
            self.emb_ms.append((time.perf_counter() - t1) * 1000)
            for tr, crop, emb in zip(todo, crops, embs, strict=True):
                joined = self.tracker.add_embedding(tr, emb, t, self._decide)
                if self.cfg.learning.enabled:
                    self._keep_candidate(joined, crop, emb)
                if joined is not tr:  # somebody else took this spot: a new track
                    visible[visible.index(tr)] = joined
                if self.cfg.recognition.debug_every_frame:
                    self._publish(joined, self._decide(emb), captured)
        for tr in visible:
            self._maybe_announce(tr, t, captured, rgb)
        self._remember_faces(visible, t)
        if self.visits.tracks or self.visits.visits:
            self._learn()
        self.clock = (t, time.monotonic())
        self._presence(self.clock[1])

    def _remember_faces(self, visible: list[Track], t: float) -> None:
        """The faces to keep looking for when missed for a moment (see _where_to_detect); not one the
        quality gate has turned down: it is no reason to detect on every frame."""
        faces = [tr.box.copy() for tr in visible if not self.tracker.ignored(tr)]
        if faces:
            self.last_face_t, self.last_faces = t, faces
        elif self.last_faces and visible:
            turned_down = np.stack([tr.box for tr in visible])
            self.last_faces = [b for b in self.last_faces if iou_matrix(b[None], turned_down).max() < self.tracker.iou]

    def _presence(self, now: float) -> None:
        """The ``person`` topic: the names seen within presence_hold of *now*, in real time. Frame time
        runs on from the last frame by the real seconds since (a live camera's frame time is monotonic
        time already), so when frames stop (camera dead, reconnecting, stalled) the names expire as they
        would in an empty view: Home Assistant's presence goes OFF, while the Source sensor says why."""
        names = self.tracker.names_in_view(self.clock[0] + (now - self.clock[1]))
        if names != self.last_names:
            self.last_names = names
            self.publisher.person(names)

    def _where_to_detect(self, rgb: np.ndarray, t: float) -> tuple[int, int, int, int] | None:
        """The motion gate's answer: None (skip this frame), or the rectangle to run the detector on."""
        h, w = rgb.shape[:2]
        full = (0, 0, w, h)
        if self.gate is None:
            return full
        m = self.gate.update(rgb)
        if m.light:  # most of the view changed (a new scene, light, someone right at the lens): look at it all
            return full
        live = [tr.box for tr in self.tracker.tracks.values()
                if t - tr.last_t <= self.tracker.track_gap and not self.tracker.ignored(tr)]
        if not live and t - self.last_face_t <= self.tracker.visit_gap:
            live = self.last_faces  # a face missed for a moment: keep looking, or a still visitor's
            # next sighting could come a still_interval later, after their visit has ended
        if not m.moving and not live:
            return full if t - self.last_detect_t >= self.cfg.motion.still_interval else None
        mc = self.cfg.motion
        roi = region(([m.box] if m.box is not None else []) + live, rgb.shape, mc.region_margin,
                     2.0 * self.cfg.detection.minsize)
        win = window(roi, rgb.shape) if roi is not None else None
        if win is None or (win[2] - win[0]) * (win[3] - win[1]) > mc.region_max_share * w * h:
            return full
        return win

    def _detect(self, rgb: np.ndarray, roi: tuple[int, int, int, int],
                small: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN on the region (of the camera's small copy, or downscaled here); boxes and landmarks in
        frame pixels, zone applied."""
        if small is not None:  # the ISP already made it (picamera2 lores): no resize on the CPU
            scale = small.shape[1] / rgb.shape[1]
            x1, y1, x2, y2 = (int(v * scale) for v in roi)
            part, ox, oy = small[y1:y2, x1:x2], x1 / scale, y1 / scale
        else:
            x1, y1, x2, y2 = roi
            scale, ox, oy = self.cfg.detection.downscale, x1, y1
            part = rgb[y1:y2, x1:x2]
            if scale < 1.0:
                part = cv2.resize(part, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, points = self.pipeline.detector.detect(np.ascontiguousarray(part))
        if len(boxes):
            boxes = boxes.copy()
            boxes[:, :4] = boxes[:, :4] / scale + [ox, oy, ox, oy]
            points = points / scale + [ox, oy]
            if self.gate is not None and self.gate.zone_points:
                zone = self._zone(rgb.shape[:2])
                cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2).astype(int), 0, rgb.shape[1] - 1)
                cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2).astype(int), 0, rgb.shape[0] - 1)
                keep = zone[cy, cx].astype(bool)
                boxes, points = boxes[keep], points[keep]
        return boxes, points

    def _zone(self, shape: tuple[int, int]) -> np.ndarray:
        if self.zone_cache is None or self.zone_cache.shape != shape:
            assert self.gate is not None
            self.zone_cache = self.gate.zone_mask(shape)
        return self.zone_cache

    def _decide(self, embedding: np.ndarray) -> Prediction:
        return self.recognizer.predict(embedding[None])[0]

    def _maybe_announce(self, tr: Track, t: float, captured: float, rgb: np.ndarray | None = None) -> None:
        if not self.cfg.recognition.debug_every_frame and self.tracker.announce(tr, t):
            assert tr.decision is not None
            self._publish(tr, tr.decision, captured, rgb)

    def _publish(self, tr: Track, d: Prediction, captured: float, rgb: np.ndarray | None = None) -> None:
        self.seq += 1
        x1, y1, x2, y2 = (float(v) for v in tr.box[:4])
        event = {"camera": self.cfg.camera_id, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "name": d.name, "score": round(d.score, 4), "distance": round(d.distance, 4),
                 "box": [round(x1), round(y1), round(x2 - x1), round(y2 - y1)], "track_id": tr.id,
                 "seq": self.seq, "run": self.run_id, "model": self.pipeline.embedder.name}
        self.publisher.event(event)
        self.latency_ms.append((time.monotonic() - captured) * 1000)
        if self.cfg.mqtt.snapshot and rgb is not None:
            self.publisher.snapshot(snapshot_jpeg(rgb, tr.box, "Stranger" if d.name == "unknown" else d.name))
        log.info("event %d: %s (distance %.3f, track %d)", self.seq, d.name, d.distance, tr.id)
        if d.name != UNKNOWN and tr.embeddings:  # what a "that wasn't X" for this event would correct
            face = vote(tr.embeddings, tr.weights)
            self.recognized.append((self.run_id, self.seq, d.name, face, event["timestamp"]))
            if store.exists(self.cfg.recognition.gallery):  # for `facepi gallery wrong NAME` (never migrates)
                db, camera = store.Store(self.cfg.recognition.gallery), self.cfg.camera_id
                self.store_worker.submit(lambda: db.remember(d.name, face, camera), lambda _: None)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        up = now - self.started
        while self.frame_times and now - self.frame_times[0] > FPS_WINDOW:
            self.frame_times.popleft()
        window = min(FPS_WINDOW, up)
        return {"camera": self.cfg.camera_id, "run": self.run_id,
                "fps": round(len(self.frame_times) / window, 2) if window > 0 else 0.0,
                "detect_ms_p50": _pct(self.det_ms, 50), "detect_ms_p95": _pct(self.det_ms, 95),
                "embed_ms_p50": _pct(self.emb_ms, 50), "embed_ms_p95": _pct(self.emb_ms, 95),
                "latency_ms_p50": _pct(self.latency_ms, 50), "latency_ms_p95": _pct(self.latency_ms, 95),
                "frames": self.frames, "frames_dropped": self.capture.dropped,
                "detect_share": round(self.detected / self.frames, 3) if self.frames else None,
                "source": self.stalled or self.capture.state, "source_failures": self.capture.failures,
                "frame_errors": self.frame_errors, "track_splits": self.tracker.splits,
                "queue_depth": self.publisher.queue_depth, "events": self.seq,
                "visitor_store_queue": self.store_worker.pending, "visitor_store_dropped": self.store_worker.dropped,
                "events_dropped": self.publisher.dropped, "uptime_s": round(up, 1),
                "people": len(self.recognizer.gallery.people), "model": self.pipeline.embedder.name,
                "reload_error": self.reload_error}
