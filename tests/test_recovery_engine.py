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
from callflow.engine import CallEngine, CallState
from callflow.flow import GREETING, MENU, QUEUE, Flow, Step
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


# -- exact resume, per state (rc.resume) -----------------------------------------------------

CALL = "abcdef123456"
LEG = f"{CALL}-a1"
BRIDGE = f"{CALL}-b"


def snap(state: str, **fields: object) -> rc.Snapshot:
    return rc.Snapshot(call_id=CALL, state=state, **fields)  # type: ignore[arg-type]


def timer(out: list[c.Command], name: str) -> c.StartTimer:
    return next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == name)


def logs(out: list[c.Command]) -> list[str]:
    return [cmd.kind for cmd in out if isinstance(cmd, c.Log)]


def never_hangs_up_the_caller(out: list[c.Command]) -> bool:
    return not any(isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)) and cmd.channel_id == CALLER
                   for cmd in out)


def ringing_caller(created: float) -> rc.LiveCaller:
    return rc.LiveCaller(channel_id=CALLER, caller_number="13800138000", created_at=created,
                         answered=False)


class TestResumeRinging:
    def test_a_ringing_caller_is_answered_on_the_original_r1_plan(self) -> None:
        """Still ringing at the restart: answered at the planned moment counted from the first ring,
        then greeted; R1 is judged (kept), not waved through."""
        created = T - 0.5
        r = rc.resume(CFG, snap("ringing"), ringing_caller(created), rc.Around(), T)
        assert r.engine.state is CallState.RINGING and not any(isinstance(x, c.Answer) for x in r.commands)
        answer = timer(r.commands, "answer")
        assert answer.at == created + CFG.answer_seconds()
        out = r.engine.handle(e.TimerFired(at=answer.at, name="answer", token=answer.token))
        assert c.Answer(channel_id=CALLER) in out and r.engine.state is CallState.GREETING
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        r.engine.handle(e.PlaybackFinished(at=answer.at + 3, playback_id=play.playback_id, state="done"))
        out = r.engine.handle(e.ChannelHangupRequest(at=answer.at + 9, channel_id=CALLER))
        ended = next(cmd for cmd in out if isinstance(cmd, c.CallEnded))
        assert ended.compliance["R1"]["status"] == "kept"
        assert ended.compliance["R2"]["status"] == "kept"

    def test_a_caller_whose_answer_moment_passed_during_the_restart_is_answered_at_once(self) -> None:
        """The plan's moment went by while no controller ran: answered at once, never left ringing."""
        r = rc.resume(CFG, snap("ringing"), ringing_caller(T - 4), rc.Around(), T)
        assert c.Answer(channel_id=CALLER) in r.commands


class TestResumeGreeting:
    def test_an_answered_caller_hears_the_greeting_again_in_full_before_the_queue(self) -> None:
        """Answered, greeting cut by the restart: the greeting is played again, then the flow goes on
        (R2 still met); the caller is not answered twice."""
        r = rc.resume(CFG, snap("ringing"), live(), rc.Around(), T)
        assert r.engine.state is CallState.GREETING
        assert not any(isinstance(cmd, c.Answer) for cmd in r.commands)
        play = next(cmd for cmd in r.commands if isinstance(cmd, c.Play))
        assert play.media[0].endswith(CFG.greeting_for(T - 58))
        assert "flow-resumed" in logs(r.commands)
        out = r.engine.handle(e.PlaybackFinished(at=T + 3, playback_id=play.playback_id, state="done"))
        assert any(isinstance(cmd, c.RequestAgent) for cmd in out)
        out = r.engine.handle(e.ChannelHangupRequest(at=T + 9, channel_id=CALLER))
        ended = next(cmd for cmd in out if isinstance(cmd, c.CallEnded))
        assert ended.compliance["R2"]["status"] == "kept"


MENU_CFG = CallFlowConfig(
    agents=AGENTS, wait_prompt=None, departments=(Department("咨询", "1", ("a1",)), Department("报修", "2", ("a2",))),
    open_flow=Flow("open", "greeting", (
        Step("greeting", GREETING, next="main"),
        Step("main", MENU, prompt="menu-main", keys=(("1", "consult"), ("2", "repair")),
             default="consult", repeat=2, timeout_seconds=5.0),
        Step("consult", QUEUE, department="咨询"),
        Step("repair", QUEUE, department="报修"))))


