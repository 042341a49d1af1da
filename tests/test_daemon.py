"""The daemon end to end: real models, real photos, Debian's mosquitto, a real subscriber."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, STRANGER, Broker, Lines, Subscriber, one_face_photos, run_daemon

from facepi.demo import make_video
from facepi.identity.store import load as load_gallery


@pytest.fixture(scope="module")
def val_video(tmp_path_factory, faces_root) -> tuple[Path, list[str]]:
    """Every single-face val photo one visit: 1.5 s in view, 2.5 s of empty scene between (8 fps)."""
    workdir = tmp_path_factory.mktemp("video")
    photos = one_face_photos(sorted((faces_root / "val").glob("*/*.jpg")), workdir)
    assert len(photos) >= 20 and STRANGER in {p.parent.name for p in photos}
    path = make_video(photos, workdir / "val.avi", fps=8, hold=1.5, gap=2.5)
    return path, [p.parent.name for p in photos]


def test_end_to_end_one_event_per_visit(broker, gallery4, val_video):
    video, people = val_video
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery4), "--fast",
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--camera-id", "testcam"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    base = "facepi/testcam"
    assert sub.wait_for(lambda: sub.on(f"{base}/availability")[-1:] == [b"offline"])
    sub.close()
    events = sub.events(f"{base}/event")
    expected = ["unknown" if p == STRANGER else p for p in people]
    assert [e["name"] for e in events] == expected, err[-3000:]
    assert [e["seq"] for e in events] == list(range(1, len(people) + 1))
    e = events[0]

    assert e["camera"] == "testcam" and e["model"].startswith(load_gallery(gallery4).model + "/")
    assert e["timestamp"].endswith("+00:00") and 0 <= e["score"] <= 1 and e["distance"] >= 0
    assert len(e["box"]) == 4 and all(isinstance(v, int) for v in e["box"]) and e["box"][2] > 40
    avail = sub.on(f"{base}/availability")
    assert avail[0] == b"online" and avail[-1] == b"offline"
    status = json.loads(sub.on(f"{base}/status")[-1])
    assert {"fps", "detect_ms_p50", "detect_ms_p95", "frames_dropped", "queue_depth", "source",
            "uptime_s", "events_dropped"} <= set(status)
    assert sub.on(f"{base}/person")[-1] == b"[]"
    configs = {t: json.loads(p) for t, p, _ in sub.messages if t.startswith("homeassistant/") and
               t.endswith("/config")}
    from facepi.door.homeassistant import person_key

    people = sorted({p for p in people if p != STRANGER})
    presence = {f"homeassistant/binary_sensor/facepi_testcam/present_{person_key(p)}/config" for p in people}
    assert {"homeassistant/sensor/facepi_testcam/last_person/config",
            "homeassistant/event/facepi_testcam/recognition/config",
            "homeassistant/binary_sensor/facepi_testcam/someone/config",
            "homeassistant/button/facepi_testcam/reload/config"} | presence <= set(configs)
    for c in configs.values():
        assert c["device"]["identifiers"] == ["facepi_testcam"] and c["unique_id"].startswith("facepi_testcam")
        assert c["device"]["name"] == "Testcam" and c["origin"]["name"] == "facepi" and "object_id" not in c
        assert c["availability_topic"] == f"{base}/availability"
    assert configs["homeassistant/event/facepi_testcam/recognition/config"]["event_types"] == [
        "recognized", "unknown", "correction"]
    assert all(e["type"] == ("unknown" if e["name"] == "unknown" else "recognized") for e in events)
    last = json.loads(sub.on(f"{base}/last")[-1])  # retained: the dashboard's Last person after a restart
    assert last == events[-1]


def test_stdout_is_the_embedded_default(gallery4, faces_root, tmp_path):
    photos = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[:2]
    video = make_video(photos, tmp_path / "v.avi", fps=8, hold=1.0, gap=2.5)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery4), "--fast"],
                      env={"FACEPI_MQTT_HOST": ""})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["name"] for e in lines] == ["madonna", "madonna"] and [e["seq"] for e in lines] == [1, 2]


def eight_visits(faces_root: Path, tmp_path: Path) -> tuple[list[Path], Path]:
    """Two photos each of four enrolled people, 1 s in view, 1.5 s apart: about 20 s at 8 fps."""
    photos = [p for person in ("ben_afflek", "elton_john", "madonna", "jerry_seinfeld")
              for p in sorted((faces_root / "val" / person).glob("*.jpg"))[:2]]
    return photos, make_video(photos, tmp_path / "v.avi", fps=8, hold=1.0, gap=1.5)


def test_broker_outage_loses_nothing(broker, gallery4, faces_root, tmp_path):
    """Stop the broker mid-run and start it again: every event arrives, in order."""
    photos, video = eight_visits(faces_root, tmp_path)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery4),
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
                      env={"FACEPI_RECOGNITION_VISIT_GAP": "1.0", "FACEPI_MQTT_RECONNECT_MAX_SECONDS": "1"})
    assert sub.wait_for(lambda: len(sub.on("facepi/door/event")) >= 2, 60)
    broker.stop()
    time.sleep(5)  # events keep coming while the broker is away
    broker.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert sub.wait_for(lambda: len(sub.on("facepi/door/event")) >= len(photos), 30)
    sub.close()
    events = sub.events("facepi/door/event")
    seqs = [e["seq"] for e in events]
    assert sorted(set(seqs)) == list(range(1, len(photos) + 1)), seqs
    assert seqs == sorted(seqs)  # in order (a duplicate redelivery is allowed by QoS 1)
    assert "lost the MQTT broker" in err and "refused the connection: is the broker running" in err
    assert err.count("refused the connection") == 1 and "Client is not connected" not in err


def test_sd_notify_and_sigterm(broker, gallery4, faces_root, tmp_path):
    """READY, WATCHDOG and STATUS on a real datagram socket; SIGTERM: offline published, exit 0."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate(sorted((faces_root / "val" / "madonna").glob("*.jpg"))):
        (folder / f"{i:03d}.jpg").symlink_to(p)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(folder), "--classifier", str(gallery4),
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
                      env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000",
                           "FACEPI_SOURCE_FPS": "0.2", "FACEPI_MQTT_STATUS_INTERVAL": "1"})
    got: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (any(m.startswith("READY=1") for m in got)
                                               and sum(m == "WATCHDOG=1" for m in got) >= 3
                                               and any(m.startswith("STATUS=") and "fps" in m for m in got)):
        try:
            got += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            pass
    assert sub.wait_for(lambda: sub.on("facepi/door/availability")[-1:] == [b"online"], 10)
    # Home Assistant restarts and announces itself: discovery is published again
    config = "homeassistant/sensor/facepi_door/last_person/config"
    assert sub.wait_for(lambda: len(sub.on(config)) == 1, 10)
    sub.client.publish("homeassistant/status", "online", qos=1)
    assert sub.wait_for(lambda: len(sub.on(config)) == 2, 10), "discovery not re-published"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert any(m.startswith("READY=1") for m in got), got
    assert sum(m == "WATCHDOG=1" for m in got) >= 3, got
    assert any(m.startswith("STATUS=") for m in got), got
    assert sub.wait_for(lambda: sub.on("facepi/door/availability")[-1:] == [b"offline"], 10)
    sub.close()
    sock.close()


