"""Camera and broker credentials never leave the process: one helper masks them wherever text goes out.

An IP door camera's URL usually carries its login (``rtsp://admin:secret@10.0.0.5/stream``).
That text reaches ``systemctl status`` (readable by any local user), the journal,
error messages and the retained ``status`` topic; each of those edges passes it
through :func:`mask` first, and the daemon's log handler masks every record as a
last line of defence (see :class:`MaskingFilter`).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit, urlunsplit

# scheme://userinfo@ : userinfo runs to the last "@" before the host (passwords may contain "@").
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*@)")


def mask(text: str) -> str:
    """``text`` with the user info of every URL in it replaced by ``*:*``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}*:*@", text)


def with_password(uri: str, username: str, password: str | None) -> str:
    """``uri`` with a login added (the password from a file or systemd credential, never the config).

    A login already in the URI is kept unless a username is configured; the
    password is percent-encoded so that ``@``, ``:`` or ``/`` in it stay a password.
    """
    if not password and not username:
        return uri
    parts = urlsplit(uri)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"source {mask(uri)!r}: a camera login needs a URL such as rtsp://host/path")
    host = parts.netloc.rpartition("@")[2]
    user = username or (parts.username or "")
    if not user:
        raise ValueError("source.password is set but no user name: set source.username or put it in the URL")
    login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit((parts.scheme, f"{login}@{host}", parts.path, parts.query, parts.fragment))


class MaskingFilter(logging.Filter):
    """Masks URL logins in every record (message and arguments), whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
