"""Configuration precedence and validation (a TOML file, an environment dict, flags); check-config's output
loads back; the example documents every key; the visitor commands read the config (real daemon, real photos)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tomllib

import pytest
from conftest import ROOT, one_face_photos, run_daemon

from facepi import config


def test_file_then_environment_then_flags(tmp_path):
    f = tmp_path / "facepi.toml"
    f.write_text('camera_id = "porch"\n[mqtt]\nhost = "file-host"\nport = 1884\n[detection]\nminsize = 60\n')
    env = {"FACEPI_MQTT_HOST": "env-host", "FACEPI_DETECTION_THRESHOLDS": "0.5,0.6,0.9",
           "FACEPI_SOURCE_FAST": "yes", "FACEPI_MQTT_PASSWORD": "pw"}
    cfg = config.load(f, env=env, overrides={"mqtt.port": 1999, "camera_id": None})
    assert cfg.camera_id == "porch"  # from the file (the flag was not given)
    assert cfg.mqtt.host == "env-host"  # environment beats the file
    assert cfg.mqtt.port == 1999  # flags beat both
    assert cfg.detection.minsize == 60 and cfg.detection.thresholds == [0.5, 0.6, 0.9]
    assert cfg.source.fast is True and cfg.mqtt_password == "pw"
    assert cfg.topic_base == "facepi/porch"
    assert "pw" not in config.describe(cfg) and "mqtt password: set" in config.describe(cfg)


def test_defaults_without_a_file(tmp_path):
    cfg = config.load(tmp_path / "absent.toml", env={})
    assert cfg.mqtt.host == "" and cfg.recognition.visit_gap == 2.0 and cfg.mqtt.qos == 1


@pytest.mark.parametrize(("env", "message"), [
    ({"FACEPI_MQTT_QOS": "3"}, "mqtt.qos (from FACEPI_MQTT_QOS) = 3: must be between 0 and 2"),
    ({"FACEPI_SOURCE_FAST": "maybe"}, "expected true or false"),
    ({"FACEPI_MQTT_NOPE": "1"}, "unknown key 'mqtt.nope'"),
    ({"FACEPI_MQTT_CERT_FILE": "/nonexistent.pem"}, "mqtt.cert_file = '/nonexistent.pem': no such file"),
])
def test_bad_environment_is_named(env, message):
    with pytest.raises(config.ConfigError) as e:
        config.load(None, env=env)
    assert message in str(e.value)


def test_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = config.load(None, env={"FACEPI_MQTT_PASSWORD_FILE": str(secret)})
    assert cfg.mqtt_password == "from-file"
    secret.write_text("")
    with pytest.raises(config.ConfigError, match="is empty"):
        config.load(None, env={"FACEPI_MQTT_PASSWORD_FILE": str(secret)})


def test_camera_password_from_environment_file_or_systemd_credentials(tmp_path):
    """As for the MQTT password: never in the TOML file; a systemd credential works by name."""
    uri = "rtsp://192.168.1.20:554/stream1"
    cfg = config.load(None, env={"FACEPI_SOURCE_URI": uri, "FACEPI_SOURCE_USERNAME": "door",
                                 "FACEPI_SOURCE_PASSWORD": "env-secret"})
    assert cfg.camera_password == "env-secret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "camera_password").write_text("cred-secret\n")
    (creds / "mqtt_password").write_text("mqtt-cred\n")
    cfg = config.load(None, env={"FACEPI_SOURCE_URI": uri, "FACEPI_SOURCE_USERNAME": "door",
                                 "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.camera_password == "cred-secret" and cfg.mqtt_password == "mqtt-cred"
    (creds / "door_pw").write_text("named-cred")
    cfg = config.load(None, env={"FACEPI_SOURCE_URI": uri, "FACEPI_SOURCE_USERNAME": "door",
                                 "FACEPI_SOURCE_PASSWORD_FILE": "door_pw", "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.camera_password == "named-cred"
    with pytest.raises(config.ConfigError, match=r"source.password_file = 'nope': no such file"):
        config.load(None, env={"FACEPI_SOURCE_PASSWORD_FILE": "nope", "CREDENTIALS_DIRECTORY": str(creds)})
    with pytest.raises(config.ConfigError, match="needs a URL"):  # a password for a V4L2 device index
        config.load(None, env={"FACEPI_SOURCE_URI": "0", "FACEPI_SOURCE_PASSWORD": "x", "FACEPI_SOURCE_USERNAME": "u"})
    text = config.describe(config.load(None, env={"FACEPI_SOURCE_URI": "rtsp://admin:hunter2@cam/live"}))
    assert "hunter2" not in text and "admin" not in text and "rtsp://*:*@cam/live" in text


def test_check_config_prints_toml_that_loads_back_as_the_same_config(tmp_path):
    f = tmp_path / "facepi.toml"
    (tmp_path / "door.mp4").write_bytes(b"")  # check-config looks for the file (it opens nothing)
    f.write_text(f'camera_id = "porch"\n[source]\nuri = "{tmp_path / "door.mp4"}"\nfast = true\n[motion]\n'
                 'enabled = false\n'
                 'zone = [0.1, 0.1, 0.9, 0.1, 0.5, 0.9]\n[detection]\nthresholds = [0.5, 0.6, 0.75]\n'
                 '[mqtt]\nhost = "broker.lan"\ntls = false\nbase_topic = "home/\\"door\\"/{camera_id}"\n')
    proc = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(f)], cwd=ROOT,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    printed = tomllib.loads(proc.stdout)  # valid TOML: `fast = False` would not be
    again = tmp_path / "again.toml"
    again.write_text(proc.stdout)
    assert dataclasses.asdict(config.load(again, env={})) == dataclasses.asdict(config.load(f, env={}))
    assert printed["source"]["fast"] is True and printed["motion"]["enabled"] is False
    assert f"# {f}, then FACEPI_* environment" in proc.stdout.splitlines()[0]


def test_check_config_says_when_built_in_defaults_are_in_use(tmp_path, monkeypatch, capsys):
    from facepi import cli

    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "facepi.toml")
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert f"no config file ({tmp_path / 'facepi.toml'} not found): built-in defaults" in out + err
    assert dataclasses.asdict(config.load(None, env={})) == dataclasses.asdict(config.load(_write(tmp_path, out),
                                                                                            env={}))


def _write(tmp_path, text):
    path = tmp_path / "printed.toml"
    path.write_text(text)
    return path


def _keys(table: dict, prefix: str = "") -> set[str]:
    return {k for key, value in table.items()
            for k in (_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})}


def test_the_example_documents_every_key_check_config_prints():
    """One source: the example is written from the schema's help texts (config.example())."""
    example = ROOT / "systemd" / "facepi.toml.example"
    text = example.read_text()
    regenerate = "python -c 'from facepi import config; print(config.example(), end=\"\")' > " + str(example)
    assert text == config.example(), f"systemd/facepi.toml.example is out of date; regenerate it: {regenerate}"
    printed = tomllib.loads(config.describe(config.Config()))
    assert _keys(tomllib.loads(text)) == _keys(printed) and "motion" in printed
    for section in printed:
        if isinstance(printed[section], dict):
            assert f"# [{section}]: " in text  # every section says what it is for
    config.load(example, env={}, require_file=True)  # and it is a valid configuration


