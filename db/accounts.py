"""Accounts for the web admin and the agent panel: a role and an argon2 hash per name.

Roles (revision ``0005``): ``admin`` changes everything, ``supervisor`` reads
every admin page and changes nothing, ``agent`` signs in to the agent panel
only. There is no default account and no default password: the first admin
is made with ``liyi users add NAME --role admin``. Every change to an account
is written to the audit trail (``db.audit``) in the same transaction, and
the last admin can be neither removed nor demoted, so the admin cannot lock
everyone out of the admin by a slip.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from db import audit
from db.audit import AuditEntry
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


ROLES = ("admin", "supervisor", "agent")


class AccountError(ValueError):
    """A name, password or role that cannot be stored; the message says why (CLI and pages)."""


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """An account as the admin lists it (never its hash)."""

    name: str
    role: str
    updated_at: datetime


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else :class:`AccountError`."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


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


class Accounts:
    """Set and check accounts (name, role, password hash) in the ``agent_accounts`` table."""

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

    async def set_password(self, name: str, password: str, *, actor: str = "cli",
                           address: str | None = None) -> None:
        """Store a fresh argon2 hash of ``password`` for ``name`` (creating an agent account).

        ``liyi agents set-password`` and the demo use this; an existing account
        keeps its role.
        """
        check_name(name)
        check_password(password)
        hashed = await self._run(self._hasher.hash, password)
        async with self._db().begin() as conn:
            created = await self._store(conn, name, hashed)
            await audit.append(conn, actor=actor, action="user-add" if created else "passwd",
                               detail=f"{name} (agent)" if created else name, address=address)
        logger.info("account.password_set", account=name, created=created, actor=actor)

    async def _store(self, conn: AsyncConnection, name: str, hashed: str,
                     role: str = "agent") -> bool:
        """Set ``name``'s hash; insert it with ``role`` if new. Returns whether it was new."""
        now = datetime.now(UTC)
        result = await conn.execute(
            update(AgentAccount)
            .where(AgentAccount.name == name)
            .values(password_hash=hashed, updated_at=now)
        )
        if result.rowcount:
            return False
        await conn.execute(
            AgentAccount.__table__.insert().values(  # type: ignore[attr-defined]
                name=name, password_hash=hashed, updated_at=now, role=role
            )
        )
        return True

    async def add(self, name: str, password: str, role: str, *, actor: str = "cli",
                  address: str | None = None) -> None:
        """Create the account ``name`` with ``role``; an existing name is an :class:`AccountError`."""
        check_name(name)
        check_password(password)
        check_role(role)
        hashed = await self._run(self._hasher.hash, password)
        async with self._db().begin() as conn:
            if await self._role_in(conn, name) is not None:
                raise AccountError(f"an account named {name!r} already exists")
            await self._store(conn, name, hashed, role)
            await audit.append(conn, actor=actor, action="user-add", detail=f"{name} ({role})",
                               address=address)
        logger.info("account.added", account=name, role=role, actor=actor)

    async def reset_password(self, name: str, password: str, *, actor: str = "cli",
                             address: str | None = None) -> None:
        """Give the existing account ``name`` a new password (an unknown name is refused)."""
        check_password(password)
        hashed = await self._run(self._hasher.hash, password)
        async with self._db().begin() as conn:
            if await self._role_in(conn, name) is None:
                raise AccountError(f"no account named {name!r}")
            await self._store(conn, name, hashed)
            await audit.append(conn, actor=actor, action="passwd", detail=name, address=address)
        logger.info("account.password_reset", account=name, actor=actor)

    async def set_role(self, name: str, role: str, *, actor: str = "cli",
                       address: str | None = None) -> None:
        """Change ``name``'s role; demoting the last admin is refused."""
        check_role(role)
        async with self._db().begin() as conn:
            old = await self._role_in(conn, name)
            if old is None:
                raise AccountError(f"no account named {name!r}")
            if old == role:
                return
            if old == "admin":
                await self._keep_an_admin(conn, name)
            await conn.execute(update(AgentAccount).where(AgentAccount.name == name)
                               .values(role=role, updated_at=datetime.now(UTC)))
            await audit.append(conn, actor=actor, action="role",
                               detail=f"{name}: {old} → {role}", address=address)
        logger.info("account.role_changed", account=name, old=old, role=role, actor=actor)

    async def remove(self, name: str, *, actor: str = "cli", address: str | None = None) -> None:
        """Delete the account ``name``; removing the last admin is refused."""
        async with self._db().begin() as conn:
            old = await self._role_in(conn, name)
            if old is None:
                raise AccountError(f"no account named {name!r}")
            if old == "admin":
                await self._keep_an_admin(conn, name)
            await conn.execute(delete(AgentAccount).where(AgentAccount.name == name))
            await audit.append(conn, actor=actor, action="user-remove", detail=f"{name} ({old})",
                               address=address)
        logger.info("account.removed", account=name, role=old, actor=actor)

    async def _keep_an_admin(self, conn: AsyncConnection, leaving: str) -> None:
        others = await conn.scalar(
            select(func.count()).select_from(AgentAccount)
            .where(AgentAccount.role == "admin", AgentAccount.name != leaving)
        )
        if not others:
            raise AccountError(f"{leaving!r} is the last admin; make another admin first")

    async def _role_in(self, conn: AsyncConnection, name: str) -> str | None:
        value = await conn.scalar(select(AgentAccount.role).where(AgentAccount.name == name))
        return None if value is None else str(value)

    async def role_of(self, name: str) -> str | None:
        """``name``'s role, or None if there is no such account."""
        async with self._db().connect() as conn:
            return await self._role_in(conn, name)

    async def list_accounts(self) -> list[AccountInfo]:
        """Every account with its role, sorted by name."""
        async with self._db().connect() as conn:
            rows = await conn.execute(
                select(AgentAccount.name, AgentAccount.role, AgentAccount.updated_at)
                .order_by(AgentAccount.name)
            )
            return [AccountInfo(name=r.name, role=r.role, updated_at=r.updated_at) for r in rows]

    async def record(self, *, actor: str, action: str, detail: str,
                     address: str | None = None) -> None:
        """Add a line to the audit trail that goes with no account change (a sign-in)."""
        async with self._db().begin() as conn:
            await audit.append(conn, actor=actor, action=action, detail=detail, address=address)

    async def audit_entries(self, limit: int = 50, offset: int = 0) -> list[AuditEntry]:
        """The audit trail, newest first."""
        async with self._db().connect() as conn:
            return await audit.entries(conn, limit=limit, offset=offset)

    async def _hash_of(self, name: str) -> str | None:
        async with self._db().connect() as conn:
            value = await conn.scalar(
                select(AgentAccount.password_hash).where(AgentAccount.name == name)
            )
        return None if value is None else str(value)

    async def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (whatever the role); see :meth:`authenticate`."""
        return await self.authenticate(name, password) is not None

    async def authenticate(self, name: str, password: str) -> str | None:
        """``name``'s role if ``password`` is theirs, else None.

        As slow for an unknown name as for a wrong password. Raises only if
        the database cannot be read (sign-in pages show that as an outage,
        not as a wrong password).
        """
        if not isinstance(name, str) or not isinstance(password, str):
            return None
        if len(password) > MAX_PASSWORD_LENGTH or len(name) > MAX_NAME_LENGTH:
            return None
        async with self._db().connect() as conn:
            row = (await conn.execute(
                select(AgentAccount.password_hash, AgentAccount.role)
                .where(AgentAccount.name == name)
            )).first()
        stored = None if row is None else str(row.password_hash)
        assert self._dummy_hash is not None
        try:
            await self._run(self._hasher.verify, stored or self._dummy_hash, password)
        except VerifyMismatchError:
            return None
        except (VerificationError, InvalidHashError):
            logger.warning("account.bad_hash", account=name)
            return None
        if row is None or stored is None:  # the dummy password itself, for an unknown name
            return None
        if self._hasher.check_needs_rehash(stored):
            rehashed = await self._run(self._hasher.hash, password)
            async with self._db().begin() as conn:
                await self._store(conn, name, rehashed)
            logger.info("account.rehashed", account=name)
        return str(row.role)

    async def names(self) -> list[str]:
        """Agents that have a password, sorted."""
        async with self._db().connect() as conn:
            rows = await conn.scalars(select(AgentAccount.name).order_by(AgentAccount.name))
            return list(rows)


# The panel's accounts were agents' only before roles came; the old name still works.
AgentAccounts = Accounts


def _sqlite_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()


async def set_agent_password(url: str, name: str, password: str) -> None:
    """One-shot for the CLI: set ``name``'s panel password in the database at ``url``."""
    accounts = Accounts(url)
    await accounts.start()
    try:
        await accounts.set_password(name, password)
    finally:
        await accounts.close()
