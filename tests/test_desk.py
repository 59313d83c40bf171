"""The agent desk: what each agent's panel is told, live, by the real controller."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ari_handlers.simulator import AgentScript, CallerScript
from callflow import events as e
from callflow.config import CallFlowConfig
from callflow.roster import Roster
from db import CallStore, FollowUp
from liyi.desk import AgentDesk
from tests.e2e_world import running_world


async def _until(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


class TestAgentDesk:
    async def test_wrap_up_is_shown_then_available_again(self, tmp_path: Path) -> None:
        """After a call an agent with wrap-up time sees "wrap-up", then "available" when it ends."""
        from callflow.config import AgentConfig

        agents = (AgentConfig("agent1", "PJSIP/agent1", wrap_up_seconds=0.6),)
        async with running_world(tmp_path, agents=("agent1",)) as world:
            world.service.controller.config = replace(world.service.controller.config,
                                                      agents=agents)
            desk = world.service.desk
            seen: list[str] = []
            desk.subscribe("agent1", lambda view: seen.append(view["state"]))
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_connected=0.2, max_seconds=20))
            await asyncio.wait_for(call.ended.wait(), 10)
            await _until(lambda: "wrap-up" in seen)
            assert desk.view("agent1")["state"] == "wrap-up"
            await _until(lambda: seen[-1] == "available", timeout=5)

    async def test_panels_follow_a_rollover(self, tmp_path: Path) -> None:
        """The agent who let it ring is shown available again; the one who answered sees the caller."""
        async with running_world(tmp_path) as world:
            desk = world.service.desk
            world.sim.set_agent_script("agent1", AgentScript(answer_after=None))
            world.sim.set_agent_script("agent2", AgentScript(answer_after=0.1))
            seen: dict[str, list[dict[str, Any]]] = {"agent1": [], "agent2": []}
            for name, views in seen.items():
                desk.subscribe(name, views.append)
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await _until(lambda: any(v.get("state") == "on-call" for v in seen["agent2"]))
            await asyncio.sleep(0.1)
            states1 = [v["state"] for v in seen["agent1"] if "state" in v]
            assert "ringing" in states1 and states1[-1] == "available"
            on_call = [v for v in seen["agent2"] if v.get("state") == "on-call"][-1]
            assert on_call["call"]["caller_number"] == "13800138000"
            assert on_call["script"]
            world.sim.caller_hangs_up(call)
            await world.call_ended_in_log(call.channel_id)

    async def test_requests_without_a_call_or_unknown_are_refused_clearly(self, tmp_path: Path) -> None:
        """An agent not on a call, or an unknown action, gets a message, never a crash."""
        async with running_world(tmp_path) as world:
            desk = world.service.desk
            ok, message = await desk.act("agent1", "hold", {"reason": "x", "limit_seconds": "60"})
            assert not ok and "没有通话" in message
            ok, message = await desk.act("agent1", "self-destruct", {})
            assert not ok and "unknown action" in message

    async def test_a_refused_hold_limit_reaches_the_agent_as_a_notice(self, tmp_path: Path) -> None:
        """A hold limit that has no announcement (45 s) is refused and the agent is told why."""
        async with running_world(tmp_path) as world:
            desk = world.service.desk
            messages: list[dict[str, Any]] = []
            desk.subscribe("agent1", messages.append)
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await _until(lambda: "connected" in [h.what for h in call.heard])
            ok, _ = await desk.act("agent1", "hold", {"reason": "查询", "limit_seconds": "45"})
            assert ok  # accepted for the engine, which decides
            await _until(lambda: any(m.get("kind") == "notice" and m.get("level") == "warn"
                                     for m in messages))
            assert not any(h.detail.endswith("hold-announce-45") for h in call.heard)
            world.sim.caller_hangs_up(call)
            await world.call_ended_in_log(call.channel_id)


# ---------------------------------------------------------------- follow-ups and closing (R8)
#
# These drive the desk over a fake controller (the same surface the real one
# offers: roster, call_of_agent, agent_request, place_callback, store) and a
# fake call log holding real ``db.FollowUp`` records, so they need no
# Asterisk; one test uses the real SQLite call log.

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Friday 2026-01-09, 10:00 in Shanghai: three working days on is Wednesday the 14th.
FRIDAY_10AM = dt.datetime(2026, 1, 9, 10, 0, tzinfo=SHANGHAI).timestamp()


def followup(fid: str, *, owner: str = "agent1", kind: str = "promise",
             due: dt.date = dt.date(2026, 1, 14), state: str = "open",
             number: str = "13800138000", text: str = "三个工作日后给您答复") -> FollowUp:
    return FollowUp(id=fid, call_id="c0ffee000001", kind=kind, text=text, number=number,
                    owner=owner, queue="售后" if not owner else "", created_at=FRIDAY_10AM - 86400,
                    due=due, state=state)


class FakeFollowUpStore:
    """The call log's follow-up part, in memory, recording what the desk asked."""

    def __init__(self, *items: FollowUp) -> None:
        self.items = {f.id: f for f in items}
        self.listed: list[tuple[str | None, dt.date]] = []
        self.completed: list[tuple[str, str, float]] = []
        self.fail = False

    async def list_followups(self, *, owner: str | None = None, include_done: bool = False,
                             today: dt.date) -> list[FollowUp]:
        if self.fail:
            raise ConnectionError("database down")
        self.listed.append((owner, today))
        mine = [f for f in self.items.values()
                if (owner is None or f.owner in (owner, "")) and (include_done or f.state != "done")]
        return sorted(mine, key=lambda f: (f.status(today) != "overdue", f.due))

    async def get_followup(self, id_or_prefix: str) -> FollowUp | None:
        return self.items.get(id_or_prefix)

    async def complete_followup(self, followup_id: str, *, by: str, at: float) -> FollowUp | None:
        found = self.items.get(followup_id)
        if found is None:
            return None
        self.completed.append((followup_id, by, at))
        self.items[followup_id] = replace(found, state="done", done_by=by, done_at=at)
        return self.items[followup_id]


