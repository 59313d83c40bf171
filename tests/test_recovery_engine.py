"""Building a call's engine from what survives a controller restart (issue 9), without any I/O.

A restarted controller knows only the ``LIYI_CALL`` snapshot on the caller's
channel, what Asterisk shows of that channel and the call log; ``callflow.recovery``
turns that into an engine. These tests feed such engines the events that
follow and check what the caller, the agent and the log would notice.
"""

from __future__ import annotations

import json

from callflow import commands as c
from callflow import events as e
from callflow import recovery as rc
from callflow.config import AgentConfig, CallFlowConfig, Department
from callflow.engine import CallState
from callflow.roster import Roster

AGENTS = (AgentConfig("a1", "PJSIP/a1"), AgentConfig("a2", "PJSIP/a2"))
CFG = CallFlowConfig(agents=AGENTS, wait_prompt=None)
T = 1_800_000_000.0
CALLER = "1796398541.8"
CONNECTED = json.dumps({"call_id": "abcdef123456", "state": "connected", "agent": "a1",
                        "leg": "abcdef123456-a1", "bridge": "abcdef123456-b"})


def live(answered: bool = True) -> rc.LiveCaller:
    return rc.LiveCaller(channel_id=CALLER, caller_number="13800138000", created_at=T - 60,
                         answered=answered, answered_at=T - 58 if answered else None)


def connected_engine():  # type: ignore[no-untyped-def]
    snap = rc.parse_snapshot(CONNECTED)
    assert snap is not None
    return rc.adopt_connected(CFG, snap, live(), T)


class TestSnapshot:
    def test_the_engine_s_own_snapshot_is_read_back(self) -> None:
        """The JSON the engine writes on the caller's channel names the call, agent, leg and bridge."""
        snap = rc.parse_snapshot(CONNECTED)
        assert snap == rc.Snapshot(call_id="abcdef123456", state="connected", agent="a1",
                                   leg="abcdef123456-a1", bridge="abcdef123456-b")

    def test_a_foreign_or_broken_variable_is_not_taken_for_a_call(self) -> None:
        """Garbage in LIYI_CALL makes the caller a call nobody knows, never a crash."""
        for raw in (None, "", "{", "[]", '{"state":"connected"}', '{"call_id":"../x","state":"a"}',
                    '{"call_id":5,"state":"connected"}'):
            assert rc.parse_snapshot(raw) is None


class TestAdoptConnected:
    def test_the_caller_hanging_up_releases_the_agent_and_ends_once_caller_first(self) -> None:
        """A re-adopted connected call ends like any other: agent leg hung up, caller first, once."""
        engine, first = connected_engine()
        assert engine.state is CallState.CONNECTED and engine.agent == "a1"
        assert any(isinstance(cmd, c.Log) and cmd.kind == "recovered" for cmd in first)
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id=CALLER))
        out += engine.handle(e.StasisEnd(at=T + 5.01, channel_id=CALLER))
        assert c.Hangup(channel_id="abcdef123456-a1") in out
        assert [cmd.agent for cmd in out if isinstance(cmd, c.ReleaseAgent)] == ["a1"]
        ended = [cmd for cmd in out if isinstance(cmd, c.CallEnded)]
        assert len(ended) == 1 and ended[0].first_hangup == "caller"
        assert c.DestroyBridge(bridge_id="abcdef123456-b") in out

    def test_the_agent_leaving_first_gives_the_caller_the_closing_and_keeps_the_line(self) -> None:
        """After a restart, an agent who hangs up first still leaves the caller the thanks, never a hang-up (R9)."""
        engine, _ = connected_engine()
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id="abcdef123456-a1"))
        plays = [cmd for cmd in out if isinstance(cmd, c.Play) and cmd.channel_id == CALLER]
        assert plays and any("closing" in m for m in plays[0].media)
        assert engine.state is CallState.CLOSING and not engine.ended
        assert not any(isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)) and cmd.channel_id == CALLER
                       for cmd in out)

    def test_compliance_does_not_claim_what_happened_before_the_restart(self) -> None:
        """R1, R2 and R5 of a re-adopted call are 'not applicable', marked recovered; R9 is still scored."""
        engine, _ = connected_engine()
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id=CALLER))
        record = next(cmd for cmd in out if isinstance(cmd, c.CallEnded)).compliance
        for rule in ("R1", "R2", "R5"):
            assert record[rule]["status"] == "not_applicable"
            assert record[rule]["evidence"]["recovered"] is True
        assert record["R9"]["status"] == "kept"
        assert record["R3"]["status"] == "not_applicable"  # name and purpose may predate the restart

    def test_caller_details_written_after_the_restart_still_count(self) -> None:
        """Name and purpose an agent records after the restart make R3 kept on a re-adopted call."""
        engine, _ = connected_engine()
        engine.handle(e.CallerInfoUpdated(at=T + 1, agent="a1", caller_name="张先生",
                                          purpose="报修", wanted=""))
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id=CALLER))
        record = next(cmd for cmd in out if isinstance(cmd, c.CallEnded)).compliance
        assert record["R3"]["status"] == "kept"

    def test_new_legs_and_prompts_never_reuse_the_lost_engine_s_ids(self) -> None:
        """Prompts played after a restart get ids the lost controller never used."""
        engine, _ = connected_engine()
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id="abcdef123456-a1"))
        ids = [cmd.playback_id for cmd in out if isinstance(cmd, c.Play)]
        assert ids and all(int(pid.rsplit("-p", 1)[1]) > rc.ID_OFFSET for pid in ids)


