"""Shared fixtures: the real parts (pinned downloads in the cache), never stand-ins."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def cache() -> Path:
    from facepi_convert import sources

    return sources.cache_dir()


@pytest.fixture(scope="session")
def faces_root(cache: Path) -> Path:
    """The 5-celebrity photo set (train/ and val/, one folder per person)."""
    from facepi_convert import sources

    return sources.celebrity_faces(cache)


@pytest.fixture(scope="session")
def seed_align_dir(cache: Path) -> Path:
    from facepi_convert import sources

    return sources.seed_align_dir(cache)


@pytest.fixture(scope="session")
def facenet_graph(cache: Path) -> Path:
    from facepi_convert import sources

    return sources.facenet_graph(cache)


@pytest.fixture(scope="session")
def val_photos(faces_root: Path) -> list[Path]:
    return sorted(faces_root.glob("val/*/*.jpg"))


@pytest.fixture(scope="session")
def seed_mtcnn(seed_align_dir: Path):
    from facepi_convert.seed import SeedMTCNN

    return SeedMTCNN(seed_align_dir)


@pytest.fixture()
def models_copy(tmp_path: Path) -> Path:
    """A private copy of the committed models/ that a test may damage."""
    dest = tmp_path / "models"
    dest.mkdir()
    for f in MODELS.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy2(f, dest / f.name)
    return dest


# ---------------------------------------------------------------- MQTT: a real broker

import json as _json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def wait(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` s have passed: a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Debian's mosquitto on a free loopback port, with persistence so sessions survive restarts."""

    def __init__(self, workdir: Path, password_file: Path | None = None, extra: list[str] | None = None,
                 acl_file: Path | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {workdir}/",
                 "log_type error",
                 # a test subscriber (Python) that falls behind on a loaded machine must not lose QoS 1
                 # messages to mosquitto's per-client queue (1000 by default): the tests count facepi's
                 # deliveries, not the broker's drops
                 "max_queued_messages 200000"]
        lines += extra or []
        if os.geteuid() == 0:  # mosquitto drops root to 'mosquitto', which cannot read pytest's tmp dirs
            lines.append("user root")
        lines += [f"password_file {password_file}", "allow_anonymous false"] if password_file else \
            ["allow_anonymous true"]
        lines += [f"acl_file {acl_file}"] if acl_file else []
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture()
def broker(tmp_path: Path):
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed: run scripts/test.sh (it installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def passwords(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password_file made by Debian's own mosquitto_passwd."""
    for i, (user, password) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(path), user, password],
                       check=True, capture_output=True)
    return path


class Subscriber:
    """A real MQTT subscriber (persistent session, QoS 1) that records everything it gets."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("facepi/#", "homeassistant/#"),
                 ca_file: Path | None = None, name: str = "test-sub", username: str | None = None,
                 password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{port}",
                                  clean_session=False)
        self.topics = topics
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.connect("localhost" if ca_file else "127.0.0.1", port, 10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def events(self, topic: str) -> list[dict]:
        return [_json.loads(p) for p in self.on(topic)]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- the daemon: a gallery, videos, a process

import sys  # noqa: E402

STRANGER = "mindy_kaling"


@pytest.fixture(scope="session")
def gallery4(tmp_path_factory, faces_root) -> Path:
    """The train photos of four people; the fifth is the stranger at the door."""
    root = tmp_path_factory.mktemp("enrol")
    for person in sorted(p.name for p in (faces_root / "train").iterdir() if p.is_dir()):
        if person != STRANGER:
            (root / person).symlink_to(faces_root / "train" / person)
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    gallery, failures = train(load_pipeline(), root)
    assert not failures
    path = root.parent / "gallery4.npz"
    gallery.save(path)
    return path


def one_face_photos(photos: list[Path], workdir: Path) -> list[Path]:
    """Photos showing exactly one face as the daemon sees them (after video encoding, at its
    minsize): a door visit is one person, and the bystanders in a few web photos would rightly
    be announced as unknown visitors too."""
    import cv2

    from facepi.demo import make_video
    from facepi.vision.detect import Detector, DetectorParams

    det = Detector(params=DetectorParams(minsize=40))
    keep = []
    for p in photos:
        cap = cv2.VideoCapture(str(make_video([p], workdir / "probe.avi", fps=8, hold=0.25, gap=0)))
        ok, bgr = cap.read()
        cap.release()
        if ok and len(det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))[0]) == 1:
            keep.append(p)
    return keep



import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402


@contextlib.contextmanager
def hold_gallery_lock(gallery_path: Path, visitors: Path | None = None) -> Iterator[None]:
    """Hold the gallery's write lock the way ``facepi enroll`` holds it while it works (and, given
    ``visitors``, the visitor store's too): what a long enrol does to a running daemon.

    Tests take these locks only through here: the storage layer's locking may change (one SQLite
    database), and only this body should have to follow it."""
    from facepi.identity.store import open_store

    del visitors  # the visitors live in the gallery's database: one lock holds both
    with open_store(gallery_path).write_lock():  # SQLite's write lock, as a change holds it
        yield


_DAEMONS: list[subprocess.Popen] = []


def run_daemon(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "facepi", "run", *args], cwd=ROOT, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    _DAEMONS.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    """A test that fails on a timeout must not leave its daemon running (and eating the CPU)."""
    yield
    while _DAEMONS:
        proc = _DAEMONS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


class Lines:
    """A running daemon's stdout and stderr, read as they come.

    A test waits for the line it needs ("ready", a reload, an announcement) instead of sleeping a guessed
    time: on a loaded CI machine a guessed sleep raced the daemon (it had read its whole folder before the
    SIGHUP arrived).
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if predicate():
                return True
            time.sleep(0.05)
        time.sleep(0.2)  # the last lines of a process that just ended
        return bool(predicate())

    def err_has(self, pattern: str) -> bool:
        import re

        return any(re.search(pattern, line) for line in list(self.err))

    def finish(self, timeout: float = 60.0) -> tuple[str, str]:
        """SIGTERM (if still running), wait, and return everything it printed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        for r in self._readers:
            r.join(timeout=10)
        return "".join(self.out), "".join(self.err)
