"""Tables of the call log (R10, R12).

Why these tables: R10 asks that every call that reaches the service, answered
or not, keeps its whole timeline; R12 asks for a per-rule compliance record.
So a call is one ``calls`` row, its timeline is append-only ``timeline`` rows
numbered by ``seq``, and its compliance is one ``compliance`` row per rule.
``agents`` holds the last known state of each agent's phone.
``followups`` holds R8's promises and callback requests, one row each, with
the working-day due date and the state an admin or agent moves it through.
``journal_marks`` is bookkeeping for the store's crash journal: it records,
in the same transaction as the data, how far each journal has been written,
so that replaying a journal after a crash writes every record exactly once.

The schema is created by the Alembic migrations in ``db/migrations``; these
models are the single source the migrations are checked against (a test runs
``alembic.autogenerate.compare_metadata`` and expects no differences).

Only portable column types are used (``JSON``, ``Text``, timezone-aware
``DateTime``) so the same code runs on SQLite (aiosqlite) and PostgreSQL
(asyncpg). Strings are ``Text`` without a length: a 2 KB caller name must not
turn into a write that PostgreSQL rejects and the call log retries forever.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations can refer to constraints by name
# on every backend (SQLite batch mode needs them).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as timezone-aware UTC.

    SQLite has no timezone-aware type: SQLAlchemy stores the wall-clock text
    and drops the offset, and gives back naive datetimes. PostgreSQL's
    ``timestamptz`` keeps the instant. Normalising to UTC on the way in and
    attaching UTC on the way out makes both backends give the same values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the call log; times must be UTC-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Call(Base):
    """One call that reached the service, answered or not (R10)."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    channel_id: Mapped[str | None] = mapped_column(Text)
    caller_number: Mapped[str | None] = mapped_column(Text)
    caller_name: Mapped[str | None] = mapped_column(Text)
    # First ring (R1 counts rings from here).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # R9 evidence: "caller" | "agent" | "service" | "unknown" (ended while the controller was down).
    first_hangup: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Who served the call: "liyi" (the controller) or "fallback" (the dialplan, while liyi was down).
    handled_by: Mapped[str] = mapped_column(Text, nullable=False, default="liyi",
                                            server_default="liyi")
    # An imported fallback call's Asterisk linkedid: unique, so an import is written once
    # however often, or however many processes at once, the CEL file is read.
    asterisk_linkedid: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_calls_created_at", "created_at"),
        Index("ix_calls_ended_at", "ended_at"),
        Index("ix_calls_agent", "agent"),
        Index("ix_calls_asterisk_linkedid", "asterisk_linkedid", unique=True),
    )


class TimelineRow(Base):
    """One entry of a call's append-only timeline: an engine input or output."""

    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(
        Text, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # "event" (engine input, replayable) or "log" (engine output / evidence).
    source: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)

    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_timeline_call_id_seq"),)


class ComplianceRow(Base):
    """One rule's verdict for one call (R12): kept, broken or not_applicable."""

    __tablename__ = "compliance"

    call_id: Mapped[str] = mapped_column(
        Text, ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    rule: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)

    __table_args__ = (Index("ix_compliance_rule_status", "rule", "status"),)


class Agent(Base):
    """Last known registration and device state of an agent's phone."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    endpoint: Mapped[str] = mapped_column(Text, nullable=False)
    registered: Mapped[bool] = mapped_column(Boolean, nullable=False)
    device_state: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class JournalMark(Base):
    """How far one store instance's journal has been written to the database.

    Updated in the same transaction as the records it covers, so a record
    replayed from a journal after a crash is written only if it was not yet.
    """

    __tablename__ = "journal_marks"

    journal_id: Mapped[str] = mapped_column(Text, primary_key=True)
    applied_through: Mapped[int] = mapped_column(Integer, nullable=False)


class AgentAccount(Base):
    """One account (agent, supervisor or admin): an argon2 PHC string, never the password."""

    __tablename__ = "agent_accounts"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # "admin" | "supervisor" | "agent" (revision 0005; older accounts were agents).
    role: Mapped[str] = mapped_column(Text, nullable=False, server_default="agent")


class AuditRow(Base):
    """One change made through the web admin or ``liyi users``: who, when, what, detail.

    Append-only, like the call log: the audit trail is evidence of who
    changed an account, so nothing in the product updates or deletes a row.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    address: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class FollowUpRow(Base):
    """One promise or callback request to keep (R8): due on a working day, owned, tracked.

    ``due`` is a calendar date at the center (``Date``), not an instant: a
    promise "三个工作日后" is due on a day, whatever the hour. ``owner`` is ""
    for a callback any agent of ``queue`` may place. ``overdue_flagged_at``
    is set once, when the follow-up is first found overdue, so the originating
    call's timeline gets exactly one "followup-overdue" entry.
    """

    __tablename__ = "followups"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    call_id: Mapped[str] = mapped_column(
        Text, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    )
    # "promise" (an agent's reply time) or "callback" (left by a caller in the queue).
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    number: Mapped[str] = mapped_column(Text, nullable=False)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    queue: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    due: Mapped[date] = mapped_column(Date, nullable=False)
    # "open" | "done"; "overdue" is not stored: it depends on today.
    state: Mapped[str] = mapped_column(Text, nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by: Mapped[str | None] = mapped_column(Text)
    overdue_flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    last_attempt_call_id: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_followups_state_due", "state", "due"),
        Index("ix_followups_call_id", "call_id"),
        Index("ix_followups_owner", "owner"),
    )
