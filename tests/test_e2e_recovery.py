"""End to end: the controller dies mid-call and a new one takes the calls back (issue 9).

Asterisk (here the simulator) keeps callers in Stasis while the app is gone
and replays nothing when it comes back (traces 07, 12). A controller is
"killed" the way SIGKILL leaves things — its tasks and sockets simply stop,
nothing is hung up or said goodbye to — and a fresh one is started on the
same call log (``tests/restart_world.py``). ``TestKilledProcess`` does the
same to `liyi run` with a real SIGKILL; ``tests/test_e2e_restart_states.py``
goes through every state a call can be in.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ari_handlers.simulator import AsteriskSimulator, CallerScript
from tests.ari_spec import load_spec
from tests.restart_world import ADOPT_WITHIN, kinds, log_kinds, site, until

pytestmark = pytest.mark.asyncio


class TestConnectedCallTakenBack:
    async def test_the_caller_hanging_up_after_a_restart_releases_the_agent_and_ends_the_record_once(
            self, tmp_path: Path) -> None:
        """Killed mid-conversation, the new controller re-adopts the call within 3 s; the caller's
        hang-up then frees the agent's phone and closes the record once, caller first, marked recovered."""
        async with site(tmp_path) as s:
            call, leg = await s.connected_then_crash()
            since = await s.restart()
            live = await s.adopted(call.channel_id, "connected", since)
            assert live.engine.agent == "agent1"
            assert s.service.controller.roster.get("agent1").engaged_by == live.call_id
            s.sim.caller_hangs_up(call)
            record = await s.ended_record(call.channel_id)
            await until(lambda: leg.outcome != "answered", 5)
            requests = list(s.sim.requests)
        assert leg.outcome == "service-hung-up"
        spec = load_spec()
        assert [p for method, path, params in requests
                for p in spec.check_request(method, path, params)] == []
        assert any(m == "GET" and p.endswith("/applications/liyi") for m, p, _ in requests)
        assert record.first_hangup == "caller" and record.outcome == "completed"
        assert record.summary["recovered"] is True
        assert log_kinds(record).count("ended") == 1 and "recovered" in log_kinds(record)
        statuses = {rule: mark.status for rule, mark in record.compliance.items()}
        assert statuses["R1"] == "not_applicable" and statuses["R9"] == "kept"

    async def test_the_agent_leaving_first_after_a_restart_leaves_the_caller_the_closing(
            self, tmp_path: Path) -> None:
        """After a restart, an agent who hangs up first still leaves the caller the thanks and an open line (R9)."""
        async with site(tmp_path) as s:
            call = await s.sim.place_call(
                "13800138000", script=CallerScript(hang_up_after_prompt=("closing-thanks", 0.2)))
            await until(lambda: "connected" in kinds(call))
            await asyncio.sleep(0.2)
            await s.crash()
            since = await s.restart()
            await s.adopted(call.channel_id, "connected", since)
            leg = s.sim.legs_of("agent1")[-1].channel_id
            s.sim._agent_hangs_up(s.sim.channels[leg])
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await s.ended_record(call.channel_id)
        after = [h.detail for h in call.heard[kinds(call).index("agent-left"):] if h.what == "prompt"]
        assert after and after[0].endswith("closing-thanks")
        assert call.hung_up_by == "caller"
        assert record.first_hangup == "agent"


class TestHeldCallerTakenBack:
    async def test_a_caller_on_hold_when_the_controller_died_stays_on_hold_until_the_agent_resumes(
            self, tmp_path: Path) -> None:
        """A caller held (*1) when the controller was killed is still on hold after the restart
        (same deadline, music), and the agent's resume (*0) puts them back with the same agent;
        the call then ends normally, caller first."""
        async with site(tmp_path) as s:
            call = await s.sim.place_call("13800138000", script=CallerScript())
            await until(lambda: "connected" in kinds(call))
            leg = s.sim.legs_of("agent1")[-1]
            s.sim.agent_sends_dtmf(leg.channel_id, "*")
            s.sim.agent_sends_dtmf(leg.channel_id, "1")
            ctrl = s.service.controller
            await until(lambda: any(c.engine.state.value == "hold" for c in ctrl.calls.values()))
            held = next(c for c in ctrl.calls.values() if c.engine.state.value == "hold")
            deadline = held.engine.hold_view()["ends_at"]
            await asyncio.sleep(0.3)
            await s.crash()
            since = await s.restart()
            live = await s.adopted(call.channel_id, "hold", since)
            assert live.engine.hold_view()["ends_at"] == pytest.approx(deadline, abs=0.01)
            s.sim.agent_sends_dtmf(leg.channel_id, "*")
            s.sim.agent_sends_dtmf(leg.channel_id, "0")
            await until(lambda: kinds(call).count("connected") == 2)
            s.sim.caller_hangs_up(call)
            record = await s.ended_record(call.channel_id)
            await until(lambda: leg.outcome != "answered", 5)
        assert leg.outcome == "service-hung-up" and len(s.sim.legs_of("agent1")) == 1
        assert record.first_hangup == "caller" and record.agent == "agent1"
        assert record.summary["recovered"] is True
        assert "hold-resumed" in log_kinds(record)


