"""End to end: callers who hang up mid-call are never followed by a ringing agent (issue 8).

On the real Asterisk under load, agents' phones were rung for callers who had
already left: the controller dropped ChannelHangupRequest and took the failed
end of the interrupted prompt as "prompt done". Here the controller runs
against the simulator (which sends a hang-up as traces 13 and 15 show:
ChannelHangupRequest, PlaybackFinished ``failed``, StasisEnd) over loopback,
the caller hangs up in the greeting, in the menu, while queued and while an
agent's phone rings, and the test checks both sides: what Asterisk was asked
after the hang-up, the agents' phones, and the SQLite call log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ari_handlers.simulator import AgentScript, CallerScript, SimCall
from callflow.config import Department
from callflow.flow import GREETING, MENU, PLAY, QUEUE, Flow, Step
from tests.e2e_world import World, running_world

pytestmark = pytest.mark.asyncio

MENU_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"),), default="consult",
         repeat=1, timeout_seconds=0.5),
    Step("consult", QUEUE, department="咨询"),
))
DEPARTMENTS = (Department("咨询", "1", ("agent1", "agent2")),)
LONG_PROMPT = 5.0  # the prompt the caller hangs up in outlasts the test's wait


def prompts(call: SimCall) -> list[str]:
    return [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def long_one(name: str) -> Callable[[str], float]:
    """Prompt lengths: ``name`` plays LONG_PROMPT seconds, everything else 0.05 s."""
    return lambda media: LONG_PROMPT if media.endswith(name) else 0.05


async def hang_up_and_settle(world: World, call: SimCall) -> tuple[int, float, Any]:
    """The caller hangs up now; returns how many ARI requests came before, when, and the logged call."""
    before = len(world.sim.requests)
    legs_before = len(world.sim.agent_legs)
    world.sim.caller_hangs_up(call)
    record = await world.call_ended_in_log(call.channel_id)
    await asyncio.sleep(0.3)  # room for anything late: retries, timers, a second agent
    assert len(world.sim.agent_legs) == legs_before, "an agent was rung after the caller hung up"
    return before, call.ended_at or 0.0, record


async def assert_one_record_caller_first(world: World, call: SimCall, record: Any) -> None:
    """Exactly one call in the log for this channel, ended once, the caller the first to hang up."""
    await world.store.flush()
    mine = [s for s in await world.store.list_calls(limit=50) if s.channel_id == call.channel_id]
    assert len(mine) == 1
    assert record.first_hangup == "caller"
    ended = [t for t in record.timeline if t.source == "log" and t.kind == "ended"]
    assert len(ended) == 1 and ended[0].detail["first_hangup"] == "caller"
    assert len([t for t in record.timeline if t.source == "log" and t.kind == "caller-hung-up"]) == 1


def assert_nothing_for_the_gone_caller(world: World, before: int) -> None:
    """After the hang-up Asterisk is asked only to hang up legs and clear bridges (or, at most, to look)."""
    after = [(method, path) for method, path, _ in world.sim.requests[before:]]
    assert [r for r in after if r[0] not in ("DELETE", "GET")] == [], after


def assert_every_leg_released(world: World) -> None:
    """No agent's phone still rings or is off the hook, and the roster has every agent free."""
    assert [leg.outcome for leg in world.sim.agent_legs if leg.outcome in ("ringing", "answered")] == []
    assert not any(ch.role == "agent" for ch in world.sim.channels.values())
    assert all(agent.engaged_by is None for agent in world.service.controller.roster)


