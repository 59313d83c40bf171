"""End to end: holds and warm transfers through the simulator, from the panel and from key codes.

The agent's requests go through the same desk the web panel uses (or, for a
softphone-only agent, as key codes on their phone); the caller's keys and
what they heard come from the simulated caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ari_handlers.simulator import AgentScript, CallerScript
from tests.e2e_world import World, running_world


def kinds(call: Any) -> list[str]:
    return [h.what for h in call.heard]


def prompts(call: Any) -> list[str]:
    return [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


async def connected_call(world: World, **script: Any) -> Any:
    call = await world.sim.place_call("13800138000",
                                      script=CallerScript(max_seconds=90, **script))
    await until(lambda: "connected" in kinds(call))
    await world.agent_talking(world.sim.agent_legs[-1].agent)
    return call


async def act(world: World, agent: str, action: str, **params: str) -> None:
    desk = world.service.desk
    ok, message = await desk.act(agent, action, params)
    assert ok, message


def statuses(record: Any) -> dict[str, str]:
    return {rule: status for rule, (status, _e) in record.compliance.items()}


def log_kinds(record: Any) -> list[str]:
    return [t.kind for t in record.timeline if t.source == "log"]


class TestHold:
    async def test_hold_from_the_panel_announces_the_limit_plays_music_and_resumes(self, tmp_path: Path) -> None:
        """Panel hold: limit announced, music, never silence; resume puts caller and agent together."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            await act(world, "agent1", "caller-info", caller_name="张先生", purpose="查询订单")
            await act(world, "agent1", "hold", reason="查询订单", limit_seconds="60")
            await until(lambda: kinds(call).count("music-start") >= 2)
            await asyncio.sleep(0.3)
            await act(world, "agent1", "resume")
            await until(lambda: kinds(call).count("connected") >= 2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert "hold-announce-60" in prompts(call)
        held_from = kinds(call).index("connected") + 1
        back = len(kinds(call)) - 1 - kinds(call)[::-1].index("connected")
        silent = [g for g in call.silences(0.3)
                  if call.heard[held_from].at <= g[0] < call.heard[back].at]
        assert silent == [], "the caller heard silence on hold"
        assert {"hold-started", "hold-ended"} <= set(log_kinds(record))
        s = statuses(record)
        assert (s["R3"], s["R4"], s["R7"]) == ("kept", "kept", "kept")
        assert record.caller_name in ("张先生", "")  # the stated name is in the timeline either way

    async def test_softphone_key_codes_hold_and_resume_without_the_caller_hearing_them(self, tmp_path: Path) -> None:
        """*1 holds with the default limit and *0 resumes; the caller never hears the agent's tones."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            leg = world.sim.legs_of("agent1")[-1].channel_id
            for digit in "*1":
                world.sim.agent_sends_dtmf(leg, digit)
            await until(lambda: "hold-announce-60" in prompts(call))
            await asyncio.sleep(0.2)
            for digit in "*0":
                world.sim.agent_sends_dtmf(leg, digit)
            await until(lambda: kinds(call).count("connected") >= 2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert "dtmf" not in kinds(call)
        assert statuses(record)["R4"] == "kept"

    async def test_at_the_limit_the_caller_chooses_to_go_back(self, tmp_path: Path) -> None:
        """At the 30 s limit the caller is asked; key 2 returns them to the agent with an apology."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            await act(world, "agent1", "hold", reason="查询", limit_seconds="30")
            await until(lambda: "hold-limit-ask" in prompts(call), timeout=45)
            world.sim.caller_sends_dtmf(call, "2")
            await until(lambda: kinds(call).count("connected") >= 2)
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert "hold-return" in prompts(call)
        assert "hold-limit-reached" in log_kinds(record)
        assert statuses(record)["R4"] == "kept"


class TestWarmTransfer:
    async def test_consented_accepted_transfer_hands_the_caller_to_the_target(self, tmp_path: Path) -> None:
        """Consent (key 1), target rung and accepts, first agent completes: caller talks to agent2."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            await act(world, "agent1", "transfer", target="agent2", reason="售后问题")
            await until(lambda: "transfer-consent" in prompts(call))
            world.sim.caller_sends_dtmf(call, "1")
            await until(lambda: world.service.controller.call_of_agent("agent2") is not None
                        and world.service.controller.call_of_agent("agent2")[1] == "target")
            await until(lambda: world.sim.legs_of("agent2")
                        and world.sim.legs_of("agent2")[-1].answered_at is not None)
            await asyncio.sleep(0.2)
            assert [h.detail for h in call.heard if h.what == "connected"] == ["agent1"]
            await act(world, "agent2", "accept")
            await asyncio.sleep(0.1)
            await act(world, "agent1", "complete-transfer")
            await until(lambda: [h.detail for h in call.heard if h.what == "connected"][-1:] == ["agent2"])
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        connected = [h.detail for h in call.heard if h.what == "connected"]
        assert connected[0] == "agent1" and connected[-1] == "agent2"
        assert call.hung_up_by == "caller"
        assert "transfer-completed" in log_kinds(record)
        assert record.agent == "agent2", "the log names the agent who served the caller last"
        assert statuses(record)["R6"] == "kept"

    async def test_target_who_does_not_answer_sends_the_caller_back_with_an_apology(self, tmp_path: Path) -> None:
        """agent2 never answers: after three rings the caller is back with agent1, apologised to."""
        async with running_world(tmp_path) as world:
            world.sim.set_agent_script("agent2", AgentScript(answer_after=None))
            call = await connected_call(world)
            await act(world, "agent1", "transfer", target="agent2")
            await until(lambda: "transfer-consent" in prompts(call))
            await act(world, "agent1", "consent")
            await until(lambda: "transfer-failed" in prompts(call), timeout=15)
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert [h.detail for h in call.heard if h.what == "connected"] == ["agent1", "agent1"]
        assert world.sim.legs_of("agent2")[-1].answered_at is None
        assert statuses(record)["R6"] == "kept"

    async def test_caller_who_refuses_consent_stays_with_the_agent(self, tmp_path: Path) -> None:
        """Key 2 at the consent question: no transfer, no target rung, caller back with agent1."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            await act(world, "agent1", "transfer", target="agent2")
            await until(lambda: "transfer-consent" in prompts(call))
            world.sim.caller_sends_dtmf(call, "2")
            await until(lambda: kinds(call).count("connected") >= 2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert world.sim.legs_of("agent2") == []
        assert "transfer-completed" not in log_kinds(record)


class TestMoreTransferPaths:
    async def test_target_who_declines_sends_the_caller_back(self, tmp_path: Path) -> None:
        """agent2 answers but declines in the panel: agent2 is released, caller back with agent1."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            await act(world, "agent1", "transfer", target="agent2")
            await until(lambda: "transfer-consent" in prompts(call))
            await act(world, "agent1", "consent")
            await until(lambda: bool(world.sim.legs_of("agent2"))
                        and world.sim.legs_of("agent2")[-1].answered_at is not None)
            await asyncio.sleep(0.1)
            await act(world, "agent2", "decline")
            await until(lambda: "transfer-failed" in prompts(call))
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert [h.detail for h in call.heard if h.what == "connected"] == ["agent1", "agent1"]
        assert world.sim.legs_of("agent2")[-1].ended_at is not None
        transfer_end = next(t for t in record.timeline if t.kind == "transfer-ended")
        assert transfer_end.detail["outcome"] == "declined"
        assert statuses(record)["R6"] == "kept"

    async def test_key_code_transfer_with_target_accepting_by_key(self, tmp_path: Path) -> None:
        """*2 2 # from agent1's phone transfers to agent2, who accepts with key 1; the first agent
        completes from the panel and the caller ends up with agent2."""
        async with running_world(tmp_path) as world:
            call = await connected_call(world)
            leg = world.sim.legs_of("agent1")[-1].channel_id
            for digit in "*22#":
                world.sim.agent_sends_dtmf(leg, digit)
            await until(lambda: "transfer-consent" in prompts(call))
            world.sim.caller_sends_dtmf(call, "1")
            await until(lambda: bool(world.sim.legs_of("agent2"))
                        and world.sim.legs_of("agent2")[-1].answered_at is not None)
            await asyncio.sleep(0.1)
            world.sim.agent_sends_dtmf(world.sim.legs_of("agent2")[-1].channel_id, "1")
            await asyncio.sleep(0.2)
            await act(world, "agent1", "complete-transfer")
            await until(lambda: [h.detail for h in call.heard if h.what == "connected"][-1:]
                        == ["agent2"])
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert "dtmf" not in kinds(call)
        assert "transfer-completed" in log_kinds(record)
        assert statuses(record)["R6"] == "kept"

    async def test_department_target_hears_who_is_calling_and_accepts_with_key_1(
            self, tmp_path: Path) -> None:
        """A transfer to a department rings its agent, who hears the announcement and accepts
        with key 1; the caller is then connected to them without waiting for the first agent."""
        from callflow.config import Department

        async with running_world(tmp_path, departments=(Department("售后", "3", ("agent2",)),)) as world:
            call = await connected_call(world)
            await act(world, "agent1", "transfer", target="dept:售后")
            await until(lambda: "transfer-consent" in prompts(call))
            world.sim.caller_sends_dtmf(call, "1")
            await until(lambda: bool(world.sim.legs_of("agent2"))
                        and world.sim.legs_of("agent2")[-1].answered_at is not None)
            await asyncio.sleep(0.3)  # the announcement plays to agent2
            world.sim.agent_sends_dtmf(world.sim.legs_of("agent2")[-1].channel_id, "1")
            await until(lambda: [h.detail for h in call.heard if h.what == "connected"][-1:]
                        == ["agent2"])
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        requests = [(m, p, q) for m, p, q in world.sim.requests if p.endswith("/play")]
        target_leg = world.sim.legs_of("agent2")[-1].channel_id
        assert any(target_leg in p and "transfer-announce" in q.get("media", "")
                   for _m, p, q in requests)
        assert "transfer-completed" in log_kinds(record)
        assert statuses(record)["R6"] == "kept"


class TestRequeueAtTheHead:
    async def test_a_caller_whose_agent_left_gets_the_next_agent_before_later_callers(
            self, tmp_path: Path) -> None:
        """The agent hangs up during a hold: the caller hears the apology and is served by the
        next free agent ahead of a caller who was already waiting (R6.5, never dropped)."""
        async with running_world(tmp_path, agents=("agent1",)) as world:
            world.sim.set_agent_script("agent1", AgentScript(answer_after=0.1, hang_up_after=1.0))
            first = await connected_call(world)
            world.sim.set_agent_script("agent1", AgentScript(answer_after=0.1))
            await act(world, "agent1", "hold", reason="查询", limit_seconds="60")
            later = await world.sim.place_call("13900001111", script=CallerScript(max_seconds=60))
            await until(lambda: "requeue-apology" in prompts(first), timeout=10)
            await until(lambda: kinds(first).count("connected") >= 2, timeout=15)
            assert "connected" not in kinds(later)
            world.sim.caller_hangs_up(first)
            await until(lambda: "connected" in kinds(later), timeout=15)
            world.sim.caller_hangs_up(later)
            record = await world.call_ended_in_log(first.channel_id)
        assert [h.detail for h in first.heard if h.what == "connected"] == ["agent1", "agent1"]
        assert "requeued" in log_kinds(record)
        assert record.first_hangup in ("agent", "caller")
