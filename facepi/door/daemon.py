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
import signal
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from facepi.config import Config
from facepi.door.announce import Announcer
from facepi.door.capture import Capture
from facepi.door.frames import Frame
from facepi.door.gating import DetectGate
from facepi.door.household import DoorHousehold, blank_if_missing
from facepi.door.learning import Learning
from facepi.door.liveness import DoorLiveness
from facepi.door.notify import Notifier
from facepi.door.publish import make_publisher
from facepi.door.reload import GalleryReload
from facepi.door.sources import make_source
from facepi.door.track import Tracker
from facepi.door.worker import Worker
from facepi.identity.classify import Prediction
from facepi.identity.recognize import Recognizer
from facepi.identity.visitors import JoinRule, VisitorError
from facepi.redact import mask, with_password
from facepi.vision import runtime
from facepi.vision.detect import DetectorParams
from facepi.vision.faces import FacePipeline

log = logging.getLogger(__name__)
FPS_WINDOW = 60.0  # seconds: status.fps is the rate over the last minute, so a stall shows at once
EXIT_FAILED, EXIT_CONFIG, EXIT_UNDELIVERED, EXIT_STALLED = 1, 2, 3, 4
STORE_QUEUE = 16  # visits waiting for the visitor store (each at most 2 x crops_per_visitor crops, ~40 KB each)


def _pct(values: deque[float], q: float) -> float | None:
    return round(float(np.percentile(list(values), q)), 1) if values else None


