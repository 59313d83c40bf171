"""Warm transfers (ETIQUETTE.md R6): consent, hold, answer and acceptance, or back — never dropped.

Each test connects a caller to agent1 in the simulated world of
``tests/engine_driver.py`` at ``CONNECTED``, asks for a transfer (to agent2,
or to the 售后 department whose agents are agent2 and agent3) and plays the
caller, the first agent and the target step by step. The world itself
remembers which target really answered and accepted (``bridge_checks``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score_r6
from callflow.config import AgentConfig, CallFlowConfig, Department
from callflow.engine import CallState
from callflow.facts import CallFacts, TransferRecord
from callflow.replay import event_from_dict, event_to_dict, replay
from tests.engine_driver import T0, AgentBehaviour, World

AGENTS = tuple(AgentConfig(f"agent{i}", f"PJSIP/agent{i}") for i in (1, 2, 3))
CFG = CallFlowConfig(agents=AGENTS, departments=(Department("售后", "1", ("agent2", "agent3")),))
CALLER = "chan-c1"
FIRST = "c1-a1"
TARGET = "c1-t1"
CONNECTED = T0 + 8.5  # ring 1 answer (1.5) + greeting 2 s + wait notice 2 s + agent 3 s
ASKED = T0 + 20  # the transfer request
CONSENT_AT = T0 + 23  # the caller presses 1 (the consent prompt ended at 22)
RING = CFG.cadence.ring_end(CFG.agent_rings)  # 11 s


def world_with(target: AgentBehaviour | None = None, first: AgentBehaviour | None = None,
               **others: AgentBehaviour) -> World:
    """Caller connected to agent1 at CONNECTED; agent2 (the usual target) answers 4 s after being rung."""
    agents: dict[str, Any] = {"agent1": first or AgentBehaviour("answer", after=3.0),
                              "agent2": target or AgentBehaviour("answer", after=4.0), **others}
    world = World(CFG, agents=agents)
    world.add_call("c1", created_at=T0)
    world.run(CONNECTED)
    assert world.engines["c1"].state is CallState.CONNECTED
    return world


def transfer(world: World, target: str = "agent2", *, consent: bool = True, at: float = ASKED) -> None:
    world.agent_does("c1", at, e.TransferRequested(at=0, agent="agent1", target=target, reason="退货"))
    if consent:
        world.press("c1", at + 3, "1")


def plays(world: World, channel: str = CALLER) -> list[tuple[float, str]]:
    return [(round(at - T0, 3), ",".join(cmd.media)) for at, cmd in world.issued_of("c1", c.Play)
            if cmd.channel_id == channel]


def record(world: World) -> TransferRecord:
    transfers = world.engines["c1"].facts.transfers
    assert len(transfers) == 1
    return transfers[0]


def log(world: World, kind: str) -> c.Log:
    entries = world.logs("c1", kind)
    assert entries, f"no {kind!r} in {world.log_kinds('c1')}"
    return entries[-1]


def assert_safe(world: World, until: float) -> None:
    """Never bridged with a target who had not accepted, never hung up on, never silent."""
    assert world.bridge_checks == []
    assert all(h.channel_id != CALLER for h in world.commands("c1", c.Hangup))
    assert not world.commands("c1", c.ReleaseIdleLine)
    assert world.silent_spans("c1", CONNECTED, until) == []


def back_with_first_agent(world: World, at: float, apology: str | None = "transfer-failed") -> None:
    assert world.engines["c1"].state is CallState.CONNECTED
    assert world.hearing("c1") == "agent" and world.lines["c1"].bridged_with == FIRST
    assert world.issued_of("c1", c.Bridge)[-1] == (at, c.Bridge(bridge_id="c1-b", channel_ids=(CALLER,)))
    if apology:
        assert plays(world)[-1] == (round(at - T0, 3), f"sound:liyi/{apology}")


class TestConsent:
    def test_request_asks_the_caller_out_of_the_bridge(self) -> None:
        """TransferRequested unbridges the caller and plays the consent prompt; nobody is rung yet."""
        world = world_with()
        transfer(world, consent=False)
        world.run(ASKED + 1)
        assert world.engines["c1"].state is CallState.CONSENT
        assert world.commands("c1", c.Unbridge) == [c.Unbridge(bridge_id="c1-b", channel_id=CALLER)]
        assert plays(world)[-1] == (20.0, "sound:liyi/transfer-consent")
        assert [r for r in world.commands("c1", c.RequestAgent) if r.only] == []

    @pytest.mark.parametrize("how", ["caller-key", "agent-confirmed"])
    def test_consent_by_key_or_panel_holds_the_caller_and_rings_the_target(self, how: str) -> None:
        """Key 1 or ConsentGiven: consent logged, caller held with the default limit, only the target rung."""
        world = world_with(target=AgentBehaviour("never"))
        transfer(world, consent=how == "caller-key")
        if how == "agent-confirmed":
            world.agent_does("c1", CONSENT_AT, e.ConsentGiven(at=0, agent="agent1"))
        world.run(CONSENT_AT + 1)
        assert log(world, "transfer-consent").detail == {"consent": how}
        assert world.engines["c1"].state is CallState.HOLD
        assert plays(world)[-1] == (23.0, "sound:liyi/hold-announce-60")
        assert world.commands("c1", c.RequestAgent)[-1] == c.RequestAgent(skip=("agent1",), only=("agent2",))
        dial = world.commands("c1", c.Dial)[-1]
        assert (dial.channel_id, dial.endpoint, dial.app_args) == (TARGET, "PJSIP/agent2", "agent,chan-c1")
        hold = world.engines["c1"].facts.holds[0]
        assert hold.for_transfer and hold.limit_seconds == 60
        assert record(world).consent == how and record(world).consent_at == CONSENT_AT

    @pytest.mark.parametrize(("key", "consent", "at"), [("2", "refused", CONSENT_AT),
                                                        (None, "no-answer", T0 + 22 + 15)])
    def test_no_consent_no_transfer(self, key: str | None, consent: str, at: float) -> None:
        """Key 2, or no key within consent_timeout_seconds: back with the first agent, nobody rung, logged."""
        world = world_with()
        transfer(world, consent=False)
        if key:
            world.press("c1", at, key)
        world.run(T0 + 60)
        back_with_first_agent(world, at, apology=None)
        assert not [d for d in world.commands("c1", c.Dial) if d.channel_id.endswith("t1")]
        r = record(world)
        assert (r.consent, r.outcome, r.caller_returned_to) == (consent, "consent-refused", "first-agent")
        assert log(world, "transfer-ended").detail["outcome"] == "consent-refused"
        world.caller_hangs_up("c1", T0 + 70)
        world.run(T0 + 80)
        assert world.ended("c1")[0].compliance["R6"]["status"] == "kept"
        assert_safe(world, T0 + 70)

    def test_the_first_agent_can_cancel_before_consent(self) -> None:
        """TransferCancelRequested during the consent question brings the caller straight back."""
        world = world_with()
        transfer(world, consent=False)
        world.agent_does("c1", T0 + 21, e.TransferCancelRequested(at=0, agent="agent1"))
        world.run(T0 + 40)
        back_with_first_agent(world, T0 + 21, apology=None)
        assert record(world).outcome == "cancelled"

    @pytest.mark.parametrize(("target", "why"), [("agent1", "unknown"), ("nobody", "unknown"),
                                                 ("dept:财务", "unknown department"), ("", "unknown")])
    def test_impossible_targets_are_refused_before_asking(self, target: str, why: str) -> None:
        """Transfer to oneself, to an unknown agent or department is refused with a panel error."""
        world = world_with()
        transfer(world, target=target, consent=False)
        world.run(ASKED + 5)
        assert world.engines["c1"].state is CallState.CONNECTED
        assert why in log(world, "transfer-refused").detail["why"]
        assert world.notifications("c1", "agent1", "error")
        assert world.engines["c1"].facts.transfers == []

    def test_leave_during_a_transfer_is_refused(self) -> None:
        """LeaveRequested while a transfer is under way is refused: the caller is never left in between."""
        world = world_with(target=AgentBehaviour("never"))
        transfer(world)
        world.agent_does("c1", T0 + 26, e.LeaveRequested(at=0, agent="agent1"))
        world.run(T0 + 27)
        assert world.engines["c1"].state is CallState.HOLD
        assert "transfer" in world.notifications("c1", "agent1", "error")[-1].data["message"]


class TestTargetAgent:
    def test_target_accepts_then_first_agent_completes(self) -> None:
        """Consultation without the caller; after acceptance and completion the caller meets the target, the first agent leaves."""
        world = world_with()
        transfer(world)
        world.run(T0 + 28)
        assert world.bridges["c1-b"] == [FIRST, TARGET]  # consultation: no caller
        assert world.hearing("c1") == "music"
        offer = world.notifications("c1", "agent2", "transfer-offer")[0]
        assert offer.data["from_agent"] == "agent1" and offer.data["reason"] == "退货"
        world.agent_does("c1", T0 + 30, e.TransferCompleteRequested(at=0, agent="agent1"))  # too early
        world.agent_does("c1", T0 + 35, e.TargetAnswered(at=0, agent="agent2"))
        world.agent_does("c1", T0 + 40, e.TransferCompleteRequested(at=0, agent="agent1"))
        world.run(T0 + 60)
        assert log(world, "transfer-complete-refused").at == T0 + 30
        assert world.hearing("c1") == "agent" and world.lines["c1"].bridged_with == TARGET
        assert world.issued_of("c1", c.Hangup)[-1] == (T0 + 40, c.Hangup(channel_id=FIRST))
        assert c.ReleaseAgent(agent="agent1", outcome="transferred") in world.commands("c1", c.ReleaseAgent)
        script = world.notifications("c1", "agent2", "script")[0]
        assert script.data["line"] == "很抱歉让您久等了"
        r = record(world)
        assert (r.outcome, r.accepted, r.accepted_at, r.handoff_at, r.ring_seconds) == (
            "completed", True, T0 + 35, T0 + 40, 4.0)
        assert world.engines["c1"].facts.agent == "agent2"
        assert world.engines["c1"].facts.holds[0].outcome == "transferred"
        world.caller_hangs_up("c1", T0 + 90)
        world.run(T0 + 100)
        ended = world.ended("c1")[0]
        assert ended.compliance["R6"]["status"] == "kept" and ended.first_hangup == "caller"
        assert world.commands("c1", c.Hangup)[-1] == c.Hangup(channel_id=TARGET)
        assert all(a.engaged_by is None for a in world.roster)
        assert_safe(world, T0 + 90)

    def test_target_accepts_with_key_1_on_their_phone(self) -> None:
        """Key 1 on the target's phone is acceptance, like the panel button."""
        world = world_with()
        transfer(world)
        world.agent_keys("c1", "agent2", T0 + 30, "1")
        world.agent_does("c1", T0 + 32, e.TransferCompleteRequested(at=0, agent="agent1"))
        world.run(T0 + 40)
        assert record(world).outcome == "completed"
        assert log(world, "transfer-accepted").detail["via"] == "key-1"
        assert_safe(world, T0 + 40)

    def test_the_new_agent_can_use_key_codes_after_the_handover(self) -> None:
        """After the handover the target is the call's agent: their *1 holds the caller."""
        world = world_with()
        transfer(world)
        world.agent_does("c1", T0 + 30, e.TargetAnswered(at=0, agent="agent2"))
        world.agent_does("c1", T0 + 31, e.TransferCompleteRequested(at=0, agent="agent1"))
        world.agent_keys("c1", "agent2", T0 + 40, "*1")
        world.run(T0 + 42)
        assert world.engines["c1"].state is CallState.HOLD
        assert world.engines["c1"].facts.holds[-1].agent == "agent2"

    @pytest.mark.parametrize("how", ["panel", "key-2", "hang-up"])
    def test_target_declines_and_the_caller_comes_back_with_an_apology(self, how: str) -> None:
        """A target who declines (panel, key 2) or hangs up after answering: back to the first agent with transfer-failed."""
        target = AgentBehaviour("answer", after=4.0, hangs_up_after=6.0 if how == "hang-up" else None)
        world = world_with(target=target)
        transfer(world)
        if how == "panel":
            world.agent_does("c1", T0 + 33, e.TargetAnswered(at=0, agent="agent2", accepted=False))
        elif how == "key-2":
            world.agent_keys("c1", "agent2", T0 + 33, "2")
        world.run(T0 + 60)
        at = T0 + 33
        back_with_first_agent(world, at)
        r = record(world)
        assert r.outcome == ("target-hung-up" if how == "hang-up" else "declined")
        assert (r.caller_returned_to, r.apology) == ("first-agent", "transfer-failed")
        assert c.ReleaseAgent(agent="agent2", outcome=f"transfer-{r.outcome}") in world.commands(
            "c1", c.ReleaseAgent)
        if how != "hang-up":
            assert world.issued_of("c1", c.Hangup)[-1] == (at, c.Hangup(channel_id=TARGET))
        assert world.engines["c1"].facts.holds[0].outcome == "transfer-failed"
        assert_safe(world, T0 + 60)

    @pytest.mark.parametrize(("behaviour", "outcome", "after"), [
        (AgentBehaviour("never"), "no-answer", RING),
        (AgentBehaviour("decline", after=2.0), "declined", 2.0),
        (AgentBehaviour("ring-out", after=6.0), "no-answer", 6.0),
        (AgentBehaviour("unreachable"), "unreachable", 0.0),
    ])
    def test_target_never_answers_within_three_rings(self, behaviour: AgentBehaviour, outcome: str,
                                                     after: float) -> None:
        """No answer within agent_rings rings, a decline or an unreachable phone: caller back, target released."""
        world = world_with(target=behaviour)
        transfer(world)
        world.run(T0 + 60)
        back_with_first_agent(world, CONSENT_AT + after)
        r = record(world)
        assert r.outcome == outcome and r.answered_at is None
        if outcome == "no-answer" and behaviour.action == "never":
            assert world.issued_of("c1", c.Hangup)[-1] == (CONSENT_AT + RING, c.Hangup(channel_id=TARGET))
        assert world.roster.get("agent2").engaged_by is None  # type: ignore[union-attr]
        assert_safe(world, T0 + 60)

    def test_target_busy_fails_at_once(self) -> None:
        """A target who is not free (NoAgentFree) fails the transfer at once: back with the apology."""
        world = world_with(target=AgentBehaviour("never"))
        world.roster.phone_state("PJSIP/agent2", device_state="INUSE")
        transfer(world)
        world.run(T0 + 40)
        back_with_first_agent(world, CONSENT_AT)
        assert record(world).outcome == "target-unavailable"

    def test_target_that_answers_but_never_accepts_times_out(self) -> None:
        """A target who answers but neither accepts nor declines is given up after accept_timeout_seconds."""
        world = world_with()
        transfer(world)
        world.run(T0 + 80)
        answered = CONSENT_AT + 4.0
        back_with_first_agent(world, answered + CFG.transfer.accept_timeout_seconds)
        assert record(world).outcome == "not-accepted"

    def test_first_agent_cancels_during_consultation(self) -> None:
        """TransferCancelRequested (or *0) during consultation: the target is released, the caller back with an apology."""
        world = world_with()
        transfer(world)
        world.agent_keys("c1", "agent1", T0 + 30, "*0")
        world.run(T0 + 40)
        back_with_first_agent(world, T0 + 30.3)
        assert record(world).outcome == "cancelled"
        assert world.issued_of("c1", c.Hangup)[-1] == (T0 + 30.3, c.Hangup(channel_id=TARGET))

    def test_hold_limit_during_the_transfer_key_2_returns_to_the_first_agent(self) -> None:
        """The transfer hold has the R4 limit too: key 2 at the question brings the caller back, transfer ended."""
        world = world_with()
        transfer(world)
        world.agent_does("c1", T0 + 30, e.TargetAnswered(at=0, agent="agent2"))  # accepted, never completed
        world.press("c1", CONSENT_AT + 61, "2")
        world.run(T0 + 100)
        back_with_first_agent(world, CONSENT_AT + 61, apology="hold-return")
        r = record(world)
        assert (r.outcome, r.apology) == ("hold-limit", "hold-return")
        assert world.engines["c1"].facts.holds[0].outcome == "returned-by-caller"
        assert_safe(world, T0 + 100)


