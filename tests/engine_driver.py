"""A deterministic simulated world around ``CallEngine``s, for tests.

Why: the engine is pure — events in, commands out — so a test needs something
to play Asterisk, the roster and the clock around it. ``World`` is that
something, and nothing more: a fake clock, a queue of timed happenings, the
engines' pending timers (by name, the latest token wins), a ``Roster`` that
answers ``RequestAgent``, and scripted phones (the caller hangs up at *t*, an
agent answers after *x* s, declines with cause 17, is unreachable…). Every
command is recorded with the time it was issued, every event with the time it
was delivered, and the world keeps track of what each caller is hearing, so a
test can say "the caller never heard silence while waiting".

How the phones behave follows the real Asterisk 22 traces in
``tests/traces/``: a caller hang-up is ChannelHangupRequest, then
PlaybackFinished ``failed`` for a prompt that was playing, then StasisEnd,
and no ChannelDestroyed (the default subscription, traces 11, 13); an agent
who declines is ChannelHangupRequest cause 17 then ChannelDestroyed cause 17
(trace 04 C); an agent's phone that rings out is ChannelDestroyed cause 19
alone (04 B); an unregistered agent is an originate failure, ``DialFailed``
(04 A); an agent who hangs up is ChannelHangupRequest, StasisEnd, then
ChannelDestroyed cause 16 (03); a channel we hang up (DELETE) answers with
ChannelHangupRequest cause 32 soft first (15); a prompt that cannot play ends
``failed``; a prompt with a bad URI never ends (08); a stopped prompt ends
``done``; ``GetChannel`` is answered at once, as the controller does, with
whether the channel is still there. Music on hold has no ARI events, so it
is tracked from the commands. Bridges are tracked by membership (Bridge adds,
Unbridge removes, a hung-up channel leaves), so a held caller is out of the
bridge while the agent stays in it.

Agents act by ``agent_does`` (a panel request: ``HoldRequested``,
``TargetAnswered``…) and ``agent_keys`` (digits typed on their phone: key
codes, or 1/2 to accept or decline a transfer). The world remembers, on its
own, which transfer target really answered and accepted, so a test can say
"the caller was never bridged with a target who had not accepted".

Usage::

    world = World(config, agents={"agent1": AgentBehaviour("answer", after=4)})
    world.add_call("c1", created_at=T0, hangs_up_at=T0 + 120)
    world.run(until=T0 + 200)
    world.commands("c1", c.Bridge)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from callflow import commands as c
from callflow import events as e
from callflow.config import MEDIA_PREFIX, CallFlowConfig
from callflow.engine import CallEngine
from callflow.queueing import WaitingLine
from callflow.roster import Roster

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAUSES = {16: "Normal Clearing", 17: "User busy", 19: "User alerting, no answer"}
MAX_STEPS = 200_000  # a run longer than this is an engine or harness loop, not a call
CURRENT = "<current>"  # in agent_does/agent_keys: whoever is the call's agent at that moment
TARGET = "<target>"  # in agent_does/agent_keys: the latest transfer's target agent at that moment


def local_epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
                second: float = 0.0) -> float:
    """Epoch seconds of a wall-clock moment at the center (Asia/Shanghai)."""
    whole = int(second)
    moment = dt.datetime(year, month, day, hour, minute, whole, tzinfo=SHANGHAI)
    return moment.timestamp() + (second - whole)


T0 = local_epoch(2026, 3, 4, 10, 0)  # a Wednesday morning: open, "早上好"

CommandT = TypeVar("CommandT", bound=c.Command)
EventT = TypeVar("EventT", bound=e.Event)


@dataclass(frozen=True, slots=True)
class AgentBehaviour:
    """What an agent's phone does when we ring it.

    ``action``: ``answer`` (after ``after`` s), ``never`` (rings until we stop
    it), ``decline`` (rejects after ``after`` s, cause 17), ``ring-out``
    (Asterisk's originate timeout ends it after ``after`` s, cause 19) or
    ``unreachable`` (originate refused at once). ``hangs_up_after``: once answered, the agent
    hangs up after this many seconds; ``None`` waits for the caller. As a transfer target,
    ``verdict_after`` s after answering the agent gives ``verdict``: ``key-1`` / ``panel-yes``
    accept, ``key-2`` / ``panel-no`` decline; ``None`` does nothing (tests act by hand).
    """

    action: str = "answer"
    after: float = 2.0
    hangs_up_after: float | None = None
    verdict_after: float | None = None
    verdict: str = "key-1"


@dataclass(frozen=True, slots=True)
class PromptBehaviour:
    """How one prompt plays: its length and how it ends (done | failed | never)."""

    seconds: float = 2.0
    result: str = "done"


@dataclass(frozen=True, slots=True)
class Issued:
    """A command and when (and for which call) the engine issued it."""

    at: float
    call_id: str
    command: c.Command


@dataclass(frozen=True, slots=True)
class Delivered:
    """An event and when it was fed to which call's engine."""

    at: float
    call_id: str
    event: e.Event


@dataclass(slots=True)
class Leg:
    """An agent leg as the simulated Asterisk sees it."""

    call_id: str
    channel_id: str
    agent: str
    dialed_at: float
    alive: bool = True
    in_stasis: bool = False
    hung_up_by_service_at: float | None = None
    accepted: bool = False  # a transfer target who pressed 1 or accepted in the panel

    @property
    def is_target(self) -> bool:
        """A warm-transfer target's leg (``<call>-t1``), not a queue offer (``<call>-a1``)."""
        return self.channel_id.rsplit("-", 1)[-1].startswith("t")


@dataclass(slots=True)
class CallerLine:
    """The caller's side of one call: is the channel there, and what do they hear."""

    call_id: str
    channel_id: str
    created_at: float
    alive: bool = True
    started: bool = False  # StasisStart delivered
    rung: bool = False
    answered: bool = False
    music: bool = False
    prompt: str | None = None  # playback id now playing
    bridged_with: str | None = None  # agent leg in the bridge with the caller
    agent_leg: str | None = None  # the leg last bridged with the caller: who they talk with
    first_hangup: str | None = None  # who really hung up first: caller | agent | service
    variables: dict[str, str] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)