def test_sighup_reloads_the_gallery(gallery4, faces_root, tmp_path):
    """Forget a person while the daemon runs; after SIGHUP the same face is no longer named."""
    import shutil

    gallery = tmp_path / "gallery.npz"
    shutil.copy(gallery4, gallery)
    folder = tmp_path / "frames"
    folder.mkdir()
    photo = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]
    for i in range(200):  # more than the test needs: it ends the daemon itself
        (folder / f"{i:03d}.jpg").symlink_to(photo)
    lines = Lines(run_daemon(["--source", str(folder), "--classifier", str(gallery)],
                             env={"FACEPI_SOURCE_FPS": "1", "FACEPI_RECOGNITION_VOTE_FRAMES": "1"}))
    assert lines.wait_for(lambda: lines.out), "".join(lines.err)  # madonna announced once at least
    forget = subprocess.run([sys.executable, "-m", "facepi", "forget", "madonna", "--gallery", str(gallery)],
                            cwd=ROOT, capture_output=True, text=True)
    assert forget.returncode == 0, forget.stderr
    lines.proc.send_signal(signal.SIGHUP)
    assert lines.wait_for(lambda: lines.err_has(r"SIGHUP[^\n]*: gallery reloaded")), "".join(lines.err)
    assert lines.wait_for(lambda: '"unknown"' in lines.out[-1]), "".join(lines.err)
    out, err = lines.finish()
    assert lines.proc.returncode == 0, err
    # the start-up log says what each model really runs on
    assert all(f"model {m}: ai-edge-litert" in err for m in ("mtcnn_pnet.tflite", "mobilefacenet_dynamic.tflite"))
    assert "XNNPACK (1 partition(s))" in err
    names = [json.loads(line)["name"] for line in out.splitlines()]  # a folder: one announcement per photo
    switch = names.index("unknown")
    assert switch >= 1 and names == ["madonna"] * switch + ["unknown"] * (len(names) - switch), err


