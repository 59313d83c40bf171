"""Callbacks the center places (ETIQUETTE.md R8 agent first, R9 never before the customer).

Unit tests drive ``CallbackEngine`` event by event through a small ``Run``
harness (it remembers the timers the engine asked for, so a test can fire
the current one or a stale one). The property tests at the end run random
phones and panel requests through a tiny simulated world, and random event
streams straight into the engine, and check the invariants that must hold
whatever happens.
"""

from __future__ import annotations

import datetime as dt
import heapq
from dataclasses import dataclass, field, replace
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callflow import commands as c
from callflow import events as e
from callflow.callback import (
    CUSTOMER_RING,
    CallbackEngine,
    CallbackRecord,
    CallbackState,
    opening_line,
    score_callback,
)
from callflow.config import AgentConfig, CallFlowConfig, FollowUpConfig
from callflow.core import AGENT_RING, IDLE, KEYS, PROMPT, RELEASE_CONFIRM
from callflow.facts import CallFacts
from tests.engine_driver import T0

AGENTS = (AgentConfig("agent1", "PJSIP/agent1", wrap_up_seconds=20.0),
          AgentConfig("agent2", "PJSIP/agent2"))
CFG = CallFlowConfig(agents=AGENTS, company="礼仪客服中心")
NUMBER = "13800138000"
AGENT_LEG = "cb1-a1"
CUSTOMER_LEG = "cb1-c1"
ASKED_ON = T0 - 2 * 86400  # the customer called on Monday 2 March 2026
AGENT_RINGS_SECONDS = CFG.cadence.ring_end(CFG.agent_rings)  # 11 s

CommandT = TypeVar("CommandT", bound=c.Command)


class Run:
    """One callback engine, the commands it gave, and its pending timers (latest token wins)."""

    def __init__(self, config: CallFlowConfig = CFG, number: str = NUMBER,
                 requested_at: float | None = ASKED_ON) -> None:
        self.engine = CallbackEngine(config, "cb1", followup_id="fu-7", number=number,
                                     agent="agent1", endpoint="PJSIP/agent1",
                                     requested_at=requested_at)
        self.issued: list[tuple[e.Event | None, c.Command]] = []
        self.timers: dict[str, c.StartTimer] = {}
        self.old_timers: dict[str, c.StartTimer] = {}
        self._take(None, self.engine.start(T0))

    def _take(self, ev: e.Event | None, commands: list[c.Command]) -> list[c.Command]:
        for cmd in commands:
            self.issued.append((ev, cmd))
            if isinstance(cmd, c.StartTimer):
                if cmd.name in self.timers:
                    self.old_timers[cmd.name] = self.timers[cmd.name]
                self.timers[cmd.name] = cmd
            elif isinstance(cmd, c.CancelTimer):
                self.timers.pop(cmd.name, None)
        return commands

    def feed(self, ev: e.Event) -> list[c.Command]:
        if isinstance(ev, e.TimerFired):
            self.timers.pop(ev.name, None)
        return self._take(ev, self.engine.handle(ev))

    def fire(self, name: str, at: float | None = None) -> list[c.Command]:
        timer = self.timers[name]
        return self.feed(e.TimerFired(at=timer.at if at is None else at, name=name, token=timer.token))

    def of(self, kind: type[CommandT]) -> list[CommandT]:
        return [cmd for _, cmd in self.issued if isinstance(cmd, kind)]

    def logs(self, kind: str) -> list[c.Log]:
        return [log for log in self.of(c.Log) if log.kind == kind]

    def ended(self) -> c.CallEnded:
        ended = self.of(c.CallEnded)
        assert len(ended) == 1, f"expected one CallEnded, got {len(ended)}"
        return ended[0]

    def outcome(self) -> str:
        return str(self.logs("ended")[-1].detail["outcome"])

    # the usual steps
    def agent_answers(self, at: float = T0 + 4) -> list[c.Command]:
        return self.feed(e.StasisStart(at=at, channel_id=AGENT_LEG))

    def customer_answers(self, at: float = T0 + 12) -> list[c.Command]:
        return self.feed(e.StasisStart(at=at, channel_id=CUSTOMER_LEG, caller_number=NUMBER))

    def hangs_up(self, channel: str, at: float, cause: int = 16) -> list[c.Command]:
        out = self.feed(e.StasisEnd(at=at, channel_id=channel))
        return out + self.feed(e.ChannelDestroyed(at=at + 0.01, channel_id=channel, cause=cause))

    def connected(self) -> Run:
        self.agent_answers()
        self.customer_answers()
        assert self.engine.state is CallbackState.CONNECTED
        return self


def state(run: Run) -> CallbackState:
    """The engine's state now (a call, so a type checker does not carry one check to the next)."""
    return run.engine.state


def dials(commands: list[c.Command], channel: str) -> list[c.Dial]:
    return [cmd for cmd in commands if isinstance(cmd, c.Dial) and cmd.channel_id == channel]


def hangups(run: Run, channel: str) -> list[c.Command]:
    return [cmd for cmd in run.of(c.Command) if isinstance(cmd, (c.Hangup, c.ReleaseIdleLine))
            and cmd.channel_id == channel]


def plays_to(run: Run, channel: str) -> list[tuple[str, ...]]:
    return [p.media for p in run.of(c.Play) if p.channel_id == channel]


def notices(run: Run, kind: str = "callback") -> list[dict[str, object]]:
    return [n.data for n in run.of(c.NotifyAgent) if n.kind == kind and n.agent == "agent1"]


# -- R8: the agent first ------------------------------------------------------------


