"""The etiquette engine, rule by rule (ETIQUETTE.md R1, R2, R9, R10, R12).

Each test scripts a call in the simulated world of ``tests/engine_driver.py``
(fake clock, roster, scripted phones) and checks what the engine made the
caller experience and what it wrote in the call log.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score_r1
from callflow.config import CallFlowConfig, OpenHours, RingCadence
from callflow.engine import CallEngine, CallState
from callflow.facts import CallFacts
from callflow.replay import event_from_dict, event_to_dict, replay
from tests.engine_driver import T0, AgentBehaviour, PromptBehaviour, World, local_epoch

CFG = CallFlowConfig()
CADENCE = CFG.cadence
CALLER = "chan-c1"

NEVER = AgentBehaviour("never")
QUICK = AgentBehaviour("answer", after=3.0)


def answer_time(world: World, call_id: str = "c1") -> float:
    at = world.first_time(call_id, c.Answer)
    assert at is not None, "the caller was never answered"
    return at


def only_ended(world: World, call_id: str = "c1") -> c.CallEnded:
    ended = world.ended(call_id)
    assert len(ended) == 1, f"expected exactly one CallEnded, got {len(ended)}"
    return ended[0]


def log_detail(world: World, kind: str, call_id: str = "c1") -> dict[str, Any]:
    entries = world.logs(call_id, kind)
    assert entries, f"no {kind!r} entry in the log: {world.log_kinds(call_id)}"
    return entries[0].detail


def assert_never_hangs_up_caller(world: World) -> None:
    callers = {line.channel_id for line in world.lines.values()}
    hung_up = {i.command.channel_id for i in world.issued if isinstance(i.command, c.Hangup)}
    assert not hung_up & callers, "the service hung up a caller"


# -- R1: answer within three rings ----------------------------------------------


class TestR1CallerRings:
    def test_ring_indication_comes_first(self) -> None:
        """The first command for a new call is Ring on the caller's channel."""
        world = World(CFG)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 5)
        first = world.issued_for("c1")[0].command
        assert first == c.Ring(channel_id=CALLER)

    def test_default_answer_comes_1_5_seconds_after_arrival(self) -> None:
        """By default the caller is answered 1.5 s after arrival: after ring 1's tone, like the dialplan fallback."""
        world = World(CFG, agents={"agent1": QUICK})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 60)
        world.run(T0 + 100)
        assert answer_time(world) == pytest.approx(T0 + 1.5)
        assert log_detail(world, "ringing")["answer_planned_at"] == pytest.approx(T0 + 1.5)
        r1 = only_ended(world).compliance["R1"]
        assert r1["status"] == "kept" and r1["evidence"]["answer_seconds"] == 1.5

    @pytest.mark.parametrize(("rings", "delay", "expected"), [(1, 0.5, 1.5), (2, 0.5, 6.5), (2, 0.0, 6.0),
                                                              (3, 0.0, 11.0)])
    def test_answers_after_the_configured_ring_has_rung_in_full(
            self, rings: int, delay: float, expected: float) -> None:
        """With answer_after_rings N the caller is answered once ring N's tone has ended (plus the delay), by 11 s."""
        cfg = replace(CFG, answer_after_rings=rings, answer_delay_seconds=delay)
        world = World(cfg)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 30)
        answered = answer_time(world) - T0
        assert answered == pytest.approx(expected)
        assert CADENCE.ring_end(rings) <= answered <= CADENCE.ring_end(3)
        assert log_detail(world, "answered")["rings_elapsed"] == rings

    def test_late_stasis_start_answers_sooner(self) -> None:
        """When StasisStart arrives 3 s after the channel was created, the answer is not pushed back by 3 s."""
        cfg = replace(CFG, answer_after_rings=3)
        world = World(cfg)
        world.add_call("c1", created_at=T0, stasis_delay=3.0)
        world.run(T0 + 30)
        assert answer_time(world) == pytest.approx(T0 + CADENCE.ring_end(3))
        assert log_detail(world, "ringing")["first_ring_at"] == T0
        assert log_detail(world, "answered")["rings_elapsed"] == 3

    def test_stasis_start_after_the_planned_answer_answers_at_once(self) -> None:
        """A call seen after its planned answer moment is answered at once and R1 stays kept inside ring 3."""
        world = World(CFG, agents={"agent1": QUICK})
        world.add_call("c1", created_at=T0, stasis_delay=6.0, hangs_up_at=T0 + 60)
        world.run(T0 + 100)
        assert answer_time(world) == T0 + 6.0
        assert log_detail(world, "answered")["rings_elapsed"] == 2
        r1 = only_ended(world).compliance["R1"]
        assert r1["status"] == "kept"
        assert r1["evidence"]["rings_elapsed"] == 2

    def test_stasis_start_after_ring_three_is_scored_broken(self) -> None:
        """A call seen only after ring 3 ended is still answered at once, and R1 is scored broken."""
        world = World(CFG, agents={"agent1": QUICK})
        world.add_call("c1", created_at=T0, stasis_delay=12.0, hangs_up_at=T0 + 60)
        world.run(T0 + 100)
        assert answer_time(world) == T0 + 12.0
        assert world.issued_for("c1")[0].command == c.Ring(channel_id=CALLER)
        r1 = only_ended(world).compliance["R1"]
        assert r1["status"] == "broken"
        assert r1["evidence"]["rings_elapsed"] == 3

    def test_created_at_in_the_future_counts_from_arrival(self) -> None:
        """A creation time later than the event (clock skew) is not trusted: rings count from arrival."""
        engine = CallEngine(CFG, "c1")
        out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0 + 50))
        timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer))
        assert timer.at == pytest.approx(T0 + CADENCE.ring_end(1) + CFG.answer_delay_seconds)


    def test_a_config_built_in_code_still_answers_by_the_end_of_ring_3(self) -> None:
        """answer_after_rings 3 with the default 0.5 s delay (set in code, unvalidated) still answers at 11 s, not 11.5 s."""
        world = World(replace(CFG, answer_after_rings=3))
        world.add_call("c1", created_at=T0)
        world.run(T0 + 30)
        assert answer_time(world) == pytest.approx(T0 + CADENCE.ring_end(3))