def test_bad_config_is_named(tmp_path):
    from facepi.cli import main

    cfg = tmp_path / "facepi.toml"
    cases = {
        '[mqtt]\nhots = "x"\n': "mqtt.hots: unknown key (allowed here:",
        '[mqtt]\nport = "1883"\n': "mqtt.port = '1883': expected an integer",
        '[mqtt]\nport = 70000\n': "mqtt.port = 70000: must be between 1 and 65535",
        '[recognition]\nvisit_gap = -1\n': "recognition.visit_gap = -1",
        'camera_id = "front door"\n': "camera_id = 'front door'",
        '[mqtt\n': "not valid TOML",
    }
    for text, message in cases.items():
        cfg.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(cfg)],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, text
        assert message in proc.stderr and str(cfg) in proc.stderr, (text, proc.stderr)
    assert main(["check-config", "--config", str(tmp_path / "absent.toml")]) == 2


def test_example_config_is_valid_and_secrets_are_masked(tmp_path):
    example = ROOT / "systemd" / "facepi.toml.example"
    proc = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(example)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "FACEPI_MQTT_PASSWORD": "s3cr3t-pw",
                                                                "FACEPI_MQTT_HOST": "broker.lan"})
    assert proc.returncode == 0, proc.stderr
    assert 'host = "broker.lan"' in proc.stdout and "mqtt password: set" in proc.stdout
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr


def test_bad_credentials_are_clear_and_secret(tmp_path, gallery4, faces_root):
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "facepi", "right-password"], check=True)
    b = Broker(tmp_path / "auth-broker", password_file=pw)
    b.start()
    try:
        folder = tmp_path / "frames"
        folder.mkdir()
        (folder / "000.jpg").symlink_to(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0])
        proc = run_daemon(["--source", str(folder), "--classifier", str(gallery4),
                           "--mqtt-host", "127.0.0.1", "--mqtt-port", str(b.port)],
                          env={"FACEPI_MQTT_USERNAME": "facepi", "FACEPI_MQTT_PASSWORD": "wrong-hunter2",
                               "FACEPI_SOURCE_FPS": "0.1"})
        out, err = proc.communicate(timeout=60)
    finally:
        b.stop()
    assert proc.returncode == 2
    assert "refused the credentials" in err
    assert "wrong-hunter2" not in out + err


