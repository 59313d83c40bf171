"""Taking calls back after a controller restart (issue 9): pure, like the rest of ``callflow``.

Why this exists: Asterisk keeps a caller in Stasis while liyi is gone and
replays nothing when it comes back (traces 07, 12). What survives is what the
engine wrote on the caller's channel (the ``LIYI_CALL`` variable, a small JSON
snapshot written by ``EngineCore._goto``) and the call log. This module turns
those into an engine the controller can drive again — wazo-calld's state
persistor idea, without its I/O: the controller reads Asterisk and the log,
this decides what the caller gets.

Every state goes on where it was (``resume``, one function per kind of
state, the README's table): a ringing caller on their R1 plan, the greeting or
the flow step replayed, a queued caller with their ``queued_at`` (their place
in line), a ringing agent leg up to its three rings, a hold with its limit and
deadline, a warm transfer completed or fallen back under R6, the closing with
its timers. The controller reads from Asterisk only what a snapshot's state
needs (``Around``: the leg, the target, the bridge). A caller whose snapshot
is missing, or whose agent vanished while no controller ran, is taken
somewhere safe and honest: answered if not yet, told to keep waiting (or the
apology), and queued at the head of the line (R5) — never hung up (R9).

Rules whose evidence lies before the restart (R1, R2, R5) are scored
``not_applicable`` on a recovered call (``compliance._unseen_before_recovery``)
unless the resume lived through it (an answer or greeting after the restart);
a call that ended while liyi was down is closed with every rule
``not_applicable`` (``ended_while_down``): the log must not claim what nobody saw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from callflow import commands as c
from callflow import events as e
from callflow.callback import CallbackEngine
from callflow.closing import AGENT_WAIT_AFTER_THANKS_SECONDS
from callflow.compliance import NOT_APPLICABLE
from callflow.config import CallFlowConfig
from callflow.core import AGENT_RELEASE, AGENT_RING, ANSWER, IDLE, CallState, Commands
from callflow.engine import CallEngine
from callflow.facts import AgentOffer

VARIABLE = "LIYI_CALL"
RULES = tuple(f"R{n}" for n in range(1, 11))
OUTCOME_ENDED_WHILE_DOWN = "ended-while-down"
# Ids the engine makes after a recovery start here, clear of the ones the lost engine used.
ID_OFFSET = 1000
MAX_REASON = 200  # a hold's reason read back from a channel variable (outside input) is cut here
# What a caller taken back hears before waiting again: not yet with an agent, or with one lost.
WAITING_PROMPT = "queue-continue"  # 好的，请您继续稍候，我们会尽快为您接通。
AGENT_LOST_PROMPT = "requeue-apology"  # 很抱歉，刚才的客服人员暂时离开，正在为您转接…


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What ``LIYI_CALL`` said: the call's id, the state last persisted, who was connected where."""

    call_id: str
    state: str
    kind: str = "inbound"  # or "callback" (callflow/callback.py)
    agent: str | None = None
    leg: str | None = None
    bridge: str | None = None
    queue: str = ""  # the department queue it waited in ("" = any agent)
    followup_id: str | None = None  # a callback's follow-up (R8)
    step: str | None = None  # the flow step the caller was in (step, menu, name, wait-notice)
    queued_at: float | None = None  # when the caller joined the queue: their place in line (R5)
    first: bool = False  # waited at the head of the line (requeued)
    rung_at: float | None = None  # the agent named was being rung since then (R1: 3 rings)
    hold: HoldSnapshot | None = None  # the hold the caller was on (R4)
    target_agent: str | None = None  # a warm transfer's target (R6)
    target_leg: str | None = None
    closing_at: float | None = None  # when the closing started (R9 idle time counts from it)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldSnapshot:
    """A hold as written at its period's start: what the caller was told, and when the limit is."""

    reason: str
    limit: float
    started_at: float
    period_at: float
    transfer: bool = False

    @property
    def deadline(self) -> float:
        return self.period_at + self.limit


