"""The daemon's configuration: one TOML file, one schema, validated once at start-up.

Precedence: built-in defaults < the TOML file < environment variables
(``FACEPI_<SECTION>_<KEY>``, e.g. ``FACEPI_MQTT_HOST``) < command-line flags.
Secrets never live in the file: the MQTT and camera passwords come from
``FACEPI_MQTT_PASSWORD`` / ``FACEPI_SOURCE_PASSWORD``, from ``mqtt.password_file`` /
``source.password_file``, or from systemd credentials (``LoadCredential=mqtt_password``
/ ``camera_password``, read from ``$CREDENTIALS_DIRECTORY``). An unknown key, a
wrong type or an out-of-range value is an error that names the key, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

# the schema and the TOML text are facepi.config's public surface: facepi.config.Config, .load, .example
from facepi.config.schema import (  # noqa: F401
    DEFAULT_PATH,
    Config,
    ConfigError,
    DetectionConfig,
    HouseholdConfig,
    LearningConfig,
    LivenessConfig,
    ModelsConfig,
    MotionConfig,
    MqttConfig,
    RecognitionConfig,
    SourceConfig,
    WebConfig,
    sections,
)
from facepi.config.text import describe, example  # noqa: F401  (check-config, the example file)


def _coerce(key: str, value: Any, f: dataclasses.Field, from_text: bool) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    want = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list[float]": "a list of numbers"}[kind]
    try:
        if kind == "bool":
            if from_text:
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value = value.lower() in ("1", "true", "yes", "on")
            elif not isinstance(value, bool):
                raise ValueError
        elif kind == "int":
            if isinstance(value, bool) or (not from_text and not isinstance(value, int)):
                raise ValueError
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool) or (not from_text and not isinstance(value, int | float)):
                raise ValueError
            value = float(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError
        elif kind == "list[float]":
            if from_text:
                value = [float(v) for v in value.split(",")]
            if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                      for v in value):
                raise ValueError
            value = [float(v) for v in value]
    except ValueError:
        raise ConfigError(f"{key} = {value!r}: expected {want}") from None
    m = f.metadata
    lo, hi, choices = m.get("min"), m.get("max"), m.get("choices")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"{key} = {value!r}: must be between {lo:g} and {hi:g}")
    if choices and value not in choices:
        raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(choices)}")
    return value


def _apply(obj: Any, table: dict[str, Any], prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("secret")}
    for key, value in table.items():
        name = f"{prefix}{key}"
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"{name}: unknown key{_belongs(key, prefix)} (allowed here: {', '.join(sorted(fields))})")
        if dataclasses.is_dataclass(getattr(obj, key)):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a [{key}] table")
            _apply(getattr(obj, key), value, f"{name}.")
        else:
            setattr(obj, key, _coerce(name, value, f, from_text=False))


def _belongs(key: str, prefix: str) -> str:
    """Where a key that is unknown here does belong ("it belongs in [mqtt]"), if anywhere."""
    homes = [f"[{section}]" for section, obj in sections(Config()).items()
             if section != prefix.rstrip(".") and key in {f.name for f in dataclasses.fields(obj)}]
    if not homes and prefix and key in {f.name for f in dataclasses.fields(Config())}:
        return ": it belongs at the top of the file, before any [section]"
    return f": it belongs in {' or '.join(homes)}" if homes else ""


def _toml_hint(text: str, error: tomllib.TOMLDecodeError) -> str:
    """The TOML parser's words with a hint for the two mistakes people make: text without quotes, and
    True/False (Python's) for true/false."""
    import re

    at = re.search(r"line (\d+)", str(error))
    lines = text.splitlines()
    line = lines[int(at.group(1)) - 1] if at and 0 < int(at.group(1)) <= len(lines) else ""
    value = line.split("=", 1)[1].split("#", 1)[0].strip() if "=" in line else ""
    if value in ("True", "False", "TRUE", "FALSE", "yes", "no", "on", "off"):
        return f": use true or false (lower case, no quotes) in {line.strip()!r}"
    if value and not value.startswith(('"', "'", "[", "{")) and value[0] not in "-+0123456789":
        return f": text needs quotes, e.g. {line.split('=', 1)[0].strip()} = \"{value}\""
    return ""


def load(path: Path | None = None, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None,
         require_file: bool = False, secrets: bool = True) -> Config:
    """Defaults < TOML file < FACEPI_* environment < overrides ({'mqtt.host': ...}). ``secrets`` False: no
    password, key or credential is read (``facepi web`` never holds the camera's or the broker's)."""
    env = dict(os.environ) if env is None else env
    path = Path(path) if path else None
    cfg = _from_file(path, require_file)
    for name, value in env.items():
        if not name.startswith("FACEPI_") or name in ("FACEPI_MQTT_PASSWORD", "FACEPI_SOURCE_PASSWORD",
                                                      "FACEPI_WEB_PASSWORD", "FACEPI_CACHE", "FACEPI_MODELS",
                                                      "FACEPI_GALLERY"):
            continue
        _set_dotted(cfg, _env_key(cfg, name), value, name, from_text=True)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(cfg, key, value, f"--{key.split('.')[-1].replace('_', '-')}", from_text=False)
    try:
        _check(cfg)
        if not secrets:
            return cfg
        cfg.mqtt_password = _secret(env, "FACEPI_MQTT_PASSWORD", "mqtt.password_file", cfg.mqtt.password_file,
                                    "mqtt_password")
        cfg.camera_password = _secret(env, "FACEPI_SOURCE_PASSWORD", "source.password_file",
                                      cfg.source.password_file, "camera_password")
        cfg.household_key = household_key(cfg.household, env) if cfg.household.id else None
        from facepi.redact import remember, remember_uri, with_password

        remember(cfg.mqtt_password, cfg.camera_password,  # masked verbatim in whatever text goes out
                 cfg.household_key.decode("utf-8", "replace") if cfg.household_key else None)
        remember_uri(cfg.source.uri)
        if cfg.camera_password or cfg.source.username:
            try:
                with_password(cfg.source.uri, cfg.source.username, cfg.camera_password)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    except ConfigError as e:
        where = f"{path} (with FACEPI_* environment and flags)" if path is not None and path.exists() else \
            "configuration"
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def _from_file(path: Path | None, require_file: bool) -> Config:
    """The defaults with the TOML file (if any) applied."""
    cfg = Config()
    if path is None:
        return cfg
    try:
        text = path.read_text()
        table = tomllib.loads(text)
    except FileNotFoundError:
        if require_file:
            raise ConfigError(f"{path}: no such config file") from None
        return cfg
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}){_toml_hint(text, e)}") from None
    try:
        _apply(cfg, table, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def store_paths(path: Path | None, env: dict[str, str] | None = None, require_file: bool = False) -> tuple[str, str]:
    """``recognition.gallery`` and ``learning.path`` as the daemon sees them (defaults < file < environment).

    For the gallery and visitor commands, which run as users who may not read the broker's password
    file or TLS keys: nothing but these two keys is read from the environment, and no secret is touched.
    """
    env = dict(os.environ) if env is None else env
    path = Path(path) if path else None
    cfg = _from_file(path, require_file)
    for key in ("recognition.gallery", "learning.path"):
        name = "FACEPI_" + key.replace(".", "_").upper()
        if env.get(name):
            _set_dotted(cfg, key, env[name], name, from_text=True)
    return cfg.recognition.gallery, cfg.learning.path


def _env_key(cfg: Config, name: str) -> str:
    rest = name[len("FACEPI_"):].lower()
    for section in sections(cfg):
        if rest.startswith(section + "_"):
            return f"{section}.{rest[len(section) + 1:]}"
    return rest


def _set_dotted(cfg: Config, key: str, value: Any, origin: str, from_text: bool) -> None:
    parts = key.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        obj = sections(cfg).get(p)
        if obj is None:
            raise ConfigError(f"{origin}: unknown section {p!r}")
    fields = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("secret")
              and not dataclasses.is_dataclass(getattr(obj, f.name))}
    f = fields.get(parts[-1])
    if f is None:
        raise ConfigError(f"{origin}: unknown key {key!r} (allowed: {', '.join(sorted(fields))})")
    if isinstance(value, str) and not from_text and f.type != "str":
        from_text = True
    setattr(obj, parts[-1], _coerce(f"{key} (from {origin})" if origin else key, value, f, from_text))


