"""The dashboard's visitor and the event snapshots, as ``MqttPublisher`` publishes them (a mixin: mqtt.py stays
on a few screens).

A naming is sent for the id in ``visitor_info`` under the picture in ``visitor`` (issue 28): both are this
daemon's alone, so anything else written there (a forged ``visitor_info`` would send the household's naming
to another visitor) is replaced at once, as ``doors/<camera>`` is. The snapshot is handed to paho at the
event's QoS before its event, so it is on the broker first: a notification built on the event shows its face.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)
OWNED = ("visitor", "visitor_info")  # retained topics the daemon restores if someone else writes them


class VisitorTopics:
    """Mixed into ``MqttPublisher`` (which has ``cfg``, ``lock``, ``waiting``, ``in_paho``, ``connected``,
    ``visitors``, ``owned`` and the methods used here)."""

    def visitor(self, jpeg: bytes, info: dict[str, Any] | None) -> None:
        """The visitor shown on the dashboard ("Last unknown visitor") and which one it is, both
        retained; ``b""`` and None clear both from the broker (empty retained messages)."""
        text = json.dumps(info) if info else ""
        self.owned = {"visitor": jpeg, "visitor_info": text.encode()}
        self._state("visitor", jpeg, 1)
        self._state("visitor_info", text, 1)

    def restore(self, leaf: str, payload: bytes) -> None:
        """Someone wrote one of the daemon's own retained topics: what the daemon wrote goes back at once."""
        ours = self.owned.get(leaf)
        if ours is None or payload == ours or leaf in self.waiting:
            return
        log.warning("%s was written by someone else: restored", self.topic(leaf))
        self._state(leaf, ours, 1)

    def set_visitors(self, ids: list[str]) -> None:
        """The stored visitors (the dashboard's visitor select lists them); discovery again if they changed."""
        if ids != self.visitors:
            self.visitors = list(ids)
            if self.cfg.mqtt.discovery and self.connected:
                self._publish_discovery()
                self.flush()

    def snapshot(self, jpeg: bytes) -> None:
        """Retained (the dashboard's image), at the event's QoS, before the event published next."""
        info = self._publish(self.topic("snapshot"), jpeg, self.cfg.mqtt.qos, True)
        with self.lock:
            self.waiting.pop("snapshot", None)
            self.in_paho["snapshot"] = info
