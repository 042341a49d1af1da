"""Several doors, one household: three ``facepi run`` daemons share one gallery over a real broker.

Real parts only: one mosquitto (conftest.Broker), three daemons (front, back, garage), each with its own
gallery file (copies of one gallery of two people enrolled from real photos) and its own live camera (a
loopback MJPEG camera looping a video of a real photo of the person to be enrolled), the household key in
a file. Changes are made with the CLI, as a user would; convergence is read on the daemons' retained status
topics (``household.digest``) and in the gallery files, recognition in the daemons' events.

The tests run in order on one set-up (module scope), each starting from the state the previous one left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, Broker, Lines, Subscriber, free_port, one_face_photos, wait

from facepi.identity.records import Record, body_of, sign, topic_for
from facepi.identity.store import Store
from facepi.identity.sync import HouseholdSync

KEY = b"three doors, one household, 32 b"
HOME = "home"
BASE = f"facepi/household/{HOME}"
DOORS = ("front", "back", "garage")
FAMILY = ("ben_afflek", "elton_john")
VISITOR = "madonna"  # at every door, enrolled on front
FPS = 5  # low: three daemons share two cores


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "facepi", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def done(proc: subprocess.Popen, ok: tuple[int, ...] = (0,)) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode in ok, f"{proc.args}: exit {proc.returncode}\n{out}\n{err[-3000:]}"
    return out


class House:
    """The set-up: broker, cameras, daemons, a subscriber; the galleries and the helpers to read them."""

    def __init__(self, root: Path, gallery: Path, video: Path, photos: dict[str, list[Path]]) -> None:
        self.root, self.photos = root, photos
        self.broker = Broker(root / "broker")
        self.broker.start()
        self.keyfile = root / "household_key"
        self.keyfile.write_bytes(KEY)
        self.keyfile.chmod(0o600)
        self.galleries: dict[str, Path] = {}
        self.configs: dict[str, Path] = {}
        self.cameras: list[subprocess.Popen] = []
        self.daemons: dict[str, Lines] = {}
        self.sub = Subscriber(self.broker.port, topics=("facepi/+/status", "facepi/+/event"), name="doors")
        self.video = video
        for door in DOORS:
            (root / door).mkdir()
            self.galleries[door] = Path(shutil.copy(gallery, root / door / "gallery.npz"))
            self.configure(door)
        for door in DOORS:
            self.start(door)
        for door in DOORS:
            self.ready(door)

    # -- the daemons
    def configure(self, door: str) -> None:
        """``door``'s TOML (its gallery at ``galleries[door]``) and its own loopback camera."""
        port = free_port()
        self.cameras.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "mjpeg_camera.py"), str(port),
                                              str(self.video), "--fps", str(FPS)]))
        self.configs[door] = self.root / door / "facepi.toml"
        self.configs[door].write_text(f"""camera_id = "{door}"
[source]
uri = "http://127.0.0.1:{port}/video.mjpg"
reconnect_max_seconds = 1
[models]
threads = 1
[detection]
downscale = 0.5
[recognition]
gallery = "{self.galleries[door]}"
visit_gap = 1.0
unknown_min_frames = 3
[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
status_interval = 1
reconnect_max_seconds = 1
discovery = false
[household]
id = "{HOME}"
key_file = "{self.keyfile}"
""")

    def start(self, door: str) -> None:
        # not conftest.run_daemon: its daemons end with each test, these live for the module
        self.daemons[door] = Lines(subprocess.Popen(
            [sys.executable, "-m", "facepi", "run", "--config", str(self.configs[door])], cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

    def ready(self, door: str) -> None:
        d = self.daemons[door]
        assert d.wait_for(lambda: d.err_has(r"ready: source"), 120), "".join(d.err)[-3000:]

    def stop(self, door: str) -> None:
        out, err = self.daemons[door].finish()
        assert self.daemons[door].proc.returncode == 0, err[-3000:]

    def close(self) -> None:
        for d in self.daemons.values():
            if d.proc.poll() is None:
                d.finish()
        for cam in self.cameras:
            cam.kill()
            cam.wait()
        self.sub.close()
        self.broker.stop()

    # -- what they say, what their galleries hold
    def status(self, door: str) -> dict:
        msgs = self.sub.on(f"facepi/{door}/status")
        return json.loads(msgs[-1]) if msgs else {}

    def household(self, door: str) -> dict:
        return self.status(door).get("household") or {}

    def digest(self, door: str) -> str:
        return HouseholdSync(self.galleries[door], HOME, KEY, "probe").digest()

    def people(self, door: str) -> list[str]:
        return sorted(HouseholdSync(self.galleries[door], HOME, KEY, "probe").people())

    def journal(self, door: str) -> int:
        return len(Store(self.galleries[door]).log())

    def same(self, doors=DOORS, status: bool = True) -> bool:
        """Every gallery file has one digest, and (``status``) every daemon says so on its status topic."""
        files = {self.digest(d) for d in doors}
        return len(files) == 1 and (not status or all(self.household(d).get("digest") in files for d in doors))

    def events(self, door: str, since: int = 0) -> list[dict]:
        with self.sub.lock:
            mine = [p for t, p, _ in self.sub.messages[since:] if t == f"facepi/{door}/event"]
        return [json.loads(p) for p in mine]

    def mark(self) -> int:
        with self.sub.lock:
            return len(self.sub.messages)

    def say(self, *a: object) -> None:
        print(*a, flush=True)


@pytest.fixture(scope="module")
def house(tmp_path_factory, faces_root):
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    root = tmp_path_factory.mktemp("doors")
    pipe = load_pipeline()
    photos = {}  # portraits only: a bystander in a web photo is rightly refused by enrol
    for person in ("madonna", "jerry_seinfeld", "mindy_kaling"):
        photos[person] = [p for p in sorted((faces_root / "train" / person).glob("*.jpg"))
                          if not pipe.photo(p).others][:6]
    enrol = root / "enrol"
    for person in FAMILY:
        (enrol / person).mkdir(parents=True)
        for p in sorted((faces_root / "train" / person).glob("*.jpg"))[:6]:
            (enrol / person / p.name).symlink_to(p)
    gallery, failures = train(pipe, enrol)
    assert not failures
    gallery.save(root / "gallery.npz")
    from facepi.demo import make_video

    face = one_face_photos(sorted((faces_root / "val" / VISITOR).glob("*.jpg")), root)[0]
    video = make_video([face], root / "door.avi", fps=FPS, hold=2.4, gap=1.6)
    h = House(root, root / "gallery.npz", video, photos)
    try:
        assert wait(lambda: h.same() and h.household("front").get("people") == 2, 60), \
            [h.household(d) for d in DOORS]
        yield h
    finally:
        h.close()


def test_an_enrol_reaches_every_door_and_a_forget_too(house):
    h = house
    t = time.monotonic()
    done(cli("enroll", "--gallery", str(h.galleries["front"]), VISITOR, *map(str, h.photos[VISITOR][:5])), (0, 3))
    h.say(f"enrol took {time.monotonic() - t:.1f} s")
    t = time.monotonic()
    assert wait(lambda: VISITOR in h.people("front") and h.same(status=False), 10), \
        [h.people(d) for d in DOORS]
    h.say(f"enrol on front -> equal galleries: {time.monotonic() - t:.1f} s")
    assert wait(lambda: h.same(), 5), [h.household(d) for d in DOORS]
    mark, t = h.mark(), time.monotonic()
    for door in ("back", "garage"):  # the gallery watch reloads it; the next visit is named
        assert wait(lambda door=door: any(e["name"] == VISITOR for e in h.events(door, mark)), 12), \
            (door, h.events(door, mark), "".join(h.daemons[door].err)[-2000:])
    h.say(f"equal galleries -> {VISITOR} named at back and garage: {time.monotonic() - t:.1f} s")
    assert all(h.household(d)["applied"] >= 1 for d in ("back", "garage")) and h.household("front")["sent"] >= 1
    # forgotten at the back door: gone everywhere, and the next visit elsewhere is a stranger's
    done(cli("forget", "--gallery", str(h.galleries["back"]), VISITOR))
    t = time.monotonic()
    assert wait(lambda: VISITOR not in h.people("front") and h.same(), 10), [h.people(d) for d in DOORS]
    h.say(f"forget on back -> equal galleries: {time.monotonic() - t:.1f} s")
    mark = h.mark()
    for door in ("front", "garage"):
        assert wait(lambda door=door: any(e["name"] == "unknown" for e in h.events(door, mark)), 15), \
            (door, h.events(door, mark))
        after = h.events(door, mark)
        first = next(i for i, e in enumerate(after) if e["name"] == "unknown")
        assert all(e["name"] != VISITOR for e in after[first:]), after


def test_a_door_switched_off_catches_up_and_concurrent_enrols_converge(house):
    h = house
    h.stop("garage")  # SIGTERM while two changes are made on front
    p = h.photos["jerry_seinfeld"]
    done(cli("enroll", "--gallery", str(h.galleries["front"]), "jerry_seinfeld", *map(str, p[:3])), (0, 3))
    done(cli("gallery", "rename", "--gallery", str(h.galleries["front"]), "elton_john", "elton"))
    assert wait(lambda: h.people("back") == ["ben_afflek", "elton", "jerry_seinfeld"]
                and h.same(("front", "back")), 10), [h.people(d) for d in DOORS]
    assert h.people("garage") == ["ben_afflek", "elton_john"]  # off: it missed both
    t = time.monotonic()
    h.start("garage")
    h.ready("garage")
    assert wait(lambda: h.same(), 30), [h.household(d) for d in DOORS]
    h.say(f"garage restarted -> caught up: {time.monotonic() - t:.1f} s")
    assert h.people("garage") == ["ben_afflek", "elton", "jerry_seinfeld"]
    # the same person enrolled at two doors at once, from other photos: one of the two wins everywhere
    m = h.photos["mindy_kaling"]
    both = [cli("enroll", "--gallery", str(h.galleries["front"]), "mindy_kaling", *map(str, m[:3])),
            cli("enroll", "--gallery", str(h.galleries["back"]), "mindy_kaling", *map(str, m[3:6]))]
    for proc in both:
        done(proc, (0, 3))
    t = time.monotonic()
    assert wait(lambda: all("mindy_kaling" in h.people(d) for d in DOORS) and h.same(), 15), \
        [h.household(d) for d in DOORS]
    h.say(f"concurrent enrols on front and back -> equal galleries: {time.monotonic() - t:.1f} s")
    sources = {tuple(sorted(s for s, lab in zip(g.sources, g.labels, strict=True)
                            if g.people[lab] == "mindy_kaling"))
               for g in (Store(h.galleries[d]).gallery() for d in DOORS)}
    assert len(sources) == 1  # the same photos' rows everywhere: one enrol won, not a mixture


def test_forged_records_are_refused_and_a_broker_restart_loses_nothing(house):
    h = house
    assert wait(lambda: h.same(), 10)
    before = {d: (h.digest(d), h.journal(d)) for d in DOORS}
    refused = {d: dict(h.household(d).get("refused", {})) for d in DOORS}
    g = Store(h.galleries["front"]).gallery()
    rec = Record("eve", 10_000, "mallory", "2026-01-01T00:00:00+00:00", "cli", False,
                 [("face", g.embeddings[0].astype("<f4").tobytes(), "eve.jpg", "")])
    mallory = Subscriber(h.broker.port, topics=(f"{BASE}/#",), name="mallory")
    try:
        mallory.client.publish(topic_for(BASE, "eve"), sign(b"a guessed key, not the household's", body_of(
            HOME, g.model, rec)), qos=1, retain=True).wait_for_publish(5)
        mallory.client.publish(topic_for(BASE, "mallet"), b"\x00 not json", qos=1, retain=True).wait_for_publish(5)

        def counted(d: str) -> bool:
            now = h.household(d).get("refused", {})
            return all(now.get(r, 0) > refused[d].get(r, 0) for r in ("bad signature", "malformed envelope"))

        assert wait(lambda: all(counted(d) for d in DOORS), 10), [h.household(d) for d in DOORS]
        assert {d: (h.digest(d), h.journal(d)) for d in DOORS} == before
        for topic in (topic_for(BASE, "eve"), topic_for(BASE, "mallet")):  # cleared, as an admin would
            mallory.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        mallory.close()
    # the broker goes away right after a change on front, and comes back on the same port
    done(cli("forget", "--gallery", str(h.galleries["front"]), "jerry_seinfeld"))
    h.broker.stop()
    done(cli("enroll", "--gallery", str(h.galleries["back"]), "madonna", *map(str, h.photos[VISITOR][:3])), (0, 3))
    h.broker.start()
    t = time.monotonic()
    want = ["ben_afflek", "elton", "madonna", "mindy_kaling"]
    assert wait(lambda: all(h.people(d) == want for d in DOORS) and h.same(status=False), 30), \
        [h.people(d) for d in DOORS]
    assert wait(lambda: h.same(), 15), [h.household(d) for d in DOORS]  # and the status topics say so
    h.say(f"broker back -> equal galleries: {time.monotonic() - t:.1f} s")
    for d in DOORS:
        assert KEY.decode() not in json.dumps(h.status(d)) + "".join(h.daemons[d].err)


def test_a_new_door_with_no_gallery_yet_starts_empty_and_catches_up(house):
    """A newly installed facepi of the household: no gallery file yet. It starts with an empty gallery of its
    embedder (everyone unknown), fills it from the retained records, and its gallery watch picks that up."""
    h = house
    (h.root / "porch").mkdir()
    h.galleries["porch"] = h.root / "porch" / "gallery.npz"  # does not exist
    h.configure("porch")
    mark = h.mark()
    t = time.monotonic()
    h.start("porch")
    h.ready("porch")
    doors = (*DOORS, "porch")
    assert wait(lambda: h.same(doors), 30), [h.household(d) for d in doors]
    h.say(f"new door (no gallery) ready -> caught up: {time.monotonic() - t:.1f} s")
    status = h.status("porch")
    assert set(status["household"]) >= {"id", "digest", "people", "sent", "applied", "refused"}
    assert status["household"]["id"] == HOME and status["household"]["people"] == len(h.people("front")) == 4
    assert h.daemons["porch"].err_has("no gallery at .* yet; starting with an empty one")
    assert wait(lambda: any(e["name"] == VISITOR for e in h.events("porch", mark)), 20), h.events("porch", mark)
    assert wait(lambda: h.status("porch").get("people") == 4, 5)  # the reloaded gallery, in the daemon's status


def test_the_documented_acl_keeps_the_household_records_to_the_household(tmp_path):
    """docs/privacy-security.md's acl_file on the real mosquitto: the facepis (one account for all, or one per
    Pi) read and write the household's records; Home Assistant, reading facepi/#, never gets them nor writes
    them, but gets the household's door and last-seen topics its entities show; a guest gets nothing."""
    from conftest import passwords

    page = (ROOT / "docs" / "privacy-security.md").read_text()
    section = page[page.index("## MQTT access control"):]
    blocks = section.split("```text\n")[1:]
    (tmp_path / "acl").write_text("\n".join(b[:b.index("```")] for b in blocks))
    logins = {"facepi": "pi", "facepi-front": "front", "homeassistant": "ha", "guest": "guest"}
    broker = Broker(tmp_path / "broker", password_file=passwords(tmp_path / "passwd", logins),
                    acl_file=tmp_path / "acl")
    broker.start()
    record = f"{BASE}/gallery/0123456789abcdef"
    subs = {u: Subscriber(broker.port, topics=("facepi/#",) if u in ("homeassistant", "guest") else (f"{BASE}/#",),
                          name=u, username=u, password=p) for u, p in logins.items()}
    try:
        subs["facepi"].client.publish(record, b"signed record 1", qos=1, retain=True).wait_for_publish(5)
        subs["facepi"].client.publish("facepi/back/availability", b"online", qos=1, retain=True).wait_for_publish(5)
        subs["facepi-front"].client.publish(f"{BASE}/anyone", b"ON", qos=1, retain=True).wait_for_publish(5)
        subs["facepi"].client.publish("facepi/front/status", b"{}", qos=1).wait_for_publish(5)
        subs["homeassistant"].client.publish(record, b"from home assistant", qos=1)
        subs["guest"].client.publish(record, b"from a guest", qos=1)
        subs["facepi-front"].client.publish(record, b"signed record 2", qos=1, retain=True).wait_for_publish(5)
        assert wait(lambda: subs["facepi"].on(record)[-1:] == [b"signed record 2"]
                    and subs["facepi-front"].on(record)[-1:] == [b"signed record 2"]
                    and subs["homeassistant"].on("facepi/front/status"), 10)
        for u in ("facepi", "facepi-front"):
            assert subs[u].on(record) == [b"signed record 1", b"signed record 2"], (u, subs[u].on(record))
        assert not [t for t, _, _ in subs["homeassistant"].messages if "/gallery/" in t]
        assert wait(lambda: subs["homeassistant"].on(f"{BASE}/anyone") == [b"ON"], 5)  # its entities' topics
        front_sees = Subscriber(broker.port, topics=("facepi/back/availability",), name="front2",
                                username="facepi-front", password="front")  # the other doors' availability
        try:
            assert wait(lambda: front_sees.on("facepi/back/availability") == [b"online"], 5)
        finally:
            front_sees.close()
        assert subs["guest"].messages == []
    finally:
        for s in subs.values():
            s.close()
        broker.stop()