class TestDepartment:
    def test_department_target_hears_the_announcement_and_key_1_hands_over(self) -> None:
        """A department's agent hears transfer-announce; key 1 connects the caller at once and the first agent leaves."""
        world = world_with(agent3=AgentBehaviour("never"))
        world.roster.phone_state("PJSIP/agent3", device_state="INUSE")
        transfer(world, target="dept:售后")
        world.run(T0 + 28)
        assert world.commands("c1", c.RequestAgent)[-1].only == ("agent2", "agent3")
        assert plays(world, TARGET) == [(27.0, "sound:liyi/transfer-announce")]
        assert world.bridges["c1-b"] == [FIRST]  # no consultation with a department
        world.agent_keys("c1", "agent2", T0 + 30, "1")
        world.run(T0 + 40)
        assert world.lines["c1"].bridged_with == TARGET
        assert world.issued_of("c1", c.Hangup)[-1] == (T0 + 30, c.Hangup(channel_id=FIRST))
        assert record(world).department == "售后" and record(world).outcome == "completed"
        assert world.notifications("c1", "agent2", "script")
        assert_safe(world, T0 + 40)

    def test_department_transfer_goes_on_when_the_first_agent_leaves(self) -> None:
        """The first agent hanging up during a department transfer does not stop it: acceptance still hands over."""
        world = world_with(first=AgentBehaviour("answer", after=3.0, hangs_up_after=20.0),
                           target=AgentBehaviour("answer", after=8.0))
        transfer(world, target="dept:售后")
        world.agent_keys("c1", "agent2", T0 + 35, "1")
        world.run(T0 + 50)
        assert log(world, "agent-left-during-transfer").at == CONNECTED + 20.0
        assert record(world).outcome == "completed"
        assert world.lines["c1"].bridged_with == TARGET
        assert world.commands("c1", c.Bridge)[-1].bridge_id == "c1-b2"  # the first agent's bridge is gone
        assert_safe(world, T0 + 50)

    def test_department_transfer_without_first_agent_that_fails_goes_to_the_queue(self) -> None:
        """If the first agent left and the department declines, the caller is queued again with an apology."""
        world = world_with(first=AgentBehaviour("answer", after=3.0, hangs_up_after=20.0),
                           target=[AgentBehaviour("answer", after=8.0), AgentBehaviour("answer", after=2.0)])
        transfer(world, target="dept:售后")
        world.agent_keys("c1", "agent2", T0 + 35, "2")
        world.run(T0 + 60)
        r = record(world)
        assert (r.outcome, r.caller_returned_to) == ("declined", "queue")
        assert (35.0, "sound:liyi/requeue-apology") in plays(world)
        assert world.hearing("c1") == "agent"  # agent2 took the call from the queue
        assert_safe(world, T0 + 60)

    def test_key_codes_start_agent_and_department_transfers(self) -> None:
        """*2 2 # transfers to agent2, *3 1 # to the department numbered 1, *3 9 # is unknown."""
        world = world_with(target=AgentBehaviour("never"))
        world.agent_keys("c1", "agent1", T0 + 20, "*39#")
        world.agent_keys("c1", "agent1", T0 + 25, "*22#")
        world.run(T0 + 27)
        assert log(world, "keycode-unknown").detail["keys"] == "*39#"
        assert record(world).target == "agent2"
        world2 = world_with(target=AgentBehaviour("never"))
        world2.agent_keys("c1", "agent1", T0 + 20, "*31#")
        world2.run(T0 + 22)
        assert world2.engines["c1"].facts.transfers[0].target == "dept:售后"


