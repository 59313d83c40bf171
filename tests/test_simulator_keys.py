"""A simulated caller answering prompts with keys: ``keys_on``, ``keys_at`` and typed numbers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AsteriskSimulator, CallerScript
from tests.test_simulator_traces import AriTestClient


@pytest.fixture
async def world() -> Any:
    sim = AsteriskSimulator(prompt_seconds=0.05)
    await sim.start()
    async with aiohttp.ClientSession() as session:
        client = AriTestClient(sim, session)
        await client.connect()
        yield sim, client
        await client.disconnect()
    await sim.stop()


def _digits(c: AriTestClient, channel_id: str) -> list[str]:
    return [ev["digit"] for ev in c.events
            if ev["type"] == "ChannelDtmfReceived" and ev["channel"]["id"] == channel_id]


async def _play(c: AriTestClient, channel_id: str, media: str) -> None:
    _, pb = await c.rq("POST", f"/channels/{channel_id}/play", media=media)
    await c.wait_for("PlaybackFinished", playback_id=pb["id"])


class TestKeysOnPrompts:
    async def test_key_follows_the_named_prompt_only(self, world: Any) -> None:
        """keys_on fires key_delay after its prompt finished, and a longer name sharing the prefix does not fire it."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(
            keys_on={"menu-main": "2", "callback-offer": "1"}, key_delay=0.05))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await _play(c, cid, "sound:liyi/callback-offer-closed")
        await asyncio.sleep(0.15)
        assert _digits(c, cid) == []
        await _play(c, cid, "sound:liyi/menu-main")
        finished_at = asyncio.get_running_loop().time()
        await c.wait_for("ChannelDtmfReceived", digit="2")
        assert asyncio.get_running_loop().time() - finished_at == pytest.approx(0.05, abs=0.05)
        await _play(c, cid, "sound:liyi/callback-offer")
        await c.wait_for("ChannelDtmfReceived", digit="1")
        assert _digits(c, cid) == ["2", "1"]
        assert [d for _, d in call.pressed] == ["2", "1"]

    async def test_a_tuple_answers_each_repeat_in_turn(self, world: Any) -> None:
        """("9", "2") presses 9 the first time the menu plays, 2 the second, nothing the third."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(
            keys_on={"menu-main": ("9", "2")}, key_delay=0.02))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        for _ in range(3):
            await _play(c, cid, "sound:liyi/menu-main")
            await asyncio.sleep(0.08)
        assert _digits(c, cid) == ["9", "2"]

    async def test_a_stopped_prompt_is_not_answered(self, world: Any) -> None:
        """A prompt the service stops before it ends does not trigger its keys."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(keys_on={"menu-main": "2"}, key_delay=0.02))
        cid = call.channel_id
        sim.prompt_seconds = 1.0
        await c.rq("POST", f"/channels/{cid}/answer")
        _, pb = await c.rq("POST", f"/channels/{cid}/play", media="sound:liyi/menu-main")
        await c.rq("DELETE", f"/playbacks/{pb['id']}")
        await asyncio.sleep(0.1)
        assert _digits(c, cid) == []


class TestTypedNumbers:
    async def test_keys_at_types_a_number_then_hash(self, world: Any) -> None:
        """keys_at types "138#" key by key, key_interval apart, starting that long after the answer."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(
            keys_at=((0.05, "138#"),), key_interval=0.03))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await c.wait_for("ChannelDtmfReceived", digit="#")
        assert _digits(c, cid) == ["1", "3", "8", "#"]
        assert call.answered_at is not None
        times = [at - call.answered_at for at, _ in call.pressed]
        assert times == pytest.approx([0.05, 0.08, 0.11, 0.14], abs=0.03)

    async def test_keys_on_can_type_a_whole_number(self, world: Any) -> None:
        """A prompt asking for a number gets the digits and the closing '#'."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(
            keys_on={"callback-enter": "13900139000#"}, key_delay=0.01, key_interval=0.01))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await _play(c, cid, "sound:liyi/callback-enter")
        await c.wait_for("ChannelDtmfReceived", digit="#")
        assert "".join(_digits(c, cid)) == "13900139000#"

    async def test_no_keys_after_hanging_up(self, world: Any) -> None:
        """Keys still scheduled when the caller hangs up are never sent."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(keys_at=((0.1, "1234"),), key_interval=0.1))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await asyncio.sleep(0.25)
        sim.caller_hangs_up(call)
        await asyncio.sleep(0.2)
        assert [d for _, d in call.pressed] == ["1", "2"]
