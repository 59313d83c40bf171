"""End to end through the simulator: menus, queues with callback offers, closing, follow-ups.

Everything runs over loopback sockets against the Asterisk simulator: the
caller's keys answer the prompts they hear, the agents act through the same
desk the web panel uses, and the results are read back from the SQLite call
log the product writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ari_handlers.simulator import CallerScript
from callflow.config import Department, QueueConfig
from callflow.flow import GREETING, MENU, QUEUE, RECORD_NAME, Flow, Step
from tests.e2e_world import running_world

MENU_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"), ("2", "repair")),
         default="consult", repeat=1, timeout_seconds=0.5),
    Step("consult", QUEUE, department="咨询"),
    Step("repair", RECORD_NAME, prompt="name-ask", max_seconds=3.0, next="repair-q"),
    Step("repair-q", QUEUE, department="报修"),
))
DEPARTMENTS = (Department("咨询", "1", ("agent1",)), Department("报修", "2", ("agent2",)))
#: Short waits so a test's caller reaches the callback offer in about a second.
QUICK_QUEUE = QueueConfig(announce="position", announce_every_seconds=0.4, max_wait_seconds=1.0,
                          offer_timeout_seconds=1.0, number_timeout_seconds=1.0)


def prompts(call: Any) -> list[str]:
    return [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]


def kinds(call: Any) -> list[str]:
    return [h.what for h in call.heard]


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


def log_entries(record: Any, kind: str) -> list[Any]:
    return [t for t in record.timeline if t.source == "log" and t.kind == kind]


def statuses(record: Any) -> dict[str, str]:
    return {rule: status for rule, (status, _e) in record.compliance.items()}


class TestMenus:
    async def test_key_2_routes_to_the_repair_department_with_the_name_recorded(
            self, tmp_path: Path) -> None:
        """Key 2: the caller says their name after the tone, then 报修's agent (agent2) answers."""
        async with running_world(tmp_path, open_flow=MENU_FLOW, departments=DEPARTMENTS) as world:
            call = await world.sim.place_call("13800138000", script=CallerScript(
                keys_on={"menu-main": "2"}, hang_up_after_connected=0.5, max_seconds=30))
            record = await world.call_ended_in_log(call.channel_id, timeout=20)
        said = prompts(call)
        assert said[:3] == ["greeting-morning", "menu-main", "name-ask"] or \
            said[1:3] == ["menu-main", "name-ask"]
        assert "beep" in kinds(call)
        assert [leg.agent for leg in world.sim.agent_legs] == ["agent2"]
        assert log_entries(record, "menu-choice")[0].detail["to"] == "repair"
        assert log_entries(record, "name-recorded")[0].detail["recording"].endswith("-name")
        assert record.first_hangup == "caller"

    async def test_no_input_repeats_the_menu_then_the_default_route(self, tmp_path: Path) -> None:
        """A silent caller hears the menu again with an apology, then goes to the default (咨询, agent1)."""
        async with running_world(tmp_path, open_flow=MENU_FLOW, departments=DEPARTMENTS) as world:
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_connected=0.5, max_seconds=30))
            record = await world.call_ended_in_log(call.channel_id, timeout=20)
        said = prompts(call)
        start = said.index("menu-main")
        assert said[start:start + 3] == ["menu-main", "menu-no-input", "menu-main"]
        assert [leg.agent for leg in world.sim.agent_legs] == ["agent1"]
        assert log_entries(record, "menu-default")[0].detail["why"] == "no-input"
        assert "connected" in kinds(call)


