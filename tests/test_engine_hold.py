"""Holds (ETIQUETTE.md R4, R7), leaving the call, notes, and agents' key codes.

Each test connects a caller to an agent in the simulated world of
``tests/engine_driver.py`` (the agent answers 3 s after being rung, so the
call is connected at ``CONNECTED``), then acts as the agent — panel requests
or keys on the phone — and checks what the caller heard and what was logged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score_r3, score_r4
from callflow.config import AgentConfig, CallFlowConfig, HoldConfig
from callflow.engine import CallState
from callflow.facts import CallFacts, HoldRecord
from callflow.keycodes import (
    HOLD,
    LEAVE,
    RESUME,
    TRANSFER_AGENT,
    TRANSFER_DEPARTMENT,
    UNKNOWN,
    KeyAction,
    KeyCodeParser,
    agent_for_digits,
)
from tests.engine_driver import T0, AgentBehaviour, PromptBehaviour, World

AGENTS = (AgentConfig("agent1", "PJSIP/agent1"), AgentConfig("agent2", "PJSIP/agent2"))
CFG = CallFlowConfig(agents=AGENTS)
CALLER = "chan-c1"
LEG = "c1-a1"
QUICK = AgentBehaviour("answer", after=3.0)
CONNECTED = T0 + 8.5  # ring 1 answer (1.5) + greeting 2 s + wait notice 2 s + agent 3 s
PROMPT = 2.0  # every prompt plays 2 s in these worlds


def connected(cfg: CallFlowConfig = CFG, *, agents: dict[str, Any] | None = None,
              prompts: dict[str, PromptBehaviour] | None = None) -> World:
    """A world where the caller talks with agent1 from ``CONNECTED`` on."""
    world = World(cfg, agents=agents or {"agent1": QUICK}, prompts=prompts)
    world.add_call("c1", created_at=T0)
    world.run(CONNECTED)
    assert world.engines["c1"].state is CallState.CONNECTED
    assert world.hearing("c1") == "agent"
    return world


def hold(world: World, at: float, limit: float = 0.0, reason: str = "查询订单",
         agent: str = "agent1") -> None:
    world.agent_does("c1", at, e.HoldRequested(at=0, agent=agent, reason=reason, limit_seconds=limit))


def plays(world: World, channel: str = CALLER) -> list[tuple[float, str]]:
    """(time since T0, media) of every Play to a channel."""
    return [(round(at - T0, 3), ",".join(cmd.media)) for at, cmd in world.issued_of("c1", c.Play)
            if cmd.channel_id == channel]


def log(world: World, kind: str) -> c.Log:
    entries = world.logs("c1", kind)
    assert entries, f"no {kind!r} in {world.log_kinds('c1')}"
    return entries[-1]


def only_hold(world: World) -> HoldRecord:
    holds = world.engines["c1"].facts.holds
    assert len(holds) == 1
    return holds[0]


def assert_never_silent(world: World, start: float, end: float) -> None:
    assert world.silent_spans("c1", start, end) == []


class TestHoldStart:
    def test_caller_leaves_the_bridge_hears_the_limit_then_music(self) -> None:
        """On hold the caller is unbridged, hears the announcement naming the limit, then music; the agent stays bridged."""
        world = connected()
        hold(world, T0 + 20)
        world.run(T0 + 30)
        assert world.commands("c1", c.Unbridge) == [c.Unbridge(bridge_id="c1-b", channel_id=CALLER)]
        assert plays(world)[-1] == (20.0, "sound:liyi/hold-announce-60")
        assert world.first_time("c1", c.StartMusic) is not None
        assert [t for t, h in world.timeline("c1") if t >= T0 + 20] == [T0 + 20, T0 + 22]
        assert [h for t, h in world.timeline("c1") if t >= T0 + 20] == ["prompt", "music"]
        assert world.bridges["c1-b"] == [LEG]
        assert log(world, "hold-started").detail == {
            "agent": "agent1", "reason": "查询订单", "limit_seconds": 60, "for_transfer": False}
        note = world.notifications("c1", "agent1", "hold")[0]
        assert note.data["limit_seconds"] == 60 and note.data["ends_at"] == T0 + 80

    @pytest.mark.parametrize(("asked", "prompt"), [(0.0, "hold-announce-60"), (30.0, "hold-announce-30"),
                                                    (120.0, "hold-announce-120"),
                                                    (300.0, "hold-announce-300")])
    def test_each_allowed_limit_has_its_announcement(self, asked: float, prompt: str) -> None:
        """Limit 0 means the default (60 s); every allowed limit is announced by its own prompt."""
        world = connected()
        hold(world, T0 + 20, limit=asked)
        world.run(T0 + 21)
        assert plays(world)[-1] == (20.0, f"sound:liyi/{prompt}")

    @pytest.mark.parametrize("limit", [45.0, 10.0, 330.0, 600.0, -30.0])
    def test_a_limit_that_is_not_allowed_is_refused_not_changed(self, limit: float) -> None:
        """A limit off the 30 s steps or over the maximum is refused (log + panel error); the call stays connected."""
        world = connected()
        hold(world, T0 + 20, limit=limit)
        world.run(T0 + 100)
        assert world.engines["c1"].state is CallState.CONNECTED
        assert not world.commands("c1", c.Unbridge)
        assert log(world, "hold-refused").detail["limit_seconds"] == limit
        error = world.notifications("c1", "agent1", "error")[0]
        assert error.data["request"] == "HoldRequested" and 60 in error.data["allowed"]
        assert world.engines["c1"].facts.holds == []

    def test_an_agent_not_on_the_call_cannot_hold_it(self) -> None:
        """A HoldRequested from someone other than the connected agent is refused and changes nothing."""
        world = connected()
        hold(world, T0 + 20, agent="agent2")
        world.run(T0 + 30)
        assert world.engines["c1"].state is CallState.CONNECTED
        assert world.log_kinds("c1")[-1] == "hold-refused"

    def test_hold_before_an_agent_answers_is_ignored_and_told(self) -> None:
        """While the caller is still queued a hold request is ignored, with a panel error."""
        world = World(CFG, agents={"agent1": AgentBehaviour("never")})
        world.add_call("c1", created_at=T0)
        hold(world, T0 + 6)
        world.run(T0 + 8)
        assert world.engines["c1"].state is CallState.OFFERING
        assert "agent-request-ignored" in world.log_kinds("c1")
        assert world.hearing("c1") == "music"


class TestWhileHeld:
    def test_reassurance_at_each_interval_and_music_between(self) -> None:
        """With a 120 s limit the reassurance plays 30, 60 and 90 s into the hold, music in between, never silence."""
        world = connected()
        hold(world, T0 + 20, limit=120)
        world.agent_does("c1", T0 + 130, e.ResumeRequested(at=0, agent="agent1"))
        world.run(T0 + 140)
        assert plays(world)[-4:] == [(20.0, "sound:liyi/hold-announce-120"),
                                     (50.0, "sound:liyi/hold-reassure"),
                                     (80.0, "sound:liyi/hold-reassure"),
                                     (110.0, "sound:liyi/hold-reassure")]
        assert_never_silent(world, T0 + 20, T0 + 130)
        assert only_hold(world).reassurances == 3
        assert only_hold(world).silent_seconds == 0.0

    def test_reassurance_waits_for_a_long_announcement(self) -> None:
        """An announcement still playing at the reassurance time is not cut: the reassurance waits a turn."""
        world = connected(replace(CFG, prompt_timeout_seconds=60.0),
                          prompts={"hold-announce-120": PromptBehaviour(seconds=35.0)})
        hold(world, T0 + 20, limit=120)
        world.run(T0 + 85)
        assert plays(world)[-2:] == [(20.0, "sound:liyi/hold-announce-120"),
                                     (80.0, "sound:liyi/hold-reassure")]
        assert_never_silent(world, T0 + 20, T0 + 85)

    def test_agent_hears_a_tone_ten_seconds_before_the_limit(self) -> None:
        """agent_alert_before_seconds before the limit the agent's leg hears a beep and the panel counts down."""
        world = connected()
        hold(world, T0 + 20, limit=60)
        world.run(T0 + 79)
        assert plays(world, LEG) == [(70.0, "sound:beep")]
        countdown = world.notifications("c1", "agent1", "hold-countdown")
        assert [n.data["seconds_left"] for n in countdown] == [10.0]
        assert only_hold(world).agent_alerted_at == [T0 + 70]

    def test_a_never_ending_announcement_gives_way_to_music(self) -> None:
        """An announcement that never reports its end is given up after the prompt timeout, and music starts."""
        cfg = replace(CFG, prompt_timeout_seconds=5.0)
        world = connected(cfg, prompts={"hold-announce-60": PromptBehaviour(result="never")})
        hold(world, T0 + 20)
        world.run(T0 + 30)
        assert world.issued_of("c1", c.StartMusic)[-1][0] == T0 + 25
        assert log(world, "hold-announced").detail == {"result": "timeout"}

    def test_caller_keys_during_the_hold_change_nothing(self) -> None:
        """A caller pressing keys while held (not asked anything) does not end or extend the hold."""
        world = connected()
        hold(world, T0 + 20)
        for t in (25, 30, 35):
            world.press("c1", T0 + t, "2")
        world.run(T0 + 60)
        assert world.engines["c1"].state is CallState.HOLD
        assert world.hearing("c1") == "music"

    def test_second_hold_while_held_is_refused(self) -> None:
        """Asking for a hold while already holding is refused with a panel error."""
        world = connected()
        hold(world, T0 + 20)
        hold(world, T0 + 25, limit=120)
        world.run(T0 + 30)
        assert len(world.engines["c1"].facts.holds) == 1
        assert world.notifications("c1", "agent1", "error")


