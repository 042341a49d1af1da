"""Commands from the broker are untrusted input: parsed here, strictly, before anything acts on them.

Each names what it means by id (a visitor id, an event's run and seq), never "the last
one", which changes while someone types; anything else is refused with what was expected.
"""

from __future__ import annotations

import json
import re

from facepi.identity.gallery import shown

MAX_COMMAND_BYTES = 1024  # a naming or a correction is a few dozen bytes; nothing larger is parsed or echoed
COMMANDS = ("command", "name_visitor", "wrong_name")  # the topics facepi takes commands on
COMMAND_INTERVAL = 5.0  # seconds: at most one command of each kind from MQTT this often
NAMING_FORMAT = '{"visitor": "V7", "name": "alice"}'


def naming_request(text: str) -> tuple[str, str]:
    """The visitor id and the name of a ``name_visitor`` message; ValueError saying what is wrong.

    The id is required: "the last visitor" changes while someone types, and a name must land on
    the visitor the person was looking at."""
    try:
        req = json.loads(text)
    except ValueError:
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


def correction_request(text: str) -> tuple[str, int, str]:
    """(name, event seq, run) of a ``wrong_name`` message; ValueError saying what is wrong.

    The event is required for the same reason a naming needs its visitor: the last person on the
    dashboard changes while someone reaches for the button."""
    try:
        req = json.loads(text)
    except ValueError:
        req = None
    if not isinstance(req, dict):
        raise ValueError(f'"wrong name" must say which recognition it means, as JSON {{"name": "alice", "seq": 12, '
                         f'"run": "..."}}; got {text[:40]!r}')
    name, seq, run = req.get("name"), req.get("seq"), req.get("run")
    if not isinstance(name, str) or not name.strip() or not isinstance(seq, int) or not isinstance(run, str):
        raise ValueError(f'"wrong name" needs the recognition\'s "name", "seq" and "run" (the dashboard\'s last '
                         f"person); got name {name!r}, seq {seq!r}, run {run!r}")
    return name.strip(), seq, run
