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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/facepi/facepi.toml")


class ConfigError(Exception):
    pass


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "min": lo, "max": hi, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SourceConfig:
    uri: str = _f("0", "camera: 'picamera2', a V4L2 device index or path, an RTSP/HTTP URL, "
                       "a video file, or a folder of images")
    width: int = _f(640, "capture width for cameras", 64, 4096)
    height: int = _f(480, "capture height for cameras", 48, 4096)
    fps: float = _f(0.0, "pace for image folders (frames per second); 0: 2 fps for folders, "
                         "a video's own rate for files", 0, 240)
    fast: bool = _f(False, "process files as fast as possible instead of at their own pace")
    reconnect_max_seconds: float = _f(30.0, "longest wait between reconnection attempts", 0.1, 3600)
    username: str = _f("", "camera login for an RTSP/HTTP URL (the password comes from FACEPI_SOURCE_PASSWORD, "
                           "password_file or the systemd credential camera_password)")
    password_file: str = _f("", "file holding the camera password (a bare name: in $CREDENTIALS_DIRECTORY)")
    read_timeout_seconds: float = _f(10.0, "a camera read or open that takes longer fails and is retried", 0.5, 600)
    stall_seconds: float = _f(20.0, "a read blocked this long is a stall: the systemd watchdog is no longer "
                                    "pinged (WatchdogSec= restarts the service)", 1, 3600)
    max_bad_frames: int = _f(50, "unreadable frames in a row a video file may have before it is given up", 1,
                             100000)


@dataclass
class ModelsConfig:
    dir: str = _f("", "models folder (empty: the bundled models/)")
    embedder: str = _f("", "embedding model file in the manifest (empty: the gallery's / manifest's default)")
    threads: int = _f(0, "TFLite threads (0: the cores this process may use, at most 4)", 0, 64)
    embed_batch: int = _f(1, "faces embedded per call; larger batches save ~15 % per face, but every "
                             "batch size keeps its own copy of the packed weights (~30 MB)", 1, 64)


@dataclass
class DetectionConfig:
    minsize: int = _f(40, "smallest face to detect, in pixels of the frame", 12, 2000)
    thresholds: list[float] = _f([0.6, 0.7, 0.7], "P/R/O-Net score thresholds")
    factor: float = _f(0.709, "pyramid scale factor", 0.1, 0.95)
    downscale: float = _f(1.0, "detect on the frame scaled by this (faces are large at a door); with picamera2 "
                                "the ISP makes this smaller image (the lores stream)", 0.1, 1.0)


@dataclass
class MotionConfig:
    enabled: bool = _f(True, "detect only when and where the scene changes (and every still_interval)")
    width: int = _f(160, "width of the grey copy the change is measured on", 32, 1280)
    pixel_threshold: float = _f(18.0, "grey levels a pixel must change by in a normally lit scene (after "
                                      "brightness matching); a darker scene uses less, down to 5 x its noise", 1, 255)
    min_area: float = _f(0.004, "share of the frame (zone) that must change to be motion", 0.0001, 1)
    alpha: float = _f(0.05, "how fast the background follows the scene, per frame", 0.001, 1)
    still_interval: float = _f(2.0, "on a still scene, detect once this often (seconds)", 0.1, 600)
    region_margin: float = _f(0.5, "around motion and tracks, detect this much of their size further out", 0, 10)
    region_max_share: float = _f(0.6, "detect on a window (half or three quarters of the frame's sides) only "
                                      "when it is at most this share of the frame", 0, 1)
    zone: list[float] = _f([], "the part of the view that matters: x1, y1, x2, y2, ... (0..1, a polygon of "
                               "at least 3 points); empty: all of it")


