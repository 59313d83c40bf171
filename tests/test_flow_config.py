"""Reading and checking call flows (``callflow.flow_config.read_flows``, the ``flows:`` section).

A flow that could strand a caller, skip the greeting or never reach an agent
is refused before any call meets it, each problem at its dotted location —
and, through ``liyi check-config``, at its YAML line.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from callflow.config import CALLBACK_PROMPTS, QUEUE_PROMPTS, parse_callflow
from callflow.flow import (
    CALLBACK_PROMPT,
    DEFAULT_CLOSED,
    DEFAULT_OPEN,
    MENU_INVALID_PROMPT,
    MENU_NO_INPUT_PROMPT,
    NAME_PROMPT,
    Flow,
    Step,
)
from callflow.flow_config import read_flows
from liyi import cli

ROOT = Path(__file__).resolve().parent.parent
DEPARTMENTS = ("咨询", "报修", "投诉")
#: Every prompt a config needs except the flows' own (menu, name, callback offer, menu retries).
KNOWN_PROMPTS = {"greeting-morning", "greeting-noon", "greeting-afternoon", "greeting-evening",
                 "greeting-closed", "ring-wait", "closing-thanks", "closing-more",
                 *(f"hold-announce-{s}" for s in range(30, 301, 30)),
                 "hold-reassure", "hold-limit-ask", "hold-return", "requeue-apology",
                 "transfer-consent", "transfer-announce", "transfer-failed",
                 *QUEUE_PROMPTS, *CALLBACK_PROMPTS}

OPEN: dict[str, Any] = {
    "start": "greeting",
    "steps": {
        "greeting": {"greeting": True, "next": "main"},
        "main": {"menu": "menu-main", "keys": {"1": "consult", "2": "ask-name", 3: "complaint"},
                 "default": "consult", "repeat": 3, "timeout_seconds": 8},
        "ask-name": {"record_name": True, "max_seconds": 4, "next": "repair"},
        "consult": {"queue": "咨询"},
        "repair": {"queue": "报修"},
        "complaint": {"queue": ""},
    },
}
CLOSED: dict[str, Any] = {
    "start": "greeting",
    "steps": {
        "greeting": {"greeting": True, "next": "offer"},
        "offer": {"callback": "callback-offer-closed", "next": "bye"},
        "bye": {"close": True},
    },
}


def flows() -> dict[str, Any]:
    """A good ``flows:`` section: a menu with a name step on one branch, and a closed flow."""
    return {"open": copy.deepcopy(OPEN), "closed": copy.deepcopy(CLOSED)}


def problems_in(section: Any, departments: tuple[str, ...] = DEPARTMENTS) -> list[str]:
    """The problems of a ``flows:`` section, as ``path: message`` lines."""
    _open, _closed, problems = read_flows(section, departments=departments)
    return [f"{path}: {message}" for path, message in problems]


def with_step(flow: str, name: str, step: Any) -> dict[str, Any]:
    """The good flows with one step added or replaced."""
    section = flows()
    section[flow]["steps"][name] = step
    return section


def config(section: Any) -> dict[str, Any]:
    """A whole config around a ``flows:`` section, with the departments it names."""
    return {
        "company": {"name": "礼仪客服中心"},
        "agents": [{"name": "agent1"}, {"name": "agent2"}],
        "departments": [{"name": "咨询", "number": "1", "agents": ["agent1", "agent2"]},
                        {"name": "报修", "number": "2", "agents": ["agent2"]},
                        {"name": "投诉", "number": "3", "agents": ["agent1"]}],
        "flows": section,
    }


class TestGoodFlows:
    def test_the_open_and_closed_flows_are_read_into_steps(self) -> None:
        """A good section becomes the Flow objects it describes, defaults filled in, key 3 read as "3"."""
        open_flow, closed_flow, problems = read_flows(flows(), departments=DEPARTMENTS)
        assert problems == []
        assert open_flow == Flow("open", "greeting", (
            Step("greeting", "greeting", next="main"),
            Step("main", "menu", prompt="menu-main",
                 keys=(("1", "consult"), ("2", "ask-name"), ("3", "complaint")),
                 default="consult", repeat=3, timeout_seconds=8.0),
            Step("ask-name", "record_name", prompt=NAME_PROMPT, next="repair", max_seconds=4.0),
            Step("consult", "queue", department="咨询"),
            Step("repair", "queue", department="报修"),
            Step("complaint", "queue", department=""),
        ))
        assert closed_flow == Flow("closed", "greeting", (
            Step("greeting", "greeting", next="offer"),
            Step("offer", "callback", prompt="callback-offer-closed", next="bye"),
            Step("bye", "close"),
        ))

    def test_without_a_flows_section_the_default_flows_apply(self) -> None:
        """No flows: greet then queue for any agent; closed: greet then close."""
        assert read_flows(None, departments=()) == (DEFAULT_OPEN, DEFAULT_CLOSED, [])

    def test_a_flow_left_out_is_the_default_one(self) -> None:
        """Only an open flow given: the closed flow stays the default."""
        open_flow, closed_flow, problems = read_flows({"open": OPEN}, departments=DEPARTMENTS)
        assert problems == [] and open_flow.step("main").kind == "menu"
        assert closed_flow == DEFAULT_CLOSED

    def test_default_prompts_for_name_and_callback_and_any_agent_queue(self) -> None:
        """record_name: true and callback: true take their default prompts; queue: null is any agent."""
        section = with_step("closed", "offer", {"callback": True, "next": "bye"})
        section["closed"]["steps"]["greeting"]["next"] = "name"
        section["closed"]["steps"]["name"] = {"record_name": None, "next": "offer"}
        section["open"]["steps"]["complaint"] = {"queue": None}
        open_flow, closed_flow, problems = read_flows(section, departments=DEPARTMENTS)
        assert problems == []
        assert closed_flow.step("offer") == Step("offer", "callback", prompt=CALLBACK_PROMPT,
                                                 next="bye")
        assert closed_flow.step("name").prompt == NAME_PROMPT
        assert open_flow.step("complaint").department == ""

    def test_a_callback_without_next_ends_the_flow(self) -> None:
        """A closed flow may end with the callback offer itself (declined: the closing)."""
        section = flows()
        section["closed"]["steps"] = {"greeting": {"greeting": True, "next": "offer"},
                                      "offer": {"callback": True}}
        assert problems_in(section) == []

    def test_parse_callflow_carries_the_flows_and_picks_them_by_the_hour(self) -> None:
        """The whole config keeps both flows; flow_for gives the closed one outside the opening hours."""
        data = config(flows())
        data["hours"] = {"open": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                   "from": "09:00", "to": "18:00"}]}
        cfg, problems = parse_callflow(data)
        assert problems == [] and cfg is not None
        monday_10 = dt.datetime(2026, 11, 23, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
        assert cfg.flow_for(monday_10) is cfg.open_flow and cfg.open_flow.step("main").prompt == "menu-main"
        assert cfg.flow_for(monday_10 + 10 * 3600) is cfg.closed_flow

    def test_the_shipped_example_flows(self) -> None:
        """liyi.yaml's open flow routes keys 1/2/3 to the 咨询, 报修 (after the name) and 投诉 queues."""
        cfg, problems = parse_callflow(yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8")))
        assert problems == [] and cfg is not None
        flow = cfg.open_flow
        main = flow.step(flow.first().next)
        assert main.kind == "menu" and main.default
        queues = {}
        for digit, target in main.keys:
            step = flow.step(target)
            if step.kind == "record_name":
                step = flow.step(step.next)
            queues[digit] = step.department
        assert queues == {"1": "咨询", "2": "报修", "3": "投诉"}
        assert [s.kind for s in cfg.closed_flow.steps] == ["greeting", "callback", "close"]


class TestStepShape:
    @pytest.mark.parametrize(("step", "message"), [
        ({"play": "x", "menu": "y", "next": "consult"},
         "flows.open.steps.extra: 2 kinds (play, menu) — a step does exactly one thing"),
        ({"pley": "x", "next": "consult"},
         ("flows.open.steps.extra: no kind ('pley' is not one) — needs exactly one of greeting, "
          "play, menu, record_name, queue, callback, close")),
        ({"play": "x", "next": "consult", "nxt": "main"},
         "flows.open.steps.extra.nxt: not a setting of a play step (it takes next)"),
        ({"queue": "咨询", "next": "main"},
         "flows.open.steps.extra.next: not a setting of a queue step (it takes nothing but its kind key)"),
        ({"play": "", "next": "consult"},
         "flows.open.steps.extra.play: '' — must be a prompt name from scripts_zh/"),
        ({"callback": 3},
         ("flows.open.steps.extra.callback: 3 — must be a prompt name, or true for the default "
          "callback-offer-closed")),
        ({"close": "bye"}, ("flows.open.steps.extra.close: 'bye' — must be true (the closing "
                            "prompts are closing.after_agent_hangup)")),
        ("play menu-main", ("flows.open.steps.extra: 'play menu-main' — must be a mapping like "
                            "{play: prompt-name, next: step}")),
        ({"play": "x"}, ("flows.open.steps.extra.next: missing — after a play step the caller "
                         "must go on somewhere")),
        ({"record_name": True, "next": "consult", "max_seconds": 11},
         "flows.open.steps.extra.max_seconds: 11 — must be 1..10"),
    ])
    def test_a_malformed_step_is_refused_at_its_path(self, step: Any, message: str) -> None:
        """A step needs exactly one known kind, only that kind's settings, and valid values."""
        section = with_step("open", "extra", step)
        section["open"]["steps"]["main"]["keys"]["9"] = "extra"  # reachable, so only the shape is judged
        assert problems_in(section) == [message]

    def test_a_step_name_with_a_dot_is_refused(self) -> None:
        """Step names are plain words (a dot would make its location ambiguous)."""
        section = with_step("open", "a.b", {"close": True})
        assert problems_in(section)[0] == (
            "flows.open.steps.a.b: 'a.b' — a step name is text: letters, digits, - and _")

    def test_an_unknown_flow_or_flow_key_is_refused(self) -> None:
        """Only open and closed flows exist, each with start and steps."""
        section = flows()
        section["holiday"] = copy.deepcopy(CLOSED)
        section["open"]["begin"] = "greeting"
        assert problems_in(section) == [
            ("flows.holiday: unknown flow — there are two: open (opening hours) and closed "
             "(after hours and holidays)"),
            "flows.open.begin: unknown key — a flow has start and steps"]

    @pytest.mark.parametrize("steps", [None, [], {}, "greeting"])
    def test_a_flow_without_steps_is_refused(self, steps: Any) -> None:
        """A flow must list its steps as a mapping."""
        section = flows()
        section["closed"]["steps"] = steps
        (problem,) = problems_in(section)
        assert problem.startswith(f"flows.closed.steps: {steps!r} — must be a mapping")

    def test_flows_must_be_a_mapping(self) -> None:
        """flows given as a list is refused as a whole."""
        assert problems_in([OPEN]) == [
            f"flows: {[OPEN]!r} — must be a mapping with open and/or closed"]


class TestRoutes:
    def test_a_key_routing_to_a_missing_step_is_refused(self) -> None:
        """A menu key naming a step that does not exist is reported at the key."""
        section = flows()
        section["open"]["steps"]["main"]["keys"]["2"] = "repar"
        assert problems_in(section) == [
            "flows.open.steps.main.keys.2: routes to 'repar' — no such step",
            "flows.open.steps.ask-name: unreachable — no route from 'greeting' leads here",
            "flows.open.steps.repair: unreachable — no route from 'greeting' leads here"]

    def test_next_to_a_missing_step_is_refused_once(self) -> None:
        """A next naming a missing step is the one problem reported (not also a loop)."""
        section = flows()
        section["closed"]["steps"]["offer"]["next"] = "by"
        assert problems_in(section) == ["flows.closed.steps.offer.next: routes to 'by' — no such step",
                                        ("flows.closed.steps.bye: unreachable — no route from "
                                         "'greeting' leads here")]

    def test_a_missing_start_is_refused(self) -> None:
        """A flow must name its first step."""
        section = flows()
        del section["open"]["start"]
        assert problems_in(section) == [
            "flows.open.start: missing — name the first step (the greeting, R2)"]

    def test_a_start_that_is_not_a_step_is_refused(self) -> None:
        """start must name one of the flow's steps."""
        section = flows()
        section["closed"]["start"] = "hello"
        assert problems_in(section) == ["flows.closed.start: 'hello' — no such step"]

    def test_an_unreachable_step_is_refused(self) -> None:
        """A step no route leads to is reported: it is a mistake, not a spare."""
        section = with_step("open", "survey", {"play": "survey-ask", "next": "consult"})
        assert problems_in(section) == [
            "flows.open.steps.survey: unreachable — no route from 'greeting' leads here"]

    def test_a_loop_without_exit_is_refused(self) -> None:
        """Steps that lead only to each other (never a queue, callback or closing) are refused."""
        section = flows()
        steps = section["open"]["steps"]
        steps["main"]["keys"]["4"] = "info"
        steps["info"] = {"play": "info", "next": "more"}
        steps["more"] = {"menu": "more-menu", "keys": {"1": "info"}, "default": "info"}
        assert problems_in(section) == [
            ("flows.open.steps.info: loop without exit: info, more lead only to each other — none "
             "reaches a queue, a callback or the closing (the caller would be stranded, R5/R9)")]

    def test_a_step_leading_only_to_itself_is_refused(self) -> None:
        """A menu whose every key and default name itself can never end."""
        section = flows()
        section["closed"]["steps"]["offer"]["next"] = "again"
        section["closed"]["steps"]["again"] = {"menu": "m", "keys": {"1": "again"}, "default": "again"}
        assert problems_in(section) == [
            "flows.closed.steps.bye: unreachable — no route from 'greeting' leads here",
            ("flows.closed.steps.again: loop without exit: 'again' leads only back to itself — none "
             "reaches a queue, a callback or the closing (the caller would be stranded, R5/R9)")]

    def test_a_silent_caller_going_round_forever_is_refused(self) -> None:
        """A loop left only by pressing a key strands a caller who presses nothing (R5/R9)."""
        section = flows()
        steps = section["closed"]["steps"]
        steps["offer"]["next"] = "choose"
        steps["choose"] = {"menu": "closed-menu", "keys": {"1": "bye"}, "default": "offer"}
        assert problems_in(section) == [
            ("flows.closed.steps.offer.next: a caller who presses nothing goes round offer → "
             "choose → offer forever — without a key the flow must still reach a queue, a "
             "callback or the closing (R5/R9)")]


class TestMenus:
    def test_a_menu_without_default_is_refused(self) -> None:
        """No key pressed must still lead somewhere: a menu without default is refused (R5/R9)."""
        section = flows()
        del section["open"]["steps"]["main"]["default"]
        assert problems_in(section) == [
            ("flows.open.steps.main.default: missing — when the caller presses nothing the menu "
             "must still lead somewhere (R5/R9: no input never strands the caller or hangs up)")]

    @pytest.mark.parametrize(("key", "message"), [
        ("12", "'12' — a menu key is one of 0-9, * or # (quote * and # in YAML)"),
        ("a", "'a' — a menu key is one of 0-9, * or # (quote * and # in YAML)"),
        (10, "10 — a menu key is one of 0-9, * or # (quote * and # in YAML)"),
        (1, "1 — key 1 is listed twice"),
    ])
    def test_menu_keys_are_single_dtmf_digits(self, key: Any, message: str) -> None:
        """Keys are one of 0-9, * and #, each once (1 and "1" are the same key)."""
        section = flows()
        section["open"]["steps"]["main"]["keys"][key] = "consult"
        assert problems_in(section) == [f"flows.open.steps.main.keys.{key}: {message}"]

    def test_star_and_hash_are_menu_keys(self) -> None:
        """* and # may route like digits (here: hear the menu again)."""
        section = flows()
        section["open"]["steps"]["main"]["keys"].update({"*": "main", "#": "consult"})
        open_flow, _, problems = read_flows(section, departments=DEPARTMENTS)
        assert problems == [] and open_flow.step("main").key_target("*") == "main"

    def test_a_menu_needs_keys(self) -> None:
        """A menu with no keys is not a menu."""
        section = flows()
        section["open"]["steps"]["main"]["keys"] = {}
        problems = problems_in(section)
        assert problems[0].startswith("flows.open.steps.main.keys: {} — must map keys to steps")

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("repeat", 6, "6 — must be 0..5"),
        ("repeat", 1.5, "1.5 — must be a whole number"),
        ("timeout_seconds", 1, "1 — must be 2..30"),
        ("timeout_seconds", 31, "31 — must be 2..30"),
        ("timeout_seconds", "6s", "'6s' — must be a number"),
    ])
    def test_repeat_and_timeout_are_bounded(self, key: str, value: Any, message: str) -> None:
        """repeat 0..5 and timeout_seconds 2..30: no endless menu, no menu that never waits."""
        section = flows()
        section["open"]["steps"]["main"][key] = value
        assert problems_in(section) == [f"flows.open.steps.main.{key}: {message}"]