class TestAgentFirst:
    def test_start_rings_only_the_agent(self) -> None:
        """Starting a callback dials the agent's phone for their three rings, and nobody else."""
        run = Run()
        dial = run.of(c.Dial)
        assert [d.channel_id for d in dial] == [AGENT_LEG]
        assert dial[0].endpoint == "PJSIP/agent1"
        assert dial[0].app_args == "callback,cb1"
        assert dial[0].caller_id == f'"回电" <{NUMBER}>'
        assert dial[0].ring_seconds == 0.0  # the agent's rings (R1) + the controller's margin
        assert run.timers[AGENT_RING].at == T0 + AGENT_RINGS_SECONDS
        assert run.logs("callback-started")[0].detail == {
            "followup_id": "fu-7", "number": NUMBER, "agent": "agent1"}
        assert run.engine.callback_view()["stage"] == "agent-ringing"

    def test_no_customer_dial_before_the_agent_answers(self) -> None:
        """Notes, keys and a stray customer-leg event while the agent rings never dial the customer."""
        run = Run()
        run.feed(e.NoteAdded(at=T0 + 1, agent="agent1", text="准备回电"))
        run.feed(e.StasisStart(at=T0 + 2, channel_id=CUSTOMER_LEG))
        run.feed(e.ChannelDtmfReceived(at=T0 + 3, channel_id=AGENT_LEG, digit="1"))
        assert not dials(run.of(c.Command), CUSTOMER_LEG)
        assert state(run) is CallbackState.AGENT_RINGING
        assert not run.engine.owns_channel(CUSTOMER_LEG)

    def test_agent_answer_dials_the_customer_with_the_opening_line(self) -> None:
        """Once the agent answers they hear "callback-dialing", the customer is dialled, the panel gets the line."""
        run = Run()
        out = run.agent_answers()
        dial = dials(out, CUSTOMER_LEG)
        assert len(dial) == 1
        assert dial[0].endpoint == f"PJSIP/{NUMBER}@carrier"
        assert dial[0].caller_id == "礼仪客服中心"
        assert dial[0].app_args == "callback,cb1"
        assert dial[0].ring_seconds == CFG.followups.customer_ring_seconds
        assert plays_to(run, AGENT_LEG) == [("sound:liyi/callback-dialing",)]
        # the agent is told what to say before the customer's phone even rings
        play_at = out.index(next(p for p in out if isinstance(p, c.Play)))
        assert play_at < out.index(dial[0])
        view = notices(run)[-1]
        assert view["stage"] == "dialing"
        assert view["opening_line"] == "您好，我是礼仪客服中心的agent1，关于您3月2日来电反映的问题给您回电。"
        assert view["number"] == NUMBER and view["followup_id"] == "fu-7"
        assert AGENT_RING not in run.timers
        assert run.engine.caller_channel == CUSTOMER_LEG
        assert run.engine.facts.caller_number == NUMBER and run.engine.facts.agent == "agent1"

    def test_configured_caller_id_and_trunk(self) -> None:
        """The customer's phone shows the configured caller id, dialled through the configured trunk."""
        fu = FollowUpConfig(customer_dial="PJSIP/{number}@carrier", caller_id='"礼仪" <4008001234>',
                            customer_ring_seconds=25.0)
        run = Run(replace(CFG, followups=fu))
        dial = dials(run.agent_answers(), CUSTOMER_LEG)[0]
        assert (dial.endpoint, dial.caller_id, dial.ring_seconds) == (
            f"PJSIP/{NUMBER}@carrier", '"礼仪" <4008001234>', 25.0)
        assert run.timers[CUSTOMER_RING].at > T0 + 4 + 25.0

    def test_number_cannot_reroute_the_dial(self) -> None:
        """Only the digits of a stored number reach the dial string and the agent's display."""
        run = Run(number="+86 138-0013/8000@evil&PJSIP/x")
        assert run.of(c.Dial)[0].caller_id == '"回电" <+8613800138000>'
        dial = dials(run.agent_answers(), CUSTOMER_LEG)[0]
        assert dial.endpoint == "PJSIP/+8613800138000@carrier"

    def test_no_number_dials_nobody(self) -> None:
        """A follow-up without a dialable number ends at once; no phone rings."""
        run = Run(number="未留号码")
        assert not run.of(c.Dial)
        assert run.outcome() == "no-number"
        assert run.engine.ended and run.engine.callback_view()["stage"] == "failed"
        assert run.of(c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="no-number")]


class TestOpeningLine:
    def test_names_agent_and_company_never_asks_who(self) -> None:
        """The opening line introduces the agent and the company first and never asks the customer's name."""
        line = opening_line("礼仪客服中心", "王芳", dt.date(2026, 3, 2))
        assert line == "您好，我是礼仪客服中心的王芳，关于您3月2日来电反映的问题给您回电。"
        assert "请问您是哪位" not in line and "贵姓" not in line
        assert line.index("礼仪客服中心") < line.index("回电")

    def test_without_a_date(self) -> None:
        """Without the original call's time the line still introduces, just without a date."""
        run = Run(requested_at=None)
        assert run.engine.callback_view()["opening_line"] == "您好，我是礼仪客服中心的agent1，关于您来电反映的问题给您回电。"


# -- the agent does not come ------------------------------------------------------------


