"""MQTT through paho-mqtt 2.x: events queued by paho through an outage, retained state topics that
coalesce, Home Assistant discovery, and commands (parsed by ``facepi.door.commands``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from paho.mqtt.client import MQTTErrorCode, MQTTMessageInfo

from facepi.config import Config
from facepi.door import homeassistant
from facepi.door.broker import AUTH_FAILURES, mqtt_client, why_unreachable
from facepi.door.broker import connect as connect_broker
from facepi.door.commands import COMMANDS, REDISCOVER_SECONDS, CommandGate, Throttle
from facepi.door.doors import Doors, door_payload, seen_payload
from facepi.door.visitor_topics import OWNED, VisitorTopics

log = logging.getLogger(__name__)
STATE_SLACK = 256  # state messages (state topics, discovery configs, clears) in paho at once; the rest wait
ANSWERS = 16  # command answers waiting to be sent: a flood of refusals keeps only the newest
ANSWERS_IN_PAHO = 4  # command answers in paho at once
MANIFEST_WAIT = 2.0  # seconds after the listener connects: an earlier run's manifest would have arrived by then


def _done(info: MQTTMessageInfo) -> bool:
    """Acknowledged (QoS 1/2) or written (QoS 0), or failed for good: paho's own bookkeeping."""
    if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
        return True
    return info.is_published()