class TestAdoptWaiting:
    def test_a_ringing_caller_is_answered_told_to_wait_and_queued_first(self) -> None:
        """A caller taken back before reaching an agent is answered, hears a wait prompt, then music
        and the first free agent, at the head of the line — never hung up."""
        engine, out = rc.adopt_waiting(CFG, "abcdef123456", live(answered=False), T, was="ringing")
        assert c.Answer(channel_id=CALLER) in out
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        assert play.media[-1].endswith(rc.WAITING_PROMPT)
        out = engine.handle(e.PlaybackFinished(at=T + 3, playback_id=play.playback_id, state="done"))
        assert any(isinstance(cmd, c.StartMusic) for cmd in out)
        request = next(cmd for cmd in out if isinstance(cmd, c.RequestAgent))
        assert request.first_in_line
        assert not any(isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)) for cmd in out)

    def test_an_answered_caller_is_not_answered_again_and_reaches_an_agent(self) -> None:
        """An already-answered caller taken back goes on to an agent and is then connected as usual."""
        engine, out = rc.adopt_waiting(CFG, "abcdef123456", live(), T, was="ringing")
        assert not any(isinstance(cmd, c.Answer) for cmd in out)
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        engine.handle(e.PlaybackFinished(at=T + 3, playback_id=play.playback_id, state="done"))
        out = engine.handle(e.AgentPicked(at=T + 3.1, agent="a2", endpoint="PJSIP/a2"))
        dial = next(cmd for cmd in out if isinstance(cmd, c.Dial))
        out = engine.handle(e.StasisStart(at=T + 4, channel_id=dial.channel_id))
        bridge = next(cmd for cmd in out if isinstance(cmd, c.Bridge))
        for ch in bridge.channel_ids:
            out = engine.handle(e.ChannelEnteredBridge(at=T + 4.1, channel_id=ch,
                                                       bridge_id=bridge.bridge_id))
        assert engine.state is CallState.CONNECTED and engine.agent == "a2"

    def test_a_caller_whose_agent_was_lost_hears_the_apology(self) -> None:
        """A caller whose agent is gone after the restart hears the apology, not silence."""
        _engine, out = rc.adopt_waiting(CFG, "abcdef123456", live(), T, was="connected",
                                        agent_lost=True)
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        assert play.media[-1].endswith(rc.AGENT_LOST_PROMPT)


class TestQueueKept:
    def test_a_queued_caller_s_department_survives_a_restart(self) -> None:
        """The queue a caller waits in is on their channel, and a restarted controller queues them there again."""
        cfg = CallFlowConfig(agents=AGENTS, wait_prompt=None,
                             departments=(Department("报修", "2", ("a2",)),))
        engine, _ = rc.adopt_waiting(cfg, "abcdef123456", live(), T, was="ringing", queue="报修")
        setvar = next(cmd for cmd in _ if isinstance(cmd, c.SetVar))
        snap = rc.parse_snapshot(setvar.value)
        assert snap is not None and snap.queue == "报修" and snap.call_id == "abcdef123456"
        play = next(cmd for cmd in _ if isinstance(cmd, c.Play))
        out = engine.handle(e.PlaybackFinished(at=T + 3, playback_id=play.playback_id, state="done"))
        request = next(cmd for cmd in out if isinstance(cmd, c.RequestAgent))
        assert request.queue == "报修" and request.only == ("a2",) and request.first_in_line

    def test_a_queue_no_longer_configured_falls_back_to_any_agent(self) -> None:
        """A caller whose department was removed from the config waits for any agent, not for nobody."""
        engine, out = rc.adopt_waiting(CFG, "abcdef123456", live(), T, was="offering", queue="gone")
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        out = engine.handle(e.PlaybackFinished(at=T + 3, playback_id=play.playback_id, state="done"))
        request = next(cmd for cmd in out if isinstance(cmd, c.RequestAgent))
        assert request.queue == ""


