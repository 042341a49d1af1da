"""An earlier ``.npz`` gallery beside the database: imported once, and said when it turns up again.

A ``gallery.npz`` is imported on first use and renamed ``.npz.bak``. One that appears later beside a
database in use (a restore by copying the old format back) was silently ignored: it is now said, once
per process, with what to do (``facepi gallery restore``, ``facepi.identity.backup``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from facepi.identity.gallery import Conflict, Gallery, GalleryError

Store = Any  # a facepi.identity.store.Store (not imported: the store imports this module)

log = logging.getLogger(__name__)
_warned: set[Path] = set()


def migrate(store: Store) -> Path | None:
    """Import an earlier ``.npz`` gallery beside the database (first use); it is kept as ``.bak``.
    Returns the backup's path, or None when there was nothing to import."""
    src = store.legacy
    if src is None or src.suffix != ".npz" or not src.is_file():
        return None
    base = store.version()  # before looking: another facepi's import after this point is a Conflict
    if store.has_gallery():
        stray_npz(store)
        return None
    try:
        gallery = Gallery.load_npz(src)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
    except (GalleryError, FileNotFoundError):
        if not src.is_file():  # another facepi (a second camera's instance) imported it meanwhile
            return None
        raise
    gallery.row_ids = [None] * len(gallery.labels)
    try:
        store.commit(gallery, base, "migration", "migration",
                     f"imported {src.name} ({len(gallery.people)} people, {len(gallery.labels)} photos)",
                     {"from": str(src), "sha256": digest})
    except Conflict:  # imported by another facepi first: one import, one backup
        return None
    backup = src.with_name(src.name + ".bak")
    os.replace(src, backup)
    return backup


def stray_npz(store: Store) -> str | None:
    """Say (once per process) that an ``.npz`` beside a database in use is not used; returns the warning."""
    src = store.legacy
    if src is None or not src.is_file() or src in _warned:
        return None
    _warned.add(src)
    text = (f"{src} is ignored: the gallery is kept in {store.path} (a .npz is imported only into a new "
            f"gallery). To bring that file's gallery back: facepi gallery restore {src} --gallery {store.path}; "
            f"else move it away")
    log.warning("%s", text)
    return text
