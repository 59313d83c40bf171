"""What the simulated people do: callers on SIP phones and agents on baresip.

The simulator plays Asterisk; these scripts play the humans around it. A
``CallerScript`` says when a caller hangs up or presses keys, an
``AgentScript`` how an agent's phone reacts when rung (like the recorded
baresip phones: agent1 answers at once, agent2 rings until told). What the
caller experienced is written down as ``Heard`` entries so tests can check
the etiquette from the caller's side (never silence, a greeting after the
answer, who hung up first).

All timing uses ``loop.call_later``: no task or thread per call.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AgentScript:
    """How a simulated agent's SIP phone behaves when rung."""

    answer_after: float | None = 0.5  # seconds of ringing before answering; None = never answers
    hang_up_after: float | None = None  # seconds after answering that the agent hangs up (None = waits for the other side)
    decline_after: float | None = None  # rejects the call (cause 17, Dial BUSY) after this many seconds of ringing


@dataclass(frozen=True)
class CallerScript:
    """How a simulated caller (or a customer reached through the trunk) behaves.

    Keys: ``dtmf`` presses single keys at fixed times after the answer;
    ``keys_at`` types strings of keys at fixed times (``"13800138000#"``,
    one key every ``key_interval``); ``keys_on`` answers prompts: when the
    prompt named by a key finishes playing to the caller, the keys are typed
    ``key_delay`` later. A prompt is named by its media's last path segment
    (``menu-main`` for ``sound:liyi/menu-main``) or by the whole media URI.
    A value that is a tuple gives the keys for the 1st, 2nd, ... time that
    prompt is heard, and nothing once exhausted (``("9", "2")``: a wrong key,
    then the right one after the menu is repeated).

    Recording (R3, "say your name after the tone"): once a recording of the
    caller's channel starts capturing (after the beep), the caller speaks for
    ``says_name_seconds`` (None: stays silent) and then presses
    ``ends_name_with`` (None: presses nothing and waits for the service's
    limit: ``maxDurationSeconds`` or, with ``maxSilenceSeconds``, the silence).
    """

    hang_up_while_ringing_after: float | None = None  # hangs up this long after the call started if not yet answered
    hang_up_after_connected: float | None = None  # hangs up this long after being bridged with an agent
    hang_up_after_prompt: tuple[str, float] | None = None  # (media substring, delay): hangs up that long after that prompt finished
    dtmf: tuple[tuple[float, str], ...] = ()  # (seconds after answer, digit)
    keys_at: tuple[tuple[float, str], ...] = ()  # (seconds after answer, keys typed one per key_interval)
    keys_on: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)  # prompt name -> keys typed after it
    key_delay: float = 0.3  # reaction time after a prompt in keys_on finished
    key_interval: float = 0.2  # between two keys of one string
    says_name_seconds: float | None = 1.5  # talking into a recording; None = silent
    ends_name_with: str | None = "#"  # key pressed once done talking; None = waits for the recording to end
    max_seconds: float = 120.0  # safety: hangs up anyway after this long


@dataclass(frozen=True)
class CustomerScript:
    """A customer's phone reached through the trunk (``PJSIP/<number>@trunk``, callbacks R8).

    ``answer_after`` seconds of ringing before answering (None: never; the
    originate ``timeout`` then ends the ringing with cause 19); ``busy``:
    the line is busy (cause 17, Dial BUSY, no ringing); ``hang_up_after``
    seconds after answering. Once answered the customer behaves like a caller
    following ``script`` (keys, names, hang-ups after prompts or agents).
    """

    answer_after: float | None = 1.0
    hang_up_after: float | None = None
    busy: bool = False
    script: CallerScript = field(default_factory=CallerScript)


@dataclass
class Heard:
    """One thing the caller experienced, in order."""

    at: float  # time.time()
    # "ringing" | "early-media" | "answered" | "prompt" | "prompt-failed" | "music-start" | "music-stop" |
    # "connected" | "agent-left" | "dtmf" (a key another channel pressed, passed through the bridge) |
    # "beep" (a recording's tone) | "recording-started" | "recording-stopped" (detail: recording name) |
    # "hangup-by-caller" | "hangup-by-service". A played stored recording is a "prompt" with detail
    # "recording:<name>". A bridge's announcement is a
    # "prompt" for each caller in the bridge (also one who enters while it plays); music is the channel's own
    # (moh or hold) or its bridge's. Nothing is noted after the caller's own hangup.
    what: str
    detail: str = ""  # media uri for prompts, agent name for connected/agent-left


