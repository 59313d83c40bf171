"""End to end, state by state: the controller is killed mid-call and each call goes on where it was.

Through the simulator over real loopback sockets (``tests/restart_world.py``
kills the controller as SIGKILL would and starts a new one on the same log).
One test per state a caller can be in at the kill: still ringing, in the
greeting, in a menu, queued (two callers: their order kept), ringing an
agent, in a warm transfer, in the closing with the agent still there, and a
callback not connected yet. Holds and connected calls are in
``tests/test_e2e_recovery.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ari_handlers.simulator import AgentScript, CallerScript
from callflow import events as e
from callflow.config import Department, RingCadence
from callflow.flow import GREETING, MENU, QUEUE, Flow, Step
from tests.restart_world import kinds, log_kinds, site, until

pytestmark = pytest.mark.asyncio

SLOW_RINGS = RingCadence(on=1.0, off=1.0)  # ring 2 ends 3 s in, ring 3 at 5 s: room to kill between


def controller_call(s: Any, channel: str) -> Any:
    ctrl = s.service.controller
    return ctrl._by_channel.get(channel) if ctrl is not None else None


def state_of(s: Any, channel: str) -> str | None:
    call = controller_call(s, channel)
    return call.engine.state.value if call is not None else None


def prompts(call: Any) -> list[str]:
    return [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]


class TestRinging:
    async def test_a_caller_still_ringing_is_answered_on_the_original_plan_and_r1_is_kept(
            self, tmp_path: Path) -> None:
        """Killed while the caller's phone rang: the new controller answers after ring 2 counted from
        the first ring (never earlier, never after ring 3), greets, and the log scores R1 kept."""
        async with site(tmp_path, cadence=SLOW_RINGS, answer_after_rings=2) as s:
            call = await s.sim.place_call("13800138000", script=CallerScript(hang_up_after_connected=0.2))
            await until(lambda: state_of(s, call.channel_id) == "ringing")
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "ringing", since)
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await s.ended_record(call.channel_id)
        assert "connected" in kinds(call) and call.hung_up_by == "caller"
        seconds = record.answered_at.timestamp() - record.created_at.timestamp()
        assert seconds >= 3.0  # never before the end of ring 2's tone, as planned before the kill
        assert record.compliance["R1"].status == "kept"
        assert "recovered" in log_kinds(record) and log_kinds(record).count("ended") == 1


class TestGreeting:
    async def test_a_caller_in_the_greeting_hears_it_again_in_full_before_the_queue(
            self, tmp_path: Path) -> None:
        """Killed during the greeting: the greeting is played again from the start, then the
        caller reaches an agent; R2 is judged on the replayed greeting (kept)."""
        async with site(tmp_path, prompt_seconds=1.0) as s:
            call = await s.sim.place_call("13800138000", script=CallerScript(hang_up_after_connected=0.2))
            await until(lambda: state_of(s, call.channel_id) == "greeting")
            await asyncio.sleep(0.3)
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "greeting", since)
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await s.ended_record(call.channel_id)
        greetings = [p for p in prompts(call) if p.startswith("greeting")]
        assert len(greetings) == 2 and "connected" in kinds(call)
        assert "flow-resumed" in log_kinds(record)
        assert record.compliance["R2"].status == "kept"


MENU_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"), ("2", "repair")),
         default="consult", repeat=2, timeout_seconds=5.0),
    Step("consult", QUEUE, department="咨询"),
    Step("repair", QUEUE, department="报修"),
))
DEPARTMENTS = (Department("咨询", "1", ("agent1",)), Department("报修", "2", ("agent2",)))


class TestMenu:
    async def test_a_caller_in_a_menu_hears_it_again_and_their_key_takes_them_on(
            self, tmp_path: Path) -> None:
        """Killed while the menu played: the menu is replayed (timeline ``flow-resumed``) and the
        key then pressed takes the caller to that department's agent."""
        async with site(tmp_path, prompt_seconds=1.0, open_flow=MENU_FLOW, departments=DEPARTMENTS,
                        wait_prompt=None) as s:
            call = await s.sim.place_call("13800138000", script=CallerScript(hang_up_after_connected=0.2))
            await until(lambda: state_of(s, call.channel_id) == "menu")
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "menu", since)
            await until(lambda: prompts(call).count("menu-main") >= 2)
            s.sim.caller_sends_dtmf(call, "2")
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await s.ended_record(call.channel_id)
        assert record.agent == "agent2" and "flow-resumed" in log_kinds(record)
        assert call.hung_up_by == "caller"


class TestQueued:
    async def test_two_queued_callers_keep_their_order_across_the_restart(self, tmp_path: Path) -> None:
        """Two callers queued with no agent free when the controller dies: after the restart the
        one who queued first is connected first (R5), and neither is hung up."""
        async with site(tmp_path) as s:
            s.sim.unregister_agent("agent1")
            s.sim.unregister_agent("agent2")
            await asyncio.sleep(0.2)
            first = await s.sim.place_call("13800138001", script=CallerScript(hang_up_after_connected=0.3))
            await until(lambda: state_of(s, first.channel_id) == "offering")
            second = await s.sim.place_call("13800138002", script=CallerScript(hang_up_after_connected=0.3))
            await until(lambda: state_of(s, second.channel_id) == "offering")
            await asyncio.sleep(0.2)
            await s.crash()
            since = await s.restart()
            await s.adopted(second.channel_id, "offering", since)
            await s.adopted(first.channel_id, "offering", since)
            s.sim.register_agent("agent1")
            await asyncio.wait_for(second.ended.wait(), 20)
            one = await s.ended_record(first.channel_id)
            two = await s.ended_record(second.channel_id)
        connected = [next(h.at for h in call.heard if h.what == "connected") for call in (first, second)]
        assert connected[0] < connected[1]
        assert first.hung_up_by == second.hung_up_by == "caller"
        assert "queue-resumed" in log_kinds(one) and "queue-resumed" in log_kinds(two)


