"""Call flows, queues, callbacks, closing and promises in the engine (R3, R5, R8, R9).

Each test scripts a call in the simulated world of ``tests/engine_driver.py``
(fake clock, roster, scripted phones, the controller's waiting line) and
checks what the caller heard, where the call went, and what was logged.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace

import pytest

from callflow import commands as c
from callflow import events as e
from callflow.calendar import WorkCalendar
from callflow.config import AgentConfig, CallFlowConfig, Department, QueueConfig
from callflow.engine import CallState
from callflow.flow import CALLBACK, CLOSE, GREETING, MENU, QUEUE, RECORD_NAME, Flow, Step
from tests.engine_driver import T0, AgentBehaviour, World, local_epoch

NEVER = AgentBehaviour("never")
QUICK = AgentBehaviour("answer", after=2.0)
MENU_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"), ("2", "repair")),
         default="consult", repeat=2, timeout_seconds=5.0),
    Step("consult", QUEUE, department="咨询"),
    Step("repair", RECORD_NAME, prompt="name-ask", max_seconds=5.0, next="repair-q"),
    Step("repair-q", QUEUE, department="报修"),
))
AGENTS = (AgentConfig("a1", "PJSIP/a1"), AgentConfig("a2", "PJSIP/a2"))
DEPTS = (Department("咨询", "1", ("a1",)), Department("报修", "2", ("a2",)))
CFG = CallFlowConfig(agents=AGENTS, departments=DEPTS, open_flow=MENU_FLOW)
PLAIN = CallFlowConfig(agents=AGENTS)


def heard(world: World, call_id: str = "c1") -> list[str]:
    """Every prompt played to the caller, in order (names without the sound:liyi/ prefix)."""
    channel = world.lines[call_id].channel_id
    return [m.split("/")[-1] for p in world.commands(call_id, c.Play) if p.channel_id == channel
            for m in p.media]


def dialled(world: World, call_id: str = "c1") -> list[str]:
    return [d.endpoint for d in world.commands(call_id, c.Dial)]


def ended_outcome(world: World, call_id: str = "c1") -> str:
    return str(world.logs(call_id, "ended")[-1].detail["outcome"])


def compliance(world: World, rule: str, call_id: str = "c1") -> dict[str, object]:
    ended = world.ended(call_id)
    assert len(ended) == 1
    return ended[0].compliance[rule]


def menu_ends(world: World) -> float:
    """When the first menu prompt finished playing (greeting, then the menu: 2 s each)."""
    return world.first_time("c1", c.Answer) + 4.0  # type: ignore[operator]


class TestMenu:
    def test_key_routes_to_its_department(self) -> None:
        """Key 2 after the menu takes the caller to the 报修 branch: name step, then 报修's agent."""
        world = World(CFG, agents={"a1": QUICK, "a2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 3)
        world.press("c1", menu_ends(world) + 1, "2")
        world.run(T0 + 40)
        assert heard(world)[:3] == ["greeting-morning", "menu-main", "name-ask"]
        assert dialled(world) == ["PJSIP/a2"]
        assert world.logs("c1", "menu-choice")[0].detail == {"step": "main", "key": "2", "to": "repair"}

    def test_a_key_during_the_menu_prompt_stops_it_and_routes(self) -> None:
        """A caller who knows the menu can press 1 while it plays and go straight to 咨询."""
        world = World(CFG, agents={"a1": QUICK, "a2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 3)
        world.press("c1", menu_ends(world) - 1, "1")
        world.run(T0 + 40)
        assert world.commands("c1", c.StopPlayback), "the menu prompt kept playing"
        assert dialled(world) == ["PJSIP/a1"]

    def test_no_input_repeats_the_menu_then_takes_the_default_route(self) -> None:
        """Silence: the menu is said again twice with an apology, then the default route — never a hang-up."""
        world = World(CFG, agents={"a1": QUICK, "a2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 80)
        said = heard(world)
        assert said[:6] == ["greeting-morning", "menu-main", "menu-no-input", "menu-main",
                            "menu-no-input", "menu-main"]
        assert [entry.detail["why"] for entry in world.logs("c1", "menu-repeat")] == ["no-input"] * 2
        assert world.logs("c1", "menu-default")[0].detail["to"] == "consult"
        assert dialled(world) == ["PJSIP/a1"]
        assert not world.commands("c1", c.ReleaseIdleLine) and not world.ended("c1")

    def test_a_wrong_key_is_told_and_the_menu_repeated(self) -> None:
        """Key 9 is not in the menu: "您的输入有误", the menu again; then key 1 works."""
        world = World(CFG, agents={"a1": QUICK, "a2": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 3)
        world.press("c1", menu_ends(world) + 1, "9")
        world.press("c1", menu_ends(world) + 7, "1")
        world.run(T0 + 40)
        assert heard(world)[2:4] == ["menu-invalid", "menu-main"]
        assert dialled(world) == ["PJSIP/a1"]

    def test_caller_hanging_up_in_the_menu_ends_the_call_in_the_log(self) -> None:
        """A caller who leaves at the menu is logged as abandoned there, first hang-up theirs."""
        world = World(CFG, agents={"a1": QUICK})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 6)
        world.run(T0 + 30)
        ended = world.ended("c1")
        assert len(ended) == 1 and ended[0].first_hangup == "caller"
        assert ended_outcome(world) == "abandoned-menu"


class TestName:
    def test_the_recorded_name_is_kept_and_counts_for_r3(self) -> None:
        """The caller says their name after the tone; the recording is kept with the call for R3/R6."""
        world = World(CFG, agents={"a1": QUICK, "a2": AgentBehaviour("answer", after=2.0,
                                                                      hangs_up_after=None)})
        engine = world.add_call("c1", created_at=T0)
        world.run(T0 + 3)
        world.press("c1", menu_ends(world) + 1, "2")
        world.run(T0 + 40)
        ((_, _, record),) = world.recordings
        assert record.name == "c1-name" and record.channel_id == world.lines["c1"].channel_id
        assert engine.facts.name_recording == "c1-name"
        assert world.logs("c1", "name-recorded")
        world.agent_does("c1", world.now + 1, e.CallerInfoUpdated(at=0, agent="a2", purpose="报修"))
        world.caller_hangs_up("c1", world.now + 5)
        world.run(world.now + 10)
        assert compliance(world, "R3")["status"] == "kept"

    def test_a_failed_recording_goes_on_without_it(self) -> None:
        """If Asterisk cannot record, the caller still reaches the queue."""
        world = World(CFG, agents={"a1": QUICK, "a2": NEVER})
        world.name_seconds = None  # the recording's end is never reported
        world.add_call("c1", created_at=T0)
        world.run(T0 + 3)
        world.press("c1", menu_ends(world) + 1, "2")
        world.run(T0 + 40)
        assert world.logs("c1", "name-not-recorded")
        assert dialled(world)[:1] == ["PJSIP/a2"]


def waiting_config(**queue: object) -> CallFlowConfig:
    q = QueueConfig(**{"announce": "position", "announce_every_seconds": 30.0,
                       "max_wait_seconds": 90.0, **queue})  # type: ignore[arg-type]
    return replace(PLAIN, queue=q)


class TestQueue:
    def test_waiting_callers_hear_their_place_in_line(self) -> None:
        """With one busy agent, the second caller hears "前面还有1位" and the third "前面还有2位"."""
        world = World(waiting_config(), agents={"a1": AgentBehaviour("answer", after=1.0),
                                                "a2": AgentBehaviour("answer", after=1.0)})
        for i, call in enumerate(("c1", "c2", "c3", "c4")):
            world.add_call(call, created_at=T0 + i * 0.1)
        world.run(T0 + 40)
        assert "queue-ahead-0" in heard(world, "c3")
        assert "queue-ahead-1" in heard(world, "c4")
        assert not any(p.startswith("queue-ahead") for p in heard(world, "c1"))

    def test_announcements_repeat_at_the_interval_with_music_between(self) -> None:
        """Every 30 s the waiting caller hears where they stand; between, music — never silence."""
        world = World(waiting_config(max_wait_seconds=600.0), agents={"a1": NEVER})
        world.roster.phone_state("PJSIP/a1", registered=False)
        world.roster.phone_state("PJSIP/a2", registered=False)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 130)
        times = [entry.at for entry in world.logs("c1", "queue-announced")]
        assert len(times) >= 4
        assert all(25 <= b - a <= 35 for a, b in itertools.pairwise(times))
        queued = world.first_time("c1", c.StartMusic)
        assert queued is not None and world.silent_spans("c1", queued, world.now) == []

    def test_first_come_first_served(self) -> None:
        """When the busy agent frees up, the caller who waited longest gets them."""
        world = World(waiting_config(), agents={
            "a1": [AgentBehaviour("answer", after=1.0, hangs_up_after=20.0), QUICK, QUICK]})
        world.roster.phone_state("PJSIP/a2", registered=False)
        for i, call in enumerate(("c1", "c2", "c3")):
            world.add_call(call, created_at=T0 + i * 2.0)
        world.run(T0 + 60)
        connected = {call: world.logs(call, "connected")[0].at
                     for call in ("c2", "c3") if world.logs(call, "connected")}
        assert "c2" in connected
        assert "c3" not in connected or connected["c2"] < connected["c3"]

    def test_expected_wait_is_announced_in_minutes(self) -> None:
        """With announce: wait, the caller hears the expected wait rounded up to whole minutes."""
        cfg = replace(waiting_config(announce="wait", expected_handle_seconds=150.0))
        world = World(cfg, agents={"a1": NEVER})
        world.roster.phone_state("PJSIP/a2", registered=False)
        world.roster.phone_state("PJSIP/a1", registered=False)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 20)
        assert "queue-wait-3" in heard(world)  # 1 caller × 150 s on 1 agent (none signed in: 1)


def nobody_free(cfg: CallFlowConfig, **kw: object) -> World:
    world = World(cfg, agents={"a1": NEVER, "a2": NEVER}, **kw)  # type: ignore[arg-type]
    world.roster.phone_state("PJSIP/a1", registered=False)
    world.roster.phone_state("PJSIP/a2", registered=False)
    return world


def offer_time(world: World) -> float:
    entry = world.logs("c1", "callback-offered")
    assert entry, world.log_kinds("c1")
    return entry[0].at


class TestCallbackOffer:
    def test_offer_comes_at_the_maximum_wait(self) -> None:
        """After max_wait_seconds of waiting the caller hears the callback offer."""
        world = nobody_free(waiting_config())
        world.add_call("c1", created_at=T0)
        world.run(T0 + 120)
        queued = world.logs("c1", "queued")[0].at
        assert offer_time(world) - queued == pytest.approx(90.0, abs=0.01)
        assert "callback-offer" in heard(world)

    def test_agents_who_never_answer_do_not_hold_back_the_offer(self) -> None:
        """Agents ringing out one after another: the offer comes when the ring at the maximum wait ends."""
        world = World(waiting_config(), agents={"a1": NEVER, "a2": NEVER})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 130)
        queued = world.logs("c1", "queued")[0].at
        ring = CFG.cadence.ring_end(CFG.agent_rings)
        assert 90.0 <= offer_time(world) - queued <= 90.0 + ring + 0.01

    def test_no_key_keeps_the_caller_waiting_in_line(self) -> None:
        """No answer to the offer: "请您继续稍候", music, agents asked again, offer again later — never cut off."""
        world = nobody_free(waiting_config())
        world.add_call("c1", created_at=T0)
        world.run(T0 + 400)
        assert len(world.logs("c1", "callback-offered")) >= 2
        assert world.logs("c1", "callback-declined")[0].detail["how"] == "no-key"
        assert "queue-continue" in heard(world)
        assert not world.ended("c1") and not world.commands("c1", c.ReleaseIdleLine)
        assert world.engines["c1"].state in (CallState.OFFERING, CallState.CALLBACK_OFFER)

    def test_key_1_reads_back_the_caller_id_and_key_1_confirms(self) -> None:
        """1, the number read back digit by digit, 1: a callback follow-up is recorded, then thanks."""
        world = nobody_free(waiting_config())
        world.add_call("c1", created_at=T0, caller_number="13800138000")
        world.run(T0 + 96)
        world.press("c1", offer_time(world) + 3, "1")
        world.run(offer_time(world) + 4)
        readback_end = offer_time(world) + 4 + 2.0  # the read-back plays as one prompt (2 s)
        world.press("c1", readback_end + 1, "1")
        world.run(readback_end + 20)
        said = heard(world)
        start = said.index("callback-number-is")
        assert said[start + 1:start + 12] == [f"digit-{d}" for d in "13800138000"]
        assert said[start + 12] == "callback-confirm"
        (followup,) = world.followups
        assert followup.kind == "callback" and followup.number == "13800138000"
        assert followup.owner == ""
        assert said[-1] == "callback-recorded"
        assert world.engines["c1"].state is CallState.CLOSING  # line open until the caller hangs up
        world.caller_hangs_up("c1", world.now + 3)
        world.run(world.now + 5)
        assert compliance(world, "R5")["status"] == "kept"
        assert compliance(world, "R8")["status"] == "kept"
        assert world.ended("c1")[0].first_hangup == "caller"

    def test_another_number_can_be_keyed_in_and_is_read_back(self) -> None:
        """2 at the read-back: the caller types another number ending with #, it is read back, 1 confirms."""
        world = nobody_free(waiting_config())
        world.add_call("c1", created_at=T0, caller_number="anonymous")
        world.run(T0 + 96)
        t = offer_time(world) + 3
        world.press("c1", t, "1")  # caller id unusable: asked to type one
        for i, digit in enumerate("02112345678#"):
            world.press("c1", t + 3 + i * 0.3, digit)
        world.run(t + 8)
        world.press("c1", world.now + 1, "1")
        world.run(world.now + 10)
        (followup,) = world.followups
        assert followup.number == "02112345678"
        assert world.logs("c1", "callback-number-read-back")[0].detail["source"] == "keyed"

    def test_unconfirmed_number_records_nothing_and_keeps_waiting(self) -> None:
        """No key at the read-back: no callback on an unconfirmed number; the caller keeps their place."""
        world = nobody_free(waiting_config())
        world.add_call("c1", created_at=T0)
        world.run(T0 + 96)
        world.press("c1", offer_time(world) + 3, "1")
        world.run(offer_time(world) + 40)
        assert world.followups == []
        assert world.logs("c1", "callback-not-confirmed")
        assert not world.ended("c1")

    def test_callback_due_date_counts_working_days_over_a_holiday(self) -> None:
        """A callback left on 2026-09-30 with one working day is due 2026-10-09 (国庆 off, 10-08 … )."""
        cal = WorkCalendar(holidays=frozenset(dt.date(2026, 10, d) for d in range(1, 8)),
                           workdays=frozenset({dt.date(2026, 10, 10)}))
        cfg = replace(waiting_config(), calendar=cal)
        start = local_epoch(2026, 9, 30, 10, 0)
        world = nobody_free(cfg, start=start)
        world.add_call("c1", created_at=start)
        world.run(start + 96)
        world.press("c1", offer_time(world) + 3, "1")
        world.run(offer_time(world) + 7)
        world.press("c1", world.now + 1, "1")
        world.run(world.now + 5)
        (followup,) = world.followups
        assert followup.due == "2026-10-08"


class TestClosingAndPromises:
    def connected(self, cfg: CallFlowConfig = PLAIN) -> World:
        world = World(cfg, agents={"a1": QUICK})
        world.roster.phone_state("PJSIP/a2", registered=False)
        world.add_call("c1", created_at=T0)
        world.run(T0 + 20)
        assert world.engines["c1"].state is CallState.CONNECTED
        return world

    def test_end_with_the_question_then_thanks_and_the_caller_hangs_up_first(self) -> None:
        """Ask "还有其他问题吗", then thanks; the agent stays until the caller puts the phone down."""
        world = self.connected()
        world.agent_does("c1", world.now + 1, e.EndCallRequested(at=0, agent="a1", ask_more=True))
        world.run(world.now + 5)
        assert world.engines["c1"].state is CallState.CLOSE_ASK
        world.agent_does("c1", world.now + 1, e.EndCallRequested(at=0, agent="a1"))
        world.run(world.now + 5)
        said = heard(world)
        assert said[-2:] == ["closing-more", "closing-thanks"]
        assert not world.commands("c1", c.ReleaseAgent), "the agent left before the caller"
        world.caller_hangs_up("c1", world.now + 2)
        world.run(world.now + 5)
        ended = world.ended("c1")[0]
        assert ended.first_hangup == "caller"
        assert ended.compliance["R8"]["status"] == "kept"
        assert ended.compliance["R9"]["status"] == "kept"

    def test_no_question_unless_the_agent_chooses_it(self) -> None:
        """Ending without the question: the caller hears only the thanks."""
        world = self.connected()
        world.agent_does("c1", world.now + 1, e.EndCallRequested(at=0, agent="a1"))
        world.run(world.now + 5)
        assert "closing-more" not in heard(world) and heard(world)[-1] == "closing-thanks"

    def test_more_questions_go_back_to_the_conversation(self) -> None:
        """After the question the agent can carry on: the call is connected again, nothing closed."""
        world = self.connected()
        world.agent_does("c1", world.now + 1, e.EndCallRequested(at=0, agent="a1", ask_more=True))
        world.agent_does("c1", world.now + 4, e.ResumeRequested(at=0, agent="a1"))
        world.run(world.now + 6)
        assert world.engines["c1"].state is CallState.CONNECTED
        assert "closing-thanks" not in heard(world)

    def test_a_silent_caller_frees_the_agent_but_keeps_the_line(self) -> None:
        """After the thanks a caller who never hangs up: the agent is released, the caller's line stays."""
        world = self.connected()
        world.agent_does("c1", world.now + 1, e.EndCallRequested(at=0, agent="a1"))
        world.run(world.now + 60)
        assert world.commands("c1", c.ReleaseAgent)
        assert world.lines["c1"].alive and not world.commands("c1", c.ReleaseIdleLine)

    def test_wrap_up_keeps_the_next_call_away(self) -> None:
        """An agent with 30 s wrap-up is not offered the next caller until it is over."""
        cfg = replace(PLAIN, agents=(AgentConfig("a1", "PJSIP/a1", wrap_up_seconds=30.0),))
        world = World(cfg, agents={"a1": AgentBehaviour("answer", after=1.0, hangs_up_after=None)})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 15)
        world.caller_hangs_up("c1", T0 + 16)
        world.add_call("c2", created_at=T0 + 17)
        world.run(T0 + 80)
        released = next(at for at, cmd in world.issued_of("c1", c.ReleaseAgent))
        rung = world.first_time("c2", c.Dial)
        assert rung is not None and rung >= released + 30.0

    def test_promise_due_date_skips_the_weekend(self) -> None:
        """"三个工作日后给您答复" on a Thursday is due the next Tuesday; owner the agent."""
        thursday = local_epoch(2026, 3, 5, 10, 0)
        world = World(PLAIN, agents={"a1": QUICK}, start=thursday)
        world.add_call("c1", created_at=thursday)
        world.run(thursday + 20)
        world.agent_does("c1", world.now + 1, e.FollowUpPromised(at=0, agent="a1",
                                                                  text="三个工作日后给您答复"))
        world.run(world.now + 3)
        (promise,) = world.followups
        assert (promise.kind, promise.owner, promise.due) == ("promise", "a1", "2026-03-10")
        notice = world.notifications("c1", "a1", "followup")[-1]
        assert notice.data["due"] == "2026-03-10"

    def test_promise_needs_an_agent_of_the_call_and_a_sane_reply_time(self) -> None:
        """Someone not on the call, or 90 working days, is refused and nothing is recorded."""
        world = self.connected()
        world.agent_does("c1", world.now + 1, e.FollowUpPromised(at=0, agent="a2", text="x"))
        world.agent_does("c1", world.now + 2, e.FollowUpPromised(at=0, agent="a1", text="x",
                                                                  working_days=90))
        world.run(world.now + 4)
        assert world.followups == []
        assert len(world.logs("c1", "agent-request-refused")) == 2


class TestClosedFlow:
    def test_closed_flow_offers_a_callback_then_closes(self) -> None:
        """After hours: closed greeting, "如需回电请按1"; no key → the closing, the line open."""
        closed = Flow("closed", "greeting", (
            Step("greeting", GREETING, next="offer"),
            Step("offer", CALLBACK, prompt="callback-offer-closed", next="bye"),
            Step("bye", CLOSE),
        ))
        cfg = replace(PLAIN, closed_flow=closed, holidays=frozenset({dt.date(2026, 3, 4)}))
        world = World(cfg, agents={"a1": QUICK})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        assert heard(world)[:3] == ["greeting-closed", "callback-offer-closed", "closing-thanks"]
        assert dialled(world) == []
        assert world.engines["c1"].state is CallState.CLOSING
