"""The page's server (aiohttp): its routes, the login, the guard every other route passes, and the
changes, each through ``facepi.identity.family`` with origin ``web``.

Nothing is served but these routes: no static folder, no file by path, nothing of the configuration
(the page is started without the camera's or the broker's credentials: ``config.load(secrets=False)``).
Before login every route but ``/login`` and ``/style.css`` answers with the login page's address; every
POST needs the session's CSRF token and, when the browser sends one, an ``Origin`` of this host.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web

from facepi.config import Config, listen
from facepi.identity import events as door_events
from facepi.identity import family
from facepi.identity.gallery import GalleryError
from facepi.identity.store import Store, open_store
from facepi.identity.visitors import VisitorError
from facepi.redact import mask
from facepi.web import pages, receive, uploads
from facepi.web.auth import LoginLimit, Password, Sessions, same_token
from facepi.web.respond import jpeg, plain, see_other, whole

log = logging.getLogger(__name__)
COOKIE, LOGIN_COOKIE = "facepi_session", "facepi_login"
OPEN = ("/login", "/style.css", "/favicon.ico")
FORM_LIMIT = 256 * 1024
PROBLEMS = (GalleryError, VisitorError, ValueError, uploads.UploadError)


class Page:
    """One household's page over one gallery database."""

    def __init__(self, cfg: Config, password: Password, gallery: str | Path | None = None) -> None:
        self.cfg, self.password = cfg, password
        self.gallery = Path(gallery or cfg.recognition.gallery)
        self.store = Store(self.gallery)
        if self.gallery.suffix == ".npz" and self.gallery.is_file() and not self.store.path.exists():
            open_store(self.gallery)  # an earlier .npz gallery moves into its database (journaled), as at any change
        self.sessions = Sessions(cfg.web.session_hours, on_drop=lambda s: [receive.drop(p) for p in
                                                                           s.pending.values()])
        self.limit = LoginLimit()
        self.checking = asyncio.Lock()
        self.models = cfg.models.dir or None

    def app(self) -> web.Application:
        # a form is small: 256 kB at most is read into memory (a login before any password too); the photos of
        # /upload are streamed to disk within [web] max_upload_mb x max_photos instead (receive.py)
        app = web.Application(middlewares=[self.headers, self.guard], client_max_size=FORM_LIMIT)
        get, post = app.router.add_get, app.router.add_post
        get("/", self.home)
        get("/style.css", self.style)
        get("/favicon.ico", lambda request: web.Response(status=204))
        get("/login", self.login_page)
        post("/login", self.login)
        post("/logout", self.logout)
        get("/people", self.people)
        get("/events", self.events)
        get("/visitors", self.visitors)
        get("/journal", self.journal)
        get("/people/confirm", self.confirm)
        # numbers of at most 18 digits (an SQLite integer): a longer one matches no route, 404 like any other
        get("/img/face/{row:\\d{1,18}}.jpg", self.face_image)
        get("/img/event/{run:[A-Za-z0-9_-]{1,100}}/{seq:\\d{1,18}}.jpg", self.event_image)
        get("/img/visitor/{vid:V\\d{1,18}}/{k:\\d{1,18}}.jpg", self.visitor_image)
        get("/img/pending/{token:[A-Za-z0-9_-]+}.png", self.pending_image)
        post("/upload", lambda request: receive.upload(self, request))
        post("/upload/face", lambda request: receive.upload_face(self, request))
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        for path, verb in (("/people/remove", self.remove), ("/people/rename", self.rename),
                           ("/people/forget", self.forget), ("/undo", self.undo), ("/events/wrong", self.wrong),
                           ("/events/name", self.name_event), ("/visitors/name", self.name_visitor),
                           ("/visitors/forget", self.forget_visitor)):
            post(path, self.change(verb))
        return app

    async def start(self, app: web.Application) -> None:
        async def expire() -> None:  # an abandoned session's waiting group photos go when it expires
            while True:
                await asyncio.sleep(60)
                self.sessions.expire()

        self.expiring = asyncio.get_running_loop().create_task(expire())

    async def stop(self, app: web.Application) -> None:
        self.expiring.cancel()
        self.sessions.close()  # every waiting group photo deleted when the page stops

    def known_host(self, host: str) -> bool:
        """Whether ``Host`` names this page: an address, localhost, this machine's name, or ``[web] hosts``
        (another name is a DNS-rebinding page, which must not get the login form nor a session)."""
        import ipaddress
        import socket

        name = urlsplit(f"//{host}").hostname or ""
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        me = socket.gethostname().lower()
        allowed = {"localhost", me, f"{me}.local"} | {h.strip().lower() for h in self.cfg.web.hosts.split(",")}
        return name in allowed - {""}

    def said(self, e: Exception) -> str:
        """An error in the page's words: the server's gallery path is nobody's business."""
        text = mask(str(e))
        for path in {str(self.store.path), str(self.gallery)}:
            text = text.replace(f"{path}: ", "").replace(path, "the gallery")
        return text

    # ------------------------------------------------------------ every response, every route
    @web.middleware
    async def headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as ex:
            resp = web.Response(status=ex.status, text=ex.text, headers=ex.headers)
        except Exception:  # a bug: logged here, a plain page there (with the same headers as every page)
            log.exception("%s %s failed", request.method, request.path[:200])
            resp = plain(500, "something went wrong on the door's page: nothing was changed (see the page's log)")
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; "
            f"frame-ancestors {self.cfg.web.frame_ancestors}")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"  # with no-referrer, Chrome sends "Origin: null"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            return plain(405, "method not allowed")
        if not self.known_host(request.host):
            return plain(421, "this page answers only to its own names ([web] hosts): nothing was changed")
        if request.path in OPEN:
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "POST":
                return plain(403, "log in first: nothing was changed")
            raise web.HTTPSeeOther("/login")
        request["session"] = session
        if request.method == "POST":
            origin = request.headers.get("Origin")
            scheme = "https" if self.cfg.web.secure_cookie else request.scheme  # TLS ends at the proxy
            if origin is not None and origin != f"{scheme}://{request.host}":
                return plain(403, "a form sent from another site is refused: nothing was changed")
            if request.path != "/upload":  # the upload checks its token as the first field, before any file
                form = await request.post()
                if not same_token(form.get("csrf"), session.csrf):
                    return plain(403, "the form's token is missing or stale (reload the page): nothing was changed")
                request["form"] = form
        return await handler(request)

    # ------------------------------------------------------------ login
    async def style(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.STYLE, content_type="text/css")

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/people")

    async def login_page(self, request: web.Request, message: str = "", status: int = 200) -> web.Response:
        if not message and self.sessions.get(request.cookies.get(COOKIE)):
            raise web.HTTPSeeOther("/people")
        token = request.cookies.get(LOGIN_COOKIE, "")  # kept: a second tab (or a favicon request) keeps the first
        if not (20 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
            token = secrets.token_urlsafe(24)
        resp = web.Response(status=status, text=pages.login(token, message), content_type="text/html")
        resp.set_cookie(LOGIN_COOKIE, token, max_age=1800, httponly=True, samesite="Strict",
                        secure=self.cfg.web.secure_cookie, path="/login")
        return resp

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        address = request.remote or "?"
        wait = self.limit.wait(address)
        if wait > 0:
            resp = await self.login_page(request, f"Too many failed logins: try again in {int(wait / 60) + 1} "
                                                  f"minute(s)", 429)
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
            return await self.login_page(request, "The login form expired: try again", 403)
        stamp = self.limit.begin(address)  # counted before the check: parallel guesses are counted too
        if not self.limit.allowed(address, stamp):  # parallel guesses past the address's limit: never checked
            self.limit.succeeded(address, stamp)
            return await self.login_page(request, "Too many failed logins: try again later", 429)
        async with self.checking:  # one password check at a time (scrypt: ~50 ms and 16 MB each)
            await asyncio.sleep(self.limit.delay())
            ok = await asyncio.to_thread(self.password.check, str(form.get("password", "")))
        if not ok:
            log.warning("failed login from %s", address)
            return await self.login_page(request, "Wrong password", 401)
        self.limit.succeeded(address, stamp)
        sid, _ = self.sessions.new()
        resp = see_other("/people")
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.cfg.web.secure_cookie, path="/")
        resp.del_cookie(LOGIN_COOKIE, path="/login")
        log.info("login from %s", address)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = see_other("/login")
        resp.del_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------ views
    def html(self, request: web.Request, title: str, body: str, here: str = "") -> web.Response:
        s = request["session"]
        flash, s.flash = s.flash, []
        return web.Response(text=pages.layout(title, body, here, s.csrf, flash), content_type="text/html")

    async def people(self, request: web.Request) -> web.Response:
        people, last = await asyncio.to_thread(lambda: (self._people(), self.last_change()))
        return self.html(request, "People", pages.people(people, request["session"].csrf,
                                                        [p["name"] for p in people], last), "/people")

    def last_change(self) -> Any:
        """The change "Undo" would undo (as ``Store.undo`` picks it), or None."""
        return next((c for c in self.store.log(200) if c.undone_by is None and c.undoes is None
                     and c.what != "migration"), None)

    async def confirm(self, request: web.Request) -> web.Response:
        q = request.query
        do, name = q.get("do", ""), q.get("name", "")
        if do not in ("remove", "forget") or not name:
            raise web.HTTPSeeOther("/people")
        number = row = None
        if do == "remove":
            try:
                number = whole(q.get("number", ""), "the photo's number")
            except ValueError:
                raise web.HTTPSeeOther("/people") from None
            person = next((p for p in await asyncio.to_thread(self._people) if p["name"] == name), None)
            face = person["faces"][number - 1] if person and 1 <= number <= len(person["faces"]) else None
            if face is None:
                raise web.HTTPSeeOther("/people")
            row = face["row"]
        title = f"Remove a photo of {name}" if do == "remove" else f"Forget {name}"
        return self.html(request, title, pages.confirm(do, name, number, row, request["session"].csrf), "/people")

    def _people(self) -> list[dict]:
        from facepi.identity.health import check

        if not self.store.path.exists() or not self.store.has_gallery():
            return []
        g = self.store.gallery()
        report = check(g)
        marks: dict[int, tuple[str, str]] = {}
        for p in report["people"]:
            for a, b in p["duplicates"]:
                for src in (a, b):
                    marks[g.sources.index(src)] = ("duplicate", "the same shot twice")
            for o in p["outliers"]:
                marks[o["row"]] = ("outlier", f"far from the others ({o['distance']:.2f}): probably someone else")
        out = []
        for i, name in enumerate(g.people):
            rows = np.flatnonzero(g.labels == i)
            out.append({"name": name, "faces": [
                {"row": g.row_ids[r] if g.crops is not None else None, "number": k + 1, "source": g.sources[r],
                 "mark": marks.get(int(r), ("", ""))[0], "why": marks.get(int(r), ("", ""))[1]}
                for k, r in enumerate(rows)]})
        return out

    async def events(self, request: web.Request) -> web.Response:
        rows = await asyncio.to_thread(door_events.recent, self.store, max(self.cfg.web.events_kept, 1))
        done = await asyncio.to_thread(self.done_about_events)
        return self.html(request, "Door events", pages.events(rows, request["session"].csrf, done), "/events")

    def done_about_events(self) -> dict[str, str]:
        """{event label: what was done} for the corrections still in force (not undone)."""
        if not self.store.path.exists():
            return {}
        return {str(c.detail.get("label")): f"marked not {c.detail.get('name')} (change {c.id})"
                for c in self.store.log(500) if c.what == "correction" and c.undone_by is None}

    def book(self) -> Any:
        from facepi.identity.visitor_book import VisitorBook

        return VisitorBook(self.gallery, self.cfg.learning.path)

    async def visitors(self, request: web.Request) -> web.Response:
        def rows() -> list[tuple[Any, int]]:
            book = self.book()
            if not self.store.path.exists():
                return []
            return [(v, len(book.faces(v.id)[0])) for v in book.visitors()]

        body = pages.visitors(await asyncio.to_thread(rows), request["session"].csrf)
        return self.html(request, "Visitors", body, "/visitors")

    async def journal(self, request: web.Request) -> web.Response:
        changes = await asyncio.to_thread(self.store.log, 100)
        return self.html(request, "Journal", pages.journal(changes), "/journal")

    # ------------------------------------------------------------ images (after login only, never cached)
    async def face_image(self, request: web.Request) -> web.Response:
        def crop() -> bytes | None:
            if not self.store.path.exists():
                return None
            with self.store.connect() as con:
                r = con.execute("SELECT crop FROM faces WHERE id = ? AND removed_by IS NULL AND kind = 'face'",
                                (int(request.match_info["row"]),)).fetchone()
            return None if r is None or r[0] is None else jpeg(np.frombuffer(r[0], np.uint8).reshape(112, 112, 3))

        return self.image(await asyncio.to_thread(crop))

    async def event_image(self, request: web.Request) -> web.Response:
        ev = await asyncio.to_thread(door_events.get, self.store, request.match_info["run"],
                                     int(request.match_info["seq"]))
        return self.image(None if ev is None or ev.crop is None else jpeg(ev.crop))

    async def visitor_image(self, request: web.Request) -> web.Response:
        def crop() -> bytes | None:
            try:
                crops = self.book().faces(request.match_info["vid"])[0]
            except VisitorError:
                return None
            k = int(request.match_info["k"])
            return jpeg(crops[k]) if k < len(crops) else None

        return self.image(await asyncio.to_thread(crop))

    async def pending_image(self, request: web.Request) -> web.Response:
        p = request["session"].pending.get(request.match_info["token"])
        return self.image(None if p is None else p["png"], "image/png")

    @staticmethod
    def image(data: bytes | None, kind: str = "image/jpeg") -> web.Response:
        if data is None:
            return plain(404, "no such image")
        return web.Response(body=data, content_type=kind)

    # ------------------------------------------------------------ changes: each one verb of the guarded path
    def change(self, verb: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            session, form = request["session"], request["form"]
            try:
                text = await asyncio.to_thread(verb, {k: str(v) for k, v in form.items()})
                session.flash.append(("ok", text))
            except PROBLEMS as e:
                session.flash.append(("error", self.said(e) + " (nothing was changed)"))
            except KeyError as e:
                session.flash.append(("error", f"the form lacks {e} (nothing was changed)"))
            back = request.headers.get("Referer", "")
            raise web.HTTPSeeOther(urlsplit(back).path if urlsplit(back).path in
                                   ("/people", "/events", "/visitors", "/journal") else "/people")
        return handler

    def remove(self, f: dict[str, str]) -> str:
        done = family.remove_photo(self.gallery, f["name"], whole(f["number"], "the photo's number"), "web",
                                   self.models)
        return f"Removed {f['name']}'s photo {f['number']} ({done.result})"

    def rename(self, f: dict[str, str]) -> str:
        done = family.rename(self.gallery, f["name"], f["new"], "web", self.models)
        return f"Renamed {f['name']} to {f['new']} ({done.result} photo(s))"

    def forget(self, f: dict[str, str]) -> str:
        done = family.forget(self.gallery, f["name"], "web", self.models)
        return f"Forgot {f['name']} ({done.result} photo(s))"

    def undo(self, f: dict[str, str]) -> str:
        last = self.last_change()
        if last is not None and f.get("target") and f["target"] != str(last.id):
            raise GalleryError(f"the last change is now change {last.id} ({last.summary}), not the one the page "
                               f"showed: look again before undoing")
        target, _ = family.undo(self.gallery, "web")
        return f"Undid change {target.id} ({target.what}, from {target.origin}): {target.summary}"

    def event(self, f: dict[str, str]) -> door_events.DoorEvent:
        ev = door_events.get(self.store, f["run"], whole(f["seq"], "the event's number"))
        if ev is None:
            raise GalleryError(f"event {f['seq'][:12]} is no longer kept")
        return ev

    def wrong(self, f: dict[str, str]) -> str:
        ev = self.event(f)
        if ev.name == "unknown":
            raise GalleryError(f"event {ev.seq} named nobody")
        if pages.event_label(ev) in self.done_about_events():
            raise GalleryError(f"event {ev.seq} was already marked as not {ev.name}")
        done = family.correct(self.gallery, ev.name, ev.embedding[None], pages.event_label(ev), "web", self.models)
        return f"Recorded: {done.change.summary}"

    def name_event(self, f: dict[str, str]) -> str:
        ev = self.event(f)
        if ev.crop is None:
            raise GalleryError(f"event {ev.seq} kept no face to enrol")
        if ev.live is False:  # the door's liveness check was on and did not judge this face live
            raise GalleryError(f"event {ev.seq}: this face was not judged live at the door (it may be a photo or a "
                               f"screen held up), so it cannot be enrolled; add this person from their photos")
        done = family.name_face(self.gallery, f["name"], ev.embedding, ev.crop,
                                f"door-{ev.camera}-{ev.run}-{ev.seq}", "web", self.models)
        return f"Enrolled: {done.change.summary}"

    def name_visitor(self, f: dict[str, str]) -> str:
        done = family.name_visitor(self.gallery, f["visitor"], f["name"], "web", False, self.models,
                                   self.cfg.learning.path)
        return f"Enrolled: {done.change.summary}"

    def forget_visitor(self, f: dict[str, str]) -> str:
        v = self.book().forget(f["visitor"])
        return f"Forgot visitor {v.id} ({v.visits} visit(s))"


def serve(cfg: Config, password: Password, gallery: str | Path | None = None) -> int:
    """Serve until stopped (SIGTERM/SIGINT); one line on stderr says where."""
    from facepi.identity import store

    store.BUSY_WAIT[0] = uploads.BUSY_WAIT  # a change waits a few seconds for another writer, then "busy"
    host, port = listen(cfg.web.listen)
    page = Page(cfg, password, gallery)
    web.run_app(page.app(), host=host, port=port, access_log=None,
                print=lambda _: print(f"facepi web: serving http://{cfg.web.listen}/ (gallery {page.store.path})",
                                      file=sys.stderr, flush=True))
    return 0