class TestResumeStep:
    def test_a_caller_in_a_menu_hears_the_menu_again_and_their_key_counts(self) -> None:
        """In a menu at the restart: the menu is replayed (timeline ``flow-resumed``) and the key the
        caller then presses takes them to that department's queue."""
        r = rc.resume(MENU_CFG, snap("menu", step="main"), live(), rc.Around(), T)
        assert r.engine.state is CallState.MENU and "flow-resumed" in logs(r.commands)
        play = next(cmd for cmd in r.commands if isinstance(cmd, c.Play))
        assert play.media[0].endswith("menu-main")
        r.engine.handle(e.PlaybackFinished(at=T + 2, playback_id=play.playback_id, state="done"))
        out = r.engine.handle(e.ChannelDtmfReceived(at=T + 3, channel_id=CALLER, digit="2"))
        request = next(cmd for cmd in out if isinstance(cmd, c.RequestAgent))
        assert request.queue == "报修" and request.only == ("a2",)

    def test_a_step_removed_from_the_flow_since_queues_the_caller_instead(self) -> None:
        """A step the edited flow no longer has: the caller is queued, never stuck or dropped."""
        r = rc.resume(MENU_CFG, snap("menu", step="gone"), live(), rc.Around(), T)
        assert r.engine.state is CallState.REQUEUE and never_hangs_up_the_caller(r.commands)


class TestResumeQueued:
    def test_a_queued_caller_keeps_their_place_and_their_maximum_wait(self) -> None:
        """Queued at T-40: after the restart the caller is still counted from T-40 (their place in
        line), hears music, and the callback offer still comes at T-40 + max wait (R5)."""
        r = rc.resume(CFG, snap("offering", queued_at=T - 40), live(), rc.Around(), T)
        f = r.engine.facts
        assert r.engine.state is CallState.OFFERING and f.queued_at == T - 40 and not f.requeued
        assert r.engine.waiting_queue == ""
        assert any(isinstance(cmd, c.StartMusic) for cmd in r.commands)
        assert any(isinstance(cmd, c.RequestAgent) for cmd in r.commands)
        q = CFG.queue_for("")
        assert timer(r.commands, "queue-max-wait").at == T - 40 + q.max_wait_seconds

    def test_the_engine_s_queue_snapshot_reads_back_with_when_it_joined(self) -> None:
        """The snapshot written on joining the queue carries queued_at, so a restart keeps the place."""
        engine = CallEngine(CFG, CALL)
        out = engine.handle(e.StasisStart(at=T, channel_id=CALLER, created_at=T))
        answer = timer(out, "answer")
        out = engine.handle(e.TimerFired(at=answer.at, name="answer", token=answer.token))
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        out = engine.handle(e.PlaybackFinished(at=T + 5, playback_id=play.playback_id, state="done"))
        setvar = [cmd for cmd in out if isinstance(cmd, c.SetVar)][-1]
        read = rc.parse_snapshot(setvar.value)
        assert read is not None and read.state == "offering" and read.queued_at == T + 5


