"""facepi web as an attacker meets it: a real `facepi web` process over HTTP. Before login no name and no
face; a wrong password refused and rate-limited; a form from another site, a forged or missing token, a huge,
too many or malformed upload all refused with a plain message; the gallery byte-identical after each."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from web_client import Client, WebServer, enrolled, gallery_bytes

from facepi.identity import events
from facepi.identity.store import Store, open_store


@pytest.fixture(scope="module")
def family4(tmp_path_factory, faces_root):
    return enrolled(tmp_path_factory.mktemp("family4"), faces_root)


@pytest.fixture()
def served(tmp_path, family4):
    g = tmp_path / "g.db"
    shutil.copy(family4, g)
    server = WebServer(tmp_path, g, "max_upload_mb = 0.5\nmax_photos = 3\n").ready()
    yield server, g
    server.stop()


def names_of(g):
    return open_store(g).gallery().people


def test_before_login_no_name_and_no_face(served):
    server, g = served
    c = Client(server.port)
    people = names_of(g)
    before = gallery_bytes(g)
    for path in ("/", "/people", "/events", "/visitors", "/journal", "/img/face/1.jpg", "/img/visitor/V1/0.jpg",
                 "/img/event/r/1.jpg", "/img/pending/x.png", "/facepi.toml", "/../../etc/passwd", "/static/x"):
        status, headers, body = c.get(path)
        assert status == 303 and headers["location"] == "/login", (path, status)
        assert not any(n.encode() in body for n in people) and b"\xff\xd8" not in body, path
    status, headers, body = c.get("/login")
    assert status == 200 and b'name="password"' in body and not any(n.encode() in body for n in people)
    assert "frame-ancestors 'self'" in headers["content-security-policy"] and headers["cache-control"] == "no-store"
    assert c.post("/people/forget", {"name": people[0]})[0] == 403  # a POST without a session changes nothing
    assert gallery_bytes(g) == before
    assert c.login() == 303
    cookie = next(v for k, v in c.request("GET", "/people")[1].items() if k == "content-type")
    assert cookie.startswith("text/html")
    status, _, body = c.get("/people")
    assert status == 200 and all(n.encode() in body for n in people)
    assert c.get("/img/face/1.jpg")[2][:2] == b"\xff\xd8"
    for path in ("/facepi.toml", "/etc/passwd", "/img/face/../../facepi.toml", "/static/", "/img/face/x.jpg"):
        status, _, body = c.get(path)
        assert status == 404 and b"password" not in body and b"listen" not in body, path


def test_the_session_cookie_and_a_wrong_password_refused_and_rate_limited(served):
    server, g = served
    before = gallery_bytes(g)
    c = Client(server.port)
    token = c.token("/login")
    status, headers, _ = c.post("/login", {"csrf": token, "password": "correct horse battery"})
    cookie = next(line for line in headers["set-cookie"].splitlines() if line.startswith("facepi_session="))
    assert status == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    attacker = Client(server.port)
    assert attacker.post("/login", {"password": "correct horse battery"})[0] == 403  # no login form, no token
    assert attacker.post("/login", {"password": "x" * 3_000_000})[0] == 413  # never read into memory whole
    for _ in range(5):
        status, _, body = attacker.post("/login", {"csrf": attacker.token("/login"), "password": "guess"})
        assert status == 401 and b"Wrong password" in body
    status, headers, body = attacker.post("/login", {"csrf": attacker.token("/login"),
                                                     "password": "correct horse battery"})
    assert status == 429 and b"Too many failed logins" in body and int(headers["retry-after"]) > 60
    assert "facepi_session" not in attacker.cookies
    assert gallery_bytes(g) == before


def test_a_cross_site_form_changes_nothing(served):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    victim = names_of(g)[0]
    before = gallery_bytes(g)
    for fields, headers in (({"name": victim}, {}),  # no token: what another site's form sends
                            ({"name": victim, "csrf": "forged"}, {}),
                            ({"name": victim, "csrf": token}, {"Origin": "http://evil.example"})):
        for path in ("/people/forget", "/undo", "/people/rename"):
            status, _, body = c.post(path, fields | {"new": "pwned"}, headers)
            assert status == 403 and b"nothing was changed" in body, (path, fields, headers)
        assert gallery_bytes(g) == before
    assert names_of(g)[0] == victim
    status, _, _ = c.post("/people/rename", {"name": victim, "new": "Renamed", "csrf": token},
                          {"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 303 and "Renamed" in names_of(g)  # the same form, from the page itself, works
    assert Store(g).log(1)[0].origin == "web"
    evil = '<img src=x onerror="alert(1)">'  # a name is anybody's text: shown, never run
    assert c.post("/people/rename", {"name": "Renamed", "new": evil, "csrf": token})[0] == 303
    status, headers, body = c.get("/people")
    assert evil.encode() not in body and b"&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body
    assert "default-src 'none'" in headers["content-security-policy"] and "script-src" not in \
        headers["content-security-policy"]  # and no script may run on the page at all


def test_huge_too_many_and_malformed_uploads_change_nothing(served, faces_root):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = gallery_bytes(g)
    photo = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0].read_bytes()
    cases = [([("big.jpg", photo + b"\0" * 600_000)], 400, b"larger than 0.5 MB"),
             ([(f"p{k}.jpg", photo) for k in range(4)], 400, b"more than 3 photos"),
             ([("photo.jpg", b"<html>not a photo</html>")], 400, b"not a photo"),
             ([("x.heic", b"\0\0\0\x18ftypheic" + b"\xff" * 500)], 400, b"not a photo")]
    for files, status, said in cases:
        got, _, body = c.upload({"csrf": token, "name": "New Person"}, files)
        assert got == status and said in body and b"Nothing was changed" in body, (got, body[-400:])
        assert gallery_bytes(g) == before
    got, _, body = c.upload({"name": "New Person"}, [("p.jpg", photo)])  # no token: not even written
    assert got == 403 and gallery_bytes(g) == before
    got, _, body = c.request("POST", "/upload", b"--x\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=x"})
    assert got in (400, 403) and gallery_bytes(g) == before
    got, _, body = c.request("POST", "/upload", b"x" * 10, {"Content-Type": "multipart/form-data; boundary=x",
                                                            "Content-Length": str(50 * 2**20)})
    assert got == 413 and gallery_bytes(g) == before


def test_no_password_no_page_and_the_credential(tmp_path, family4):
    g = tmp_path / "g.db"
    shutil.copy(family4, g)
    none = WebServer(tmp_path, g, password=None)
    assert none.proc.wait(30) == 2 and "needs a password" in none.err.read_text()
    short = WebServer(tmp_path, g, password="short")
    assert short.proc.wait(30) == 2 and "at least 8" in short.err.read_text()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "web_password").write_text("from the credential\n")
    server = WebServer(tmp_path, g, env={"CREDENTIALS_DIRECTORY": str(creds)}, password=None).ready()
    try:
        assert Client(server.port).login("from the credential") == 303
        assert "from the credential" not in server.err.read_text()
    finally:
        server.stop()
    bad = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(server.config)], cwd=ROOT,
                         capture_output=True, text=True, env={"FACEPI_WEB_LISTEN": "nowhere"})
    assert bad.returncode == 2 and "web.listen" in bad.stderr and "host:port" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(server.config)], cwd=ROOT,
                         capture_output=True, text=True, env={"FACEPI_WEB_FRAME_ANCESTORS": "'self'; script-src *"})
    assert bad.returncode == 2 and "web.frame_ancestors" in bad.stderr  # no second policy smuggled into the header


def test_door_events_are_bounded_by_count_and_days_and_none_kept_at_zero(tmp_path, family4):
    g = tmp_path / "g.db"
    shutil.copy(family4, g)
    store = open_store(g)
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    for seq in range(1, 8):
        ev = {"run": "r1", "seq": seq, "timestamp": f"2099-01-01T00:00:0{seq}+00:00", "camera": "door",
              "name": "madonna", "distance": 0.3}
        events.record(store, ev, rng.normal(size=128).astype(np.float32), crop, keep=5, days=7)
    kept = events.recent(store)
    assert [e.seq for e in kept] == [7, 6, 5, 4, 3] and np.array_equal(kept[0].crop, crop)
    old = {"run": "r0", "seq": 1, "timestamp": "2000-01-01T00:00:00+00:00", "camera": "door", "name": "x",
           "distance": 0.1}
    events.record(store, old, np.zeros(128, np.float32), None, keep=5, days=7)
    assert events.get(store, "r0", 1) is None  # older than the days kept: gone at once
    events.record(store, old, np.zeros(128, np.float32), None, keep=0, days=7)
    assert events.recent(store) == []  # events_kept = 0 keeps none, and drops what was kept
    assert store.path.stat().st_mode & 0o777 == 0o600


def group_photo(faces_root, out):
    """Two real photos side by side: a group photo (madonna on the left, elton_john on the right)."""
    from PIL import Image

    a, b = (Image.open(sorted((faces_root / "val" / p).glob("*.jpg"))[0]).convert("RGB") for p in ("madonna",
                                                                                                   "elton_john"))
    h = 400
    a, b = (im.resize((int(im.width * h / im.height), h)) for im in (a, b))
    both = Image.new("RGB", (a.width + b.width + 40, h), (90, 90, 90))
    both.paste(a, (0, 0))
    both.paste(b, (a.width + 40, 0))
    both.save(out, quality=92)
    return out


def test_a_group_photo_picked_on_its_numbered_preview_and_the_gallery_care(served, faces_root, tmp_path):
    """A group photo is not enrolled as it is: the page shows its faces numbered (as --face N counts them) and
    enrols the one picked; then a photo removed, undone, and a person forgotten: all journaled from web."""
    import re

    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = len(open_store(g).gallery().labels)
    family = group_photo(faces_root, tmp_path / "f.jpg").read_bytes()
    status, _, body = c.upload({"csrf": token, "name": "madonna"}, [("family.jpg", family)])
    assert status == 200 and b"2 faces" in body and b"not enrolled" in body, body[-1500:]
    assert str(tmp_path).encode() not in body and b"facepi-web-" not in body  # no server path shown
    pending = re.search(rb'src="/img/pending/([A-Za-z0-9_-]+)\.png"', body)
    assert pending, body[-1500:]
    pending = pending.group(1).decode()
    status, headers, png = c.get(f"/img/pending/{pending}.png")
    assert status == 200 and png[:4] == b"\x89PNG"
    assert Client(server.port).get(f"/img/pending/{pending}.png")[0] == 303  # another browser: nothing
    status, _, body = c.post("/upload/face", {"csrf": token, "token": pending, "name": "madonna", "face": "1"})
    assert status == 200 and b"Enrolled 1 photo(s) of madonna" in body, body[-1500:]
    assert len(open_store(g).gallery().labels) == before + 1
    assert c.post("/upload/face", {"csrf": token, "token": pending, "name": "madonna", "face": "1"})[0] == 400
    assert c.post("/people/remove", {"csrf": token, "name": "madonna", "number": "1"})[0] == 303
    assert c.post("/undo", {"csrf": token})[0] == 303
    assert c.post("/people/forget", {"csrf": token, "name": "ben_afflek"})[0] == 303
    log = Store(g).log(4)
    assert [(x.what, x.origin) for x in log] == [("forget", "web"), ("undo", "web"), ("remove photo", "web"),
                                                ("enrol", "web")]
    status, _, body = c.get("/journal")
    assert b"forgot ben_afflek" in body and b"<td>web</td>" in body


def test_this_is_on_a_door_event_goes_through_the_enrolment_checks(served, faces_root):
    """"This is NAME" on a kept event: a stranger's face is enrolled (origin web); somebody else's face offered
    as madonna is refused by the enrolment's checks and the gallery stays byte-identical."""
    from facepi.vision.photos import load_pipeline

    server, g = served
    store = Store(g)
    pipeline = load_pipeline()
    for seq, person in ((1, "mindy_kaling"), (2, "elton_john")):
        r = pipeline.photo(sorted((faces_root / "val" / person).glob("*.jpg"))[1])
        ev = {"run": "run1", "seq": seq, "timestamp": f"2099-01-01T00:00:0{seq}+00:00", "camera": "door",
              "name": "unknown", "distance": 0.9}
        events.record(store, ev, r.embeddings[0], r.faces[0].crop, keep=10, days=7)
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/events")
    status, _, body = c.get("/events")
    assert body.count(b'<tr class="event"') == 2 and c.get("/img/event/run1/1.jpg")[2][:2] == b"\xff\xd8"
    before = gallery_bytes(g)
    c.post("/events/name", {"csrf": token, "run": "run1", "seq": "2", "name": "madonna"})
    status, _, body = c.get("/events")
    assert b"not named madonna" in body and b"nothing was changed" in body, body[-2000:]
    assert gallery_bytes(g) == before
    c.post("/events/name", {"csrf": token, "run": "run1", "seq": "1", "name": "Mindy"})
    assert "Mindy" in names_of(g)
    change = store.log(1)[0]
    assert (change.what, change.origin, change.detail["event"]) == ("name face", "web", "door-door-run1-1")
