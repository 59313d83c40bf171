"""One batch of call-log records, staged in order and written as a few bulk statements.

Why: the writer commits a batch of up to a thousand records, from many
concurrent calls, in one transaction. Written one statement per record, the
fixed cost of a statement (SQLAlchemy, the hop to the driver's thread) was
most of the controller's CPU. So a batch is first *staged*, record by record
in queue order, into plain data:

- per call, either the whole row this batch inserts (the call is new) or the
  columns it changes on a row already stored, later records overwriting
  earlier ones exactly as sequential UPDATEs would;
- the timeline rows, numbered in queue order;
- per call, the compliance rows (a later ``end`` replaces an earlier one's
  verdict for the same rule);
- per agent, only the latest state;
- the follow-ups added (R8), and the callback attempts counted on them, in order.

Then :func:`write_batch` sends one statement per kind (``executemany``), in an
order the foreign keys accept: calls first, then timeline, compliance and
follow-ups.
The end state is the one the records give applied one at a time; the batch
still commits or fails as a whole, so the store's retry and isolation of a
refused record are unchanged.

What staging needs to know about the database — which calls already have a
row, where their timelines stop, which agents exist — the store finds out
before staging, from its caches or with one SELECT per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import (
    Delete,
    Insert,
    Select,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from db.journal import Record
from db.models import Agent, Call, ComplianceRow, FollowUpRow, JournalMark, TimelineRow

logger = structlog.get_logger()

# Fields ``call_updated`` accepts that are times (epoch seconds in a record).
TIME_FIELDS = frozenset({"created_at", "answered_at", "ended_at"})

# Every column of a calls row but its id: inserted rows all carry all of them, so
# that one executemany can insert them together.
_CALL_COLUMNS = (
    "channel_id",
    "caller_number",
    "caller_name",
    "created_at",
    "answered_at",
    "ended_at",
    "first_hangup",
    "agent",
    "outcome",
    "state",
    "summary",
)
_EMPTY_CALL: dict[str, Any] = dict.fromkeys(_CALL_COLUMNS)

# IN lists are cut to this many values: old SQLite builds allow 999 parameters.
_IN_CHUNK = 500

# Statements built once: building one (and its cache key) costs more than running
# it for a few rows.
_INSERT_CALLS: Insert = insert(Call)
_UPDATE_CALL: Update = update(Call).where(Call.id == bindparam("b_call_id"))
_RESET_UNKNOWN_STATE: Update = (
    update(Call)
    .where(Call.id == bindparam("b_call_id"), Call.state == "unknown")
    .values(state=None)
)
_INSERT_TIMELINE: Insert = insert(TimelineRow)
_INSERT_VERDICTS: Insert = insert(ComplianceRow)
_DELETE_VERDICT: Delete = delete(ComplianceRow).where(
    ComplianceRow.call_id == bindparam("b_call_id"), ComplianceRow.rule == bindparam("b_rule")
)
_INSERT_AGENTS: Insert = insert(Agent)
_UPDATE_AGENT: Update = update(Agent).where(Agent.name == bindparam("b_name"))
_STORED_CALLS: Select[str] = select(Call.id).where(Call.id.in_(bindparam("b_ids", expanding=True)))
_STORED_AGENTS: Select[str] = select(Agent.name).where(
    Agent.name.in_(bindparam("b_names", expanding=True))
)
_HIGHEST_SEQS: Select[str, int] = (
    select(TimelineRow.call_id, func.max(TimelineRow.seq))
    .where(TimelineRow.call_id.in_(bindparam("b_ids", expanding=True)))
    .group_by(TimelineRow.call_id)
)
_INSERT_FOLLOWUPS: Insert = insert(FollowUpRow)
_STORED_FOLLOWUPS: Select[str] = select(FollowUpRow.id).where(
    FollowUpRow.id.in_(bindparam("b_ids", expanding=True))
)
_COUNT_ATTEMPT: Update = (
    update(FollowUpRow)
    .where(FollowUpRow.id == bindparam("b_followup_id"))
    .values(
        attempts=FollowUpRow.attempts + 1,
        last_attempt_call_id=bindparam("b_attempt_call_id"),
    )
)
READ_MARK: Select[int] = select(JournalMark.applied_through).where(
    JournalMark.journal_id == bindparam("b_journal_id")
)
INSERT_MARK: Insert = insert(JournalMark)
ADVANCE_MARK: Update = (
    update(JournalMark)
    .where(JournalMark.journal_id == bindparam("b_journal_id"))
    .values(applied_through=bindparam("b_number"))
)


def utc(epoch: float | None) -> datetime | None:
    """An epoch time as an aware UTC datetime (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@dataclass(slots=True)
class CallPlan:
    """What one batch does to one call's row."""

    # The row was in the database before this batch (known to the store or found).
    stored: bool
    # The call has no compliance rows yet, so none need deleting before new ones.
    no_verdicts: bool
    # The whole row this batch inserts, when the call was not stored.
    row: dict[str, Any] | None = None
    # Columns this batch sets on a stored row, in effect after all its records.
    changes: dict[str, Any] = field(default_factory=dict)
    # A start met a stored row whose state this batch does not know: a placeholder's
    # "unknown" must become NULL (any other state stays).
    reset_unknown_state: bool = False
    # Rule -> compliance row to write.
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, values: dict[str, Any]) -> None:
        """Columns as an UPDATE of the row at this point of the batch would set them."""
        if self.row is not None:
            self.row.update(values)
            return
        self.changes.update(values)
        if "state" in values:
            self.reset_unknown_state = False


