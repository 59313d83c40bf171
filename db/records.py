"""What the call log gives back: plain frozen values, never ORM objects.

Why not ORM objects: readers (CLI, web, replay) run long after the session
that loaded the rows has closed, and must not be able to write by accident.
All datetimes are timezone-aware UTC. Follow-ups are the exception the
contract with the engine and the panel asks for: their instants are epoch
seconds (what the engine's clock gives) and their due date a plain date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple


class AmbiguousCallId(LookupError):
    """A call-id prefix matches more than one call; ``matches`` lists some of them."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__(f"call id prefix {prefix!r} matches several calls: {', '.join(matches)}")
        self.prefix = prefix
        self.matches = matches


class AmbiguousFollowUpId(LookupError):
    """A follow-up id prefix matches more than one follow-up; ``matches`` lists some."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__(
            f"follow-up id prefix {prefix!r} matches several follow-ups: {', '.join(matches)}"
        )
        self.prefix = prefix
        self.matches = matches


class ComplianceMark(NamedTuple):
    """One rule's verdict on one call (R12); unpacks as ``(status, evidence)``."""

    status: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    """One entry of a call's timeline, numbered by ``seq`` in the order it was appended."""

    seq: int
    at: datetime
    source: str
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSummary:
    """The call's own fields and each rule's status: enough for a list of calls.

    ``compliance`` maps rule ("R1"…) to status ("kept", "broken",
    "not_applicable"); it is empty until the call has ended.
    """

    id: str
    channel_id: str | None
    caller_number: str | None
    caller_name: str | None
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    first_hangup: str | None
    agent: str | None
    outcome: str | None
    state: str | None
    compliance: dict[str, str] = field(default_factory=dict)
    queue: str | None = None  # the queue waited in ("" = the general queue); None: never queued
    handled_by: str = "liyi"  # "fallback": served by the dialplan while liyi was down (issue 9)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """A whole call: its fields, its timeline (ordered by seq) and its compliance record."""

    id: str
    channel_id: str | None
    caller_number: str | None
    caller_name: str | None
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    first_hangup: str | None
    agent: str | None
    outcome: str | None
    state: str | None
    summary: dict[str, Any] | None
    timeline: tuple[TimelineEntry, ...]
    compliance: dict[str, ComplianceMark]
    # Promises made and callbacks asked for on this call (R8), oldest first.
    followups: tuple[FollowUp, ...] = ()
    handled_by: str = "liyi"  # "fallback": served by the dialplan while liyi was down (issue 9)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    """Last known state of an agent's phone."""

    name: str
    endpoint: str
    registered: bool
    device_state: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """What an import of fallback calls did: written now, already in the log (never twice)."""

    imported: int
    already: int


FOLLOWUP_KINDS = frozenset({"promise", "callback"})
FOLLOWUP_STATES = frozenset({"open", "done"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowUp:
    """A promise or callback request to keep (R8), as the call log holds it.

    ``owner`` is the agent who promised, or "" for a callback any agent of
    ``queue`` may place. ``state`` is what is stored ("open" or "done");
    :meth:`status` adds "overdue", which depends on the day it is asked.
    Instants are epoch seconds; ``due`` is a day on the center's calendar.
    """

    id: str
    call_id: str
    kind: str
    text: str
    number: str
    owner: str
    queue: str
    created_at: float
    due: date
    state: str
    done_at: float | None = None
    done_by: str | None = None
    overdue_flagged_at: float | None = None
    attempts: int = 0
    last_attempt_call_id: str | None = None

    def status(self, today: date) -> str:
        """"done", "overdue" (open and ``today`` is past the due day) or "open"."""
        if self.state == "done":
            return "done"
        return "overdue" if today > self.due else "open"