STAGES = {  # when something happens, relative to T0: consent, ringing, consulting, accepted
    "consent": 21.0,
    "ringing": 25.0,
    "consulting": 30.0,
    "accepted": 36.0,
}


class TestHangUps:
    @pytest.mark.parametrize("stage", list(STAGES))
    def test_caller_hangs_up_at_any_stage(self, stage: str) -> None:
        """The caller hanging up ends the call once; the target's and the first agent's legs are hung up and released."""
        world = world_with(target=AgentBehaviour("answer", after=6.0))
        transfer(world)
        world.agent_does("c1", T0 + 34, e.TargetAnswered(at=0, agent="agent2"))
        world.caller_hangs_up("c1", T0 + STAGES[stage])
        world.run(T0 + 80)
        ended = world.ended("c1")
        assert len(ended) == 1 and ended[0].first_hangup == "caller"
        hung = {h.channel_id for h in world.commands("c1", c.Hangup)}
        assert FIRST in hung
        if stage != "consent":
            assert TARGET in hung
        assert record(world).outcome == "caller-hung-up"
        assert all(a.engaged_by is None for a in world.roster)
        assert ended[0].compliance["R6"]["status"] == "kept"
        assert world.bridge_checks == []

    @pytest.mark.parametrize("stage", list(STAGES))
    def test_first_agent_hangs_up_at_any_stage(self, stage: str) -> None:
        """First agent gone: the transfer completes if the target accepted, otherwise the caller is queued again."""
        at = T0 + STAGES[stage]
        world = world_with(first=AgentBehaviour("answer", after=3.0, hangs_up_after=at - CONNECTED),
                           target=AgentBehaviour("answer", after=6.0),
                           agent3=AgentBehaviour("answer", after=2.0))
        transfer(world)
        world.agent_does("c1", T0 + 34, e.TargetAnswered(at=0, agent="agent2"))
        world.run(T0 + 80)
        r = record(world)
        if stage == "accepted":
            assert r.outcome == "completed" and r.handoff_at == at
            assert world.lines["c1"].bridged_with == TARGET
        else:
            assert r.outcome == "first-agent-left" and r.caller_returned_to == "queue"
            assert (round(at - T0, 3), "sound:liyi/requeue-apology") in plays(world)
            assert world.hearing("c1") == "agent"  # re-offered and answered from the queue
            assert world.engines["c1"].facts.agent in ("agent2", "agent3")
            if stage != "consent":
                assert c.ReleaseAgent(agent="agent2", outcome="transfer-first-agent-left") in \
                    world.commands("c1", c.ReleaseAgent)
        assert world.lines["c1"].first_hangup is None and world.ended("c1") == []
        assert_safe(world, T0 + 80)