class TestHoldEnds:
    def test_resume_early_puts_the_caller_back_without_apology(self) -> None:
        """ResumeRequested before the limit: music stops, caller bridged again, no limit question later."""
        world = connected()
        hold(world, T0 + 20)
        world.agent_does("c1", T0 + 45, e.ResumeRequested(at=0, agent="agent1"))
        world.run(T0 + 200)
        assert world.hearing("c1") == "agent"
        assert world.engines["c1"].state is CallState.CONNECTED
        bridges = world.issued_of("c1", c.Bridge)
        assert bridges[-1] == (T0 + 45, c.Bridge(bridge_id="c1-b", channel_ids=(CALLER,)))
        assert "sound:liyi/hold-limit-ask" not in [m for _, m in plays(world)]
        assert "sound:liyi/hold-return" not in [m for _, m in plays(world)]
        h = only_hold(world)
        assert (h.outcome, h.seconds, h.limit_kept, h.reassurances) == ("resumed", 25.0, True, 0)
        assert log(world, "hold-ended").detail["outcome"] == "resumed"

    def test_limit_then_key_1_starts_a_new_announced_period(self) -> None:
        """At the limit the caller is asked; key 1 logs the consent and starts another announced limit."""
        world = connected()
        hold(world, T0 + 20)
        world.press("c1", T0 + 81, "1")  # during the question
        world.agent_does("c1", T0 + 120, e.ResumeRequested(at=0, agent="agent1"))
        world.run(T0 + 200)
        assert plays(world)[-5:] == [(20.0, "sound:liyi/hold-announce-60"), (50.0, "sound:liyi/hold-reassure"),
                                     (80.0, "sound:liyi/hold-limit-ask"), (81.0, "sound:liyi/hold-announce-60"),
                                     (111.0, "sound:liyi/hold-reassure")]
        assert log(world, "hold-extended").detail == {"consent": "caller-key-1", "limit_seconds": 60}
        h = only_hold(world)
        assert h.periods == [T0 + 20, T0 + 81] and h.extended_at == [T0 + 81]
        assert h.outcome == "resumed" and h.limit_kept is True
        assert world.hearing("c1") == "agent"
        assert_never_silent(world, T0 + 20, T0 + 120)

    def test_limit_then_key_2_returns_the_caller_at_once_with_an_apology(self) -> None:
        """Key 2 at the limit question puts the caller back with the agent at once, with hold-return."""
        world = connected()
        hold(world, T0 + 20)
        world.press("c1", T0 + 84, "2")
        world.run(T0 + 100)
        assert world.hearing("c1") == "agent"
        assert world.issued_of("c1", c.Bridge)[-1][0] == T0 + 84
        assert plays(world)[-1] == (84.0, "sound:liyi/hold-return")
        assert only_hold(world).outcome == "returned-by-caller"
        assert [n.data["seconds_left"] for n in world.notifications("c1", "agent1", "hold-countdown")] == [10.0, 0.0]

    def test_limit_with_no_answer_returns_after_the_grace_period(self) -> None:
        """No key after the limit question: back with the agent when the grace period after the question ends."""
        world = connected()
        hold(world, T0 + 20)
        world.run(T0 + 200)
        grace = CFG.hold.limit_grace_seconds
        returned_at = T0 + 80 + PROMPT + grace
        assert world.issued_of("c1", c.Bridge)[-1][0] == returned_at
        assert plays(world)[-1] == (round(returned_at - T0, 3), "sound:liyi/hold-return")
        h = only_hold(world)
        assert h.outcome == "returned-no-answer" and h.limit_kept is True
        assert h.seconds == 60 + PROMPT + grace
        assert_never_silent(world, T0 + 20, returned_at)

    def test_caller_hangs_up_during_the_hold(self) -> None:
        """A caller who hangs up on hold ends the call: the agent's leg is hung up and the agent released."""
        world = connected()
        hold(world, T0 + 20)
        world.caller_hangs_up("c1", T0 + 40)
        world.run(T0 + 60)
        ended = world.ended("c1")
        assert len(ended) == 1 and ended[0].first_hangup == "caller"
        assert world.commands("c1", c.Hangup) == [c.Hangup(channel_id=LEG)]
        assert world.commands("c1", c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="completed")]
        assert only_hold(world).outcome == "caller-hung-up"
        assert ended[0].compliance["R4"]["status"] == "kept"

    @pytest.mark.parametrize("when", [40.0, 83.0])  # on hold, and during the limit question
    def test_agent_hangs_up_during_the_hold_caller_is_queued_again(self, when: float) -> None:
        """The holding agent hangs up: the caller hears the requeue apology, music, and the next agent answers."""
        world = connected(agents={"agent1": AgentBehaviour("answer", after=3.0, hangs_up_after=when - (CONNECTED - T0)),
                                  "agent2": AgentBehaviour("answer", after=4.0)})
        hold(world, T0 + 20)
        world.run(T0 + 150)
        at = T0 + when
        assert (round(at - T0, 3), "sound:liyi/requeue-apology") in plays(world)
        assert only_hold(world).outcome == "agent-left"
        assert world.commands("c1", c.DestroyBridge)[0] == c.DestroyBridge(bridge_id="c1-b")
        assert [d.endpoint for d in world.commands("c1", c.Dial)] == ["PJSIP/agent1", "PJSIP/agent2"]
        assert world.commands("c1", c.Bridge)[-1].channel_ids == (CALLER, "c1-a2")
        assert world.commands("c1", c.Bridge)[-1].bridge_id == "c1-b2"
        assert world.hearing("c1") == "agent"
        assert world.engines["c1"].facts.agent == "agent2"
        assert_never_silent(world, T0 + 20, T0 + 150)
        assert world.bridge_checks == []
        assert world.lines["c1"].first_hangup is None


