"""Liveness at a real door: the real daemon (`facepi run` on a video), the real MiniFASNet models, the real
broker, real presentation attacks (NUAA: printed photos of the members held to the same webcam).

Members are enrolled from their own live frames of session 01; the camera is calibrated (`facepi liveness
calibrate`) on other people's live frames of the same webcam; the door video is each member's live frames
of session 02 (a visit) and then their printed photos (another visit). Every live visit is named; no attack
visit is announced as the member; the spoof events reach the broker, and presence stays OFF for them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, Subscriber, run_daemon

NUAA = ROOT.parent / "shared" / "data" / "liveness-dev" / "nuaa"
MEMBERS = ("0004", "0009")
OTHERS = ("0003", "0006")  # enrolled too (a gallery of four)
CALIBRATION = ("0001", "0005", "0008")  # other people, the same webcam
STRANGERS = ("0007", "0002")  # at the door: 0007 live, 0002's printed photo
FPS, VISIT, GAP = 8, 16, 3.0

pytestmark = pytest.mark.skipif(not NUAA.is_dir(), reason=f"{NUAA} absent (the liveness dev data)")


def frames(person: str, kind: str, session: str) -> list[Path]:
    """A person's frames of one session, in capture order (the last field of the name)."""
    found = [p for p in (NUAA / kind / person).glob("*.jpg") if p.stem.split("_")[3] == session]
    return sorted(found, key=lambda p: int(p.stem.split("_")[4]))


def write_video(visits: list[list[Path]], out: Path) -> Path:
    """Lossless (FFV1): the door sees the webcam's frames as they were; an empty view between visits."""
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (640, 480))
    assert w.isOpened()
    empty = np.full((480, 640, 3), 90, np.uint8)
    for _ in range(int(GAP * FPS)):
        w.write(empty)
    for visit in visits:
        for p in visit:
            w.write(cv2.resize(cv2.imread(str(p)), (640, 480)))
        for _ in range(int(GAP * FPS)):
            w.write(empty)
    w.release()
    return out