class TestR6Compliance:
    def base(self, **change: Any) -> CallFacts:
        facts = CallFacts(call_id="x")
        t = TransferRecord(first_agent="agent1", target="agent2", department=None, reason="r",
                           requested_at=T0, consent="caller-key", consent_at=T0 + 3,
                           target_agent="agent2", rung_at=T0 + 3, answered_at=T0 + 7, accepted=True,
                           accepted_at=T0 + 9, handoff_at=T0 + 10, outcome="completed",
                           caller_returned_to="target")
        for key, value in change.items():
            setattr(t, key, value)
        facts.transfers.append(t)
        return facts

    def test_completed_with_consent_and_acceptance_is_kept(self) -> None:
        """A transfer handed over after consent, answer and acceptance keeps R6."""
        assert score_r6(self.base())["status"] == "kept"

    @pytest.mark.parametrize(("change", "why"), [
        ({"consent": None}, "consent"),
        ({"consent": "refused"}, "consent"),
        ({"accepted": None, "accepted_at": None}, "accepted"),
        ({"answered_at": None}, "accepted"),
        ({"accepted_at": T0 + 11}, "accepted"),
    ])
    def test_handover_without_consent_or_acceptance_is_broken(self, change: dict[str, Any], why: str) -> None:
        """Handing over without consent, or before the target answered and accepted, breaks R6."""
        result = score_r6(self.base(**change))
        assert result["status"] == "broken" and why in result["evidence"]["reason"]

    def test_failed_transfer_back_with_apology_is_kept_without_is_broken(self) -> None:
        """A failed transfer that brought the caller back with the apology keeps R6; without an agent, broken."""
        kept = self.base(outcome="no-answer", handoff_at=None, accepted=None, accepted_at=None,
                         caller_returned_to="first-agent", apology="transfer-failed")
        assert score_r6(kept)["status"] == "kept"
        dropped = self.base(outcome="no-answer", handoff_at=None, caller_returned_to=None)
        assert score_r6(dropped)["status"] == "broken"
        assert score_r6(CallFacts(call_id="x"))["status"] == "not_applicable"


class TestReplay:
    def test_a_call_with_keys_hold_and_transfer_replays_identically(self) -> None:
        """The logged events of a call with key codes, a hold and a transfer replay (through JSON) to the same call."""
        world = world_with(target=AgentBehaviour("answer", after=4.0, verdict_after=2.0))
        world.agent_keys("c1", "agent1", T0 + 10, "*1")
        world.agent_keys("c1", "agent1", T0 + 15, "*0")
        transfer(world, at=T0 + 20)
        world.agent_does("c1", T0 + 21, e.CallerInfoUpdated(at=0, agent="agent1", caller_name="张三",
                                                            purpose="退货"))
        world.agent_does("c1", T0 + 40, e.TransferCompleteRequested(at=0, agent="agent1"))
        world.caller_hangs_up("c1", T0 + 90)
        world.run(T0 + 100)
        logged = [json.dumps(event_to_dict(ev), ensure_ascii=False) for ev in world.events("c1")]
        engine, out = replay(CFG, "c1", [event_from_dict(json.loads(line)) for line in logged])
        assert engine.facts == world.engines["c1"].facts
        assert out == [i.command for i in world.issued_for("c1")]
        assert record(world).outcome == "completed" and engine.facts.holds[0].outcome == "resumed"
