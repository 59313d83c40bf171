"""How long a caller who presses nothing takes to reach an agent (``callflow.flow_timing``).

The figure ``liyi check-config`` warns on and ``liyi simulate`` prints: it is
computed from the flow and the prompts' lengths, and must be what the engine
really does (checked here against ``liyi simulate``, which drives the engine,
and in ``test_flow_properties.py`` over random centers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from callflow.config import CallFlowConfig, parse_callflow
from callflow.flow import CALLBACK, GREETING, MENU, PLAY, QUEUE, RECORD_NAME, Flow, Step
from callflow.flow_config import read_flows
from callflow.flow_timing import silent_path, slow_flow_warnings
from liyi.simulate import PromptClock, parse_moment, simulate

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "recordings" / "liyi"


def seconds_of(**lengths: float) -> Callable[[str], float]:
    """Prompt lengths by name (underscores for dashes); any other prompt lasts 2 s."""
    named = {name.replace("_", "-"): value for name, value in lengths.items()}
    return lambda name: named.get(name, 2.0)


def shipped() -> CallFlowConfig:
    cfg, problems = parse_callflow(yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8")))
    assert cfg is not None, problems
    return cfg


def recorded_seconds() -> Callable[[str], float]:
    """The shipped recordings' lengths, as check-config measures them."""
    return PromptClock(RECORDINGS, lambda name: "").seconds


def open_flow(*steps: Step) -> Flow:
    return Flow("open", "greeting", (Step("greeting", GREETING, next=steps[0].name), *steps))


class TestSilentPath:
    def test_a_menu_costs_its_prompt_timeout_and_each_repeat_with_the_apology(self) -> None:
        """A silent caller hears the menu, waits out the timeout, then hears apology + menu + timeout for each repeat."""
        flow = open_flow(Step("main", MENU, prompt="menu-main", keys=(("1", "q"),), default="q",
                              repeat=2, timeout_seconds=5.0),
                         Step("q", QUEUE))
        cfg = CallFlowConfig(open_flow=flow)
        path = silent_path(cfg, flow, seconds_of(menu_main=4.0, menu_no_input=3.0, ring_wait=3.0),
                           greeting="greeting-morning")
        assert [leg.what for leg in path.legs] == ["answer", "greeting-morning", "menu main ×3", "ring-wait"]
        assert path.legs[2].seconds == (4 + 5) + 2 * (3 + 4 + 5)
        assert path.seconds == pytest.approx(1.5 + 2.0 + 33.0 + 3.0)
        assert path.queue == ""

    def test_name_step_and_flow_callback_offer_are_sat_through_in_full(self) -> None:
        """A silent caller hears the name prompt and records silence for max_seconds; an offer runs its timeout, then next."""
        flow = open_flow(Step("offer", CALLBACK, prompt="callback-offer-closed", next="name"),
                         Step("name", RECORD_NAME, prompt="name-ask", max_seconds=4.5, next="say"),
                         Step("say", PLAY, prompt="ring-wait", next="q"),
                         Step("q", QUEUE, department="报修"))
        cfg = CallFlowConfig(open_flow=flow, wait_prompt=None)
        path = silent_path(cfg, flow, seconds_of(), greeting="greeting-noon")
        assert [(leg.what, leg.seconds) for leg in path.legs[2:]] == [
            ("callback-offer-closed", 2.0 + cfg.queue.offer_timeout_seconds),
            ("name-ask", 2.0), ("name recording", 5.0), ("ring-wait", 2.0)]
        assert path.queue == "报修"

    def test_the_answer_moment_follows_the_ring_settings(self) -> None:
        """The path starts with the R1 answer: 1.5 s by default, 11 s when answering after ring 3."""
        cfg = CallFlowConfig()
        assert silent_path(cfg, cfg.open_flow, seconds_of()).legs[0].seconds == 1.5
        late = replace(cfg, answer_after_rings=3, answer_delay_seconds=0.0)
        assert silent_path(late, late.open_flow, seconds_of()).legs[0].seconds == 11.0

    def test_without_a_greeting_named_the_longest_band_greeting_counts(self) -> None:
        """With no time given, the slowest greeting of the day is used, so the figure holds at any hour."""
        cfg = CallFlowConfig()
        path = silent_path(cfg, cfg.open_flow, seconds_of(greeting_evening=9.0, greeting_noon=4.0))
        assert path.legs[1].what == "greeting-evening" and path.legs[1].seconds == 9.0

    def test_a_closed_flow_that_ends_in_the_closing_reaches_no_agent(self) -> None:
        """The default closed flow (greeting, closing) never rings an agent."""
        cfg = CallFlowConfig()
        path = silent_path(cfg, cfg.closed_flow, seconds_of())
        assert not path.reaches_agent and path.queue is None and not path.loops