class TestR1Scoring:
    """R1 in the compliance record: an answer too early is broken as well as one too late."""

    @staticmethod
    def scored(answer_seconds: float, cfg: CallFlowConfig = CFG) -> dict[str, Any]:
        facts = CallFacts("c1", created_at=T0, answered_at=T0 + answer_seconds, ended_at=T0 + 60)
        return score_r1(facts, cfg)

    def test_an_answer_inside_ring_1s_tone_is_broken(self) -> None:
        """A call answered 0.7 s after arrival (the old instant pick-up) is scored broken, saying it came inside ring 1."""
        r1 = self.scored(0.7)
        assert r1["status"] == "broken"
        assert "before ring 1's tone ended at 1 s" in r1["evidence"]["reason"]
        assert r1["evidence"]["answer_seconds"] == 0.7 and r1["evidence"]["earliest_seconds"] == 1.0

    def test_an_answer_before_the_configured_ring_is_broken(self) -> None:
        """With answer_after_rings 2, an answer at 3 s (ring 2 not yet rung) is broken, naming ring 2."""
        r1 = self.scored(3.0, replace(CFG, answer_after_rings=2))
        assert r1["status"] == "broken"
        assert "before ring 2's tone ended at 6 s" in r1["evidence"]["reason"]

    @pytest.mark.parametrize("seconds", [1.0, 1.5, 11.0])
    def test_an_answer_between_ring_1s_end_and_ring_3s_end_is_kept(self, seconds: float) -> None:
        """Answers from the end of ring 1's tone up to the end of ring 3's are kept."""
        assert self.scored(seconds)["status"] == "kept"

    def test_an_answer_exactly_at_the_end_of_ring_3_is_kept_whatever_the_float_rounding(self) -> None:
        """With a 0.9 s / 0.7 s cadence, an answer as ring 3's tone ends (4.1000000000000005 s in floats) is kept."""
        cfg = replace(CFG, cadence=RingCadence(on=0.9, off=0.7), answer_after_rings=3, answer_delay_seconds=0.0)
        r1 = self.scored(cfg.answer_seconds(), cfg)
        assert r1["status"] == "kept", r1["evidence"]

    def test_an_answer_after_ring_3_is_broken(self) -> None:
        """An answer at 11.2 s, after ring 3's tone ended, is broken and the evidence says so."""
        r1 = self.scored(11.2)
        assert r1["status"] == "broken"
        assert r1["evidence"]["reason"] == "answered 11.2 s after arrival, after ring 3's tone ended at 11 s"
        assert r1["evidence"]["latest_seconds"] == 11.0