class TestAdoptBackToAgent:
    def test_a_held_caller_goes_back_to_their_waiting_agent_with_the_apology(self) -> None:
        """A caller on hold when the controller died is put back with their agent, with music until
        both are in the bridge and the apology, and then counts as talking again."""
        snap = rc.parse_snapshot(CONNECTED)
        assert snap is not None
        engine, out = rc.adopt_back_to_agent(CFG, snap, live(), T)
        bridge = next(cmd for cmd in out if isinstance(cmd, c.Bridge))
        assert bridge.bridge_id == "abcdef123456-b" and bridge.channel_ids == (CALLER,)
        assert any(isinstance(cmd, c.StartMusic) for cmd in out)
        apology = [cmd for cmd in out if isinstance(cmd, c.Play)]
        assert apology and apology[0].media[-1].endswith("hold-return")
        out = engine.handle(e.ChannelEnteredBridge(at=T + 0.2, channel_id=CALLER,
                                                   bridge_id="abcdef123456-b"))
        assert any(isinstance(cmd, c.StopMusic) for cmd in out)
        assert engine.state is CallState.CONNECTED and engine.agent == "a1"
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id=CALLER))
        assert c.Hangup(channel_id="abcdef123456-a1") in out


class TestAdoptClosing:
    def test_a_caller_in_closing_keeps_an_open_line_and_ends_as_agent_first(self) -> None:
        """A caller who had heard the thanks keeps the line until they hang up; the agent's side left first."""
        snap = rc.Snapshot(call_id="abcdef123456", state="closing", agent="a1")
        engine, out = rc.adopt_closing(CFG, snap, live(), T)
        assert engine.state is CallState.CLOSING
        assert not any(isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)) for cmd in out)
        out = engine.handle(e.ChannelHangupRequest(at=T + 9, channel_id=CALLER))
        ended = [cmd for cmd in out if isinstance(cmd, c.CallEnded)]
        assert len(ended) == 1 and ended[0].first_hangup == "agent"


class TestAdoptCallback:
    SNAP = rc.Snapshot(call_id="abcdef123456", state="connected", kind="callback", agent="a1",
                       leg="abcdef123456-a1", bridge="abcdef123456-b", followup_id="f00d")

    def test_the_customer_hanging_up_frees_the_agent_and_ends_the_callback_once(self) -> None:
        """A callback taken back after a restart ends like any other: the agent's leg released, customer first."""
        engine, first = rc.adopt_callback(CFG, self.SNAP, number="13900139000", endpoint="PJSIP/a1", at=T)
        assert any(isinstance(cmd, c.Log) and cmd.kind == "recovered" for cmd in first)
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id="abcdef123456-c1"))
        assert c.Hangup(channel_id="abcdef123456-a1") in out
        ended = [cmd for cmd in out if isinstance(cmd, c.CallEnded)]
        assert len(ended) == 1 and ended[0].first_hangup == "caller"

    def test_the_agent_leaving_first_leaves_the_customer_the_closing_and_an_open_line(self) -> None:
        """After a restart, a callback agent who hangs up first leaves the customer the thanks, never a hang-up (R9)."""
        engine, _ = rc.adopt_callback(CFG, self.SNAP, number="13900139000", endpoint="PJSIP/a1", at=T)
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id="abcdef123456-a1"))
        plays = [cmd for cmd in out if isinstance(cmd, c.Play) and cmd.channel_id == "abcdef123456-c1"]
        assert plays and not engine.ended
        assert not any(isinstance(cmd, c.Hangup) and cmd.channel_id == "abcdef123456-c1" for cmd in out)

    def test_the_callback_snapshot_is_read_back_with_its_follow_up(self) -> None:
        """The JSON a callback writes on the customer's channel names its follow-up."""
        raw = json.dumps({"call_id": "abcdef123456", "kind": "callback", "state": "connected",
                          "agent": "a1", "leg": "abcdef123456-a1", "bridge": "abcdef123456-b",
                          "followup_id": "f00d"})
        assert rc.parse_snapshot(raw) == self.SNAP


class TestEndedWhileDown:
    def test_every_rule_is_not_applicable_and_marked_recovered(self) -> None:
        """A call that ended while liyi was down claims no rule kept or broken."""
        record = rc.ended_while_down(T, last_state="connected")
        assert set(record) == {f"R{n}" for n in range(1, 11)}
        assert {v["status"] for v in record.values()} == {"not_applicable"}
        assert all(v["evidence"]["recovered"] for v in record.values())


class TestRosterEngage:
    def test_an_adopted_agent_is_not_offered_another_caller(self) -> None:
        """The agent of a re-adopted call is busy: the roster picks someone else."""
        roster = Roster([("a1", "PJSIP/a1"), ("a2", "PJSIP/a2")], assume_registered=True, now=0.0)
        assert roster.engage("a1", call_id="abcdef123456")
        picked = roster.pick("other", now=1.0)
        assert picked is not None and picked.name == "a2"