class TestLeave:
    def test_leave_requested_closes_like_an_agent_hang_up(self) -> None:
        """LeaveRequested hangs up the agent's leg; the caller hears the closing prompts and the line stays open (R9)."""
        world = connected()
        world.agent_does("c1", T0 + 30, e.LeaveRequested(at=0, agent="agent1"))
        world.run(T0 + 60)
        assert world.commands("c1", c.Hangup) == [c.Hangup(channel_id=LEG)]
        assert plays(world)[-1] == (30.0, "sound:liyi/closing-thanks")
        assert world.engines["c1"].state is CallState.CLOSING and world.ended("c1") == []
        world.caller_hangs_up("c1", T0 + 70)
        world.run(T0 + 80)
        ended = world.ended("c1")[0]
        assert ended.first_hangup == "agent" == world.lines["c1"].first_hangup
        assert ended.compliance["R9"]["status"] == "kept"

    def test_leave_during_a_hold_ends_the_hold_and_closes(self) -> None:
        """LeaveRequested while holding ends the hold ("closing") and plays the closing, never silence."""
        world = connected()
        hold(world, T0 + 20)
        world.agent_does("c1", T0 + 30, e.LeaveRequested(at=0, agent="agent1"))
        world.run(T0 + 40)
        assert only_hold(world).outcome == "closing"
        assert world.engines["c1"].state is CallState.CLOSING
        assert plays(world)[-1] == (30.0, "sound:liyi/closing-thanks")
        assert_never_silent(world, T0 + 20, T0 + 32)


