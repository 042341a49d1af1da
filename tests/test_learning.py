"""Learning from the door: unknown visitors kept (opt-in), named from the CLI or the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Subscriber, one_face_photos, run_daemon

from facepi.demo import make_video
from facepi.gallery import Gallery
from facepi.store import db_path
from facepi.visitors import VisitorBook, VisitorError, Visitors

STRANGER = "mindy_kaling"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_store_groups_visits_bounds_itself_and_never_unpickles(tmp_path):
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))
    crops = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    store = Visitors.empty("m", 128)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    near = unit(np.stack([a + 0.05 * rng.normal(size=128) for _ in range(3)]))
    assert store.add_visit(crops, near, np.array([0.9, 0.5, 0.7]), same=0.7, keep=2, now=t0) == "V1"
    assert store.add_visit(crops[:1], unit(a[None] + 0.05), np.array([0.95]), same=0.7, keep=2,
                           now=t0 + timedelta(days=1)) == "V1"  # the same stranger, the next day
    assert store.add_visit(crops[:1], b[None], np.array([0.8]), same=0.7, keep=2, now=t0 + timedelta(days=2)) == "V2"
    v1 = store.visitors[0]
    assert (v1.visits, v1.first_seen[:10], v1.last_seen[:10]) == (2, "2026-11-01", "2026-11-02")
    kept_crops, _ = store.faces("V1")
    assert len(kept_crops) == 2  # the best two over both visits
    path = tmp_path / "v.npz"
    store.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = Visitors.load(path)
    assert [v.id for v in again.visitors] == ["V1", "V2"] and len(again.owner) == 3
    assert again.prune(max_visitors=10, keep_days=5, now=t0 + timedelta(days=6.5)) == ["V1"]  # unseen 5.5 days
    assert again.prune(max_visitors=0, keep_days=30, now=t0 + timedelta(days=7)) == ["V2"]
    np.savez(tmp_path / "evil.npz", header=np.array([{"x": 1}], dtype=object))
    with pytest.raises(VisitorError, match="not a facepi visitor store"):
        Visitors.load(tmp_path / "evil.npz")


@pytest.fixture(scope="module")
def stranger_video(tmp_path_factory, faces_root) -> Path:
    """The stranger twice (two photos), an enrolled person between: 2 s visits, 3 s apart."""
    work = tmp_path_factory.mktemp("stranger")
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), work)
    madonna = one_face_photos(sorted((faces_root / "val" / "madonna").glob("*.jpg")), work)
    return make_video([mindy[0], madonna[0], mindy[1]], work / "stranger.avi", fps=8, hold=2.0, gap=3.0)


def test_learning_is_off_by_default_and_stores_nothing(gallery4, stranger_video, tmp_path):
    store = tmp_path / "visitors.npz"
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(gallery4), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_PATH": str(store)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["unknown", "madonna", "unknown"]
    assert not store.exists() and "learning" not in err


def test_visitors_from_the_cli(gallery4, stranger_video, tmp_path):
    """The daemon keeps the stranger (both visits: one visitor); facepi visitors lists, draws, names him."""
    store, g = tmp_path / "visitors.npz", tmp_path / "g.npz"
    shutil.copy(gallery4, g)
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1",
                           "FACEPI_LEARNING_PATH": str(store)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    listed = subprocess.run([sys.executable, "-m", "facepi", "visitors", "--store", str(store), "--gallery", str(g),
                             "--json"], cwd=ROOT,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    visitors = json.loads(listed.stdout)["visitors"]
    assert [(v["id"], v["visits"]) for v in visitors] == [("V1", 2)], err[-2000:]
    assert 1 <= visitors[0]["faces"] <= 5
    assert db_path(g).stat().st_mode & 0o777 == 0o600  # visitors live in the gallery's database
    sheet = tmp_path / "sheet.png"
    r = subprocess.run([sys.executable, "-m", "facepi", "visitors", "--store", str(store), "--gallery", str(g),
                        "--sheet", str(sheet)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and sheet.read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "facepi", "visitors", "name", "V1", "unknown", "--store",
                          str(store), "--gallery", str(g)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "reserved" in bad.stderr  # names validated as enroll does
    r = subprocess.run([sys.executable, "-m", "facepi", "visitors", "name", "V1", STRANGER, "--store", str(store),
                        "--gallery", str(g)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert STRANGER in Gallery.load(g).people
    assert VisitorBook(g).visitors() == []
    proc = run_daemon(["--source", str(stranger_video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": ""})
    out, err = proc.communicate(timeout=120)
    assert [json.loads(line)["name"] for line in out.splitlines()] == [STRANGER, "madonna", STRANGER]


def test_name_the_last_visitor_from_the_dashboard(broker, gallery4, faces_root, tmp_path):
    """Home Assistant's "Name last visitor" over a real broker with the daemon running: the stranger's
    door crops are enrolled, the daemon reloads, and the stranger's next visit carries the name."""
    work = tmp_path / "w"
    work.mkdir()
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), work)
    video = make_video([mindy[0]] + [mindy[1]] * 6, tmp_path / "door.avi", fps=8, hold=2.0, gap=3.0)
    g, store = tmp_path / "g.npz", tmp_path / "visitors.npz"
    shutil.copy(gallery4, g)
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--mqtt-host", "127.0.0.1",
                       "--mqtt-port", str(broker.port)],
                      env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(store)})
    base = "facepi/door"
    try:
        configs = {t for t, _, _ in sub.messages if t.startswith("homeassistant/")}
        assert sub.wait_for(lambda: "homeassistant/text/facepi_door/name_visitor/config"
                            in {t for t, _, _ in sub.messages}, 30), configs
        assert sub.wait_for(lambda: any(json.loads(p).get("visitor") == "V1" for p in sub.on(f"{base}/learning")),
                            60)
        image = sub.on(f"{base}/visitor")[-1]
        assert image[:2] == b"\xff\xd8"  # the visitor's best crop, a JPEG
        sub.client.publish(f"{base}/name_visitor", STRANGER, qos=1)
        assert sub.wait_for(lambda: any(json.loads(p).get("ok") for p in sub.on(f"{base}/learning")), 30), \
            sub.on(f"{base}/learning")
        named_at = len(sub.on(f"{base}/event"))
        assert sub.wait_for(lambda: any(json.loads(p)["name"] == STRANGER
                                        for p in sub.on(f"{base}/event")[named_at:]), 40)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        sub.close()
    assert "learning: V1 enrolled as mindy_kaling" in err and re.search(r"learning[^\n]*: gallery reloaded", err)
    assert STRANGER in Gallery.load(g).people