@dataclass
class Promise:
    """What placing a callback needs of a follow-up (``controller.FollowUpLike``)."""

    id: str
    number: str
    state: str = "open"
    created_at: float = 0.0


class TestCallbackTakenBack:
    async def test_a_connected_callback_is_taken_back_and_the_customer_s_hang_up_frees_the_agent(
            self, tmp_path: Path) -> None:
        """A callback (R8) connected when the controller was killed is re-adopted; the customer
        hanging up then releases the agent and closes the record, customer first, marked recovered."""
        async with site(tmp_path) as s:
            s.sim.customer("13900139000", answer_after=0.2)
            ctrl = s.service.controller
            ok, message = await ctrl.place_callback(Promise("f00d", "13900139000", created_at=time.time()),
                                                    "agent1")
            assert ok, message
            await until(lambda: bool(s.sim.calls_to("13900139000")))
            customer = s.sim.calls_to("13900139000")[0]
            await until(lambda: "connected" in kinds(customer))
            leg = s.sim.legs_of("agent1")[-1]
            await asyncio.sleep(0.3)
            await s.crash()
            since = await s.restart()
            live = await s.adopted_call(lambda call: call.engine.state.value == "connected", since)
            assert live.engine.agent == "agent1"
            s.sim.caller_hangs_up(customer)
            await until(lambda: leg.outcome != "answered", 5)
            record = await s.ended_record(customer.channel_id)
        assert leg.outcome == "service-hung-up" and customer.hung_up_by == "caller"
        assert record.first_hangup == "caller" and record.summary["recovered"] is True


class TestAgentLostWhileDown:
    async def test_a_caller_whose_agent_left_while_down_hears_the_apology_and_reaches_an_agent(
            self, tmp_path: Path) -> None:
        """The agent hung up while no controller ran: the caller, alone in the bridge, is not hung up
        but hears the apology and is connected to the next agent, ahead of the line."""
        async with site(tmp_path) as s:
            call, first = await s.connected_then_crash()
            s.sim._agent_hangs_up(s.sim.channels[first.channel_id])
            await until(lambda: first.channel_id not in s.sim.channels, 5)
            await s.restart()
            await until(lambda: kinds(call).count("connected") == 2)
            s.sim.caller_hangs_up(call)
            record = await s.ended_record(call.channel_id)
        prompts = [h.detail for h in call.heard if h.what == "prompt"]
        assert any(p.endswith("requeue-apology") for p in prompts)
        assert kinds(call).count("connected") == 2 and call.hung_up_by == "caller"
        assert record.first_hangup == "caller" and record.summary["recovered"] is True


class TestEndedWhileDown:
    async def test_a_call_that_ended_while_down_is_closed_as_recovered_and_its_agent_released(
            self, tmp_path: Path) -> None:
        """A caller who hung up while no controller ran: the record is closed as ended-while-down,
        claiming no rule, and the agent left alone in the bridge is hung up and the bridge deleted."""
        async with site(tmp_path) as s:
            call, leg = await s.connected_then_crash()
            s.sim.caller_hangs_up(call)
            await until(lambda: call.channel_id not in s.sim.channels, 5)
            await s.restart()
            record = await s.ended_record(call.channel_id)
            await until(lambda: leg.outcome != "answered", 5)
            await until(lambda: not s.sim.bridges, 5)
        assert leg.outcome == "service-hung-up"
        assert record.outcome == "ended-while-down" and record.first_hangup == "unknown"
        assert record.summary["recovered"] is True
        assert {mark.status for mark in record.compliance.values()} == {"not_applicable"}


