"""Configuration precedence and validation (pure logic: a TOML file, an environment dict, flags)."""

from __future__ import annotations

import pytest

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