class TestKeyCodes:
    def test_star_1_holds_and_star_0_resumes(self) -> None:
        """*1 on the agent's phone holds with the default limit; *0 resumes; the keys never reach the caller."""
        world = connected()
        assert world.commands("c1", c.Bridge)[0].absorb_dtmf == (LEG,)
        world.agent_keys("c1", "agent1", T0 + 20, "*1")
        world.agent_keys("c1", "agent1", T0 + 40, "*0")
        world.run(T0 + 50)
        h = only_hold(world)
        assert h.limit_seconds == 60 and h.started_at == T0 + 20.3 and h.outcome == "resumed"
        assert h.reason  # a key-code hold still has a reason: the handbook's default
        keycodes = [entry.detail["action"] for entry in world.logs("c1", "keycode")]
        assert keycodes == ["hold", "resume"]

    def test_star_9_leaves_the_call(self) -> None:
        """*9 is LeaveRequested: the caller hears the closing prompts."""
        world = connected()
        world.agent_keys("c1", "agent1", T0 + 20, "*9")
        world.run(T0 + 25)
        assert world.engines["c1"].state is CallState.CLOSING

    def test_an_unknown_code_is_logged_and_told_not_guessed(self) -> None:
        """*7 is no code: logged as keycode-unknown with a panel error; the call goes on unchanged."""
        world = connected()
        world.agent_keys("c1", "agent1", T0 + 20, "*7")
        world.run(T0 + 30)
        assert log(world, "keycode-unknown").detail == {"agent": "agent1", "keys": "*7"}
        assert world.notifications("c1", "agent1", "error")[0].data["request"] == "keycode"
        assert world.engines["c1"].state is CallState.CONNECTED

    def test_a_half_typed_code_expires_after_the_inter_digit_time(self) -> None:
        """A lone * is discarded after inter_digit_seconds, so a later *1 still holds."""
        world = connected()
        world.agent_keys("c1", "agent1", T0 + 20, "*")
        world.run(T0 + 22)
        assert world.logs("c1", "keycode-unknown") == []
        world.run(T0 + 24)
        assert log(world, "keycode-unknown").at == T0 + 20 + CFG.keycodes.inter_digit_seconds
        world.agent_keys("c1", "agent1", T0 + 30, "*1")
        world.run(T0 + 31)
        assert world.engines["c1"].state is CallState.HOLD

    def test_caller_keys_are_not_key_codes(self) -> None:
        """The caller typing *1 while talking does not put themselves on hold."""
        world = connected()
        world.press("c1", T0 + 20, "*")
        world.press("c1", T0 + 20.2, "1")
        world.run(T0 + 30)
        assert world.engines["c1"].state is CallState.CONNECTED


