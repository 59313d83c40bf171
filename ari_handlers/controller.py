"""The controller: Asterisk events into call engines, engine commands into ARI.

Each call has its own queue and worker task, so one call waiting on an HTTP
answer never delays another, and a call's events are always handled in the
order Asterisk sent them. Nothing here decides etiquette — that is the
engine's — and nothing here may drop a call: an engine error, a refused ARI
request or a failed log write is logged and the call goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ari_handlers.ari_client import AriClient, AriError
from ari_handlers.translate import BadEvent, clean_text, parse_time, translate
from callflow import commands as c
from callflow import events as e
from callflow.callback import CallbackEngine
from callflow.config import DEFAULT_APP_NAME, CallFlowConfig
from callflow.engine import CallEngine
from callflow import recovery as rc
from callflow.queueing import WaitingLine
from callflow.replay import event_to_dict
from callflow.roster import Roster

log = structlog.get_logger("liyi.controller")


class CallLog(Protocol):
    """What the controller needs of the call log (``db.CallStore``): never-blocking writes."""

    def call_started(self, call_id: str, *, channel_id: str, caller_number: str,
                     caller_name: str, created_at: float) -> None: ...
    def append(self, call_id: str, *, at: float, source: str, kind: str,
               detail: dict[str, Any]) -> None: ...
    def call_updated(self, call_id: str, **fields: Any) -> None: ...
    def call_ended(self, call_id: str, *, ended_at: float, first_hangup: str, outcome: str,
                   compliance: dict[str, dict[str, Any]],
                   summary: dict[str, Any] | None = None) -> None: ...
    def followup_added(self, followup_id: str, *, call_id: str, kind: str, text: str,
                       due: dt.date, owner: str, number: str, queue: str,
                       created_at: float) -> None: ...


class CallObserver(Protocol):
    """Someone watching calls live (the demo's terminal, the web page)."""

    def on_log(self, call_id: str, caller_number: str, entry: c.Log) -> None: ...
    def on_end(self, call_id: str, caller_number: str, ended: c.CallEnded) -> None: ...


class FollowUpLike(Protocol):
    """What placing a callback needs of a follow-up (``db.FollowUp``)."""

    id: str
    number: str
    state: str
    created_at: float


@dataclass(frozen=True)
class _Adopted:
    """A call taken back after a restart, before its worker starts."""

    call: LiveCall
    commands: list[c.Command]
    keep: frozenset[str]


@dataclass(eq=False)
class LiveCall:
    engine: CallEngine | CallbackEngine
    queue: asyncio.Queue[e.Event] = field(default_factory=asyncio.Queue)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    outcome: str = ""
    logged_state: str = ""
    bridges: set[str] = field(default_factory=set)
    first_channel: str = ""  # the inbound caller's channel, known before the engine saw it
    caller_gone: bool = False  # a sign of the caller's hang-up has come in (maybe still queued)

    @property
    def call_id(self) -> str:
        return self.engine.call_id

    def is_caller(self, channel_id: str) -> bool:
        """The channel of the party R9 protects: the inbound caller, or a callback's customer."""
        return bool(channel_id) and channel_id in (self.first_channel, self.engine.caller_channel)


class Controller:
    def __init__(
        self, *, config: CallFlowConfig, ari: AriClient, store: CallLog, roster: Roster,
        app: str = DEFAULT_APP_NAME, clock: Callable[[], float] = time.time,
        observers: list[CallObserver] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        # Called after every (re)connect's recovery: the dialplan fallback stopped taking calls.
        self.on_connected = on_connected
        self.ari = ari
        self.store = store
        self.roster = roster
        self.app = app
        self.clock = clock
        self.observers = observers or []
        self.calls: dict[str, LiveCall] = {}
        self._by_channel: dict[str, LiveCall] = {}
        self.line = WaitingLine()  # who waits for an agent, in which queue, in what order (R5)
        self.bad_events = 0
        self.log_write_errors = 0
        self.calls_started = 0
        self.calls_ended = 0
        self.connected = asyncio.Event()
        self._stop: asyncio.Event | None = None
        # Calls this process has known: their records are its own to end, never "ended while
        # down" — a reconnect may come while their end is still on its way to the database.
        self._started_at = clock()
        self._adopted: set[str] = set()

    # -- events in --------------------------------------------------------

    async def on_event(self, msg: dict[str, Any]) -> None:
        """Route one ARI message to its call; never raises."""
        try:
            routed = translate(msg, now=self.clock())
        except BadEvent as exc:
            self.bad_events += 1
            log.warning("ari.bad_event", reason=str(exc), type=_type_of(msg))
            return
        if routed is None:
            return
        event = routed.event
        if routed.role == "caller":
            assert isinstance(event, e.StasisStart)
            if event.channel_id in self._by_channel:
                return
            self._start_call(event)
            return
        call = self._find(event, routed.caller_channel)
        if call is not None and routed.role == "agent" and isinstance(event, e.StasisStart) \
                and not call.engine.owns_channel(event.channel_id):
            call = None  # a leg rung by a controller before a restart: nobody waits for it now
        if call is not None:
            if isinstance(event, e.GONE_EVENTS) and call.is_caller(event.channel_id):
                # Known now, though the call's worker may be busy with earlier events: from
                # here on nothing is rung or played for a caller who has left (trace 13).
                call.caller_gone = True
            call.queue.put_nowait(event)
        elif routed.role in ("agent", "leg"):
            # A leg no live call knows (e.g. its caller already left): release it.
            log.info("agent_leg.orphan", channel=getattr(event, "channel_id", ""))
            await self._safe(self.ari.hangup(getattr(event, "channel_id", "")), "orphan-hangup")

    def _find(self, event: e.Event, caller_channel: str = "") -> LiveCall | None:
        key = getattr(event, "channel_id", "") or getattr(event, "playback_id", "")
        call = self._by_channel.get(key)
        if call is None and "-" in key:
            call = self.calls.get(key.split("-", 1)[0])  # our own ids: <call>-a1, <call>-p2
        if call is None and caller_channel:
            call = self._by_channel.get(caller_channel)
        return call

    def call_of_agent(self, agent: str) -> tuple[LiveCall, str] | None:
        """The live call an agent is part of, and how: "ringing", "first" or "target"."""
        status = self.roster.get(agent)
        if status is not None and status.engaged_by in self.calls:
            call = self.calls[status.engaged_by]
            role = call.engine.agent_role(agent)
            if role is not None:
                return call, role
        for call in list(self.calls.values()):  # e.g. in closing, already released
            role = call.engine.agent_role(agent)
            if role is not None:
                return call, role
        return None

    def agent_request(self, event: e.AgentEvent) -> bool:
        """Queue an agent's request (panel button) on their call; False if they are on none."""
        found = self.call_of_agent(event.agent)
        if found is None:
            return False
        found[0].queue.put_nowait(event)
        return True

    def _start_call(self, event: e.StasisStart) -> None:
        call_id = uuid.uuid4().hex[:12]
        call = LiveCall(engine=CallEngine(self.config, call_id), first_channel=event.channel_id)
        self.calls[call_id] = call
        self._by_channel[event.channel_id] = call
        self.calls_started += 1
        created = event.created_at if event.created_at is not None else event.at
        self._write("call_started", call_id, channel_id=event.channel_id,
                    caller_number=event.caller_number, caller_name=event.caller_name,
                    created_at=created)
        call.queue.put_nowait(event)
        call.task = asyncio.get_running_loop().create_task(self._run_call(call), name=f"call-{call_id}")

    # -- the call's worker ------------------------------------------------

    async def place_callback(self, followup: FollowUpLike, agent: str) -> tuple[bool, str]:
        """Call the customer back (R8): the agent's phone rings first, then the customer's.

        Refused with a message for the agent when they cannot take it now;
        the attempt is written to the follow-up, whatever its outcome.
        """
        if followup.state == "done":
            return False, "该跟进已完成 · already done"
        status = self.roster.get(agent)
        if status is None:
            return False, f"未知坐席 {agent}"
        if not status.registered:
            return False, "您的话机未注册，无法回电 · your phone is not registered"
        if any(live.engine.agent_role(agent) for live in self.calls.values()):
            return False, "您正在通话中 · you are on a call"
        now = self.clock()
        call_id = uuid.uuid4().hex[:12]
        if self.roster.pick(call_id, only=(agent,), now=now) is None:
            return False, "您当前不可接听（整理时间或话机忙） · not free now"
        engine = CallbackEngine(self.config, call_id, followup_id=followup.id,
                                number=followup.number, agent=agent, endpoint=status.endpoint,
                                requested_at=followup.created_at)
        call = LiveCall(engine=engine)
        self.calls[call_id] = call
        self.calls_started += 1
        self._write("call_started", call_id, channel_id=f"{call_id}-c1",
                    caller_number=followup.number, caller_name="", created_at=now)
        attempted = getattr(self.store, "callback_attempted", None)
        if attempted is not None:
            try:
                await attempted(followup.id, call_id=call_id, agent=agent, at=now)
            except Exception:  # the attempt note is not worth failing the callback for
                log.exception("call_log.callback_attempt_failed", followup=followup.id)
        log.info("callback.placing", call_id=call_id, followup=followup.id, agent=agent)
        call.task = asyncio.get_running_loop().create_task(
            self._run_call(call, first=engine.start(now)), name=f"callback-{call_id}")
        return True, "正在呼叫您的话机，接听后为您拨打客户 · ringing your phone first"

    async def _run_call(self, call: LiveCall, first: list[c.Command] | None = None) -> None:
        with structlog.contextvars.bound_contextvars(call_id=call.call_id):
            if first:
                for feedback in await self._carry_out(call, first):
                    call.queue.put_nowait(feedback)
            while not call.engine.ended:
                event = await call.queue.get()
                await self._step(call, event)
            self._forget(call)

    async def _step(self, call: LiveCall, first: e.Event) -> None:
        pending: deque[e.Event] = deque([first])
        while pending:
            event = pending.popleft()
            self._write("append", call.call_id, at=event.at, source="event",
                        kind=type(event).__name__, detail=event_to_dict(event))
            try:
                commands = call.engine.handle(event)
            except Exception:  # an engine bug must not drop the call
                log.exception("engine.error", event_type=type(event).__name__)
                continue
            pending.extend(await self._carry_out(call, commands))

    async def _carry_out(self, call: LiveCall, commands: list[c.Command]) -> list[e.Event]:
        """Execute an engine's commands in order; return the events their outcomes make."""
        self._update_line(call)
        feedback: list[e.Event] = []
        for command in commands:
            result = await self._execute(call, command)
            if result is not None:
                feedback.append(result)
        return feedback

    def _forget(self, call: LiveCall) -> None:
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()
        self.calls.pop(call.call_id, None)
        self.line.set(call.call_id, None)
        self._by_channel.pop(call.engine.caller_channel, None)
        self.calls_ended += 1

    # -- commands out -----------------------------------------------------

    async def _execute(self, call: LiveCall, cmd: c.Command) -> e.Event | None:
        """Carry out one command; return an event to feed back, if the outcome is one."""
        ari = self.ari
        if call.caller_gone and _needs_the_caller(call, cmd):
            # The caller's hang-up is queued behind the event that led here: ring no agent,
            # play nothing to a dead line; the hang-up ends the call next (traces 13, 15).
            log.info("controller.skipped_caller_gone", command=type(cmd).__name__)
            return None
        match cmd:
            case c.Ring():
                await self._safe(ari.ring(cmd.channel_id), "ring")
            case c.Answer():
                await self._safe(ari.answer(cmd.channel_id), "answer")
            case c.Play():
                try:
                    await ari.play(cmd.channel_id, cmd.media, playback_id=cmd.playback_id)
                except (TimeoutError, AriError, OSError) as exc:
                    log.warning("ari.play_failed", error=str(exc), media=list(cmd.media))
                    return e.PlaybackFinished(at=self.clock(), playback_id=cmd.playback_id,
                                              state="failed")
            case c.StartMusic():
                await self._safe(ari.start_moh(cmd.channel_id, cmd.moh_class), "moh")
            case c.StopMusic():
                await self._safe(ari.stop_moh(cmd.channel_id), "moh-stop")
            case c.Dial():
                ring = cmd.ring_seconds or self.config.cadence.ring_end(self.config.agent_rings) + 3
                try:
                    await ari.originate(
                        endpoint=cmd.endpoint, app=self.app, app_args=cmd.app_args,
                        caller_id=cmd.caller_id, channel_id=cmd.channel_id, timeout=int(ring),
                    )
                except (TimeoutError, AriError, OSError) as exc:
                    return e.DialFailed(at=self.clock(), channel_id=cmd.channel_id,
                                        reason=getattr(exc, "message", str(exc)))
            case c.GetChannel():
                return await self._check_channel(call, cmd.channel_id)
            case c.Hangup():
                await self._safe(ari.hangup(cmd.channel_id), "hangup-agent-leg")
            case c.ReleaseIdleLine():
                await self._safe(ari.hangup(cmd.channel_id), "idle-release")
            case c.Bridge():
                if cmd.bridge_id not in call.bridges:
                    call.bridges.add(cmd.bridge_id)
                    await self._safe(ari.create_bridge(cmd.bridge_id, "mixing,dtmf_events",
                                                       name=cmd.bridge_id), "bridge")
                plain = [ch for ch in cmd.channel_ids if ch not in cmd.absorb_dtmf]
                absorbed = [ch for ch in cmd.channel_ids if ch in cmd.absorb_dtmf]
                for group, absorb in ((plain, False), (absorbed, True)):
                    if group:
                        failed = await self._add_channels(cmd.bridge_id, group, absorb)
                        if failed is not None:
                            return failed
            case c.Unbridge():
                await self._safe(ari.remove_channel(cmd.bridge_id, cmd.channel_id), "bridge-remove")
            case c.StopPlayback():
                await self._safe(ari.stop_playback(cmd.playback_id), "playback-stop")
            case c.NotifyAgent():
                for observer in self.observers:
                    notify = getattr(observer, "on_agent_notice", None)
                    if notify is not None:
                        _notify(notify, cmd.agent, cmd.kind, cmd.data)
            case c.DestroyBridge():
                call.bridges.discard(cmd.bridge_id)
                await self._safe(ari.destroy_bridge(cmd.bridge_id), "bridge-destroy")
            case c.SetVar():
                await self._safe(ari.set_channel_var(cmd.channel_id, cmd.name, cmd.value), "setvar")
            case c.StartTimer():
                self._start_timer(call, cmd)
            case c.CancelTimer():
                handle = call.timers.pop(cmd.name, None)
                if handle is not None:
                    handle.cancel()
            case c.RequestAgent():
                return self._request_agent(call, cmd)
            case c.ReleaseAgent():
                self.roster.release(cmd.agent, call_id=call.call_id, now=self.clock(),
                                    wrap_up_seconds=cmd.wrap_up_seconds, served=cmd.served)
            case c.Record():
                try:
                    await ari.record(cmd.channel_id, cmd.name, max_seconds=cmd.max_seconds,
                                     beep=cmd.beep, terminate_on=cmd.terminate_on)
                except (TimeoutError, AriError, OSError) as exc:
                    log.warning("ari.record_failed", error=str(exc), recording=cmd.name)
                    return e.RecordingFailed(at=self.clock(), recording_name=cmd.name,
                                             cause=getattr(exc, "message", str(exc)))
            case c.RecordFollowUp():
                self._write("followup_added", cmd.followup_id, call_id=call.call_id, kind=cmd.kind,
                            text=cmd.text, due=dt.date.fromisoformat(cmd.due), owner=cmd.owner,
                            number=cmd.number, queue=cmd.queue, created_at=cmd.created_at)
                for observer in self.observers:
                    changed = getattr(observer, "followups_changed", None)
                    if changed is not None:
                        _notify(changed)
            case c.Log():
                self._log(call, cmd)
            case c.CallEnded():
                self._ended(call, cmd)
            case _:
                log.error("controller.unknown_command", command=type(cmd).__name__)
        return None

    async def _check_channel(self, call: LiveCall, channel_id: str) -> e.ChannelChecked:
        """Is the channel still there? 404 means gone (trace 13); a caller already known gone is."""
        exists = True
        if call.caller_gone and call.is_caller(channel_id):
            exists = False
        else:
            try:
                exists = await self.ari.get_channel(channel_id) is not None
            except (TimeoutError, AriError, OSError) as exc:
                # Cannot tell: take the caller as there, so they are never left in silence;
                # if they did hang up, that event still ends the call and frees any agent.
                log.warning("ari.channel_check_failed", channel=channel_id, error=str(exc))
        return e.ChannelChecked(at=self.clock(), channel_id=channel_id, exists=exists)

    def _update_line(self, call: LiveCall) -> None:
        """Keep the caller's place in the waiting line in step with their engine."""
        engine = call.engine
        queue = getattr(engine, "waiting_queue", None)
        self.line.set(call.call_id, queue, since=engine.facts.queued_at or 0.0,
                      first=engine.facts.requeued, ringing=bool(getattr(engine, "being_offered", False)))

    def _request_agent(self, call: LiveCall, cmd: c.RequestAgent) -> e.Event:
        """An agent for a caller: first come, first served in each queue (R5), longest-idle agent."""
        now = self.clock()
        self._update_line(call)
        waiting = self.line.place(call.call_id) is not None
        if waiting and self.line.waiting_before(call.call_id):
            return self._no_agent(call, cmd, now)  # someone earlier gets the next agent
        agent = self.roster.pick(call.call_id, skip=cmd.skip, now=now, only=cmd.only)
        if agent is None:
            return self._no_agent(call, cmd, now) if waiting else e.NoAgentFree(at=now)
        return e.AgentPicked(at=now, agent=agent.name, endpoint=agent.endpoint)

    def _no_agent(self, call: LiveCall, cmd: c.RequestAgent, now: float) -> e.NoAgentFree:
        """No agent now, with where the caller stands: callers ahead, expected wait (R5)."""
        queue = self.config.queue_for(cmd.queue)
        return e.NoAgentFree(
            at=now, ahead=self.line.ahead(call.call_id),
            expected_wait_seconds=self.line.expected_wait(
                call.call_id, agents=self.roster.staffed(cmd.only),
                handle_seconds=queue.expected_handle_seconds))

    async def _add_channels(self, bridge_id: str, channels: list[str],
                            absorb: bool) -> e.BridgeFailed | None:
        """addChannel; a refusal goes back to the engine, which waits for ChannelEnteredBridge.

        Asterisk's answer is not the truth either way (trace 14): a caller who
        just hung up gets 400 or 422 — fed back as ``BridgeFailed`` — or a 204
        and a moment in the bridge. A request that times out (a channel whose
        prompt still plays is added only when it ends) is left to the events
        and the engine's own timer.
        """
        try:
            await self.ari.add_channel(bridge_id, channels, absorb_dtmf=absorb)
        except AriError as exc:
            log.info("ari.bridge_add_refused", bridge=bridge_id, channels=channels,
                     status=exc.status, error=exc.message)
            if exc.status == 0:
                return None
            return e.BridgeFailed(at=self.clock(), bridge_id=bridge_id, channel_ids=tuple(channels),
                                  status=exc.status, reason=exc.message)
        except (TimeoutError, OSError) as exc:
            log.info("ari.request_failed", what="bridge-add", error=str(exc))
        return None

    async def _safe(self, request: Any, what: str) -> None:
        """An ARI request whose failure the call survives (e.g. 404 after a hang-up)."""
        try:
            await request
        except (TimeoutError, AriError, OSError) as exc:
            log.info("ari.request_failed", what=what, error=str(exc))

    def _write(self, method: str, *args: Any, **kwargs: Any) -> None:
        """A call-log write; the store queues and retries, and even a store bug loses no call."""
        try:
            getattr(self.store, method)(*args, **kwargs)
        except Exception:
            self.log_write_errors += 1
            log.exception("call_log.write_failed", method=method)

    def _start_timer(self, call: LiveCall, cmd: c.StartTimer) -> None:
        old = call.timers.pop(cmd.name, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, cmd.at - self.clock())

        def fire() -> None:
            call.timers.pop(cmd.name, None)
            call.queue.put_nowait(e.TimerFired(at=max(self.clock(), cmd.at), name=cmd.name,
                                               token=cmd.token))

        call.timers[cmd.name] = asyncio.get_running_loop().call_later(delay, fire)

    def _log(self, call: LiveCall, entry: c.Log) -> None:
        self._write("append", call.call_id, at=entry.at, source="log", kind=entry.kind,
                    detail=entry.detail)
        log.info(f"call.{entry.kind}", state=call.engine.state.value, **_loggable(entry.detail))
        facts = call.engine.facts
        if entry.kind == "answered":
            self._write("call_updated", call.call_id, answered_at=facts.answered_at,
                        state="greeting")
        elif entry.kind in ("connected", "transfer-completed"):  # who really talks with the caller now
            self._write("call_updated", call.call_id, agent=facts.agent, state="connected")
        elif entry.kind == "ended":
            call.outcome = str(entry.detail.get("outcome", ""))
        elif call.engine.state.value != call.logged_state:
            self._write("call_updated", call.call_id, state=call.engine.state.value)
        call.logged_state = call.engine.state.value
        for observer in self.observers:
            _notify(observer.on_log, call.call_id, facts.caller_number, entry)

    def _ended(self, call: LiveCall, ended: c.CallEnded) -> None:
        facts = call.engine.facts
        self._write(
            "call_ended", call.call_id, ended_at=ended.at, first_hangup=ended.first_hangup,
            outcome=call.outcome or "completed", compliance=ended.compliance,
            summary={"agent": facts.agent, "agents_rung": [o.agent for o in facts.offers],
                     "queue": facts.queue,
                     **({"recovered": True} if getattr(facts, "recovered_at", None) else {})},
        )
        for observer in self.observers:
            _notify(observer.on_end, call.call_id, facts.caller_number, ended)

    # -- connection life --------------------------------------------------

    async def on_connect(self) -> None:
        """After every (re)connect: Asterisk replays nothing, so look at what is still there.

        Calls this controller knows are checked for channels lost meanwhile;
        callers it does not know (it was restarted) are taken back (``_recover``).
        """
        try:
            await self._recover()
        except Exception:  # recovery must never stop the controller serving new calls
            log.exception("recovery.failed")
        self.connected.set()
        if self.on_connected is not None:
            _notify(self.on_connected)
        if not self.calls:
            log.info("ari.connected", app=self.app)
            return
        try:
            live = {ch.get("id") for ch in await self.ari.list_channels()}
        except (TimeoutError, AriError, OSError) as exc:
            log.warning("ari.reconcile_failed", error=str(exc))
            return
        now = self.clock()
        for call in list(self.calls.values()):
            caller = call.engine.caller_channel
            # Agent legs first: a caller whose agent vanished must hear the closing, not silence.
            for channel in sorted(call.engine.live_channels() - live, key=lambda ch: ch == caller):
                log.info("call.channel_lost_while_disconnected", call_id=call.call_id,
                         channel=channel)
                call.queue.put_nowait(e.StasisEnd(at=now, channel_id=channel))
        log.info("ari.reconnected", app=self.app, live_calls=len(self.calls))

    # -- taking calls back after a restart (issue 9) ------------------------

    async def _recover(self) -> None:
        """Take back the callers Asterisk kept while no controller ran; close calls that ended meanwhile.

        Asterisk keeps channels in Stasis while the app is gone and replays
        nothing (traces 07, 12). ``GET /applications/{app}`` lists them (or,
        when Asterisk forgot the app, ``GET /channels`` filtered on Stasis);
        each unknown caller's ``LIYI_CALL`` says which call it was and where
        it stood, and ``rc.resume`` goes on from there (ringing, greeting,
        flow step, queued, agent ringing, connected, hold, transfer,
        closing). The calls taken back start together once all are in the
        waiting line, so callers keep their order (R5). Agent legs nobody
        takes back are hung up; bridges left without a caller are deleted;
        a callback still dialling is stopped. A caller is never hung up (R9).
        """
        alive = await self._app_channels()
        if alive is None:
            return
        known = set(self._by_channel)
        for call in self.calls.values():
            known |= call.engine.live_channels()
        unknown = [ch for ch in alive if ch not in known]
        records = await self._open_records()
        by_channel = {r.channel_id: r for r in records if r.channel_id}
        by_id = {r.id: r for r in records}
        kept_legs: set[str] = set()
        legs: list[str] = []
        taken: list[_Adopted] = []  # started together once all are in line: FIFO across the restart
        now = self.clock()
        for channel in unknown:
            if _our_leg(channel):
                legs.append(channel)
                continue
            try:
                info = await self.ari.get_channel(channel)
            except (TimeoutError, AriError, OSError) as exc:
                log.warning("recovery.channel_unreadable", channel=channel, error=str(exc))
                continue  # cannot tell: left for the next reconnect, its record kept open
            if info is None:
                alive.remove(channel)  # gone meanwhile (404): its record is closed below
                continue
            raw = await self._read(self.ari.get_channel_var(channel, rc.VARIABLE), "recovery-getvar")
            snapshot = rc.parse_snapshot(raw if isinstance(raw, str) else None)
            if snapshot is not None and (snapshot.call_id in self.calls or snapshot.kind != "inbound"):
                log.info("recovery.skipped", channel=channel, kind=snapshot.kind)
                continue  # a callback's customer: taken back in a later slice, never hung up
            record = by_id.get(snapshot.call_id) if snapshot else None
            record = record or by_channel.get(channel)
            caller = _live_caller(channel, info, record)
            if snapshot is None and record is None:
                # Never seen by any controller (it arrived as we connected): the ordinary flow,
                # greeting and all; its StasisStart, if it still comes, is then a repeat.
                self._start_call(e.StasisStart(at=now, channel_id=channel,
                                               caller_number=caller.caller_number,
                                               caller_name=caller.caller_name,
                                               created_at=caller.created_at))
                continue
            adopted = await self._adopt(snapshot, caller, record, now)
            kept_legs |= adopted.keep
            taken.append(adopted)
        for adopted in taken:
            self._update_line(adopted.call)
        for adopted in taken:
            call = adopted.call
            call.task = asyncio.get_running_loop().create_task(
                self._run_call(call, first=adopted.commands), name=f"call-{call.call_id}")
        for leg in legs:
            if leg.split("-", 1)[1].startswith("c") and leg.split("-", 1)[0] not in self.calls:
                try:
                    info = await self.ari.get_channel(leg)
                except (TimeoutError, AriError, OSError) as exc:
                    log.warning("recovery.channel_unreadable", channel=leg, error=str(exc))
                    continue  # cannot tell: never hung up on a guess, looked at next reconnect
                if _state_of(info) != "Up":
                    alive.remove(leg)  # still dialling (or gone): stopped, its record closed below
                    continue
                kept = await self._adopt_callback(leg, by_id, now)
                if kept:
                    kept_legs.add(kept)
        for leg in legs:
            if leg in kept_legs or leg.split("-", 1)[1].startswith("c"):
                continue  # a callback's customer is a caller (R9), taken back above
            log.info("recovery.leg_released", channel=leg)
            await self._safe(self.ari.hangup(leg), "recovery-hangup-leg")
        await self._stop_unreached_callbacks(records, set(alive))
        await self._clean_bridges(kept_legs | legs_of_live(self.calls.values()))
        self._close_ended(records, set(alive), now)

    async def _adopt(self, snapshot: rc.Snapshot | None, caller: rc.LiveCaller, record: Any,
                     now: float) -> _Adopted:
        """Build the engine for one caller taken back, where it was (``rc.resume``); not started yet."""
        if snapshot is None:
            call_id = record.id if record else uuid.uuid4().hex[:12]
            engine, commands = rc.adopt_waiting(self.config, call_id, caller, now, was="unknown")
            resumed = rc.Resumed(engine, commands)
        else:
            resumed = rc.resume(self.config, snapshot, caller, await self._around(snapshot), now)
        engine = resumed.engine
        if record is None:  # the log lost its start (a write that never reached the disk)
            self._write("call_started", engine.call_id, channel_id=caller.channel_id,
                        caller_number=caller.caller_number, caller_name=caller.caller_name,
                        created_at=engine.facts.created_at or now)
        for agent in resumed.engage:
            self.roster.engage(agent, call_id=engine.call_id)
        call = LiveCall(engine=engine, first_channel=caller.channel_id)
        if snapshot is not None and snapshot.bridge and engine._bridge == snapshot.bridge:
            call.bridges.add(snapshot.bridge)  # ours to delete when the call ends
        self.calls[engine.call_id] = call
        self._by_channel[caller.channel_id] = call
        self._adopted.add(engine.call_id)
        self.calls_started += 1
        self._write("call_updated", engine.call_id, state=engine.state.value,
                    **({"agent": engine.facts.agent} if engine.agent else {}))
        log.info("recovery.adopted", call_id=engine.call_id, channel=caller.channel_id,
                 state=engine.state.value, was=snapshot.state if snapshot else None)
        return _Adopted(call, resumed.commands, resumed.keep)

    async def _around(self, snapshot: rc.Snapshot) -> rc.Around:
        """What Asterisk shows of the channels a snapshot names: only what its state needs read."""
        leg = target = None
        if snapshot.leg and snapshot.rung_at is not None:
            leg = _state_of(await self._read(self.ari.get_channel(snapshot.leg), "recovery-get-leg"))
        if snapshot.target_leg and snapshot.state == "transfer-handoff":
            target = _state_of(await self._read(self.ari.get_channel(snapshot.target_leg),
                                                "recovery-get-target"))
        bridged: frozenset[str] = frozenset()
        if snapshot.bridge:
            found = await self._read(self.ari.get_bridge(snapshot.bridge), "recovery-get-bridge")
            inside = found.get("channels") if isinstance(found, dict) else None
            if isinstance(inside, list):
                bridged = frozenset(ch for ch in inside if isinstance(ch, str))
        return rc.Around(leg=leg, target=target, bridged=bridged)

    async def _adopt_callback(self, customer: str, records: dict[str, Any], now: float) -> str | None:
        """A callback's customer on the line: connected again if still in their bridge with the
        agent; otherwise the closing words and an open line (R9) — never left with an open record.
        Returns the agent leg kept."""
        raw = await self._read(self.ari.get_channel_var(customer, rc.VARIABLE), "recovery-getvar")
        snapshot = rc.parse_snapshot(raw if isinstance(raw, str) else None)
        call_id = customer.split("-", 1)[0]
        if snapshot is not None and (snapshot.kind != "callback" or snapshot.call_id != call_id):
            snapshot = None  # not this callback's: nothing from it is trusted
        record = records.get(call_id)
        number = getattr(record, "caller_number", "") or ""
        connected = snapshot is not None and snapshot.state == "connected" \
            and bool(snapshot.agent and snapshot.leg and snapshot.bridge and snapshot.followup_id) \
            and await self._bridged(snapshot.bridge or "", customer, snapshot.leg or "")
        engine: CallbackEngine
        if connected:
            assert snapshot is not None and snapshot.agent and snapshot.bridge
            status = self.roster.get(snapshot.agent)
            engine, commands = rc.adopt_callback(
                self.config, snapshot, number=number,
                endpoint=status.endpoint if status is not None else "", at=now)
            self.roster.engage(snapshot.agent, call_id=snapshot.call_id)
        else:
            agent = (snapshot.agent if snapshot else None) or getattr(record, "agent", None) or ""
            engine, commands = rc.adopt_callback_closing(
                self.config, call_id, followup_id=(snapshot.followup_id if snapshot else None) or "",
                number=number, agent=agent, at=now)
        call = LiveCall(engine=engine)
        if connected and snapshot is not None and snapshot.bridge:
            call.bridges.add(snapshot.bridge)
        self.calls[engine.call_id] = call
        self._adopted.add(engine.call_id)
        self.calls_started += 1
        if record is None:
            self._write("call_started", engine.call_id, channel_id=customer,
                        caller_number=engine.number, caller_name="", created_at=now)
        log.info("recovery.adopted", call_id=engine.call_id, channel=customer,
                 state=engine.state.value, was=f"callback-{snapshot.state if snapshot else 'unknown'}")
        call.task = asyncio.get_running_loop().create_task(
            self._run_call(call, first=commands), name=f"callback-{engine.call_id}")
        return snapshot.leg if connected and snapshot is not None else None

    async def _stop_unreached_callbacks(self, records: list[Any], alive: set[str]) -> None:
        """A callback whose customer had not answered at the restart: its dialling is stopped (a
        ringing leg is a dial attempt, not a caller, R9) and its record is closed below (R10)."""
        for record in records:
            customer = record.channel_id or ""
            if not _our_leg(customer) or customer in alive or record.id in self.calls \
                    or not customer.split("-", 1)[1].startswith("c"):
                continue
            if record.created_at is not None and record.created_at.timestamp() >= self._started_at:
                continue
            log.info("recovery.callback_stopped", call_id=record.id)
            for leg in (customer, f"{record.id}-a1"):
                await self._safe(self.ari.hangup(leg), "recovery-hangup-callback-leg")

    async def _app_channels(self) -> list[str] | None:
        """The channels in our Stasis app now; None when Asterisk cannot say."""
        try:
            app = await self.ari.get_application()
            if app is not None:
                ids = app.get("channel_ids")
                return [ch for ch in ids if isinstance(ch, str)] if isinstance(ids, list) else []
            # subscribeAll forgets the app while it is away (trace 07): look at every channel
            return [ch["id"] for ch in await self.ari.list_channels()
                    if isinstance(ch, dict) and isinstance(ch.get("id"), str)
                    and _in_app(ch, self.app)]
        except (TimeoutError, AriError, OSError) as exc:
            log.warning("recovery.list_failed", error=str(exc))
            return None

    async def _open_records(self) -> list[Any]:
        """Calls the log holds without an end (``CallStore.open_calls``), [] if it cannot say.

        The journal is flushed first (at most 1 s), so a record written just
        before the restart is seen as open, not taken for a stranger.
        """
        reader = getattr(self.store, "open_calls", None)
        if reader is None:
            return []
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            try:
                await asyncio.wait_for(flush(timeout=1.0), 1.0)
            except Exception as exc:  # noqa: BLE001 — an unflushed journal costs a lookup, no call
                log.info("recovery.flush_failed", error=str(exc))
        try:
            return list(await reader())
        except Exception as exc:  # noqa: BLE001 — the database being down costs only the closing
            log.warning("recovery.open_calls_failed", error=str(exc))
            return []

    async def _bridged(self, bridge_id: str, *channels: str) -> bool:
        """Are all ``channels`` in the bridge now (``GET /bridges/{id}``)?"""
        found = await self._read(self.ari.get_bridge(bridge_id), "recovery-get-bridge")
        inside = found.get("channels") if isinstance(found, dict) else None
        return isinstance(inside, list) and all(ch in inside for ch in channels)

    async def _clean_bridges(self, keep_legs: set[str]) -> None:
        """Delete our app's bridges that hold no caller (a bridge outlives its channels, trace 03)."""
        app = await self._read(self.ari.get_application(), "recovery-get-app")
        ids = app.get("bridge_ids") if isinstance(app, dict) else None
        if not isinstance(ids, list):
            return
        used = {b for call in self.calls.values() for b in call.bridges}
        used |= {b for call in self.calls.values() if (b := getattr(call.engine, "_bridge", None))}
        for bridge_id in ids:
            if not isinstance(bridge_id, str) or bridge_id in used:
                continue
            found = await self._read(self.ari.get_bridge(bridge_id), "recovery-get-bridge")
            inside = found.get("channels") if isinstance(found, dict) else None
            if not isinstance(inside, list):
                continue
            if any(not _our_leg(ch) or ch.split("-", 1)[1].startswith("c") for ch in inside):
                continue  # a caller is in it: never pull the floor from under them
            log.info("recovery.bridge_deleted", bridge=bridge_id)
            await self._safe(self.ari.destroy_bridge(bridge_id), "recovery-destroy-bridge")

    def _close_ended(self, records: list[Any], alive: set[str], now: float) -> None:
        """Close every open record whose caller is gone: ended while down, nothing claimed (R10, R12)."""
        for record in records:
            if record.id in self.calls or record.id in self._adopted \
                    or (record.channel_id and record.channel_id in alive):
                continue
            if record.created_at is not None and record.created_at.timestamp() >= self._started_at:
                continue  # started by this process: it ends it itself
            detail = {"last_state": record.state, "channel": record.channel_id}
            self._write("append", record.id, at=now, source="log", kind="recovered-ended", detail=detail)
            self._write("call_ended", record.id, ended_at=now, first_hangup="unknown",
                        outcome=rc.OUTCOME_ENDED_WHILE_DOWN,
                        compliance=rc.ended_while_down(now, last_state=record.state),
                        summary={"agent": record.agent, "recovered": True,
                                 "last_state": record.state})
            log.info("recovery.closed_ended_while_down", call_id=record.id, last_state=record.state)

    async def _read(self, request: Any, what: str) -> Any:
        """An ARI read whose failure means "cannot tell" (None), never an error."""
        try:
            return await request
        except (TimeoutError, AriError, OSError) as exc:
            log.info("ari.request_failed", what=what, error=str(exc))
            return None

    async def on_disconnect(self) -> None:
        self.connected.clear()
        if self._stop is not None and self._stop.is_set():
            log.info("ari.closed", live_calls=len(self.calls))
        else:
            log.warning("ari.disconnected", live_calls=len(self.calls))

    async def run(self, stop: asyncio.Event) -> None:
        """Serve calls until ``stop`` is set."""
        self._stop = stop
        await self.ari.events(self.on_event, on_connect=self.on_connect,
                              on_disconnect=self.on_disconnect, stop=stop)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for live call workers to finish (used at shutdown and by tests)."""
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


def _our_leg(channel_id: str) -> bool:
    """A channel we originated (``<call id>-a1``, ``-t1``, ``-c1``); a caller's id is Asterisk's
    (``1796398541.8``, or ``<systemname>-1796398541.8``)."""
    call_id, sep, rest = channel_id.partition("-")
    return bool(sep) and len(call_id) == 12 and all(ch in "0123456789abcdef" for ch in call_id) \
        and rest[:1] in ("a", "t", "c") and rest[1:].isdigit()


def _state_of(channel: Any) -> str | None:
    """A channel's state ("Up", "Ringing", …) from ``GET /channels/{id}``; None when it is gone."""
    if not isinstance(channel, dict):
        return None
    state = channel.get("state")
    return state if isinstance(state, str) else "unknown"


def _in_app(channel: dict[str, Any], app: str) -> bool:
    dialplan = channel.get("dialplan")
    if not isinstance(dialplan, dict) or dialplan.get("app_name") != "Stasis":
        return False
    return str(dialplan.get("app_data", "")).split(",", 1)[0] == app


def legs_of_live(calls: Any) -> set[str]:
    """Every channel the live calls count on."""
    out: set[str] = set()
    for call in calls:
        out |= call.engine.live_channels()
    return out


def _live_caller(channel: str, info: dict[str, Any], record: Any) -> rc.LiveCaller:
    """The caller as Asterisk shows them (outside input: cleaned), with the log's times."""
    raw_caller = info.get("caller")
    who: dict[str, Any] = raw_caller if isinstance(raw_caller, dict) else {}
    created: float | None = None
    if record is not None and getattr(record, "created_at", None) is not None:
        created = record.created_at.timestamp()
    elif info.get("creationtime") is not None:
        try:
            created = parse_time(info["creationtime"])
        except BadEvent:
            created = None
    answered_at = getattr(record, "answered_at", None)
    return rc.LiveCaller(
        channel_id=channel,
        caller_number=clean_text(who.get("number")) or (getattr(record, "caller_number", "") or ""),
        caller_name=clean_text(who.get("name")) or (getattr(record, "caller_name", "") or ""),
        created_at=created, answered=info.get("state") == "Up",
        answered_at=answered_at.timestamp() if answered_at is not None else None)


def _needs_the_caller(call: LiveCall, cmd: c.Command) -> bool:
    """Commands that only make sense while the caller is there: ringing agents for them,
    and anything sent to their own channel."""
    if isinstance(cmd, (c.Dial, c.RequestAgent)):
        return True
    if isinstance(cmd, (c.Ring, c.Answer, c.Play, c.StartMusic, c.Record)):
        return call.is_caller(cmd.channel_id)
    return False


def _type_of(msg: Any) -> str:
    return str(msg.get("type")) if isinstance(msg, dict) else type(msg).__name__


def _loggable(detail: dict[str, Any]) -> dict[str, Any]:
    # keys structlog or the call's own line already use (``state`` is bound in ``_log``)
    return {k if k not in ("event", "level", "timestamp", "state") else f"_{k}": v
            for k, v in detail.items()}


def _notify(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a broken observer must not break a call
        log.exception("observer.error")