@pytest.fixture(scope="module")
def visitor_gallery(tmp_path_factory, gallery4, faces_root):
    """A gallery whose database holds one unknown visitor, kept by the real daemon from real photos."""
    from facepi.demo import make_video

    work = tmp_path_factory.mktemp("visitor")
    mindy = one_face_photos(sorted((faces_root / "val" / "mindy_kaling").glob("*.jpg")), work)
    video = make_video(mindy[:1], work / "mindy.avi", fps=8, hold=2.0, gap=1.0)
    g = work / "g.npz"
    shutil.copy(gallery4, g)
    proc = run_daemon(["--source", str(video), "--classifier", str(g), "--fast"],
                      env={"FACEPI_MQTT_HOST": "", "FACEPI_LEARNING_ENABLED": "1",
                           "FACEPI_LEARNING_PATH": str(work / "none.npz")})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and [json.loads(line)["name"] for line in out.splitlines()] == ["unknown"], err
    return g


def facepi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facepi", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})})


def _old_store(visitor_gallery, gallery4, tmp_path):
    """An earlier facepi's visitors.npz holding the daemon's visitor, and a gallery without visitors."""
    from facepi.identity.visitor_book import VisitorBook

    old = tmp_path / "visitors.npz"
    VisitorBook(visitor_gallery).as_visitors().save(old)
    fresh = tmp_path / "fresh.npz"
    shutil.copy(gallery4, fresh)
    return old, fresh


def test_visitors_read_the_gallery_and_learning_path_from_the_config(visitor_gallery, gallery4, tmp_path):
    old, fresh = _old_store(visitor_gallery, gallery4, tmp_path)
    conf = tmp_path / "facepi.toml"
    conf.write_text(f'[recognition]\ngallery = "{fresh}"\n[learning]\npath = "{old}"\n')
    listed = facepi("visitors", "--config", str(conf), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["id"] for v in json.loads(listed.stdout)["visitors"]] == ["V1"]  # imported into fresh's database
    assert not old.exists() and old.with_name("visitors.npz.bak").exists()


def test_visitor_options_before_the_subcommand_are_honoured_or_refused(visitor_gallery, gallery4, tmp_path):
    old, fresh = _old_store(visitor_gallery, gallery4, tmp_path)
    refused = facepi("visitors", "--json", "--gallery", str(fresh), "--store", str(old), "forget", "V1")
    assert refused.returncode == 2 and "--json" in refused.stderr and old.exists()
    gone = facepi("visitors", "--gallery", str(fresh), "--store", str(old), "forget", "V1")
    assert gone.returncode == 0 and "Forgot V1" in gone.stdout, gone.stderr  # they used to be overwritten
    again = facepi("visitors", "--gallery", str(fresh))
    assert again.returncode == 0 and "No visitors yet" in again.stdout, again.stderr