class TestAgentNotReached:
    def test_ring_timeout(self) -> None:
        """After the agent's three rings their leg is hung up; the customer was never dialled."""
        run = Run()
        run.fire(AGENT_RING)
        assert hangups(run, AGENT_LEG) == [c.Hangup(channel_id=AGENT_LEG)]
        assert not dials(run.of(c.Command), CUSTOMER_LEG)
        assert run.outcome() == "agent-no-answer"
        assert run.of(c.ReleaseAgent)[-1].agent == "agent1"
        ended = run.ended()
        assert ended.first_hangup == "agent"
        assert ended.compliance["R8"]["status"] == "not_applicable"
        assert ended.compliance["R9"]["status"] == "not_applicable"
        assert run.engine.ended and run.engine.live_channels() == set()
        assert run.engine.callback_view()["stage"] == "failed"
        assert run.engine.callback_view()["reason"] == "no-answer"

    @pytest.mark.parametrize(("event", "reason"), [
        (e.ChannelDestroyed(at=T0 + 3, channel_id=AGENT_LEG, cause=17, cause_txt="User busy"), "declined"),
        (e.ChannelDestroyed(at=T0 + 12, channel_id=AGENT_LEG, cause=19), "no-answer"),
        (e.DialFailed(at=T0, channel_id=AGENT_LEG, reason="Allocation failed"), "unreachable"),
    ])
    def test_declined_or_unreachable(self, event: e.Event, reason: str) -> None:
        """An agent who declines, rings out or cannot be reached ends the callback; no hang-up is needed."""
        run = Run()
        run.feed(event)
        assert run.outcome() == "agent-no-answer"
        assert run.logs("callback-agent-no-answer")[0].detail["reason"] == reason
        assert not hangups(run, AGENT_LEG)
        assert not dials(run.of(c.Command), CUSTOMER_LEG)
        assert run.engine.facts.offers[0].outcome == reason
        run.ended()

    def test_agent_cancels_from_the_panel(self) -> None:
        """The agent leaving while their own phone rings cancels the callback."""
        run = Run()
        run.feed(e.LeaveRequested(at=T0 + 2, agent="agent1"))
        assert hangups(run, AGENT_LEG) == [c.Hangup(channel_id=AGENT_LEG)]
        assert run.outcome() == "agent-no-answer"
        assert run.engine.callback_view()["reason"] == "cancelled"

    def test_late_agent_answer_is_released(self) -> None:
        """An agent phone answering after we gave up is hung up and never leads to the customer."""
        run = Run()
        run.fire(AGENT_RING)
        out = run.agent_answers(at=T0 + 11.5)
        assert out[0] == c.Hangup(channel_id=AGENT_LEG)
        assert not dials(run.of(c.Command), CUSTOMER_LEG)
        assert len(run.of(c.CallEnded)) == 1


# -- the customer answers --------------------------------------------------------------


class TestCustomerAnswers:
    def test_bridged_with_the_agent(self) -> None:
        """The customer's answer bridges them with the agent (agent keys absorbed) and stops the agent's prompt."""
        run = Run()
        run.agent_answers()
        out = run.customer_answers()
        prompt = run.of(c.Play)[0].playback_id
        assert c.StopPlayback(playback_id=prompt) in out
        bridge = [cmd for cmd in out if isinstance(cmd, c.Bridge)]
        assert bridge == [c.Bridge(bridge_id="cb1-b", channel_ids=(CUSTOMER_LEG, AGENT_LEG),
                                   absorb_dtmf=(AGENT_LEG,))]
        assert run.logs("callback-connected")
        assert CUSTOMER_RING not in run.timers
        assert run.engine.callback_view()["stage"] == "connected"
        assert run.engine.agent_role("agent1") == "callback"
        assert run.engine.agent_role("agent2") is None
        assert run.engine.agent == "agent1"
        assert run.engine.live_channels() == {AGENT_LEG, CUSTOMER_LEG}
        setvar = [cmd for cmd in out if isinstance(cmd, c.SetVar)]
        assert setvar and setvar[0].channel_id == CUSTOMER_LEG and '"kind":"callback"' in setvar[0].value

    def test_prompt_already_over_is_not_stopped(self) -> None:
        """A dialing prompt that already ended is not stopped again."""
        run = Run()
        run.agent_answers()
        run.feed(e.PlaybackFinished(at=T0 + 6, playback_id=run.of(c.Play)[0].playback_id))
        assert not [cmd for cmd in run.customer_answers() if isinstance(cmd, c.StopPlayback)]

    def test_customer_hangs_up_first(self) -> None:
        """The customer hanging up ends the call: the agent's leg is released with wrap-up; R8 and R9 kept."""
        run = Run().connected()
        run.hangs_up(CUSTOMER_LEG, T0 + 90)
        assert hangups(run, CUSTOMER_LEG) == []
        assert c.Hangup(channel_id=AGENT_LEG) in run.of(c.Hangup)
        assert run.of(c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="completed",
                                                         wrap_up_seconds=20.0)]
        ended = run.ended()
        assert ended.first_hangup == "caller"
        assert run.outcome() == "completed"
        assert ended.compliance["R8"]["status"] == "kept"
        assert ended.compliance["R9"]["status"] == "kept"
        assert ended.compliance["R10"]["status"] == "kept"
        assert {ended.compliance[r]["status"] for r in ("R1", "R2", "R4", "R5", "R6")} == {"not_applicable"}

    def test_customer_keys_are_theirs(self) -> None:
        """Keys the customer presses while talking do nothing to the call."""
        run = Run().connected()
        assert run.feed(e.ChannelDtmfReceived(at=T0 + 20, channel_id=CUSTOMER_LEG, digit="9")) == []


class TestCustomerNotReached:
    @pytest.mark.parametrize(("event", "reason", "stage"), [
        (e.ChannelDestroyed(at=T0 + 20, channel_id=CUSTOMER_LEG, cause=17, cause_txt="User busy"),
         "busy", "no-answer"),
        (e.ChannelDestroyed(at=T0 + 34, channel_id=CUSTOMER_LEG, cause=19), "no-answer", "no-answer"),
        (e.DialFailed(at=T0 + 4, channel_id=CUSTOMER_LEG, reason="trunk down"), "unreachable", "failed"),
    ])
    def test_agent_told_and_released(self, event: e.Event, reason: str, stage: str) -> None:
        """A busy, unanswered or unreachable customer: the agent is told, their leg hung up, the follow-up stays open."""
        run = Run()
        run.agent_answers()
        run.feed(event)
        told = notices(run, "callback-failed")
        assert told and told[0]["reason"] == reason and told[0]["followup_id"] == "fu-7"
        assert c.Hangup(channel_id=AGENT_LEG) in run.of(c.Hangup)
        assert not hangups(run, CUSTOMER_LEG)  # already gone
        assert run.of(c.ReleaseAgent) == [c.ReleaseAgent(agent="agent1", outcome="customer-no-answer")]
        assert run.outcome() == "customer-no-answer"
        ended = run.ended()
        assert ended.compliance["R8"]["status"] == "not_applicable"
        assert ended.compliance["R9"]["status"] == "not_applicable"
        view = run.engine.callback_view()
        assert (view["stage"], view["reason"]) == (stage, reason)

    def test_ring_timeout_stops_the_customer_phone(self) -> None:
        """If Asterisk never ends the ringing, our timer stops the customer's (unanswered) leg."""
        run = Run()
        run.agent_answers()
        run.fire(CUSTOMER_RING)
        assert hangups(run, CUSTOMER_LEG) == [c.Hangup(channel_id=CUSTOMER_LEG)]
        assert c.Hangup(channel_id=AGENT_LEG) in run.of(c.Hangup)
        assert run.outcome() == "customer-no-answer"