class TestRingingAgent:
    async def test_an_agent_leg_ringing_at_the_kill_rings_on_and_its_answer_connects_the_caller(
            self, tmp_path: Path) -> None:
        """Killed while agent1's phone rang: the same leg keeps ringing (no second leg), and when
        agent1 answers the caller is connected to them."""
        async with site(tmp_path, cadence=SLOW_RINGS) as s:
            s.sim.set_agent_script("agent1", AgentScript(answer_after=2.5))
            s.sim.unregister_agent("agent2")
            await asyncio.sleep(0.2)
            call = await s.sim.place_call("13800138000", script=CallerScript(hang_up_after_connected=0.3))
            await until(lambda: bool(s.sim.legs_of("agent1")))
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "offering", since)
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await s.ended_record(call.channel_id)
        assert len(s.sim.legs_of("agent1")) == 1 and "connected" in kinds(call)
        assert record.agent == "agent1" and "agent-ringing-resumed" in log_kinds(record)


class TestWarmTransfer:
    async def test_a_transfer_cut_by_the_restart_brings_the_caller_back_to_the_first_agent(
            self, tmp_path: Path) -> None:
        """Killed while the transfer target's phone rang: the target's leg is released and the
        caller goes back to the first agent with the apology (R6.5) — never dropped."""
        async with site(tmp_path) as s:
            s.sim.set_agent_script("agent2", AgentScript(answer_after=None))
            call = await s.sim.place_call("13800138000", script=CallerScript(keys_on={"transfer-consent": "1"}))
            await until(lambda: "connected" in kinds(call))
            ctrl = s.service.controller
            assert ctrl.agent_request(e.TransferRequested(at=time.time(), agent="agent1", target="agent2"))
            await until(lambda: bool(s.sim.legs_of("agent2")))
            await asyncio.sleep(0.2)
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "connected", since)
            target = s.sim.legs_of("agent2")[-1]
            await until(lambda: target.outcome is not None and target.outcome != "ringing", 5)
            await until(lambda: kinds(call).count("connected") == 2)
            s.sim.caller_hangs_up(call)
            record = await s.ended_record(call.channel_id)
        assert "transfer-failed" in prompts(call)
        assert record.agent == "agent1" and record.first_hangup == "caller"
        assert "transfer-ended" in log_kinds(record)


class TestClosing:
    async def test_closing_with_the_agent_on_the_line_keeps_the_line_open_and_the_agent_until_the_caller_goes(
            self, tmp_path: Path) -> None:
        """Killed after the thanks while the agent waits for the caller to hang up: the call is
        taken back in closing with the agent kept (released after the usual 20 s, or when the
        caller hangs up), and the caller is never hung up."""
        async with site(tmp_path) as s:
            call = await s.sim.place_call("13800138000", script=CallerScript())
            await until(lambda: "connected" in kinds(call))
            ctrl = s.service.controller
            assert ctrl.agent_request(e.EndCallRequested(at=time.time(), agent="agent1"))
            await until(lambda: state_of(s, call.channel_id) == "closing")
            await asyncio.sleep(0.3)
            leg = s.sim.legs_of("agent1")[-1]
            await s.crash()
            since = await s.restart()
            live = await s.adopted(call.channel_id, "closing", since)
            await until(lambda: {"agent-release", "idle"} <= set(live.timers), 5)
            assert s.service.controller.roster.get("agent1").engaged_by == live.call_id
            assert leg.outcome == "answered"
            s.sim.caller_hangs_up(call)
            record = await s.ended_record(call.channel_id)
            await until(lambda: leg.outcome != "answered", 5)
        assert call.hung_up_by == "caller" and record.outcome == "completed"
        assert log_kinds(record).count("ended") == 1


class Promise:
    def __init__(self, id: str, number: str) -> None:  # noqa: A002 — FollowUpLike's field
        self.id, self.number, self.state, self.created_at = id, number, "open", time.time()


class TestCallbackNotConnected:
    async def test_a_callback_still_dialling_at_the_kill_is_stopped_and_its_record_closed(
            self, tmp_path: Path) -> None:
        """Killed while the customer's phone rang for a callback: the dialling is stopped, the
        agent's leg released, and the record is closed — never left open."""
        async with site(tmp_path) as s:
            s.sim.customer("13900139000", answer_after=None)
            ctrl = s.service.controller
            ok, message = await ctrl.place_callback(Promise("f00d", "13900139000"), "agent1")
            assert ok, message
            await until(lambda: bool(s.sim.calls_to("13900139000")))
            customer = s.sim.calls_to("13900139000")[0]
            agent_leg = s.sim.legs_of("agent1")[-1]
            await asyncio.sleep(0.3)
            await s.crash()
            await s.restart()
            record = await s.ended_record(customer.channel_id)
            await until(lambda: customer.channel_id not in s.sim.channels, 5)
            await until(lambda: agent_leg.outcome != "answered", 5)
        assert record.ended_at is not None and record.summary["recovered"] is True