class TestR1AgentRings:
    def test_agent_rung_at_most_agent_rings_then_next_agent(self) -> None:
        """An agent who does not answer is hung up at the end of ring 3 and the next agent is rung at once."""
        world = World(CFG, agents={"agent1": NEVER, "agent2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        dials = world.issued_of("c1", c.Dial)
        assert [dial.endpoint for _, dial in dials] == ["PJSIP/agent1", "PJSIP/agent2"]
        (first_at, first), (second_at, second) = dials
        hangup_at = next(at for at, h in world.issued_of("c1", c.Hangup) if h.channel_id == first.channel_id)
        assert hangup_at - first_at == pytest.approx(CADENCE.ring_end(CFG.agent_rings))
        assert second_at == hangup_at
        assert log_detail(world, "agent-no-answer") == {"agent": "agent1", "rings": 3}
        assert world.commands("c1", c.Bridge)[0].channel_ids == (CALLER, second.channel_id)

    @pytest.mark.parametrize("agent_rings", [1, 2])
    def test_fewer_agent_rings_are_honoured(self, agent_rings: int) -> None:
        """With agent_rings 1 or 2 the agent leg is stopped at the end of that ring."""
        world = World(replace(CFG, agent_rings=agent_rings), agents={"agent1": NEVER})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 30)
        dial_at = world.first_time("c1", c.Dial)
        hangup_at = world.first_time("c1", c.Hangup)
        assert dial_at is not None and hangup_at is not None
        assert hangup_at - dial_at == pytest.approx(CADENCE.ring_end(agent_rings))

    def test_next_agent_is_the_longest_idle(self) -> None:
        """After a ring-out the call goes to the longest-idle agent, not the one who just rang out."""
        world = World(CFG, agents={"a": NEVER, "b": NEVER, "c": QUICK}, start=T0 - 1000)
        picked = world.roster.pick("earlier-call", now=T0 - 900)  # "a" takes a call and
        assert picked is not None and picked.name == "a"
        world.roster.release("a", call_id="earlier-call", now=T0 - 500)  # is idle the shortest
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        dialled = [d.endpoint for d in world.commands("c1", c.Dial)]
        assert dialled == ["PJSIP/b", "PJSIP/c"]

    @pytest.mark.parametrize(("behaviour", "kind"), [
        (AgentBehaviour("decline", after=2.0), "agent-declined"),
        (AgentBehaviour("unreachable"), "agent-unreachable"),
        (AgentBehaviour("ring-out", after=6.0), "agent-no-answer"),
    ])
    def test_declined_or_unreachable_agent_rolls_over_at_once(
        self, behaviour: AgentBehaviour, kind: str
    ) -> None:
        """An agent who declines (cause 17), is unreachable or whose leg Asterisk times out (19) is skipped at once."""
        world = World(CFG, agents={"agent1": behaviour, "agent2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        dials = world.issued_of("c1", c.Dial)
        assert [dial.endpoint for _, dial in dials] == ["PJSIP/agent1", "PJSIP/agent2"]
        (first_at, first), (second_at, _) = dials
        assert second_at - first_at == pytest.approx(
            0.0 if behaviour.action == "unreachable" else behaviour.after)
        assert log_detail(world, kind)["agent"] == "agent1"
        if behaviour.action != "ring-out":
            assert not [h for h in world.commands("c1", c.Hangup)
                        if h.channel_id == first.channel_id], "a gone leg needs no hang-up"
        assert world.commands("c1", c.Bridge)

    def test_music_plays_from_queueing_until_bridged_through_rollovers(self) -> None:
        """The caller hears music, never silence, from queueing through two agent rollovers until bridged."""
        world = World(CFG, agents={"agent1": NEVER, "agent2": AgentBehaviour("decline", after=4),
                                   "agent3": AgentBehaviour("answer", after=5)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 120)
        queued = world.first_time("c1", c.StartMusic)
        bridged = world.first_time("c1", c.Bridge)
        assert queued is not None and bridged is not None
        assert bridged - queued == pytest.approx(11 + 4 + 5)  # ring-out, decline, answer
        assert world.silent_spans("c1", queued, bridged) == []
        heard = {h for t, h in world.timeline("c1") if queued <= t < bridged}
        assert heard == {"music"}
        stops = [i.at for i in world.issued_for("c1") if isinstance(i.command, c.StopMusic)]
        assert stops == [bridged]
        assert world.silent_spans("c1", answer_time(world), bridged) == []

    def test_no_agent_free_retries_and_caller_keeps_music(self) -> None:
        """With no agent free the engine asks again every retry interval while the caller keeps music."""
        cfg = replace(CFG, agent_retry_seconds=2.0)
        world = World(cfg, agents={"agent1": QUICK}, registered=[])
        world.add_call("c1", created_at=T0)
        world.run(T0 + 20)
        queued = world.first_time("c1", c.StartMusic)
        assert queued is not None
        requests = [i.at - queued for i in world.issued_for("c1") if isinstance(i.command, c.RequestAgent)]
        assert requests[:4] == pytest.approx([0.0, 2.0, 4.0, 6.0])
        assert world.log_kinds("c1").count("waiting-for-agent") == 1
        assert world.hearing("c1") == "music"
        world.roster.phone_state("PJSIP/agent1", registered=True)  # the agent logs in
        world.run(T0 + 40)
        assert world.commands("c1", c.Bridge)
        assert world.silent_spans("c1", queued, world.now) == []

    def test_late_agent_answer_after_rollover_is_hung_up_not_bridged(self) -> None:
        """An agent leg that answers after we gave up on it is hung up and never bridged with the caller."""
        world = World(CFG, agents={"agent1": NEVER, "agent2": AgentBehaviour("answer", after=8)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 6)  # answered at 1.5 s, greeting and wait notice 2 s each: agent1 rung
        first_leg = world.commands("c1", c.Dial)[0].channel_id
        dialled_at = world.first_time("c1", c.Dial)
        assert dialled_at is not None
        world.inject("c1", dialled_at + CADENCE.ring_end(3) + 1.0, e.StasisStart(at=0, channel_id=first_leg))
        world.run(T0 + 60)
        hangups = [h.channel_id for h in world.commands("c1", c.Hangup)]
        assert hangups == [first_leg, first_leg]  # at ring-out, and again when it answered late
        assert "late-agent-answer-released" in world.log_kinds("c1")
        bridges = world.commands("c1", c.Bridge)
        assert len(bridges) == 1 and first_leg not in bridges[0].channel_ids
        assert world.bridge_checks == []


# -- R2: greet with the time of day and the company ------------------------------


class TestR2Greeting:
    @pytest.mark.parametrize(("hour", "minute", "prompt"), [
        (4, 59, "greeting-evening"),
        (5, 0, "greeting-morning"),
        (10, 59, "greeting-morning"),
        (11, 0, "greeting-noon"),
        (13, 0, "greeting-afternoon"),
        (17, 59, "greeting-afternoon"),
        (18, 0, "greeting-evening"),
        (0, 0, "greeting-evening"),
    ])
    def test_greeting_follows_the_local_time_band(self, hour: int, minute: int, prompt: str) -> None:
        """The greeting is the band's prompt for the Asia/Shanghai time of the answer, boundaries included."""
        moment = local_epoch(2026, 3, 4, hour, minute)
        world = World(CFG, start=moment - 10)
        world.add_call("c1", created_at=moment - 2.0, stasis_delay=2.0)  # answered exactly at `moment`
        world.run(moment + 1)
        assert answer_time(world) == moment
        play = world.commands("c1", c.Play)[0]
        assert play.media == (f"sound:liyi/{prompt}",)
        assert log_detail(world, "greeting") == {"prompt": prompt, "closed": False}

    @pytest.mark.parametrize("when", ["saturday", "holiday", "after-hours"])
    def test_closed_greeting_then_closing_and_no_agents(self, when: str) -> None:
        """Outside opening hours or on a holiday the caller hears the closed greeting, then the closing prompt."""
        cfg = replace(CFG, open_hours=(OpenHours(frozenset(range(5)), dt.time(9), dt.time(18)),),
                      holidays=frozenset({dt.date(2026, 10, 1)}))
        moment = {
            "saturday": local_epoch(2026, 3, 7, 10, 0),
            "holiday": local_epoch(2026, 10, 1, 10, 0),  # a Thursday
            "after-hours": local_epoch(2026, 3, 4, 20, 0),
        }[when]
        world = World(cfg, agents={"agent1": QUICK}, start=moment - 10)
        world.add_call("c1", created_at=moment, hangs_up_at=moment + 30)
        world.run(moment + 60)
        assert [p.media for p in world.commands("c1", c.Play)] == [
            ("sound:liyi/greeting-closed",), ("sound:liyi/closing-thanks",)]
        assert not world.commands("c1", c.StartMusic)
        assert not world.commands("c1", c.RequestAgent)
        assert log_detail(world, "closing")["reason"] == "after-hours"
        ended = only_ended(world)
        assert ended.compliance["R2"]["status"] == "kept"
        assert log_detail(world, "ended")["outcome"] == "after-hours"

    def test_open_hours_inside_gets_the_band_greeting(self) -> None:
        """Inside opening hours the normal band greeting is played."""
        cfg = replace(CFG, open_hours=(OpenHours(frozenset(range(5)), dt.time(9), dt.time(18)),))
        world = World(cfg)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 2)
        assert world.commands("c1", c.Play)[0].media == ("sound:liyi/greeting-morning",)

    @pytest.mark.parametrize("wait_prompt", ["ring-wait", None])
    def test_greeting_finishes_before_music_and_agents(self, wait_prompt: str | None) -> None:
        """Music and the agent request start only after the greeting has played in full."""
        world = World(replace(CFG, wait_prompt=wait_prompt), agents={"agent1": QUICK},
                      prompts={"greeting-morning": PromptBehaviour(seconds=8.0)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        greeting_id = world.commands("c1", c.Play)[0].playback_id
        finished = [t for t, ev in world.delivered_of("c1", e.PlaybackFinished)
                    if ev.playback_id == greeting_id]
        assert finished == [answer_time(world) + 8.0]
        music = world.first_time("c1", c.StartMusic)
        request = world.first_time("c1", c.RequestAgent)
        assert music is not None and request is not None
        assert music >= finished[0] and request >= finished[0]
        kinds = world.log_kinds("c1")
        assert kinds.index("greeted") < kinds.index("queued")
        assert only_ended_or_open(world)["R2"]["status"] == "kept"

    @pytest.mark.parametrize(("result", "reason"), [
        ("failed", "greeting failed"),
        ("never", "greeting timeout"),
    ])
    def test_failed_greeting_breaks_r2_but_the_call_goes_on(self, result: str, reason: str) -> None:
        """A greeting that fails or never ends is scored R2 broken, and the caller still reaches an agent."""
        world = World(CFG, agents={"agent1": QUICK},
                      prompts={"greeting-morning": PromptBehaviour(seconds=3.0, result=result)})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 200)
        world.run(T0 + 300)
        assert world.commands("c1", c.Bridge), "the call got stuck after the greeting"
        greeted = log_detail(world, "greeted")["result"]
        assert greeted == ("failed" if result == "failed" else "timeout")
        if result == "never":
            greeted_at = world.logs("c1", "greeted")[0].at
            assert greeted_at == answer_time(world) + CFG.prompt_timeout_seconds
        r2 = only_ended(world).compliance["R2"]
        assert r2["status"] == "broken" and r2["evidence"]["reason"] == reason


def only_ended_or_open(world: World, call_id: str = "c1") -> dict[str, Any]:
    """The compliance record of the call, scoring an open call as it stands."""
    ended = world.ended(call_id)
    if ended:
        return ended[0].compliance
    from callflow.compliance import score
    return score(world.engines[call_id].facts, world.config)


# -- R9: never hang up before the caller ------------------------------------------


class TestR9CallerHangsUpLast:
    def test_agent_hangs_up_first_caller_hears_closing_and_line_stays_open(self) -> None:
        """When the agent leaves first the caller hears the closing prompt and the line stays open."""
        world = World(CFG, agents={"agent1": AgentBehaviour("answer", after=3, hangs_up_after=20)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 300)
        left = world.logs("c1", "agent-hung-up-first")
        assert len(left) == 1
        closing = world.commands("c1", c.Play)[-1]
        assert closing.channel_id == CALLER and closing.media == ("sound:liyi/closing-thanks",)
        assert world.engines["c1"].state is CallState.CLOSING
        assert world.ended("c1") == [] and not world.commands("c1", c.ReleaseIdleLine)
        assert world.hearing("c1") == "nothing"  # alone, after the closing prompt, line open
        world.caller_hangs_up("c1", T0 + 320)
        world.run(T0 + 330)
        ended = only_ended(world)
        assert ended.first_hangup == "agent" and ended.at == T0 + 320
        r9 = ended.compliance["R9"]
        assert r9["status"] == "kept" and r9["evidence"]["closing_played_at"] == left[0].at
        assert world.roster.get("agent1").engaged_by is None  # type: ignore[union-attr]
        assert_never_hangs_up_caller(world)

    def test_dtmf_during_closing_restarts_the_idle_timer(self) -> None:
        """A key pressed during closing shows someone is there, so the idle release waits a full period again."""
        world = World(CFG, agents={"agent1": AgentBehaviour("answer", after=3, hangs_up_after=20)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        closing_at = world.logs("c1", "closing")[0].at
        world.press("c1", closing_at + 300, "5")
        world.run(closing_at + CFG.idle_release_seconds + 1)
        assert not world.commands("c1", c.ReleaseIdleLine)
        world.run(closing_at + 300 + CFG.idle_release_seconds + 10)
        released = [i.at for i in world.issued_for("c1") if isinstance(i.command, c.ReleaseIdleLine)]
        assert released == [closing_at + 300 + CFG.idle_release_seconds]

    def test_idle_release_is_logged_as_the_r9_exception(self) -> None:
        """A silent open line is released only after the idle time, logged as the R9 exception, by the service."""
        cfg = replace(CFG, holidays=frozenset({dt.date(2026, 3, 4)}))  # closed: nobody hangs up
        world = World(cfg)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 2000)
        closing_at = world.logs("c1", "closing")[0].at
        released = world.issued_of("c1", c.ReleaseIdleLine)
        assert released == [(closing_at + cfg.idle_release_seconds, c.ReleaseIdleLine(channel_id=CALLER))]
        assert log_detail(world, "idle-release") == {"exception": "R9", "idle_seconds": 600.0}
        ended = only_ended(world)
        assert ended.first_hangup == "service"
        r9 = ended.compliance["R9"]
        assert r9["status"] == "kept"
        assert r9["evidence"]["exception"] == "idle line released"
        assert log_detail(world, "ended")["outcome"] == "idle-released"
        assert world.lines["c1"].first_hangup == "service"

    def test_idle_release_after_the_agent_left_keeps_agent_as_first(self) -> None:
        """After an agent left first and the line went idle, first_hangup stays "agent"."""
        world = World(CFG, agents={"agent1": AgentBehaviour("answer", after=3, hangs_up_after=20)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 2000)
        assert world.commands("c1", c.ReleaseIdleLine)
        assert only_ended(world).first_hangup == "agent"

    def test_idle_release_confirmed_by_timer_if_asterisk_stays_quiet(self) -> None:
        """If no hang-up event follows the idle release, the call still ends (by the confirm timer)."""
        cfg = replace(CFG, holidays=frozenset({dt.date(2026, 3, 4)}))
        engine = CallEngine(cfg, "c1")
        out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0))
        timers = {cmd.name: cmd for cmd in out if isinstance(cmd, c.StartTimer)}
        out = engine.handle(e.TimerFired(at=timers["answer"].at, name="answer", token=timers["answer"].token))
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        out = engine.handle(e.PlaybackFinished(at=T0 + 3, playback_id=play.playback_id))
        idle = next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == "idle")
        out = engine.handle(e.TimerFired(at=idle.at, name="idle", token=idle.token))
        confirm = next(cmd for cmd in out if isinstance(cmd, c.StartTimer))
        out = engine.handle(e.TimerFired(at=confirm.at, name=confirm.name, token=confirm.token))
        assert engine.ended
        assert next(cmd for cmd in out if isinstance(cmd, c.CallEnded)).first_hangup == "service"


# -- R10 / R12: every call ends once, with its compliance record ---------------


HANGUP_CASES = {
    # name: (agents, hangs_up_at relative to T0, answer_after_rings)
    "while ringing": ({"agent1": QUICK}, 4.0, 3),
    "during greeting": ({"agent1": QUICK}, 1.5, 1),
    "while waiting": ({}, 30.0, 1),
    "while agent ringing": ({"agent1": NEVER}, 8.0, 1),
    "connected": ({"agent1": QUICK}, 30.0, 1),
}


class TestR10EveryCallEnds:
    @pytest.mark.parametrize("case", list(HANGUP_CASES))
    def test_caller_hang_up_ends_the_call_once_with_compliance(self, case: str) -> None:
        """Wherever the caller hangs up, the call ends with exactly one CallEnded scoring R1, R2, R9, R10."""
        agents, hang, rings = HANGUP_CASES[case]
        world = World(replace(CFG, answer_after_rings=rings), agents=agents, echo_hangups=True)
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + hang)
        world.run(T0 + 100)
        ended = only_ended(world)
        assert ended.at == T0 + hang and ended.first_hangup == "caller"
        assert {"R1", "R2", "R9", "R10"} <= set(ended.compliance)
        assert all(r["status"] in ("kept", "broken", "not_applicable") for r in ended.compliance.values())
        assert ended.compliance["R9"]["status"] == "kept"
        assert ended.compliance["R10"]["status"] == "kept"
        assert log_detail(world, "ended")["first_hangup"] == "caller"
        assert world.log_kinds("c1")[-1] == "ended"
        assert world.engines["c1"].ended
        assert_never_hangs_up_caller(world)
        for agent in world.roster:
            assert agent.engaged_by is None, f"{agent.name} left engaged"

    def test_hang_up_while_ringing_is_not_scored_against_r1(self) -> None:
        """A caller who leaves before ring 3 ends makes R1 and R2 not applicable rather than broken."""
        world = World(replace(CFG, answer_after_rings=3))
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 4.0)
        world.run(T0 + 20)
        assert not world.commands("c1", c.Answer)
        compliance = only_ended(world).compliance
        assert compliance["R1"]["status"] == "not_applicable"
        assert compliance["R2"]["status"] == "not_applicable"
        assert log_detail(world, "ended")["outcome"] == "abandoned-ringing"

    def test_hang_up_while_agent_ringing_stops_and_releases_the_agent(self) -> None:
        """If the caller leaves while an agent's phone rings, that leg is hung up and the agent given back."""
        world = World(CFG, agents={"agent1": NEVER})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 8.0)
        world.run(T0 + 30)
        leg = world.commands("c1", c.Dial)[0].channel_id
        assert world.commands("c1", c.Hangup) == [c.Hangup(channel_id=leg)]
        assert world.commands("c1", c.ReleaseAgent) == [
            c.ReleaseAgent(agent="agent1", outcome="caller-hung-up")]
        offers = only_ended(world).compliance["R1"]["evidence"]["agent_offers"]
        assert offers[0]["outcome"] == "caller-hung-up"

    def test_hang_up_when_connected_hangs_up_the_agent_leg(self) -> None:
        """When the caller leaves a connected call, the agent leg is hung up and the bridge destroyed."""
        world = World(CFG, agents={"agent1": QUICK})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 30.0)
        world.run(T0 + 60)
        leg = world.commands("c1", c.Dial)[0].channel_id
        assert world.commands("c1", c.Hangup) == [c.Hangup(channel_id=leg)]
        assert world.commands("c1", c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="completed")]
        assert world.commands("c1", c.DestroyBridge) == [c.DestroyBridge(bridge_id="c1-b")]

    def test_two_calls_share_the_roster(self) -> None:
        """Two calls at once get different agents, and each ends on its own."""
        world = World(CFG, agents={"agent1": QUICK, "agent2": QUICK})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 40)
        world.add_call("c2", created_at=T0 + 0.5, hangs_up_at=T0 + 50)
        world.run(T0 + 100)
        first = {d.endpoint for d in world.commands("c1", c.Dial)}
        second = {d.endpoint for d in world.commands("c2", c.Dial)}
        assert first == {"PJSIP/agent1"} and second == {"PJSIP/agent2"}
        assert len(world.ended("c1")) == len(world.ended("c2")) == 1