class TestCallerHangsUp:
    async def test_in_the_greeting(self, tmp_path: Path) -> None:
        """Hanging up in the greeting: no music, no agent rung, one log record with the caller first."""
        async with running_world(tmp_path) as world:
            world.sim.prompt_seconds = _greeting_long
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await until(lambda: "prompt" in [h.what for h in call.heard])
            before, _, record = await hang_up_and_settle(world, call)
            assert_nothing_for_the_gone_caller(world, before)
            assert world.sim.agent_legs == []
            assert_every_leg_released(world)
            await assert_one_record_caller_first(world, call, record)
        assert [h.what for h in call.heard if h.what == "music-start"] == []
        assert record.compliance["R2"][0] == "kept"  # the caller chose to leave mid-greeting

    async def test_in_the_menu(self, tmp_path: Path) -> None:
        """Hanging up while the key menu plays: never queued, no agent rung, one record, caller first."""
        async with running_world(tmp_path, open_flow=MENU_FLOW, departments=DEPARTMENTS) as world:
            world.sim.prompt_seconds = long_one("menu-main")
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await until(lambda: "menu-main" in prompts(call))
            before, _, record = await hang_up_and_settle(world, call)
            assert_nothing_for_the_gone_caller(world, before)
            assert world.sim.agent_legs == []
            assert_every_leg_released(world)
            await assert_one_record_caller_first(world, call, record)
        assert record.outcome == "abandoned-menu"

    async def test_while_queued(self, tmp_path: Path) -> None:
        """Hanging up while waiting with music (no agent's phone registered): no agent rung afterwards even
        as retries come due, one record, caller first."""
        async with running_world(tmp_path) as world:
            for name in ("agent1", "agent2"):
                world.sim.unregister_agent(name)
            await asyncio.sleep(0.1)  # AMI tells the roster
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await until(lambda: "music-start" in [h.what for h in call.heard])
            await asyncio.sleep(0.2)  # a few agent retries (every 0.1 s) while waiting
            before, _, record = await hang_up_and_settle(world, call)
            assert_nothing_for_the_gone_caller(world, before)
            assert world.sim.agent_legs == []
            assert_every_leg_released(world)
            await assert_one_record_caller_first(world, call, record)
        assert record.outcome == "abandoned-waiting"

    async def test_while_an_agent_rings(self, tmp_path: Path) -> None:
        """Trace 15: the ringing agent leg is DELETEd at once after the caller's hang-up and no other agent
        is rung; one record, caller first."""
        async with running_world(tmp_path) as world:
            world.sim.set_agent_script("agent1", AgentScript(answer_after=None))
            world.sim.set_agent_script("agent2", AgentScript(answer_after=None))
            call = await world.sim.place_call("13800138000", script=CallerScript(max_seconds=30))
            await until(lambda: bool(world.sim.agent_legs))
            await asyncio.sleep(0.05)  # ringing
            before, hung_up_at, record = await hang_up_and_settle(world, call)
            assert_nothing_for_the_gone_caller(world, before)
            (leg,) = world.sim.agent_legs
            assert leg.outcome == "cancelled"
            assert leg.ended_at is not None and leg.ended_at - hung_up_at < 0.5
            assert ("DELETE", f"/channels/{leg.channel_id}") in [
                (m, p) for m, p, _ in world.sim.requests[before:]]
            assert_every_leg_released(world)
            await assert_one_record_caller_first(world, call, record)
        assert record.outcome == "abandoned-waiting"


class TestHangUpRacingTheFlow:
    async def test_just_as_the_greeting_ends_no_agent_is_rung(self, tmp_path: Path) -> None:
        """The caller hangs up the moment the greeting ends: the controller is still acting on "greeting done"
        (music, an agent) when the hang-up arrives, and from then on rings nobody — the race behind agents
        rung for callers who had left."""
        async with running_world(tmp_path, wait_prompt=None) as world:  # greeting, then the queue
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_prompt=("greeting-", 0.0), max_seconds=30))
            record = await world.call_ended_in_log(call.channel_id)
            await asyncio.sleep(0.3)
            originates = [p for m, p, _ in world.sim.requests if m == "POST" and p == "/channels"]
            assert world.sim.agent_legs == [] and originates == []
            assert_every_leg_released(world)
            await assert_one_record_caller_first(world, call, record)


class TestMissingPrompt:
    async def test_a_missing_sound_does_not_leave_the_caller_in_silence(self, tmp_path: Path) -> None:
        """A flow prompt whose sound file is missing fails at once; the controller finds the caller still there
        (GET /channels 200) and the call goes on to an agent, the failure in the log."""
        flow = Flow("open", "greeting", (
            Step("greeting", GREETING, next="notice"),
            Step("notice", PLAY, prompt="missing-notice", next="anyone"),
            Step("anyone", QUEUE),
        ))
        async with running_world(tmp_path, open_flow=flow) as world:
            call = await world.sim.place_call("13800138000", script=CallerScript(
                hang_up_after_connected=0.3, max_seconds=30))
            record = await world.call_ended_in_log(call.channel_id)
            requests = [(m, p) for m, p, _ in world.sim.requests]
        assert ("GET", f"/channels/{call.channel_id}") in requests
        assert "prompt-failed" in [h.what for h in call.heard]
        assert "connected" in [h.what for h in call.heard]
        failed = [t for t in record.timeline if t.source == "log" and t.kind == "prompt-failed"]
        checked = [t for t in record.timeline if t.source == "log" and t.kind == "caller-checked"]
        assert failed[0].detail["purpose"] == "step" and checked[0].detail["present"] is True
        assert record.first_hangup == "caller"


def _greeting_long(media: str) -> float:
    """Every greeting (whatever the time of day) outlasts the test; other prompts are short."""
    return LONG_PROMPT if "/greeting-" in media else 0.05