class TestQueueOverflow:
    async def test_waiting_caller_is_offered_a_callback_and_it_becomes_a_follow_up(
            self, tmp_path: Path) -> None:
        """No agent free: position announced, callback offered, number read back and confirmed, listed."""
        async with running_world(tmp_path, agents=(), queue=QUICK_QUEUE) as world:
            call = await world.sim.place_call("13912345678", script=CallerScript(
                keys_on={"callback-offer": "1", "callback-confirm": "1"},
                hang_up_after_prompt=("callback-recorded", 0.3), max_seconds=30))
            record = await world.call_ended_in_log(call.channel_id, timeout=20)
            await world.store.flush()
            today = dt.date.today()
            followups = await world.store.list_followups(today=today)
        said = prompts(call)
        assert "queue-ahead-0" in said
        start = said.index("callback-number-is")
        assert said[start + 1:start + 12] == [f"digit-{d}" for d in "13912345678"]
        assert said[-1] == "callback-recorded"
        assert record.first_hangup == "caller"
        (followup,) = followups
        assert (followup.kind, followup.number, followup.owner) == ("callback", "13912345678", "")
        assert followup.call_id == record.id
        assert statuses(record)["R5"] == "kept"
        assert statuses(record)["R8"] == "kept"

    async def test_caller_who_keeps_waiting_is_never_cut_off(self, tmp_path: Path) -> None:
        """Key 2 at the offer: "请您继续稍候", music again, and the caller is still there until they leave."""
        async with running_world(tmp_path, agents=(), queue=QUICK_QUEUE) as world:
            call = await world.sim.place_call("13912345678", script=CallerScript(
                keys_on={"callback-offer": "2"}, max_seconds=4.0))
            record = await world.call_ended_in_log(call.channel_id, timeout=20)
        assert "queue-continue" in prompts(call)
        assert record.first_hangup == "caller"
        assert not log_entries(record, "callback-recorded")
        assert call.silences(min_seconds=1.0) == []


class TestClosingAndCallbacks:
    async def test_agent_closes_with_the_question_and_the_caller_hangs_up_first(
            self, tmp_path: Path) -> None:
        """From the panel: "还有其他问题吗", then thanks; the caller puts the phone down first."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_prompt=("closing-thanks", 0.3), max_seconds=30))
            await until(lambda: "connected" in kinds(call))
            desk = world.service.desk
            agent = world.sim.agent_legs[0].agent
            await world.agent_talking(agent)
            ok, message = await desk.act(agent, "end-call", {"ask_more": "1"})
            assert ok, message
            await until(lambda: "closing-more" in prompts(call))
            ok, message = await desk.act(agent, "end-call", {"ask_more": "0"})
            assert ok, message
            record = await world.call_ended_in_log(call.channel_id, timeout=20)
        assert prompts(call)[-2:] == ["closing-more", "closing-thanks"]
        assert record.first_hangup == "caller"
        assert statuses(record)["R8"] == "kept" and statuses(record)["R9"] == "kept"

    async def test_a_promise_is_listed_and_the_callback_rings_the_agent_first(
            self, tmp_path: Path) -> None:
        """A promise becomes a follow-up; 回电 rings the agent's phone, then the customer's."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_connected=1.5, max_seconds=30))
            await until(lambda: "connected" in kinds(call))
            desk = world.service.desk
            agent = world.sim.agent_legs[0].agent
            await world.agent_talking(agent)
            ok, message = await desk.act(agent, "promise", {"text": "三个工作日后给您答复",
                                                            "working_days": "3"})
            assert ok, message
            await world.call_ended_in_log(call.channel_id, timeout=20)
            await world.store.flush()
            (promise,) = await world.store.list_followups(owner=agent, today=dt.date.today())
            assert promise.kind == "promise" and promise.owner == agent
            world.sim.customer("13800138000", answer_after=0.5, hang_up_after=1.0)
            roster, clock = world.service.controller.roster, world.service.controller.clock
            # the agent's phone back to idle (an AMI event, later under load) and no wrap-up
            await until(lambda: roster.get(agent).free and not roster.get(agent).in_wrap_up(clock()))
            ok, message = await desk.act(agent, "place-callback", {"followup_id": promise.id})
            assert ok, message
            await until(lambda: bool(world.sim.calls_to("13800138000")))
            customer = world.sim.calls_to("13800138000")[0]
            await until(lambda: "connected" in kinds(customer))
            await until(lambda: not any(world.service.controller.calls.values()) or
                        all(c.engine.ended for c in world.service.controller.calls.values()), 20)
            await world.store.flush()
            again = await world.store.get_followup(promise.id)
        legs = [leg for leg in world.sim.agent_legs if leg.agent == agent]
        assert len(legs) == 2, "the agent's phone was not rung for the callback"
        assert legs[1].answered_at is not None and legs[1].answered_at < customer.started_at, "the customer was rung before the agent"
        assert again is not None and again.attempts == 1
