"""Where the daemon's news goes: ``make_publisher`` picks MQTT (``facepi.door.mqtt``) when a broker is
set, else ``StdoutPublisher`` (the same event JSON, one line each). What MQTT carries:

Topics under ``<base>`` (default ``facepi/<camera_id>``): ``availability``
(``online`` retained after connecting; ``offline`` as Last Will and on clean
shutdown), ``event`` (one JSON message per recognition), ``person`` (retained:
names in view), ``status`` (retained health), optional ``snapshot`` (JPEG); with liveness on, ``spoof``
(one JSON message per visit judged not live) and, with snapshots, ``spoof_snapshot`` (retained JPEG); with learning on,
``visitor`` (retained JPEG, only with ``mqtt.snapshot``), ``visitor_info`` (retained: which visitor
that image shows), ``learning`` (retained: what the last visit did) and ``answer`` (retained: every
command's answer); with discovery, ``entities`` (retained: what this door published, for the next run to
clear what is gone).
Commands arrive on ``command`` (``reload``) and ``name_visitor`` (JSON ``{"visitor": "V7", "name":
"alice"}``); retained ones are ignored (they would run again on every reconnect), each kind has its
own rate limit, and every command is answered on ``answer``, bounded apart from the events (junk
commands never cost an event) and refusals logged at a bounded rate.
Events published while the broker is away stay queued in paho in order and are
sent after it reconnects; at most ``queue_size`` are kept, and the ``status``
topic counts the ones dropped beyond that. Retained state topics coalesce:
through an outage only their newest message waits. Home Assistant discovery configs are
published on connect and whenever Home Assistant announces itself online. With ``[household] id`` and
discovery on, also under the household topic: ``seen/<person_key>`` (retained: where and when a person was
last named), ``doors/<camera_id>`` (retained: this door's someone-in-view) and ``anyone`` (``door.doors``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from facepi.config import Config
from facepi.door.mqtt import MqttPublisher

log = logging.getLogger(__name__)


class StdoutPublisher:
    """The embedded default: the same event JSON, one line each, on stdout."""

    def __init__(self) -> None:
        self.dropped = 0
        self.connected = True
        self.fatal: str | None = None
        self.on_command: Callable[[str], None] = lambda text: None
        self.on_name: Callable[[str, str], None] = lambda vid, name: None
        self.on_wrong: Callable[[str, int, str], None] = lambda name, seq, run: None
        self.on_show: Callable[[str], None] = lambda vid: None

    def start(self) -> None:
        pass

    def event(self, payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    def person(self, names: list[str]) -> None:
        log.debug("in view: %s", names)

    def status(self, payload: dict[str, Any]) -> None:
        log.debug("status: %s", payload)

    def snapshot(self, jpeg: bytes) -> None:
        pass

    def spoof(self, payload: dict[str, Any], jpeg: bytes | None) -> None:
        pass  # the event line says it already ("live": false)

    def flush(self) -> None:
        pass

    def set_people(self, people: list[str], keys: dict[str, str] | None = None) -> None:
        pass

    def visitor(self, jpeg: bytes, info: dict[str, Any] | None) -> None:
        pass

    def set_visitors(self, ids: list[str]) -> None:
        pass

    def learning(self, payload: dict[str, Any]) -> None:
        log.info("learning: %s", payload.get("message"))

    def answer(self, command: str, ok: bool, message: str, visitor: str | None = None) -> None:
        self.learning({"ok": ok, "command": command, "message": message})

    @property
    def queue_depth(self) -> int:
        return 0

    def stop(self, timeout: float = 5.0) -> int:
        return 0


Publisher = StdoutPublisher | MqttPublisher  # what the daemon publishes through: the broker, or stdout


def make_publisher(cfg: Config) -> Publisher:
    return MqttPublisher(cfg) if cfg.mqtt.host else StdoutPublisher()
