"""Connected means in the bridge (issue 8, parts 3 and 4): what Asterisk reports, not what we asked.

A 2xx to addChannel does not prove a caller is there (trace 14: a caller who
just hung up is refused with 400/422, or gets a 204 and bounces through the
bridge), and a channel with a prompt still playing enters a bridge only when
the prompt ends. So the engine decides "connected", a transfer's handoff and
a hold's resume on ``ChannelEnteredBridge`` of both parties, keeps the
caller's music until then, and stops a prompt before bridging its channel.
Each test drives one call through ``tests/engine_driver.py`` to the moment of
interest, then feeds the engine the exact Asterisk events of the race.
"""

from __future__ import annotations

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score_r4, score_r6
from callflow.config import AgentConfig, CallFlowConfig, Department
from callflow.core import JOIN, JOIN_SECONDS
from callflow.engine import CallEngine, CallState
from callflow.facts import CallFacts, HoldRecord, TransferRecord
from tests.engine_driver import T0, AgentBehaviour, World

AGENTS = tuple(AgentConfig(f"agent{i}", f"PJSIP/agent{i}") for i in (1, 2, 3))
CFG = CallFlowConfig(agents=AGENTS, departments=(Department("售后", "1", ("agent2", "agent3")),))
CALLER = "chan-c1"
LEG = "c1-a1"
TARGET = "c1-t1"
BRIDGE = "c1-b"


def ringing_agent() -> tuple[World, CallEngine]:
    """A caller in the queue hearing music while agent1's phone rings (it never answers by itself)."""
    world = World(CFG, agents={"agent1": AgentBehaviour("never")})
    world.add_call("c1", created_at=T0)
    world.run(T0 + 6)
    engine = world.engines["c1"]
    assert engine.state is CallState.OFFERING and world.commands("c1", c.Dial)[-1].channel_id == LEG
    return world, engine


def logs(commands: list[c.Command], kind: str) -> list[c.Log]:
    return [cmd for cmd in commands if isinstance(cmd, c.Log) and cmd.kind == kind]


def of(commands: list[c.Command], kind: type[c.Command]) -> list[c.Command]:
    return [cmd for cmd in commands if isinstance(cmd, kind)]


