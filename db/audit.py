"""The audit trail: who changed what in the web admin or with ``liyi users``, and when.

Why a table and not only the structlog line: the admins of R12 must be able
to read it in the admin (``/audit``) long after the process logs rotated.
Rows are only ever appended. The functions take the accounts' engine, so
an account change and its audit line land in the same database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.models import AuditRow

MAX_DETAIL = 2000  # a detail line is a sentence, not a document


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail."""

    id: int
    at: datetime
    actor: str
    action: str
    detail: str
    address: str | None


async def append(conn: AsyncConnection, *, actor: str, action: str, detail: str,
                 address: str | None = None, at: datetime | None = None) -> None:
    """Add one line inside the caller's transaction."""
    await conn.execute(insert(AuditRow).values(
        at=at or datetime.now(UTC), actor=actor[:200], action=action[:100],
        detail=detail[:MAX_DETAIL], address=address,
    ))


async def entries(conn: AsyncConnection, *, limit: int, offset: int = 0) -> list[AuditEntry]:
    """Newest first."""
    rows = await conn.execute(
        select(AuditRow).order_by(AuditRow.id.desc()).limit(limit).offset(offset)
    )
    return [AuditEntry(id=r.id, at=r.at, actor=r.actor, action=r.action, detail=r.detail,
                       address=r.address) for r in rows]


async def count(conn: AsyncConnection) -> int:
    """How many lines the trail has."""
    return int(await conn.scalar(select(func.count()).select_from(AuditRow)) or 0)