def parse_snapshot(raw: str | None) -> Snapshot | None:
    """The snapshot in ``raw``, or None when it is missing or not one of ours.

    A channel variable is outside input (anything could have set it), so
    every field is checked; a bad one gives None and the caller is treated as
    a call nobody knows, never as a crash.
    """
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    call_id, state = data.get("call_id"), data.get("state")
    if not isinstance(call_id, str) or not call_id or not isinstance(state, str):
        return None
    if not call_id.isalnum() or len(call_id) > 64:
        return None

    def text(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) and value else None

    def number(name: str, within: dict[str, Any] = data) -> float | None:
        value = within.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) and value >= 0 else None

    hold: HoldSnapshot | None = None
    raw_hold = data.get("hold")
    if isinstance(raw_hold, dict):
        limit, started, period = (number(k, raw_hold) for k in ("limit", "started_at", "period_at"))
        reason = raw_hold.get("reason")
        if limit and started is not None and period is not None and isinstance(reason, str):
            hold = HoldSnapshot(reason=reason[:MAX_REASON], limit=limit, started_at=started, period_at=period,
                                transfer=raw_hold.get("transfer") is True)
    raw_transfer = data.get("transfer")
    transfer: dict[str, Any] = raw_transfer if isinstance(raw_transfer, dict) else {}

    def of_transfer(name: str) -> str | None:
        value = transfer.get(name)
        return value if isinstance(value, str) and value else None

    return Snapshot(call_id=call_id, state=state, kind=text("kind") or "inbound",
                    agent=text("agent"), leg=text("leg"), bridge=text("bridge"),
                    queue=text("queue") or "", followup_id=text("followup_id"),
                    step=text("step"), queued_at=number("queued_at"), first=data.get("first") is True,
                    rung_at=number("rung_at"), hold=hold, target_agent=of_transfer("target_agent"),
                    target_leg=of_transfer("target_leg"), closing_at=number("closing_at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveCaller:
    """The caller's channel as Asterisk shows it now, with what the log remembers of the call."""

    channel_id: str
    caller_number: str = ""
    caller_name: str = ""
    created_at: float | None = None
    answered: bool = False  # the channel is Up
    answered_at: float | None = None  # from the log, if it got there


def ended_while_down(at: float, *, last_state: str | None) -> dict[str, dict[str, Any]]:
    """The compliance record of a call that ended while no controller watched: nothing claimed."""
    evidence = {"recovered": True, "closed_at": at, "last_state": last_state,
                "why": "the call ended while the controller was down; its end was not seen"}
    return {rule: {"status": NOT_APPLICABLE, "evidence": dict(evidence)} for rule in RULES}


def _engine(config: CallFlowConfig, call_id: str, caller: LiveCaller, at: float) -> CallEngine:
    engine = CallEngine(config, call_id)
    answered_at = (caller.answered_at if caller.answered_at is not None else at) \
        if caller.answered else None
    engine._restore_caller(at, channel=caller.channel_id, number=caller.caller_number,
                           name=caller.caller_name, created_at=caller.created_at,
                           answered_at=answered_at, id_offset=ID_OFFSET)
    return engine


def adopt_connected(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                    at: float) -> tuple[CallEngine, Commands]:
    """A caller still talking with their agent: an engine in CONNECTED, as if it had never stopped.

    Only call this once Asterisk showed the caller and ``snapshot.leg`` both
    in ``snapshot.bridge``. The agent counts as connected from here; the
    roster must engage them for ``snapshot.call_id`` (the controller does).
    """
    assert snapshot.agent and snapshot.leg and snapshot.bridge
    engine = _engine(config, snapshot.call_id, caller, at)
    engine._restore_agent(at, agent=snapshot.agent, leg=snapshot.leg, bridge=snapshot.bridge,
                          caller_in_bridge=True, id_offset=ID_OFFSET)
    return engine, [
        *engine._goto(CallState.CONNECTED),
        engine._log(at, "recovered", state="connected", was=snapshot.state, agent=snapshot.agent,
                    leg=snapshot.leg, bridge=snapshot.bridge),
    ]


def adopt_waiting(config: CallFlowConfig, call_id: str, caller: LiveCaller, at: float, *,
                  was: str, agent_lost: bool = False, queue: str = "") -> tuple[CallEngine, Commands]:
    """A caller whose place in the flow cannot be resumed exactly: safe, honest, at the head of the line.

    Answered if still ringing (R1 cannot be claimed either way), told to keep
    waiting — or, when their agent was lost, the apology — then music and the
    next free agent, ahead of everyone who came after them (R5). The
    snapshot on the channel names the call again, so a second restart finds it.
    """
    engine = _engine(config, call_id, caller, at)
    f = engine.facts
    if queue and any(d.name == queue for d in config.departments):
        engine._queue_name = queue  # a department renamed since is any agent's to answer
    f.requeued = True  # first in line: they waited before anyone who joined since
    out: Commands = []
    if not caller.answered:
        f.answered_at = at
        out.append(c.Answer(channel_id=caller.channel_id))
    snapshot: dict[str, object] = {"call_id": call_id, "state": CallState.REQUEUE.value,
                                   "agent": None, "leg": None, "bridge": None}
    if engine._queue_name:
        snapshot["queue"] = engine._queue_name
    out += [
        c.SetVar(channel_id=caller.channel_id, name=VARIABLE,
                 value=json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False)),
        c.StopMusic(channel_id=caller.channel_id),  # whatever the lost controller left playing
        *engine._goto(CallState.REQUEUE),
        engine._log(at, "recovered", state="requeue", was=was, answered_by_recovery=not caller.answered,
                    agent_lost=agent_lost, queue=engine._queue_name or "all"),
        *engine._play(at, (AGENT_LOST_PROMPT if agent_lost else WAITING_PROMPT,), "requeue"),
    ]
    return engine, out


def adopt_closing(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                  at: float) -> tuple[CallEngine, Commands]:
    """A caller who had heard the closing words and whose agent is gone: the line stays open (R9).

    The agent's leg is no longer there, so the agent's side ended first; the
    line waits for the caller, released only after the long idle time.
    """
    engine = _engine(config, snapshot.call_id, caller, at)
    f = engine.facts
    f.first_hangup = "agent"
    if snapshot.agent:
        f.agent = snapshot.agent
        f.agents_talked.append(snapshot.agent)
    since = snapshot.closing_at if snapshot.closing_at is not None and snapshot.closing_at <= at else at
    f.closing_started_at = since
    f.closing_reason = "recovered"
    return engine, [
        *engine._goto(CallState.CLOSING),
        engine._log(at, "recovered", state="closing", was=snapshot.state, agent=snapshot.agent,
                    closing_at=since),
        engine._timer(IDLE, max(at, since + config.idle_release_seconds)),
    ]


def adopt_back_to_agent(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                        at: float, *, apology: str | None = "hold-return"
                        ) -> tuple[CallEngine, Commands]:
    """A caller out of the bridge (on hold) whose agent still waits in it: back with the agent.

    The hold's reason, limit and timers died with the old controller, so it
    cannot be resumed exactly; returning the caller to their agent with the
    apology is what the hold would have come to at its limit (R4): music until
    both are really in the bridge, then the conversation goes on.
    """
    assert snapshot.agent and snapshot.leg and snapshot.bridge
    engine = _engine(config, snapshot.call_id, caller, at)
    engine._restore_agent(at, agent=snapshot.agent, leg=snapshot.leg, bridge=snapshot.bridge,
                          caller_in_bridge=False, id_offset=ID_OFFSET)
    return engine, [
        engine._log(at, "recovered", state="back-with-agent", was=snapshot.state,
                    agent=snapshot.agent, leg=snapshot.leg, bridge=snapshot.bridge),
        *engine._back_to_agent(at, apology),
    ]


def adopt_callback(config: CallFlowConfig, snapshot: Snapshot, *, number: str, endpoint: str,
                   at: float) -> tuple[CallbackEngine, Commands]:
    """A callback whose agent and customer are still in their bridge: connected again (R8, R9)."""
    assert snapshot.agent and snapshot.bridge and snapshot.followup_id
    engine = CallbackEngine(config, snapshot.call_id, followup_id=snapshot.followup_id,
                            number=number, agent=snapshot.agent, endpoint=endpoint)
    return engine, engine.restore_connected(at, bridge=snapshot.bridge, id_offset=ID_OFFSET)


# -- exact resume, per state (issue 9) -------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Around:
    """What Asterisk shows now of the channels the snapshot names, read by the controller.

    ``leg``/``target``: the channel's state ("Up", "Ringing", …) or None when it
    is gone (or was never named); ``bridged``: the channels in the snapshot's
    bridge now.
    """

    leg: str | None = None
    target: str | None = None
    bridged: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Resumed:
    """A call taken back: its engine, what to do first, and the agent legs it goes on with."""

    engine: CallEngine
    commands: Commands
    keep: frozenset[str] = frozenset()  # agent legs the call counts on: never hung up as strays
    engage: tuple[str, ...] = ()  # agents the roster must count as busy with this call


_FLOW_STATES = ("step", "menu", "name", "wait-notice")
_WITH_AGENT = ("connected", "closing-question")


def resume(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller, around: Around,
           at: float) -> Resumed:
    """Each state goes on where it was (see the module's table in README): pure, like the engine."""
    state = snapshot.state
    if state == "ringing":
        return _resume_ringing(config, snapshot, caller, at)
    if state in _FLOW_STATES and snapshot.step:
        found = _resume_step(config, snapshot, caller, at)
        if found is not None:
            return found
    if state == "offering" and snapshot.queued_at is not None:
        return _resume_queued(config, snapshot, caller, around, at)
    if state in _WITH_AGENT or state in ("hold", "transfer-consent", "transfer-handoff", "closing"):
        found = _resume_with_agent(config, snapshot, caller, around, at)
        if found is not None:
            return found
    if state == "closing":
        engine, out = adopt_closing(config, snapshot, caller, at)
        return Resumed(engine, out)
    lost = snapshot.agent is not None and state not in ("offering", *_FLOW_STATES)
    engine, out = adopt_waiting(config, snapshot.call_id, caller, at, was=state, agent_lost=lost,
                                queue=snapshot.queue)
    return Resumed(engine, out)


def _resumed_log(engine: CallEngine, at: float, snapshot: Snapshot, state: str, **detail: object) -> c.Log:
    return engine._log(at, "recovered", state=state, was=snapshot.state, **detail)


def _resume_ringing(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                    at: float) -> Resumed:
    """Still ringing: answered on the original R1 plan (rings count from the first ring);
    answered but not past the greeting: the greeting again, in full, before anything else (R2)."""
    engine = _engine(config, snapshot.call_id, caller, at)
    f = engine.facts
    assert f.created_at is not None
    if not caller.answered:
        engine.state = CallState.RINGING
        answer_at = f.created_at + config.answer_seconds()
        out: Commands = [_resumed_log(engine, at, snapshot, "ringing",
                                      first_ring_at=f.created_at, answer_planned_at=round(answer_at, 3))]
        if answer_at <= at:
            return Resumed(engine, out + engine._answer(at))
        return Resumed(engine, [*out, engine._timer(ANSWER, answer_at)])
    answered_at = f.answered_at if f.answered_at is not None else at
    greeting = config.closed_prompt if engine._closed_flow else config.greeting_for(answered_at)
    f.greeting_prompt = greeting
    f.greeting_started_at = at
    f.answered_at = answered_at
    engine.state = CallState.GREETING
    return Resumed(engine, [
        # the lost controller's greeting, if it still plays (always the call's first prompt)
        c.StopPlayback(playback_id=f"{snapshot.call_id}-p1"),
        _resumed_log(engine, at, snapshot, "greeting"),
        engine._log(at, "flow-resumed", step="greeting", flow=engine._flow.name),
        *engine._play(at, (greeting,), "greeting"),
        engine._log(at, "greeting", prompt=greeting, closed=engine._closed_flow, replayed=True),
    ])


def _resume_step(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                 at: float) -> Resumed | None:
    """In a flow step (a prompt, a menu, the name, the wait notice): that step again, from its start."""
    engine = _engine(config, snapshot.call_id, caller, at)
    assert snapshot.step is not None
    if snapshot.step not in {step.name for step in engine._flow.steps}:
        return None  # the flow was edited since: the caller is queued instead, never lost
    if engine.facts.answered_at is None:
        engine.facts.answered_at = at
    engine._queue_name = snapshot.queue if any(d.name == snapshot.queue for d in config.departments) \
        else ""
    out: Commands = [_resumed_log(engine, at, snapshot, snapshot.state, step=snapshot.step),
                     engine._log(at, "flow-resumed", step=snapshot.step, flow=engine._flow.name)]
    return Resumed(engine, out + engine._run_step(at, snapshot.step))


def _resume_queued(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller, around: Around,
                   at: float) -> Resumed:
    """Waiting for an agent: same queue, same place in line (``queued_at``), and an agent whose
    phone was ringing rings on up to the 3 rings counted from when it began, then rolls over."""
    engine = _engine(config, snapshot.call_id, caller, at)
    f = engine.facts
    if snapshot.queue and any(d.name == snapshot.queue for d in config.departments):
        engine._queue_name = snapshot.queue
    f.queued_at = snapshot.queued_at
    f.requeued = snapshot.first
    if f.answered_at is None:
        f.answered_at = at  # answered before it was queued; when is the log's to say
    out: Commands = [_resumed_log(engine, at, snapshot, "offering", queued_at=snapshot.queued_at)]
    keep: frozenset[str] = frozenset()
    engage: tuple[str, ...] = ()
    ringing = snapshot.agent and snapshot.leg and snapshot.rung_at is not None \
        and around.leg is not None
    if ringing:
        assert snapshot.agent and snapshot.leg and snapshot.rung_at is not None
        offer = AgentOffer(agent=snapshot.agent, leg=snapshot.leg, rung_at=snapshot.rung_at)
        engine._offer = offer
        f.offers.append(offer)
        keep, engage = frozenset({snapshot.leg}), (snapshot.agent,)
    out += engine._resume_queue(at)
    if ringing:
        assert snapshot.leg is not None and snapshot.rung_at is not None
        ring_end = snapshot.rung_at + config.cadence.ring_end(config.agent_rings)
        out.append(engine._log(at, "agent-ringing-resumed", agent=snapshot.agent, leg=snapshot.leg,
                               rung_at=snapshot.rung_at, ring_end=round(ring_end, 3)))
        out.append(engine._timer(AGENT_RING, max(at, ring_end)))
        if around.leg == "Up":  # the agent answered while no controller ran: bridge them now
            out += engine.handle(e.StasisStart(at=at, channel_id=snapshot.leg))
    return Resumed(engine, out, keep, engage)


def _resume_with_agent(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                       around: Around, at: float) -> Resumed | None:
    """A call whose agent (or transfer target) may still be there: None when nobody is."""
    state, bridged = snapshot.state, around.bridged
    me = caller.channel_id
    agent, leg, bridge = snapshot.agent, snapshot.leg, snapshot.bridge
    target, target_leg = snapshot.target_agent, snapshot.target_leg
    first_there = bool(agent and leg and bridge and leg in bridged)
    if state == "transfer-handoff" and target and target_leg and bridge \
            and {me, target_leg} <= bridged:
        # the handoff had happened: the caller talks with the target (R6.4); the first agent goes
        moved = Snapshot(call_id=snapshot.call_id, state="connected", agent=target, leg=target_leg,
                         bridge=bridge, queue=snapshot.queue)
        engine, out = adopt_connected(config, moved, caller, at)
        out += [engine._log(at, "transfer-completed", target=target, leg=target_leg, recovered=True)]
        if leg and leg in bridged:
            out.append(c.Hangup(channel_id=leg))
        return Resumed(engine, out, frozenset({target_leg}), (target,))
    if not first_there:
        if state == "transfer-handoff" and target and target_leg and bridge \
                and around.target == "Up" and target_leg in bridged:
            moved = Snapshot(call_id=snapshot.call_id, state="hold", agent=target, leg=target_leg,
                             bridge=bridge, queue=snapshot.queue)
            engine, out = adopt_back_to_agent(config, moved, caller, at, apology=None)
            return Resumed(engine, out, frozenset({target_leg}), (target,))
        return None
    assert agent and leg and bridge
    keep, engage = frozenset({leg}), (agent,)
    release: Commands = [c.Hangup(channel_id=target_leg)] if target_leg else []
    if state in _WITH_AGENT and me in bridged:
        engine, out = adopt_connected(config, snapshot, caller, at)
        return Resumed(engine, out, keep, engage)
    if state == "closing" and me in bridged:
        return _resume_closing_with_agent(config, snapshot, caller, at)
    if state == "hold" and snapshot.hold is not None and not snapshot.hold.transfer \
            and config.hold.is_allowed(snapshot.hold.limit) and snapshot.hold.period_at <= at:
        engine = _engine(config, snapshot.call_id, caller, at)
        engine._restore_agent(at, agent=agent, leg=leg, bridge=bridge, caller_in_bridge=False,
                              id_offset=ID_OFFSET)
        h = snapshot.hold
        out = [_resumed_log(engine, at, snapshot, "hold", agent=agent, deadline=round(h.deadline, 3)),
               *engine._resume_hold(at, reason=h.reason, limit=h.limit, started_at=h.started_at,
                                    period_at=h.period_at)]
        return Resumed(engine, out, keep, engage)
    if state in ("transfer-consent", "transfer-handoff") or (state == "hold" and snapshot.hold):
        # a warm transfer cut by the restart: the caller back with the first agent, with the
        # apology, the target's leg released (R6.5) — never dropped
        apology = None if state == "transfer-consent" else "transfer-failed"
        engine, out = adopt_back_to_agent(config, snapshot, caller, at, apology=apology)
        out.insert(1, engine._log(at, "transfer-ended", outcome="controller-restarted",
                                  target_agent=target, caller_returned_to="first-agent",
                                  consent=None if state == "transfer-consent" else "given"))
        return Resumed(engine, [*release, *out], keep, engage)
    engine, out = adopt_back_to_agent(config, snapshot, caller, at)
    return Resumed(engine, out, keep, engage)


def _resume_closing_with_agent(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                               at: float) -> Resumed:
    """Closing with the agent still on the line: the line stays open (R9), the agent is released
    after the usual wait, and the idle release still counts from the closing's start."""
    assert snapshot.agent and snapshot.leg and snapshot.bridge
    engine = _engine(config, snapshot.call_id, caller, at)
    engine._restore_agent(at, agent=snapshot.agent, leg=snapshot.leg, bridge=snapshot.bridge,
                          caller_in_bridge=True, id_offset=ID_OFFSET)
    f = engine.facts
    since = snapshot.closing_at if snapshot.closing_at is not None and snapshot.closing_at <= at else at
    f.closing_started_at = since
    f.closing_reason = "agent-ended"
    engine.state = CallState.CLOSING
    return Resumed(engine, [
        _resumed_log(engine, at, snapshot, "closing", agent=snapshot.agent, closing_at=since),
        engine._timer(IDLE, max(at, since + config.idle_release_seconds)),
        engine._timer(AGENT_RELEASE, at + AGENT_WAIT_AFTER_THANKS_SECONDS),
    ], frozenset({snapshot.leg}), (snapshot.agent,))


def adopt_callback_closing(config: CallFlowConfig, call_id: str, *, followup_id: str, number: str,
                           agent: str, at: float) -> tuple[CallbackEngine, Commands]:
    """A callback's customer on the line but not with their agent: the closing, the line open (R9)."""
    engine = CallbackEngine(config, call_id, followup_id=followup_id, number=number, agent=agent,
                            endpoint="")
    return engine, engine.restore_closing(at, id_offset=ID_OFFSET)
