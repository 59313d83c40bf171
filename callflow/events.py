"""What can happen to a call, as the engine hears it.

Names follow Asterisk's ARI events (``StasisStart``, ``ChannelDtmfReceived``,
``PlaybackFinished``…) so that a reader of an ARI trace and a reader of the
engine speak the same words. The controller translates raw ARI JSON into
these; the engine never sees JSON. ``at`` is the wall-clock time (epoch
seconds) the event happened: the clock is passed in, never read.

Every event is a frozen, slotted, keyword-only dataclass so that a call's
whole input can be logged and replayed (see ``callflow.replay``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every engine input."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisStart(Event):
    """A channel entered our Stasis app.

    For the caller this is the call arriving; ``created_at`` is the channel's
    ``creationtime`` because rings count from when the line started ringing,
    not from when the controller noticed. For an agent leg we originated,
    StasisStart means the agent's phone answered.
    """

    channel_id: str
    caller_number: str = ""
    caller_name: str = ""
    created_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHangupRequest(Event):
    """Someone asked for a channel to hang up: the first sign that it is going.

    Asterisk 22 sends it before anything else when a caller's phone hangs up
    (a BYE: no ``cause``; a CANCEL: 127), before the failed end of a prompt
    that was playing and before StasisEnd (traces 13, 15). Acting on it at
    once is what keeps an agent from being rung for a caller who has left.
    ``soft`` (cause 32) is the echo of a hang-up we asked for ourselves.
    """

    channel_id: str
    cause: int = 0
    soft: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisEnd(Event):
    """A channel left our app: a caller or an agent hung up (if no hang-up request said it first)."""

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDestroyed(Event):
    """A channel is gone; for an unanswered agent leg (cause 19/17) it is the only sign."""

    channel_id: str
    cause: int = 0
    cause_txt: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DialFailed(Event):
    """Originating an agent leg was refused (ARI 4xx/5xx, e.g. "Allocation failed")."""

    channel_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackFinished(Event):
    """A prompt we started has ended (``done``) or could not play (``failed``)."""

    playback_id: str
    state: str = "done"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelChecked(Event):
    """Whether a channel still exists (``GET /channels/{id}``: 404 means gone).

    The answer to ``GetChannel``: after a prompt failed, it tells a caller
    who is still there (a missing sound file: go on, logged) from one who
    hung up (end the call, ring nobody).
    """

    channel_id: str
    exists: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDtmfReceived(Event):
    """A key pressed on a channel (only raised in Stasis or dtmf_events bridges)."""

    channel_id: str
    digit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEnteredBridge(Event):
    """A channel is really in a bridge now: Asterisk's word, not our request's.

    A 2xx to addChannel does not prove it (trace 14: a caller hanging up can
    be refused with 400/422, or answered 204 and re-enter the bridge for a
    moment), and a channel with a prompt still playing enters only when the
    prompt ends. So "connected" is decided on this event, for both parties.
    """

    channel_id: str
    bridge_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelLeftBridge(Event):
    """A channel left a bridge: because we took it out, or because it is hanging up (trace 14)."""

    channel_id: str
    bridge_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeFailed(Event):
    """Asterisk refused to put channels in a bridge (addChannel 4xx/5xx, e.g. a caller who left).

    ``status`` is the HTTP status (400 "Channel not found", 422 "Channel not
    in Stasis application"…), 0 when no answer came.
    """

    bridge_id: str
    channel_ids: tuple[str, ...]
    status: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    """A timer the engine asked for has fired; a stale ``token`` is ignored."""

    name: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentPicked(Event):
    """The roster chose an agent for this call (answer to ``RequestAgent``)."""

    agent: str
    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NoAgentFree(Event):
    """The roster has no registered, idle agent for this call right now.

    For a caller waiting in a queue it also says where they stand (R5):
    ``ahead`` callers before them and the ``expected_wait_seconds`` for their
    turn; -1 when not known (e.g. a transfer target search).
    """

    ahead: int = -1
    expected_wait_seconds: float = -1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFinished(Event):
    """A recording we started (the caller saying their name, R3) is complete."""

    recording_name: str
    duration_seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFailed(Event):
    """A recording could not be made; the flow goes on without it."""

    recording_name: str
    cause: str = ""


# -- what agents ask for (web panel buttons or softphone key codes) -------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent(Event):
    """Base of an agent's request about the call they are on (R3, R4, R6, R7, R8)."""

    agent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldRequested(AgentEvent):
    """Put the caller on hold with a reason and an announced limit (R4, R7)."""

    reason: str = ""
    limit_seconds: float = 0.0  # 0: the configured default


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRequested(AgentEvent):
    """The agent is back: end the hold, caller and agent talk again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequested(AgentEvent):
    """Start a warm transfer: ask the caller's consent first (R6.1).

    ``target`` is an agent's name or ``dept:<department>``.
    """

    target: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentGiven(AgentEvent):
    """The agent confirms the caller agreed to the transfer (instead of key 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferCompleteRequested(AgentEvent):
    """The first agent hands the caller to a target who has accepted (R6.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferCancelRequested(AgentEvent):
    """Give up the transfer: the caller comes back to the first agent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetAnswered(AgentEvent):
    """The transfer target accepts (panel button or key 1 on their phone) — R6.3."""

    accepted: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveRequested(AgentEvent):
    """The agent ends their part of the call; the caller hears the closing (R8, R9)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndCallRequested(AgentEvent):
    """The agent ends the conversation from the panel (R8).

    With ``ask_more`` the caller first hears "请问您还有其他问题吗？" with the
    agent still on the line; a second request without ``ask_more`` (the caller
    has nothing more) closes: the caller hears the thanks, the agent is
    released, the line stays open until the caller hangs up (R9).
    ``ResumeRequested`` after the question means the caller had more to ask.
    """

    ask_more: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowUpPromised(AgentEvent):
    """The agent promised the caller a reply ("三个工作日后给您答复", R8).

    ``working_days`` 0 means the configured default; the due date is counted
    on the center's calendar from the day of the promise.
    """

    text: str
    working_days: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteAdded(AgentEvent):
    """What was said or asked for, for the log (R10)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerInfoUpdated(AgentEvent):
    """Caller name, purpose, person or department wanted, as the agent took them (R3)."""

    caller_name: str = ""
    purpose: str = ""
    wanted: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        StasisStart,
        ChannelHangupRequest,
        StasisEnd,
        ChannelDestroyed,
        ChannelChecked,
        DialFailed,
        PlaybackFinished,
        ChannelDtmfReceived,
        ChannelEnteredBridge,
        ChannelLeftBridge,
        BridgeFailed,
        TimerFired,
        AgentPicked,
        NoAgentFree,
        RecordingFinished,
        RecordingFailed,
        HoldRequested,
        ResumeRequested,
        TransferRequested,
        ConsentGiven,
        TransferCompleteRequested,
        TransferCancelRequested,
        TargetAnswered,
        LeaveRequested,
        EndCallRequested,
        FollowUpPromised,
        NoteAdded,
        CallerInfoUpdated,
    )
}


#: The signs that a channel is going, in the order Asterisk sends them; only the first counts.
GONE_EVENTS: tuple[type[Event], ...] = (ChannelHangupRequest, StasisEnd, ChannelDestroyed)