class TestRules:
    def test_the_first_step_must_be_the_greeting(self) -> None:
        """R2: a flow starting with the menu skips the greeting, so it is refused."""
        section = flows()
        section["open"]["start"] = "main"
        assert problems_in(section) == [
            ("flows.open.start: 'main' is a menu step — the first step must be the greeting "
             "(R2: time of day and company come first)"),
            "flows.open.steps.greeting: unreachable — no route from 'main' leads here"]

    def test_a_second_greeting_is_refused(self) -> None:
        """R2: the caller is greeted once; another greeting step is refused."""
        section = flows()
        section["open"]["steps"]["main"]["keys"]["9"] = "hello-again"
        section["open"]["steps"]["hello-again"] = {"greeting": True, "next": "consult"}
        assert problems_in(section) == [
            ("flows.open.steps.hello-again: a second greeting — the greeting comes once, as the "
             "first step 'greeting' (R2)")]

    def test_a_route_back_to_the_greeting_is_refused(self) -> None:
        """R2: a key leading back to the greeting would greet the caller again."""
        section = flows()
        section["open"]["steps"]["main"]["keys"]["0"] = "greeting"
        assert problems_in(section) == [
            ("flows.open.steps.main.keys.0: routes back to the greeting 'greeting' — a caller is "
             "greeted once, first (R2)")]

    def test_an_open_flow_that_never_queues_is_refused(self) -> None:
        """In opening hours a caller must be able to reach an agent: an open flow with no queue is refused."""
        section = flows()
        section["open"] = copy.deepcopy(CLOSED)
        assert problems_in(section) == [
            ("flows.open: no queue step reachable from 'greeting' — callers in opening hours "
             "could never reach an agent")]

    def test_the_closed_flow_may_record_a_name_and_need_not_queue(self) -> None:
        """After hours a name step before the callback offer is fine, and no queue is needed."""
        section = flows()
        section["closed"]["steps"]["greeting"]["next"] = "name"
        section["closed"]["steps"]["name"] = {"record_name": "name-ask", "next": "offer"}
        assert problems_in(section) == []

    def test_a_queue_to_a_missing_department_is_refused(self) -> None:
        """A queue step must name a configured department ("" is any agent)."""
        section = flows()
        section["open"]["steps"]["repair"]["queue"] = "维修"
        assert problems_in(section) == [
            ("flows.open.steps.repair.queue: '维修' — no such department (departments: 咨询, 报修, "
             "投诉; \"\" queues for any agent)")]

    def test_a_department_with_its_own_problem_is_not_reported_twice(self) -> None:
        """A queue naming a department whose number is bad reports only the department's problem."""
        data = config(flows())
        data["departments"][1]["number"] = "二"
        cfg, problems = parse_callflow(data)
        assert cfg is None
        assert [str(p) for p in problems] == [
            "departments[1].number: '二' — must be digits, dialled after *3"]

    def test_flow_problems_come_through_parse_callflow(self) -> None:
        """parse_callflow refuses a config whose flow is broken, with the flow's path."""
        section = flows()
        section["open"]["steps"]["consult"]["queue"] = "sales"
        cfg, problems = parse_callflow(config(section))
        assert cfg is None
        assert [p.path for p in problems] == ["flows.open.steps.consult.queue"]


