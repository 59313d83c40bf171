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
class Joining:
    """Channels we put in the bridge and wait to see there (ChannelEnteredBridge), and why.

    ``purpose`` is "connect" (the first agent), "handoff" (a transfer target)
    or "resume" (back with the agent after a hold or a failed transfer).
    """

    purpose: str
    channels: tuple[str, ...]
    since: float


@dataclass(slots=True)
class HoldRecord:
    """One hold (R4, R7): why, the announced limit, and what the caller lived through.

    A hold has one or more periods: the first, and one more each time the
    caller agreed (key 1) to wait another limit. ``longest_overrun_seconds``
    is how far the longest period went past limit + grace, not counting the
    time the limit question itself took to play (negative: inside the limit).
    """

    agent: str
    reason: str
    limit_seconds: float
    started_at: float
    for_transfer: bool = False
    periods: list[float] = field(default_factory=list)  # each period's start
    extended_at: list[float] = field(default_factory=list)  # the caller's consent to wait more
    reassurances: int = 0
    agent_alerted_at: list[float] = field(default_factory=list)
    limit_reached_at: list[float] = field(default_factory=list)
    ended_at: float | None = None
    outcome: str = "on-hold"  # resumed | returned-by-caller | returned-no-answer | agent-left |
    #                           caller-hung-up | transferred | transfer-failed | closing
    silent_seconds: float = 0.0
    longest_overrun_seconds: float | None = None
    limit_kept: bool | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else round(self.ended_at - self.started_at, 3)


@dataclass(slots=True)
class TransferRecord:
    """One warm transfer (R6): consent, target, ring time, acceptance, outcome."""

    first_agent: str
    target: str  # as requested: an agent's name or dept:<name>
    department: str | None
    reason: str
    requested_at: float
    consent: str | None = None  # caller-key | agent-confirmed | refused | no-answer
    consent_at: float | None = None
    target_agent: str | None = None
    leg: str | None = None
    rung_at: float | None = None
    answered_at: float | None = None
    accepted: bool | None = None
    accepted_at: float | None = None
    handoff_at: float | None = None
    ended_at: float | None = None
    outcome: str = "pending"  # completed | consent-refused | no-answer | declined | unreachable |
    #   target-unavailable | target-hung-up | not-accepted | cancelled | hold-limit |
    #   caller-hung-up | first-agent-left
    caller_returned_to: str | None = None  # first-agent | queue | target
    apology: str | None = None
    # the handoff as Asterisk reported it (ChannelEnteredBridge), and the caller's music
    handoff_requested_at: float | None = None
    caller_in_bridge_at: float | None = None
    target_in_bridge_at: float | None = None
    caller_music_stopped_at: float | None = None  # music stopped while the handoff was under way

    @property
    def caller_alone_seconds(self) -> float:
        """How long the caller sat in the bridge without the target and without music.

        From the caller entering the bridge (or their music stopping, if
        later) to the target entering it (or the handoff ending); 0 when
        music played until both were in. Scored by R4 and R6.
        """
        if self.caller_in_bridge_at is None or self.caller_music_stopped_at is None:
            return 0.0
        end = self.target_in_bridge_at if self.target_in_bridge_at is not None else self.ended_at
        if end is None:
            return 0.0
        silent_from = max(self.caller_in_bridge_at, self.caller_music_stopped_at)
        return round(max(0.0, end - silent_from), 3)

    @property
    def ring_seconds(self) -> float | None:
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return None if self.rung_at is None or end is None else round(end - self.rung_at, 3)


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
    agents_talked: list[str] = field(default_factory=list)  # everyone who was bridged with the caller
    stated_name: str = ""  # R3, as the agent took it (CallerInfoUpdated)
    purpose: str = ""
    wanted: str = ""
    info_updated_at: float | None = None
    requeued: bool = False  # sent back to the queue: waits at its head
    recovered_at: float | None = None  # taken back by a restarted controller (what came before unseen)
    notes: list[tuple[float, str, str]] = field(default_factory=list)  # (at, agent, text)
    holds: list[HoldRecord] = field(default_factory=list)
    transfers: list[TransferRecord] = field(default_factory=list)
    # the call flow (issue 4): which flow, the steps walked, the caller's menu choices
    flow: str = ""  # open | closed
    steps: list[tuple[float, str]] = field(default_factory=list)
    menu_choices: list[dict[str, Any]] = field(default_factory=list)
    name_recording: str | None = None  # R3: the caller saying their name, for R6 targets
    name_recording_seconds: float | None = None
    # queue (R5)
    queue: str | None = None  # the department queue ("" = any agent) once queued
    queue_announcements: list[tuple[float, str]] = field(default_factory=list)  # (at, prompt)
    announce_every_seconds: float | None = None
    max_wait_seconds: float | None = None
    callback_offers: list[float] = field(default_factory=list)
    callback_choices: list[tuple[float, str]] = field(default_factory=list)  # (at, choice)
    callback: dict[str, Any] | None = None  # number, source, followup_id, due, at
    queue_left_at: float | None = None  # connected, or left a callback number
    # closing and promises (R8)
    closing_reason: str | None = None
    closing_question_at: float | None = None
    closing_prompts_played: list[str] = field(default_factory=list)
    promises: list[dict[str, Any]] = field(default_factory=list)  # followup_id, text, due, owner

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