class TestKeyCodeParser:
    def test_simple_codes_and_codes_with_a_number(self) -> None:
        """*1, *0, *9 complete at once; *2 and *3 take digits up to #."""
        parser = KeyCodeParser(CFG.keycodes)

        def typed(keys: str) -> list[KeyAction | None]:
            return [parser.feed(k) for k in keys]

        assert typed("*1") == [None, KeyAction(HOLD, keys="*1")]
        assert typed("*0")[-1] == KeyAction(RESUME, keys="*0")
        assert typed("*9")[-1] == KeyAction(LEAVE, keys="*9")
        assert typed("*2102#") == [None, None, None, None, None, KeyAction(TRANSFER_AGENT, "102", "*2102#")]
        assert typed("*31#")[-1] == KeyAction(TRANSFER_DEPARTMENT, "1", "*31#")
        assert not parser.pending

    def test_unknown_empty_and_expired_codes(self) -> None:
        """Keys that can no longer become a code, a transfer with no number, or a timeout give UNKNOWN."""
        parser = KeyCodeParser(CFG.keycodes)
        assert [parser.feed(k) for k in "*5"][-1] == KeyAction(UNKNOWN, keys="*5")
        assert [parser.feed(k) for k in "*2#"][-1] == KeyAction(UNKNOWN, keys="*2#")
        assert parser.feed("*") is None and parser.pending
        assert parser.timeout() == KeyAction(UNKNOWN, keys="*")
        assert parser.timeout() is None

    def test_a_lone_digit_is_not_an_attempt(self) -> None:
        """A single digit outside a code is dropped quietly (no error flash on the panel)."""
        parser = KeyCodeParser(CFG.keycodes)
        assert parser.feed("5") is None and not parser.pending
        assert [parser.feed(k) for k in "*1"][-1] == KeyAction(HOLD, keys="*1")

    def test_agent_for_digits(self) -> None:
        """Digits name an agent by extension, name or the number their name ends in — never ambiguously."""
        agents = [AgentConfig("agent1", "PJSIP/1001"), AgentConfig("agent2", "PJSIP/agent2"),
                  AgentConfig("x12", "PJSIP/x12"), AgentConfig("y12", "PJSIP/y12")]
        assert agent_for_digits("1001", agents) == "agent1"
        assert agent_for_digits("2", agents) == "agent2"
        assert agent_for_digits("1", agents) == "agent1"
        assert agent_for_digits("12", agents) is None  # x12 or y12?
        assert agent_for_digits("7", agents) is None


