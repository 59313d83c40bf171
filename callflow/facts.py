"""What happened on a call, as the evidence the compliance record is built from.

The engine fills this in as the call goes; it holds times and outcomes, not
decisions. Keeping evidence apart from the state machine lets compliance be
scored (and re-scored after a rule changes) from the same facts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class AgentOffer:
    """One attempt to ring an agent's phone for this call."""

    agent: str
    leg: str
    rung_at: float
    ended_at: float | None = None
    outcome: str = "ringing"  # answered | no-answer | declined | unreachable | caller-hung-up


@dataclass(slots=True)
class CallFacts:
    call_id: str
    caller_channel: str = ""
    caller_number: str = ""
    caller_name: str = ""
    created_at: float | None = None  # the channel's creation: first ring
    seen_at: float | None = None  # when the controller heard of the call
    answered_at: float | None = None
    greeting_prompt: str | None = None
    greeting_started_at: float | None = None
    greeting_finished_at: float | None = None
    greeting_result: str | None = None  # done | failed | timeout | caller-hung-up
    queued_at: float | None = None  # music started, agents being rung
    offers: list[AgentOffer] = field(default_factory=list)
    connected_at: float | None = None
    agent: str | None = None
    agent_left_at: float | None = None
    closing_started_at: float | None = None
    first_hangup: str | None = None  # caller | agent | service
    idle_released_at: float | None = None
    ended_at: float | None = None
    service_hung_up_caller: bool = False
    silent_gaps: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