def test_no_such_file_is_not_no_visitors_yet(gallery4, tmp_path):
    missing = facepi("visitors", "--gallery", str(tmp_path / "nope.npz"))
    assert missing.returncode == 2 and "nope.db: no such gallery database" in missing.stderr
    fresh = tmp_path / "fresh.npz"
    shutil.copy(gallery4, fresh)
    no_store = facepi("visitors", "--gallery", str(fresh), "--store", str(tmp_path / "nope-visitors.npz"))
    assert no_store.returncode == 0 and "nope-visitors.npz: no such file" in no_store.stderr
    assert "No visitors yet" in no_store.stdout


def test_demo_script_ends_with_a_summary_and_what_to_run_next(tmp_path):
    """scripts/demo.sh as a new user runs it, in a checkout whose set-up is done (a venv that sees this
    checkout and the test venv's packages, stamped as installed, so setup.sh installs nothing)."""
    import hashlib
    import sysconfig

    co = tmp_path / "checkout"
    (co / "scripts").mkdir(parents=True)
    for name in ("demo.sh", "setup.sh"):
        shutil.copy2(ROOT / "scripts" / name, co / "scripts" / name)
    shutil.copy(ROOT / "pyproject.toml", co / "pyproject.toml")
    venv = co / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    # addsitedir runs the test venv's own .pth files too: its editable install maps convert/ to facepi_convert
    purelib = sysconfig.get_paths()["purelib"]
    (site / "facepi-test.pth").write_text(f"{ROOT}\nimport site; site.addsitedir({purelib!r})\n")
    (venv / "bin" / "facepi").write_text(f"#!{venv}/bin/python\nimport sys\nfrom facepi.cli import main\n"
                                         "sys.exit(main())\n")
    (venv / "bin" / "facepi").chmod(0o755)
    stamp = hashlib.sha256((co / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".installed-{stamp}-").touch()
    proc = subprocess.run(["bash", str(co / "scripts" / "demo.sh"), "--fast"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [json.loads(line)["name"] for line in proc.stdout.splitlines() if line.startswith("{")]
    named = [n for n in names if n != "unknown"]
    lines = proc.stderr.strip().splitlines()
    assert lines[-2] == (f"demo: {len(names)} visit(s): {len(named)} named ({', '.join(sorted(set(named)))}), "
                         f"{len(names) - len(named)} unknown")
    assert f"{co}/.venv/bin/facepi" in lines[-1] and len(names) >= 5


def test_check_config_fails_on_a_missing_video_and_names_a_missing_gallery(tmp_path, gallery4):
    """A typo'd video path fails check-config with "no such file" (run says the same); a gallery that is not
    there yet is named with what to do, and is no failure (a fresh install has none until an enrol)."""
    f = tmp_path / "facepi.toml"
    video, gallery = tmp_path / "door.mkv", tmp_path / "nodir" / "gallery.npz"
    f.write_text(f'[source]\nuri = "{video}"\n[recognition]\ngallery = "{gallery}"\n')
    proc = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(f)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and f"source '{video}': no such file or folder" in proc.stderr, proc.stderr
    assert f"no gallery yet at {gallery} (nor its folder {gallery.parent}: make it first)" in proc.stderr
    run = subprocess.run([sys.executable, "-m", "facepi", "run", "--config", str(f), "--gallery", str(gallery4)],
                         cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no such file or folder" in run.stderr, run.stderr[-2000:]
    assert "XNNPACK delegate" not in run.stderr and "model mtcnn_pnet.tflite: ai-edge-litert" in run.stderr
    video.write_bytes(b"")
    gallery.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "facepi", "check-config", "--config", str(f)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and f"no gallery yet at {gallery}: enrol someone first" in proc.stderr, proc.stderr
    assert not list(gallery.parent.iterdir())  # looked at, nothing made


@pytest.mark.parametrize("text, said", [
    ('[mqtt]\nhost = broker.lan\n', 'text needs quotes, e.g. host = "broker.lan"'),
    ('[motion]\nenabled = True\n', "use true or false (lower case, no quotes) in 'enabled = True'"),
    ('[source]\nhost = "broker.lan"\n', "source.host: unknown key: it belongs in [mqtt]"),
    ('[mqtt]\ncamera_id = "porch"\n', "it belongs at the top of the file, before any [section]"),
])
def test_a_mistyped_config_says_what_to_write(tmp_path, text, said):
    f = tmp_path / "facepi.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(f, env={})
    assert said in str(e.value) and str(f) in str(e.value)


def test_a_command_on_the_built_in_default_gallery_says_which(tmp_path, monkeypatch, capsys):
    from facepi import cli

    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "facepi.toml")
    monkeypatch.delenv("FACEPI_GALLERY", raising=False)
    monkeypatch.delenv("FACEPI_RECOGNITION_GALLERY", raising=False)
    cli.main(["people"])
    err = capsys.readouterr().err
    assert (f"no --gallery and no config file ({tmp_path / 'facepi.toml'}): using the default gallery "
            f"{config.Config().recognition.gallery}") in err
    assert err.count("using the default gallery") == 1