@dataclass
class BatchState:
    """What one batch stages and learns; the store trusts the learning once committed."""

    next_seq: dict[str, int] = field(default_factory=dict)
    known_calls: set[str] = field(default_factory=set)
    known_agents: set[str] = field(default_factory=set)
    marks: dict[str, int] = field(default_factory=dict)
    mark_rows: set[str] = field(default_factory=set)
    advanced: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    pruned: set[str] = field(default_factory=set)
    # Calls this batch inserts (they have no compliance rows but what it writes).
    created: set[str] = field(default_factory=set)
    # Input of staging: calls of the batch that have a row, and those of them known
    # to have no compliance rows.
    stored_calls: set[str] = field(default_factory=set)
    verdictless_calls: set[str] = field(default_factory=set)
    # Staged writes.
    calls: dict[str, CallPlan] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    followups: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    # ---------------------------------------------------------------- staging

    def _plan(self, call_id: str) -> CallPlan:
        plan = self.calls.get(call_id)
        if plan is None:
            stored = call_id in self.stored_calls
            plan = CallPlan(
                stored=stored, no_verdicts=not stored or call_id in self.verdictless_calls
            )
            self.calls[call_id] = plan
        return plan

    def _insert(self, plan: CallPlan, call_id: str, values: dict[str, Any]) -> None:
        plan.row = {**_EMPTY_CALL, "id": call_id, **values}
        self.created.add(call_id)
        self.known_calls.add(call_id)
        self.next_seq.setdefault(call_id, 1)

    def _existing(self, call_id: str, at: float | None) -> CallPlan:
        """The call's plan, with a placeholder row if it has none (its start was lost)."""
        plan = self._plan(call_id)
        if not plan.stored and plan.row is None:
            created = utc(at) if at is not None else datetime.now(UTC)
            self._insert(plan, call_id, {"created_at": created, "state": "unknown"})
            logger.warning("call_log.call_row_created_implicitly", call_id=call_id)
        return plan

    def stage_start(self, record: Record) -> None:
        call_id = record["call_id"]
        values = {
            "channel_id": record["channel_id"],
            "caller_number": record["caller_number"],
            "caller_name": record["caller_name"],
            "created_at": utc(record["created_at"]),
        }
        plan = self._plan(call_id)
        if plan.row is not None:
            # The real start of a placeholder this batch made, or a repeated start.
            plan.row.update(values)
            if plan.row["state"] == "unknown":
                plan.row["state"] = None
        elif not plan.stored:
            self._insert(plan, call_id, values)
        else:
            plan.changes.update(values)
            if "state" in plan.changes:
                if plan.changes["state"] == "unknown":
                    plan.changes["state"] = None
            else:
                plan.reset_unknown_state = True

    def stage_append(self, record: Record) -> None:
        call_id: str = record.get("call_id", "")
        at = record["at"]
        self._existing(call_id, at)
        seq = self.next_seq[call_id]
        self.next_seq[call_id] = seq + 1
        self.timeline.append(
            {
                "call_id": call_id,
                "seq": seq,
                "at": utc(at),
                "source": record["source"],
                "kind": record["kind"],
                "detail": record["detail"],
            }
        )

    def stage_update(self, record: Record) -> None:
        call_id: str = record.get("call_id", "")
        plan = self._existing(call_id, None)
        values = {k: utc(v) if k in TIME_FIELDS else v for k, v in record["fields"].items()}
        if values:
            plan.set(values)

    def stage_end(self, record: Record) -> None:
        call_id = record["call_id"]
        plan = self._existing(call_id, record["ended_at"])
        values: dict[str, Any] = {
            "ended_at": utc(record["ended_at"]),
            "first_hangup": record["first_hangup"],
            "outcome": record["outcome"],
        }
        if record.get("summary") is not None:
            values["summary"] = record["summary"]
        plan.set(values)
        compliance: dict[str, dict[str, Any]] = record["compliance"]
        for rule, verdict in compliance.items():
            plan.verdicts[rule] = {
                "call_id": call_id,
                "rule": rule,
                "status": verdict["status"],
                "evidence": verdict["evidence"],
            }
        self.ended.add(call_id)

    def stage_agent(self, record: Record) -> None:
        name = record["name"]
        self.agents[name] = {
            "name": name,
            "endpoint": record["endpoint"],
            "registered": record["registered"],
            "device_state": record["device_state"],
            "updated_at": utc(record["at"]),
        }


    def stage_followup(self, record: Record) -> None:
        """A follow-up to insert; its call gets a placeholder row if the log has none."""
        call_id: str = record.get("call_id", "")
        self._existing(call_id, record["created_at"])
        followup_id = record["followup_id"]
        if followup_id in self.followups:
            logger.warning("call_log.followup_duplicate", followup_id=followup_id, call_id=call_id)
            return
        self.followups[followup_id] = {
            "id": followup_id,
            "call_id": call_id,
            "kind": record["kind"],
            "text": record["text"],
            "number": record["number"],
            "owner": record["owner"],
            "queue": record["queue"],
            "created_at": utc(record["created_at"]),
            "due": date.fromisoformat(record["due"]),
            "state": "open",
            "done_at": None,
            "done_by": None,
            "overdue_flagged_at": None,
            "attempts": 0,
            "last_attempt_call_id": None,
        }

    def stage_attempt(self, record: Record) -> None:
        """One more callback attempt on a follow-up (written after this batch's inserts)."""
        self.attempts.append(
            {
                "b_followup_id": record["followup_id"],
                "b_attempt_call_id": record["attempt_call_id"],
            }
        )