class TestTimers:
    def test_stale_timer_token_is_ignored(self) -> None:
        """A TimerFired whose token is not the current one changes nothing."""
        engine = CallEngine(CFG, "c1")
        out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0))
        timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer))
        assert engine.handle(e.TimerFired(at=timer.at, name=timer.name, token=timer.token + 7)) == []
        assert engine.handle(e.TimerFired(at=timer.at, name="idle", token=timer.token)) == []
        assert engine.state is CallState.RINGING
        assert any(isinstance(cmd, c.Answer)
                   for cmd in engine.handle(e.TimerFired(at=timer.at, name=timer.name, token=timer.token)))

    def test_timer_fired_twice_acts_once(self) -> None:
        """The same timer delivered twice acts only the first time."""
        engine = CallEngine(CFG, "c1")
        out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0))
        timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer))
        fired = e.TimerFired(at=timer.at, name=timer.name, token=timer.token)
        assert engine.handle(fired)
        assert engine.handle(fired) == []

    def test_cancelled_and_replaced_timers_change_nothing(self) -> None:
        """Delivering every cancelled or superseded timer too leaves the call exactly as without them."""
        def run(stale: bool) -> list[c.Command]:
            world = World(CFG, agents={"agent1": NEVER, "agent2": AgentBehaviour(
                "answer", after=2, hangs_up_after=10)}, deliver_stale_timers=stale)
            world.add_call("c1", created_at=T0)
            world.run(T0 + 60)
            closing_at = world.logs("c1", "closing")[0].at
            world.press("c1", closing_at + 100, "1")  # replaces the idle timer
            world.run(T0 + 3000)
            return [i.command for i in world.issued_for("c1")]

        plain, with_stale = run(False), run(True)
        assert with_stale == plain
        assert sum(isinstance(cmd, c.ReleaseIdleLine) for cmd in plain) == 1


