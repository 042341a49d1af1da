"""The broker connection every facepi client shares (the publisher's, the household's, ``facepi ha forget``'s):
paho-mqtt 2.x over MQTT 5, the login, TLS, reconnect backoff, the largest message taken, and a failed
connection's cause in words."""

from __future__ import annotations

import logging
import socket
from typing import Any

from facepi.config import Config

MAX_PACKET = 256 * 1024  # bytes: the largest message the broker may send the publisher (MQTT 5 Maximum Packet Size)
RECEIVE_MAXIMUM = 32  # QoS 1/2 messages the broker may have unacknowledged with this client
AUTH_FAILURES = ("Bad user name or password", "Not authorized")


def why_unreachable(host: str, port: int, timeout: float = 3.0) -> str:
    """The cause of a failed connection in words (paho only says "not connected")."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve the broker host {host!r} ({e.strerror}): check mqtt.host and DNS"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection: is the broker running, on this port?"
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout:g} s: wrong host, or a firewall?"
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"
    return (f"{host}:{port} accepts TCP but the MQTT handshake failed: a TLS port without mqtt.tls, "
            "or not an MQTT port?")


def make_client(client_id: str, *, username: str | None = None, password: str | None = None, tls: bool = False,
                ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                reconnect_max: float = 30.0) -> Any:
    """A paho-mqtt 2.x client with the login, TLS and reconnect backoff every facepi client uses (the
    publisher's, the household's); callbacks and the will are the caller's. MQTT 5, so that ``connect``
    can tell the broker the largest message this client takes."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_file or None, certfile=cert_file or None, keyfile=key_file or None)
    client.reconnect_delay_set(1, int(max(1, reconnect_max)))
    # a callback that raises (on a message any client may send) is logged by paho, never the end of its network
    # thread: a dead thread would leave the link "connected" and deaf for good
    client.suppress_exceptions = True
    return client


def connect(client: Any, host: str, port: int, keepalive: int, max_packet: int = MAX_PACKET) -> None:
    """``connect_async`` with two MQTT 5 limits on what the broker sends this client. Maximum Packet Size:
    never a larger message (the broker drops it for this client: MQTT 5, 3.1.2.11.4), so one huge message
    from any broker client costs the Pi nothing (paho itself reads whatever arrives into memory, however
    large). Receive Maximum: at most RECEIVE_MAXIMUM QoS 1/2 messages unacknowledged (3.1.2.11.3), so a flood
    waits at the broker (whose queue is bounded: Mosquitto's max_queued_messages, 1000 by default) rather
    than in this client's socket, ahead of the acknowledgements of its own events."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = max_packet
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    client.connect_async(host, port, keepalive, properties=props)


class _QuietPaho(logging.Filter):
    """paho logs "Client is not connected" at ERROR on every pass while the broker is away and on
    every clean exit; the publisher names the actual cause once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


def mqtt_client(cfg: Config, client_id: str | None = None) -> Any:
    """``make_client`` for ``cfg``'s broker: its login (the password from wherever ``cfg`` found it), TLS
    and backoff, facepi's quiet logger. ``client_id``: default ``mqtt.client_id``, else ``facepi-<camera_id>``."""
    m = cfg.mqtt
    client = make_client(client_id or m.client_id or f"facepi-{cfg.camera_id}", username=m.username or None,
                         password=cfg.mqtt_password, tls=m.tls, ca_file=m.ca_file, cert_file=m.cert_file,
                         key_file=m.key_file, reconnect_max=m.reconnect_max_seconds)
    paho_log = logging.getLogger("facepi.paho")  # paho's own messages, filtered
    if not any(isinstance(f, _QuietPaho) for f in paho_log.filters):
        paho_log.addFilter(_QuietPaho())
    client.enable_logger(paho_log)
    return client


