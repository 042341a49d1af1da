"""Forget a camera on the broker: Home Assistant removes its device when its discovery configs are gone.

A camera that is taken away (``systemctl disable --now facepi@old_door``) leaves its retained messages on
the broker: one discovery config per entity (``<discovery_prefix>/<component>/facepi_<camera_id>/<object>/
config``, see ``facepi.door.homeassistant``), so Home Assistant keeps showing the device, unavailable, for ever;
and its retained state topics under ``<base_topic>`` (availability, status, the last person, ...).
:func:`forget_camera` subscribes to exactly those topics, collects what the broker holds retained, and
clears each with an empty retained message. Other cameras' topics are never subscribed to.

It connects with the same configuration, login, password (environment, file or systemd credential) and TLS
as the daemon (``facepi.door.broker.mqtt_client``), under a client id of its own, so it never knocks a running
facepi off the broker. A camera whose availability still says ``online`` is running: it would publish its
entities again, so it is refused unless ``force``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

from facepi.config import Config
from facepi.door import homeassistant

# The retained topics facepi publishes under a camera's base topic (facepi.door.mqtt: availability and the
# state slots, the snapshot, the dashboard's visitor and its info, the learning notices, the command answers, the
# manifest of its entities), and its command topics (never retained by facepi; a retained one left by someone
# else is cleared as well).
RETAINED = ("availability", "status", "last", "person", "snapshot", "visitor", "visitor_info", "learning",
            "answer", "entities")
COMMANDS = ("command", "name_visitor", "wrong_name")


class ForgetError(Exception):
    pass


@dataclass
class Forgotten:
    camera_id: str
    cleared: list[str] = field(default_factory=list)  # topics cleared (with dry_run: that would be)
    online: bool = False  # its availability said "online" (a running facepi)
    dry_run: bool = False

    @property
    def discovery(self) -> list[str]:
        return [t for t in self.cleared if t.endswith("/config")]


def camera_topics(cfg: Config, camera_id: str) -> tuple[str, list[str]]:
    """(base topic, the topic filters of everything retained for ``camera_id``) under ``cfg``'s settings."""
    base = cfg.mqtt.base_topic.replace("{camera_id}", camera_id).rstrip("/")
    door = [f"{cfg.household_topic}/doors/{camera_id}"] if cfg.household.id else []  # its door in the household
    return base, [homeassistant.discovery_filter(cfg.mqtt.discovery_prefix, camera_id),
                  *(f"{base}/{leaf}" for leaf in RETAINED + COMMANDS), *door]


def forget_camera(cfg: Config, camera_id: str, dry_run: bool = False, force: bool = False, settle: float = 1.0,
                  timeout: float = 15.0) -> Forgotten:
    """Clear every retained discovery config and state topic of ``camera_id`` on ``cfg``'s broker.

    The broker hands over retained messages right after a subscription; they are collected until none has
    arrived for ``settle`` seconds. Returns what was cleared. ``ForgetError``: the broker cannot be reached
    or refused the login, or the camera is online (unless ``force``)."""
    from facepi.door.broker import AUTH_FAILURES, mqtt_client, why_unreachable

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", camera_id):
        raise ForgetError(f"camera id {camera_id!r}: use 1-64 letters, digits, '_' or '-'")
    m = cfg.mqtt
    if not m.host:
        raise ForgetError("no broker: set mqtt.host in the configuration (or --mqtt-host)")
    base, filters = camera_topics(cfg, camera_id)
    client = mqtt_client(cfg, client_id=f"facepi-forget-{os.getpid()}")
    lock = threading.Lock()
    found: dict[str, bytes] = {}
    state = {"refused": "", "last": 0.0}
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            state["refused"] = str(reason_code)
            subscribed.set()
            return
        client.subscribe([(f, 1) for f in filters])

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        state["last"] = time.monotonic()
        subscribed.set()

    def on_message(client, userdata, msg) -> None:
        if not msg.retain or not msg.payload:  # live traffic, or already cleared
            return
        if msg.topic.endswith("/config") and not homeassistant.is_ours(msg.topic, m.discovery_prefix, camera_id):
            return
        with lock:
            found[msg.topic] = msg.payload
            state["last"] = time.monotonic()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(m.host, m.port, m.keepalive)
    except OSError:
        raise ForgetError(why_unreachable(m.host, m.port)) from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise ForgetError(f"the MQTT broker {m.host}:{m.port} did not answer within {timeout:g} s")
        if state["refused"]:
            hint = " (check mqtt.username and the password)" if state["refused"] in AUTH_FAILURES else ""
            raise ForgetError(f"MQTT broker {m.host}:{m.port} refused the connection: {state['refused']}{hint}")
        deadline = time.monotonic() + timeout
        while time.monotonic() - state["last"] < settle and time.monotonic() < deadline:
            time.sleep(0.05)
        with lock:
            topics = dict(found)
        online = topics.get(f"{base}/availability") == b"online"
        if online and not force and not dry_run:
            raise ForgetError(f"camera {camera_id} is online (its {base}/availability says so): a running facepi "
                              f"publishes its entities again. Stop it first (sudo systemctl disable --now "
                              f"facepi@{camera_id}), or force it")
        # discovery configs first (Home Assistant removes the entities), then the state they showed
        order = sorted(topics, key=lambda t: (not t.endswith("/config"), t))
        if not dry_run:
            infos = [client.publish(t, b"", qos=1, retain=True) for t in order]
            for t, info in zip(order, infos, strict=True):
                info.wait_for_publish(timeout)
                if not info.is_published():
                    raise ForgetError(f"{t}: the broker did not acknowledge the empty retained message")
        return Forgotten(camera_id, order, online, dry_run)
    finally:
        client.disconnect()
        client.loop_stop()