class TestAgentLeavesWhileDialing:
    def test_agent_hangs_up(self) -> None:
        """The agent hanging up before the customer answered stops the customer's ringing phone."""
        run = Run()
        run.agent_answers()
        run.hangs_up(AGENT_LEG, T0 + 8)
        assert hangups(run, CUSTOMER_LEG) == [c.Hangup(channel_id=CUSTOMER_LEG)]
        assert not hangups(run, AGENT_LEG)
        assert run.outcome() == "agent-left"
        assert run.ended().first_hangup == "agent"
        assert run.engine.live_channels() == set()

    @pytest.mark.parametrize("request_", [e.LeaveRequested(at=T0 + 8, agent="agent1"),
                                          e.EndCallRequested(at=T0 + 8, agent="agent1")])
    def test_agent_leaves_from_the_panel(self, request_: e.Event) -> None:
        """Leaving from the panel before the customer answered hangs up both legs."""
        run = Run()
        run.agent_answers()
        run.feed(request_)
        assert {h.channel_id for h in run.of(c.Hangup)} == {AGENT_LEG, CUSTOMER_LEG}
        assert run.outcome() == "agent-left"

    def test_agent_key_code_leave(self) -> None:
        """``*9`` typed on the agent's phone while the customer rings means the same as the panel's leave."""
        run = Run()
        run.agent_answers()
        run.feed(e.ChannelDtmfReceived(at=T0 + 6, channel_id=AGENT_LEG, digit="*"))
        run.feed(e.ChannelDtmfReceived(at=T0 + 6.5, channel_id=AGENT_LEG, digit="9"))
        assert run.outcome() == "agent-left"


# -- R9: the agent leaves first -------------------------------------------------------


class TestAgentLeavesFirst:
    def test_agent_hangs_up_customer_hears_closing(self) -> None:
        """The agent hanging up first: the customer hears the closing, the line stays open, never hung up."""
        run = Run().connected()
        run.hangs_up(AGENT_LEG, T0 + 60)
        assert state(run) is CallbackState.CLOSING
        assert plays_to(run, CUSTOMER_LEG) == [("sound:liyi/closing-thanks",)]
        assert run.timers[IDLE].at == T0 + 60 + CFG.idle_release_seconds
        assert run.engine.callback_view()["stage"] == "closing"
        assert run.engine.live_channels() == {CUSTOMER_LEG}
        assert run.of(c.ReleaseAgent)[-1].wrap_up_seconds == 20.0
        run.feed(e.PlaybackFinished(at=T0 + 63, playback_id=run.of(c.Play)[-1].playback_id))
        assert run.logs("closing-played")[0].detail["result"] == "done"
        run.hangs_up(CUSTOMER_LEG, T0 + 65)
        assert hangups(run, CUSTOMER_LEG) == []
        assert run.outcome() == "completed"
        ended = run.ended()
        assert ended.first_hangup == "agent"
        assert ended.compliance["R9"]["status"] == "kept"
        assert ended.compliance["R9"]["evidence"]["closing_played_at"] == T0 + 60

    @pytest.mark.parametrize("request_", [e.LeaveRequested(at=T0 + 60, agent="agent1"),
                                          e.EndCallRequested(at=T0 + 60, agent="agent1")])
    def test_agent_leaves_from_the_panel(self, request_: e.Event) -> None:
        """Leaving from the panel after the customer answered hangs up only the agent; the customer hears the closing."""
        run = Run().connected()
        run.feed(request_)
        assert [h.channel_id for h in run.of(c.Hangup)] == [AGENT_LEG]
        assert state(run) is CallbackState.CLOSING
        assert plays_to(run, CUSTOMER_LEG) == [("sound:liyi/closing-thanks",)]
        assert run.logs("agent-left")[0].detail["via"] == "request"

    def test_key_code_leave(self) -> None:
        """``*9`` on the agent's phone while talking closes like the panel's leave."""
        run = Run().connected()
        run.feed(e.ChannelDtmfReceived(at=T0 + 30, channel_id=AGENT_LEG, digit="*"))
        assert KEYS in run.timers
        run.feed(e.ChannelDtmfReceived(at=T0 + 30.4, channel_id=AGENT_LEG, digit="9"))
        assert state(run) is CallbackState.CLOSING
        assert run.logs("keycode")[0].detail["action"] == "leave"

    def test_other_key_codes_are_refused(self) -> None:
        """Hold or transfer key codes are not available on a callback: the agent is told, nothing happens."""
        run = Run().connected()
        run.feed(e.ChannelDtmfReceived(at=T0 + 30, channel_id=AGENT_LEG, digit="*"))
        out = run.feed(e.ChannelDtmfReceived(at=T0 + 30.4, channel_id=AGENT_LEG, digit="1"))
        assert run.logs("keycode-unavailable")
        assert any(isinstance(cmd, c.NotifyAgent) and cmd.kind == "error" for cmd in out)
        assert state(run) is CallbackState.CONNECTED

    def test_ask_more_first(self) -> None:
        """"请问您还有其他问题吗？" is played with the agent still on the line; the next end request closes."""
        run = Run().connected()
        run.feed(e.EndCallRequested(at=T0 + 60, agent="agent1", ask_more=True))
        assert plays_to(run, CUSTOMER_LEG) == [("sound:liyi/closing-more",)]
        assert state(run) is CallbackState.CONNECTED
        assert run.engine.closing_view() == {"stage": "asked"}
        assert not run.of(c.Hangup)
        run.feed(e.PlaybackFinished(at=T0 + 63, playback_id=run.of(c.Play)[-1].playback_id))
        run.feed(e.EndCallRequested(at=T0 + 66, agent="agent1"))
        assert state(run) is CallbackState.CLOSING
        assert run.engine.closing_view() is None
        assert plays_to(run, CUSTOMER_LEG)[-1] == ("sound:liyi/closing-thanks",)

    def test_ask_more_then_more_questions(self) -> None:
        """After the question the agent may resume: the question stops, they talk on."""
        run = Run().connected()
        run.feed(e.EndCallRequested(at=T0 + 60, agent="agent1", ask_more=True))
        question = run.of(c.Play)[-1].playback_id
        out = run.feed(e.ResumeRequested(at=T0 + 61, agent="agent1"))
        assert c.StopPlayback(playback_id=question) in out
        assert PROMPT not in run.timers
        assert run.engine.closing_view() is None
        assert state(run) is CallbackState.CONNECTED

    def test_customer_hangs_up_during_question(self) -> None:
        """The customer hanging up while asked ends the call normally; nobody hung up on them."""
        run = Run().connected()
        run.feed(e.EndCallRequested(at=T0 + 60, agent="agent1", ask_more=True))
        run.hangs_up(CUSTOMER_LEG, T0 + 61)
        assert run.outcome() == "completed" and not hangups(run, CUSTOMER_LEG)


