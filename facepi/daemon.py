"""``facepi run``: the door-camera loop. source -> detect -> track -> embed -> decide -> publish.

Start-up does everything that can be done once (models, gallery, classifier,
source, broker connection); the per-frame loop only detects, matches tracks,
embeds the tracks that need it and publishes news. SIGTERM/SIGINT stop it
cleanly (queue flushed, ``offline`` published, exit 0); SIGHUP reloads the
gallery without a restart. A file or folder source ends like a clean shutdown.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facepi.classify import Prediction
from facepi.config import Config
from facepi.detect import DetectorParams
from facepi.faces import FacePipeline
from facepi.notify import Notifier
from facepi.publish import make_publisher
from facepi.source import Capture, make_source
from facepi.track import Track, Tracker
from facepi.workflow import Recognizer

log = logging.getLogger("facepi.daemon")


def _pct(values: deque[float], q: float) -> float | None:
    return round(float(np.percentile(list(values), q)), 1) if values else None


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        det = cfg.detection
        self.params = DetectorParams(det.minsize, tuple(det.thresholds), det.factor)  # type: ignore[arg-type]
        self.recognizer = self._load_recognizer()
        self.pipeline = self.recognizer.pipeline
        r = cfg.recognition
        self.tracker = Tracker(r.iou, r.visit_gap, r.vote_frames, r.reidentify_seconds, r.cooldown)
        self.publisher = make_publisher(cfg)
        self.capture = Capture(make_source(cfg.source.uri, cfg.source.width, cfg.source.height, cfg.source.fps),
                               cfg.source.fast, cfg.source.reconnect_max_seconds)
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.seq = 0
        self.det_ms: deque[float] = deque(maxlen=300)
        self.emb_ms: deque[float] = deque(maxlen=300)
        self.latency_ms: deque[float] = deque(maxlen=300)
        self.frames = 0
        self.started = time.monotonic()
        self.last_names: list[str] | None = None
        self.reload_error: str | None = None

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

    # ------------------------------------------------------------------ lifecycle
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())

    def run(self) -> int:
        self.capture.start()
        self.publisher.start()
        self.notifier.ready(f"serving {self.cfg.source.uri}")
        log.info("ready: source %s, publishing %s", self.cfg.source.uri,
                 f"to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt.host else "on stdout")
        last_status = 0.0
        code = 0
        try:
            while not self.stop_event.is_set():
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    self._reload()
                if self.publisher.fatal:
                    log.error("%s", self.publisher.fatal)
                    code = 2
                    break
                frame = self.capture.get(timeout=0.5)
                if frame is None:
                    if self.capture.finished:
                        break
                else:
                    self.process(frame.rgb, frame.t, frame.captured)
                now = time.monotonic()
                self.notifier.watchdog()
                if now - last_status >= self.cfg.mqtt.status_interval:
                    last_status = now
                    status = self.status()
                    self.publisher.status(status)
                    self.notifier.status(f"{status['fps']} fps, source {status['source']}, "
                                         f"{status['events']} events")
            for tr in self.tracker.finish(self._decide):
                self._maybe_announce(tr, tr.last_t, time.monotonic())
        finally:
            self.notifier.stopping()
            self.capture.stop()
            self.publisher.person([])
            final = self.status() | {"source": "stopped"}
            self.publisher.status(final)
            log.info("final status: %s", json.dumps(final))
            self.publisher.stop(timeout=10.0)
        return code

    def _reload(self) -> None:
        try:
            rec = self._load_recognizer(self.pipeline)
        except Exception as e:  # keep serving with the old gallery, and say so where it is seen
            self.reload_error = f"gallery not reloaded: {e}"
            log.error("SIGHUP: %s", self.reload_error)
            return
        self.recognizer, self.reload_error = rec, None
        log.info("SIGHUP: gallery reloaded")

    # ------------------------------------------------------------------ per frame
    def process(self, rgb: np.ndarray, t: float, captured: float) -> None:
        t0 = time.perf_counter()
        scale = self.cfg.detection.downscale
        small = rgb if scale >= 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, points = self.pipeline.detector.detect(small)
        if scale < 1.0 and len(boxes):
            boxes[:, :4] /= scale
            points = points / scale
        t1 = time.perf_counter()
        self.det_ms.append((t1 - t0) * 1000)
        self.frames += 1
        visible = self.tracker.update(boxes, points, t)
        todo = [tr for tr in visible if self.tracker.wants_embedding(tr, t) or self.cfg.recognition.debug_every_frame]
        if todo:
            crops = np.stack([self.pipeline.align(rgb, tr.box, tr.landmarks) for tr in todo])
            embs = self.pipeline.embedder.embed(crops)
            self.emb_ms.append((time.perf_counter() - t1) * 1000)
            for tr, crop, emb in zip(todo, crops, embs, strict=True):
                tr.crop = crop
                self.tracker.add_embedding(tr, emb, t, self._decide)
                if self.cfg.recognition.debug_every_frame:
                    self._publish(tr, self._decide(emb), captured)
        for tr in visible:
            self._maybe_announce(tr, t, captured)
        names = self.tracker.names_in_view(t)
        if names != self.last_names:
            self.last_names = names
            self.publisher.person(names)

    def _decide(self, embedding: np.ndarray) -> Prediction:
        return self.recognizer.predict(embedding[None])[0]

    def _maybe_announce(self, tr: Track, t: float, captured: float) -> None:
        if not self.cfg.recognition.debug_every_frame and self.tracker.announce(tr, t):
            assert tr.decision is not None
            self._publish(tr, tr.decision, captured)

    def _publish(self, tr: Track, d: Prediction, captured: float) -> None:
        self.seq += 1
        x1, y1, x2, y2 = (float(v) for v in tr.box[:4])
        event = {"camera": self.cfg.camera_id, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "name": d.name, "score": round(d.score, 4), "distance": round(d.distance, 4),
                 "box": [round(x1), round(y1), round(x2 - x1), round(y2 - y1)], "track_id": tr.id,
                 "seq": self.seq, "model": self.pipeline.embedder.name}
        self.publisher.event(event)
        self.latency_ms.append((time.monotonic() - captured) * 1000)
        if self.cfg.mqtt.snapshot and tr.crop is not None:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(tr.crop, cv2.COLOR_RGB2BGR))
            if ok:
                self.publisher.snapshot(jpeg.tobytes())
        log.info("event %d: %s (distance %.3f, track %d)", self.seq, d.name, d.distance, tr.id)

    def status(self) -> dict[str, Any]:
        up = time.monotonic() - self.started
        return {"camera": self.cfg.camera_id, "fps": round(self.frames / up, 2) if up > 0 else 0.0,
                "detect_ms_p50": _pct(self.det_ms, 50), "detect_ms_p95": _pct(self.det_ms, 95),
                "embed_ms_p50": _pct(self.emb_ms, 50), "embed_ms_p95": _pct(self.emb_ms, 95),
                "latency_ms_p50": _pct(self.latency_ms, 50), "latency_ms_p95": _pct(self.latency_ms, 95),
                "frames": self.frames, "frames_dropped": self.capture.dropped,
                "source": self.capture.state, "source_failures": self.capture.failures,
                "queue_depth": self.publisher.queue_depth, "events": self.seq,
                "events_dropped": self.publisher.dropped, "uptime_s": round(up, 1),
                "people": len(self.recognizer.gallery.people), "reload_error": self.reload_error}