def _check(cfg: Config) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cfg.camera_id):
        raise ConfigError(f"camera_id = {cfg.camera_id!r}: use 1-64 letters, digits, '_' or '-'")
    if len(cfg.detection.thresholds) != 3 or not all(0 <= t <= 1 for t in cfg.detection.thresholds):
        raise ConfigError(f"detection.thresholds = {cfg.detection.thresholds}: need three values in [0, 1]")
    zone = cfg.motion.zone
    if zone and (len(zone) < 6 or len(zone) % 2 or not all(0 <= v <= 1 for v in zone)):
        raise ConfigError(f"motion.zone = {zone}: expected x, y pairs in 0..1, at least three points")
    m = cfg.mqtt
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(m, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"mqtt.{key} = {value!r}: no such file")
    if (m.cert_file or m.key_file or m.ca_file) and not m.tls:
        raise ConfigError("mqtt.cert_file/key_file/ca_file are set but mqtt.tls = false: set mqtt.tls = true")
    if bool(m.cert_file) != bool(m.key_file):
        raise ConfigError("mqtt.cert_file and mqtt.key_file go together: set both or neither")
    listen(cfg.web.listen)
    if any(c in cfg.web.frame_ancestors for c in ";,\r\n\0") or not cfg.web.frame_ancestors.strip():
        raise ConfigError(f"web.frame_ancestors = {cfg.web.frame_ancestors!r}: expected sources separated by spaces, "
                          f"e.g. \"'self' https://ha.example.org\"")
    h = cfg.household
    if h.id and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", h.id):
        raise ConfigError(f"household.id = {h.id!r}: use 1-64 letters, digits, '_' or '-' (empty: off)")
    if h.id and not m.host:
        raise ConfigError(f"household.id = {h.id!r} shares the gallery over the broker: set mqtt.host too")
    if h.id and (not cfg.household_topic or any(c in cfg.household_topic for c in "+#\0")):
        raise ConfigError(f"household.topic = {h.topic!r}: must be a topic without the wildcards '+' and '#'")
    if h.id and cfg.camera_id == f"household_{h.id}":  # its Home Assistant ids would be the household device's
        raise ConfigError(f"camera_id = {cfg.camera_id!r} is the household's own id in Home Assistant: choose another")