class TestIdleRelease:
    def test_idle_line_released_as_the_r9_exception(self) -> None:
        """A line left open after closing is released after the idle time, logged as the R9 exception."""
        run = Run().connected()
        run.hangs_up(AGENT_LEG, T0 + 60)
        run.fire(IDLE)
        assert hangups(run, CUSTOMER_LEG) == [c.ReleaseIdleLine(channel_id=CUSTOMER_LEG)]
        assert run.logs("idle-release")[0].detail["exception"] == "R9"
        assert state(run) is CallbackState.RELEASING
        run.hangs_up(CUSTOMER_LEG, T0 + 60 + CFG.idle_release_seconds + 0.2)
        assert run.outcome() == "idle-released"
        r9 = run.ended().compliance["R9"]
        assert r9["status"] == "kept" and r9["evidence"]["exception"] == "idle line released"

    def test_release_confirmed_by_timer(self) -> None:
        """If the released channel never reports going, the callback still ends."""
        run = Run().connected()
        run.hangs_up(AGENT_LEG, T0 + 60)
        run.fire(IDLE)
        run.fire(RELEASE_CONFIRM)
        assert run.outcome() == "idle-released"
        assert run.engine.live_channels() == set()

    def test_customer_keys_keep_the_line(self) -> None:
        """A key from the customer in closing restarts the idle time; the old timer is stale."""
        run = Run().connected()
        run.hangs_up(AGENT_LEG, T0 + 60)
        first = run.timers[IDLE]
        run.feed(e.ChannelDtmfReceived(at=T0 + 300, channel_id=CUSTOMER_LEG, digit="5"))
        assert run.timers[IDLE].at == T0 + 300 + CFG.idle_release_seconds
        assert run.feed(e.TimerFired(at=first.at, name=IDLE, token=first.token)) == []
        assert not hangups(run, CUSTOMER_LEG)


class TestStaleTimers:
    def test_agent_ring_after_answer(self) -> None:
        """The agent's ring timer arriving after they answered (a stale token) does nothing."""
        run = Run()
        ring = run.timers[AGENT_RING]
        run.agent_answers()
        assert run.feed(e.TimerFired(at=ring.at, name=AGENT_RING, token=ring.token)) == []
        assert state(run) is CallbackState.DIALING

    def test_customer_ring_after_answer(self) -> None:
        """The customer's ring timer after they answered never hangs them up."""
        run = Run()
        run.agent_answers()
        ring = run.timers[CUSTOMER_RING]
        run.customer_answers()
        assert run.feed(e.TimerFired(at=ring.at, name=CUSTOMER_RING, token=ring.token)) == []
        assert not hangups(run, CUSTOMER_LEG)

    def test_unknown_token_and_wrong_state(self) -> None:
        """A timer with a token never issued, or a name the state does not listen to, is ignored."""
        run = Run()
        assert run.feed(e.TimerFired(at=T0 + 1, name=AGENT_RING, token=999)) == []
        assert run.feed(e.TimerFired(at=T0 + 1, name=IDLE, token=1)) == []
        assert state(run) is CallbackState.AGENT_RINGING