# -- the log is evidence: replay --------------------------------------------------


@dataclass(frozen=True)
class ReplayCase:
    agents: dict[str, AgentBehaviour]
    hangs_up_at: float | None
    prompts: dict[str, PromptBehaviour] = field(default_factory=dict)


REPLAY_SCENARIOS = {
    "rollover then agent leaves": ReplayCase(
        agents={"agent1": NEVER, "agent2": AgentBehaviour("decline", after=1),
                "agent3": AgentBehaviour("answer", after=4, hangs_up_after=30)},
        hangs_up_at=T0 + 200),
    "greeting timeout then caller leaves": ReplayCase(
        agents={"agent1": QUICK}, hangs_up_at=T0 + 90,
        prompts={"greeting-morning": PromptBehaviour(result="never")}),
    "idle release": ReplayCase(
        agents={"agent1": AgentBehaviour("answer", after=1, hangs_up_after=5)}, hangs_up_at=None),
}


class TestReplay:
    @pytest.mark.parametrize("name", list(REPLAY_SCENARIOS))
    def test_replaying_the_logged_events_gives_the_same_call(self, name: str) -> None:
        """Feeding a call's logged events (through JSON) to a fresh engine gives the same state, commands and compliance."""
        case = REPLAY_SCENARIOS[name]
        world = World(CFG, agents=case.agents, prompts=case.prompts, echo_hangups=True)
        world.add_call("c1", created_at=T0, stasis_delay=0.4, hangs_up_at=case.hangs_up_at)
        world.run(T0 + 2000)
        logged = [json.dumps(event_to_dict(ev), ensure_ascii=False) for ev in world.events("c1")]
        events = [event_from_dict(json.loads(line)) for line in logged]
        assert events == world.events("c1")
        engine, out = replay(CFG, "c1", events)
        original = world.engines["c1"]
        assert engine.state is original.state is CallState.ENDED
        assert engine.facts == original.facts
        assert out == [i.command for i in world.issued_for("c1")]
        replayed_end = [cmd for cmd in out if isinstance(cmd, c.CallEnded)]
        assert replayed_end == world.ended("c1") and len(replayed_end) == 1