class TestWarnings:
    def slow_open(self, repeat: int) -> CallFlowConfig:
        flow = open_flow(Step("main", MENU, prompt="menu-main", keys=(("1", "q"),), default="q",
                              repeat=repeat, timeout_seconds=6.0),
                         Step("q", QUEUE))
        return CallFlowConfig(open_flow=flow)

    def test_a_slow_open_flow_is_warned_about_with_the_figure_and_the_limit(self) -> None:
        """An open flow keeping a silent caller 43.5 s from an agent is warned about at flows.open, naming 30 s."""
        (warning,) = slow_flow_warnings(self.slow_open(repeat=3), seconds_of())
        assert warning.path == "flows.open"
        assert "waits 43.5 s before an agent's phone rings" in warning.message
        assert "menu main ×4 38.0 s" in warning.message
        assert "flows_check.max_seconds_to_agent (30 s)" in warning.message

    def test_a_flow_within_the_limit_gets_no_warning(self) -> None:
        """The same flow with no menu repeat (13.5 s) passes without a warning."""
        assert slow_flow_warnings(self.slow_open(repeat=0), seconds_of()) == []

    def test_the_limit_comes_from_the_config(self) -> None:
        """Raising flows_check.max_seconds_to_agent to 60 s silences the warning for the 43.5 s flow."""
        cfg = replace(self.slow_open(repeat=3), max_seconds_to_agent=60.0)
        assert slow_flow_warnings(cfg, seconds_of()) == []

    def test_a_long_closed_flow_is_not_warned_about(self) -> None:
        """A closed flow reaches no agent by design; however long its greeting, it gets no warning."""
        assert slow_flow_warnings(CallFlowConfig(), seconds_of(greeting_closed=90.0)) == []

    def test_a_loop_without_a_key_ends_the_walk_instead_of_hanging(self) -> None:
        """A flow built in code whose menu default leads back to the menu is reported as a loop with no agent (the config reader refuses such a flow)."""
        flow = open_flow(Step("main", MENU, prompt="menu-main", keys=(("1", "q"),), default="again",
                              repeat=0),
                         Step("again", PLAY, prompt="ring-wait", next="main"),
                         Step("q", QUEUE))
        path = silent_path(CallFlowConfig(open_flow=flow), flow, seconds_of())
        assert path.loops and not path.reaches_agent
        assert [leg.what for leg in path.legs] == ["answer", "greeting-morning", "menu main", "ring-wait"]


class TestShippedConfig:
    def test_a_silent_caller_reaches_an_agent_within_30_s(self) -> None:
        """With the shipped liyi.yaml and recordings, a caller who presses nothing is at an agent's phone within 30 s, at any hour."""
        cfg = shipped()
        path = silent_path(cfg, cfg.open_flow, recorded_seconds())
        assert path.reaches_agent and path.seconds <= 30.0, path.summary()
        assert cfg.max_seconds_to_agent == 30.0
        assert slow_flow_warnings(cfg, recorded_seconds()) == []

    @pytest.mark.parametrize("at", ["2026-12-01 08:45", "2026-12-01 12:10", "2026-12-01 15:00",
                                    "2026-12-01 19:30"])
    def test_the_figure_is_what_the_engine_does(self, at: str) -> None:
        """The computed path matches the engine driven by `liyi simulate` for a silent caller, to the millisecond."""
        cfg = shipped()
        clock = PromptClock(RECORDINGS, lambda name: "")
        outcome = simulate(cfg, parse_moment(at, cfg), "", prompt_clock=clock, text_of=lambda name: "")
        greeting = cfg.greeting_for(parse_moment(at, cfg) + cfg.answer_seconds())
        path = silent_path(cfg, cfg.open_flow, clock.seconds, greeting=greeting)
        assert outcome.agent_rings_at == pytest.approx(path.seconds, abs=1e-3)

    def test_a_flow_with_repeats_a_name_and_an_offer_matches_the_engine(self) -> None:
        """For a flow with menu repeats, a callback offer, the name step and a play step, the figure matches the engine."""
        data: dict[str, Any] = {"open": {"start": "greeting", "steps": {
            "greeting": {"greeting": True, "next": "main"},
            "main": {"menu": "menu-main", "keys": {"1": "q"}, "default": "offer", "repeat": 2,
                     "timeout_seconds": 4},
            "offer": {"callback": True, "next": "name"},
            # simulate's caller says their name in 2 s; a silent one would fill max_seconds
            "name": {"record_name": True, "max_seconds": 2, "next": "say"},
            "say": {"play": "queue-continue", "next": "q"},
            "q": {"queue": ""}}}}
        flow, _closed, problems = read_flows(data, departments=())
        assert problems == []
        cfg = CallFlowConfig(open_flow=flow, answer_after_rings=2)
        lengths = seconds_of(menu_main=3.3, menu_no_input=1.7, greeting_morning=5.1,
                             callback_offer_closed=4.4, name_ask=2.9, queue_continue=2.2,
                             ring_wait=3.9)

        class Clock(PromptClock):
            def seconds(self, name: str) -> float:
                return lengths(name)

        at = parse_moment("2026-12-01 09:00", cfg)
        outcome = simulate(cfg, at, "", prompt_clock=Clock(None, lambda n: ""), text_of=lambda n: "")
        path = silent_path(cfg, flow, lengths, greeting="greeting-morning")
        assert outcome.agent_rings_at == pytest.approx(path.seconds, abs=1e-3)
