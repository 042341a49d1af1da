"""Photos from a phone into the gallery: streamed to a private folder within the size and count limits,
looked at (a header that is not a photo is refused before any model loads), then enrolled through
``facepi.identity.family.enrol`` with the models loaded for this upload only: the idle page stays small."""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from facepi.identity import family
from facepi.identity.store import load as load_gallery

BUSY_WAIT = 3.0  # seconds the page's changes wait for another writer's lock before "the gallery is busy"


class UploadError(Exception):
    """A plain message for the page; nothing was changed."""


def private_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="facepi-web-"))  # 0700, under the service's PrivateTmp


def safe_name(k: int, filename: str) -> str:
    """The upload's file name as the gallery will show it (letters, digits, . _ -), numbered to be unique."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "photo").name)[-60:].lstrip(".") or "photo"
    return f"{k + 1}-{stem}"


def check_photos(paths: list[Path]) -> list[str]:
    """The files that are not photos facepi reads, named: refused before any model loads."""
    from PIL import Image

    from facepi.vision.images import MAX_PIXELS, MAX_WHOLE_PIXELS, READERS, too_large  # registers HEIF

    bad = []
    for p in paths:
        shown = p.name.split('-', 1)[-1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.MAX_IMAGE_PIXELS = None  # the size is judged here, from the header, in the page's words
                with Image.open(p) as im:
                    fmt, (w, h) = im.format, im.size
        except Exception:
            bad.append(f"{shown}: not a photo (expected JPEG, HEIC, PNG, WebP, ...)")
            continue
        if fmt not in READERS:
            bad.append(f"{shown}: a {fmt} image is not a photo facepi reads (JPEG, HEIC, PNG, WebP, ...)")
        elif w * h > MAX_PIXELS or (fmt not in ("JPEG", "MPO") and w * h > MAX_WHOLE_PIXELS):
            limit = MAX_PIXELS if w * h > MAX_PIXELS else MAX_WHOLE_PIXELS
            bad.append(too_large(shown, w, h, limit, "a photo" if limit == MAX_PIXELS else f"a {fmt} photo"))
    return bad


def pipeline_for(gallery: Path, models_dir: str, threads: int) -> Any:
    """The models the gallery was made with (or the manifest's default for a first enrolment)."""
    from facepi.identity.store import Store
    from facepi.vision.photos import load_pipeline

    meta = load_gallery(gallery).meta if Store(gallery).has_gallery() or gallery.is_file() else {}
    return load_pipeline(models_dir or None, meta.get("embedder"), threads, meta.get("alignment"), meta.get("margin"))


def enrol(gallery: Path, name: str, photos: list[Path], models_dir: str, threads: int,
          face: int | None = None) -> tuple[list[tuple[str, str]], list[dict]]:
    """Enrol ``photos`` as ``name`` (origin web, never forced). Returns the lines to show (kind, text)
    and the group photos waiting for "which face" (photo, faces, preview PNG, path)."""
    from facepi.identity import store

    store.BUSY_WAIT[0] = BUSY_WAIT  # another writer's lock: "busy" after a few seconds, not a page hanging for 30
    bad = check_photos(photos)  # in the upload's own process (receive.elsewhere), before any model loads
    photos = [p for p in photos if not any(b.startswith(p.name.split("-", 1)[-1] + ":") for b in bad)]
    if not photos:
        raise UploadError("; ".join(bad))
    pipeline = pipeline_for(gallery, models_dir, threads)
    out = family.enrol(gallery, name, pipeline, photos, "web", face=face, models_dir=models_dir or None)
    groups = _groups(pipeline, out.report.skipped + out.report.problems, photos) if face is None else []
    report, lines = out.report, [("note", s) for s in out.settings] + [("error", b) for b in bad]
    shown = {str(p): p.name.split("-", 1)[-1] for p in photos}

    def plain(text: str) -> str:  # the private upload folder is nobody's business
        for path, short in shown.items():
            text = text.replace(path, short)
        text = re.sub(r"Choose one with --face N, counted from the left \([^)]*\), or --largest-face",
                      "pick the face by its number on the picture below (counted from the left)", text)
        if "far from" in text and "other photos" in text:  # the page never overrides a check: say where one can
            text += (". Nothing was added: if it really is them, add it on the Pi with "
                     "'facepi enroll --force' (recorded as forced in the journal), or upload a clearer photo")
        return text

    lines += [("error", plain(f)) for f in report.failures]
    lines += [("note", plain(n)) for n in report.notes]
    lines += [("error", plain(p)) for p in report.problems]
    lines += [("note", "skipped: " + plain(s)) for s in report.skipped]
    if out.done is not None:
        lines.insert(0, ("ok", f"Enrolled {report.added} photo(s) of {report.name} "
                               f"({out.done.gallery.counts().get(report.name, 0)} in the gallery); undo is one press"))
    else:
        lines.insert(0, ("error", f"{name} not enrolled; the gallery is unchanged"))
    return lines, groups


def _groups(pipeline: Any, skipped: list[str], photos: list[Path]) -> list[dict]:
    """For each group photo skipped: its faces numbered from the left on a preview (as --face N counts)."""
    from facepi.vision.faces import preview_png
    from facepi.vision.images import DECODE_PIXELS, read_photo

    out = []
    for p in photos:
        if not any(s.startswith(f"{p}: ") and " faces; " in s for s in skipped):
            continue
        r = pipeline.photo(p, "central", accept_aligned=False, embed=False)
        if r.error or len(r.boxes) < 2:
            continue
        rgb, _ = read_photo(p, DECODE_PIXELS)  # as enrol reads it: the boxes are on this image
        out.append({"photo": p.name.split("-", 1)[-1], "faces": len(r.boxes), "path": p,
                    "png": preview_png(rgb, r.boxes)})
    return out


def keep_alone(photo: Path) -> Path:
    """``photo`` moved into a private folder of its own (the rest of its upload is deleted at once)."""
    alone = private_dir() / photo.name
    shutil.move(photo, alone)
    return alone


def clean(folder: Path | None) -> None:
    if folder is not None and folder.name.startswith("facepi-web-"):
        shutil.rmtree(folder, ignore_errors=True)

