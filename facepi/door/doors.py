"""Someone at any door of the household: every door's state as one daemon sees it, and the aggregate.

Each daemon of a household publishes its own door, retained, at ``<household topic>/doors/<camera_id>``:
``{"camera": "front", "someone": true, "availability": "facepi/front/availability"}`` (the same notion
as the camera's "Someone in view": anyone, named or not, within ``presence_hold``). Every daemon
subscribes to ``<household topic>/doors/+`` and to the availability topic each door names, and keeps
the aggregate ``<household topic>/anyone`` (retained ``ON``/``OFF``) by republishing it whenever its own
view of the doors changes.

A door counts only while its camera is ``online``: a daemon killed with someone in view leaves its door
retained ``someone: true``, but the broker publishes its Last Will (``offline``) on the availability topic
at once (SIGKILL closes the socket) or after 1.5 x keepalive (power cut, network gone), and every other
daemon's view turns OFF. A clean stop publishes the door ``someone: false`` before ``offline``.

Why the daemons agree without talking to each other: MQTT delivers the messages of one topic to every
subscriber in the order the broker received them, so every daemon sees the same door and availability
messages in the same per-topic order and, once the last of them has arrived, computes the same aggregate
(a function of the newest message per topic only). Each daemon publishes ``anyone`` when its view
changes, so the last value each one publishes is that final aggregate; whichever daemon's message the
broker receives last, the retained ``anyone`` agrees with the final door states. In between, daemons
publish the same transitions at about the same time (duplicates that Home Assistant ignores). What this
cannot cover: a household whose only running daemon is killed with someone in view has nobody left to
republish; the door is cleared when that daemon starts again (it publishes its door at connect).
"""

from __future__ import annotations

import json
from typing import Any

SETTLE = 1.0  # seconds after connecting before `anyone` is published: the retained door states are in
MAX_DOORS = 64  # doors (and availability topics watched) one daemon keeps: a bound on junk on the broker
MAX_TOPIC = 256


def door_payload(camera_id: str, someone: bool, availability: str) -> str:
    """This daemon's door as published at ``<household topic>/doors/<camera_id>`` (retained)."""
    return json.dumps({"camera": camera_id, "someone": someone, "availability": availability})


def seen_payload(person: str, camera_id: str, camera_name: str, time: str) -> str:
    """A person's last sighting as published at ``<household topic>/seen/<person_key>`` (retained)."""
    return json.dumps({"person": person, "camera": camera_id, "camera_name": camera_name, "time": time},
                      ensure_ascii=False)


def _door(payload: bytes, camera: str | None = None) -> tuple[bool, str] | None:
    """(someone, availability topic) of a door message, or None for an empty (cleared) or malformed one, or
    one whose camera is not the topic's."""
    try:
        d: Any = json.loads(payload) if payload else None
    except (ValueError, RecursionError):  # RecursionError: a deeply nested array, from any client
        return None
    if not isinstance(d, dict) or not isinstance(d.get("someone"), bool) or \
            (camera is not None and d.get("camera") != camera):
        return None
    avail = d.get("availability")
    if not isinstance(avail, str) or not avail or len(avail) > MAX_TOPIC or any(c in avail for c in "+#\0") \
            or not avail.endswith("/availability"):  # a command topic named here would be taken as a door's
        return None
    return d["someone"], avail


class Doors:
    """One daemon's view of the household's doors: pure, fed with (topic, payload) messages.

    ``message()`` takes anything from ``<prefix>/doors/+`` and from the availability topics it asked for,
    and returns the availability topics to subscribe to now (a door seen for the first time);
    ``changed()`` says when this daemon should publish ``anyone``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.doors: dict[str, tuple[bool, str]] = {}  # camera id -> (someone, its availability topic)
        self.online: dict[str, bool] = {}  # availability topic -> its newest message said "online"
        self.mine = False  # this daemon's own door: someone in view
        self.sent: bool | None = None  # `anyone` as this daemon last published it, this connection
        self.settle_at: float | None = None  # not before then: the broker is still handing over retained states

    def connected(self, now: float, settle: float = SETTLE) -> list[str]:
        """A (new) connection: `anyone` is published once settled; returns the availability topics to watch."""
        self.sent, self.settle_at = None, now + settle
        return self.watched

    def changed(self, now: float) -> bool | None:
        """The new `anyone` if this daemon should publish it now (settled, and its view changed), else None."""
        if self.settle_at is None or now < self.settle_at or self.anyone == self.sent:
            return None
        self.sent = self.anyone
        return self.sent

    @property
    def subscription(self) -> str:
        return f"{self.prefix}/doors/+"

    @property
    def watched(self) -> list[str]:
        """The availability topics subscribed to (again after a reconnect)."""
        return sorted(self.online)

    def message(self, topic: str, payload: bytes) -> list[str]:
        doors = f"{self.prefix}/doors/"
        if topic.startswith(doors) and "/" not in topic[len(doors):]:
            camera = topic[len(doors):]
            door = _door(payload, camera)
            if door is None:
                self.doors.pop(camera, None)
                return []
            if camera not in self.doors and len(self.doors) >= MAX_DOORS:
                return []
            self.doors[camera] = door
            if door[1] not in self.online and len(self.online) < MAX_DOORS:
                self.online[door[1]] = False  # unknown until its (retained) message arrives: not counted
                return [door[1]]
            return []
        if topic in self.online:
            self.online[topic] = payload == b"online"
        return []

    def in_view(self) -> list[str]:
        """The cameras whose door has someone in view and which are online."""
        return sorted(c for c, (someone, avail) in self.doors.items() if someone and self.online.get(avail))

    @property
    def anyone(self) -> bool:
        return bool(self.in_view())
