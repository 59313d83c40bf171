"""End to end (issue 8, parts 3 and 4): connected and handed over only when really in the bridge.

Through the simulator over loopback, with the simulator doing what the real
Asterisk 22.10.1 did: a channel with a prompt playing enters a bridge only
when the prompt ends, and a caller who hangs up has a moment between
ChannelHangupRequest and StasisEnd in which addChannel races (trace 14).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from callflow.config import Department
from tests.e2e_world import World, running_world
from tests.test_e2e_hold_transfer import act, connected_call, kinds, log_kinds, prompts, statuses, until

DEPT = (Department("售后", "3", ("agent2",)),)
ANNOUNCE_SECONDS = 3.0  # transfer-announce to the department's agent (10 s on the real system)


def slow_announcement(media: str) -> float:
    return ANNOUNCE_SECONDS if "transfer-announce" in media else 0.05


def talked_with(call: Any) -> list[str]:
    return [h.detail for h in call.heard if h.what == "connected"]


async def department_target_answered(world: World) -> tuple[Any, str, float]:
    """The caller talks with agent1, agrees to go to 售后; agent2 answers and the announcement starts."""
    call = await connected_call(world)
    await act(world, "agent1", "transfer", target="dept:售后")
    await until(lambda: "transfer-consent" in prompts(call))
    consented = time.time()
    world.sim.caller_sends_dtmf(call, "1")
    await until(lambda: bool(world.sim.legs_of("agent2"))
                and world.sim.legs_of("agent2")[-1].answered_at is not None)
    await asyncio.sleep(0.3)  # agent2 hears transfer-announce, still playing
    return call, world.sim.legs_of("agent2")[-1].channel_id, consented


class TestDepartmentHandoffDuringTheAnnouncement:
    async def test_key_1_during_the_announcement_hands_over_at_once_with_music_until_both_are_in(
            self, tmp_path: Path) -> None:
        """agent2 accepts during a 3 s announcement: the caller is with agent2 well before it would end,
        hears music until then, never silence, and R4 and R6 are kept."""
        async with running_world(tmp_path, departments=DEPT,
                                 prompt_seconds=slow_announcement) as world:  # type: ignore[arg-type]
            call, target_leg, consented = await department_target_answered(world)
            accepted = time.time()
            world.sim.agent_sends_dtmf(target_leg, "1")
            await until(lambda: talked_with(call)[-1:] == ["agent2"])
            handed_over = time.time()
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert handed_over - accepted < 1.0, "the caller waited for the target's announcement to end"
        assert [g for g in call.silences(0.25) if g[0] >= consented] == []
        music_stops = [h.at for h in call.heard if h.what == "music-stop"]
        assert music_stops and min(abs(at - handed_over) for at in music_stops) < 0.3
        reqs = [(m, p) for m, p, _q in world.sim.requests]
        stop = next(i for i, (m, p) in enumerate(reqs) if m == "DELETE" and "/playbacks/" in p)
        add = next(i for i, (m, p) in enumerate(reqs) if p.endswith("/addChannel") and i > stop)
        assert stop < add
        completed = next(t for t in record.timeline if t.kind == "transfer-completed")
        assert completed.detail["join_seconds"] < 1.0
        ended = next(t for t in record.timeline if t.kind == "transfer-ended")
        assert ended.detail["caller_alone_seconds"] == 0.0
        s = statuses(record)
        assert (s["R4"], s["R6"]) == ("kept", "kept")
        assert record.agent == "agent2"

    async def test_target_gone_at_acceptance_is_no_completed_transfer(self, tmp_path: Path) -> None:
        """agent2 presses 1 and hangs up at once: the caller goes back to agent1 with an apology, the
        transfer is not logged completed, and the caller is never left in silence."""
        async with running_world(tmp_path, departments=DEPT,
                                 prompt_seconds=slow_announcement) as world:  # type: ignore[arg-type]
            call, target_leg, consented = await department_target_answered(world)
            world.sim.agent_sends_dtmf(target_leg, "1")
            world.sim._agent_hangs_up(world.sim.channels[target_leg])
            await until(lambda: "transfer-failed" in prompts(call))
            await until(lambda: talked_with(call)[-1:] == ["agent1"])
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        assert "agent2" not in talked_with(call)
        assert "transfer-completed" not in log_kinds(record)
        assert [g for g in call.silences(0.25) if g[0] >= consented] == []
        ended = next(t for t in record.timeline if t.kind == "transfer-ended")
        assert ended.detail["outcome"] in ("handoff-failed", "target-hung-up")
        assert statuses(record)["R6"] == "kept"  # R6.5: back with the first agent, apologised to
        assert record.agent == "agent1"


class TestCallerGoneAsBridged:
    @pytest.mark.parametrize("race", ["400", "422", "204"])
    async def test_caller_hanging_up_as_the_agent_answers_is_not_connected(
            self, tmp_path: Path, race: str) -> None:
        """The caller hangs up the moment agent1 answers; whatever addChannel answers (trace 14), the call
        is not logged connected, has no agent, and agent1 is hung up and free again at once."""
        async with running_world(tmp_path, agents=("agent1",)) as world:
            world.sim.hangup_window = 0.3
            world.sim.bridge_race = race
            loop = asyncio.get_running_loop()
            calls: list[Any] = []

            def on_event(ev: dict[str, Any]) -> None:
                if ev["type"] == "StasisStart" and ev.get("args", [""])[0] == "agent" and calls:
                    loop.call_soon(world.sim.caller_hangs_up, calls[0])

            world.sim.on_event(on_event)
            calls.append(await world.sim.place_call("13800138000"))
            record = await world.call_ended_in_log(calls[0].channel_id)
            leg = world.sim.legs_of("agent1")[-1]
            await until(lambda: leg.ended_at is not None)
            status = world.service.controller.roster.get("agent1")
        assert "connected" not in log_kinds(record)
        assert "agent-answered" in log_kinds(record)
        assert record.agent is None and record.outcome == "abandoned-connecting"
        assert record.first_hangup == "caller"
        assert status is not None and status.engaged_by is None and status.wrap_up_until <= time.time()
        assert statuses(record)["R3"] == "not_applicable"  # no agent talked with the caller
        assert "connected" not in kinds(calls[0])
        adds = [(p, q) for _m, p, q in world.sim.requests if p.endswith("/addChannel")]
        assert adds and adds[0][1]["channel"] == calls[0].channel_id  # the race was run
        assert ("bridge-failed" in log_kinds(record)) == (race != "204")  # 204: in and out again


class TestMusicUntilBothAreIn:
    async def test_first_connect_and_resume_stop_the_music_only_once_the_caller_is_with_the_agent(
            self, tmp_path: Path) -> None:
        """On the first connect and on resuming a hold, the caller hears the agent before the music
        stops, so the move into the bridge is never a silent moment."""
        async with running_world(tmp_path, agents=("agent1",)) as world:
            call = await connected_call(world)
            await act(world, "agent1", "hold", reason="查询", limit_seconds="60")
            await until(lambda: kinds(call).count("music-start") >= 2)
            await asyncio.sleep(0.2)
            await act(world, "agent1", "resume")
            await until(lambda: kinds(call).count("connected") >= 2)
            await asyncio.sleep(0.2)
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        heard = kinds(call)
        connects = [i for i, what in enumerate(heard) if what == "connected"]
        for at in connects:
            before = heard[:at]
            assert before[-1] != "music-stop", f"music stopped before the agent was there: {heard}"
            assert "music-stop" in heard[at:], heard
        assert len(connects) == 2
        assert statuses(record)["R4"] == "kept"