class TestResumeRingingAgent:
    SNAP = snap("offering", queued_at=T - 20, agent="a1", leg=LEG, rung_at=T - 4)

    def test_the_agent_leg_rings_on_to_its_three_rings_then_rolls_over(self) -> None:
        """Ringing an agent at the restart: the leg rings on until 3 rings counted from when it
        began, then it is hung up, the agent released and the next agent asked for (R1)."""
        r = rc.resume(CFG, self.SNAP, live(), rc.Around(leg="Ringing"), T)
        assert r.keep == frozenset({LEG}) and r.engage == ("a1",)
        assert not any(isinstance(cmd, c.RequestAgent) for cmd in r.commands)
        ring = timer(r.commands, "agent-ring")
        assert ring.at == T - 4 + CFG.cadence.ring_end(CFG.agent_rings)
        out = r.engine.handle(e.TimerFired(at=ring.at, name="agent-ring", token=ring.token))
        assert c.Hangup(channel_id=LEG) in out
        assert [cmd.agent for cmd in out if isinstance(cmd, c.ReleaseAgent)] == ["a1"]
        request = next(cmd for cmd in out if isinstance(cmd, c.RequestAgent))
        assert "a1" in request.skip

    def test_an_agent_who_answered_while_no_controller_ran_is_bridged_with_the_caller(self) -> None:
        """The leg is Up at the restart: the caller is put in a bridge with it and connected."""
        r = rc.resume(CFG, self.SNAP, live(), rc.Around(leg="Up"), T)
        bridge = next(cmd for cmd in r.commands if isinstance(cmd, c.Bridge))
        assert set(bridge.channel_ids) == {CALLER, LEG} and bridge.bridge_id != BRIDGE
        for ch in bridge.channel_ids:
            r.engine.handle(e.ChannelEnteredBridge(at=T + 0.1, channel_id=ch, bridge_id=bridge.bridge_id))
        assert r.engine.state is CallState.CONNECTED and r.engine.agent == "a1"

    def test_a_leg_gone_while_down_is_not_waited_for(self) -> None:
        """The leg vanished meanwhile: the next agent is asked for at once."""
        r = rc.resume(CFG, self.SNAP, live(), rc.Around(leg=None), T)
        assert any(isinstance(cmd, c.RequestAgent) for cmd in r.commands) and not r.keep


class TestResumeHold:
    HOLD = rc.HoldSnapshot(reason="查询相关信息", limit=60.0, started_at=T - 20, period_at=T - 20)

    def test_a_hold_keeps_its_limit_deadline_and_timers(self) -> None:
        """On hold at the restart, agent still in the bridge: still on hold with music, the same
        announced limit and deadline, the limit question at the deadline (R4)."""
        r = rc.resume(CFG, snap("hold", agent="a1", leg=LEG, bridge=BRIDGE, hold=self.HOLD),
                      live(), rc.Around(bridged=frozenset({LEG})), T)
        assert r.engine.state is CallState.HOLD
        view = r.engine.hold_view()
        assert view is not None and view["ends_at"] == T + 40 and view["limit_seconds"] == 60.0
        assert any(isinstance(cmd, c.StartMusic) for cmd in r.commands)
        limit = timer(r.commands, "hold-limit")
        assert limit.at == T + 40
        out = r.engine.handle(e.TimerFired(at=limit.at, name="hold-limit", token=limit.token))
        assert r.engine.state is CallState.HOLD_ASK
        assert any(isinstance(cmd, c.Play) and cmd.media[-1].endswith("hold-limit-ask") for cmd in out)

    def test_the_hold_written_by_the_engine_reads_back_exactly(self) -> None:
        """The snapshot an engine writes when a hold starts carries reason, limit and period start."""
        engine, _ = connected_engine()
        out = engine.handle(e.HoldRequested(at=T + 1, agent="a1", reason="查账", limit_seconds=90))
        read = rc.parse_snapshot([cmd for cmd in out if isinstance(cmd, c.SetVar)][-1].value)
        assert read is not None and read.state == "hold" and read.hold is not None
        assert (read.hold.reason, read.hold.limit, read.hold.period_at) == ("查账", 90.0, T + 1)

    def test_a_hold_whose_agent_left_while_down_requeues_with_the_apology(self) -> None:
        """The holding agent is gone: the caller hears the apology and waits for the next agent."""
        r = rc.resume(CFG, snap("hold", agent="a1", leg=LEG, bridge=BRIDGE, hold=self.HOLD),
                      live(), rc.Around(), T)
        play = next(cmd for cmd in r.commands if isinstance(cmd, c.Play))
        assert play.media[-1].endswith(rc.AGENT_LOST_PROMPT) and never_hangs_up_the_caller(r.commands)


