"""Agent accounts for the agent panel: one argon2 password hash per agent.

Why argon2id (argon2-cffi's ``PasswordHasher``): it is slow and memory-hard on
purpose, so a stolen ``agent_accounts`` table is expensive to guess from, and
its PHC string carries salt and cost so parameters can be raised later (a hash
made with older parameters is re-hashed on the next good sign-in).

Why hashing runs in a worker thread: one hash takes tens of milliseconds of
CPU, and the panel is served by the controller's event loop, which must keep
answering Asterisk. A small semaphore caps how many hashes run at once, so a
burst of sign-ins cannot eat the machine's memory (64 MiB per hash).

Why an unknown agent still costs a hash: ``verify`` would otherwise answer
"no such agent" faster than "wrong password", and the timing would tell an
attacker which agent names exist.

The table is created by the Alembic revision ``0002``; ``start`` runs
``upgrade head`` itself (a no-op when the call log already did), so the CLI
can set a password on a fresh database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db.migrations import upgrade
from db.models import AgentAccount

logger = structlog.get_logger()

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 200
# Concurrent argon2 computations (each takes the hasher's memory_cost).
_HASH_CONCURRENCY = 2
# Hashed when the agent is unknown, so that answer takes as long as a wrong password.
_DUMMY_PASSWORD = "liyi-no-such-agent"

T = TypeVar("T")


class AccountError(ValueError):
    """A name or password that cannot be stored; the message says why, for the CLI."""


def check_name(name: str) -> str:
    """``name`` if it can be an agent's account name, else :class:`AccountError`."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise AccountError("agent name must be non-empty, without leading or trailing spaces")
    if len(name) > MAX_NAME_LENGTH:
        raise AccountError(f"agent name is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise AccountError("agent name must not contain control characters")
    return name


def check_password(password: str) -> str:
    """``password`` if it is acceptable for an agent, else :class:`AccountError`."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"password is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


class AgentAccounts:
    """Set and check agents' panel passwords in the ``agent_accounts`` table."""

    def __init__(self, url: str, *, hasher: PasswordHasher | None = None) -> None:
        """``hasher`` defaults to argon2-cffi's recommended parameters; tests pass cheap ones."""
        self._url = url
        self._hasher = hasher or PasswordHasher()
        self._engine: AsyncEngine | None = None
        self._dummy_hash: str | None = None
        self._hashing = asyncio.Semaphore(_HASH_CONCURRENCY)

    async def start(self) -> None:
        """Connect and bring the schema to the newest revision (creates the table if needed)."""
        if self._engine is not None:
            return
        self._engine = create_async_engine(self._url)
        if make_url(self._url).get_backend_name() == "sqlite":
            # The call log writes to the same file: wait for its lock instead of failing.
            event.listen(self._engine.sync_engine, "connect", _sqlite_busy_timeout)
        try:
            await upgrade(self._engine)
        except BaseException:
            await self._engine.dispose()
            self._engine = None
            raise
        self._dummy_hash = await self._run(self._hasher.hash, _DUMMY_PASSWORD)

    async def close(self) -> None:
        """Release the database connections."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _db(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("AgentAccounts.start() has not been called")
        return self._engine

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        """Run one argon2 call in a worker thread, a few at a time."""
        async with self._hashing:
            return await asyncio.to_thread(fn, *args)

    async def set_password(self, name: str, password: str) -> None:
        """Store a fresh argon2 hash of ``password`` for ``name`` (creating the account)."""
        check_name(name)
        check_password(password)
        hashed = await self._run(self._hasher.hash, password)
        await self._store(name, hashed)
        logger.info("agent_account.password_set", agent=name)

    async def _store(self, name: str, hashed: str) -> None:
        now = datetime.now(UTC)
        async with self._db().begin() as conn:
            result = await conn.execute(
                update(AgentAccount)
                .where(AgentAccount.name == name)
                .values(password_hash=hashed, updated_at=now)
            )
            if result.rowcount == 0:
                await conn.execute(
                    AgentAccount.__table__.insert().values(  # type: ignore[attr-defined]
                        name=name, password_hash=hashed, updated_at=now
                    )
                )

    async def _hash_of(self, name: str) -> str | None:
        async with self._db().connect() as conn:
            value = await conn.scalar(
                select(AgentAccount.password_hash).where(AgentAccount.name == name)
            )
        return None if value is None else str(value)

    async def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; as slow for an unknown agent as for a wrong one.

        Raises only if the database cannot be read (the panel shows that as an
        outage, not as a wrong password).
        """
        if not isinstance(name, str) or not isinstance(password, str):
            return False
        if len(password) > MAX_PASSWORD_LENGTH or len(name) > MAX_NAME_LENGTH:
            return False
        stored = await self._hash_of(name)
        assert self._dummy_hash is not None
        try:
            await self._run(self._hasher.verify, stored or self._dummy_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            logger.warning("agent_account.bad_hash", agent=name)
            return False
        if stored is None:  # the dummy password itself was typed for an unknown name
            return False
        if self._hasher.check_needs_rehash(stored):
            await self._store(name, await self._run(self._hasher.hash, password))
            logger.info("agent_account.rehashed", agent=name)
        return True

    async def names(self) -> list[str]:
        """Agents that have a password, sorted."""
        async with self._db().connect() as conn:
            rows = await conn.scalars(select(AgentAccount.name).order_by(AgentAccount.name))
            return list(rows)


def _sqlite_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()


async def set_agent_password(url: str, name: str, password: str) -> None:
    """One-shot for the CLI: set ``name``'s panel password in the database at ``url``."""
    accounts = AgentAccounts(url)
    await accounts.start()
    try:
        await accounts.set_password(name, password)
    finally:
        await accounts.close()
