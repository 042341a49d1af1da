"""Several doors, one household: two ``facepi run`` instances on one host (facepi@front_door and
facepi@back_door) share one gallery and one visitor store, with one real mosquitto.

While both run, ``facepi enroll`` adds the stranger from the command line; both daemons notice the
change, reload, and name the stranger at their own door. Learning on both stores the stranger's earlier
visits in the same database without corrupting it: ``facepi visitors`` lists them and SQLite's
``PRAGMA integrity_check`` is ``ok``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time

from conftest import ROOT, STRANGER, Lines, Subscriber, one_face_photos, run_daemon

from facepi.demo import make_video
from facepi.identity.store import db_path, open_store

CAMERAS = ("front_door", "back_door")


def test_two_instances_share_one_gallery_and_one_visitor_store(broker, gallery4, faces_root, tmp_path):
    started = time.monotonic()
    # one gallery database, as /var/lib/facepi/gallery.db is for every facepi@ instance on a host
    gallery = tmp_path / "state" / "gallery.npz"
    gallery.parent.mkdir()
    gallery.write_bytes(gallery4.read_bytes())
    open_store(gallery)  # imported into gallery.db as enrolling does (gallery.npz is kept as .bak)
    assert db_path(gallery).exists()

    # each door its own camera: the stranger (not enrolled) calls at both, a different photo at each
    work = tmp_path / "work"
    work.mkdir()
    mindy = one_face_photos(sorted((faces_root / "val" / STRANGER).glob("*.jpg")), work)
    assert len(mindy) >= 2
    videos = {cam: make_video([mindy[i]] * 12, work / f"{cam}.avi", fps=8, hold=1.5, gap=2.0)
              for i, cam in enumerate(CAMERAS)}

    sub = Subscriber(broker.port)
    daemons = {cam: Lines(run_daemon(
        ["--source", str(videos[cam]), "--classifier", str(gallery), "--camera-id", cam,
         "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)],
        env={"FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(gallery.parent / "visitors.npz"),
             "FACEPI_MQTT_STATUS_INTERVAL": "5"})) for cam in CAMERAS}

    def names(cam: str) -> list[str]:
        return [e["name"] for e in sub.events(f"facepi/{cam}/event")]

    try:
        # 1. the stranger is unknown at both doors, and learning keeps the visits (one store, two writers)
        for cam, lines in daemons.items():
            assert lines.wait_for(lambda lines=lines: lines.err_has(r"learning: V\d+ stored"), 60), \
                (cam, "".join(lines.err)[-3000:])
            assert "unknown" in names(cam), (cam, names(cam))

        # 2. enrolled from the command line while both run: each daemon reloads and names her
        photos = sorted((faces_root / "train" / STRANGER).glob("*.jpg"))
        enroll = subprocess.run([sys.executable, "-m", "facepi", "enroll", STRANGER, *map(str, photos),
                                 "--gallery", str(gallery), "--force"], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert enroll.returncode == 0, enroll.stdout + enroll.stderr
        for cam, lines in daemons.items():
            assert lines.wait_for(lambda lines=lines: lines.err_has(r"gallery changed[^\n]*: gallery reloaded"),
                                  30), (cam, "".join(lines.err)[-3000:])
            assert sub.wait_for(lambda cam=cam: STRANGER in names(cam), 40), (cam, names(cam),
                                                                            "".join(daemons[cam].err)[-3000:])
    finally:
        results = {cam: lines.finish() for cam, lines in daemons.items()}
        sub.close()

    for cam, (_, err) in results.items():
        assert daemons[cam].proc.returncode == 0, (cam, err[-3000:])
        seen = names(cam)
        # unknown until the enrolment, her name after it; never the other door's events
        first = seen.index(STRANGER)
        assert set(seen[:first]) == {"unknown"} and first >= 1, seen
        assert all(e["camera"] == cam for e in sub.events(f"facepi/{cam}/event"))
        # two MQTT clients (facepi-front_door, facepi-back_door): neither knocked the other off the broker
        assert err.count("connected to MQTT broker") == 1 and "lost the MQTT broker" not in err, err[-3000:]
        assert "could not store the visitor" not in err and "not stored" not in err, err[-3000:]
        last = [line for line in err.splitlines() if "final status: " in line][-1]
        final = json.loads(last.split("final status: ", 1)[1])
        assert final["reload_error"] is None and "gallery not reloaded" not in err, err[-3000:]
        assert final["visitor_store_dropped"] == 0 and final["people"] == 5, final
        # each door's Home Assistant device is its own
        assert any(t.startswith(f"homeassistant/sensor/facepi_{cam}/") for t, _, _ in sub.messages)

    # the one visitor store: both doors' visits are in it, and it reads back whole
    listed = subprocess.run([sys.executable, "-m", "facepi", "visitors", "--gallery", str(gallery), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    visitors = json.loads(listed.stdout)["visitors"]
    stored: dict[str, list[int]] = {}  # visitor -> the visit counts its writers saw, from both doors
    for _, err in results.values():
        for vid, visits in re.findall(r"learning: (V\d+) stored \((\d+) visit", err):
            stored.setdefault(vid, []).append(int(visits))
    # no write lost or doubled: each visit counted once, on top of every earlier one from either door
    assert stored and all(sorted(n) == list(range(1, len(n) + 1)) for n in stored.values()), stored
    assert {v["id"]: v["visits"] for v in visitors} == {vid: len(n) for vid, n in stored.items()}, (visitors, stored)
    people = subprocess.run([sys.executable, "-m", "facepi", "people", "--gallery", str(gallery), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert people.returncode == 0 and STRANGER in people.stdout, people.stderr
    con = sqlite3.connect(db_path(gallery))
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        # the enrolment is one journaled change (after the import), whoever else was writing
        assert [r[0] for r in con.execute("SELECT what FROM journal ORDER BY id")] == ["migration", "enrol"]
    finally:
        con.close()
    print(f"visits per visitor, from both doors: {stored}; {time.monotonic() - started:.1f} s")


def _first_visit(gallery: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    """What a daemon's first stored visit does to a gallery still in an earlier facepi's .npz: import it."""
    import numpy as np

    from facepi.identity.visitor_book import VisitorBook

    face = np.ones((1, 128), np.float32) / np.sqrt(128)
    barrier.wait()
    try:
        VisitorBook(gallery).record("mobilefacenet-ms1m/dynamic", 128, np.zeros((1, 112, 112, 3), np.uint8), face,
                                    np.array([1.0]), 0.5, 5, 50, 30)
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the test reports whatever went wrong
        results.put(f"{type(e).__name__}: {e}")


def test_two_instances_upgrading_one_npz_gallery_import_it_once(gallery4, tmp_path):
    """Two instances started on an earlier facepi's gallery.npz both reach the import at once (their first
    visits): before, one found the new database without its tables or moved a backup already moved, and
    the gallery was imported twice. Now: one import, one backup, both visits stored."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round in range(4):
        gallery = tmp_path / f"r{round}" / "gallery.npz"
        gallery.parent.mkdir()
        gallery.write_bytes(gallery4.read_bytes())
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_first_visit, args=(str(gallery), barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok", "ok"], round
        con = sqlite3.connect(db_path(gallery))
        try:
            assert [r[0] for r in con.execute("SELECT what FROM journal")] == ["migration"], round
            assert con.execute("SELECT visits FROM visitors").fetchall() == [(2,)], round
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            con.close()
        assert not gallery.exists() and gallery.with_name("gallery.npz.bak").is_file()
        assert sorted(p.name for p in gallery.parent.iterdir() if p.name.startswith(".")) == []  # no leftovers
