"""The configuration's schema: every section and key, its default, range and help text.

The example config (``systemd/facepi.toml.example``), ``check-config`` and the
reference in ``docs/configuration.md`` are all made from these dataclasses, so they
cannot drift from what ``facepi.config.load`` accepts.
"""

from __future__ import annotations

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
    uri: str = _f("0", "camera: 'picamera2' ('picamera2:1': a Pi 5's second camera), a V4L2 device index or path, "
                       "an RTSP/HTTP URL, a video file (.y4m: raw YUV420, nothing decoded), or a folder of images")
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
    still_interval: float = _f(2.0, "on a still scene, detect once this often (seconds) for idle_after seconds "
                                    "after the last motion or face", 0.1, 600)
    idle_after: float = _f(30.0, "seconds without motion or a face after which the scene is idle", 0, 86400)
    idle_interval: float = _f(10.0, "on an idle scene, detect the whole frame once this often (seconds): nobody "
                                    "arrives without moving; this look is the net for a walk-in the gate missed",
                              0.1, 3600)
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
    confirm_seconds: float = _f(0.5, "how sure before a name: seconds a member's face must keep matching (on "
                                      "two thirds of the looks) before the name is announced; longer: fewer "
                                      "wrong names, later names", 0.0, 10.0)
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
class LivenessConfig:
    enabled: bool = _f(False, "check that a face about to be named a member is live (not a photo or a screen); "
                              "strangers and an empty door are never checked. Calibrate each camera first: "
                              "facepi liveness calibrate FRAMES --camera-id ID (its --bpcer: the share of live "
                              "faces refused, 1 %)")
    frames: int = _f(3, "frames of a member's visit scored before it is judged (and announced)", 1, 30)
    recheck_frames: int = _f(3, "a member judged live is scored again on one frame in this many for as long as "
                                "the track lasts (a swap for a photo in the same spot is caught); 0: never", 0, 100)
    uncalibrated_threshold: float = _f(0.9, "a camera without a calibration judges a visit live at P(live) >= this "
                                            "(measured on both dev cameras: NUAA refuses 32 % of live visits and "
                                            "accepts no photo, MSU refuses none and accepts 31 % of attacks); the "
                                            "status says so", 0.01, 0.999)
    adapt: bool = _f(True, "keep a calibrated camera's threshold fresh from members' visits judged live")
    adapt_margin: float = _f(0.2, "a visit feeds the fresh threshold only if recognised this share inside the "
                                  "accept distance (a look-alike or a doubtful face never does)", 0, 0.9)
    adapt_frames: int = _f(100, "frames of such visits gathered before the threshold is freshened", 10, 10000)
    adapt_hours: float = _f(24.0, "the threshold is freshened at most once in this many hours (each time by at "
                                  "most 0.5 log-odds)", 0.01, 8760)
    adapt_floor: float = _f(0.0, "how far (log-odds) freshening may loosen below the last calibration; 0: never "
                                 "looser than calibrated", 0, 1)


@dataclass
class MqttConfig:
    host: str = _f("", "broker host; empty: print events as JSON lines on stdout")
    port: int = _f(1883, "broker port", 1, 65535)
    base_topic: str = _f("facepi/{camera_id}", "topic prefix; {camera_id} is replaced")
    client_id: str = _f("", "MQTT client id (empty: facepi-<camera_id>); commands are read as <client id>-in")
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
class WebConfig:
    listen: str = _f("127.0.0.1:8080", "where facepi web serves its page: host:port (0.0.0.0:8080 for the home "
                                       "network; the password comes from FACEPI_WEB_PASSWORD or the systemd "
                                       "credential web_password, and the page refuses to start without one)")
    events_kept: int = _f(100, "door events kept with their face crop for the page's review (the daemon writes "
                               "them; 0: keep none)", 0, 10000)
    events_days: float = _f(7.0, "door events older than this are deleted", 0.01, 365)
    max_upload_mb: float = _f(25.0, "largest photo one upload may carry (megabytes)", 0.1, 200)
    max_photos: int = _f(10, "photos one upload may carry", 1, 50)
    session_hours: float = _f(12.0, "a login lasts this long", 0.1, 720)
    secure_cookie: bool = _f(False, "mark the session cookie Secure (set it when the page is served over TLS, "
                                    "e.g. behind a reverse proxy)")
    frame_ancestors: str = _f("'self'", "who may show the page in a frame (CSP frame-ancestors), e.g. "
                                        "\"'self' https://ha.example.org\" for a Home Assistant Webpage card")
    hosts: str = _f("", "names the page answers to besides an address, localhost and this machine's own name "
                        "(and NAME.local), comma-separated, e.g. \"door.example.org\" behind a proxy: a request "
                        "for any other name is refused (DNS rebinding)")


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
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    web: WebConfig = field(default_factory=WebConfig)
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


def sections(cfg: Config) -> dict[str, Any]:
    """The sections by their TOML names, in the order the files list them."""
    return {"source": cfg.source, "models": cfg.models, "detection": cfg.detection, "motion": cfg.motion,
            "recognition": cfg.recognition, "mqtt": cfg.mqtt, "learning": cfg.learning,
            "household": cfg.household, "liveness": cfg.liveness, "web": cfg.web}


SECTION_HELP = {
    "source": "the camera",
    "models": "the TFLite models",
    "detection": "MTCNN face detection",
    "motion": "the motion gate: the detector runs only where and when the scene changes",
    "recognition": "naming faces, tracks and visits",
    "learning": "keep unknown visitors' best door crops to name them later",
    "mqtt": "the broker, topics and Home Assistant discovery",
    "liveness": "is the face a member's live face, or a photo or a screen held to the camera",
    "household": "one gallery shared by every facepi of the household over the broker, signed with a shared key",
    "web": "facepi web: the household's page (people, photos, door events, visitors), and the door events it shows",
}
