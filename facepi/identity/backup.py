"""A backup restored into a gallery: ``facepi gallery restore BACKUP``.

**Restore** (``facepi gallery restore BACKUP``). Copying a backup over ``gallery.db`` by hand goes wrong
in a way nobody sees: SQLite keeps recent changes in ``gallery.db-wal`` beside the database, and a
``-wal`` left from before the copy is replayed onto the restored file (the state before the restore, or
a crashed one, comes back). A restore through the store never replaces the file: the backup is read
(a ``.db`` through SQLite's own backup API, with its own ``-wal`` if it has one; or an ``.npz`` export),
checked (model, every embedding), and written as one journaled change, ``restore``, so ``facepi gallery
undo`` takes it back and the daemon reloads it like any change. Only when the live database cannot be
read at all is it moved aside (``gallery.db``, ``-wal`` and ``-shm`` together, to ``*.damaged-<time>``)
and the backup written as a new database.

An earlier ``.npz`` imported, and a stray one noticed: ``facepi.identity.legacy``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from facepi.identity.gallery import Gallery, GalleryError

log = logging.getLogger(__name__)


def read_backup(backup: str | os.PathLike[str]) -> Gallery:
    """The gallery in a backup (``.db``, read through SQLite's backup API, or ``.npz``), every row checked."""
    from facepi.identity.store import Store

    src = Path(backup)
    if not src.is_file():
        raise GalleryError(f"{src}: no such backup file")
    if src.suffix == ".npz":
        return Gallery.load_npz(src)
    try:
        disk = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        mem = sqlite3.connect(":memory:")
        try:
            disk.backup(mem)  # a consistent copy, its own -wal included
        finally:
            disk.close()
        gallery = Store(src)._gallery(mem)
        mem.close()
    except sqlite3.DatabaseError as e:
        raise GalleryError(f"{src}: not a facepi gallery database ({e})") from None
    if gallery.quarantined:
        raise GalleryError(f"{src}: {len(gallery.quarantined)} damaged row(s), e.g. row {gallery.quarantined[0][0]} "
                           f"of {gallery.quarantined[0][1]} ({gallery.quarantined[0][2]}); not restored")
    return gallery


def restore(path: str | os.PathLike[str], backup: str | os.PathLike[str], origin: str = "cli") -> str:
    """Restore ``backup`` into the gallery at ``path`` as one journaled change (undoable); a live database that
    cannot be read is moved aside first. Returns what was done, in words."""
    from facepi.identity import family
    from facepi.identity.store import Store

    gallery = read_backup(backup)
    store = Store(path)
    aside = ""
    if store.path.exists():
        try:
            current = store.gallery() if store.has_gallery() else None
        except GalleryError as e:
            aside = _move_aside(store.path, str(e))
            current = None
        if current is not None and current.model != gallery.model:
            raise GalleryError(f"{backup}: made with embedding model {gallery.model!r}, the gallery uses "
                               f"{current.model!r}; not restored")
    gallery.row_ids = [None] * len(gallery.labels)
    gallery.against = [(p, e, s, None) for p, e, s, _ in gallery.against]
    # The faces come from the backup; the rule that names them never does: a backup's own threshold or
    # target (a file anyone could have edited) would let strangers in. The rule is the household's current
    # one, chosen again by the model's measured rule as after every change.
    from facepi.identity.classify import DEFAULT_TARGET_FAR
    from facepi.identity.enrol import recalibrate

    kept = current.meta.get("target_far") if current is not None else None
    gallery.meta["target_far"] = float(kept) if kept else DEFAULT_TARGET_FAR
    recalibrate(gallery)
    done = family.replace(path, gallery, "restore", origin,
                          f"restored {Path(backup).name} ({len(gallery.people)} people, {len(gallery.labels)} photos)")
    return aside + f"{done.change.summary} as change {done.change.id}; undo: facepi gallery undo"


def _move_aside(db: Path, why: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f, f.with_name(f"{f.name}.damaged-{stamp}"))
            moved.append(f.name)
    log.warning("%s could not be read (%s): moved aside (%s)", db, why, ", ".join(moved))
    return f"{db} could not be read ({why}): moved aside as {', '.join(m + '.damaged-' + stamp for m in moved)}; "
