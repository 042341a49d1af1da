"""Commands from the broker are untrusted input: parsed here, strictly, before anything acts on them.

Each names what it means by id (a visitor id, an event's run and seq), never "the last
one", which changes while someone types; anything else is refused with what was expected.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from facepi.identity.gallery import shown

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 1024  # a naming or a correction is a few dozen bytes; nothing larger is parsed or echoed
COMMANDS = ("command", "name_visitor", "wrong_name", "show_visitor")  # the topics facepi takes commands on
COMMAND_INTERVAL = 5.0  # seconds: at most one command of each kind from MQTT this often
LOG_INTERVAL = 30.0  # seconds: at most one log line per kind of refusal this often, the rest counted
REDISCOVER_SECONDS = 10.0  # Home Assistant's "online": discovery re-published at most this often (the last one kept)
NAMING_FORMAT = '{"visitor": "V7", "name": "alice"}'
REFUSED = {"wrong_name": "not corrected", "name_visitor": "not named", "show_visitor": "not shown"}


def naming_request(text: str) -> tuple[str, str]:
    """The visitor id and the name of a ``name_visitor`` message; ValueError saying what is wrong.

    The id is required: "the last visitor" changes while someone types, and a name must land on
    the visitor the person was looking at."""
    try:
        req = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] from any client
        req = None
    if not isinstance(req, dict):
        raise ValueError(f"a naming must say which visitor it names, as JSON {NAMING_FORMAT}; got {text[:40]!r}")
    vid, name = req.get("visitor"), req.get("name")
    if not isinstance(vid, str) or not vid.strip():
        raise ValueError(f"a naming must say which visitor it names (\"visitor\": \"V7\"); got {str(vid)[:20]!r}: "
                         "no visitor is shown, or the dashboard did not send its id")
    if not re.fullmatch(r"V[0-9]{1,9}", vid.strip()):
        raise ValueError(f"visitor {shown(vid)}: expected an id such as V7 (facepi visitors lists them)")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"no name given for {vid.strip()} (\"name\": {str(name)[:20]!r})")
    return vid.strip(), name.strip()


def visitor_request(text: str) -> str:
    """The visitor id of a ``show_visitor`` message (the dashboard's visitor select sends the id chosen)."""
    if not re.fullmatch(r"V[0-9]{1,9}", text):
        raise ValueError(f"visitor {shown(text)}: expected an id such as V7 (the dashboard's visitor list)")
    return text


def correction_request(text: str) -> tuple[str, int, str]:
    """(name, event seq, run) of a ``wrong_name`` message; ValueError saying what is wrong.

    The event is required for the same reason a naming needs its visitor: the last person on the
    dashboard changes while someone reaches for the button."""
    try:
        req = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] from any client
        req = None
    if not isinstance(req, dict):
        raise ValueError(f'"wrong name" must say which recognition it means, as JSON {{"name": "alice", "seq": 12, '
                         f'"run": "..."}}; got {text[:40]!r}')
    name, seq, run = req.get("name"), req.get("seq"), req.get("run")
    if not isinstance(name, str) or not name.strip() or not isinstance(seq, int) or not isinstance(run, str):
        raise ValueError(f'"wrong name" needs the recognition\'s "name", "seq" and "run" (the dashboard\'s last '
                         f"person); got name {name!r}, seq {seq!r}, run {run!r}")
    return name.strip(), seq, run