def test_source_that_dies_and_comes_back(gallery4, faces_root, tmp_path):
    """An HTTP MJPEG camera on loopback goes away and returns; the daemon reconnects and recognises."""
    import cv2

    from facepi.demo import letterbox
    from facepi.vision.images import read_rgb

    frame = letterbox(read_rgb(sorted((faces_root / "val" / "elton_john").glob("*.jpg"))[0]))
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    port = __import__("conftest").free_port()
    server_code = (
        "import sys, time, http.server\n"
        f"JPEG = open(sys.argv[1], 'rb').read(); PORT = {port}\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')\n"
        "        self.end_headers()\n"
        "        end = time.monotonic() + float(sys.argv[2])\n"
        "        while time.monotonic() < end:\n"
        "            self.wfile.write(b'--frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: '\n"
        "                             + str(len(JPEG)).encode() + b'\\r\\n\\r\\n' + JPEG + b'\\r\\n')\n"
        "            time.sleep(0.1)\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', PORT), H).handle_request()\n"
    )
    (tmp_path / "frame.jpg").write_bytes(jpeg)
    (tmp_path / "cam.py").write_text(server_code)

    def camera(seconds: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(tmp_path / "cam.py"), str(tmp_path / "frame.jpg"),
                                 str(seconds)])

    cam = camera(4)
    time.sleep(0.5)
    proc = run_daemon(["--source", f"http://127.0.0.1:{port}/stream.mjpg", "--classifier", str(gallery4)],
                      env={"FACEPI_SOURCE_RECONNECT_MAX_SECONDS": "1", "FACEPI_RECOGNITION_VISIT_GAP": "1"})
    cam.wait(timeout=30)  # the camera streams 4 s, then is gone
    time.sleep(3)  # the daemon keeps retrying while it is away
    cam = camera(4)  # back again
    cam.wait(timeout=60)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    names = [json.loads(line)["name"] for line in out.splitlines()]
    assert names == ["elton_john", "elton_john"], (names, err[-3000:])  # one visit before, one after
    assert "source failed" in err and "reopened" in err, err


def test_demo_command_runs_on_the_bundled_input(cache):
    """The README's main job: the daemon on the demo video, events on stdout."""
    proc = subprocess.run([sys.executable, "-m", "facepi", "demo", "--fast"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FACEPI_MQTT_HOST": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [json.loads(line)["name"] for line in proc.stdout.splitlines()]
    assert len(names) >= 25
    assert {"ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "unknown"} <= set(names)
    assert STRANGER not in names  # not enrolled: announced as unknown


def test_outage_beyond_the_queue_bound_is_counted(broker, gallery4, faces_root, tmp_path):
    """queue_size 2: events beyond it while the broker is away are dropped, counted in status,
    and visible to subscribers as a gap in seq."""
    _, video = eight_visits(faces_root, tmp_path)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery4),
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
                      env={"FACEPI_RECOGNITION_VISIT_GAP": "1.0", "FACEPI_MQTT_RECONNECT_MAX_SECONDS": "1",
                           "FACEPI_MQTT_QUEUE_SIZE": "2"})
    assert sub.wait_for(lambda: len(sub.on("facepi/door/event")) >= 1, 60)
    broker.stop()
    time.sleep(12)  # several visits pass while the broker is away
    broker.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]  # a file whose events were not all delivered: not a success
    assert "event(s) of this file were never delivered" in err
    assert sub.wait_for(lambda: sub.on("facepi/door/availability")[-1:] == [b"offline"], 30)
    sub.close()
    seqs = sorted({e["seq"] for e in sub.events("facepi/door/event")})
    final = json.loads([line for line in err.splitlines() if "final status:" in line][-1].split("final status: ")[1])
    assert final["events_dropped"] >= 1
    assert len(seqs) == final["events"] - final["events_dropped"]  # everything not dropped arrived
    assert seqs != list(range(1, final["events"] + 1))  # and subscribers can see the gap


def test_tls_broker(tmp_path, gallery4, faces_root):
    """mosquitto with a TLS listener (a CA and server certificate made here); the daemon verifies it."""
    d = tmp_path / "pki"
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=facepi test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
    b = Broker(tmp_path / "tls-broker", extra=[f"cafile {d / 'ca.crt'}", f"certfile {d / 'server.crt'}",
                                                f"keyfile {d / 'server.key'}"])
    b.start()
    try:
        sub = Subscriber(b.port, ca_file=d / "ca.crt")
        photos = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[:1]
        video = make_video(photos, tmp_path / "v.avi", fps=8, hold=1.0, gap=1.0)
        proc = run_daemon(["--source", str(video), "--classifier", str(gallery4), "--fast",
                           "--mqtt-host", "localhost", "--mqtt-port", str(b.port)],
                          env={"FACEPI_MQTT_TLS": "true", "FACEPI_MQTT_CA_FILE": str(d / "ca.crt")})
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert sub.wait_for(lambda: [e["name"] for e in sub.events("facepi/door/event")] == ["madonna"], 20)
        sub.close()
    finally:
        b.stop()
