"""facepi web after its review by an attacker and a new user: a real `facepi web` process over HTTP. Guesses
sent in parallel are counted before they are checked; many failures from everywhere slow the page but never
lock the household out; a locked gallery is "busy" within seconds; oversized numbers in image addresses are
404s; a group photo waiting for "which face" is the only file kept, a few at most, gone at logout and stop;
a photo too large to decode within the page's memory is said to be too large; a killed enrolment child is a
plain page; Remove and Forget ask first. The gallery is byte-identical after every refusal."""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_web import group_photo, names_of
from web_client import PASSWORD, Client, WebServer, enrolled, gallery_bytes

from facepi.identity.store import Store


@pytest.fixture(scope="module")
def family4(tmp_path_factory, faces_root):
    return enrolled(tmp_path_factory.mktemp("family4r"), faces_root)


@pytest.fixture()
def served(tmp_path, family4):
    g = tmp_path / "g.db"
    shutil.copy(family4, g)
    tmp = tmp_path / "srvtmp"
    tmp.mkdir()
    server = WebServer(tmp_path, g, "max_upload_mb = 2\nmax_photos = 5\n", env={"TMPDIR": str(tmp)}).ready()
    server.tmp = tmp
    yield server, g
    server.stop()


def login_from(port: int, source: str, password: str) -> int:
    """A login sent from another loopback address (127.0.0.x): another household member, or an attacker."""
    def req(method, path, body=None, headers=None):
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
        con.request(method, path, body, headers or {})
        r = con.getresponse()
        r.read()
        con.close()
        return r.status
    token = "A" * 32
    return req("POST", "/login", urlencode({"csrf": token, "password": password}).encode(),
               {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"facepi_login={token}"})


def test_parallel_guesses_are_counted_before_the_check_and_nobody_else_is_locked_out(served):
    server, g = served
    before = gallery_bytes(g)
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda i: login_from(server.port, "127.0.0.2", f"guess{i}"), range(40)))
    assert codes.count(401) == 5 and codes.count(429) == 35, codes  # 5 checked, 35 never checked
    assert server.err.read_text().count("failed login from 127.0.0.2") == 5
    assert login_from(server.port, "127.0.0.2", PASSWORD) == 429  # that address waits, even with the password
    for k in range(3, 8):  # 25 more failures from five other addresses: 30 in all
        assert [login_from(server.port, f"127.0.0.{k}", "guess") for _ in range(5)] == [401] * 5
    t = time.monotonic()
    assert login_from(server.port, "127.0.0.9", PASSWORD) == 303  # the household still gets in ...
    assert time.monotonic() - t >= 1.9  # ... slowed, as every check is now
    assert gallery_bytes(g) == before


def test_a_locked_gallery_is_busy_within_seconds_and_the_store_says_so(served):
    from facepi.identity.store import GalleryError

    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    victim = names_of(g)[0]
    before = gallery_bytes(g)
    with Store(g).write_lock():  # another writer (the CLI, the daemon) holds the gallery
        t = time.monotonic()
        assert c.post("/people/forget", {"csrf": token, "name": victim})[0] == 303
        took = time.monotonic() - t
        with pytest.raises(GalleryError, match="the gallery is busy") as caught:
            with Store(g).connect(write=True, wait=0.2):
                pass
        assert "not a facepi gallery" not in str(caught.value)
    body = c.get("/people")[2]
    assert took < 10 and b"the gallery is busy (another change is being written)" in body, body[-1500:]
    assert str(g).encode() not in body and b"not a facepi gallery" not in body
    assert gallery_bytes(g) == before and victim in names_of(g)


