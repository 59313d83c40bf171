"""Signed-in browsers: server-side sessions that expire, and the lock-out of repeated failures.

Shared by the admin pages (``web.auth``) and the agent panel (``web.panel``):
each keeps its own table and cookie, with the same rules.

- A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie;
  the server keeps who it is (name and role), its CSRF token and when it was
  last used. Memory is enough: a restart signs everyone out, which costs a
  sign-in and never a call.
- It ends after ``idle_timeout`` without a request (an open panel WebSocket
  counts as use: that agent is at work) and after ``max_age`` in any case.
- Every sign-in gets a fresh id (no session fixation); changing or removing
  an account ends its sessions (:meth:`Sessions.close_for`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import web

logger = structlog.get_logger()


class SessionTiming(Protocol):
    """How long sessions live (``PanelOptions`` and ``web.auth.AuthOptions`` have these)."""

    @property
    def idle_timeout(self) -> float: ...

    @property
    def max_age(self) -> float: ...

    @property
    def clock(self) -> Callable[[], float]: ...


class ThrottleLimits(Protocol):
    """How many wrong passwords lock out, and for how long."""

    @property
    def max_failures(self) -> int: ...

    @property
    def lockout_seconds(self) -> float: ...

    @property
    def address_max_failures(self) -> int: ...

    @property
    def clock(self) -> Callable[[], float]: ...


@dataclass(slots=True, eq=False)
class Session:
    """One signed-in browser: whose it is, their role, its CSRF token, when it was last used."""

    sid: str
    name: str
    csrf: str
    created: float
    last_seen: float
    role: str = "agent"
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    flash: str | None = None

    @property
    def agent(self) -> str:
        """The panel's word for the signed-in name."""
        return self.name


class Sessions:
    """Server-side session table: random ids, idle expiry, a maximum age."""

    def __init__(self, options: SessionTiming) -> None:
        self._options = options
        self._by_id: dict[str, Session] = {}

    def open(self, name: str, role: str = "agent") -> Session:
        """A new session for ``name`` (a fresh id every sign-in: no session fixation)."""
        self._prune()
        now = self._options.clock()
        session = Session(sid=secrets.token_urlsafe(32), name=name, role=role,
                          csrf=secrets.token_urlsafe(32), created=now, last_seen=now)
        self._by_id[session.sid] = session
        return session

    def _expired(self, session: Session, now: float) -> bool:
        if now - session.created > self._options.max_age:
            return True
        # An open panel (WebSocket) is the agent at work, not idleness.
        return not session.sockets and now - session.last_seen > self._options.idle_timeout

    def get(self, sid: str | None, *, touch: bool = True) -> Session | None:
        """The live session with id ``sid``; an expired one is removed and gives None."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = self._options.clock()
        if self._expired(session, now):
            self._by_id.pop(sid, None)
            logger.info("session.expired", account=session.name, role=session.role)
            return None
        if touch:
            session.last_seen = now
        return session

    def alive(self, session: Session) -> bool:
        """Whether ``session`` is still signed in (not ended, not past its maximum age)."""
        return self._by_id.get(session.sid) is session and self.get(session.sid) is session

    def close(self, sid: str) -> Session | None:
        """End a session (sign-out); returns it so its sockets can be closed."""
        return self._by_id.pop(sid, None)

    def close_for(self, name: str) -> list[Session]:
        """End every session of ``name`` (its password, role or account changed)."""
        ended = [s for s in self._by_id.values() if s.name == name]
        for session in ended:
            del self._by_id[session.sid]
        return ended

    def sockets(self) -> list[web.WebSocketResponse]:
        """Every open panel's WebSocket (for shutdown)."""
        return [ws for session in self._by_id.values() for ws in session.sockets]

    def _prune(self) -> None:
        now = self._options.clock()
        for sid, session in list(self._by_id.items()):
            if self._expired(session, now):
                del self._by_id[sid]

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Locks out repeated wrong passwords: per (name, address) pair and per address.

    Why both keys: the pair stops guessing one account's password without
    letting a stranger lock a colleague out from elsewhere; the address key
    stops one machine from trying many names. A lockout expires by itself
    and its count starts again; a good sign-in clears the pair.
    """

    _FORGET_AFTER = 3600.0
    _MAX_ENTRIES = 10_000

    def __init__(self, options: ThrottleLimits) -> None:
        self._options = options
        self._entries: dict[tuple[str, ...], _Failures] = {}

    def _keys(self, name: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("pair", name, address), self._options.max_failures),
                (("address", address), self._options.address_max_failures)]

    def locked_for(self, name: str, address: str) -> float:
        """Seconds until ``name`` may try again from ``address`` (0: not locked)."""
        now = self._options.clock()
        wait = 0.0
        for key, _ in self._keys(name, address):
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                wait = max(wait, entry.locked_until - now)
        return wait

    def failed(self, name: str, address: str) -> float:
        """Count a wrong password; returns the lockout it caused, in seconds (0: none)."""
        now = self._options.clock()
        if len(self._entries) >= self._MAX_ENTRIES:
            self._prune(now)
        wait = 0.0
        for key, limit in self._keys(name, address):
            entry = self._entries.setdefault(key, _Failures())
            if entry.locked_until and entry.locked_until <= now:
                entry.count, entry.locked_until = 0, 0.0  # served its lockout: start again
            entry.count += 1
            entry.last = now
            if entry.count >= limit:
                entry.locked_until = now + self._options.lockout_seconds
                wait = max(wait, self._options.lockout_seconds)
        return wait

    def succeeded(self, name: str, address: str) -> None:
        """A good password: forget this pair's failures."""
        self._entries.pop(("pair", name, address), None)

    def _prune(self, now: float) -> None:
        for key, entry in list(self._entries.items()):
            if entry.locked_until <= now and now - entry.last > self._FORGET_AFTER:
                del self._entries[key]
        while len(self._entries) >= self._MAX_ENTRIES:  # a flood: drop the oldest
            oldest = min(self._entries, key=lambda k: self._entries[k].last)
            del self._entries[oldest]
