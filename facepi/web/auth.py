"""Who may use the page: one household password (hashed with scrypt from the standard library, the
plain text dropped), sessions in memory (a cookie that is HttpOnly and SameSite=Strict), a CSRF token
per session on every form, and failed logins rate-limited per address and overall."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from facepi.config import ConfigError

MIN_PASSWORD = 8
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}  # ~16 MB, ~50 ms a try


class Password:
    """The household's password as an scrypt hash with a random salt; ``check`` in constant time."""

    def __init__(self, plain: str) -> None:
        self.salt = os.urandom(16)
        self.digest = hashlib.scrypt(plain.encode(), salt=self.salt, **SCRYPT)

    def check(self, attempt: str) -> bool:
        return hmac.compare_digest(hashlib.scrypt(attempt.encode()[:1024], salt=self.salt, **SCRYPT), self.digest)

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> Password:
        """FACEPI_WEB_PASSWORD, else the systemd credential ``web_password``; none (or a short one) is an
        error: the page never starts open."""
        env = dict(os.environ) if env is None else env
        plain, where = env.get("FACEPI_WEB_PASSWORD", ""), "FACEPI_WEB_PASSWORD"
        creds = env.get("CREDENTIALS_DIRECTORY", "")
        if not plain and creds and (Path(creds) / "web_password").is_file():
            where = "the systemd credential web_password"
            plain = (Path(creds) / "web_password").read_text().strip()
        if not plain:
            raise ConfigError("facepi web needs a password and has none: set FACEPI_WEB_PASSWORD, or the systemd "
                              "credential web_password (LoadCredential=web_password:/etc/facepi/web_password)")
        if len(plain) < MIN_PASSWORD:
            raise ConfigError(f"{where}: the password has {len(plain)} characters; at least {MIN_PASSWORD} needed")
        from facepi.redact import remember

        remember(plain)  # masked wherever text goes out
        return cls(plain)


@dataclass
class Session:
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once on the next page
    pending: dict[str, dict] = field(default_factory=dict)  # group photos waiting for "which face"


class Sessions:
    """Random ids (32 bytes) in memory: a restart logs everyone out, and nothing about a login is on disk."""

    def __init__(self, hours: float, limit: int = 50) -> None:
        self.ttl, self.limit = hours * 3600.0, limit
        self.by_id: dict[str, Session] = {}

    def new(self) -> tuple[str, Session]:
        now = time.monotonic()
        self.by_id = {k: s for k, s in self.by_id.items() if s.expires > now}
        while len(self.by_id) >= self.limit:  # the oldest login makes room
            self.by_id.pop(min(self.by_id, key=lambda k: self.by_id[k].expires))
        sid = secrets.token_urlsafe(32)
        self.by_id[sid] = Session(secrets.token_urlsafe(32), now + self.ttl)
        return sid, self.by_id[sid]

    def get(self, sid: str | None) -> Session | None:
        s = self.by_id.get(sid or "")
        if s is None or s.expires <= time.monotonic():
            self.by_id.pop(sid or "", None)
            return None
        return s

    def drop(self, sid: str | None) -> None:
        self.by_id.pop(sid or "", None)


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


class LoginLimit:
    """At most ``per_address`` failed logins per address and ``overall`` in all per ``window`` seconds;
    beyond, logins are refused (without checking the password) until the oldest failure ages out."""

    def __init__(self, per_address: int = 5, overall: int = 30, window: float = 900.0) -> None:
        self.per_address, self.overall, self.window = per_address, overall, window
        self.failures: dict[str, deque[float]] = {}
        self.all: deque[float] = deque()

    def _age(self, q: deque[float], now: float) -> None:
        while q and now - q[0] > self.window:
            q.popleft()

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        now = time.monotonic()
        q = self.failures.get(address, deque())
        self._age(q, now)
        self._age(self.all, now)
        waits = [self.window - (now - q[0])] if len(q) >= self.per_address else []
        waits += [self.window - (now - self.all[0])] if len(self.all) >= self.overall else []
        return max(waits, default=0.0)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        self.failures.setdefault(address, deque()).append(now)
        self.all.append(now)
        if len(self.failures) > 1000:  # a spray from many addresses must not grow this without bound
            self.failures = {a: q for a, q in self.failures.items() if q and now - q[-1] <= self.window}
