"""The agent desk: what each agent's panel is told, live, by the real controller."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ari_handlers.simulator import AgentScript, CallerScript
from tests.e2e_world import running_world


async def _until(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


class TestAgentDesk:
    async def test_panels_follow_a_rollover(self, tmp_path: Path) -> None:
        """The agent who let it ring is shown available again; the one who answered sees the caller."""
        async with running_world(tmp_path) as world:
            desk = world.service.desk
            world.sim.set_agent_script("agent1", AgentScript(answer_after=None))
            world.sim.set_agent_script("agent2", AgentScript(answer_after=0.1))
            seen: dict[str, list[dict[str, Any]]] = {"agent1": [], "agent2": []}
            for name in seen:
                desk.subscribe(name, seen[name].append)
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