def test_oversized_numbers_are_404_with_the_pages_headers_and_plain_messages(served):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = gallery_bytes(g)
    for path in ("/img/face/" + "9" * 20 + ".jpg", "/img/event/run1/" + "9" * 25 + ".jpg",
                 "/img/face/" + "9" * 5000 + ".jpg", "/img/visitor/V" + "9" * 30 + "/0.jpg"):
        status, headers, _ = c.get(path)
        assert status == 404 and headers["cache-control"] == "no-store", (path[:40], status)
        assert "default-src 'none'" in headers["content-security-policy"]
    for path, fields in (("/people/remove", {"name": "madonna", "number": "x"}),
                         ("/events/wrong", {"run": "run1", "seq": "9" * 30})):
        assert c.post(path, fields | {"csrf": token})[0] == 303
        body = c.get("/people")[2]
        assert b"must be a whole number" in body and b"invalid literal" not in body, body[-1500:]
    status, _, _ = c.post("/people/rename", {"csrf": token, "name": "madonna", "new": "x"},
                          {"Origin": f"https://127.0.0.1:{server.port}"})  # another scheme: another origin
    assert status == 403
    assert gallery_bytes(g) == before


def test_remove_and_forget_ask_first_and_undo_says_what(served):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    body = c.get("/people")[2]
    assert b'action="/people/forget"' not in body and b'action="/people/remove"' not in body  # one tap: no change
    before = gallery_bytes(g)
    status, _, body = c.get("/people/confirm?do=forget&name=madonna")
    assert status == 200 and b"Forget madonna?" in body and b'action="/people/forget"' in body
    assert gallery_bytes(g) == before
    assert c.post("/people/forget", {"csrf": token, "name": "madonna"})[0] == 303
    body = c.get("/people")[2]
    assert b"Undo the last change: forgot madonna" in body, body[-2000:]
    shown = re.search(rb'name="target" value="(\d+)"', body).group(1).decode()
    assert c.post("/people/rename", {"csrf": token, "name": "elton_john", "new": "Elton"})[0] == 303
    before = gallery_bytes(g)
    assert c.post("/undo", {"csrf": token, "target": shown})[0] == 303  # a page shown before another change
    assert b"look again before undoing" in c.get("/people")[2] and gallery_bytes(g) == before


def server_dirs(server) -> list[Path]:
    return sorted(server.tmp.glob("facepi-web-*"))


def test_a_waiting_group_photo_is_kept_alone_a_few_at_most_and_deleted_at_logout_and_stop(served, faces_root,
                                                                                           tmp_path):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    from PIL import Image

    family = group_photo(faces_root, tmp_path / "f.jpg").read_bytes()
    for k in range(4):  # four different group photos (not the same shot four times)
        Image.open(tmp_path / "f.jpg").rotate(k, fillcolor=(90, 90, 90)).save(tmp_path / f"f{k}.jpg", quality=90)
    before = gallery_bytes(g)
    files = [(f"family{k}.jpg", (tmp_path / f"f{k}.jpg").read_bytes()) for k in range(4)]
    files += [("notes.jpg", b"not a photo")]
    status, _, body = c.upload({"csrf": token, "name": "madonna"}, files)
    assert status == 200 and body.count(b'class="card group"') == 4, body[-1500:]
    assert b"--face" not in body and b"--largest-face" not in body and b"number on the picture" in body
    kept = server_dirs(server)
    assert len(kept) == 3 and all(len(list(d.iterdir())) == 1 for d in kept), kept  # the group photo, alone
    assert gallery_bytes(g) == before
    assert c.post("/logout", {"csrf": token})[0] == 303
    assert server_dirs(server) == []
    assert c.login() == 303
    token = c.token("/people")
    assert c.upload({"csrf": token, "name": "madonna"}, [("family.jpg", family)])[0] == 200
    assert len(server_dirs(server)) == 1
    server.stop()
    assert server_dirs(server) == []


def test_a_photo_too_large_for_the_pages_memory_is_said_to_be_too_large(served, tmp_path):
    from PIL import Image

    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = gallery_bytes(g)
    big = tmp_path / "big.png"
    Image.new("1", (8000, 7000)).save(big)  # 56 MP in a few kB: decoded whole it would be 168 MB, twice
    status, _, body = c.upload({"csrf": token, "name": "New Person"}, [("big.png", big.read_bytes())])
    assert status == 400 and b"too large: 8000x7000 is 56 MP" in body and b"at most 50 MP" in body, body[-800:]
    assert b"not a photo" not in body and gallery_bytes(g) == before


