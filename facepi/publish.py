"""Publishing: MQTT (paho-mqtt 2.x) for real, or JSON lines on stdout when no broker is set.

Topics under ``<base>`` (default ``facepi/<camera_id>``): ``availability``
(``online`` retained after connecting; ``offline`` as Last Will and on clean
shutdown), ``event`` (one JSON message per recognition), ``person`` (retained:
names in view), ``status`` (retained health), optional ``snapshot`` (JPEG).
Events published while the broker is away stay queued in paho in order and are
sent after it reconnects; at most ``queue_size`` are kept, and the ``status``
topic counts the ones dropped beyond that. Home Assistant discovery configs are
published on connect and whenever Home Assistant announces itself online.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from facepi import __version__
from facepi.config import Config

log = logging.getLogger("facepi.publish")


class StdoutPublisher:
    """The embedded default: the same event JSON, one line each, on stdout."""

    def __init__(self) -> None:
        self.dropped = 0
        self.connected = True
        self.fatal: str | None = None

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

    @property
    def queue_depth(self) -> int:
        return 0

    def stop(self, timeout: float = 5.0) -> None:
        pass


AUTH_FAILURES = ("Bad user name or password", "Not authorized")


class MqttPublisher:
    def __init__(self, cfg: Config) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.base = cfg.topic_base
        m = cfg.mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=m.client_id or f"facepi-{cfg.camera_id}")
        self.client.enable_logger(logging.getLogger("facepi.paho"))
        if m.username:
            self.client.username_pw_set(m.username, cfg.mqtt_password)
        if m.tls:
            self.client.tls_set(ca_certs=m.ca_file or None, certfile=m.cert_file or None, keyfile=m.key_file or None)
        self.client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, int(max(1, m.reconnect_max_seconds)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.lock = threading.Lock()
        self.unacked: set[int] = set()
        self.early_acks: set[int] = set()
        self.dropped = 0
        self.connected = False
        self.fatal: str | None = None
        self.closing = False
        self.discovery_topic = f"{m.discovery_prefix}/status"

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    # -- paho callbacks (explicit, as in paho's examples)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            text = str(reason_code)
            log.error("MQTT broker %s:%d refused the connection: %s%s", self.cfg.mqtt.host, self.cfg.mqtt.port,
                      text, " (check mqtt.username and the password)" if text in AUTH_FAILURES else "")
            if text in AUTH_FAILURES:
                self.fatal = f"MQTT broker refused the credentials: {text}"
            return
        self.connected = True
        log.info("connected to MQTT broker %s:%d", self.cfg.mqtt.host, self.cfg.mqtt.port)
        client.publish(self.topic("availability"), "online", qos=1, retain=True)
        if self.cfg.mqtt.discovery:
            client.subscribe(self.discovery_topic, qos=1)
            self._publish_discovery()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self.closing:
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason_code)
        self.connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid in self.unacked:
                self.unacked.discard(mid)
            else:
                self.early_acks.add(mid)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.discovery_topic and msg.payload == b"online":
            log.info("Home Assistant is online: re-publishing discovery")
            self._publish_discovery()

    # -- publishing
    def start(self) -> None:
        m = self.cfg.mqtt
        self.client.connect_async(m.host, m.port, m.keepalive)
        self.client.loop_start()

    def _send(self, leaf: str, payload: str | bytes, qos: int, retain: bool = False, counted: bool = False) -> None:
        if counted:
            with self.lock:
                if len(self.unacked) >= self.cfg.mqtt.queue_size:
                    self.dropped += 1
                    return
        # While the broker is away paho keeps QoS>0 messages queued, in order, and sends
        # them after reconnecting (publish returns "not connected" but the message stays).
        info = self.client.publish(self.topic(leaf), payload, qos=qos, retain=retain)
        if counted and qos > 0:
            with self.lock:
                if info.mid in self.early_acks:  # acknowledged before we got here
                    self.early_acks.discard(info.mid)
                else:
                    self.unacked.add(info.mid)

    def event(self, payload: dict[str, Any]) -> None:
        self._send("event", json.dumps(payload), self.cfg.mqtt.qos, counted=True)

    def person(self, names: list[str]) -> None:
        self._send("person", json.dumps(names), 1, retain=True)

    def status(self, payload: dict[str, Any]) -> None:
        self._send("status", json.dumps(payload), 0, retain=True)

    def snapshot(self, jpeg: bytes) -> None:
        self._send("snapshot", jpeg, 0)

    @property
    def queue_depth(self) -> int:
        with self.lock:
            return len(self.unacked)

    def discovery_messages(self) -> dict[str, dict[str, Any]]:
        cfg = self.cfg
        uid = f"facepi_{cfg.camera_id}"
        device = {"identifiers": [uid], "name": cfg.camera_name, "manufacturer": "facepi",
                  "model": "facepi door camera", "sw_version": __version__}
        avail = {"availability_topic": self.topic("availability"), "payload_available": "online",
                 "payload_not_available": "offline"}
        prefix = cfg.mqtt.discovery_prefix
        return {
            f"{prefix}/sensor/{uid}/last_person/config": {
                "name": "Last person", "unique_id": f"{uid}_last_person", "object_id": f"{uid}_last_person",
                "state_topic": self.topic("event"), "value_template": "{{ value_json.name }}",
                "json_attributes_topic": self.topic("event"), "icon": "mdi:account-eye",
                "device": device, **avail},
            f"{prefix}/event/{uid}/recognition/config": {
                "name": "Recognition", "unique_id": f"{uid}_recognition", "object_id": f"{uid}_recognition",
                "state_topic": self.topic("event"), "event_types": ["recognized", "unknown"],
                "value_template": ('{ "event_type": "{{ "unknown" if value_json.name == "unknown" '
                                   'else "recognized" }}", "name": "{{ value_json.name }}", '
                                   '"score": {{ value_json.score }} }'),
                "device": device, **avail},
        }

    def _publish_discovery(self) -> None:
        for topic, payload in self.discovery_messages().items():
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded wait), publish offline, disconnect cleanly."""
        deadline = time.monotonic() + timeout
        while self.queue_depth and time.monotonic() < deadline and not self.fatal:
            time.sleep(0.05)
        if self.queue_depth:
            log.warning("%d event(s) not delivered before shutdown", self.queue_depth)
        if self.connected:
            info = self.client.publish(self.topic("availability"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()


def make_publisher(cfg: Config) -> StdoutPublisher | MqttPublisher:
    return MqttPublisher(cfg) if cfg.mqtt.host else StdoutPublisher()
