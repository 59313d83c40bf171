"""What the engine asks the outside world to do.

Each command maps to one ARI request (or, for ``RequestAgent`` and
``ReleaseAgent``, to the agent roster; for ``StartTimer`` to the event loop;
for ``Log`` to the call log). The engine decides; the controller only
executes. Hanging up a caller is deliberately not expressible except as
``ReleaseIdleLine``, the one R9 exception, so the invariant "the service never
hangs up a caller" can be checked by looking at command types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Base of every engine output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ring(Command):
    """Send ring indication (SIP 180) to the caller before we answer (R1)."""

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Command):
    """Answer the caller's channel."""

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Play(Command):
    """Play prompts (``sound:liyi/...``) to a channel; ends with PlaybackFinished."""

    channel_id: str
    playback_id: str
    media: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StartMusic(Command):
    """Music on hold for a channel, so a waiting caller never hears silence."""

    channel_id: str
    moh_class: str = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class StopMusic(Command):
    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial(Command):
    """Originate a leg to an agent's phone into our app with a channel id we chose."""

    channel_id: str
    endpoint: str
    caller_id: str
    app_args: str
    ring_seconds: float = 0.0  # how long Asterisk lets it ring; 0: the agent rings (R1) + margin


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(Command):
    """Hang up an agent leg. Never used on a caller channel."""

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseIdleLine(Command):
    """Release a caller line left open and silent after closing (the R9 exception)."""

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetChannel(Command):
    """Does a channel still exist? ARI ``GET /channels/{id}``; answered by ``ChannelChecked``.

    Used when a prompt the flow waits for failed: a failed playback is what a
    caller who hung up leaves behind (trace 13), and also what a missing sound
    file gives while the caller is still listening (trace 08). Only Asterisk
    can tell the two apart, and the flow must not move on (music, agents) for
    a caller who is gone.
    """

    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridge(Command):
    """Create a mixing bridge (with DTMF events) if needed and put channels in it."""

    bridge_id: str
    channel_ids: tuple[str, ...]
    absorb_dtmf: tuple[str, ...] = ()  # agents' key codes must not reach the caller


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbridge(Command):
    """Take a channel out of a bridge (it stays in our app: it can hear prompts and music)."""

    bridge_id: str
    channel_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopPlayback(Command):
    playback_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyAgent(Command):
    """Tell an agent's panel something: state, countdown, script line (no effect on the call)."""

    agent: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DestroyBridge(Command):
    bridge_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVar(Command):
    """Keep call state on the channel itself so a restarted controller can recover."""

    channel_id: str
    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTimer(Command):
    """Fire ``TimerFired(name, token)`` at ``at`` (epoch seconds); replaces any same-named timer."""

    name: str
    token: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer(Command):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAgent(Command):
    """Ask the roster for the longest-idle free agent, skipping ones already tried.

    ``only``, when not empty, limits the choice to those agents: one named
    agent, or a department's agents, for a warm transfer (R6).
    """

    skip: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    # A caller sent back to the queue (their agent left, or a transfer failed) waits at its
    # head: the next free agent is theirs before anyone who queued later (R6.5).
    first_in_line: bool = False
    # The queue the caller waits in (a department's name, "" = the general queue), so the
    # controller keeps first-come-first-served order and can tell the caller their place (R5).
    queue: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseAgent(Command):
    """Give an agent back to the roster (idle from now on)."""

    agent: str
    outcome: str
    wrap_up_seconds: float = 0.0  # after a conversation: no new call for the agent until then
    served: bool = True  # False: answered, but the caller never reached them (keeps their place)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record(Command):
    """Record the caller (their name, R3) into a stored recording named ``name``.

    Ends with ``RecordingFinished``/``RecordingFailed``; ARI
    ``POST /channels/{channelId}/record``.
    """

    channel_id: str
    name: str
    max_seconds: float
    beep: bool = True
    terminate_on: str = "#"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFollowUp(Command):
    """A promise or a callback request to keep (R8): the call log stores it with its due date.

    ``kind`` is "promise" (an agent's reply time) or "callback" (the caller
    left a number in the queue). ``due`` is an ISO date (a working day).
    ``owner`` is the agent who promised, or "" for a callback any agent of
    ``queue`` may place.
    """

    followup_id: str
    kind: str
    text: str
    due: str
    owner: str
    number: str
    created_at: float
    queue: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Log(Command):
    """One entry of the call's timeline: a state change and its evidence."""

    at: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(Command):
    """The call is over: who hung up first and the compliance record (R9, R12)."""

    at: float
    first_hangup: str
    compliance: dict[str, dict[str, Any]]