class TestHungUpAsItRestarted:
    async def test_a_caller_gone_between_the_listing_and_the_look_is_closed_not_left_open(
            self, tmp_path: Path) -> None:
        """A caller listed by Asterisk but gone when looked at is closed in the log, never left open."""
        async with site(tmp_path) as s:
            call, _leg = await s.connected_then_crash()
            real = s.sim.application_json

            def listed_then_gone(name: str) -> dict[str, Any]:
                shown = real(name)
                if call.channel_id in shown["channel_ids"]:
                    s.sim.caller_hangs_up(call)  # hangs up right after Asterisk listed them
                return shown

            s.sim.application_json = listed_then_gone  # type: ignore[method-assign]
            await s.restart()
            record = await s.ended_record(call.channel_id)
        assert record.outcome == "ended-while-down" and record.first_hangup == "unknown"


class TestWaitingCallerTakenBack:
    async def test_a_queued_caller_keeps_waiting_and_reaches_an_agent(self, tmp_path: Path) -> None:
        """A caller waiting for an agent when the controller died keeps their place (same queued_at),
        is told where they stand and connected to the first agent who is free — never hung up."""
        async with site(tmp_path) as s:
            s.sim.unregister_agent("agent1")
            s.sim.unregister_agent("agent2")
            await asyncio.sleep(0.2)
            call = await s.sim.place_call("13800138000",
                                          script=CallerScript(hang_up_after_connected=0.3))
            await until(lambda: "music-start" in kinds(call))
            await asyncio.sleep(0.3)
            since_wall = time.time()
            await s.crash()
            since = await s.restart()
            live = await s.adopted(call.channel_id, "offering", since)
            assert live.engine.facts.queued_at < since_wall
            s.sim.register_agent("agent1")
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await s.ended_record(call.channel_id)
        assert "connected" in kinds(call) and call.hung_up_by == "caller"
        assert "queue-resumed" in log_kinds(record)
        assert record.agent == "agent1" and record.first_hangup == "caller"
        assert record.summary["recovered"] is True
        assert log_kinds(record).count("ended") == 1


class TestKilledProcess:
    async def test_liyi_run_killed_with_sigkill_mid_call_is_restarted_and_takes_the_call_back(
            self, tmp_path: Path) -> None:
        """`liyi run` SIGKILLed during a bridged call: a new `liyi run` re-adopts it, and the caller's
        hang-up releases the agent and closes the record once, caller first, marked recovered."""
        import os
        import signal
        import sys

        from ari_handlers.simulator import AgentScript
        from db import CallStore
        from tests.test_run_command import ROOT, write_config

        sim = AsteriskSimulator(prompt_seconds=0.05)
        await sim.start()
        sim.add_agent("agent1", script=AgentScript(answer_after=0.1))
        config = tmp_path / "liyi.yaml"
        db = tmp_path / "run.db"
        write_config(config, sim, db)
        env = {**os.environ, "LIYI_ARI_PASSWORD": "liyi-sim", "LIYI_AMI_SECRET": "liyi-sim"}

        async def run() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "liyi.cli", "run", "--config", str(config), cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        first = await run()
        second: asyncio.subprocess.Process | None = None
        try:
            await until(lambda: sim.app_connected, 20)
            await asyncio.sleep(0.3)  # AMI presence
            call = await sim.place_call("13800138000", script=CallerScript())
            await until(lambda: "connected" in kinds(call))
            leg = sim.legs_of("agent1")[-1]
            await asyncio.sleep(1.0)  # the log writer's group commit
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await until(lambda: not sim.app_connected, 5)
            second = await run()
            await until(lambda: sim.app_connected, 20)
            await asyncio.sleep(ADOPT_WITHIN)
            assert call.channel_id in sim.channels and leg.outcome == "answered"
            sim.caller_hangs_up(call)
            await until(lambda: leg.outcome != "answered", 5)
            await asyncio.sleep(1.0)  # the log writer's group commit
            second.send_signal(signal.SIGINT)
            await asyncio.wait_for(second.wait(), 20)
        finally:
            for proc in (first, second):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await sim.stop()
        assert leg.outcome == "service-hung-up"
        store = CallStore(f"sqlite+aiosqlite:///{db}")
        await store.start()
        try:
            calls = await store.list_calls()
            record = await store.get_call(calls[0].id)
        finally:
            await store.close()
        assert len(calls) == 1 and record is not None
        assert record.ended_at is not None and record.first_hangup == "caller"
        assert record.outcome == "completed" and record.summary["recovered"] is True
        assert log_kinds(record).count("ended") == 1
