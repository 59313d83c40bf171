"""Properties of a restart at any moment (issue 9): random calls, the controller killed at a random
instant and started again (``tests/restart_world.RestartWorld``), in the pure engine world.

Whatever the moment: the service never hangs up a caller (R9), every call ends in the log exactly
once (R10), a hold keeps its announced deadline (R4), and callers waiting for an agent keep their
order (R5).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from callflow import commands as c
from callflow import events as e
from callflow import recovery as rc
from callflow.config import AgentConfig, CallFlowConfig
from tests.engine_driver import CURRENT, T0, AgentBehaviour
from tests.restart_world import RestartWorld

AGENTS = (AgentConfig("agent1", "PJSIP/agent1"), AgentConfig("agent2", "PJSIP/agent2"))
CFG = CallFlowConfig(agents=AGENTS)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    """One or two callers, agents that answer or not, a hold or a transfer, a kill somewhere."""
    hang_up = draw(st.floats(20.0, 240.0))
    return {
        "callers": draw(st.integers(1, 2)),
        "second_after": draw(st.floats(0.0, 10.0)),
        "agent1": draw(st.sampled_from(["answer", "never", "decline", "ring-out"])),
        "agent1_after": draw(st.floats(0.5, 14.0)),
        "agent2": draw(st.sampled_from(["answer", "never"])),
        "agent2_after": draw(st.floats(0.5, 14.0)),
        "hold_at": draw(st.none() | st.floats(5.0, 120.0)),
        "resume_after": draw(st.none() | st.floats(1.0, 120.0)),
        "transfer_at": draw(st.none() | st.floats(5.0, 120.0)),
        "agent_leaves_at": draw(st.none() | st.floats(5.0, 200.0)),
        "hang_up": hang_up,
        "kill": draw(st.floats(0.0, hang_up)),
        "kill_near": draw(st.sampled_from(["anywhere", "hold", "transfer"])),
        "kill_after": draw(st.floats(0.0, 20.0)),
        "second_kill": draw(st.none() | st.floats(0.0, hang_up)),
    }


def play(s: dict[str, Any]) -> RestartWorld:
    world = RestartWorld(CFG, agents={
        "agent1": AgentBehaviour(s["agent1"], after=s["agent1_after"], verdict_after=1.0),
        "agent2": AgentBehaviour(s["agent2"], after=s["agent2_after"], verdict_after=1.0)})
    calls = ["c1", "c2"][:s["callers"]]
    for i, call in enumerate(calls):
        start = T0 + i * s["second_after"]
        world.add_call(call, created_at=start, hangs_up_at=start + s["hang_up"] + i)
    if s["hold_at"] is not None:
        world.agent_does("c1", T0 + s["hold_at"], e.HoldRequested(at=0, agent=CURRENT))
        if s["resume_after"] is not None:
            world.agent_does("c1", T0 + s["hold_at"] + s["resume_after"],
                             e.ResumeRequested(at=0, agent=CURRENT))
    if s["transfer_at"] is not None:
        world.agent_does("c1", T0 + s["transfer_at"],
                         e.TransferRequested(at=0, agent=CURRENT, target="agent2"))
        world.press("c1", T0 + s["transfer_at"] + 3.0, "1")
    if s["agent_leaves_at"] is not None:
        world.agent_hangs_up("c1", CURRENT, T0 + s["agent_leaves_at"])
    kill = s["kill"]
    near = {"hold": s["hold_at"], "transfer": s["transfer_at"]}.get(s["kill_near"])
    if near is not None:  # right after a hold or a transfer began: its states are short
        kill = min(s["hang_up"], near + s["kill_after"])
    world.restart_at(T0 + kill)
    if s["second_kill"] is not None:
        world.restart_at(T0 + s["second_kill"] + 0.37)
    world.run(until=T0 + s["hang_up"] + 3 + CFG.idle_release_seconds)
    return world


def caller_channels(world: RestartWorld) -> set[str]:
    return {line.channel_id for line in world.lines.values()}


@SETTINGS
@given(scenarios())
def test_no_caller_is_ever_hung_up_by_the_service(s: dict[str, Any]) -> None:
    """Killed and restarted at any moment, the service never hangs up or releases a caller (R9)."""
    world = play(s)
    callers = caller_channels(world)
    assert not [i for i in world.issued if isinstance(i.command, (c.Hangup, c.ReleaseIdleLine))
                and i.command.channel_id in callers]
    assert all(line.first_hangup != "service" for line in world.lines.values())


@SETTINGS
@given(scenarios())
def test_every_call_ends_in_the_log_exactly_once(s: dict[str, Any]) -> None:
    """Whatever the kill moment, each call gives exactly one CallEnded (one log record end, R10)."""
    world = play(s)
    for call_id in world.lines:
        ended = [i for i in world.issued if i.call_id == call_id and isinstance(i.command, c.CallEnded)]
        assert len(ended) == 1, (call_id, world.restarts, world.log_kinds(call_id)[-8:])


@SETTINGS
@given(scenarios())
def test_a_hold_keeps_its_announced_deadline_across_the_restart(s: dict[str, Any]) -> None:
    """A caller on hold at the kill is on hold after it with the deadline they were told (R4)."""
    world = play(s)
    for call_id, snapshot in world.snapshots_at_kill.items():
        resumed = world.resumed.get(call_id)
        if snapshot is None or snapshot.state != "hold" or snapshot.hold is None \
                or snapshot.hold.transfer or resumed is None or resumed.engine.facts.holds == []:
            continue
        held = [log for log in resumed.commands if isinstance(log, c.Log) and log.kind == "hold-resumed"]
        assert held and held[0].detail["deadline"] == round(snapshot.hold.deadline, 3)
        limit = [cmd for cmd in resumed.commands if isinstance(cmd, c.StartTimer) and cmd.name == "hold-limit"]
        restarted_at = next(at for at, call, _, _ in world.restarts if call == call_id)
        assert limit and limit[0].at == max(restarted_at, snapshot.hold.deadline)


@SETTINGS
@given(st.floats(0.5, 30.0), st.floats(0.0, 30.0), st.floats(1.0, 40.0))
def test_waiting_callers_keep_their_order_across_the_restart(gap: float, kill: float, free: float) -> None:
    """Two callers queued with no agent free, a restart, then an agent: the first to queue is
    the first rung (R5, first come first served across the restart)."""
    world = RestartWorld(CFG, agents={"agent1": AgentBehaviour("answer", after=1.0)},
                         registered=())
    world.add_call("c1", created_at=T0, hangs_up_at=T0 + 400)
    world.add_call("c2", created_at=T0 + gap, hangs_up_at=T0 + 400)
    world.restart_at(T0 + gap + 12 + kill)  # both are queued by then
    agent = world.roster.get("agent1")
    assert agent is not None
    world._schedule(T0 + gap + 12 + kill + free, lambda: world.roster.phone_state(
        agent.endpoint, registered=True, device_state="NOT_INUSE"))
    world.run(until=T0 + gap + 12 + kill + free + 30)
    dials = [(i.at, i.call_id) for i in world.issued if isinstance(i.command, c.Dial)]
    assert dials and dials[0][1] == "c1", dials


RESTART_GOALS = (("ringing", "ringing"), ("ringing", "greeting"), ("wait-notice", "wait-notice"),
                 ("offering", "offering"), ("connected", "connected"), ("hold", "hold"),
                 ("hold", "connected"), ("transfer-consent", "connected"), ("closing", "closing"))


@pytest.mark.parametrize("goal", RESTART_GOALS, ids=["->".join(g) for g in RESTART_GOALS])
def test_the_random_kills_land_in_each_state(goal: tuple[str, str]) -> None:
    """The generator kills calls in this state (was -> resumed as), so the properties above are about it."""
    found = find(scenarios(), lambda s: any((was, now) == goal for _, _, was, now in play(s).restarts),
                 settings=settings(max_examples=1500, deadline=None, database=None, derandomize=True,
                                   phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    assert any((was, now) == goal for _, _, was, now in play(found).restarts)


# -- a snapshot is outside input: anything in LIYI_CALL, anything Asterisk shows ---------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
STATES = ("ringing", "step", "menu", "name", "wait-notice", "offering", "connected", "hold",
          "transfer-consent", "transfer-handoff", "requeue", "closing-question", "closing", "x")
LEGS = st.sampled_from([None, "abcdef123456-a1", "abcdef123456-t1", "1796398541.8", ""])


@st.composite
def snapshots(draw: Any) -> str:
    fields: dict[str, Any] = {"call_id": "abcdef123456", "state": draw(st.sampled_from(STATES))}
    for name in ("agent", "leg", "bridge", "queue", "step", "queued_at", "rung_at", "closing_at",
                 "hold", "transfer", "first"):
        if draw(st.booleans()):
            fields[name] = draw(st.sampled_from(["a1", "abcdef123456-a1", "abcdef123456-b", "main"])
                                if name in ("agent", "leg", "bridge", "step") else JSONISH)
    if draw(st.booleans()):
        fields["hold"] = {"reason": draw(st.text(max_size=300)), "limit": draw(JSONISH | st.just(60)),
                          "started_at": draw(st.floats(0, 2e9)), "period_at": draw(st.floats(0, 2e9)),
                          "transfer": draw(st.booleans())}
    return json.dumps(fields, allow_nan=True)


@SETTINGS
@given(snapshots(), st.booleans(), LEGS, LEGS,
       st.frozensets(st.sampled_from(["1796398541.8", "abcdef123456-a1", "abcdef123456-t1"])))
def test_any_snapshot_and_any_asterisk_view_resume_without_error_or_hanging_up(
        raw: str, answered: bool, leg: str | None, target: str | None, bridged: frozenset[str]) -> None:
    """Whatever ``LIYI_CALL`` holds and whatever Asterisk shows, a resume never raises, never
    hangs up or releases the caller, and the caller's hang-up then ends the call exactly once."""
    snapshot = rc.parse_snapshot(raw)
    if snapshot is None:
        return
    caller = rc.LiveCaller(channel_id="1796398541.8", created_at=T0 - 30, answered=answered,
                           answered_at=T0 - 28 if answered else None)
    around = rc.Around(leg="Up" if leg else None, target="Ringing" if target else None, bridged=bridged)
    resumed = rc.resume(CFG, snapshot, caller, around, T0)
    assert not any(isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)) and cmd.channel_id == caller.channel_id
                   for cmd in resumed.commands)
    assert not resumed.engine.ended
    out = resumed.engine.handle(e.ChannelHangupRequest(at=T0 + 1, channel_id=caller.channel_id))
    assert len([cmd for cmd in out if isinstance(cmd, c.CallEnded)]) == 1