class RateLog:
    """Refusals logged at a bounded rate: the first of a kind at once, then at most one line per ``interval``
    carrying how many more there were (``tick`` says the count left over once a flood stops). A flood of junk
    commands is a few lines, not one per message (journald would rate-limit the real lines away); the keys
    are a fixed set (command kind and reason), so this holds no memory per message or per sender."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self.logger, self.interval = logger, interval
        self.lock = threading.Lock()  # paho's thread refuses, the daemon's ticks
        self.last: dict[str, float] = {}  # key -> when its last line was logged
        self.more: dict[str, tuple[int, str]] = {}  # key -> (refusals not logged since, the newest one's text)

    def warning(self, key: str, text: str) -> None:
        with self.lock:
            self._warning(key, text)

    def _warning(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self.last.get(key, float("-inf")) >= self.interval:
            count, _ = self.more.pop(key, (0, ""))
            self.last[key] = now
            self.logger.warning("%s%s", text, f" (and {count} more like it in the last {self.interval:.0f} s)"
                                if count else "")
        else:
            self.more[key] = (self.more.get(key, (0, ""))[0] + 1, text)

    def tick(self, final: bool = False) -> None:
        """Say the counts whose interval has passed (a flood that stopped is still reported); ``final``: all
        of them (at shutdown)."""
        now = time.monotonic()
        with self.lock:
            for key in [k for k in self.more if final or now - self.last.get(k, float("-inf")) >= self.interval]:
                count, text = self.more.pop(key)
                self.logger.warning("%d more like this in the last %.0f s, the newest: %s", count,
                                    now - self.last.get(key, now), text)
                self.last[key] = now


class Throttle:
    """Something asked for at most once per ``interval`` s: ``ask`` notes the wish, ``due`` says (once) when
    it may be done. A flood of asks is one act per interval, and the last ask is never lost. (Home
    Assistant's ``online`` re-publishes every discovery config: anyone who may write that topic could
    otherwise make the door send ~3 configs per message and log a line each.)"""

    def __init__(self, interval: float) -> None:
        self.interval, self.last, self.wanted = interval, float("-inf"), False
        self.lock = threading.Lock()  # paho's thread asks, the daemon's and paho's flush

    def ask(self) -> None:
        with self.lock:
            self.wanted = True

    def due(self) -> bool:
        with self.lock:
            if not self.wanted or time.monotonic() - self.last < self.interval:
                return False
            self.wanted, self.last = False, time.monotonic()
            return True


class CommandGate:
    """Every check a command passes before anything acts on it, each refusal answered (``answer``).

    A retained command is old: the broker hands it over on every (re)connect, so running it would repeat
    a reload or a naming each time; it is ignored and logged once per topic. Then: not empty, small, known,
    well-formed (parsed before the rate limit: junk never uses up the household's slot), and each kind at
    most once per ``COMMAND_INTERVAL``. Refusals are logged through ``RateLog`` (a flood is a few lines);
    their answers are bounded by the publisher (``MqttPublisher.answer``), apart from the events."""

    def __init__(self, learning: bool, answer: Callable[[str, bool, str], None]) -> None:
        self.learning, self.answer = learning, answer
        self.last: dict[str, float] = {}  # command kind -> when it last ran (its own rate limit)
        self.retained_said: set[str] = set()  # command topics whose retained message was logged
        self.said = RateLog(log)

    def check(self, kind: str, topic: str, payload: bytes, retained: bool) -> tuple[str, Any] | None:
        """(the text, the parsed request) of a command that may run now, else None (refused and said)."""
        if retained:
            if topic not in self.retained_said:
                self.retained_said.add(topic)
                log.warning("ignored a retained message on %s: commands are never retained (clear it with "
                            "mosquitto_pub -r -n -t %s)", topic, topic)
            return None
        if not payload:  # somebody clearing a retained command: nothing to do
            return None
        if len(payload) > MAX_COMMAND_BYTES:
            self.said.warning(f"{kind} size", f"ignored a {len(payload)}-byte message on {topic}: commands are "
                              f"at most {MAX_COMMAND_BYTES} bytes")
            self.answer(kind, False, f"ignored: a {kind} message is at most {MAX_COMMAND_BYTES} bytes")
            return None
        text = payload.decode("utf-8", "replace").strip()
        if kind in ("name_visitor", "show_visitor") and not self.learning:
            self.answer(kind, False, "not done: learning is off ([learning] enabled = false)")
            return None
        if kind == "command" and text != "reload":
            self.said.warning("command unknown", f"ignored command {text[:40]!r} on {topic}: the known command "
                              "is 'reload'")
            self.answer(kind, False, f"unknown command {text[:40]!r}: the known command is 'reload'")
            return None
        try:
            request = correction_request(text) if kind == "wrong_name" else \
                naming_request(text) if kind == "name_visitor" else \
                visitor_request(text) if kind == "show_visitor" else ()
        except ValueError as e:
            self.said.warning(f"{kind} malformed", f"{kind} refused: {e}")
            self.answer(kind, False, f"{REFUSED.get(kind, 'not done')}: {e}")
            return None
        now = time.monotonic()
        if now - self.last.get(kind, float("-inf")) < COMMAND_INTERVAL:
            self.said.warning(f"{kind} rate", f"ignored a {kind} command: one per {COMMAND_INTERVAL:.0f} s")
            self.answer(kind, False, f"ignored: at most one {kind} per {COMMAND_INTERVAL:.0f} s")
            return None
        self.last[kind] = now
        return text, request
