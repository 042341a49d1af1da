"""Commands from the broker are untrusted input: parsed here, strictly, before anything acts on them.

Each names what it means by id (a visitor id, an event's run and seq), never "the last
one", which changes while someone types; anything else is refused with what was expected.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from facepi.identity.gallery import shown

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 1024  # a naming or a correction is a few dozen bytes; nothing larger is parsed or echoed
COMMANDS = ("command", "name_visitor", "wrong_name", "show_visitor")  # the topics facepi takes commands on
COMMAND_INTERVAL = 5.0  # seconds: at most one command of each kind from MQTT this often
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


class CommandGate:
    """Every check a command passes before anything acts on it, each refusal answered (``answer``).

    A retained command is old: the broker hands it over on every (re)connect, so running it would repeat
    a reload or a naming each time; it is ignored and logged once per topic. Then: not empty, small, known,
    well-formed (parsed before the rate limit: junk never uses up the household's slot), and each kind at
    most once per ``COMMAND_INTERVAL``."""

    def __init__(self, learning: bool, answer: Callable[[str, bool, str], None]) -> None:
        self.learning, self.answer = learning, answer
        self.last: dict[str, float] = {}  # command kind -> when it last ran (its own rate limit)
        self.retained_said: set[str] = set()  # command topics whose retained message was logged

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
            log.warning("ignored a %d-byte message on %s: commands are at most %d bytes", len(payload), topic,
                        MAX_COMMAND_BYTES)
            self.answer(kind, False, f"ignored: a {kind} message is at most {MAX_COMMAND_BYTES} bytes")
            return None
        text = payload.decode("utf-8", "replace").strip()
        if kind in ("name_visitor", "show_visitor") and not self.learning:
            self.answer(kind, False, "not done: learning is off ([learning] enabled = false)")
            return None
        if kind == "command" and text != "reload":
            log.warning("ignored command %r on %s: the known command is 'reload'", text[:40], topic)
            self.answer(kind, False, f"unknown command {text[:40]!r}: the known command is 'reload'")
            return None
        try:
            request = correction_request(text) if kind == "wrong_name" else \
                naming_request(text) if kind == "name_visitor" else \
                visitor_request(text) if kind == "show_visitor" else ()
        except ValueError as e:
            log.warning("%s refused: %s", kind, e)
            self.answer(kind, False, f"{REFUSED.get(kind, 'not done')}: {e}")
            return None
        now = time.monotonic()
        if now - self.last.get(kind, float("-inf")) < COMMAND_INTERVAL:
            log.warning("ignored a %s command: one per %.0f s", kind, COMMAND_INTERVAL)
            self.answer(kind, False, f"ignored: at most one {kind} per {COMMAND_INTERVAL:.0f} s")
            return None
        self.last[kind] = now
        return text, request