class TestHoldCompliance:
    def test_r4_and_r7_kept_with_the_hold_evidence(self) -> None:
        """A resumed hold gives R4 and R7 kept, with reason, limit, length and reassurances as evidence."""
        world = connected()
        hold(world, T0 + 20)
        world.agent_does("c1", T0 + 60, e.ResumeRequested(at=0, agent="agent1"))
        world.caller_hangs_up("c1", T0 + 90)
        world.run(T0 + 100)
        compliance = world.ended("c1")[0].compliance
        assert compliance["R4"]["status"] == "kept" and compliance["R7"]["status"] == "kept"
        evidence = compliance["R4"]["evidence"]["holds"][0]
        assert evidence["reason"] == "查询订单" and evidence["limit_seconds"] == 60
        assert evidence["seconds"] == 40 and evidence["reassurances"] == 1
        assert evidence["limit_kept"] is True

    def test_no_hold_is_not_applicable(self) -> None:
        """A call with no hold scores R4 and R7 not applicable."""
        world = connected()
        world.caller_hangs_up("c1", T0 + 30)
        world.run(T0 + 40)
        compliance = world.ended("c1")[0].compliance
        assert compliance["R4"]["status"] == compliance["R7"]["status"] == "not_applicable"

    @pytest.mark.parametrize(("change", "why"), [
        ({"ended_at": T0 + 200.0}, "held past"),
        ({"silent_seconds": 3.0}, "silent"),
        ({"reason": ""}, "no reason"),
        ({"limit_seconds": 0.0}, "no limit"),
    ])
    def test_r4_broken_by_overrun_silence_or_missing_reason(self, change: dict[str, Any], why: str) -> None:
        """A hold past limit + grace, with silence, or with no reason or limit scores R4 (and R7) broken."""
        facts = CallFacts(call_id="x")
        held = HoldRecord(agent="agent1", reason="查询", limit_seconds=60, started_at=T0,
                          periods=[T0], ended_at=T0 + 30, outcome="resumed")
        for key, value in change.items():
            setattr(held, key, value)
        facts.holds.append(held)
        result = score_r4(facts, CFG)
        assert result["status"] == "broken" and why in result["evidence"]["reason"]

    def test_r4_allows_the_limit_question_and_the_grace(self) -> None:
        """Limit + question + grace, measured from the facts, is still kept."""
        facts = CallFacts(call_id="x")
        facts.holds.append(HoldRecord(agent="a", reason="r", limit_seconds=60, started_at=T0, periods=[T0],
                                      limit_reached_at=[T0 + 60], ended_at=T0 + 60 + 2 + 15,
                                      longest_overrun_seconds=0.0, limit_kept=True,
                                      outcome="returned-no-answer"))
        assert score_r4(facts, replace(CFG, hold=HoldConfig()))["status"] == "kept"