@dataclass
class RecognitionConfig:
    gallery: str = _f("/var/lib/facepi/gallery.npz", "gallery file (facepi train / enroll)")
    threshold: float = _f(0.0, "cosine-distance threshold; 0: the gallery's calibrated one", 0.0, 2.0)
    vote_frames: int = _f(3, "embeddings combined before a track's identity is decided", 1, 50)
    reidentify_seconds: float = _f(1.0, "embed a track again this often (until decided, then to confirm)",
                                   0.0, 3600)
    visit_gap: float = _f(2.0, "seconds out of view that end a visit", 0.1, 3600)
    track_gap: float = _f(0.5, "seconds a face may be missed and still continue its track", 0.0, 60)
    presence_hold: float = _f(1.5, "seconds a name stays on the person topic after its face was last seen", 0, 600)
    split_distance: float = _f(0.0, "embedding distance from a track's own faces that starts a new track "
                                    "(0: the model's measured 5 %-FAR distance, else 1.5 x the threshold)", 0, 2)
    min_face_score: float = _f(0.95, "detector score an announced face needs (O-Net probability)", 0, 1)
    max_landmark_error: float = _f(0.12, "landmark fit error an announced face may have (share of face size)",
                                   0.01, 1)
    min_face_in_view: float = _f(0.85, "share of an announced unknown face's box inside the frame", 0, 1)
    unknown_min_frames: int = _f(5, "frames a face must be seen on before it can be announced as unknown", 1, 1000)
    max_frame_errors: int = _f(100, "frames in a row that may fail before the daemon exits (non-zero)", 1,
                               1_000_000)
    cooldown: float = _f(0.0, "per-person seconds before the same name is announced again (0: off)", 0, 86400)
    iou: float = _f(0.3, "overlap that continues a track from one frame to the next", 0.01, 1.0)
    debug_every_frame: bool = _f(False, "publish a prediction for every face on every frame (debugging)")


@dataclass
class LearningConfig:
    enabled: bool = _f(False, "keep unknown visitors' best door crops locally, to be named later (privacy: off)")
    path: str = _f("/var/lib/facepi/visitors.npz", "an earlier facepi's visitor store, imported once into the "
                                                   "gallery's database (where visitors now live)")
    max_visitors: int = _f(50, "visitors kept; the longest unseen are forgotten first", 1, 10000)
    keep_days: float = _f(30.0, "visitors unseen for this long are forgotten", 0.01, 3650)
    crops_per_visitor: int = _f(5, "best crops kept per visitor (detector score x size x sharpness)", 1, 50)


@dataclass
class MqttConfig:
    host: str = _f("", "broker host; empty: print events as JSON lines on stdout")
    port: int = _f(1883, "broker port", 1, 65535)
    base_topic: str = _f("facepi/{camera_id}", "topic prefix; {camera_id} is replaced")
    client_id: str = _f("", "MQTT client id (empty: facepi-<camera_id>)")
    qos: int = _f(1, "QoS of events", 0, 2)
    keepalive: int = _f(30, "keepalive seconds", 5, 3600)
    username: str = _f("", "user name (the password comes from FACEPI_MQTT_PASSWORD or password_file)")
    password_file: str = _f("", "file holding the password")
    tls: bool = _f(False, "use TLS")
    ca_file: str = _f("", "CA certificate file for TLS (empty: the system's)")
    cert_file: str = _f("", "client certificate for TLS")
    key_file: str = _f("", "client key for TLS")
    queue_size: int = _f(1000, "events kept while the broker is unreachable; older ones beyond are dropped",
                         1, 1_000_000)
    reconnect_max_seconds: float = _f(30.0, "longest wait between reconnection attempts", 1, 3600)
    status_interval: float = _f(30.0, "seconds between retained status messages", 1, 86400)
    snapshot: bool = _f(False, "publish a JPEG of each announced face (privacy: off by default)")
    discovery: bool = _f(True, "publish Home Assistant MQTT discovery")
    discovery_prefix: str = _f("homeassistant", "Home Assistant discovery prefix")


