"""Taking calls back after a controller restart (issue 9): pure, like the rest of ``callflow``.

Why this exists: Asterisk keeps a caller in Stasis while liyi is gone and
replays nothing when it comes back (traces 07, 12). What survives is what the
engine wrote on the caller's channel (the ``LIYI_CALL`` variable, a small JSON
snapshot written by ``EngineCore._goto``) and the call log. This module turns
those into an engine the controller can drive again — wazo-calld's state
persistor idea, without its I/O: the controller reads Asterisk and the log,
this decides what the caller gets.

What it can resume exactly is a connected call (caller and agent both still
in the recorded bridge): an engine in ``CONNECTED``, so the caller hanging up
releases the agent and the agent hanging up first gives the caller the
closing prompt (R9). Anything else it cannot resume exactly, so the caller is
taken somewhere safe and honest: answered if not yet, told to keep waiting,
and queued at the head of the line (R5) — never hung up (R9).

Rules whose evidence lies before the restart (R1, R2, R5) are scored
``not_applicable`` on a recovered call (``compliance._unseen_before_recovery``);
a call that ended while liyi was down is closed with every rule
``not_applicable`` (``ended_while_down``): the log must not claim what nobody saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from callflow import commands as c
from callflow.callback import CallbackEngine
from callflow.compliance import NOT_APPLICABLE
from callflow.config import CallFlowConfig
from callflow.core import IDLE, CallState, Commands
from callflow.engine import CallEngine

VARIABLE = "LIYI_CALL"
RULES = tuple(f"R{n}" for n in range(1, 11))
OUTCOME_ENDED_WHILE_DOWN = "ended-while-down"
# Ids the engine makes after a recovery start here, clear of the ones the lost engine used.
ID_OFFSET = 1000
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

    return Snapshot(call_id=call_id, state=state, kind=text("kind") or "inbound",
                    agent=text("agent"), leg=text("leg"), bridge=text("bridge"),
                    queue=text("queue") or "", followup_id=text("followup_id"))


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
    f.closing_started_at = at
    f.closing_reason = "recovered"
    return engine, [
        *engine._goto(CallState.CLOSING),
        engine._log(at, "recovered", state="closing", was=snapshot.state, agent=snapshot.agent),
        engine._timer(IDLE, at + config.idle_release_seconds),
    ]


def adopt_back_to_agent(config: CallFlowConfig, snapshot: Snapshot, caller: LiveCaller,
                        at: float) -> tuple[CallEngine, Commands]:
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
        *engine._back_to_agent(at, "hold-return"),
    ]


def adopt_callback(config: CallFlowConfig, snapshot: Snapshot, *, number: str, endpoint: str,
                   at: float) -> tuple[CallbackEngine, Commands]:
    """A callback whose agent and customer are still in their bridge: connected again (R8, R9)."""
    assert snapshot.agent and snapshot.bridge and snapshot.followup_id
    engine = CallbackEngine(config, snapshot.call_id, followup_id=snapshot.followup_id,
                            number=number, agent=snapshot.agent, endpoint=endpoint)
    return engine, engine.restore_connected(at, bridge=snapshot.bridge, id_offset=ID_OFFSET)