@dataclass
class FakeFacts:
    caller_number: str = "13800138000"
    caller_name: str = ""
    stated_name: str = "张先生"
    purpose: str = "查询订单"
    wanted: str = ""
    created_at: float = FRIDAY_10AM - 60
    connected_at: float | None = FRIDAY_10AM - 50
    agent: str | None = "agent1"


class FakeState:
    def __init__(self, value: str) -> None:
        self.value = value


class FakeEngine:
    """An inbound call's engine as the panel reads it, with the closing view of R8."""

    def __init__(self, state: str = "connected", closing: dict[str, Any] | None = None) -> None:
        self.state = FakeState(state)
        self.facts = FakeFacts()
        self.closing = closing

    def agent_role(self, agent: str) -> str | None:
        return "first" if agent == "agent1" else None

    def hold_view(self) -> None:
        return None

    def transfer_view(self, agent: str) -> None:
        return None

    def closing_view(self) -> dict[str, Any] | None:
        return self.closing


class FakeCallbackEngine:
    """A callback's engine: no caller facts, a callback view instead (H5's callflow.callback)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def agent_role(self, agent: str) -> str | None:
        return "callback" if agent == "agent1" else None

    def callback_view(self) -> dict[str, object]:
        return {"stage": self.stage, "number": "13900139000",
                "opening_line": "您好，我是礼仪客服中心的agent1，关于您反映的问题给您回电。",
                "followup_id": "f00d", "reason": ""}

    def closing_view(self) -> None:
        return None


@dataclass
class FakeLiveCall:
    engine: Any
    call_id: str = "c0ffee000002"


class FakeController:
    """What AgentDesk uses of the Controller; ``place_callback`` is added by a test when wanted."""

    def __init__(self, store: Any) -> None:
        self.roster = Roster([("agent1", "PJSIP/agent1"), ("agent2", "PJSIP/agent2")],
                             assume_registered=True, now=0.0)
        self.store = store
        self.calls: dict[str, FakeLiveCall] = {}
        self.on_call: dict[str, tuple[FakeLiveCall, str]] = {}
        self.requests: list[e.AgentEvent] = []

    def call_of_agent(self, agent: str) -> tuple[FakeLiveCall, str] | None:
        return self.on_call.get(agent)

    def agent_request(self, event: e.AgentEvent) -> bool:
        if event.agent not in self.on_call:
            return False
        self.requests.append(event)
        return True


def make_desk(*items: FollowUp, refresh_seconds: float = 60.0
              ) -> tuple[AgentDesk, FakeController, FakeFollowUpStore]:
    store = FakeFollowUpStore(*items)
    controller = FakeController(store)
    desk = AgentDesk(controller, CallFlowConfig(), clock=lambda: FRIDAY_10AM,  # type: ignore[arg-type]
                     refresh_seconds=refresh_seconds)
    return desk, controller, store


def on_a_call(controller: FakeController, engine: Any = None, role: str = "first") -> FakeLiveCall:
    call = FakeLiveCall(engine or FakeEngine())
    controller.calls[call.call_id] = call
    controller.on_call["agent1"] = (call, role)
    return call


class TestClosingAndPromises:
    async def test_end_call_becomes_the_engine_request(self) -> None:
        """end-call with ask_more 1 asks first, with 0 closes; without a call it is refused."""
        desk, controller, _ = make_desk()
        assert (await desk.act("agent1", "end-call", {"ask_more": "1"}))[0] is False
        on_a_call(controller)
        assert (await desk.act("agent1", "end-call", {"ask_more": "1"}))[0]
        assert (await desk.act("agent1", "end-call", {"ask_more": "0"}))[0]
        asked = [(r.agent, r.ask_more) for r in controller.requests
                 if isinstance(r, e.EndCallRequested)]
        assert asked == [("agent1", True), ("agent1", False)]
        assert len(controller.requests) == 2
        assert controller.requests[0].at == FRIDAY_10AM

    async def test_promise_names_its_due_date_in_working_days(self) -> None:
        """A promise goes to the engine with its text and days; the reply names the working-day due date."""
        desk, controller, _ = make_desk()
        on_a_call(controller)
        ok, message = await desk.act("agent1", "promise",
                                     {"text": "三个工作日后给您答复", "working_days": "3"})
        assert ok and "2026-01-14" in message  # Fri + 3 working days, over the weekend
        [request] = controller.requests
        assert isinstance(request, e.FollowUpPromised)
        assert (request.agent, request.text, request.working_days) == ("agent1", "三个工作日后给您答复", 3)

    @pytest.mark.parametrize("days", ["0", "31", "x", ""])
    async def test_promise_with_days_out_of_range_is_refused(self, days: str) -> None:
        """Working days outside 1..max_working_days never reach the engine."""
        desk, controller, _ = make_desk()
        on_a_call(controller)
        ok, message = await desk.act("agent1", "promise", {"text": "答复", "working_days": days})
        assert not ok and "1 到 30" in message
        assert controller.requests == []

    def test_the_question_asked_keeps_the_agent_talking(self) -> None:
        """While the caller is asked "还有其他问题吗", the view is on-call with that script and stage."""
        desk, controller, _ = make_desk()
        on_a_call(controller, FakeEngine(state="closing-question", closing={"stage": "asked"}))
        view = desk.view("agent1")
        assert view["state"] == "on-call"
        assert view["call"]["closing"] == {"stage": "asked"}
        assert view["script"].startswith("请问您还有其他问题吗")
        assert (view["promise_working_days"], view["max_working_days"]) == (3, 30)

    def test_a_callback_shows_its_stage_and_opening_line(self) -> None:
        """An agent placing a callback sees state "callback", the number, stage and opening line."""
        desk, controller, _ = make_desk()
        on_a_call(controller, FakeCallbackEngine("dialing"), role="callback")
        view = desk.view("agent1")
        assert view["state"] == "callback"
        assert view["call"]["caller_number"] == "13900139000"
        assert view["call"]["callback"]["stage"] == "dialing"
        assert view["call"]["callback"]["opening_line"].startswith("您好，我是礼仪客服中心")
        assert "先报公司名称" in view["script"]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class TestFollowUpList:
    async def test_subscribing_loads_the_agents_list_overdue_first(self) -> None:
        """A panel that connects gets its follow-ups (own + unowned callbacks), overdue ones flagged."""
        desk, _, store = make_desk(
            followup("a1"), followup("a2", due=dt.date(2026, 1, 8)),
            followup("b1", owner="agent2"), followup("cb", owner="", kind="callback"))
        seen: list[dict[str, Any]] = []
        desk.subscribe("agent1", seen.append)
        await _settle()
        assert store.listed == [("agent1", dt.date(2026, 1, 9))]  # the center's local date
        items = desk.view("agent1")["followups"]
        assert [(f["id"], f["status"]) for f in items] == [
            ("a2", "overdue"), ("a1", "open"), ("cb", "open")]
        assert items[1] == {"id": "a1", "kind": "promise", "text": "三个工作日后给您答复",
                            "number": "13800138000", "due": "2026-01-14", "status": "open",
                            "owner": "agent1", "queue": "", "call_id": "c0ffee000001"}
        assert seen and seen[-1]["followups"] == items  # pushed once loaded
        await desk.close()

    async def test_followups_changed_reloads_every_open_panel(self) -> None:
        """When the controller records a follow-up, every subscribed agent's list is reloaded."""
        desk, _, store = make_desk()
        seen: dict[str, list[dict[str, Any]]] = {"agent1": [], "agent2": []}
        for name, views in seen.items():
            desk.subscribe(name, views.append)
        await _settle()
        store.items["cb"] = followup("cb", owner="", kind="callback")
        desk.followups_changed()
        await _settle()
        for name in seen:
            assert [f["id"] for f in seen[name][-1]["followups"]] == ["cb"]
        await desk.close()

    async def test_the_list_is_refreshed_periodically(self) -> None:
        """Without any action the list is reloaded every refresh_seconds while a panel is open."""
        desk, _, store = make_desk(refresh_seconds=0.02)
        seen: list[dict[str, Any]] = []
        desk.subscribe("agent1", seen.append)
        await _settle()
        store.items["a1"] = followup("a1")
        await _until(lambda: any(v.get("followups") for v in seen), timeout=2.0)
        await desk.close()

    async def test_an_unreachable_call_log_keeps_the_last_list(self) -> None:
        """A failed reload leaves the cached list as it was and raises nothing."""
        desk, _, store = make_desk(followup("a1"))
        await desk.refresh_followups("agent1")
        store.fail = True
        await desk.refresh_followups("agent1")
        assert [f["id"] for f in desk.view("agent1")["followups"]] == ["a1"]