@dataclass
class AgentLeg:
    """One time an agent's phone was rung: for how long, and how it ended."""

    agent: str
    channel_id: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    # "ringing" -> "answered" -> "agent-hung-up" | "service-hung-up";
    # or "no-answer" (originate timeout, cause 19), "declined" (cause 17),
    # "cancelled" (the service hung up the ringing leg)
    outcome: str = "ringing"
    # what the agent heard on this leg: "prompt" (channel or bridge playback, detail = media uri)
    heard: list[Heard] = field(default_factory=list)

    @property
    def ring_seconds(self) -> float:
        """How long the phone rang before it was answered or the ringing stopped."""
        end = self.answered_at or self.ended_at or time.time()
        return end - self.started_at


class CallerActions(Protocol):
    """What a caller can do to the simulated Asterisk (implemented by ``AsteriskSimulator``)."""

    def caller_hangs_up(self, call: SimCall) -> None: ...

    def caller_sends_dtmf(self, call: SimCall, digit: str) -> None: ...


class SimCall:
    """One simulated inbound call, seen from the caller's side."""

    def __init__(
        self,
        *,
        channel_id: str,
        caller_number: str,
        caller_name: str,
        script: CallerScript,
        actions: CallerActions,
        loop: asyncio.AbstractEventLoop,
        kind: str = "caller",
    ) -> None:
        self.channel_id = channel_id
        self.kind = kind  # "caller" (inbound) or "customer" (reached through the trunk)
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.script = script
        self.heard: list[Heard] = []
        self.ended = asyncio.Event()
        self.hung_up_by: str | None = None
        self.refused = False  # the dialplan could not hand the call to the app (STASISSTATUS=FAILED)
        self.started_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._actions = actions
        self._loop = loop
        self._timers: list[asyncio.TimerHandle] = []
        self._sources: set[str] = set()
        self._audible_log: list[tuple[float, bool]] = []
        self._agents: set[str] = set()
        self._music = False
        self._connected_once = False
        self.pressed: list[tuple[float, str]] = []  # the keys this person pressed (time.time(), digit)
        self.recordings: list[str] = []  # names of the recordings this person was asked to speak into
        self._prompt_plays: dict[str, int] = {}
        self._name_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"SimCall({self.channel_id!r}, {self.caller_number!r}, hung_up_by={self.hung_up_by!r})"

    # ---- what the caller experienced -------------------------------------------------

    def silences(self, min_seconds: float) -> list[tuple[float, float]]:
        """Periods after the answer and before the hangup when the caller heard nothing.

        Nothing means: no prompt playing to them, no music on hold, and not in a
        bridge with an agent who is still there.
        """
        if self.answered_at is None:
            return []
        start, end = self.answered_at, self.ended_at or time.time()
        audible = False
        later: list[tuple[float, bool]] = []
        for at, state in self._audible_log:
            if at <= start:
                audible = state
            else:
                later.append((at, state))
        out: list[tuple[float, float]] = []
        silent_from = None if audible else start
        for at, state in later:
            if at >= end:
                break
            if state and silent_from is not None:
                out.append((silent_from, at))
                silent_from = None
            elif not state and silent_from is None:
                silent_from = at
        if silent_from is not None:
            out.append((silent_from, end))
        return [(a, b) for a, b in out if b - a >= min_seconds]

    def whats(self) -> list[str]:
        """The kinds of things heard, in order (handy in assertions)."""
        return [h.what for h in self.heard]

    # ---- hooks called by the simulator ----------------------------------------------

    def note(self, what: str, detail: str = "") -> None:
        self.heard.append(Heard(time.time(), what, detail))

    def set_audible(self, source: str, on: bool) -> None:
        """Mark one sound source (a playback, music, an agent) as reaching the caller or not."""
        before = bool(self._sources)
        if on:
            self._sources.add(source)
        else:
            self._sources.discard(source)
        after = bool(self._sources)
        if before != after:
            self._audible_log.append((time.time(), after))

    def set_music(self, on: bool) -> None:
        if on != self._music:
            self._music = on
            self.note("music-start" if on else "music-stop")
            self.set_audible("music", on)

    def set_agents(self, agents: set[str]) -> None:
        """The agents now bridged with the caller; notes who joined and who left."""
        for agent in sorted(agents - self._agents):
            self.note("connected", agent)
            self.set_audible(f"agent:{agent}", True)
            if not self._connected_once:
                self._connected_once = True
                if self.script.hang_up_after_connected is not None:
                    self._later(self.script.hang_up_after_connected, self._hang_up)
        for agent in sorted(self._agents - agents):
            self.note("agent-left", agent)
            self.set_audible(f"agent:{agent}", False)
        self._agents = set(agents)

    def started(self) -> None:
        if self.script.max_seconds is not None:
            self._later(self.script.max_seconds, self._hang_up)
        if self.script.hang_up_while_ringing_after is not None:
            self._later(self.script.hang_up_while_ringing_after, self._hang_up_if_unanswered)

    def answered(self) -> None:
        self.answered_at = time.time()
        self.note("answered")
        for delay, digit in self.script.dtmf:
            self._later(delay, functools.partial(self._send_dtmf, digit))
        for delay, keys in self.script.keys_at:
            self._type_keys(keys, delay)

    def prompt_started(self, playback_id: str, media: str, early: bool) -> None:
        self.note("early-media" if early else "prompt", media)
        self.set_audible(f"playback:{playback_id}", True)

    def prompt_failed(self, media: str) -> None:
        self.note("prompt-failed", media)

    def prompt_stopped(self, playback_id: str, media: str, completed: bool) -> None:
        self.set_audible(f"playback:{playback_id}", False)
        rule = self.script.hang_up_after_prompt
        if completed and rule is not None and rule[0] in media:
            self._later(rule[1], self._hang_up)
        if completed:
            keys = self._keys_for(media)
            if keys:
                self._type_keys(keys, self.script.key_delay)

    def _keys_for(self, media: str) -> str:
        """The keys ``keys_on`` says to type after ``media`` played (counting how often it played)."""
        name = media.partition(":")[2].rsplit("/", 1)[-1]
        for key in (media, name):
            if key in self.script.keys_on:
                answer = self.script.keys_on[key]
                nth = self._prompt_plays.get(key, 0)
                self._prompt_plays[key] = nth + 1
                if isinstance(answer, str):
                    return answer
                return answer[nth] if nth < len(answer) else ""
        return ""

    def recording_beep(self, name: str) -> None:
        """The recording's tone plays to this person (the recording counts as sound from here on)."""
        if not self.ended.is_set():
            self.note("beep", "sound:beep")
            self.set_audible(f"recording:{name}", True)

    def recording_started(self, name: str) -> None:
        """Capture began: the person talks for ``says_name_seconds``, then presses ``ends_name_with``.

        The time spent speaking into a recording is not a silence: the
        service asked for it and is listening.
        """
        if self.ended.is_set():
            return
        self.recordings.append(name)
        self.note("recording-started", name)
        self.set_audible(f"recording:{name}", True)
        talk, key = self.script.says_name_seconds, self.script.ends_name_with
        if talk is not None and key:
            self._name_timer = self._loop.call_later(max(0.0, talk), functools.partial(self._send_dtmf, key))
            self._timers.append(self._name_timer)

    def recording_stopped(self, name: str) -> None:
        if self._name_timer is not None:
            self._name_timer.cancel()
            self._name_timer = None
        if self.ended.is_set():
            return
        self.note("recording-stopped", name)
        self.set_audible(f"recording:{name}", False)

    def hang_up_in(self, delay: float) -> None:
        """Hang up ``delay`` seconds from now (unless the call ends first)."""
        self._later(delay, self._hang_up)

    def finish(self, by: str, detail: str = "") -> None:
        """The call is over; ``by`` is "caller" or "service"."""
        if self.ended.is_set():
            return
        self.hung_up_by = by
        self.note(f"hangup-by-{by}", detail)
        self.ended_at = time.time()
        for source in list(self._sources):
            self.set_audible(source, False)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.ended.set()

    # ---- the caller's own actions ----------------------------------------------------

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._timers.append(self._loop.call_later(max(0.0, delay), action))

    def _hang_up(self) -> None:
        if not self.ended.is_set():
            self._actions.caller_hangs_up(self)

    def _hang_up_if_unanswered(self) -> None:
        if self.answered_at is None:
            self._hang_up()

    def _send_dtmf(self, digit: str) -> None:
        if not self.ended.is_set():
            self.pressed.append((time.time(), digit))
            self._actions.caller_sends_dtmf(self, digit)

    def _type_keys(self, keys: str, delay: float) -> None:
        """Type ``keys`` one by one, the first after ``delay``, then one per ``key_interval``."""
        for i, digit in enumerate(keys):
            self._later(delay + i * self.script.key_interval, functools.partial(self._send_dtmf, digit))

