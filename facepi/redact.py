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
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

# scheme://userinfo@host : the user info runs to the *last* "@" of the URL, so a login may hold "@", "/", "#",
# "?" or spaces (typed into a config file unencoded: "rtsp://admin:p@ss/word@10.0.0.5/"); it never crosses a
# quote, a line or another "://". A path with an "@" in it is masked too: hiding too much beats a leak.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>(?:(?!://)[^\n'\"<>])*@)")
# user:password@host without "//" (a typo, "rtsp:/admin:pw@host", or no scheme at all): masked the same way
_BARE_LOGIN = re.compile(r"(?<![\w*])[^\s/:@'\"<>]+:(?:(?!//)[^\s'\"<>])+@(?=[\w.\-\[]+)")
# Query-string values are masked unless the parameter is known to be harmless: cameras name their logins every
# way there is (Reolink ?user=&password=, Foscam ?usr=&pwd=, ?pw=, ?psw=, &p=, ?passcode=, ?sig=, token URLs), so
# a list of secret names always misses one; a list of harmless names only costs a masked value too many.
HARMLESS_PARAMS = frozenset((
    "cmd", "action", "channel", "chn", "ch", "stream", "streamtype", "subtype", "substream", "profile", "fps",
    "framerate", "rate", "resolution", "res", "width", "height", "quality", "compression", "format", "fmt", "codec",
    "encode", "mode", "type", "camera", "cam", "video", "audio", "bitrate", "transport", "rtsp_transport", "tcp",
    "unicast", "proto", "protocol", "view", "rotate", "flip", "mirror",
))
USER_PARAMS = ("user", "username", "usr", "login", "loginuse", "u", "name", "account", "uid")  # not remembered
# A parameter starts after "?", "&", ";" or "#"; its value runs to the next "&name=" (an "&" inside a password
# does not end it), "#", a space or a quote.
# logins in a URL's path (XMEye/Xiongmai cameras: /user=admin_password=SECRET_channel=1_stream=0.sdp)
_PATH_LOGIN = re.compile(r"(?P<name>[/_;&?](?:user|username|password|pwd|pass|psw)=)(?P<value>[^_/&;?#\s'\"<>]*)",
                         re.IGNORECASE)
_QUERY = re.compile(r"(?P<name>[?&;#][\w.%\-\[\]]+=)(?P<value>(?:[^&#\s'\"<>]|&(?![\w.%\-\[\]]+=))*)")


def _param(name: str) -> str:
    """A parameter's name as compared: decoded, lower case."""
    return unquote(name).lower()


def _masked_param(m: re.Match[str]) -> str:
    name = m["name"]
    harmless = _param(name[1:-1]) in HARMLESS_PARAMS
    return m[0] if harmless or not m["value"] else f"{name}*"


_known: set[str] = set()  # secrets this process was given (see remember): masked verbatim wherever they appear


def remember(*secrets: str | None) -> None:
    """Mask these exact strings (and their URL-encoded forms) too: what no pattern can recognise, such as a
    query-string password with a space in it, is still never shown. Short values (< 4 characters) are left
    to the patterns, or every "1" in a log line would vanish."""
    for s in secrets:
        if s and len(s) >= 4:
            _known.update({s, quote(s, safe=""), quote_plus(s, safe="")})


def remember_uri(uri: str) -> None:
    """Remember the password and the secret query values of a camera URL (raw and decoded)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return
    values = [parts.password or ""]
    for query in (parts.query, parts.fragment):
        values += [v for k, v in parse_qsl(query, keep_blank_values=True)
                   if _param(k) not in HARMLESS_PARAMS and _param(k) not in USER_PARAMS]
    remember(*values, *(unquote(v) for v in values))


def mask(text: str) -> str:
    """``text`` with the logins of every URL in it masked: user info becomes ``*:*``, every query value
    ``*`` but those of HARMLESS_PARAMS, and every remembered secret ``***``."""
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _USERINFO.sub(lambda m: f"{m['scheme']}*:*@", text)
    text = _BARE_LOGIN.sub("*:*@", text)
    text = _PATH_LOGIN.sub(lambda m: f"{m['name']}*", text)
    return _QUERY.sub(_masked_param, text)


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