def listen(value: str) -> tuple[str, int]:
    """``[web] listen`` as (host, port), or ConfigError saying what is expected."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() or c in "/@" for c in host):
        raise ConfigError(f"web.listen = {value!r}: expected host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
    return host, int(port)


MIN_HOUSEHOLD_KEY = 16  # bytes: an HMAC-SHA256 key shorter than this is guessable


def household_key(h: HouseholdConfig, env: dict[str, str] | None = None) -> bytes | None:
    """The household key (the file's bytes, whitespace stripped), or ConfigError naming the file (never the key).

    ``key_file`` empty: the systemd credential ``household_key``; None outside systemd (check-config on the
    command line cannot see the service's credentials; the daemon refuses to start without the key). A
    relative ``key_file``: in ``$CREDENTIALS_DIRECTORY`` first, as the passwords."""
    env = dict(os.environ) if env is None else env
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    if h.key_file:
        path = Path(h.key_file)
        if not path.is_absolute() and creds and (Path(creds) / h.key_file).is_file():
            path = Path(creds) / h.key_file
        where = f"household.key_file = {h.key_file!r}"
    elif creds:
        path, where = Path(creds) / "household_key", "the systemd credential household_key"
    else:
        return None
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file ({path})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    if len(key) < MIN_HOUSEHOLD_KEY:
        raise ConfigError(f"{where}: {path} holds {len(key)} bytes; a household key needs at least "
                          f"{MIN_HOUSEHOLD_KEY} (make one: head -c 32 /dev/urandom | base64 > {path.name})")
    return key


def _secret(env: dict[str, str], variable: str, key: str, file_value: str, credential: str) -> str | None:
    """A password from the environment, a file, or a systemd credential (in that order)."""
    if env.get(variable):
        return env[variable]
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    path: Path | None = None
    if file_value:
        path = Path(file_value)
        if not path.is_absolute() and creds and (Path(creds) / file_value).is_file():
            path = Path(creds) / file_value
        if not path.is_file():
            raise ConfigError(f"{key} = {file_value!r}: no such file"
                              f"{' (nor in $CREDENTIALS_DIRECTORY)' if creds else ''}")
    elif creds and (Path(creds) / credential).is_file():
        path = Path(creds) / credential
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text
