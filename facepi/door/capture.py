"""``Capture`` runs a frame source (``facepi.door.sources``) in its own thread and keeps only the
newest frame, so a slow frame never builds a backlog; when a live source fails it logs,
reopens with backoff and carries on. A read that blocks anyway shows as a stall.
"""

from __future__ import annotations

import logging
import threading
import time

from facepi.door.frames import Frame
from facepi.door.sources import Shot, Source, SourceError
from facepi.redact import mask

log = logging.getLogger(__name__)


class Capture:
    """Runs a source in its own thread and keeps only the newest frame.

    The thread alone opens, reads and closes the source, so a close can never
    land in the middle of a read. It never dies silently: whatever a live camera
    raises (a ``SourceError``, an OpenCV error, an odd pixel format) is logged,
    counted and answered by reopening with backoff; a file or folder that fails
    ends with ``error`` set. ``blocked_for()`` says how long the thread has been
    inside one ``open()`` or ``read()``: the daemon's stall detector.

    Files and folders are paced at their own frame rate, like a live camera, unless
    ``fast``: then every frame is handed over (the reader waits for the consumer).
    """

    def __init__(self, source: Source, fast: bool = False, reconnect_max: float = 30.0, name: str = "") -> None:
        self.source, self.fast, self.reconnect_max = source, fast, reconnect_max
        self.name = mask(name) or type(source).__name__
        self.cond = threading.Condition()
        self.frame: Frame | None = None
        self.ended = False
        self.error: str | None = None  # why the source ended early (files, folders) or the thread failed
        self.stopping = False
        self.state = "starting"
        self.dropped = 0
        self.failures = 0
        self.count = 0
        self.busy_since: float | None = None  # monotonic time the thread entered open() or read()
        self.busy_in = ""
        self.opened = False
        self.last_failure = ""
        self.thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        """A file or folder is opened here (an error is the caller's); a live camera is opened by the
        thread, with backoff, so a camera that is not there yet does not stop the daemon."""
        if not self.source.live:
            self.source.open()
            self.opened = True
            self.state = "streaming"
        else:
            self.state = "opening"
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            log.warning("source %s is still inside %s() after %.0f s; left to the process exit (a source is never "
                        "closed under a read)", self.name, self.busy_in, timeout)

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet taken; None on timeout or at the end."""
        with self.cond:
            if self.frame is None and not self.ended:
                self.cond.wait(timeout)
            frame, self.frame = self.frame, None
            self.cond.notify_all()
            return frame

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.ended and self.frame is None

    def blocked_for(self, now: float | None = None) -> float:
        """Seconds the capture thread has been inside one source call (0 when it is not)."""
        since = self.busy_since
        return 0.0 if since is None else (time.monotonic() if now is None else now) - since

    def _call(self, what: str, fn):  # type: ignore[no-untyped-def]
        self.busy_in, self.busy_since = what, time.monotonic()
        try:
            return fn()
        finally:
            self.busy_since = None

    def _close(self) -> None:
        if self.opened:
            self.opened = False
            try:
                self.source.close()
            except Exception as e:  # a close that fails must not stop the reopening
                log.warning("closing source %s: %s", self.name, mask(str(e)))

    def _failed(self, e: Exception, backoff: float) -> None:
        """Count and show a failure; the journal gets each different cause once, not every retry."""
        self.failures += 1
        text = mask(str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}")
        self.state = f"reconnecting ({text})"
        level = logging.WARNING if text != self.last_failure else logging.DEBUG
        self.last_failure = text
        if isinstance(e, SourceError):
            log.log(level, "source failed: %s; reopening in %.1f s", text, backoff)
        else:  # not a failure we know: keep the traceback for the journal
            log.log(level, "source failed unexpectedly: %s; reopening in %.1f s", text, backoff, exc_info=e)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # a bug in the loop itself: end, and say so (the daemon exits non-zero)
            log.exception("capture thread failed")
            self.error = mask(f"capture thread failed: {type(e).__name__}: {e}")
        finally:
            self._close()
            with self.cond:
                self.ended = True
                self.state = "stopped" if self.stopping else f"failed ({self.error})" if self.error else "ended"
                self.cond.notify_all()

    def _loop(self) -> None:
        backoff = 0.5
        start_wall: float | None = None
        start_t = 0.0
        while not self.stopping:
            if not self.opened:  # live sources only: files are opened by start()
                try:
                    self._call("open", self.source.open)
                except Exception as e:
                    self._failed(e, backoff)
                    if self._sleep(backoff):
                        return
                    backoff = min(backoff * 2, self.reconnect_max)
                    continue
                self.opened = True
                self.state = "streaming"
                self.last_failure = ""
                log.info("source %s %s", self.name, f"reopened ({self.failures} failures so far)" if self.failures
                         else "opened")
            try:
                got = self._call("read", self.source.read)
            except Exception as e:
                if not self.source.live:
                    self.error = mask(str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}")
                    log.error("source %s: %s", self.name, self.error)
                    return
                self._failed(e, backoff)
                self._close()
                if self._sleep(backoff):
                    return
                backoff = min(backoff * 2, self.reconnect_max)
                continue
            if got is None:
                return
            backoff = 0.5
            shot = got if isinstance(got, Shot) else Shot(*got)
            t = shot.t
            if not self.source.live and not self.fast:  # pace files like a camera
                if start_wall is None:
                    start_wall, start_t = time.monotonic(), t
                delay = start_wall + (t - start_t) - time.monotonic()
                if delay > 0 and self._sleep(delay):
                    return
            captured = shot.captured if shot.captured is not None else time.monotonic()
            frame = Frame(shot.rgb, t, captured, self.count, getattr(self.source, "cuts", False), shot.small, shot.fmt,
                          shot.luma)
            self.count += 1
            with self.cond:
                if self.fast and not self.source.live:
                    while self.frame is not None and not self.stopping:
                        self.cond.wait(0.5)
                if self.frame is not None:
                    self.dropped += 1
                self.frame = frame
                self.cond.notify_all()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stopping."""
        with self.cond:
            self.cond.wait_for(lambda: self.stopping, timeout=seconds)
            return self.stopping