class TestFirstConnect:
    def test_connected_is_logged_when_both_are_in_the_bridge_and_music_stops_only_then(self) -> None:
        """The agent answering bridges both but logs "connected" and stops the music only at the second ChannelEnteredBridge."""
        _, engine = ringing_agent()
        out = engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        assert of(out, c.Bridge) == [c.Bridge(bridge_id=BRIDGE, channel_ids=(CALLER, LEG), absorb_dtmf=(LEG,))]
        assert not logs(out, "connected") and not of(out, c.StopMusic)
        assert engine.state is CallState.CONNECTING and engine.facts.agent is None
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 8.01, channel_id=CALLER, bridge_id=BRIDGE))
        assert out == []
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 8.02, channel_id=LEG, bridge_id=BRIDGE))
        assert of(out, c.StopMusic) == [c.StopMusic(channel_id=CALLER)]
        assert logs(out, "connected")[0].detail["agent"] == "agent1"
        assert (engine.state, engine.facts.agent, engine.facts.connected_at) == \
            (CallState.CONNECTED, "agent1", T0 + 8.02)

    def test_caller_refused_by_addchannel_is_not_connected_and_the_agent_is_released(self) -> None:
        """A 422 for a caller who just hung up ends the call as abandoned: no "connected", agent hung up and free at once."""
        _, engine = ringing_agent()
        engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        out = engine.handle(e.BridgeFailed(at=T0 + 8.01, bridge_id=BRIDGE, channel_ids=(CALLER,),
                                           status=422, reason="Channel not in Stasis application"))
        assert c.Hangup(channel_id=LEG) in out
        assert of(out, c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="caller-hung-up",
                                                          served=False)]
        assert logs(out, "ended")[0].detail["outcome"] == "abandoned-connecting"
        assert engine.facts.agent is None and engine.facts.agents_talked == []
        ended = of(out, c.CallEnded)[0]
        assert isinstance(ended, c.CallEnded) and ended.compliance["R3"]["status"] == "not_applicable"
        assert engine.handle(e.StasisEnd(at=T0 + 8.02, channel_id=CALLER)) == []

    def test_caller_bouncing_through_the_bridge_after_a_204_is_not_connected(self) -> None:
        """Trace 14's 204: ChannelEnteredBridge, ChannelLeftBridge, StasisEnd of the caller — never counted as connected."""
        _, engine = ringing_agent()
        engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 8.01, channel_id=CALLER, bridge_id=BRIDGE))
        out += engine.handle(e.ChannelLeftBridge(at=T0 + 8.011, channel_id=CALLER, bridge_id=BRIDGE))
        out += engine.handle(e.StasisEnd(at=T0 + 8.012, channel_id=CALLER))
        out += engine.handle(e.ChannelEnteredBridge(at=T0 + 8.02, channel_id=LEG, bridge_id=BRIDGE))
        assert not logs(out, "connected")
        assert logs(out, "ended")[0].detail["outcome"] == "abandoned-connecting"
        assert of(out, c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="caller-hung-up",
                                                          served=False)]
        assert engine.facts.connected_at is None

    def test_caller_hanging_up_before_any_bridge_event_is_not_connected(self) -> None:
        """StasisEnd of the caller while connecting ends the call abandoned, not completed with the agent."""
        _, engine = ringing_agent()
        engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        out = engine.handle(e.StasisEnd(at=T0 + 8.5, channel_id=CALLER))
        assert logs(out, "ended")[0].detail["outcome"] == "abandoned-connecting"
        assert engine.facts.agent is None

    def test_agent_refused_by_addchannel_goes_back_to_waiting_with_music(self) -> None:
        """A refused agent leg is hung up and released; the caller keeps their music and the next agent is asked."""
        _, engine = ringing_agent()
        engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        out = engine.handle(e.BridgeFailed(at=T0 + 8.01, bridge_id=BRIDGE, channel_ids=(LEG,), status=400,
                                           reason="Channel not found"))
        assert c.Hangup(channel_id=LEG) in out and of(out, c.RequestAgent)
        assert not of(out, c.StopMusic) and engine.state is CallState.OFFERING
        assert logs(out, "agent-not-connected")[0].detail["agent"] == "agent1"

    def test_nobody_seen_in_the_bridge_in_time_counts_as_not_connected(self) -> None:
        """Without ChannelEnteredBridge within JOIN_SECONDS the agent is released and the caller waits on."""
        _, engine = ringing_agent()
        out = engine.handle(e.StasisStart(at=T0 + 8, channel_id=LEG))
        timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == JOIN)
        assert isinstance(timer, c.StartTimer) and timer.at == T0 + 8 + JOIN_SECONDS
        out = engine.handle(e.TimerFired(at=timer.at, name=JOIN, token=timer.token))
        assert logs(out, "bridge-join-timeout") and engine.state is CallState.OFFERING
        assert not logs(out, "connected")


DEPT_AT = T0 + 20


def department_target_announced() -> tuple[World, CallEngine]:
    """agent1 talks with the caller, transfers to 售后; agent2 answers and hears transfer-announce."""
    world = World(CFG, agents={"agent1": AgentBehaviour("answer", after=3.0),
                               "agent2": AgentBehaviour("answer", after=4.0),
                               "agent3": AgentBehaviour("never")})
    world.roster.phone_state("PJSIP/agent3", device_state="INUSE")
    world.add_call("c1", created_at=T0)
    world.agent_does("c1", DEPT_AT, e.TransferRequested(at=0, agent="agent1", target="dept:售后"))
    world.press("c1", DEPT_AT + 3, "1")
    world.run(T0 + 28)
    engine = world.engines["c1"]
    announce = [cmd for cmd in world.commands("c1", c.Play) if cmd.channel_id == TARGET]
    assert announce and announce[-1].media[0] == "sound:liyi/transfer-announce"
    return world, engine