class TestAgentRequests:
    def test_notes_logged_in_every_stage(self) -> None:
        """Notes are written to the log whether the agent is ringing, talking or gone."""
        run = Run()
        run.feed(e.NoteAdded(at=T0 + 1, agent="agent1", text="a"))
        run.connected()
        run.feed(e.NoteAdded(at=T0 + 20, agent="agent1", text="b"))
        run.hangs_up(AGENT_LEG, T0 + 30)
        run.feed(e.NoteAdded(at=T0 + 31, agent="agent1", text="c"))
        assert [log.detail["text"] for log in run.logs("note")] == ["a", "b", "c"]
        assert [n[2] for n in run.engine.facts.notes] == ["a", "b", "c"]

    def test_hold_and_transfer_refused(self) -> None:
        """Hold and transfer are not part of a callback: refused with a message, the call unchanged."""
        run = Run().connected()
        out = run.feed(e.HoldRequested(at=T0 + 20, agent="agent1", reason="查询"))
        out += run.feed(e.TransferRequested(at=T0 + 21, agent="agent1", target="agent2"))
        assert [cmd.kind for cmd in out if isinstance(cmd, c.NotifyAgent)] == ["error", "error"]
        assert state(run) is CallbackState.CONNECTED

    def test_other_agent_cannot_end_it(self) -> None:
        """Another agent's leave request is refused; the customer's call goes on."""
        run = Run().connected()
        run.feed(e.LeaveRequested(at=T0 + 20, agent="agent2"))
        assert state(run) is CallbackState.CONNECTED and not run.of(c.Hangup)
        assert run.logs("agent-request-ignored")

    def test_new_promise_on_the_callback(self) -> None:
        """Still unsolved: a promise made on the callback is recorded with a working-day due date."""
        run = Run().connected()  # Wednesday 4 March 2026
        run.feed(e.FollowUpPromised(at=T0 + 30, agent="agent1", text="查询退款进度"))
        fu = run.of(c.RecordFollowUp)
        assert len(fu) == 1
        assert (fu[0].kind, fu[0].owner, fu[0].number, fu[0].due) == (
            "promise", "agent1", NUMBER, "2026-03-09")  # three working days: Thu, Fri, Mon
        assert fu[0].followup_id == "cb1-f1"
        run.hangs_up(CUSTOMER_LEG, T0 + 40)
        assert run.ended().compliance["R8"]["evidence"]["promises"][0]["due"] == "2026-03-09"

    def test_promise_too_far_is_refused(self) -> None:
        """A reply time beyond the configured maximum is refused, not recorded."""
        run = Run().connected()
        run.feed(e.FollowUpPromised(at=T0 + 30, agent="agent1", text="x", working_days=99))
        assert not run.of(c.RecordFollowUp)


class TestScore:
    def test_customer_dialled_before_agent_is_broken(self) -> None:
        """A record showing the customer dialled before the agent was on the line breaks R8."""
        record = CallbackRecord(followup_id="f", number=NUMBER, agent="agent1",
                                opening_line=opening_line(CFG.company, "agent1"),
                                customer_dialled_at=T0, agent_answered_at=T0 + 5,
                                customer_answered_at=T0 + 9)
        facts = CallFacts(call_id="x", first_hangup="caller", created_at=T0, ended_at=T0 + 60)
        assert score_callback(facts, record, CFG)["R8"]["status"] == "broken"

    def test_opening_without_company_is_broken(self) -> None:
        """An opening line that does not name the company breaks R8 (the agent introduces both)."""
        record = CallbackRecord(followup_id="f", number=NUMBER, agent="agent1",
                                opening_line="请问您是哪位？", agent_answered_at=T0,
                                customer_dialled_at=T0, customer_answered_at=T0 + 9)
        facts = CallFacts(call_id="x", first_hangup="caller")
        assert score_callback(facts, record, CFG)["R8"]["status"] == "broken"


# -- properties: random phones, random panels ------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])
REQUESTS = ("leave", "end", "ask", "resume", "note", "hold", "other-leave", "key9", "promise")
MAX_STEPS = 5_000


