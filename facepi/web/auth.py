"""Who may use the page: one household password (hashed with scrypt from the standard library, the
plain text dropped), sessions in memory (a cookie that is HttpOnly and SameSite=Strict), a CSRF token
per session on every form, failed logins limited per address and slowed overall, one check at a time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
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
    """Random ids (32 bytes) in memory: a restart logs everyone out, and nothing about a login is on disk.
    ``on_drop`` is called with every session that ends (logout, expiry, room made, the page stopping):
    the group photos it kept waiting are deleted then."""

    def __init__(self, hours: float, limit: int = 50, on_drop: Callable[[Session], None] | None = None) -> None:
        self.ttl, self.limit, self.on_drop = hours * 3600.0, limit, on_drop
        self.by_id: dict[str, Session] = {}

    def _end(self, sid: str) -> None:
        s = self.by_id.pop(sid, None)
        if s is not None and self.on_drop is not None:
            self.on_drop(s)

    def new(self) -> tuple[str, Session]:
        now = time.monotonic()
        for k in [k for k, s in self.by_id.items() if s.expires <= now]:
            self._end(k)
        while len(self.by_id) >= self.limit:  # the oldest login makes room
            self._end(min(self.by_id, key=lambda k: self.by_id[k].expires))
        sid = secrets.token_urlsafe(32)
        self.by_id[sid] = Session(secrets.token_urlsafe(32), now + self.ttl)
        return sid, self.by_id[sid]

    def get(self, sid: str | None) -> Session | None:
        s = self.by_id.get(sid or "")
        if s is None or s.expires <= time.monotonic():
            self._end(sid or "")
            return None
        return s

    def drop(self, sid: str | None) -> None:
        self._end(sid or "")

    def expire(self) -> None:
        """End the sessions past their time (called now and then, so nothing waits for a visit)."""
        now = time.monotonic()
        for k in [k for k, s in self.by_id.items() if s.expires <= now]:
            self._end(k)

    def close(self) -> None:
        for k in list(self.by_id):
            self._end(k)


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


class LoginLimit:
    """At most ``per_address`` failed logins per address per ``window`` seconds; beyond, that address is
    refused (without checking the password) until its oldest failure ages out. An attempt counts as a
    failure from the moment it is let through (``begin``) and is refunded on success (``succeeded``), so
    guesses sent in parallel are counted before any of them is checked.

    Overall, past ``overall`` failures in the window every password check waits ``slow`` seconds first
    (one check at a time: the page's lock): a spray from many addresses is slowed to one guess every
    ``slow`` seconds, while the household's right password still gets in (no lock-out for everyone)."""

    def __init__(self, per_address: int = 5, overall: int = 30, window: float = 900.0, slow: float = 2.0) -> None:
        self.per_address, self.overall, self.window, self.slow = per_address, overall, window, slow
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
        return self.window - (now - q[0]) if len(q) >= self.per_address else 0.0

    def delay(self) -> float:
        """Seconds every password check waits now (0 unless many failures came from anywhere)."""
        self._age(self.all, time.monotonic())
        return self.slow if len(self.all) >= self.overall else 0.0

    def begin(self, address: str) -> float:
        """Count one attempt from ``address`` as failed until it succeeds; returns its stamp for the refund."""
        now = time.monotonic()
        self.failures.setdefault(address, deque()).append(now)
        self.all.append(now)
        if len(self.failures) > 1000:  # a spray from many addresses must not grow this without bound
            self.failures = {a: q for a, q in self.failures.items() if q and now - q[-1] <= self.window}
        return now

    def allowed(self, address: str, stamp: float) -> bool:
        """Whether the attempt counted at ``stamp`` is within the address's first ``per_address``."""
        q = list(self.failures.get(address, ()))
        return stamp in q and q.index(stamp) < self.per_address

    def succeeded(self, address: str, stamp: float) -> None:
        """Refund the attempt counted at ``stamp`` (a right password, or one never checked)."""
        for q in (self.failures.get(address), self.all):
            if q is not None and stamp in q:
                q.remove(stamp)
