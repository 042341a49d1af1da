"""The gallery the daemon recognises with, kept fresh without a restart and without stopping the loop.

A reload is asked for (SIGHUP, the dashboard's button, a correction or naming done
here) or found (the gallery's journal moved on: ``facepi enroll``, ``forget``, a
household record). The file is read on a loader thread; the new recognizer is swapped
in on the loop at its next pass. A reload that fails keeps the old gallery and says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from facepi.door.worker import Worker
from facepi.identity import store
from facepi.identity.recognize import Recognizer

CHECK_SECONDS = 2.0  # how often the gallery's files are looked at for a change made elsewhere
Loaded = tuple[int, str, Any, Recognizer | None, str | None]  # generation, why, stamp, recognizer, error


class GalleryReload:
    """``ask(why)`` from any thread; ``poll(now)`` on the loop; ``now()`` reloads on the caller's thread.
    ``load()`` builds a recognizer on the running pipeline; ``swapped(why, recognizer, error)`` runs on
    the loop with the result."""

    def __init__(self, gallery: str, load: Callable[[], Recognizer],
                 swapped: Callable[[str, Recognizer | None, str | None], None]) -> None:
        self.gallery, self.load, self.swapped = gallery, load, swapped
        self.loader = Worker("facepi-gallery", 1)  # file reads, off the frame loop
        self.event = threading.Event()
        self.reasons: list[str] = []  # why the next reload happens: SIGHUP, command, gallery changed
        self.files_seen: Any = None
        self.version_seen: Any = None
        self.seen = self._stamp()
        self.generation = 0  # bumped by every swap: a reload started before one is stale
        self.next_check = 0.0

    def ask(self, why: str) -> None:
        """Ask the loop to reload; every reason asked before it does is named in its log line."""
        if why not in self.reasons:
            self.reasons.append(why)
        self.event.set()

    def poll(self, now: float) -> None:
        """On the loop, every pass: swap in what the loader finished, start what was asked or found."""
        self.loader.drain()
        if self.event.is_set() and not self.loader.pending:
            self.event.clear()
            self._background(self._why())
        if now >= self.next_check and not self.loader.pending:
            self.next_check = now + CHECK_SECONDS  # enroll/forget/visitors name: picked up without a signal
            self._background(None)

    def now(self) -> None:
        """Reload now, on the caller's thread (for a caller that needs the new gallery at once)."""
        self._swap((self.generation, *self._load(self._why())))

    def close(self) -> None:
        self.loader.close(0.0)

    def _stamp(self) -> tuple[Any, ...]:
        """What changes when the gallery does: for a database, its journal's version, read only when its
        files changed (visits stored there change the files, not the gallery); for an .npz, its stat."""
        files = store.stamp(self.gallery)
        if files != self.files_seen:
            self.files_seen = files
            db = store.Store(self.gallery)
            try:
                self.version_seen = db.version() if db.path.exists() else files
            except Exception:  # unreadable now: the reload says why
                self.version_seen = files
        return (self.version_seen,)

    def _why(self) -> str:
        why = ", ".join(self.reasons) or "reload"
        self.reasons.clear()
        return why

    def _background(self, why: str | None) -> None:
        """Load on the loader thread; swapped in at the loop's next pass. ``why`` None: only if changed."""
        seen, generation = self.seen, self.generation

        def load() -> Loaded | None:
            if why is None and self._stamp() == seen:
                return None
            return (generation, *self._load(why or "gallery changed"))

        self.loader.submit(load, self._swap)

    def _load(self, why: str) -> tuple[str, Any, Recognizer | None, str | None]:
        stamp = self._stamp()  # before the read: a change during it is seen at the next check
        try:
            return why, stamp, self.load(), None
        except Exception as e:  # keep serving with the old gallery, and say so where it is seen
            return why, stamp, None, f"gallery not reloaded: {e}"

    def _swap(self, loaded: Loaded | None) -> None:
        if loaded is None:
            return
        generation, why, stamp, rec, error = loaded
        if generation != self.generation:  # a reload on the loop came in between: this one is older
            self.ask(why)
            return
        self.generation += 1
        self.seen = stamp
        self.swapped(why, rec, error)