class TestDepartmentHandoff:
    def test_accepting_during_the_announcement_stops_it_before_bridging(self) -> None:
        """Key 1 during transfer-announce stops that prompt before the Bridge, so Asterisk adds the target at once."""
        world, engine = department_target_announced()
        announce = [cmd for cmd in world.commands("c1", c.Play) if cmd.channel_id == TARGET][-1]
        out = engine.handle(e.ChannelDtmfReceived(at=T0 + 30, channel_id=TARGET, digit="1"))
        stop = out.index(c.StopPlayback(playback_id=announce.playback_id))
        bridge = next(i for i, cmd in enumerate(out) if isinstance(cmd, c.Bridge))
        assert stop < bridge and out[bridge] == c.Bridge(bridge_id=BRIDGE, channel_ids=(CALLER, TARGET),
                                                         absorb_dtmf=(TARGET,))
        assert not of(out, c.StopMusic) and c.Hangup(channel_id=LEG) not in out
        assert engine.state is CallState.HANDOFF

    def test_caller_hears_music_until_the_target_is_really_in_then_handed_over(self) -> None:
        """The caller's music stops, the hold ends and agent1 leaves only when the target's ChannelEnteredBridge arrives."""
        world, engine = department_target_announced()
        engine.handle(e.ChannelDtmfReceived(at=T0 + 30, channel_id=TARGET, digit="1"))
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 30.01, channel_id=CALLER, bridge_id=BRIDGE))
        out += engine.handle(e.ChannelLeftBridge(at=T0 + 30.01, channel_id=LEG, bridge_id=BRIDGE))
        assert not of(out, c.StopMusic) and not logs(out, "transfer-completed")
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 37.7, channel_id=TARGET, bridge_id=BRIDGE))
        assert of(out, c.StopMusic) == [c.StopMusic(channel_id=CALLER)]
        assert c.Hangup(channel_id=LEG) in out and logs(out, "transfer-completed")
        r = engine.facts.transfers[0]
        assert (r.outcome, r.handoff_at, r.caller_in_bridge_at, r.target_in_bridge_at) == \
            ("completed", T0 + 37.7, T0 + 30.01, T0 + 37.7)
        assert r.caller_alone_seconds == 0.0
        assert score_r6(engine.facts)["status"] == "kept"
        assert score_r4(engine.facts, CFG)["status"] == "kept"
        assert engine.facts.holds[0].silent_seconds == 0.0 and engine.agent == "agent2"

    def test_target_refused_by_addchannel_brings_the_caller_back_to_the_first_agent(self) -> None:
        """A refused target (400) is released; the caller goes back to agent1, who was never hung up, with an apology."""
        world, engine = department_target_announced()
        engine.handle(e.ChannelDtmfReceived(at=T0 + 30, channel_id=TARGET, digit="1"))
        out = engine.handle(e.BridgeFailed(at=T0 + 30.01, bridge_id=BRIDGE, channel_ids=(TARGET,), status=400,
                                           reason="Channel not found"))
        assert c.Hangup(channel_id=LEG) not in out and c.Hangup(channel_id=TARGET) in out
        assert c.Bridge(bridge_id=BRIDGE, channel_ids=(LEG,), absorb_dtmf=(LEG,)) in out
        assert any(isinstance(cmd, c.Play) and cmd.media == ("sound:liyi/transfer-failed",) for cmd in out)
        r = engine.facts.transfers[0]
        assert (r.outcome, r.caller_returned_to) == ("handoff-failed", "first-agent")
        assert score_r6(engine.facts)["status"] == "kept"  # R6.5: back with an apology, never dropped
        assert engine.agent == "agent1" and engine.state is CallState.CONNECTED

    def test_caller_hanging_up_during_the_handoff_releases_target_and_first_agent(self) -> None:
        """The caller's StasisEnd during the handoff hangs up and frees both agents; the call is not handed over."""
        world, engine = department_target_announced()
        engine.handle(e.ChannelDtmfReceived(at=T0 + 30, channel_id=TARGET, digit="1"))
        out = engine.handle(e.StasisEnd(at=T0 + 30.5, channel_id=CALLER))
        assert {cmd.channel_id for cmd in of(out, c.Hangup)} == {LEG, TARGET}  # type: ignore[attr-defined]
        assert {cmd.agent for cmd in of(out, c.ReleaseAgent)} == {"agent1", "agent2"}  # type: ignore[attr-defined]
        assert engine.facts.transfers[0].outcome == "caller-hung-up" and engine.ended

    def test_whole_department_transfer_in_the_world_is_never_silent(self) -> None:
        """Through the simulated world, key 1 during the announcement hands over with R4 and R6 kept and no silence."""
        world, engine = department_target_announced()
        world.agent_keys("c1", "agent2", T0 + 30, "1")
        world.run(T0 + 40)
        assert world.lines["c1"].bridged_with == TARGET
        assert world.silent_spans("c1", T0 + 8, T0 + 40) == []
        assert engine.facts.transfers[0].outcome == "completed"
        assert score_r6(engine.facts)["status"] == "kept"