class TestResumeTransfer:
    TARGET_LEG = f"{CALL}-t1"

    def test_a_transfer_in_consultation_falls_back_to_the_first_agent_with_the_apology(self) -> None:
        """Held for a transfer at the restart: the target's leg is released and the caller goes
        back to the first agent with ``transfer-failed`` (R6.5) — never dropped."""
        hold = rc.HoldSnapshot(reason="转接", limit=60.0, started_at=T - 10, period_at=T - 10, transfer=True)
        r = rc.resume(CFG, snap("hold", agent="a1", leg=LEG, bridge=BRIDGE, hold=hold,
                                target_agent="a2", target_leg=self.TARGET_LEG),
                      live(), rc.Around(bridged=frozenset({LEG, self.TARGET_LEG})), T)
        assert c.Hangup(channel_id=self.TARGET_LEG) in r.commands
        assert any(isinstance(cmd, c.Play) and cmd.media[-1].endswith("transfer-failed") for cmd in r.commands)
        assert "transfer-ended" in logs(r.commands) and never_hangs_up_the_caller(r.commands)
        assert r.keep == frozenset({LEG})

    def test_a_handoff_that_had_happened_is_completed_with_the_target(self) -> None:
        """Caller and target both in the bridge at the restart: the transfer is completed, the
        first agent's leg released, the caller now talks with the target."""
        r = rc.resume(CFG, snap("transfer-handoff", agent="a1", leg=LEG, bridge=BRIDGE,
                                target_agent="a2", target_leg=self.TARGET_LEG),
                      live(), rc.Around(target="Up", bridged=frozenset({CALLER, self.TARGET_LEG, LEG})), T)
        assert r.engine.state is CallState.CONNECTED and r.engine.agent == "a2"
        assert c.Hangup(channel_id=LEG) in r.commands and r.engage == ("a2",)

    def test_consent_being_asked_goes_back_to_the_agent_without_a_transfer(self) -> None:
        """Asked for consent at the restart: no consent, no transfer — back with the first agent."""
        r = rc.resume(CFG, snap("transfer-consent", agent="a1", leg=LEG, bridge=BRIDGE), live(),
                      rc.Around(bridged=frozenset({LEG})), T)
        bridge = next(cmd for cmd in r.commands if isinstance(cmd, c.Bridge))
        assert bridge.channel_ids == (CALLER,) and "transfer-ended" in logs(r.commands)


class TestResumeClosing:
    def test_closing_with_the_agent_waiting_keeps_the_line_and_releases_the_agent_after_20_s(self) -> None:
        """Closing at the restart, agent still on the line: the line stays open; the agent is
        released after the usual 20 s; the idle release still counts from the closing's start."""
        r = rc.resume(CFG, snap("closing", agent="a1", leg=LEG, bridge=BRIDGE, closing_at=T - 5),
                      live(), rc.Around(bridged=frozenset({CALLER, LEG})), T)
        assert r.engine.state is CallState.CLOSING and never_hangs_up_the_caller(r.commands)
        release = timer(r.commands, "agent-release")
        assert release.at == T + 20
        assert timer(r.commands, "idle").at == T - 5 + CFG.idle_release_seconds
        out = r.engine.handle(e.TimerFired(at=release.at, name="agent-release", token=release.token))
        assert c.Hangup(channel_id=LEG) in out and never_hangs_up_the_caller(out)
        out = r.engine.handle(e.ChannelHangupRequest(at=T + 30, channel_id=CALLER))
        assert len([cmd for cmd in out if isinstance(cmd, c.CallEnded)]) == 1


class TestCallbackNotConnected:
    def test_a_customer_not_with_their_agent_hears_the_closing_and_keeps_the_line(self) -> None:
        """A callback's customer on the line but not bridged at the restart: the closing words,
        the line open (R9), and the record ends when they hang up."""
        engine, out = rc.adopt_callback_closing(CFG, CALL, followup_id="f00d", number="13900139000",
                                                agent="a1", at=T)
        customer = f"{CALL}-c1"
        assert any(isinstance(cmd, c.Play) and cmd.channel_id == customer for cmd in out)
        assert not any(isinstance(cmd, c.Hangup) and cmd.channel_id == customer for cmd in out)
        out = engine.handle(e.ChannelHangupRequest(at=T + 5, channel_id=customer))
        assert len([cmd for cmd in out if isinstance(cmd, c.CallEnded)]) == 1