class World:
    """One simulated call center: engines, roster, phones and a fake clock."""

    def __init__(
        self,
        config: CallFlowConfig,
        *,
        agents: Mapping[str, AgentBehaviour | Sequence[AgentBehaviour]] | None = None,
        prompts: Mapping[str, PromptBehaviour] | None = None,
        default_prompt: PromptBehaviour = PromptBehaviour(),
        registered: Sequence[str] | None = None,
        start: float = T0,
        echo_hangups: bool = False,
        deliver_stale_timers: bool = False,
    ) -> None:
        self.config = config
        self.now = start
        self.agent_behaviours: dict[str, list[AgentBehaviour]] = {
            name: [b] if isinstance(b, AgentBehaviour) else list(b)
            for name, b in (agents or {}).items()
        }
        roster_agents = [(a.name, a.endpoint) for a in config.agents] or [
            (name, f"PJSIP/{name}") for name in self.agent_behaviours
        ]
        self.roster = Roster(roster_agents, assume_registered=registered is None, now=start)
        for name in registered or ():
            agent = self.roster.get(name)
            assert agent is not None, f"unknown agent {name}"
            self.roster.phone_state(agent.endpoint, registered=True, device_state="NOT_INUSE")
        self.prompts = dict(prompts or {})
        self.default_prompt = default_prompt
        self.echo_hangups = echo_hangups
        self.deliver_stale_timers = deliver_stale_timers

        self.engines: dict[str, CallEngine] = {}
        self.lines: dict[str, CallerLine] = {}
        self.legs: dict[str, Leg] = {}
        self.issued: list[Issued] = []
        self.delivered: list[Delivered] = []
        self.bridge_checks: list[str] = []  # problems seen when a Bridge was issued
        self.bridges: dict[str, list[str]] = {}  # bridge id -> channels in it
        self._stopped: set[str] = set()  # playbacks stopped by StopPlayback
        self._owner: dict[str, str] = {}  # channel or playback id -> call id
        self._timers: dict[tuple[str, str], int] = {}
        self._dials: dict[str, int] = {}  # agent -> times rung
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.line = WaitingLine()  # as the controller keeps it: first come, first served (R5)
        self.recordings: list[tuple[float, str, c.Record]] = []
        self.followups: list[c.RecordFollowUp] = []
        self.name_seconds: float | None = 2.0  # how long a caller takes to say their name
        self.channel_checks: list[tuple[float, str, str]] = []  # GetChannel: when, call, channel

    # -- scripting ----------------------------------------------------------

    def add_call(
        self,
        call_id: str = "c1",
        *,
        created_at: float | None = None,
        stasis_delay: float = 0.0,
        hangs_up_at: float | None = None,
        caller_number: str = "13800138000",
        caller_name: str = "",
    ) -> CallEngine:
        """A caller dials in: the channel is created at ``created_at`` and reaches us later."""
        created = self.now if created_at is None else created_at
        channel = f"chan-{call_id}"
        engine = CallEngine(self.config, call_id)
        self.engines[call_id] = engine
        line = CallerLine(call_id, channel, created)
        self.lines[call_id] = line
        self._owner[channel] = call_id

        def arrive() -> None:
            if not line.alive:
                return  # hung up before the app ever saw the call
            line.started = True
            self._deliver(call_id, e.StasisStart(
                at=self.now, channel_id=channel, caller_number=caller_number,
                caller_name=caller_name, created_at=created))

        self._schedule(created + stasis_delay, arrive)
        if hangs_up_at is not None:
            self.caller_hangs_up(call_id, hangs_up_at)
        return engine

    def caller_hangs_up(self, call_id: str, at: float) -> None:
        """The caller puts the phone down at ``at`` (if the line is still there)."""
        line = self.lines[call_id]

        def hang_up() -> None:
            if not line.alive:
                return
            line.alive = False
            if not line.started:
                return
            if line.first_hangup is None:
                line.first_hangup = "caller"
            self._channel_gone(call_id, line.channel_id, in_stasis=True, cause=16, request=0,
                               destroyed=False)

        self._schedule(at, hang_up)

    def press(self, call_id: str, at: float, digit: str) -> None:
        """The caller presses a key at ``at``."""
        line = self.lines[call_id]

        def dtmf() -> None:
            if line.alive and line.started:
                self._deliver(call_id, e.ChannelDtmfReceived(
                    at=self.now, channel_id=line.channel_id, digit=digit))

        self._schedule(at, dtmf)

    def agent_does(self, call_id: str, at: float, event: e.AgentEvent) -> None:
        """An agent's panel request at ``at`` (its time set then); a target's accept is remembered."""

        def request() -> None:
            agent = self._who(call_id, event.agent)
            if isinstance(event, e.TargetAnswered):
                leg = self.leg_of(call_id, agent)
                if leg is not None and leg.is_target:
                    leg.accepted = event.accepted
            self._deliver(call_id, dataclasses.replace(event, at=self.now, agent=agent))

        self._schedule(at, request)

    def agent_keys(self, call_id: str, agent: str, at: float, keys: str, gap: float = 0.3) -> None:
        """An agent types ``keys`` on their phone, ``gap`` seconds apart, starting at ``at``."""
        for i, digit in enumerate(keys):
            self._schedule(at + i * gap, lambda digit=digit: self._agent_key(call_id, agent, digit))

    def _who(self, call_id: str, agent: str) -> str:
        """Resolve CURRENT / TARGET to an agent's name now (a scripted agent acts as whoever holds the role)."""
        engine = self.engines[call_id]
        if agent == CURRENT:
            return engine.agent or "nobody"
        if agent == TARGET:
            transfers = engine.facts.transfers
            return (transfers[-1].target_agent if transfers else None) or "nobody"
        return agent

    def _agent_key(self, call_id: str, agent: str, digit: str) -> None:
        leg = self.leg_of(call_id, self._who(call_id, agent))
        if leg is None:
            return
        if leg.is_target and digit in "12":
            leg.accepted = digit == "1"
        self._deliver(call_id, e.ChannelDtmfReceived(at=self.now, channel_id=leg.channel_id, digit=digit))

    def agent_hangs_up(self, call_id: str, agent: str, at: float) -> None:
        """An agent puts their phone down at ``at`` (CURRENT / TARGET resolved then)."""

        def hang_up() -> None:
            leg = self.leg_of(call_id, self._who(call_id, agent))
            if leg is not None:
                self._agent_hangs_up(leg)

        self._schedule(at, hang_up)

    def leg_of(self, call_id: str, agent: str) -> Leg | None:
        """The agent's answered, live leg on this call (the latest), if any."""
        legs = [leg for leg in self.legs.values()
                if leg.call_id == call_id and leg.agent == agent and leg.alive and leg.in_stasis]
        return legs[-1] if legs else None

    def inject(self, call_id: str, at: float, event: e.Event) -> None:
        """Deliver ``event`` (its time set to ``at``) as is: for stray and duplicate events."""

        def raw() -> None:
            self._deliver(call_id, dataclasses.replace(event, at=self.now))

        self._schedule(at, raw)

    def run(self, until: float) -> None:
        """Let everything scheduled up to ``until`` happen, in time order."""
        steps = 0
        while self._queue and self._queue[0][0] <= until:
            steps += 1
            if steps > MAX_STEPS:
                raise RuntimeError(f"runaway simulation at t={self.now}: more than {MAX_STEPS} steps")
            at, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            action()
            self._note_hearing()
        self.now = max(self.now, until)

    # -- looking at what happened -------------------------------------------

    def commands(self, call_id: str, kind: type[CommandT]) -> list[CommandT]:
        """Commands of one type the call's engine issued, in order."""
        return [i.command for i in self.issued if i.call_id == call_id and isinstance(i.command, kind)]

    def issued_of(self, call_id: str, kind: type[CommandT]) -> list[tuple[float, CommandT]]:
        """Commands of one type with the time each was issued."""
        return [(i.at, i.command) for i in self.issued
                if i.call_id == call_id and isinstance(i.command, kind)]

    def issued_for(self, call_id: str) -> list[Issued]:
        return [i for i in self.issued if i.call_id == call_id]

    def first_time(self, call_id: str, kind: type[c.Command]) -> float | None:
        """When the call's engine first issued a command of this type."""
        return next((i.at for i in self.issued_for(call_id) if isinstance(i.command, kind)), None)

    def logs(self, call_id: str, kind: str | None = None) -> list[c.Log]:
        return [cmd for cmd in self.commands(call_id, c.Log) if kind is None or cmd.kind == kind]

    def log_kinds(self, call_id: str) -> list[str]:
        return [cmd.kind for cmd in self.commands(call_id, c.Log)]

    def ended(self, call_id: str) -> list[c.CallEnded]:
        return self.commands(call_id, c.CallEnded)

    def events(self, call_id: str) -> list[e.Event]:
        """Every event the call's engine was fed, in order: what the call log keeps."""
        return [d.event for d in self.delivered if d.call_id == call_id]

    def delivered_of(self, call_id: str, kind: type[EventT]) -> list[tuple[float, EventT]]:
        return [(d.at, d.event) for d in self.delivered
                if d.call_id == call_id and isinstance(d.event, kind)]

    def hearing(self, call_id: str) -> str:
        """What the caller hears now: ringing | prompt | music | agent | nothing | gone."""
        line = self.lines[call_id]
        if not line.alive:
            return "gone"
        if line.bridged_with is not None:
            return "agent"
        if line.prompt is not None:
            return "prompt"
        if line.music:
            return "music"
        if not line.answered:
            return "ringing" if line.rung else "nothing"
        return "nothing"

    def timeline(self, call_id: str) -> list[tuple[float, str]]:
        """Each change of what the caller hears, with its time."""
        return list(self.lines[call_id].timeline)

    def silent_spans(self, call_id: str, start: float, end: float) -> list[tuple[float, float]]:
        """Stretches of positive length within [start, end) when the caller heard nothing."""
        spans: list[tuple[float, float]] = []
        points = self.timeline(call_id)
        for i, (at, heard) in enumerate(points):
            until = points[i + 1][0] if i + 1 < len(points) else self.now
            lo, hi = max(at, start), min(until, end)
            if heard == "nothing" and hi > lo:
                spans.append((lo, hi))
        return spans

    # -- the simulated outside world -----------------------------------------

    def _schedule(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(at, self.now), self._seq, action))

    def notifications(self, call_id: str, agent: str | None = None,
                      kind: str | None = None) -> list[c.NotifyAgent]:
        return [n for n in self.commands(call_id, c.NotifyAgent)
                if (agent is None or n.agent == agent) and (kind is None or n.kind == kind)]

    def _note_hearing(self) -> None:
        for call_id, line in self.lines.items():
            heard = self.hearing(call_id)
            if not line.timeline or line.timeline[-1][1] != heard:
                line.timeline.append((self.now, heard))

    def _deliver(self, call_id: str, event: e.Event) -> None:
        engine = self.engines[call_id]
        self.delivered.append(Delivered(self.now, call_id, event))
        followups: list[e.Event] = []
        for command in engine.handle(event):
            self.issued.append(Issued(self.now, call_id, command))
            self._apply(call_id, command, followups)
        self._sync_line(call_id)
        for followup in followups:  # the roster answers at once, in the same loop turn
            self._deliver(call_id, followup)

    def _channel_gone(self, call_id: str, channel: str, *, in_stasis: bool, cause: int,
                      request: int | None, soft: bool = False, destroyed: bool = True) -> None:
        """A channel hangs up as Asterisk 22 tells it (traces 03, 04, 13, 14, 15): ChannelHangupRequest
        (``request`` is its cause; ``None``: none is sent), ChannelLeftBridge, the failed end of the caller's prompt
        that was playing, StasisEnd (if it was in our app), then ChannelDestroyed (``destroyed``:
        the app is still subscribed — an originated leg, not an inbound caller)."""
        # A hanging-up channel is out of its bridges at once (no audio crosses any more); the app
        # hears ChannelLeftBridge only after the hang-up request (trace 14).
        left = [bid for bid, members in self.bridges.items() if channel in members]
        for bid in left:
            self.bridges[bid].remove(channel)
        self._refresh_bridged(call_id)
        if request is not None:
            self._deliver(call_id, e.ChannelHangupRequest(at=self.now, channel_id=channel,
                                                          cause=request, soft=soft))
        for bid in left:
            self._deliver(call_id, e.ChannelLeftBridge(at=self.now, channel_id=channel, bridge_id=bid))
        line = self.lines[call_id]
        if channel == line.channel_id and line.prompt is not None:
            playing, line.prompt = line.prompt, None
            self._deliver(call_id, e.PlaybackFinished(at=self.now, playback_id=playing, state="failed"))
        if in_stasis:
            self._deliver(call_id, e.StasisEnd(at=self.now, channel_id=channel))
            if self.echo_hangups:
                self._deliver(call_id, e.StasisEnd(at=self.now, channel_id=channel))
        if not destroyed:
            return
        self._deliver(call_id, e.ChannelDestroyed(
            at=self.now, channel_id=channel, cause=cause,
            cause_txt=CAUSES.get(cause, "")))
        if self.echo_hangups:
            self._deliver(call_id, e.ChannelDestroyed(at=self.now, channel_id=channel, cause=cause))

    def _prompt_behaviour(self, media: tuple[str, ...]) -> PromptBehaviour:
        parts = [self.prompts.get(m.removeprefix(MEDIA_PREFIX), self.default_prompt) for m in media]
        results = {p.result for p in parts}
        result = "never" if "never" in results else "failed" if "failed" in results else "done"
        return PromptBehaviour(sum(p.seconds for p in parts), result)

    def _behaviour(self, agent: str) -> AgentBehaviour:
        n = self._dials.get(agent, 0)
        self._dials[agent] = n + 1
        script = self.agent_behaviours.get(agent) or [AgentBehaviour("never")]
        return script[min(n, len(script) - 1)]

    def _apply(self, call_id: str, cmd: c.Command, followups: list[e.Event]) -> None:
        line = self.lines[call_id]
        if isinstance(cmd, c.Ring):
            line.rung = True
        elif isinstance(cmd, c.Answer):
            line.answered = True
        elif isinstance(cmd, c.Play):
            self._play(call_id, cmd)
        elif isinstance(cmd, c.StartMusic):
            line.music = True
        elif isinstance(cmd, c.StopMusic):
            line.music = False
        elif isinstance(cmd, c.Dial):
            self._dial(call_id, cmd)
        elif isinstance(cmd, c.Hangup):
            self._hangup(call_id, cmd.channel_id)
        elif isinstance(cmd, c.ReleaseIdleLine):
            self._release_line(call_id, cmd.channel_id)
        elif isinstance(cmd, c.Bridge):
            self._bridge(call_id, cmd)
        elif isinstance(cmd, c.Unbridge):
            members = self.bridges.get(cmd.bridge_id, [])
            if cmd.channel_id in members:
                members.remove(cmd.channel_id)
                self._schedule(self.now, lambda: self._deliver(call_id, e.ChannelLeftBridge(
                    at=self.now, channel_id=cmd.channel_id, bridge_id=cmd.bridge_id)))
            self._refresh_bridged(call_id)
        elif isinstance(cmd, c.DestroyBridge):
            self.bridges.pop(cmd.bridge_id, None)
            self._refresh_bridged(call_id)
        elif isinstance(cmd, c.StopPlayback):
            self._stop_playback(call_id, cmd.playback_id)
        elif isinstance(cmd, c.SetVar):
            line.variables[cmd.name] = cmd.value
        elif isinstance(cmd, c.StartTimer):
            self._start_timer(call_id, cmd)
        elif isinstance(cmd, c.CancelTimer):
            self._timers.pop((call_id, cmd.name), None)
        elif isinstance(cmd, c.RequestAgent):
            followups.append(self._request_agent(call_id, cmd))
        elif isinstance(cmd, c.ReleaseAgent):
            self.roster.release(cmd.agent, call_id=call_id, now=self.now,
                                wrap_up_seconds=cmd.wrap_up_seconds, served=cmd.served)
        elif isinstance(cmd, c.Record):
            self.recordings.append((self.now, call_id, cmd))
            if self.name_seconds is None:  # Asterisk never reports the recording's end
                return
            seconds = min(cmd.max_seconds, self.name_seconds)

            def recorded(name: str = cmd.name) -> None:
                if line.alive:
                    self._deliver(call_id, e.RecordingFinished(at=self.now, recording_name=name,
                                                               duration_seconds=seconds))
            self._schedule(self.now + seconds + 0.5, recorded)
        elif isinstance(cmd, c.RecordFollowUp):
            self.followups.append(cmd)
        elif isinstance(cmd, c.GetChannel):
            self.channel_checks.append((self.now, call_id, cmd.channel_id))
            followups.append(e.ChannelChecked(at=self.now, channel_id=cmd.channel_id,
                                              exists=self._channel_exists(cmd.channel_id)))
        # Log and CallEnded only need recording, which _deliver did.

    def _channel_exists(self, channel: str) -> bool:
        """What ``GET /channels/{id}`` says now: a live caller line or agent leg is there."""
        line = next((ln for ln in self.lines.values() if ln.channel_id == channel), None)
        if line is not None:
            return line.alive and line.started
        leg = self.legs.get(channel)
        return leg is not None and leg.alive

    def _sync_line(self, call_id: str) -> None:
        engine = self.engines[call_id]
        self.line.set(call_id, engine.waiting_queue, since=engine.facts.queued_at or 0.0,
                      first=engine.facts.requeued, ringing=engine.being_offered)

    def _request_agent(self, call_id: str, cmd: c.RequestAgent) -> e.Event:
        self._sync_line(call_id)
        waiting = self.line.place(call_id) is not None
        agent = None
        if not (waiting and self.line.waiting_before(call_id)):
            agent = self.roster.pick(call_id, skip=cmd.skip, only=cmd.only, now=self.now)
        if agent is not None:
            return e.AgentPicked(at=self.now, agent=agent.name, endpoint=agent.endpoint)
        if not waiting:
            return e.NoAgentFree(at=self.now)
        handle = self.config.queue_for(cmd.queue).expected_handle_seconds
        return e.NoAgentFree(at=self.now, ahead=self.line.ahead(call_id),
                             expected_wait_seconds=self.line.expected_wait(
                                 call_id, agents=self.roster.staffed(cmd.only), handle_seconds=handle))

    def _play(self, call_id: str, cmd: c.Play) -> None:
        line = self.lines[call_id]
        self._owner[cmd.playback_id] = call_id
        how = self._prompt_behaviour(cmd.media)
        if cmd.channel_id != line.channel_id:  # a tone or prompt to an agent's leg
            leg = self.legs.get(cmd.channel_id)
            if leg is None or not leg.alive or how.result == "never":
                return

            def leg_finish() -> None:
                if leg.alive and cmd.playback_id not in self._stopped:
                    self._deliver(call_id, e.PlaybackFinished(
                        at=self.now, playback_id=cmd.playback_id, state=how.result))

            self._schedule(self.now + (how.seconds if how.result == "done" else 0.0), leg_finish)
            return
        line.prompt = cmd.playback_id
        if how.result == "never":
            return

        def finish() -> None:
            if not line.alive or cmd.playback_id in self._stopped:
                return
            if line.prompt == cmd.playback_id:
                line.prompt = None
            self._deliver(call_id, e.PlaybackFinished(
                at=self.now, playback_id=cmd.playback_id, state=how.result))

        self._schedule(self.now + (how.seconds if how.result == "done" else 0.0), finish)

    def _stop_playback(self, call_id: str, playback_id: str) -> None:
        """A stopped prompt ends at once with PlaybackFinished ``done`` (ARI)."""
        line = self.lines[call_id]
        if playback_id in self._stopped:
            return
        self._stopped.add(playback_id)
        if line.prompt == playback_id:
            line.prompt = None
        if line.alive:
            self._schedule(self.now, lambda: self._deliver(call_id, e.PlaybackFinished(
                at=self.now, playback_id=playback_id, state="done")))

    def _dial(self, call_id: str, cmd: c.Dial) -> None:
        agent = self.roster.by_endpoint(cmd.endpoint)
        name = agent.name if agent else cmd.endpoint
        leg = Leg(call_id, cmd.channel_id, name, self.now)
        self.legs[cmd.channel_id] = leg
        self._owner[cmd.channel_id] = call_id
        how = self._behaviour(name)
        if how.action == "unreachable":
            leg.alive = False
            self._schedule(self.now, lambda: self._deliver(call_id, e.DialFailed(
                at=self.now, channel_id=leg.channel_id, reason="Allocation failed")))
        elif how.action == "answer":
            self._schedule(self.now + how.after, lambda: self._agent_answers(leg, how))
        elif how.action in ("decline", "ring-out"):
            cause = 17 if how.action == "decline" else 19
            self._schedule(self.now + how.after, lambda: self._agent_declines(leg, cause))

    def _agent_answers(self, leg: Leg, how: AgentBehaviour) -> None:
        if not leg.alive or leg.in_stasis:
            return
        leg.in_stasis = True
        self._deliver(leg.call_id, e.StasisStart(at=self.now, channel_id=leg.channel_id))
        if leg.is_target and how.verdict_after is not None:
            self._schedule(self.now + how.verdict_after, lambda: self._verdict(leg, how.verdict))
        if how.hangs_up_after is not None:
            self._schedule(self.now + how.hangs_up_after, lambda: self._agent_hangs_up(leg))

    def _verdict(self, leg: Leg, verdict: str) -> None:
        """A transfer target accepts or declines, by key or panel, if their leg is still up."""
        if not leg.alive or not leg.in_stasis:
            return
        if verdict.startswith("key-"):
            self._agent_key(leg.call_id, leg.agent, verdict[-1])
        else:
            leg.accepted = verdict == "panel-yes"
            self._deliver(leg.call_id, e.TargetAnswered(at=self.now, agent=leg.agent,
                                                        accepted=leg.accepted))

    def _agent_hangs_up(self, leg: Leg) -> None:
        if not leg.alive or not leg.in_stasis:
            return
        line = self.lines[leg.call_id]
        if line.alive and line.bridged_with == leg.channel_id and line.first_hangup is None:
            line.first_hangup = "agent"
        self._leg_gone(leg, cause=16)

    def _agent_declines(self, leg: Leg, cause: int) -> None:
        if not leg.alive or leg.in_stasis:
            return
        self._leg_gone(leg, cause=cause)

    def _leg_gone(self, leg: Leg, *, cause: int) -> None:
        """The agent's phone ends the leg: a BYE once answered (no cause on the request), a decline
        while ringing (cause 17 on the request too), or Asterisk's ring-out (cause 19, no request)."""
        was_in_stasis = leg.in_stasis
        leg.alive = False
        leg.in_stasis = False
        request = None if cause == 19 else (0 if was_in_stasis else cause)
        self._channel_gone(leg.call_id, leg.channel_id, in_stasis=was_in_stasis, cause=cause,
                           request=request)

    def _hangup(self, call_id: str, channel: str) -> None:
        leg = self.legs.get(channel)
        if leg is None:  # not an agent leg: the service hung up a caller (an R9 breach)
            line = next((ln for ln in self.lines.values() if ln.channel_id == channel), None)
            if line is not None:
                self._release_line(line.call_id, channel)
            return
        if not leg.alive:
            return
        was_in_stasis = leg.in_stasis
        leg.hung_up_by_service_at = self.now
        leg.alive = False  # no more phone actions; its hang-up events still follow
        leg.in_stasis = False
        line = self.lines[leg.call_id]
        if line.alive and line.agent_leg == leg.channel_id and line.first_hangup is None:
            line.first_hangup = "agent"  # the agent asked to leave (LeaveRequested, *9)
        self._leave_bridges(leg.call_id, leg.channel_id)
        self._schedule(self.now, lambda: self._channel_gone(
            leg.call_id, leg.channel_id, in_stasis=was_in_stasis, cause=16, request=32, soft=True))

    def _release_line(self, call_id: str, channel: str) -> None:
        line = self.lines[call_id]
        if not line.alive:
            return
        if line.first_hangup is None:
            line.first_hangup = "service"
        line.alive = False
        self._schedule(self.now, lambda: self._channel_gone(
            call_id, channel, in_stasis=True, cause=16, request=32, soft=True, destroyed=False))

    def _alive(self, call_id: str, channel: str) -> bool:
        line = self.lines[call_id]
        if channel == line.channel_id:
            return line.alive
        leg = self.legs.get(channel)
        return leg is not None and leg.alive and leg.in_stasis

    def _bridge(self, call_id: str, cmd: c.Bridge) -> None:
        line = self.lines[call_id]
        members = self.bridges.setdefault(cmd.bridge_id, [])
        gone = tuple(ch for ch in cmd.channel_ids if not self._alive(call_id, ch))
        if gone:  # addChannel of a channel that hung up: 400 "Channel not found" (traces 08, 14)
            self._schedule(self.now, lambda: self._deliver(call_id, e.BridgeFailed(
                at=self.now, bridge_id=cmd.bridge_id, channel_ids=gone, status=400,
                reason="Channel not found")))
        for channel in cmd.channel_ids:
            if channel in gone:
                continue
            self._schedule(self.now, lambda channel=channel: self._entered(call_id, cmd.bridge_id, channel))
            if channel != line.channel_id:
                leg = self.legs.get(channel)
                if leg is None or not leg.in_stasis or not leg.alive:
                    self.bridge_checks.append(f"{call_id}: bridged {channel}, which never answered")
                elif leg.hung_up_by_service_at is not None:
                    self.bridge_checks.append(f"{call_id}: bridged {channel} after hanging it up")
            for other in self.bridges.values():
                if channel in other:
                    other.remove(channel)  # a channel is in one bridge at a time
            members.append(channel)
        if line.channel_id in members:
            for channel in members:
                if channel != line.channel_id:
                    self._check_partner(call_id, channel)
        self._refresh_bridged(call_id)

    def _check_partner(self, call_id: str, channel: str) -> None:
        """Who may be in a bridge with the caller: the current offer, or a target who accepted (R6)."""
        leg = self.legs.get(channel)
        if leg is None:
            return
        if leg.is_target:
            if not leg.accepted:
                self.bridge_checks.append(f"{call_id}: caller bridged with target {channel}, "
                                          "which has not accepted")
            return
        queue_dials = [d for d in self.commands(call_id, c.Dial) if not self.legs[d.channel_id].is_target]
        if not queue_dials or queue_dials[-1].channel_id != channel:
            self.bridge_checks.append(f"{call_id}: bridged {channel}, not the current offer")

    def _entered(self, call_id: str, bridge_id: str, channel: str) -> None:
        """ChannelEnteredBridge, as Asterisk sends it once the channel is really in."""
        if self._alive(call_id, channel) and channel in self.bridges.get(bridge_id, []):
            self._deliver(call_id, e.ChannelEnteredBridge(at=self.now, channel_id=channel,
                                                          bridge_id=bridge_id))

    def _leave_bridges(self, call_id: str, channel: str, *, tell: bool = False) -> None:
        """The channel leaves its bridge; ``tell``: ChannelLeftBridge now (a hang-up, trace 14)."""
        left = [bid for bid, members in self.bridges.items() if channel in members]
        for bid in left:
            self.bridges[bid].remove(channel)
        self._refresh_bridged(call_id)
        for bid in left:
            if tell:
                self._deliver(call_id, e.ChannelLeftBridge(at=self.now, channel_id=channel,
                                                           bridge_id=bid))
            else:
                self._schedule(self.now, lambda bid=bid: self._deliver(call_id, e.ChannelLeftBridge(
                    at=self.now, channel_id=channel, bridge_id=bid)))

    def _refresh_bridged(self, call_id: str) -> None:
        """Who the caller is bridged with now: a live agent leg in the caller's bridge."""
        line = self.lines[call_id]
        line.bridged_with = None
        for members in self.bridges.values():
            if line.channel_id in members:
                partners = [ch for ch in members if ch != line.channel_id
                            and ch in self.legs and self.legs[ch].alive]
                if partners:
                    line.bridged_with = partners[0]
                    line.agent_leg = partners[0]

    def _start_timer(self, call_id: str, cmd: c.StartTimer) -> None:
        key = (call_id, cmd.name)
        self._timers[key] = cmd.token

        def fire() -> None:
            current = self._timers.get(key) == cmd.token
            if current:
                del self._timers[key]
            if current or self.deliver_stale_timers:
                self._deliver(call_id, e.TimerFired(at=self.now, name=cmd.name, token=cmd.token))

        self._schedule(cmd.at, fire)