class TestResume:
    def test_music_goes_on_until_the_caller_is_back_in_the_bridge(self) -> None:
        """Resuming a hold keeps the caller's music until their ChannelEnteredBridge, then stops it."""
        world = World(CFG, agents={"agent1": AgentBehaviour("answer", after=3.0)})
        world.add_call("c1", created_at=T0)
        world.agent_does("c1", T0 + 20, e.HoldRequested(at=0, agent="agent1", reason="查询"))
        world.run(T0 + 30)
        engine = world.engines["c1"]
        assert engine.state is CallState.HOLD
        out = engine.handle(e.ResumeRequested(at=T0 + 31, agent="agent1"))
        assert c.Bridge(bridge_id=BRIDGE, channel_ids=(CALLER,), absorb_dtmf=()) in out
        assert not of(out, c.StopMusic) and engine.state is CallState.CONNECTED
        out = engine.handle(e.ChannelEnteredBridge(at=T0 + 31.02, channel_id=CALLER, bridge_id=BRIDGE))
        assert of(out, c.StopMusic) == [c.StopMusic(channel_id=CALLER)]


def _alone_facts(alone: float) -> CallFacts:
    """A completed department transfer in which the caller sat ``alone`` seconds in the bridge, music off."""
    facts = CallFacts(call_id="c1")
    facts.holds.append(HoldRecord(agent="agent1", reason="转接", limit_seconds=60, started_at=T0,
                                  for_transfer=True, periods=[T0], ended_at=T0 + 20, outcome="transferred",
                                  limit_kept=True, longest_overrun_seconds=-40.0))
    facts.transfers.append(TransferRecord(
        first_agent="agent1", target="dept:售后", department="售后", reason="", requested_at=T0 - 3,
        consent="caller-key", consent_at=T0, target_agent="agent2", leg=TARGET, rung_at=T0,
        answered_at=T0 + 4, accepted=True, accepted_at=T0 + 12, handoff_at=T0 + 12 + alone,
        outcome="completed", caller_returned_to="target", handoff_requested_at=T0 + 12,
        caller_in_bridge_at=T0 + 12, target_in_bridge_at=T0 + 12 + alone, caller_music_stopped_at=T0 + 12))
    return facts


class TestAloneInTheBridge:
    def test_the_incident_of_issue_8_breaks_r4_and_r6(self) -> None:
        """7.7 s in the bridge with no target and no music (music stopped at the request) is R6 and R4 broken."""
        facts = _alone_facts(7.7)
        assert facts.transfers[0].caller_alone_seconds == 7.7
        r6, r4 = score_r6(facts), score_r4(facts, CFG)
        assert r6["status"] == "broken" and "without the target" in r6["evidence"]["reason"]
        assert r4["status"] == "broken" and r4["evidence"]["alone_seconds"] == [7.7]

    def test_a_short_moment_is_not_a_breach(self) -> None:
        """Half a second between the caller and the target entering the bridge is still a kept handoff."""
        facts = _alone_facts(0.5)
        assert score_r6(facts)["status"] == "kept" and score_r4(facts, CFG)["status"] == "kept"