class TestFollowUpActions:
    async def test_owner_marks_done(self) -> None:
        """The owner's 已完成 completes it in the call log (by, at) and it leaves the list."""
        desk, _, store = make_desk(followup("a1"))
        desk.subscribe("agent1", lambda v: None)
        ok, _ = await desk.act("agent1", "followup-done", {"followup_id": "a1"})
        assert ok and store.completed == [("a1", "agent1", FRIDAY_10AM)]
        assert desk.view("agent1")["followups"] == []
        await desk.close()

    async def test_only_the_owner_or_anyone_for_an_unowned_callback(self) -> None:
        """Another agent's promise is refused; an unowned callback may be done by any agent."""
        desk, _, store = make_desk(followup("a1"), followup("cb", owner="", kind="callback"),
                                   followup("odd", owner="", kind="promise"))
        ok, message = await desk.act("agent2", "followup-done", {"followup_id": "a1"})
        assert not ok and "其他坐席" in message
        assert not (await desk.act("agent2", "followup-done", {"followup_id": "odd"}))[0]
        assert (await desk.act("agent2", "followup-done", {"followup_id": "cb"}))[0]
        assert store.completed == [("cb", "agent2", FRIDAY_10AM)]

    async def test_unknown_or_done_followups_are_refused(self) -> None:
        """An unknown id or one already done is refused with a message."""
        desk, _, store = make_desk(followup("d1", state="done"))
        assert not (await desk.act("agent1", "followup-done", {"followup_id": "nope"}))[0]
        ok, message = await desk.act("agent1", "place-callback", {"followup_id": "d1"})
        assert not ok and "已完成" in message
        assert store.completed == []

    async def test_place_callback_asks_the_controller(self) -> None:
        """回电 calls controller.place_callback(followup, agent) and returns its answer."""
        desk, controller, store = make_desk(followup("a1"))
        placed: list[tuple[FollowUp, str]] = []

        async def place_callback(f: FollowUp, agent: str) -> tuple[bool, str]:
            placed.append((f, agent))
            return True, "正在呼叫您的话机 · ringing you"

        controller.place_callback = place_callback  # type: ignore[attr-defined]
        ok, message = await desk.act("agent1", "place-callback", {"followup_id": "a1"})
        assert (ok, message) == (True, "正在呼叫您的话机 · ringing you")
        assert placed == [(store.items["a1"], "agent1")]

    async def test_place_callback_refusals(self) -> None:
        """No place_callback yet, an agent on a call, or another's follow-up: refused, nothing dialled."""
        desk, controller, _ = make_desk(followup("a1"), followup("b1", owner="agent2"))
        ok, message = await desk.act("agent1", "place-callback", {"followup_id": "a1"})
        assert not ok and "not available" in message
        placed: list[str] = []

        async def place_callback(f: FollowUp, agent: str) -> tuple[bool, str]:
            placed.append(f.id)
            return True, "ok"

        controller.place_callback = place_callback  # type: ignore[attr-defined]
        assert not (await desk.act("agent1", "place-callback", {"followup_id": "b1"}))[0]
        on_a_call(controller)
        ok, message = await desk.act("agent1", "place-callback", {"followup_id": "a1"})
        assert not ok and "当前通话" in message
        assert placed == []

    async def test_with_the_real_call_log(self, tmp_path: Path) -> None:
        """Against db.CallStore: a recorded promise shows on the owner's panel and is completed there."""
        store = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
        await store.start()
        try:
            store.call_started("c0ffee000001", channel_id="ch-1", caller_number="13800138000",
                               caller_name="", created_at=FRIDAY_10AM - 60)
            store.followup_added("c0ffee000001-f1", call_id="c0ffee000001", kind="promise",
                                 text="三个工作日后给您答复", due=dt.date(2026, 1, 14), owner="agent1",
                                 number="13800138000", queue="", created_at=FRIDAY_10AM)
            assert await store.flush()
            controller = FakeController(store)
            desk = AgentDesk(controller, CallFlowConfig(),  # type: ignore[arg-type]
                             clock=lambda: FRIDAY_10AM)
            await desk.refresh_followups("agent1")
            [item] = desk.view("agent1")["followups"]
            assert (item["id"], item["due"], item["status"]) == ("c0ffee000001-f1", "2026-01-14",
                                                                 "open")
            assert desk.view("agent2")["followups"] == []
            desk.subscribe("agent1", lambda v: None)
            ok, _ = await desk.act("agent1", "followup-done", {"followup_id": "c0ffee000001-f1"})
            assert ok and desk.view("agent1")["followups"] == []
            done = await store.get_followup("c0ffee000001-f1")
            assert done is not None and (done.state, done.done_by) == ("done", "agent1")
            await desk.close()
        finally:
            await store.close()