# -------------------------------------------------------------------- reads before staging


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(values)
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


async def stored_calls(conn: AsyncConnection, call_ids: Iterable[str]) -> set[str]:
    """Which of these calls have a row."""
    found: set[str] = set()
    for chunk in _chunks(call_ids):
        found.update(await conn.scalars(_STORED_CALLS, {"b_ids": chunk}))
    return found


async def highest_seqs(conn: AsyncConnection, call_ids: Iterable[str]) -> dict[str, int]:
    """The highest timeline ``seq`` of each of these calls (absent: no timeline yet)."""
    highest: dict[str, int] = {}
    for chunk in _chunks(call_ids):
        rows = await conn.execute(_HIGHEST_SEQS, {"b_ids": chunk})
        highest.update({call_id: seq for call_id, seq in rows if seq is not None})
    return highest


async def stored_followups(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    """Which of these follow-ups have a row."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(await conn.scalars(_STORED_FOLLOWUPS, {"b_ids": chunk}))
    return found


async def stored_agents(conn: AsyncConnection, names: Iterable[str]) -> set[str]:
    """Which of these agents have a row."""
    found: set[str] = set()
    for chunk in _chunks(names):
        found.update(await conn.scalars(_STORED_AGENTS, {"b_names": chunk}))
    return found


# -------------------------------------------------------------------- the bulk writes


async def write_batch(conn: AsyncConnection, state: BatchState, agents_stored: set[str]) -> None:
    """Send the staged writes: calls, then timeline and compliance rows, then agents."""
    new_rows = [plan.row for plan in state.calls.values() if plan.row is not None]
    if new_rows:
        await conn.execute(_INSERT_CALLS, new_rows)
    await _update_calls(conn, state)
    if state.timeline:
        await conn.execute(_INSERT_TIMELINE, state.timeline)
    await _write_verdicts(conn, state)
    await _write_followups(conn, state)
    if state.agents:
        new = [row for name, row in state.agents.items() if name not in agents_stored]
        changed = [
            {"b_name": name, **{k: v for k, v in row.items() if k != "name"}}
            for name, row in state.agents.items()
            if name in agents_stored
        ]
        if new:
            await conn.execute(_INSERT_AGENTS, new)
        if changed:
            await conn.execute(_UPDATE_AGENT, changed)
        state.known_agents.update(state.agents)


async def _update_calls(conn: AsyncConnection, state: BatchState) -> None:
    """One executemany per set of changed columns (a handful of distinct sets per batch).

    A single UPDATE of every column with ``CASE WHEN :changed THEN :new ELSE col END``
    was tried: one statement, but each row cost SQLite and SQLAlchemy about four
    times as much, which the bench showed to be no better overall.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    reset: list[dict[str, str]] = []
    for call_id, plan in state.calls.items():
        if plan.changes:
            key = tuple(sorted(plan.changes))
            groups.setdefault(key, []).append({"b_call_id": call_id, **plan.changes})
        if plan.reset_unknown_state:
            reset.append({"b_call_id": call_id})
    for rows in groups.values():
        await conn.execute(_UPDATE_CALL, rows)
    if reset:
        # These rows' changes hold no state (a later state would have cleared the
        # flag), so running this after the updates above changes nothing else.
        await conn.execute(_RESET_UNKNOWN_STATE, reset)


async def _write_verdicts(conn: AsyncConnection, state: BatchState) -> None:
    """Compliance rows; a rule's earlier verdict is deleted first unless none can exist."""
    stale: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    for call_id, plan in state.calls.items():
        if not plan.verdicts:
            continue
        if not plan.no_verdicts:
            stale.extend({"b_call_id": call_id, "b_rule": rule} for rule in plan.verdicts)
        rows.extend(plan.verdicts.values())
    if stale:
        await conn.execute(_DELETE_VERDICT, stale)
    if rows:
        await conn.execute(_INSERT_VERDICTS, rows)


async def _write_followups(conn: AsyncConnection, state: BatchState) -> None:
    """New follow-ups (an id already stored is logged and skipped), then attempt counts.

    An id already stored means the same follow-up was added twice; writing it
    again would be refused and would hold up the whole batch, so it is skipped.
    """
    if state.followups:
        existing = await stored_followups(conn, state.followups)
        for followup_id in existing:
            logger.warning("call_log.followup_duplicate", followup_id=followup_id,
                           call_id=state.followups[followup_id]["call_id"])
        rows = [row for fid, row in state.followups.items() if fid not in existing]
        if rows:
            await conn.execute(_INSERT_FOLLOWUPS, rows)
    if state.attempts:
        await conn.execute(_COUNT_ATTEMPT, state.attempts)