def test_a_killed_enrolment_child_is_a_plain_page(served, faces_root):
    """The unit's MemoryMax ends the enrolment child with SIGKILL (the kernel's OOM killer): here the test
    sends it, as the kernel would."""
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = gallery_bytes(g)
    photo = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0].read_bytes()
    got = {}
    sender = threading.Thread(target=lambda: got.update(r=c.upload({"csrf": token, "name": "madonna"},
                                                                    [("p.jpg", photo)])))
    sender.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != server.proc.pid:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == server.proc.pid and b"multiprocessing" in cmd \
                        and b"resource_tracker" not in cmd:
                    os.kill(int(pid), signal.SIGKILL)
                    killed = pid
        time.sleep(0.05)
    sender.join(120)
    status, _, body = got["r"]
    assert killed and status == 400, (killed, status, body[-600:])
    assert re.search(rb"needs more memory than the page has: resize it or use facepi enroll", body)
    assert gallery_bytes(g) == before and server.proc.poll() is None


def test_an_event_marked_wrong_says_so_and_is_not_offered_again(served, faces_root):
    from facepi.identity import events
    from facepi.vision.photos import load_pipeline

    server, g = served
    store = Store(g)
    r = load_pipeline().photo(sorted((faces_root / "val" / "mindy_kaling").glob("*.jpg"))[1])
    ev = {"run": "run1", "seq": 1, "timestamp": "2099-01-01T10:00:00+00:00", "camera": "door", "name": "madonna",
          "distance": 0.5}  # a stranger named madonna by the door
    events.record(store, ev, r.embeddings[0], r.faces[0].crop, keep=10, days=7)
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/events")
    body = c.get("/events")[2]
    assert b'action="/events/wrong"' in body and b"2099-01-01T10:00:00" not in body and b"2099" in body
    assert c.post("/events/wrong", {"csrf": token, "run": "run1", "seq": "1"})[0] == 303
    body = c.get("/events")[2]
    change = store.log(1)[0]
    assert change.what == "correction" and b'action="/events/wrong"' not in body, body[-1500:]
    assert f"marked not madonna (change {change.id})".encode() in body
    before = gallery_bytes(g)
    assert c.post("/events/wrong", {"csrf": token, "run": "run1", "seq": "1"})[0] == 303  # an old page's button
    assert b"already marked as not madonna" in c.get("/events")[2] and gallery_bytes(g) == before


def test_a_photo_far_from_the_others_says_how_to_add_it_anyway(served, faces_root):
    server, g = served
    c = Client(server.port)
    assert c.login() == 303
    token = c.token("/people")
    before = gallery_bytes(g)
    stranger = sorted((faces_root / "val" / "mindy_kaling").glob("*.jpg"))[1].read_bytes()
    status, _, body = c.upload({"csrf": token, "name": "madonna"}, [("mindy.jpg", stranger)])
    assert b"far from madonna&#x27;s other photos" in body, body[-1500:]
    assert b"facepi enroll --force" in body and b"recorded as forced in the journal" in body
    assert gallery_bytes(g) == before


def test_a_page_for_another_name_is_refused_dns_rebinding(tmp_path, family4):
    g = tmp_path / "g.db"
    shutil.copy(family4, g)
    server = WebServer(tmp_path, g, 'hosts = "door.example.org"\n').ready()
    try:
        c = Client(server.port)
        for host in ("evil.example", f"evil.example:{server.port}", "door.example.org.evil.example"):
            status, headers, body = c.request("GET", "/login", headers={"Host": host})
            assert status == 421 and b'name="password"' not in body, host
            assert headers["cache-control"] == "no-store"
        token = "A" * 32
        status, _, _ = c.request("POST", "/login", urlencode({"csrf": token, "password": PASSWORD}).encode(),
                                 {"Host": "evil.example", "Cookie": f"facepi_login={token}",
                                  "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 421 and "facepi_session" not in c.cookies
        for host in (f"127.0.0.1:{server.port}", "localhost", "door.example.org", "DOOR.example.org:443"):
            assert c.request("GET", "/login", headers={"Host": host})[0] == 200, host
    finally:
        server.stop()