@dataclass
class HouseholdConfig:
    id: str = _f("", "household id: every facepi with the same id and key shares one gallery over the broker "
                     "(letters, digits, _ and -); empty: off, this facepi's gallery is its own")
    key_file: str = _f("", "file holding the household key (at least 16 bytes, the same on every facepi of the "
                           "household; a bare name: in $CREDENTIALS_DIRECTORY); empty: the systemd credential "
                           "household_key")
    topic: str = _f("facepi/household/{id}", "topic prefix of the shared gallery; {id} is replaced")


@dataclass
class Config:
    camera_id: str = _f("door", "camera id: in topics and events (letters, digits, _ and -)")
    camera_name: str = _f("", "human name of the camera (Home Assistant device); empty: from camera_id "
                              "(front_door -> Front door)")
    log_level: str = _f("info", "logging level", choices=("debug", "info", "warning", "error"))
    source: SourceConfig = field(default_factory=SourceConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    household: HouseholdConfig = field(default_factory=HouseholdConfig)
    mqtt_password: str | None = field(default=None, repr=False, metadata={"secret": True})
    camera_password: str | None = field(default=None, repr=False, metadata={"secret": True})
    household_key: bytes | None = field(default=None, repr=False, metadata={"secret": True})

    @property
    def device_name(self) -> str:
        return self.camera_name or self.camera_id.replace("_", " ").replace("-", " ").strip().capitalize()

    @property
    def topic_base(self) -> str:
        return self.mqtt.base_topic.replace("{camera_id}", self.camera_id).rstrip("/")

    @property
    def household_topic(self) -> str:
        return self.household.topic.replace("{id}", self.household.id).rstrip("/")


def _sections(cfg: Config) -> dict[str, Any]:
    return {"source": cfg.source, "models": cfg.models, "detection": cfg.detection, "motion": cfg.motion,
            "recognition": cfg.recognition, "mqtt": cfg.mqtt, "learning": cfg.learning,
            "household": cfg.household}


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
            raise ConfigError(f"{name}: unknown key (allowed here: {', '.join(sorted(fields))})")
        if dataclasses.is_dataclass(getattr(obj, key)):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a [{key}] table")
            _apply(getattr(obj, key), value, f"{name}.")
        else:
            setattr(obj, key, _coerce(name, value, f, from_text=False))


def load(path: Path | None = None, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None,
         require_file: bool = False) -> Config:
    """Defaults < TOML file < FACEPI_* environment < overrides ({'mqtt.host': ...})."""
    env = dict(os.environ) if env is None else env
    path = Path(path) if path else None
    cfg = _from_file(path, require_file)
    for name, value in env.items():
        if not name.startswith("FACEPI_") or name in ("FACEPI_MQTT_PASSWORD", "FACEPI_SOURCE_PASSWORD",
                                                      "FACEPI_CACHE", "FACEPI_MODELS", "FACEPI_GALLERY"):
            continue
        _set_dotted(cfg, _env_key(cfg, name), value, name, from_text=True)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(cfg, key, value, f"--{key.split('.')[-1].replace('_', '-')}", from_text=False)
    try:
        _check(cfg)
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
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if require_file:
            raise ConfigError(f"{path}: no such config file") from None
        return cfg
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
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
    for section in _sections(cfg):
        if rest.startswith(section + "_"):
            return f"{section}.{rest[len(section) + 1:]}"
    return rest


def _set_dotted(cfg: Config, key: str, value: Any, origin: str, from_text: bool) -> None:
    parts = key.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        obj = _sections(cfg).get(p)
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
    h = cfg.household
    if h.id and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", h.id):
        raise ConfigError(f"household.id = {h.id!r}: use 1-64 letters, digits, '_' or '-' (empty: off)")
    if h.id and (not cfg.household_topic or any(c in cfg.household_topic for c in "+#\0")):
        raise ConfigError(f"household.topic = {h.topic!r}: must be a topic without the wildcards '+' and '#'")


MIN_HOUSEHOLD_KEY = 16  # bytes: an HMAC-SHA256 key shorter than this is guessable


def household_key(h: HouseholdConfig, env: dict[str, str] | None = None) -> bytes:
    """The household key (the file's bytes, whitespace stripped), or ConfigError naming the file (never the key).

    ``key_file`` empty: the systemd credential ``household_key``; a bare name: in ``$CREDENTIALS_DIRECTORY``."""
    env = dict(os.environ) if env is None else env
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    if h.key_file:
        path = Path(h.key_file)
        if "/" not in h.key_file and creds and (Path(creds) / h.key_file).is_file():
            path = Path(creds) / h.key_file
        where = f"household.key_file = {h.key_file!r}"
    elif creds:
        path, where = Path(creds) / "household_key", "the systemd credential household_key"
    else:
        raise ConfigError(f"household.id = {h.id!r} needs the household key: set household.key_file, or "
                          f"LoadCredential=household_key in the service")
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


SECTION_HELP = {
    "source": "the camera",
    "models": "the TFLite models",
    "detection": "MTCNN face detection",
    "motion": "the motion gate: the detector runs only where and when the scene changes",
    "recognition": "naming faces, tracks and visits",
    "learning": "keep unknown visitors' best door crops to name them later",
    "mqtt": "the broker, topics and Home Assistant discovery",
    "household": "one gallery shared by every facepi of the household over the broker, signed with a shared key",
}

EXAMPLE_HEADER = """\
# facepi configuration: /etc/facepi/facepi.toml. Check it with: facepi check-config
# Every key can also be set from the environment as FACEPI_<SECTION>_<KEY>
# (e.g. FACEPI_MQTT_HOST). Passwords never live in this file: the MQTT password comes
# from FACEPI_MQTT_PASSWORD, mqtt.password_file or the systemd credential mqtt_password;
# the camera's from FACEPI_SOURCE_PASSWORD, source.password_file or camera_password.
# Generated from facepi/config.py (config.example()): every key, its default and what it does.
"""


def _toml(cfg: Config, help: bool) -> str:
    """The configuration as TOML (tomli_w writes the values, so the text loads back as the same
    configuration), URL logins masked; with ``help``, each key's help text above it."""
    import textwrap

    import tomli_w

    from facepi.redact import mask

    def toml_value(value: Any) -> str:
        if isinstance(value, list):  # one line: tomli_w writes an array over several
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        return tomli_w.dumps({"v": mask(value) if isinstance(value, str) else value})[len("v = "):].rstrip("\n")

    def lines(obj: Any) -> list[str]:
        out = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") or dataclasses.is_dataclass(value):
                continue
            if help:
                m = f.metadata
                allowed = f" ({m['min']:g} to {m['max']:g})" if m.get("min") is not None else \
                    f" ({', '.join(m['choices'])})" if m.get("choices") else ""
                out += [f"# {line}" for line in textwrap.wrap(m["help"] + allowed, 108)]
            out.append(f"{f.name} = {toml_value(value)}")
        return out

    text = lines(cfg)
    for name, section in _sections(cfg).items():
        text += ["", *([f"# [{name}]: {SECTION_HELP[name]}"] if help else []), f"[{name}]", *lines(section)]
    return "\n".join(text) + "\n"


def describe(cfg: Config) -> str:
    """The effective configuration as TOML that loads back as the same configuration (check-config),
    with passwords and URL logins masked."""
    return (_toml(cfg, help=False) + f"# mqtt password: {'set' if cfg.mqtt_password else 'not set'}\n"
            f"# camera password: {'set' if cfg.camera_password else 'not set'}\n"
            f"# household key: {'set' if cfg.household_key else 'not set'}")


def example() -> str:
    """systemd/facepi.toml.example: every section and key with its help text, from this schema, so the
    example cannot drift from what check-config prints (tests/test_config.py compares them)."""
    cfg = Config(camera_id="front_door", camera_name="Front door")
    cfg.source.uri = "picamera2"
    return EXAMPLE_HEADER + "\n" + _toml(cfg, help=True)
