"""The household gallery over the household's MQTT broker: ``identity.sync`` run by a paho client.

``MqttHouseholdSync`` is the engine over its own client; ``DoorHousehold`` is the daemon's share of it
(started and stopped with ``facepi run``, a summary for its ``status``), and ``blank_if_missing`` the empty
gallery a newly installed facepi recognises with (everyone is unknown) until the records fill it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from facepi.config import ConfigError
from facepi.door.broker import connect, make_client
from facepi.identity import store as store_mod
from facepi.identity.gallery import Gallery
from facepi.identity.records import MAX_PAYLOAD, gallery_digest
from facepi.identity.sync import HouseholdSync

SETTLE = 2.0  # seconds after the subscription is acknowledged before local changes are sent
INBOX = 1000  # messages waiting for the engine; a flood beyond is dropped and counted
log = logging.getLogger(__name__)


class MqttHouseholdSync:
    """Runs a HouseholdSync with its own paho-mqtt 2.x client.

    Messages are queued by paho's thread and handled in ``poll()`` (called by ``start()``'s thread, or by the
    caller): incoming records first, then, once the subscription has settled, local changes (the gallery's
    stamp changed, or a new connection) and the winners the broker did not hand back."""

    def __init__(self, sync: HouseholdSync, host: str, port: int = 1883, *, username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None, client_id: str | None = None,
                 keepalive: int = 30, settle: float = SETTLE, interval: float = 1.0,
                 reconnect_max: float = 30.0, resync_every: float = 60.0) -> None:
        self.sync = sync
        self.host, self.port, self.keepalive = host, port, keepalive
        self.settle, self.interval, self.resync_every = settle, interval, resync_every
        self.client = make_client(client_id or f"facepi-household-{sync.host}", username=username,
                                  password=password, tls=tls, ca_file=ca_file, cert_file=cert_file,
                                  key_file=key_file, reconnect_max=reconnect_max)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=INBOX)
        self.dropped = 0  # messages beyond INBOX (a flood): the retained ones come again at the next connect
        self.connected = False
        self.settle_at: float | None = None  # when the retained records will have arrived
        self.synced = False  # this connection's first outgoing() done
        self.last_stamp: Any = None
        self.last_sync = 0.0
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.summary: dict[str, Any] = {"id": sync.household, "digest": None, "people": None, "sent": 0,
                                        "applied": 0, "refused": {}}
        self._summarised: Any = ()

    @classmethod
    def from_config(cls, cfg: Any, blank: Gallery | None = None, host: str | None = None,
                    **kw: Any) -> MqttHouseholdSync:
        """The adapter for a loaded facepi.config.Config with ``[household] id`` set."""
        if not cfg.household.id or not cfg.household_key:
            raise ValueError("[household] id and its key are not set")
        sync = HouseholdSync(cfg.recognition.gallery, cfg.household.id, cfg.household_key, host or cfg.camera_id,
                             cfg.household.topic, blank, cfg.models.dir or None)
        m = cfg.mqtt
        return cls(sync, m.host, m.port, username=m.username or None, password=cfg.mqtt_password, tls=m.tls,
                   ca_file=m.ca_file, cert_file=m.cert_file, key_file=m.key_file,
                   client_id=f"{m.client_id or 'facepi-' + cfg.camera_id}-household", keepalive=m.keepalive,
                   reconnect_max=m.reconnect_max_seconds, **kw)

    # -- paho's thread
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("household: the broker refused the connection: %s", reason_code)
            return
        self.connected = True
        self.settle_at, self.synced = None, False
        self.sync.begin_session()
        client.subscribe(self.sync.subscription, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.settle_at = time.monotonic() + self.settle

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected, self.settle_at, self.synced = False, None, False

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.inbox.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.dropped += 1

    # -- the caller's thread
    def start(self, thread: bool = True) -> None:
        connect(self.client, self.host, self.port, self.keepalive, MAX_PAYLOAD + 64 * 1024)  # a record, topic, header
        self.client.loop_start()
        if thread:
            self.thread = threading.Thread(target=self._run, name="facepi-household", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll(wait=self.interval)
                self.summarise()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad pass (a locked gallery, ...)
                log.exception("household: sync pass failed; retrying")
                self.stopping.wait(self.interval)

    @property
    def settled(self) -> bool:
        return self.connected and self.settle_at is not None and time.monotonic() >= self.settle_at

    def poll(self, wait: float = 0.0) -> int:
        """Handle what arrived, then send local changes once settled; returns the messages published."""
        out: list[tuple[str, bytes]] = []
        try:
            item: tuple[str, bytes] | None = self.inbox.get(timeout=wait) if wait > 0 else self.inbox.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            try:
                out += self.sync.incoming(*item)
            except Exception:  # one message must never stop the others (nor a forget behind it)
                log.exception("household: a message on %s could not be handled", item[0][:200])
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                item = None
        if self.settled:
            stamp = store_mod.stamp(self.sync.path)
            now = time.monotonic()
            if not self.synced:
                self.synced = True
                out += self.sync.outgoing() + self.sync.missing()
                self.last_stamp, self.last_sync = stamp, now
            elif stamp != self.last_stamp or now - self.last_sync > self.resync_every:
                self.last_stamp, self.last_sync = stamp, now
                out += self.sync.outgoing()
        if self.connected:
            out += self.sync.due_repairs()  # a record cleared again within the backoff: restored now
        for topic, payload in out:
            self.client.publish(topic, payload, qos=1, retain=True)
        return len(out)

    def summarise(self) -> dict[str, Any]:
        """``summary`` (for a status): read again only when the gallery's files or the counters moved, on this
        thread (a caller's loop only reads the attribute; the key never shows)."""
        s = self.sync
        key = (store_mod.stamp(s.path), s.sent, s.applied, sum(s.refused.values()), self.connected)
        if key != self._summarised:
            people = s.people()
            now = {"id": s.household, "digest": gallery_digest(people), "people": len(people), "sent": s.sent,
                   "applied": s.applied, "refused": dict(s.refused), "connected": self.connected}
            if now != self.summary:  # a new object only for news (the daemon publishes its status on it)
                self.summary = now
            self._summarised = key
        return self.summary

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


def missing(path: str) -> bool:
    """No gallery at ``path`` yet (neither its database nor an .npz file to import)."""
    db = store_mod.Store(path)
    return not db.has_gallery() if db.path.exists() else not Path(path).is_file()


def blank_for(cfg: Any, embedder: str | None = None) -> Gallery:
    """An empty gallery of ``embedder`` (else the configured one, else the manifest's default), calibrated:
    everyone is unknown until household records fill it."""
    from facepi.identity.enrol import recalibrate
    from facepi.identity.records import blank_gallery

    g = blank_gallery(embedder or cfg.models.embedder or None, cfg.models.dir or None)
    recalibrate(g, cfg.models.dir or None)
    return g


def blank_if_missing(cfg: Any) -> Gallery | None:
    """For a facepi of a household with no gallery yet (newly installed: it catches up from the retained
    records), the empty gallery to start with; None otherwise (the gallery is read, or its absence is an error)."""
    if cfg.household.id and cfg.mqtt.host and missing(cfg.recognition.gallery):
        log.warning("household %s: no gallery at %s yet; starting with an empty one (everyone is unknown) until "
                    "the household's records arrive", cfg.household.id, cfg.recognition.gallery)
        return blank_for(cfg)
    return None


class DoorHousehold:
    """The daemon's share of the household gallery: the engine's thread, started and stopped with the daemon,
    and ``changed()`` for the loop (a new summary to publish in the status, without waiting for its interval).
    A record applied here changes the gallery's files: the daemon's gallery watch (door/reload) reloads it."""

    def __init__(self, cfg: Any, blank: Gallery) -> None:
        self.engine = MqttHouseholdSync.from_config(cfg, blank=blank, interval=0.5)
        self.published: dict[str, Any] | None = None

    @classmethod
    def for_daemon(cls, cfg: Any, embedder: str | None) -> DoorHousehold | None:
        if not cfg.household.id:
            return None
        if not cfg.household_key:  # outside systemd, with the key expected as the service's credential
            raise ConfigError(f"household.id = {cfg.household.id!r} needs the household key: set household.key_file, "
                              f"or LoadCredential=household_key in the service")
        return cls(cfg, blank_for(cfg, embedder))

    def start(self) -> None:
        self.engine.start()
        log.info("household %s: sharing the gallery on %s as %s", self.engine.sync.household,
                 self.engine.sync.subscription, self.engine.sync.host)

    def stop(self) -> None:
        self.engine.stop()

    def status(self) -> dict[str, Any]:
        self.published = self.engine.summary
        return self.published

    def changed(self) -> bool:
        return self.engine.summary is not self.published
