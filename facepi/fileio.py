"""Atomic file writes: a crash or a full disk never leaves a half-written file we own."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it into place, fsync the folder.

    ``mode``: the file's permissions (e.g. 0o600 for biometric templates); default
    0666 less the umask, so shared models stay readable by the daemon's user.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise OSError (naming the folder) now, before minutes of work, if ``path`` cannot be written.

    A folder that does not exist is refused, never made: a typo in ``--gallery`` must not enrol someone
    into a new gallery where no door looks."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise FileNotFoundError(2, "no such folder (nothing created: a typo in the path? make the folder "
                                   "first if it is meant)", str(folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(13, "folder not writable (the gallery is replaced by a new file there)", str(folder))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