SAMPLE_EVENTS: list[e.Event] = [
    e.StasisStart(at=T0, channel_id="1795348817.3", caller_number="13800138000",
                  caller_name="张三", created_at=T0 - 0.25),
    e.StasisEnd(at=T0 + 1, channel_id="1795348817.3"),
    e.ChannelDestroyed(at=T0 + 2, channel_id="c1-a1", cause=19, cause_txt="User alerting, no answer"),
    e.DialFailed(at=T0 + 3, channel_id="c1-a2", reason="Allocation failed"),
    e.PlaybackFinished(at=T0 + 4, playback_id="c1-p1", state="failed"),
    e.ChannelDtmfReceived(at=T0 + 5, channel_id="1795348817.3", digit="#"),
    e.ChannelEnteredBridge(at=T0 + 5, channel_id="1795348817.3", bridge_id="c1-b"),
    e.ChannelLeftBridge(at=T0 + 5, channel_id="1795348817.3", bridge_id="c1-b"),
    e.BridgeFailed(at=T0 + 5, bridge_id="c1-b", channel_ids=("1795348817.3", "c1-a1"), status=422,
                   reason="Channel not in Stasis application"),
    e.TimerFired(at=T0 + 6, name="agent-ring", token=4),
    e.AgentPicked(at=T0 + 7, agent="agent1", endpoint="PJSIP/agent1"),
    e.NoAgentFree(at=T0 + 8),
    e.HoldRequested(at=T0 + 9, agent="agent1", reason="查询订单", limit_seconds=120.0),
    e.ResumeRequested(at=T0 + 10, agent="agent1"),
    e.TransferRequested(at=T0 + 11, agent="agent1", target="dept:售后", reason="退货"),
    e.ConsentGiven(at=T0 + 12, agent="agent1"),
    e.TransferCompleteRequested(at=T0 + 13, agent="agent1"),
    e.TransferCancelRequested(at=T0 + 14, agent="agent1"),
    e.TargetAnswered(at=T0 + 15, agent="agent2", accepted=False),
    e.LeaveRequested(at=T0 + 16, agent="agent1"),
    e.NoteAdded(at=T0 + 17, agent="agent1", text="客户询问退货进度"),
    e.CallerInfoUpdated(at=T0 + 18, agent="agent1", caller_name="张三", purpose="退货",
                        wanted="售后"),
    e.RecordingFinished(at=T0 + 19, recording_name="c1-name", duration_seconds=2.5),
    e.RecordingFailed(at=T0 + 20, recording_name="c1-name", cause="hangup"),
    e.EndCallRequested(at=T0 + 21, agent="agent1", ask_more=True),
    e.FollowUpPromised(at=T0 + 22, agent="agent1", text="三个工作日后给您答复", working_days=3),
    e.NoAgentFree(at=T0 + 23, ahead=2, expected_wait_seconds=240.0),
    e.ChannelHangupRequest(at=T0 + 24, channel_id="c1-a1", cause=32, soft=True),
    e.ChannelChecked(at=T0 + 25, channel_id="1795348817.3", exists=False),
]


