"""What the call log gives back: plain frozen values, never ORM objects.

Why not ORM objects: readers (CLI, web, replay) run long after the session
that loaded the rows has closed, and must not be able to write by accident.
All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple


class AmbiguousCallId(LookupError):
    """A call-id prefix matches more than one call; ``matches`` lists some of them."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__(f"call id prefix {prefix!r} matches several calls: {', '.join(matches)}")
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


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    """Last known state of an agent's phone."""

    name: str
    endpoint: str
    registered: bool
    device_state: str
    updated_at: datetime
