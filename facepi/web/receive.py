"""The upload routes: photos streamed to a private folder (the CSRF token is the form's first field and
is checked before any file is written; size and count limited as they arrive), then enrolled; a group
photo waits in the session, with its numbered preview, for "which face"."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from facepi.identity.gallery import check_name
from facepi.web import pages, uploads
from facepi.web.auth import same_token

FIELD_LIMIT = 4096  # bytes of a text field of the upload form
ONE_AT_A_TIME = asyncio.Lock()  # one enrolment process at a time: each loads the models (~100-150 MB)
PENDING = 3  # group photos a session keeps waiting for "which face"; a newer one drops the oldest
NO_MEMORY = ("that photo needs more memory than the page has: resize it or use facepi enroll on the Pi "
             "(nothing was changed)")


async def elsewhere(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a process of its own, started for this upload and ended after it: the models (and
    the memory decoding phone photos takes) never stay in the page's process, which stays small when idle."""
    import concurrent.futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    async with ONE_AT_A_TIME:
        try:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:  # the child was killed: the unit's MemoryMax (the kernel's OOM killer)
            raise uploads.UploadError(NO_MEMORY) from None


async def upload(page: Any, request: web.Request) -> web.Response:
    w, session = page.cfg.web, request["session"]
    most = int(w.max_upload_mb * 2**20)
    if request.content_length is not None and request.content_length > most * w.max_photos + 2**20:
        return _refused(request, 413, f"the upload is {request.content_length / 2**20:.0f} MB; at most "
                                      f"{w.max_photos} photos of {w.max_upload_mb:g} MB each")
    folder = uploads.private_dir()
    try:
        name, photos = await _receive(request, folder, most, w.max_photos, session.csrf)
        name = check_name(name)
        if not photos:
            raise uploads.UploadError("no photo in the upload")
        lines, groups = await elsewhere(uploads.enrol, page.gallery, name, photos, page.cfg.models.dir,
                                        page.cfg.models.threads)
        for g in groups:  # only the group photo itself waits, in a folder of its own; the rest go now
            g["token"] = secrets.token_urlsafe(16)
            session.pending[g["token"]] = {"path": uploads.keep_alone(g["path"]), "png": g["png"]}
            while len(session.pending) > PENDING:
                drop(session.pending.pop(next(iter(session.pending))))
        return page.html(request, f"Photos of {name}", pages.upload_result(name, lines, groups, session.csrf),
                         "/people")
    except _Forged:
        return _refused(request, 403, "the form's token is missing or stale (reload the page): nothing was changed")
    except page_problems() as e:
        return _refused(request, 400, page.said(e))
    finally:
        uploads.clean(folder)


def drop(pending: dict) -> None:
    """A waiting group photo is deleted (its own private folder)."""
    uploads.clean(Path(pending["path"]).parent)


class _Forged(Exception):
    pass


def page_problems() -> tuple[type[Exception], ...]:
    from facepi.identity.gallery import GalleryError
    from facepi.identity.visitors import VisitorError

    return (uploads.UploadError, GalleryError, VisitorError, ValueError)


def _refused(request: web.Request, status: int, text: str) -> web.Response:
    """A plain error page (with the navigation); nothing was changed."""
    body = f'<div class="flash error">{pages.e(text)}</div><p>Nothing was changed.</p><p><a href="/people">Back</a></p>'
    s = request["session"]
    return web.Response(status=status, text=pages.layout("Upload refused", body, "/people", s.csrf),
                        content_type="text/html")


async def _receive(request: web.Request, folder: Path, most: int, count: int, csrf: str) -> tuple[str, list[Path]]:
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise uploads.UploadError("not a photo upload (expected a multipart form)") from None
    name, photos, token_ok = "", [], False
    try:
        while (part := await reader.next()) is not None:
            if part.name == "csrf":
                token_ok = same_token((await part.read_chunk(FIELD_LIMIT)).decode("utf-8", "replace"), csrf)
            elif not token_ok:
                raise _Forged
            elif part.name == "name":
                name = (await part.read_chunk(FIELD_LIMIT)).decode("utf-8", "replace")
            elif part.name == "photos":
                if not part.filename:
                    continue
                if len(photos) >= count:
                    raise uploads.UploadError(f"more than {count} photos in one upload; send at most {count}")
                path, size = folder / uploads.safe_name(len(photos), part.filename), 0
                with open(path, "wb") as f:
                    while chunk := await part.read_chunk(2**16):
                        size += len(chunk)
                        if size > most:
                            raise uploads.UploadError(f"{part.filename[:60]}: larger than {most / 2**20:g} MB")
                        f.write(chunk)
                photos.append(path)
    except (uploads.UploadError, _Forged):
        raise
    except Exception as e:  # aiohttp's parser on a malformed body: a plain error, nothing written
        raise uploads.UploadError(f"the upload could not be read ({str(e).strip()[:120]})") from None
    if not token_ok:
        raise _Forged
    return name, photos


async def upload_face(page: Any, request: web.Request) -> web.Response:
    session, form = request["session"], request["form"]
    p = session.pending.pop(str(form.get("token", "")), None)
    if p is None:
        return _refused(request, 400, "that group photo is no longer waiting (upload it again)")
    try:
        name = check_name(str(form.get("name", "")))
        face = str(form.get("face", "")).strip()
        if not face.isdigit() or not 1 <= int(face[:6]) <= 999:
            raise uploads.UploadError(f"pick a face by its number on the picture (got {face[:20]!r})")
        lines, _ = await elsewhere(uploads.enrol, page.gallery, name, [p["path"]], page.cfg.models.dir,
                                   page.cfg.models.threads, int(face[:6]))
        return page.html(request, f"Photos of {name}", pages.upload_result(name, lines, [], session.csrf), "/people")
    except page_problems() as e:
        return _refused(request, 400, page.said(e))
    finally:
        drop(p)
