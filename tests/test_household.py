"""A household enrols from phone photos: real 5-celebrity photos made into phone photos, real models.

The photos are upscaled to ~12 MP and stored sideways with an EXIF Orientation
tag, as phones store portrait shots; one two-person photo is two photos pasted
side by side. People are enrolled one at a time with the CLI, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, Lines, run_daemon

from facepi.cli import main as facepi_main
from facepi.demo import phone_photo
from facepi.identity.store import Store, db_path
from facepi.identity.store import load as load_gallery

FAMILY = ("ben_afflek", "elton_john", "madonna")
STRANGERS = ("jerry_seinfeld", "mindy_kaling")
PER_PERSON = 5


def run_cli(*args: str, obey_permissions: bool = False) -> subprocess.CompletedProcess:
    """``facepi ARGS`` in a subprocess; ``obey_permissions``: as root without the capabilities that
    override file permissions, so a 0555 folder or a 0000 file stops it as it stops any user."""
    cmd = [sys.executable, "-m", "facepi", *args]
    if obey_permissions and os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def phone(tmp_path_factory, faces_root) -> dict[str, list[Path]]:
    """{person: [phone photos]} for the family: PER_PERSON train photos each, alternately 90° and 270°."""
    from facepi.vision.photos import load_pipeline

    pipe = load_pipeline()
    root = tmp_path_factory.mktemp("phone")
    out: dict[str, list[Path]] = {}
    for person in FAMILY:
        (root / person).mkdir()
        out[person] = []
        for i, src in enumerate(sorted((faces_root / "train" / person).glob("*.jpg"))):
            photo = phone_photo(src, root / person / f"IMG_{i:04d}.jpg", orientation=6 if i % 2 else 8)
            # Portraits only: a few web photos show a bystander of comparable size, which enrol
            # rightly refuses (see the group photo test).
            if pipe.photo(photo).others:
                photo.unlink()
            else:
                out[person].append(photo)
            if len(out[person]) == PER_PERSON:
                break
    return out


@pytest.fixture(scope="module")
def household(tmp_path_factory, phone) -> Path:
    """The family enrolled one at a time from their phone photos."""
    gallery = tmp_path_factory.mktemp("home") / "state" / "gallery.npz"
    gallery.parent.mkdir()  # the gallery's folder must exist (a missing one is refused: a typo)
    for person in FAMILY:
        r = run_cli("enroll", person, *map(str, phone[person]), "--gallery", str(gallery))
        assert r.returncode == 0, r.stderr
        assert f"Enrolled {PER_PERSON} photo(s) of {person}" in r.stdout  # every enrol photo used
    return gallery


def test_phone_photos_are_read_upright_and_small(phone):
    from facepi.vision.faces import DECODE_PIXELS
    from facepi.vision.images import read_photo, read_rgb

    photo = phone["madonna"][0]
    full = read_rgb(photo)
    h, w = full.shape[:2]
    assert h > w and h * w > 11e6  # upright (portrait), full size
    small, scale = read_photo(photo, DECODE_PIXELS)
    assert small.shape[0] > small.shape[1] and DECODE_PIXELS <= small.shape[0] * small.shape[1] < h * w / 3
    assert scale == pytest.approx(0.5, abs=0.01)


def test_folder_source_frames_are_upright_and_bounded(phone, tmp_path):
    from facepi.door.sources import FolderSource
    from facepi.vision.images import DECODE_PIXELS

    (tmp_path / "a.jpg").symlink_to(phone["madonna"][0])
    src = FolderSource(tmp_path)
    src.open()
    frame, _ = src.read()
    h, w = frame.shape[:2]
    assert h > w and h * w <= DECODE_PIXELS  # a 12 MP phone photo, not a 12 MP frame


def test_exif_rotated_photo_finds_its_face(phone):
    import cv2

    from facepi.vision.detect import Detector
    from facepi.vision.faces import DETECT_PIXELS
    from facepi.vision.images import read_photo, shrink

    rgb, _ = read_photo(phone["elton_john"][1], 1e6)
    small, _ = shrink(rgb, DETECT_PIXELS)
    det = Detector()
    upright = det.detect(small)[0]
    sideways = det.detect(np.ascontiguousarray(cv2.rotate(small, cv2.ROTATE_90_CLOCKWISE)))[0]
    assert len(upright) >= 1 and upright[:, 4].max() > 0.99
    assert len(sideways) == 0 or sideways[:, 4].max() < upright[:, 4].max()  # what ignoring EXIF gave


def test_detect_command_reports_the_photo_as_shown(phone):
    r = run_cli("detect", str(phone["madonna"][0]))
    assert r.returncode == 0, r.stderr
    faces = json.loads(r.stdout)["faces"]
    assert len(faces) == 1 and faces[0]["score"] > 0.95
    x1, y1, x2, y2 = faces[0]["box"]
    from PIL import Image, ImageOps

    with Image.open(phone["madonna"][0]) as im:
        w, h = ImageOps.exif_transpose(im).size  # the photo as a phone shows it
    assert h > w and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1) > w / 10  # full-size coordinates


def test_household_strangers_stay_unknown(household, faces_root, capsys):
    g = load_gallery(household)
    assert g.people == list(FAMILY) and len(g.labels) == PER_PERSON * len(FAMILY)
    assert os.stat(db_path(household)).st_mode & 0o777 == 0o600  # biometric templates
    cal = g.meta["calibration"]
    assert cal["source"] == "model" and cal["per_comparison_far"] == pytest.approx(0.01 / 3 / 3)
    assert g.crops is not None and g.crops.shape[1:] == (112, 112, 3)
    results = {}
    for split in ("train", "val"):
        capsys.readouterr()
        assert facepi_main(["classify", str(faces_root / split), str(household), "--json"]) == 0
        results[split] = json.loads(capsys.readouterr().out)["results"]
    strangers = [r for s in results.values() for r in s if Path(r["path"]).parent.name in STRANGERS]
    named = [(r["path"], r["name"], r["distance"]) for r in strangers if r["name"] != "unknown"]
    assert len(strangers) >= 40 and not named, named  # no stranger named as family
    family_val = [r for r in results["val"] if Path(r["path"]).parent.name in FAMILY]
    right = sum(r["name"] == Path(r["path"]).parent.name for r in family_val)
    assert right >= len(family_val) - 2, [(Path(r["path"]).parent.name, r["name"], r["distance"]) for r in family_val]


def _copy(household: Path, tmp_path: Path) -> Path:
    g = tmp_path / "gallery.npz"
    shutil.copy(db_path(household), db_path(g))  # the gallery lives in its database
    return g


def test_same_person_under_two_names_is_refused(household, faces_root, tmp_path):
    g = _copy(household, tmp_path)
    before = Store(g).version()
    other = sorted((faces_root / "train" / "ben_afflek").glob("*.jpg"))[PER_PERSON:PER_PERSON + 4]
    r = run_cli("enroll", "benjamin", *map(str, other), "--gallery", str(g))
    assert r.returncode == 2 and "benjamin looks like ben_afflek" in r.stderr and "Traceback" not in r.stderr
    assert Store(g).version() == before  # unchanged: no change in the journal
    r = run_cli("enroll", "benjamin", *map(str, other), "--gallery", str(g), "--force")
    assert r.returncode == 0 and "warning: benjamin looks like ben_afflek" in r.stderr
    # Forced, the two names share a face, yet the rule stays the model's: strangers are not let in.
    assert load_gallery(g).meta["calibration"]["source"] == "model"


def test_duplicates_and_reenrolment_are_skipped(household, phone, tmp_path):
    import cv2

    g = _copy(household, tmp_path)
    rows = len(load_gallery(g).labels)
    # Re-enrolling the same photos: idempotent.
    r = run_cli("enroll", "madonna", *map(str, phone["madonna"]), "--gallery", str(g))
    assert r.returncode == 0 and "already in" in r.stdout, r.stderr
    assert len(load_gallery(g).labels) == rows
    # The same photo twice in one go, and a resized re-save of an enrolled photo.
    src = sorted((phone["madonna"][0].parent.parent / "madonna").glob("*.jpg"))
    new = tmp_path / "new.jpg"
    shutil.copy(phone["elton_john"][0], tmp_path / "ej.jpg")
    img = cv2.imread(str(src[2]))
    cv2.imwrite(str(new), cv2.resize(img, None, fx=0.5, fy=0.5), [cv2.IMWRITE_JPEG_QUALITY, 80])
    r = run_cli("enroll", "madonna", str(new), str(src[2]), "--gallery", str(g))
    assert r.returncode == 0, r.stderr
    assert "same shot as madonna/" in r.stderr and "skipped" in r.stderr
    assert len(load_gallery(g).labels) == rows
    # An enrolled photo under another name is refused, naming the owner.
    r = run_cli("enroll", "alice", str(tmp_path / "ej.jpg"), "--gallery", str(g))
    assert r.returncode == 2 and "already enrolled as elton_john" in r.stderr


def test_group_photo_is_refused_or_largest_face_taken(household, faces_root, tmp_path):
    import cv2

    from facepi.vision.detect import Detector

    g = _copy(household, tmp_path)
    det = Detector()

    def face_side(bgr: np.ndarray) -> float:
        box = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))[0][0]
        return float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))

    a = cv2.imread(str(sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]))
    b = cv2.imread(str(sorted((faces_root / "val" / "mindy_kaling").glob("*.jpg"))[0]))
    a = cv2.resize(a, None, fx=200 / face_side(a), fy=200 / face_side(a))  # madonna's face: 200 px
    b = cv2.resize(b, None, fx=150 / face_side(b), fy=150 / face_side(b))  # the other: 150 px, comparable
    h = max(a.shape[0], b.shape[0])
    a, b = (cv2.copyMakeBorder(x, 0, h - x.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255)) for x in (a, b))
    group = tmp_path / "group.jpg"
    cv2.imwrite(str(group), np.hstack([a, b]))
    r = run_cli("enroll", "madonna", str(group), "--gallery", str(g))
    assert r.returncode == 2 and "2 faces" in r.stderr and "--largest-face" in r.stderr, r.stderr
    r = run_cli("enroll", "madonna", str(group), "--gallery", str(g), "--largest-face")
    assert r.returncode == 0, r.stderr
    assert load_gallery(g).counts()["madonna"] == PER_PERSON + 1
    assert load_gallery(g).meta["threshold"] == load_gallery(household).meta["threshold"]  # rule unmoved


def test_outlier_photo_is_named(household, faces_root, tmp_path):
    g = _copy(household, tmp_path)
    mine = sorted((faces_root / "train" / "madonna").glob("*.jpg"))[PER_PERSON:PER_PERSON + 2]
    stray = sorted((faces_root / "train" / "jerry_seinfeld").glob("*.jpg"))[0]
    r = run_cli("enroll", "madonna", *map(str, mine), str(stray), "--gallery", str(g))
    assert r.returncode == 2 and f"{stray}: far from madonna's other photos" in r.stderr, r.stderr
    r = run_cli("gallery", "check", "--gallery", str(g), "--sheet", str(tmp_path / "sheet.png"))
    assert r.returncode in (0, 1) and "madonna" in r.stdout and "threshold" in r.stdout
    import cv2

    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] >= 8 * 112


@pytest.mark.parametrize("name", ["unknown", "Stranger", "", "bad\x07name", "a/b", "x#"])
def test_reserved_or_unsafe_names_are_refused_before_any_work(name, tmp_path, capsys):
    g = tmp_path / "g.npz"
    # --models points nowhere: a refusal that came after loading models would say so instead.
    code = facepi_main(["enroll", name, str(tmp_path), "--gallery", str(g), "--models", str(tmp_path / "none")])
    assert code == 2 and "person name" in capsys.readouterr().err and not g.exists() and not db_path(g).exists()


def test_quotes_in_a_name_survive(household, phone, tmp_path):
    g = _copy(household, tmp_path)
    assert run_cli("forget", "madonna", "--gallery", str(g)).returncode == 0
    name = 'Anne "Annie" Smith'
    r = run_cli("enroll", name, *map(str, phone["madonna"]), "--gallery", str(g))
    assert r.returncode == 0, r.stderr
    assert name in load_gallery(g).people


def test_two_enrolls_at_once_both_land(phone, tmp_path):
    g = tmp_path / "gallery.npz"
    cmd = [sys.executable, "-m", "facepi", "enroll"]
    procs = [subprocess.Popen([*cmd, p, *map(str, phone[p][:3]), "--gallery", str(g)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in ("ben_afflek", "elton_john")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert sorted(load_gallery(g).people) == ["ben_afflek", "elton_john"]
    assert len(load_gallery(g).labels) == 6


def test_forget_the_last_person_with_a_running_daemon(phone, faces_root, tmp_path):
    g = tmp_path / "gallery.npz"
    assert run_cli("enroll", "madonna", *map(str, phone["madonna"]), "--gallery", str(g)).returncode == 0
    folder = tmp_path / "frames"
    folder.mkdir()
    photo = sorted((faces_root / "val" / "madonna").glob("*.jpg"))[0]
    for i in range(200):  # more than the test needs: it ends the daemon itself
        (folder / f"{i:03d}.jpg").symlink_to(photo)
    lines = Lines(run_daemon(["--source", str(folder), "--classifier", str(g)],
                             env={"FACEPI_SOURCE_FPS": "1", "FACEPI_RECOGNITION_VOTE_FRAMES": "1"}))
    assert lines.wait_for(lambda: lines.out), "".join(lines.err)  # madonna announced once at least
    r = run_cli("forget", "madonna", "--gallery", str(g))
    assert r.returncode == 0 and "nobody" in r.stdout, r.stderr
    lines.proc.send_signal(signal.SIGHUP)
    assert lines.wait_for(lambda: lines.err_has(r"SIGHUP[^\n]*: gallery reloaded")), "".join(lines.err)
    assert lines.wait_for(lambda: '"unknown"' in lines.out[-1]), "".join(lines.err)
    out, err = lines.finish()
    assert lines.proc.returncode == 0, err
    names = [json.loads(line)["name"] for line in out.splitlines()]  # a folder: one scene per photo
    switch = names.index("unknown")
    assert switch >= 1 and names == ["madonna"] * switch + ["unknown"] * (len(names) - switch), err
    assert json.loads(err.split("final status: ")[1].splitlines()[0])["people"] == 0
    # The empty gallery is valid for the commands and a fresh start of the daemon.
    r = run_cli("classify", str(faces_root / "val" / "madonna"), str(g), "--json")
    assert r.returncode == 0 and {x["name"] for x in json.loads(r.stdout)["results"]} == {"unknown"}
    r = subprocess.run([sys.executable, "-m", "facepi", "run", "--source", str(folder), "--classifier", str(g),
                        "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_reload_error_shows_in_status(phone, faces_root, tmp_path):
    g = tmp_path / "gallery.npz"
    assert run_cli("enroll", "madonna", *map(str, phone["madonna"][:3]), "--gallery", str(g)).returncode == 0
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(200):  # more than the test needs: it ends the daemon itself
        (folder / f"{i:03d}.jpg").symlink_to(phone["madonna"][0])
    lines = Lines(run_daemon(["--source", str(folder), "--classifier", str(g)], env={"FACEPI_SOURCE_FPS": "1"}))
    assert lines.wait_for(lambda: lines.err_has("ready: ")), "".join(lines.err)
    db_path(g).write_bytes(b"not a gallery")
    lines.proc.send_signal(signal.SIGHUP)
    assert lines.wait_for(lambda: lines.err_has(r"SIGHUP[^\n]*: gallery not reloaded")), "".join(lines.err)
    out, err = lines.finish()
    assert lines.proc.returncode == 0, err
    final = json.loads(err.split("final status: ")[1].splitlines()[0])
    assert "gallery not reloaded" in final["reload_error"] and final["people"] == 1


needs_setpriv = pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                                   reason="as root, needs setpriv to drop the permission-override capabilities")


@needs_setpriv
def test_os_errors_are_named_without_traceback(phone, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = run_cli("enroll", "madonna", str(phone["madonna"][0]), "--gallery", str(ro / "g.npz"),
                obey_permissions=True)
    assert r.returncode == 2 and str(ro) in r.stderr and "not writable" in r.stderr, r.stderr
    assert "embedding" not in r.stderr  # found before any work
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(phone["madonna"][0], locked / "a.jpg")
    locked.chmod(0o000)
    r = run_cli("enroll", "madonna", str(locked), "--gallery", str(tmp_path / "g.npz"), obey_permissions=True)
    locked.chmod(0o755)
    assert r.returncode == 2 and str(locked) in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_os_errors_in_config_and_models_are_named(tmp_path, capsys):
    from facepi.cli import main

    assert main(["check-config", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err
    (tmp_path / "models").write_text("a file")
    assert main(["models", "--models", str(tmp_path / "models")]) == 2
    assert "models" in capsys.readouterr().err
    pw = tmp_path / "pw"
    pw.write_text("secret")
    pw.chmod(0o000)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "{pw}"\n')
    r = run_cli("check-config", "--config", str(cfg), obey_permissions=True)
    assert r.returncode == 2 and str(pw) in r.stderr and "Traceback" not in r.stderr and "secret" not in r.stderr
