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
    with pytest.raises(config.ConfigError, match="the file is empty"):
        config.load(None, env={"FACEPI_MQTT_PASSWORD_FILE": str(secret)})