class TestFlowPrompts:
    def test_flow_prompts_must_exist_and_are_found_at_their_step(self) -> None:
        """A missing menu, name or callback prompt is reported at the step key that names it."""
        cfg, problems = parse_callflow(config(flows()), known_prompts=KNOWN_PROMPTS)
        assert cfg is None
        assert sorted(str(p) for p in problems) == [
            ("flows.closed.steps.offer.callback: prompt 'callback-offer-closed' does not exist in "
             "scripts_zh/"),
            "flows.open.steps.ask-name.record_name: prompt 'name-ask' does not exist in scripts_zh/",
            "flows.open.steps.main.menu: prompt 'menu-main' does not exist in scripts_zh/",
            "flows.open.steps.main: prompt 'menu-invalid' does not exist in scripts_zh/",
            "flows.open.steps.main: prompt 'menu-no-input' does not exist in scripts_zh/",
        ]

    def test_menu_retry_prompts_are_needed_only_with_a_menu(self) -> None:
        """Without a menu the no-input and invalid-key prompts are not required."""
        cfg, problems = parse_callflow(config(None), known_prompts=KNOWN_PROMPTS)
        assert problems == [] and cfg is not None
        assert not {MENU_NO_INPUT_PROMPT, MENU_INVALID_PROMPT} & cfg.prompts_used()
        section = flows()
        known = KNOWN_PROMPTS | {"menu-main", NAME_PROMPT, CALLBACK_PROMPT,
                              MENU_NO_INPUT_PROMPT, MENU_INVALID_PROMPT}
        cfg, problems = parse_callflow(config(section), known_prompts=known)
        assert problems == [] and cfg is not None


class TestCheckConfig:
    def test_a_broken_flow_file_lists_lines_and_paths(self, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi check-config` on a broken flow prints each problem with its YAML line and path, exit 1."""
        text = (ROOT / "liyi.yaml").read_text(encoding="utf-8")
        lines = text.splitlines()
        menu_keys = next(i for i, line in enumerate(lines) if line.strip().startswith("keys: {\"1\""))
        lines[menu_keys] = lines[menu_keys].replace("repair-name", "repar")
        bye = next(i for i, line in enumerate(lines) if line.strip().startswith("bye: {close"))
        lines.insert(bye + 1, "      bye: {close: true}")  # the same step written twice
        bad = tmp_path / "bad.yaml"
        bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        err = capsys.readouterr().err
        assert f"line {menu_keys + 1}: flows.open.steps.main.keys.2: routes to 'repar' — no such step" in err
        assert f"line {bye + 2}: flows.closed.steps.bye: written twice in the same mapping" in err
        name_line = next(i for i, line in enumerate(lines) if line.strip().startswith("repair-name:"))
        assert f"line {name_line + 1}: flows.open.steps.repair-name: unreachable" in err