class MqttPublisher(VisitorTopics):
    """MQTT through paho, which does the queueing and the counting.

    Events (QoS ``mqtt.qos``) are handed to paho at once, connected or not: paho
    keeps QoS 1/2 messages, in order, through an outage. At most ``queue_size``
    are unacknowledged (``MQTTMessageInfo.is_published``); beyond that new events
    are dropped and counted. State topics (``person``, ``status``, availability,
    discovery) are retained: only the newest matters, so each has at most one
    message in paho at a time and a newer one waits in a slot (replacing any older
    waiting one) until the previous is acknowledged and the broker is connected;
    at most ``STATE_SLACK`` of them are in paho at once. Command answers (``learning``)
    are each sent, in order, at most ``ANSWERS_IN_PAHO`` in paho and ``ANSWERS`` waiting
    (a flood of refusals keeps the newest). So paho holds at most ``queue_size`` events
    + ``STATE_SLACK`` + ``ANSWERS_IN_PAHO`` messages, its own bound
    (``max_queued_messages_set``) is that sum, and nothing a broker client sends can
    take an event's place: commands never cost an event.

    Two connections: ``client`` publishes and subscribes to nothing; ``listener``
    (client id ``<id>-in``) takes every message facepi reads (commands, Home
    Assistant's status, the door's manifest, the household's doors). A flood on a
    command topic fills the listener's socket, never the one whose acknowledgements
    the events, state topics and answers wait for.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.base = cfg.topic_base
        m = cfg.mqtt
        self.client = mqtt_client(cfg)
        self.client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        self.client.max_queued_messages_set(m.queue_size + STATE_SLACK + ANSWERS_IN_PAHO)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.listener = mqtt_client(cfg, f"{m.client_id or 'facepi-' + cfg.camera_id}-in")
        self.listener.on_connect = self._on_listen
        self.listener.on_message = self._on_message
        self.lock = threading.Lock()
        self.events: deque[MQTTMessageInfo] = deque()  # events in paho, not yet acknowledged
        self.waiting: dict[str, tuple[str | bytes, int]] = {}  # state topic -> newest payload, qos
        self.in_paho: dict[str, MQTTMessageInfo] = {}  # state topic -> the message paho has (until done)
        self.answers: deque[tuple[str, str]] = deque(maxlen=ANSWERS)  # command answers waiting, oldest first
        self.answers_out: list[MQTTMessageInfo] = []  # command answers in paho
        self.answer_lock = threading.Lock()  # keeps the answers in order (from paho's thread and the daemon's)
        self.dropped = 0
        self.connected = False
        self.problem: str | None = None  # why the broker is not connected, said once per change
        self.fatal: str | None = None
        self.closing = False
        self.discovery_topic = f"{m.discovery_prefix}/status"
        self.people: list[str] = []
        self.keys: dict[str, str] = {}  # name -> person key (the gallery's, facepi.identity.names)
        self.visitors, self.owned = [], {}  # stored visitors' ids (the visitor select); owned topics (restored)
        self.discovered: set[str] = set()  # this door's discovery configs (and household topics) now
        self.entities_topic = self.topic("entities")  # retained: what this door published (homeassistant.manifest)
        self.manifest_due: float | None = None  # the new manifest waits until the earlier one was read (or then)
        self.on_command: Callable[[str], None] = lambda text: None
        self.on_name: Callable[[str, str], None] = lambda vid, name: None  # (visitor id, name)
        self.on_wrong: Callable[[str, int, str], None] = lambda name, seq, run: None  # "that wasn't X"
        self.on_show: Callable[[str], None] = lambda vid: None  # the dashboard chose a stored visitor
        self.gate, self.rediscover = CommandGate(cfg.learning.enabled, self.answer), Throttle(REDISCOVER_SECONDS)
        # the household on the dashboard ([household] id with discovery on): door.doors, homeassistant.household_*
        self.house = cfg.household_topic if cfg.household.id and m.discovery else ""
        self.doors = Doors(self.house)  # this daemon's view of the household's doors (under self.lock)

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    # -- paho callbacks (explicit, as in paho's examples)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        m = self.cfg.mqtt
        if reason_code.is_failure:
            text = str(reason_code)
            self._say(f"MQTT broker {m.host}:{m.port} refused the connection: {text}"
                      f"{' (check mqtt.username and the password)' if text in AUTH_FAILURES else ''}", logging.ERROR)
            if text in AUTH_FAILURES:
                self.fatal = f"MQTT broker refused the credentials: {text}"
            return
        self.connected = True
        self.problem = None
        log.info("connected to MQTT broker %s:%d", m.host, m.port)
        self._state("availability", "online", 1)
        if m.discovery:
            self._publish_discovery()
            if self.house:
                self._door()
        self.flush()

    def _on_listen(self, client, userdata, flags, reason_code, properties) -> None:
        """The listener's (re)connection: every subscription, exact topics only (no wildcard under the
        discovery prefix: junk configs there never reach this daemon). What an earlier run published (a person
        forgotten while it was away) is in its retained manifest, read before this run's replaces it."""
        m = self.cfg.mqtt
        if reason_code.is_failure:  # said by the publisher, which connects with the same login
            if str(reason_code) in AUTH_FAILURES:
                self.fatal = f"MQTT broker refused the credentials: {reason_code}"
            return
        client.subscribe([(self.topic(leaf), 1) for leaf in COMMANDS + (OWNED if self.cfg.learning.enabled else ())])
        if m.discovery:
            with self.lock:
                if self.manifest_due is None:
                    self.manifest_due = time.monotonic() + MANIFEST_WAIT
            client.subscribe([(self.discovery_topic, 1), (self.entities_topic, 1)])
            if self.house:
                self._house_connected(client)

    def _on_connect_fail(self, client, userdata) -> None:
        m = self.cfg.mqtt
        self._say(f"cannot reach the MQTT broker: {why_unreachable(m.host, m.port)}; retrying with backoff "
                  f"(events are kept, up to mqtt.queue_size = {m.queue_size})", logging.WARNING)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if was and not self.closing:
            self._say(f"lost the MQTT broker ({reason_code}); reconnecting with backoff", logging.WARNING)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.discovery_topic and msg.payload == b"online":
            self.rediscover.ask()  # done by flush, at most once per REDISCOVER_SECONDS however often it is said
            self.flush()
        elif self.house and self._house_message(msg):
            pass
        elif msg.topic == self.entities_topic:
            if msg.retain and msg.payload:  # the manifest an earlier run left (this run's own comes back live)
                self._clear_stale(bytes(msg.payload))
            with self.lock:
                self.manifest_due = 0.0  # read: this run's may replace it now
        elif msg.topic in [self.topic(kind) for kind in COMMANDS]:
            self._command(msg.topic.rsplit("/", 1)[1], msg.payload, bool(msg.retain))
        elif msg.topic in [self.topic(leaf) for leaf in OWNED]:
            self.restore(msg.topic.rsplit("/", 1)[1], bytes(msg.payload))

    def _command(self, kind: str, payload: bytes, retained: bool) -> None:
        """A command on the camera's own command topics (broker ACLs decide who may send them), once it has
        passed every check (``commands.CommandGate``); done and answered by the daemon."""
        passed = self.gate.check(kind, self.topic(kind), payload, retained)
        if passed is None:
            return
        text, request = passed
        if kind == "command":
            log.info("command: reload the gallery")
            self.on_command(text)  # answered by the daemon once it has reloaded
        elif kind == "wrong_name":
            self.on_wrong(*request)
        elif kind == "show_visitor":
            self.on_show(request)
        else:
            self.on_name(*request)  # (name checks as enroll's)

    def answer(self, command: str, ok: bool, message: str, visitor: str | None = None) -> None:
        """A command's answer on ``answer`` (its own topic: a visit's notice never overwrites it)."""
        self.learning({"ok": ok, "command": command, "message": message} | ({"visitor": visitor} if visitor else {}),
                      "answer")

    def _clear_stale(self, payload: bytes) -> None:
        """Clear what an earlier run published and this one does not (a person forgotten meanwhile, the
        snapshot switched off): only topics of this door's own namespace, a bounded number."""
        m = self.cfg.mqtt
        listed = homeassistant.manifest_topics(payload, lambda t: homeassistant.is_ours(
            t, m.discovery_prefix, self.cfg.camera_id) or bool(self.house) and (homeassistant.is_household(
                t, m.discovery_prefix, self.cfg.household.id) or t.startswith(f"{self.house}/seen/")))
        with self.lock:
            stale = sorted(set(listed) - self._expected())
            for topic in stale:
                self.waiting[topic] = ("", 1)
        for topic in stale:
            log.info("removing the Home Assistant entity %s (published by an earlier run)", topic)
        self.flush()

    def _expected(self) -> set[str]:
        """Every retained topic of this door's entities now (its manifest; under self.lock)."""
        return self.discovered | ({f"{self.house}/seen/{homeassistant.person_key(n, self.keys)}" for n in self.people}
                                  if self.house else set())

    def _say(self, text: str, level: int) -> None:
        """Log a connection problem once per change, not on every retry."""
        if text != self.problem:
            self.problem = text
            log.log(level, "%s", text)

    # -- publishing
    def start(self) -> None:
        m = self.cfg.mqtt
        connect_broker(self.client, m.host, m.port, m.keepalive, 64 * 1024)  # it reads acknowledgements only
        self.client.loop_start()
        connect_broker(self.listener, m.host, m.port, m.keepalive)
        self.listener.loop_start()

    def _publish(self, topic: str, payload: str | bytes, qos: int, retain: bool) -> MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # paho keeps a QoS 1/2 message published while disconnected and sends it after
            # reconnecting, but marks it NO_CONN, which makes is_published() raise for good.
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        return info

    def event(self, payload: dict[str, Any]) -> None:
        qos = self.cfg.mqtt.qos
        if self.queue_depth >= self.cfg.mqtt.queue_size:
            self.dropped += 1
            return
        info = self._publish(self.topic("event"), json.dumps(payload), qos, False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # queue full, or QoS 0 while disconnected
            self.dropped += 1
            return
        with self.lock:
            self.events.append(info)
        self._state("last", json.dumps(payload), 1)  # retained: the dashboard's "Last person" after a restart
        if self.house and payload["name"] != "unknown":  # the household's "<Name> last seen"
            name, cfg = payload["name"], self.cfg
            self._state(f"{self.house}/seen/{homeassistant.person_key(name, self.keys)}",
                        seen_payload(name, cfg.camera_id, cfg.device_name, payload["timestamp"]), 1)

    def _state(self, leaf: str, payload: str | bytes, qos: int) -> None:
        with self.lock:
            self.waiting[leaf] = (payload, qos)
        self.flush()

    def flush(self) -> None:
        """Hand waiting state messages to paho where the previous one is done, at most STATE_SLACK in paho
        at once (never under our lock: paho calls back holding its own); then the waiting answers."""
        self.gate.said.tick()
        if not self.connected:
            return
        if self.rediscover.due():
            log.info("Home Assistant is online: re-publishing discovery")
            self._publish_discovery()
        if self.house:
            self._anyone()
        with self.lock:
            if "entities" in self.waiting and (self.manifest_due is None or time.monotonic() < self.manifest_due):
                manifest = self.waiting.pop("entities")  # not before the earlier run's was read
            else:
                manifest = None
            self.in_paho = {leaf: info for leaf, info in self.in_paho.items() if not _done(info)}
            room = max(0, STATE_SLACK - len(self.in_paho))
            free = [leaf for leaf in self.waiting if leaf not in self.in_paho][:room]
            ready = [(leaf, self.waiting.pop(leaf)) for leaf in free]
            if manifest is not None:
                self.waiting["entities"] = manifest
        for leaf, (payload, qos) in ready:
            topic = leaf if "/" in leaf else self.topic(leaf)
            info = self._publish(topic, payload, qos, True)
            with self.lock:
                self.in_paho[leaf] = info
        self._send_answers()

    def person(self, names: list[str]) -> None:
        self._state("person", json.dumps(names), 1)
        self.doors.mine = bool(names)
        if self.house:
            self._door()

    def status(self, payload: dict[str, Any]) -> None:
        self._state("status", json.dumps(payload), 0)

    def spoof(self, payload: dict[str, Any], jpeg: bytes | None) -> None:
        """A visit judged not live: Home Assistant's per-camera Spoof event, and its picture where snapshots may.
        Counted with the events (paho's bound is theirs); beyond it, skipped: the event topic carries it too."""
        if self.queue_depth < self.cfg.mqtt.queue_size:
            info = self._publish(self.topic("spoof"), json.dumps(payload), self.cfg.mqtt.qos, False)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with self.lock:
                    self.events.append(info)
        if jpeg:
            self._state("spoof_snapshot", jpeg, 0)

    def learning(self, payload: dict[str, Any], leaf: str = "learning") -> None:
        """Retained, and every one sent in order (not coalesced like the state topics: each command's answer
        counts), but bounded apart from the events: a flood of junk commands keeps the newest ANSWERS."""
        with self.answer_lock:
            self.answers.append((leaf, json.dumps(payload)))
        self._send_answers()

    def _send_answers(self) -> None:
        if not self.connected:
            return
        with self.answer_lock:  # the order kept; paho's lock never waits on this one
            self.answers_out = [i for i in self.answers_out if not _done(i)]
            while self.answers and len(self.answers_out) < ANSWERS_IN_PAHO:
                leaf, text = self.answers.popleft()
                self.answers_out.append(self._publish(self.topic(leaf), text, 1, True))

    @property
    def queue_depth(self) -> int:
        """Events not yet acknowledged by the broker."""
        with self.lock:
            while self.events and _done(self.events[0]):
                self.events.popleft()
            if any(_done(i) for i in self.events):  # acknowledged out of order (QoS 2, resends)
                self.events = deque(i for i in self.events if not _done(i))
            return len(self.events)

    @property
    def pending_states(self) -> int:
        with self.lock:
            states = len(self.waiting) + sum(not _done(i) for i in self.in_paho.values())
        with self.answer_lock:
            return states + len(self.answers) + sum(not _done(i) for i in self.answers_out)

    def discovery_messages(self) -> dict[str, dict[str, Any]]:
        cfg = self.cfg
        configs = homeassistant.discovery(cfg.camera_id, cfg.device_name, self.base, cfg.mqtt.discovery_prefix,
                                          self.people, cfg.mqtt.snapshot, cfg.learning.enabled,
                                          cfg.liveness.enabled, self.keys, self.visitors)
        if self.house:
            configs |= homeassistant.household_discovery(cfg.household.id, self.house, cfg.mqtt.discovery_prefix,
                                                         self.people, self.keys)
        return configs

    def set_people(self, people: list[str], keys: dict[str, str] | None = None) -> None:
        """The gallery's people (at start and after a reload): presence entities follow them; the household's
        last-seen topic of a person forgotten is cleared with the entities."""
        if self.house:
            with self.lock:
                for name in set(self.people) - set(people):
                    self.waiting[f"{self.house}/seen/{homeassistant.person_key(name, self.keys)}"] = ("", 1)
        self.people = sorted(people)
        self.keys = {**self.keys, **(keys or {})}  # a forgotten person's key stays known: their topics are cleared
        if self.cfg.mqtt.discovery and self.connected:
            self._publish_discovery()
            self.flush()

    def _publish_discovery(self) -> None:
        """Every config, an empty retained one for each that is gone (a person forgotten since), and the
        manifest of what this door publishes (for the next run to clear what is gone by then)."""
        configs = self.discovery_messages()
        with self.lock:
            for topic in self.discovered - set(configs):
                self.waiting[topic] = ("", 1)
            self.discovered = set(configs)
            for topic, payload in configs.items():
                self.waiting[topic] = (json.dumps(payload), 1)
            self.waiting["entities"] = (homeassistant.manifest(self._expected()), 1)

    # -- the household's doors (door.doors): this door published, every door watched, `anyone` kept
    def _house_connected(self, client) -> None:  # noqa: ANN001 - paho's Client (the listener)
        """Watch the household's doors (and the availability of each door known, again); publish this door.
        (The household device's configs of a person forgotten while this daemon was away: its manifest.)"""
        with self.lock:
            watched = self.doors.connected(time.monotonic())
        client.subscribe([(self.doors.subscription, 1), *((t, 1) for t in watched)])
        self._door()

    def _door(self) -> None:
        self._state(f"{self.house}/doors/{self.cfg.camera_id}",
                    door_payload(self.cfg.camera_id, self.doors.mine, self.topic("availability")), 1)

    def _house_message(self, msg) -> bool:  # noqa: ANN001 - paho's MQTTMessage
        """A door of the household or the availability of one: the view updated, `anyone` republished if it
        changed. False: not one of those topics."""
        with self.lock:
            if not (msg.topic.startswith(f"{self.house}/doors/") or msg.topic in self.doors.online):
                return False
            new = self.doors.message(msg.topic, bytes(msg.payload))
            ours = door_payload(self.cfg.camera_id, self.doors.mine, self.topic("availability")).encode()
        if new:
            self.listener.subscribe([(t, 1) for t in new])
        if msg.topic == f"{self.house}/doors/{self.cfg.camera_id}" and bytes(msg.payload) != ours:
            self._door()  # somebody else wrote (or cleared) this door: its own state again
        self.flush()  # `anyone`, if this view changed
        return True

    def _anyone(self) -> None:
        """``<house>/anyone`` when this daemon's view changed (once settled after connecting)."""
        with self.lock:
            if (anyone := self.doors.changed(time.monotonic())) is not None:
                self.waiting[f"{self.house}/anyone"] = ("ON" if anyone else "OFF", 1)

    def stop(self, timeout: float = 5.0) -> int:
        """Deliver what is queued (bounded wait), publish offline, disconnect cleanly.
        Returns the number of events that were not delivered."""
        deadline = time.monotonic() + timeout
        self.listener.disconnect()  # no more commands
        self.listener.loop_stop()
        self.gate.said.tick(final=True)  # the refusals not said yet, counted
        self._state("availability", "offline", 1)
        while time.monotonic() < deadline and not self.fatal:  # a broker away may come back for the events
            self.flush()
            if not self.queue_depth and not (self.connected and self.pending_states):
                break
            time.sleep(0.05)
        undelivered = self.queue_depth
        if undelivered:
            log.warning("%d event(s) not delivered before shutdown%s", undelivered,
                        f" ({self.problem})" if self.problem else "")
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()
        return undelivered