@pytest.fixture(scope="module")
def door(tmp_path_factory) -> tuple[Path, Path, list[tuple[str, str]]]:
    """A gallery (members from session 01), the camera calibrated, the door video and what each visit is."""
    from facepi.vision import liveness

    try:
        liveness.LivenessModel.load()
    except Exception as e:  # noqa: BLE001 - a checkout without the converted liveness models
        pytest.skip(f"no liveness models: {e}")
    work = tmp_path_factory.mktemp("livedoor")
    enrol = work / "enrol"
    for person in MEMBERS + OTHERS:
        (enrol / person).mkdir(parents=True)
        for p in frames(person, "live", "01")[::6][:8]:
            (enrol / person / p.name).symlink_to(p)
    from facepi.vision.photos import load_pipeline
    from facepi.workflow import train

    gallery, failures = train(load_pipeline(), enrol)
    assert not failures
    g = work / "gallery.npz"
    gallery.save(g)
    cal = work / "calibration"
    cal.mkdir()
    for person in CALIBRATION:
        for p in (frames(person, "live", "01") + frames(person, "live", "02"))[::4]:
            (cal / f"{person}_{p.name}").symlink_to(p)
    for p in frames(STRANGERS[0], "live", "01")[::4]:  # the stranger's other session
        (cal / f"{STRANGERS[0]}_{p.name}").symlink_to(p)
    r = subprocess.run([sys.executable, "-m", "facepi", "liveness", "calibrate", str(cal), "--camera-id", "door",
                        "--gallery", str(g)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    visits, plan = [], []
    for person in MEMBERS:
        visits += [frames(person, "live", "02")[:VISIT], frames(person, "attack", "02")[:VISIT]]
        plan += [(person, "live"), (person, "attack")]
    visits += [frames(STRANGERS[0], "live", "02")[:VISIT], frames(STRANGERS[1], "attack", "02")[:VISIT]]
    plan += [("unknown", "live"), ("unknown", "attack")]
    return g, write_video(visits, work / "door.avi"), plan


def test_a_photo_of_a_member_is_not_the_member(broker, door, tmp_path):
    gallery, video, plan = door
    from facepi.identity import liveness as rules

    calibrated = rules.load(str(gallery), "door")
    assert calibrated is not None and calibrated.source == "calibrate"
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery), "--fast",
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--camera-id", "door"],
                      env={"FACEPI_LIVENESS_ENABLED": "1", "FACEPI_MQTT_SNAPSHOT": "1",
                           "FACEPI_LEARNING_ENABLED": "1", "FACEPI_LEARNING_PATH": str(tmp_path / "v.npz"),
                           # freshen after the two members' live visits (5 frames each), not after a day
                           "FACEPI_LIVENESS_FRAMES": "5", "FACEPI_LIVENESS_ADAPT_FRAMES": "10",
                           "FACEPI_LIVENESS_ADAPT_HOURS": "0.01"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    base = "facepi/door"
    assert sub.wait_for(lambda: sub.on(f"{base}/availability")[-1:] == [b"offline"])
    sub.close()
    events = sub.events(f"{base}/event")
    said = [(e["name"], e.get("live"), e.get("resembles")) for e in events]
    members = set(MEMBERS)
    named = [e["name"] for e in events if e["name"] in members]
    # every live visit named, once, in order; nothing else named a member (no attack announced as the member)
    assert named == [p for p, kind in plan if kind == "live" and p in members], (said, err[-3000:])
    # the live stranger is a stranger (the printed photo of the other may be a spoof that resembles a member)
    assert len([e for e in events if e["name"] == "unknown" and "resembles" not in e]) >= 1, (said, err[-3000:])
    assert all(e["live"] is True for e in events if e["name"] in members)
    spoofs = sub.events(f"{base}/spoof")
    assert [s["resembles"] for s in spoofs if s["resembles"] in members] == \
        [p for p, kind in plan if kind == "attack" and p in members], (said, err[-3000:])
    assert all(s["name"] == "unknown" and s["live"] is False and s["liveness"] < 1 for s in spoofs)
    assert [e for e in events if e.get("live") is False] == spoofs  # the event topic says it too
    assert sub.on(f"{base}/spoof_snapshot")[-1][:2] == b"\xff\xd8"  # the spoof's picture (snapshots on)
    # presence: each member ON during their live visit, and never again after their spoof event
    order = [(t, p) for t, p, _ in sub.messages if t in (f"{base}/person", f"{base}/spoof")]
    for person in MEMBERS:
        on = [i for i, (t, p) in enumerate(order) if t.endswith("person") and person in json.loads(p)]
        spoof_at = next(i for i, (t, p) in enumerate(order) if t.endswith("spoof") and
                        json.loads(p)["resembles"] == person)
        assert on and max(on) < spoof_at, order
    status = json.loads(sub.on(f"{base}/status")[-1])["liveness"]
    assert status["state"] == "calibrated" and status["spoofs"] >= len(spoofs)
    assert len(plan) <= status["visits_checked"] <= 2 * len(plan)  # faces, not frames: the empty door costs nothing
    # with learning on, the live stranger becomes a visitor; the printed photo never does (so it can never
    # be named into the gallery from the dashboard or the command line)
    from facepi.identity.visitor_book import VisitorBook

    assert len(VisitorBook(gallery).visitors()) == 1, err[-3000:]
    # the members' live visits freshened the camera, saved beside the gallery with the person's anchor kept
    from facepi.identity import liveness as rules

    stored = rules.load(str(gallery), "door")
    assert stored.source == "door" and stored.anchor == calibrated.anchor, stored
    assert stored.threshold >= calibrated.threshold and status["source"] == "door"
    configs = {t for t, _, _ in sub.messages if t.startswith("homeassistant/") and t.endswith("/config")}
    assert {"homeassistant/event/facepi_door/spoof/config", "homeassistant/sensor/facepi_door/liveness/config",
            "homeassistant/image/facepi_door/spoof_snapshot/config"} <= configs


MSU = NUAA.parent / "msu"


@pytest.fixture(scope="module")
def msu() -> tuple[object, list[float], list[float]]:
    """The real models' P(live) of MSU's 15 live faces and 45 attacks (one phone camera)."""
    from facepi.vision.images import read_rgb
    from facepi.vision.liveness import LivenessModel
    from facepi.vision.photos import load_pipeline

    try:
        model = LivenessModel.load(threads=1)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no liveness models: {e}")
    pipe = load_pipeline(threads=1)

    def scores(kind: str) -> list[float]:
        out = []
        for p in sorted((MSU / kind).glob("*.jpg")):
            rgb = read_rgb(p)
            boxes, _ = pipe.detector.detect(rgb)
            out.append(model.score(rgb, boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]))
        return out

    live, attacks = scores("live"), scores("attack")
    assert len(live) == 15 and len(attacks) == 45
    return model, live, attacks


def test_a_few_replays_among_the_calibration_frames_are_refused_not_used(msu):
    """Calibration poisoning on the phone camera (the reviewer's attack): MSU's 15 live faces and n of its
    attacks that score just above the outlier cut. Before, the floor and the cut were computed from the poisoned
    set itself: +1 took the threshold from 0.9995 to 0.9942 (4 of 45 attacks live), +3 to 0.9783 (9 of 45).
    Now a separate low cluster is refused, naming it; the clean calibration is unchanged."""
    from facepi.identity import liveness as rules

    _, live, attacks = msu
    clean = rules.calibrate(live, "phone")
    assert sum(a >= clean.threshold for a in attacks) == 0
    m, s = rules._robust(rules.log_odds(np.array(live)))
    above_cut = sorted(a for a in attacks if a >= rules.probability(m - rules.OUTLIER_K * s))
    assert len(above_cut) >= 8
    for n in range(1, 9):  # up to 8 of 23 frames (35 %) poisoned
        with pytest.raises(rules.CalibrationRefused, match=f"{n} of {15 + n} faces score apart below"):
            rules.calibrate(live + above_cut[:n], "phone")


def test_photos_presented_again_and_again_cannot_loosen_the_camera(msu, tmp_path):
    """The calibration-poisoning attack on real scores: the real models on MSU's live faces and its printed
    photos and iPad/iPhone replays (one phone camera). The camera's threshold refuses 5 % of its live faces;
    then for 30 days the members come (live) and every attack is presented 4 times a day, each recognised
    as the member with margin (the attacker's best case). The threshold never falls below the calibrated
    one, and every attack refused on day 1 is still refused after the month."""
    from facepi import config
    from facepi.door.liveness import DAY, DoorLiveness

    model, live, attacks = msu
    from facepi.identity import liveness as rules

    cfg = config.Config()
    cfg.recognition.gallery = str(tmp_path / "none.npz")
    cfg.liveness.adapt_frames = 30  # freshen as often as the policy lets it
    door = DoorLiveness(cfg, model)
    door.fresh.cal = cal = rules.calibrate(live, "door", 0.05)  # this camera's own calibration
    anchor = float(rules.log_odds(cal.threshold))
    refused = {i for i, s in enumerate(attacks) if door.judge([s] * 3, 0.0, True)[0] is False}
    assert len(refused) >= 0.5 * len(attacks), attacks  # the check does refuse photos here
    lowest = anchor
    for day in range(1, 31):
        for k in range(4):
            for i, s in enumerate(attacks):
                door.judge([s] * 3, day * DAY + k * 60 + i, True)
            for v in range(0, 15, 3):
                door.judge(live[v:v + 3], day * DAY + k * 60 + 50 + v, True)
            lowest = min(lowest, float(rules.log_odds(door.threshold)))
    assert lowest >= anchor - 1e-9
    assert door.fresh.cal.source == "door"  # it was freshened, not frozen
    still = {i for i, s in enumerate(attacks) if door.judge([s] * 3, 31 * DAY, True)[0] is False}
    assert refused <= still, sorted(refused - still)


def test_an_uncalibrated_camera_says_so_and_stays_strict(door, tmp_path):
    """The same door, the camera's calibration removed: the daemon warns, its status says uncalibrated and
    the threshold it uses meanwhile (0.9), and still no photo is named a member."""
    import shutil
    import sqlite3

    gallery, video, plan = door
    g = tmp_path / "g.npz"
    if gallery.exists():  # the gallery itself may still be the .npz (imported on its first change)
        shutil.copy(gallery, g)
    with sqlite3.connect(gallery.with_suffix(".db")) as src, sqlite3.connect(g.with_suffix(".db")) as dst:
        src.backup(dst)  # the gallery's database as it is (WAL included)
        dst.execute("DELETE FROM liveness")
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LIVENESS_ENABLED": "1"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "camera door has no calibration" in err
    final = json.loads([x for x in err.splitlines() if "final status:" in x][-1].split("final status: ")[1])
    lv = final["liveness"]
    assert lv["state"] == "uncalibrated" and lv["threshold"] == 0.9 and lv["calibrated"] is None
    assert "no calibration for camera door" in lv["says"] and lv["fresh_visits"] == 0  # never freshened
    events = [json.loads(line) for line in out.splitlines()]
    assert not [e for e in events if e["name"] in MEMBERS and e.get("live") is not True]
    assert len([e for e in events if e.get("resembles") in MEMBERS]) == 2, events  # both photos: spoofs


def centred_video(segments: list[tuple[list[Path], int]], out: Path) -> Path:
    """Segments (frames, count; frames cycled) with each face moved to the same spot of the frame, as a photo
    held where the person stood: the tracker keeps one track across the swap (IoU), as it did for the attacker."""
    from facepi.vision.photos import load_pipeline

    det = load_pipeline(threads=1).detector
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (640, 480))
    empty = np.full((480, 640, 3), 90, np.uint8)
    for _ in range(2 * FPS):
        w.write(empty)
    for paths, count in segments:
        if not paths:  # a gap
            for _ in range(count):
                w.write(empty)
            continue
        for i in range(count):
            img = cv2.resize(cv2.imread(str(paths[i % len(paths)])), (640, 480))
            b, _ = det.detect(np.ascontiguousarray(img[:, :, ::-1]))
            if len(b):
                j = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
                m = np.float32([[1, 0, 298 - (b[j, 0] + b[j, 2]) / 2], [0, 1, 217 - (b[j, 1] + b[j, 3]) / 2]])
                img = cv2.warpAffine(img, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
            w.write(img)
    w.release()
    return out


def test_a_live_face_swapped_for_a_photo_in_the_same_spot_is_judged_again(broker, door, tmp_path):
    """The reviewer's attacks on one track: member 0009 live, then a printed photo of member 0004 held in the
    same spot (the track did not split: before, its 'live' verdict stayed and 0004 was announced live and
    present); then member 0004 live, swapped for 0004's own photo (before: presence stayed ON, no spoof).
    The verdict belongs to the name it was judged for, and a live member's track stays checked."""
    gallery, _, _ = door
    video = centred_video([(frames("0009", "live", "02")[:32], 32), (frames("0004", "attack", "02")[3:6], 48),
                           ([], 3 * FPS), (frames("0004", "live", "02")[:16], 16),
                           (frames("0004", "attack", "02")[3:6], 48), ([], 3 * FPS)], tmp_path / "swap.avi")
    sub = Subscriber(broker.port)
    proc = run_daemon(["--source", str(video), "--classifier", str(gallery), "--fast",
                       "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--camera-id", "door"],
                      env={"FACEPI_LIVENESS_ENABLED": "1", "FACEPI_LIVENESS_ADAPT": "0"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    base = "facepi/door"
    assert sub.wait_for(lambda: sub.on(f"{base}/availability")[-1:] == [b"offline"])
    sub.close()
    events = sub.events(f"{base}/event")
    said = [(e["name"], e.get("live"), e.get("resembles"), e["track_id"]) for e in events]
    assert [e["name"] for e in events if e["name"] in ("0004", "0009")] == ["0009", "0004"], (said, err[-3000:])
    spoofs = sub.events(f"{base}/spoof")
    assert "0004" in [s["resembles"] for s in spoofs], (said, err[-3000:])
    assert all(s["spoof"] is True and s["live"] is False for s in spoofs)
    last = json.loads(sub.on(f"{base}/last")[-1])
    assert last["name"] == "unknown" and last["spoof"] is True  # HA's Last person: a spoof, not the member
    # presence: 0004 ON only between its live event and the second spoof; never during the first photo
    order = [(t, p) for t, p, _ in sub.messages if t in (f"{base}/person", f"{base}/spoof", f"{base}/event")]
    live_0004 = next(i for i, (t, p) in enumerate(order) if t.endswith("event") and json.loads(p)["name"] == "0004")
    spoof_at = [i for i, (t, p) in enumerate(order) if t.endswith("spoof")]
    on = [i for i, (t, p) in enumerate(order) if t.endswith("person") and "0004" in json.loads(p)]
    after = [i for i in spoof_at if i > live_0004]  # the member's own photo: a spoof, presence OFF
    assert on and spoof_at[0] < live_0004 <= min(on) and after and max(on) < after[0], order
    assert json.loads([p for t, p in order if t.endswith("person")][-1]) == []


def test_a_face_not_judged_live_is_never_offered_to_this_is_x(door, tmp_path):
    """With liveness on and learning off a stranger is never scored: a printed photo of a non-member (0002) was
    kept for the page with ``live`` null and could be enrolled by "this is X". Now the kept event says it was
    not judged live, and the page refuses to enrol it, saying why; a live member's kept event says live."""
    import shutil
    import sqlite3

    from facepi import config
    from facepi.identity import events as door_events
    from facepi.identity.gallery import GalleryError
    from facepi.identity.store import Store
    from facepi.web.app import Page
    from facepi.web.auth import Password

    gallery, _, _ = door
    g = tmp_path / "g.npz"
    if gallery.exists():
        shutil.copy(gallery, g)
    with sqlite3.connect(gallery.with_suffix(".db")) as src, sqlite3.connect(g.with_suffix(".db")) as dst:
        src.backup(dst)
    video = write_video([frames("0004", "live", "02")[:VISIT]] +
                        [frames(p, "attack", "02")[:VISIT] for p in ("0002", "0005", "0007")], tmp_path / "door.avi")
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--fast", "--camera-id", "door"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LIVENESS_ENABLED": "1", "FACEPI_LIVENESS_ADAPT": "0"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    said = [json.loads(line) for line in out.splitlines()]
    kept = [e for e in door_events.recent(Store(g)) if e.run == said[0]["run"]]  # this run's (the copy has more)
    assert [e.live for e in kept if e.name == "0004"] == [True], (said, kept)
    photos = [e for e in kept if e.name == "unknown"]  # the photos not like a member (those are spoofs, not kept)
    assert photos and all(e.live is False for e in photos), (said, kept)
    cfg = config.Config()
    cfg.recognition.gallery = str(g)
    app = Page(cfg, Password("a long enough password"), g)
    with pytest.raises(GalleryError, match="not judged live at the door"):
        app.name_event({"run": photos[0].run, "seq": str(photos[0].seq), "name": "Eve"})