class TestEventDicts:
    def test_samples_cover_every_event_type(self) -> None:
        """The round-trip samples include one of every event type the engine knows."""
        assert {type(ev).__name__ for ev in SAMPLE_EVENTS} == set(e.EVENT_TYPES)

    @pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=lambda ev: type(ev).__name__)
    def test_event_round_trips_through_a_dict_and_json(self, event: e.Event) -> None:
        """event_from_dict(event_to_dict(x)) gives back x, also after a JSON round trip."""
        data = event_to_dict(event)
        assert data["type"] == type(event).__name__
        assert event_from_dict(data) == event
        assert event_from_dict(json.loads(json.dumps(data))) == event

    def test_unknown_fields_are_dropped(self) -> None:
        """A logged event with a field this version does not know still loads."""
        data = event_to_dict(SAMPLE_EVENTS[1]) | {"added_later": 1}
        assert event_from_dict(data) == SAMPLE_EVENTS[1]

    def test_unknown_event_type_is_refused(self) -> None:
        """A dict naming no known event type raises ValueError instead of guessing."""
        with pytest.raises(ValueError, match="unknown event type"):
            event_from_dict({"type": "ChannelHold", "at": T0})


class TestCadenceSanity:
    def test_china_cadence_three_rings_end_at_eleven_seconds(self) -> None:
        """With the default 1 s on / 4 s off cadence, three rings end 11 s after ringing starts."""
        assert RingCadence().ring_end(3) == 11.0
        assert RingCadence(on=2.0, off=4.0).ring_end(3) == 14.0