class Daemon:
    """The loop, and the parts it hands work to: ``gating`` (where to detect), the ``tracker``,
    ``announcer`` (events, presence), ``learning`` (visitors, namings, corrections) and ``reloads``."""

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
                               reidentify_seconds=r.reidentify_seconds, cooldown=r.cooldown,
                               confirm_seconds=r.confirm_seconds, track_gap=r.track_gap,
                               presence_hold=r.presence_hold, split_distance=self._split_distance(),
                               unknown_min_frames=r.unknown_min_frames, min_face_score=r.min_face_score,
                               max_landmark_error=r.max_landmark_error, min_face_in_view=r.min_face_in_view,
                               min_face_width=float(det.minsize), threshold=self.recognizer.classifier.threshold)
        self.publisher = make_publisher(cfg)
        src = cfg.source
        self.source_name = mask(src.uri)
        self.capture = Capture(make_source(with_password(src.uri, src.username, cfg.camera_password), src.width,
                                           src.height, src.fps, src.read_timeout_seconds, src.max_bad_frames,
                                           cfg.detection.downscale),
                               src.fast, src.reconnect_max_seconds, name=self.source_name)
        self.stop_event = threading.Event()
        self.run_id = uuid.uuid4().hex[:12]  # per start: subscribers tell a restart from lost events
        self.det_ms: deque[float] = deque(maxlen=300)
        self.emb_ms: deque[float] = deque(maxlen=300)
        self.frame_times: deque[float] = deque()
        self.frames = 0
        self.frame_errors = 0
        self.errors_in_a_row = 0
        self.started = time.monotonic()
        self.reload_error: str | None = None
        self.stalled: str | None = None
        self.store_worker = Worker("facepi-visitors", STORE_QUEUE)  # visitor store writes, off the frame loop
        self.gating = DetectGate(cfg, self.tracker)
        self.announcer = Announcer(cfg, self.publisher, self.tracker, self.run_id,
                                   self.pipeline.embedder.name)
        self.reloads = GalleryReload(r.gallery, lambda: self._load_recognizer(self.pipeline), self._swapped)
        # the model never changes while the daemon runs (a gallery of another model is refused): built once
        join_rule = self._join_rule() if cfg.learning.enabled else self.tracker.split_distance
        self.learning = Learning(cfg, self.publisher, self.store_worker, lambda: self.recognizer.gallery, join_rule,
                                 self.announcer.recognized, self.reloads.ask, self.stop_event)
        if cfg.learning.enabled:
            self.announcer.visitor_of = self.learning.visitor_of
        self.household = DoorHousehold.for_daemon(cfg, self.recognizer.gallery.meta.get("embedder"))
        self.liveness = DoorLiveness(cfg, save=self._save_calibration) if cfg.liveness.enabled else None
        self.tracker.liveness = self.liveness is not None

    @property
    def latency_ms(self) -> deque[float]:
        return self.announcer.latency_ms

    def _load_recognizer(self, pipeline: FacePipeline | None = None) -> Recognizer:
        """The gallery and its classifier; on reload, on the running pipeline (no interpreter rebuilt)."""
        r, m = self.cfg.recognition, self.cfg.models
        rec = Recognizer(Path(r.gallery), m.dir or None, m.embedder or None, m.threads, self.params,
                         pipeline=pipeline, embed_batch=m.embed_batch, gallery=blank_if_missing(self.cfg))
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
        signal.signal(signal.SIGHUP, lambda *_: self.reloads.ask("SIGHUP"))

    def run(self) -> int:
        self.capture.start()
        self.publisher.on_command = lambda text: self.reloads.ask("command")  # "Reload gallery" on the dashboard
        self.publisher.on_name = self.learning.ask_naming  # from paho's thread to the visitors thread
        self.publisher.on_wrong = self.learning.ask_correction  # "Wrong name" on the dashboard: to the loop
        self.publisher.on_show = self.learning.ask_show  # the dashboard's visitor select
        self.learning.start()
        self.publisher.set_people(self.recognizer.gallery.people, self.recognizer.gallery.keys())
        self.publisher.start()
        if self.household:
            self.household.start()
        self.notifier.ready(f"serving {self.source_name}")
        log.info("ready: source %s, publishing %s, run %s", self.source_name,
                 f"to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt.host else "on stdout", self.run_id)
        last_status = 0.0
        code = 0
        try:
            while not self.stop_event.is_set():
                self.store_worker.drain()
                self.learning.corrections()
                self.reloads.poll(time.monotonic())
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
                self.announcer.presence(now)  # with frames or without: a dead camera empties it
                if self._check_stall(now):
                    if self.notifier.watchdog_interval is None:  # nobody else will restart us
                        code = EXIT_STALLED
                        break
                else:
                    self.notifier.watchdog()
                self.publisher.flush()
                if now - last_status >= self.cfg.mqtt.status_interval or (self.household and self.household.changed()):
                    last_status = now
                    self._publish_status()
            self._final_announcements()
        finally:
            self.notifier.stopping()
            self.capture.stop()
            self.learning.flush()
            self.announcer.flush()
            self.reloads.close()
            if self.household:
                self.household.stop()
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
                self.gating.reset()
            self.process(frame, frame.t, frame.captured)
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
        if self.liveness:  # a visit cut short is judged on the frames it has (a member's never on none)
            self.liveness.finish(list(self.tracker.tracks.values()), self.tracker,
                                 self.recognizer.classifier.threshold)
        self.announcer.final(self._decide)
        self.learning.learn(self.tracker, final=True)

    # ------------------------------------------------------------------ the gallery, kept fresh
    def _reload(self) -> None:
        """Reload now, on this thread."""
        self.reloads.now()

    def _swapped(self, why: str, rec: Recognizer | None, error: str | None) -> None:
        if rec is None:
            self.reload_error = error
            log.error("%s: %s", why, error)
            if "command" in why:  # the dashboard's button gets an answer
                self.publisher.answer("command", False, error or "gallery not reloaded")
            return
        self.recognizer, self.reload_error = rec, None
        if self.liveness:  # `facepi liveness calibrate` writes beside the gallery: a new calibration is taken up
            self.liveness.reload()
        self.tracker.split_distance = self._split_distance()
        self.tracker.threshold = rec.classifier.threshold
        self.publisher.set_people(rec.gallery.people, rec.gallery.keys())
        log.info("%s: gallery reloaded", why)
        if "command" in why:
            self.publisher.answer("command", True, f"gallery reloaded: {len(rec.gallery.people)} people")

    # ------------------------------------------------------------------ per frame
    def process(self, rgb: Frame | np.ndarray, t: float, captured: float, small: np.ndarray | None = None) -> None:
        """One frame: detect (where the gate says, on the camera's small copy where it made one), track,
        embed, announce. The frame is made RGB only when the detector runs or a face is in view: an empty
        door's frame never is."""
        frame = rgb if isinstance(rgb, Frame) else Frame(rgb, t, captured, small=small)
        t0 = time.perf_counter()
        roi = self.gating.where(frame, t)
        if roi is None:
            boxes, points = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        else:
            boxes, points = self.gating.detect(self.pipeline.detector, frame.rgb, roi, t, frame.detect_copy())
            self.det_ms.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()
        self.frames += 1
        now = time.monotonic()
        self.frame_times.append(now)
        while self.frame_times and now - self.frame_times[0] > FPS_WINDOW:
            self.frame_times.popleft()
        visible = self.tracker.update(boxes, points, t, frame.size)
        self.announcer.ended(captured)
        debug = self.cfg.recognition.debug_every_frame
        todo = [tr for tr in visible if self.tracker.wants_embedding(tr, t) or debug]
        if todo:
            crops = np.stack([self.pipeline.align(frame.rgb, tr.box, tr.landmarks) for tr in todo])
            embs = self.pipeline.embedder.embed(crops)
            self.emb_ms.append((time.perf_counter() - t1) * 1000)
            for tr, crop, emb in zip(todo, crops, embs, strict=True):
                joined = self.tracker.add_embedding(tr, emb, t, self._decide)
                joined.crop = crop
                self.learning.keep_candidate(joined, crop, emb)
                if joined is not tr:  # somebody else took this spot: a new track
                    visible[visible.index(tr)] = joined
                if debug:
                    self.announcer.publish(joined, self._decide(emb), captured)
        if self.liveness and visible:
            self.liveness.check(frame.rgb, visible, t, self.tracker, self.recognizer.classifier.threshold,
                                self.cfg.learning.enabled)
        for tr in visible:
            self.announcer.maybe(tr, t, captured, frame.rgb)
        self.gating.remember(visible, t)
        self.learning.learn(self.tracker)
        self.announcer.frame_done(t)

    def _save_calibration(self, cal: Any) -> None:
        """The freshened calibration, written beside the gallery by the store worker (never on the loop);
        one calibrated again meanwhile (``facepi liveness calibrate``: a new anchor) is kept and taken up."""
        from facepi.identity import liveness as rules

        gallery = self.cfg.recognition.gallery

        def save() -> bool:
            try:
                stored = rules.load(gallery, cal.camera_id)
                if stored is not None and stored.anchor != cal.anchor:
                    return False
                rules.save(gallery, cal)
            except Exception as e:  # kept in memory; said, never fatal
                log.error("liveness: the freshened calibration could not be saved in %s: %s", gallery, e)
            return True

        self.store_worker.submit(save, lambda ok: ok or (self.liveness and self.liveness.reload()))

    def _decide(self, embedding: np.ndarray) -> Prediction:
        return self.recognizer.predict(embedding[None])[0]

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
                "latency_ms_p50": _pct(self.announcer.latency_ms, 50),
                "latency_ms_p95": _pct(self.announcer.latency_ms, 95),
                "time_to_name_ms_p50": _pct(self.announcer.time_to_name_ms, 50),
                "time_to_name_ms_p95": _pct(self.announcer.time_to_name_ms, 95),
                "corrections": self.tracker.corrections,
                "frames": self.frames, "frames_dropped": self.capture.dropped,
                "detect_share": round(self.gating.detected / self.frames, 3) if self.frames else None,
                "source": self.stalled or self.capture.state, "source_failures": self.capture.failures,
                "frame_errors": self.frame_errors, "track_splits": self.tracker.splits,
                "queue_depth": self.publisher.queue_depth, "events": self.announcer.seq,
                "visitor_store_queue": self.store_worker.pending, "visitor_store_dropped": self.store_worker.dropped,
                "events_dropped": self.publisher.dropped, "uptime_s": round(up, 1),
                "people": len(self.recognizer.gallery.people), "model": self.pipeline.embedder.name,
                "reload_error": self.reload_error} \
            | ({"household": self.household.status()} if self.household else {}) \
            | ({"liveness": self.liveness.status()} if self.liveness else {})
