"""What the commands share: where the gallery and config are, progress lines, the face pipeline."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_GALLERY = "/var/lib/facepi/gallery.npz"  # kept in gallery.db beside it (an old .npz is imported)


def progress(label: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)
    return report


def pipeline(args: argparse.Namespace, mode: str | None = None, margin: int | None = None):
    from facepi.vision.detect import DetectorParams
    from facepi.vision.photos import load_pipeline

    return load_pipeline(args.models, args.embedder, args.threads, mode, margin,
                         DetectorParams(minsize=args.minsize))


def config_path(args: argparse.Namespace) -> Path:
    from facepi import config

    return getattr(args, "config", None) or config.DEFAULT_PATH


def store_paths(args: argparse.Namespace) -> tuple[str, str]:
    """The gallery and the old visitor store the daemon uses: [recognition] gallery and [learning] path."""
    from facepi import config

    return config.store_paths(config_path(args), require_file=getattr(args, "config", None) is not None)


def gallery_path(args: argparse.Namespace) -> Path:
    """--gallery, else $FACEPI_GALLERY, else the config's [recognition] gallery: the one the daemon serves.
    With none of these (no config file either) the built-in default is used, and said once."""
    chosen = args.gallery or os.environ.get("FACEPI_GALLERY")
    if chosen:
        return Path(chosen)
    path = Path(store_paths(args)[0])
    if not config_path(args).exists() and not getattr(args, "_default_said", False):
        args._default_said = True
        print(f"facepi: note: no --gallery and no config file ({config_path(args)}): using the default gallery "
              f"{path}", file=sys.stderr)
    return path


def stored_in(path: Path) -> str:
    """Where a gallery path's people really are: a ``.npz`` path keeps them in the database beside it."""
    from facepi.identity.store import db_path

    db = db_path(path)
    return str(path) if db == path else f"{path} (kept in {db.name} beside it)"


def store_path(args: argparse.Namespace) -> Path | None:
    """An earlier visitors.npz (imported into the gallery's database on first use): --store, else the
    config's [learning] path. One named with --store that is not there (nor imported: its .bak) is said."""
    if args.store:
        legacy = Path(args.store)
        if not legacy.is_file() and not legacy.with_name(legacy.name + ".bak").is_file():
            print(f"facepi: note: --store {legacy}: no such file, nothing to import (visitors live in the "
                  f"gallery's database)", file=sys.stderr)
        return legacy
    return Path(store_paths(args)[1])


def book(args: argparse.Namespace):
    from facepi.identity.visitor_book import VisitorBook

    return VisitorBook(gallery_path(args), store_path(args))


def load_config(args: argparse.Namespace):
    from facepi import config

    overrides = {"source.uri": getattr(args, "source", None), "recognition.gallery": getattr(args, "classifier", None),
                 "mqtt.host": getattr(args, "mqtt_host", None), "mqtt.port": getattr(args, "mqtt_port", None),
                 "camera_id": getattr(args, "camera_id", None), "camera_name": getattr(args, "camera_name", None),
                 "source.fast": True if getattr(args, "fast", False) else None,
                 "log_level": getattr(args, "log_level", None)}
    path = args.config or config.DEFAULT_PATH
    return config.load(path, overrides=overrides, require_file=args.config is not None)


def print_calibration(meta: dict) -> None:
    cal = meta.get("calibration") or {}
    print(f"Threshold: {meta.get('threshold'):.4f}: {cal.get('note', '')}")


def plain_rule(meta: dict) -> str:
    """The gallery's rule in words a family uses: how often a stranger's photo is named as one of them.
    The operating point, margin and leave-one-out evidence behind it are for --verbose and gallery check."""
    cal = meta.get("calibration") or {}
    far = cal.get("target_far", meta.get("target_far"))
    if cal.get("source") not in ("model", "gallery") or not far:
        return ("How often strangers are mistaken for someone here is not measured for this model "
                "(its manifest has no operating points).")
    return (f"Strangers are mistaken for someone here {'at most ' if cal['source'] == 'gallery' else ''}"
            f"about 1 time in {round(1 / far):,} photos.")


def face_number(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a face number counted from the left: 1, 2, ...")
    return n