def tenths(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.integers(round(lo * 10), round(hi * 10)).map(lambda n: n / 10)


@dataclass(frozen=True)
class Phone:
    """What a phone does when dialled: answer / never / refuse (17) / ring-out (19) / unreachable."""

    action: str
    after: float
    hangs_up_after: float | None


@dataclass(frozen=True)
class Scenario:
    agent: Phone
    customer: Phone
    requests: tuple[tuple[float, str], ...]
    customer_keys: tuple[float, ...]
    prompt_seconds: float | None  # None: prompts never report their end
    stale_timers: bool  # deliver every timer ever started, cancelled or replaced too


OTHER_ACTIONS = ("never", "refuse", "ring-out", "unreachable")


def phones(max_after: float) -> st.SearchStrategy[Phone]:
    """Mostly answering phones within the ring limit, so most calls get far ("never" rings out)."""
    actions = st.one_of(st.just("answer"), st.sampled_from(OTHER_ACTIONS))
    return st.builds(Phone, actions, tenths(0.0, max_after),
                     st.one_of(st.none(), tenths(0.0, 120.0)))


def scenarios() -> st.SearchStrategy[Scenario]:
    return st.builds(
        Scenario, phones(10.5), phones(30.0),
        st.lists(st.tuples(tenths(0.0, 150.0), st.sampled_from(REQUESTS)), max_size=5).map(tuple),
        st.lists(tenths(0.0, 800.0), max_size=3).map(tuple),
        st.one_of(st.none(), tenths(0.1, 8.0)), st.booleans())


@dataclass
class LegState:
    alive: bool = True
    in_stasis: bool = False


@dataclass
class Sim:
    """What happened in one simulated callback, for the invariants."""

    engine: CallbackEngine
    trace: list[tuple[int, e.Event | None, c.Command]] = field(default_factory=list)
    delivered: list[e.Event] = field(default_factory=list)
    legs: dict[str, LegState] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def simulate(s: Scenario) -> Sim:
    """Run one callback among scripted phones, panel requests and a fake clock."""
    engine = CallbackEngine(CFG, "cb1", followup_id="fu-7", number=NUMBER, agent="agent1",
                            endpoint="PJSIP/agent1", requested_at=ASKED_ON)
    sim = Sim(engine)
    queue: list[tuple[float, int, str, object]] = []
    seq = 0
    current: dict[str, int] = {}

    def push(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (at, seq, kind, payload))

    def gone(now: float, channel: str, cause: int) -> None:
        leg = sim.legs[channel]
        leg.alive = False
        if leg.in_stasis:
            push(now + 0.05, "event", e.StasisEnd(at=now + 0.05, channel_id=channel))
        push(now + 0.06, "event", e.ChannelDestroyed(at=now + 0.06, channel_id=channel, cause=cause))

    def execute(now: float, ev: e.Event | None, commands: list[c.Command]) -> None:
        for cmd in commands:
            sim.trace.append((len(sim.delivered) - 1 if ev is not None else -1, ev, cmd))
            if isinstance(cmd, c.Dial):
                phone = s.agent if cmd.channel_id.endswith("-a1") else s.customer
                sim.legs[cmd.channel_id] = LegState()
                if phone.action == "unreachable":
                    sim.legs[cmd.channel_id].alive = False
                    push(now, "event", e.DialFailed(at=now, channel_id=cmd.channel_id, reason="x"))
                elif phone.action == "answer":
                    push(now + phone.after, "answer", cmd.channel_id)
                elif phone.action in ("refuse", "ring-out"):
                    push(now + phone.after, "refuse", (cmd.channel_id, 17 if phone.action == "refuse" else 19))
            elif isinstance(cmd, (c.Hangup, c.ReleaseIdleLine)):
                if sim.legs.get(cmd.channel_id, LegState(alive=False)).alive:
                    gone(now, cmd.channel_id, 16)
            elif isinstance(cmd, c.Play):
                if s.prompt_seconds is not None and sim.legs[cmd.channel_id].alive:
                    push(now + s.prompt_seconds, "event",
                         e.PlaybackFinished(at=now + s.prompt_seconds, playback_id=cmd.playback_id))
            elif isinstance(cmd, c.StopPlayback):
                push(now + 0.01, "event", e.PlaybackFinished(at=now + 0.01, playback_id=cmd.playback_id))
            elif isinstance(cmd, c.StartTimer):
                current[cmd.name] = cmd.token
                push(max(cmd.at, now), "timer", cmd)
            elif isinstance(cmd, c.CancelTimer):
                current.pop(cmd.name, None)

    def deliver(now: float, ev: e.Event) -> None:
        sim.delivered.append(ev)
        execute(now, ev, engine.handle(ev))

    execute(T0, None, engine.start(T0))
    for offset, kind in s.requests:
        push(T0 + offset, "request", kind)
    for offset in s.customer_keys:
        push(T0 + offset, "key", CUSTOMER_LEG)
    steps = 0
    while queue:
        steps += 1
        assert steps < MAX_STEPS, "the callback never settles"
        now, _, kind, payload = heapq.heappop(queue)
        if kind == "event":
            assert isinstance(payload, e.Event)
            deliver(now, payload)
        elif kind == "timer":
            assert isinstance(payload, c.StartTimer)
            if s.stale_timers or current.get(payload.name) == payload.token:
                if current.get(payload.name) == payload.token:
                    del current[payload.name]
                deliver(now, e.TimerFired(at=now, name=payload.name, token=payload.token))
        elif kind == "answer":
            assert isinstance(payload, str)
            leg = sim.legs[payload]
            if leg.alive:
                leg.in_stasis = True
                deliver(now, e.StasisStart(at=now, channel_id=payload))
                phone = s.agent if payload.endswith("-a1") else s.customer
                if phone.hangs_up_after is not None:
                    push(now + phone.hangs_up_after, "hangup", payload)
        elif kind == "refuse":
            assert isinstance(payload, tuple)
            channel, cause = payload
            leg = sim.legs[channel]
            if leg.alive and not leg.in_stasis:
                leg.alive = False
                deliver(now, e.ChannelDestroyed(at=now, channel_id=channel, cause=cause))
        elif kind == "hangup":
            assert isinstance(payload, str)
            if sim.legs[payload].alive:
                gone(now, payload, 16)
        elif kind == "key":
            customer = sim.legs.get(CUSTOMER_LEG)
            if customer is not None and customer.alive and customer.in_stasis:
                deliver(now, e.ChannelDtmfReceived(at=now, channel_id=CUSTOMER_LEG, digit="5"))
        elif kind == "request":
            for ev in request_events(now, str(payload), sim):
                deliver(now, ev)
    return sim


def request_events(now: float, kind: str, sim: Sim) -> list[e.Event]:
    agent = "agent1"
    if kind == "leave":
        return [e.LeaveRequested(at=now, agent=agent)]
    if kind == "end":
        return [e.EndCallRequested(at=now, agent=agent)]
    if kind == "ask":
        return [e.EndCallRequested(at=now, agent=agent, ask_more=True)]
    if kind == "resume":
        return [e.ResumeRequested(at=now, agent=agent)]
    if kind == "note":
        return [e.NoteAdded(at=now, agent=agent, text="记录")]
    if kind == "hold":
        return [e.HoldRequested(at=now, agent=agent, reason="查询")]
    if kind == "other-leave":
        return [e.LeaveRequested(at=now, agent="agent2")]
    if kind == "promise":
        return [e.FollowUpPromised(at=now, agent=agent, text="答复")]
    leg = sim.legs.get(AGENT_LEG)
    if leg is not None and leg.alive and leg.in_stasis:  # key9: *9 typed on the agent's phone
        return [e.ChannelDtmfReceived(at=now, channel_id=AGENT_LEG, digit="*"),
                e.ChannelDtmfReceived(at=now, channel_id=AGENT_LEG, digit="9")]
    return []


def check_invariants(trace: list[tuple[int, e.Event | None, c.Command]],
                     delivered: list[e.Event]) -> list[str]:
    """The rules every callback keeps, read from the events in and the commands out, in order.

    ``trace`` holds (index of the delivered event a command answers, or -1 for ``start``,
    that event, the command).
    """
    problems: list[str] = []
    agent_answered = customer_dialled = customer_answered = closing_played = ended = False
    cursor = 0
    for index, ev, cmd in trace:
        while cursor <= index:  # the events up to the one this command answers
            seen = delivered[cursor]
            if isinstance(seen, e.StasisStart):
                if seen.channel_id == AGENT_LEG and not ended:
                    agent_answered = True
                elif seen.channel_id == CUSTOMER_LEG and customer_dialled:
                    customer_answered = True
            cursor += 1
        late_agent = (isinstance(cmd, c.Hangup) and cmd.channel_id == AGENT_LEG) or (
            isinstance(cmd, c.Log) and cmd.kind == "late-agent-answer-released")
        if ended and not late_agent:
            problems.append(f"command after the end: {cmd}")
        if isinstance(cmd, c.Dial) and cmd.channel_id == CUSTOMER_LEG:
            if not agent_answered:
                problems.append("the customer was dialled before the agent answered")
            customer_dialled = True
        if isinstance(cmd, c.Hangup) and cmd.channel_id == CUSTOMER_LEG and customer_answered:
            problems.append("the customer was hung up on")
        if isinstance(cmd, c.ReleaseIdleLine) and not (
                isinstance(ev, e.TimerFired) and ev.name == IDLE and closing_played):
            problems.append("a line released other than by the idle timer after closing")
        if isinstance(cmd, c.Play) and cmd.channel_id == CUSTOMER_LEG and "closing-thanks" in cmd.media[0]:
            closing_played = True
        if isinstance(cmd, c.Bridge) and CUSTOMER_LEG in cmd.channel_ids and not agent_answered:
            problems.append("the customer bridged without an agent")
        if isinstance(cmd, c.CallEnded):
            ended = True
            for rule in ("R8", "R9"):
                if cmd.compliance[rule]["status"] == "broken":
                    problems.append(f"{rule} broken: {cmd.compliance[rule]}")
    return problems


@PROPERTY_SETTINGS
@given(scenarios())
def test_callback_invariants_over_random_calls(s: Scenario) -> None:
    """Whatever the phones and the panel do: agent first, the customer never hung up on, one end once all are gone."""
    sim = simulate(s)
    assert check_invariants(sim.trace, sim.delivered) == []
    alive = {ch for ch, leg in sim.legs.items() if leg.alive}
    ended = [cmd for _, _, cmd in sim.trace if isinstance(cmd, c.CallEnded)]
    if not alive:
        assert sim.engine.ended, "every channel is gone but the callback did not end"
    assert len(ended) == (1 if sim.engine.ended else 0)
    assert sim.engine.live_channels() == (set() if sim.engine.ended else alive)
    customer_in = any(isinstance(ev, e.StasisStart) and ev.channel_id == CUSTOMER_LEG
                      for ev in sim.delivered)
    agent_gone_first = customer_in and sim.engine.facts.first_hangup == "agent"
    if agent_gone_first:
        assert any(isinstance(cmd, c.Play) and cmd.channel_id == CUSTOMER_LEG
                   and cmd.media == ("sound:liyi/closing-thanks",) for _, _, cmd in sim.trace), \
            "the agent left first but the customer heard no closing"


CHANNELS = (AGENT_LEG, CUSTOMER_LEG, "someone-else")
TIMER_NAMES = (AGENT_RING, CUSTOMER_RING, PROMPT, IDLE, RELEASE_CONFIRM, KEYS)


def _any_event() -> st.SearchStrategy[e.Event]:
    at = st.just(0.0)  # each event's time is set from its place in the stream
    ch = st.sampled_from(CHANNELS)
    agent = st.sampled_from(("agent1", "agent2"))
    return st.one_of(
        st.builds(e.StasisStart, at=at, channel_id=ch),
        st.builds(e.StasisEnd, at=at, channel_id=ch),
        st.builds(e.ChannelDestroyed, at=at, channel_id=ch, cause=st.sampled_from((16, 17, 19))),
        st.builds(e.DialFailed, at=at, channel_id=ch),
        st.builds(e.PlaybackFinished, at=at, playback_id=st.sampled_from(
            tuple(f"cb1-p{n}" for n in range(1, 5)))),
        st.builds(e.ChannelDtmfReceived, at=at, channel_id=ch, digit=st.sampled_from(("*", "9", "1", "#"))),
        st.builds(e.TimerFired, at=at, name=st.sampled_from(TIMER_NAMES), token=st.integers(1, 12)),
        st.builds(e.LeaveRequested, at=at, agent=agent),
        st.builds(e.EndCallRequested, at=at, agent=agent, ask_more=st.booleans()),
        st.builds(e.ResumeRequested, at=at, agent=agent),
        st.builds(e.NoteAdded, at=at, agent=agent, text=st.just("n")),
        st.builds(e.HoldRequested, at=at, agent=agent),
    )


# Where a stream starts, so that random events also hit the later states.
PROGRESS: tuple[e.Event, ...] = (
    e.StasisStart(at=0.0, channel_id=AGENT_LEG),
    e.StasisStart(at=0.0, channel_id=CUSTOMER_LEG),
    e.StasisEnd(at=0.0, channel_id=AGENT_LEG),
)


def event_streams() -> st.SearchStrategy[list[e.Event]]:
    """A start (ringing, dialing, connected or closing), then up to 40 events of any kind, 7 s apart."""
    return st.tuples(st.integers(0, len(PROGRESS)), st.lists(_any_event(), max_size=40)).map(
        lambda drawn: [replace(ev, at=T0 + i * 7.0)
                       for i, ev in enumerate([*PROGRESS[:drawn[0]], *drawn[1]])])


@PROPERTY_SETTINGS
@given(event_streams())
def test_invariants_over_any_event_order(events: list[e.Event]) -> None:
    """Events in any order, stale or unknown: never a customer dial before the agent, never a hang-up on them."""
    engine = CallbackEngine(CFG, "cb1", followup_id="fu-7", number=NUMBER, agent="agent1",
                            endpoint="PJSIP/agent1")
    trace: list[tuple[int, e.Event | None, c.Command]] = [(-1, None, cmd) for cmd in engine.start(T0)]
    delivered: list[e.Event] = []
    for ev in events:
        delivered.append(ev)
        trace += [(len(delivered) - 1, ev, cmd) for cmd in engine.handle(ev)]
    assert check_invariants(trace, delivered) == []
    assert sum(isinstance(cmd, c.CallEnded) for _, _, cmd in trace) == (1 if engine.ended else 0)
