"""A background thread for work that may wait on a file or a lock, with results handed back to the loop."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


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