class TestNotesAndCallerInfo:
    def test_notes_and_caller_details_are_logged_and_kept(self) -> None:
        """NoteAdded and CallerInfoUpdated go to the log; name, purpose and wanted are kept in the facts."""
        world = connected()
        world.agent_does("c1", T0 + 20, e.CallerInfoUpdated(at=0, agent="agent1", caller_name="张三",
                                                            purpose="退货"))
        world.agent_does("c1", T0 + 25, e.CallerInfoUpdated(at=0, agent="agent1", wanted="售后"))
        world.agent_does("c1", T0 + 30, e.NoteAdded(at=0, agent="agent1", text="订单 123 未到"))
        world.caller_hangs_up("c1", T0 + 40)
        world.run(T0 + 50)
        f = world.engines["c1"].facts
        assert (f.stated_name, f.purpose, f.wanted) == ("张三", "退货", "售后")
        assert f.notes == [(T0 + 30, "agent1", "订单 123 未到")]
        assert log(world, "note").detail == {"agent": "agent1", "text": "订单 123 未到"}
        assert world.ended("c1")[0].compliance["R3"]["status"] == "kept"

    def test_r3_broken_when_an_agent_talked_and_nothing_was_recorded(self) -> None:
        """An agent talked with the caller and recorded neither name nor purpose: R3 broken."""
        world = connected()
        world.caller_hangs_up("c1", T0 + 30)
        world.run(T0 + 40)
        r3 = world.ended("c1")[0].compliance["R3"]
        assert r3["status"] == "broken"

    def test_r3_not_applicable_when_no_agent_talked(self) -> None:
        """A caller who left while queued makes R3 not applicable."""
        world = World(CFG, agents={"agent1": AgentBehaviour("never")})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 9)
        world.run(T0 + 20)
        assert world.ended("c1")[0].compliance["R3"]["status"] == "not_applicable"
        assert score_r3(CallFacts(call_id="x"))["status"] == "not_applicable"
