"""The simulator's bridges when callers hang up and prompts still play (trace 14, issue 8).

Trace 14 (copied in ``tests/traces/``) shows a caller's BYE in a bridge as
ChannelHangupRequest → ChannelLeftBridge → StasisEnd, and addChannel of that
caller in between as a race: 400, 422, or 204 with the dead channel passing
through the bridge. The simulator opens that window for ``hangup_window``
seconds and answers as ``bridge_race`` says (or by a seeded draw).

No recorded trace shows a bridge and a channel's playback together; on the
real Asterisk 22.10.1 of issue 8, a target who accepted during a 10 s prompt
was added to the bridge only when the prompt ended, and the addChannel
request waited for it. The simulator does the same; the tests here document it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AsteriskSimulator, CallerScript
from tests.test_simulator_traces import AriTestClient


@pytest.fixture
async def ari() -> Any:
    sim = AsteriskSimulator(prompt_seconds=lambda media: 0.6 if "long" in media else 0.05,
                            hangup_window=0.3)
    await sim.start()
    async with aiohttp.ClientSession() as session:
        client = AriTestClient(sim, session)
        await client.connect()
        yield sim, client
        await client.disconnect()
    await sim.stop()


async def answered_caller(sim: AsteriskSimulator, client: AriTestClient) -> Any:
    call = await sim.place_call("13800138000", script=CallerScript())
    await client.wait_for("StasisStart", channel_id=call.channel_id)
    assert (await client.rq("POST", f"/channels/{call.channel_id}/answer"))[0] == 204
    return call


class TestAddChannelOfACallerHangingUp:
    @pytest.mark.parametrize(("race", "status", "message"), [
        ("400", 400, "Channel not found"), ("422", 422, "Channel not in Stasis application")])
    async def test_refused_while_hanging_up(self, ari: Any, race: str, status: int, message: str) -> None:
        """addChannel between the caller's ChannelHangupRequest and StasisEnd is refused as trace 14 recorded."""
        sim, client = ari
        sim.bridge_race = race
        call = await answered_caller(sim, client)
        await client.rq("POST", "/bridges/b1", type="mixing,dtmf_events")
        sim.caller_hangs_up(call)
        got = await client.rq("POST", "/bridges/b1/addChannel", channel=call.channel_id)
        assert got == (status, {"message": message})
        await client.wait_for("StasisEnd", channel_id=call.channel_id)
        assert client.types(call.channel_id)[-2:] == ["ChannelHangupRequest", "StasisEnd"]
        assert (await client.rq("GET", "/bridges/b1"))[1]["channels"] == []

    async def test_a_204_lets_the_dead_channel_pass_through_the_bridge(self, ari: Any) -> None:
        """The forced 204 race: ChannelEnteredBridge, ChannelLeftBridge, then StasisEnd of the caller."""
        sim, client = ari
        sim.bridge_race = "204"
        call = await answered_caller(sim, client)
        await client.rq("POST", "/bridges/b1", type="mixing,dtmf_events")
        sim.caller_hangs_up(call)
        assert (await client.rq("POST", "/bridges/b1/addChannel", channel=call.channel_id))[0] == 204
        await client.wait_for("StasisEnd", channel_id=call.channel_id)
        assert client.types(call.channel_id)[2:] == [
            "ChannelHangupRequest", "ChannelEnteredBridge", "ChannelLeftBridge", "StasisEnd"]
        assert (await client.rq("GET", "/bridges/b1"))[1]["channels"] == []

    async def test_hang_up_in_a_bridge_leaves_it_before_stasis_end_and_keeps_the_bridge(self, ari: Any) -> None:
        """A BYE in a bridge with music: ChannelHangupRequest, ChannelLeftBridge, StasisEnd; the bridge lives on."""
        sim, client = ari
        call = await answered_caller(sim, client)
        await client.rq("POST", "/bridges/b1", type="mixing,dtmf_events")
        await client.rq("POST", "/bridges/b1/addChannel", channel=call.channel_id)
        await client.rq("POST", "/bridges/b1/moh", mohClass="default")
        sim.caller_hangs_up(call)
        await client.wait_for("StasisEnd", channel_id=call.channel_id)
        assert client.types(call.channel_id)[-3:] == ["ChannelHangupRequest", "ChannelLeftBridge", "StasisEnd"]
        assert "BridgeDestroyed" not in client.types()
        assert (await client.rq("GET", "/bridges/b1"))[0] == 200

    def test_the_seeded_draw_gives_every_recorded_answer(self) -> None:
        """Without a forced answer, a seeded simulator answers 400 mostly, and 422 and 204 sometimes, repeatably."""
        first, second = AsteriskSimulator(seed=7), AsteriskSimulator(seed=7)
        many = [first._race_outcome() for _ in range(300)]
        assert set(many) == {"400", "422", "204"} and many.count("400") > 150
        assert many == [second._race_outcome() for _ in range(300)]


class TestAddChannelWaitsForThePrompt:
    async def test_a_channel_enters_the_bridge_only_when_its_prompt_ends(self, ari: Any) -> None:
        """addChannel of a channel playing a 0.6 s prompt answers, and ChannelEnteredBridge comes, only when it ends."""
        sim, client = ari
        call = await answered_caller(sim, client)
        await client.rq("POST", "/bridges/b1", type="mixing,dtmf_events")
        status, pb = await client.rq("POST", f"/channels/{call.channel_id}/play", media="sound:liyi/long")
        assert status == 201
        started = time.monotonic()
        assert (await client.rq("POST", "/bridges/b1/addChannel", channel=call.channel_id))[0] == 204
        assert time.monotonic() - started > 0.4
        finished = await client.wait_for("PlaybackFinished", playback_id=pb["id"])
        entered = await client.wait_for("ChannelEnteredBridge", channel_id=call.channel_id)
        assert client.events.index(finished) < client.events.index(entered)

    async def test_stopping_the_prompt_first_lets_the_channel_in_at_once(self, ari: Any) -> None:
        """DELETE /playbacks/{id} (PlaybackFinished done) before addChannel: the channel is in the bridge at once."""
        sim, client = ari
        call = await answered_caller(sim, client)
        await client.rq("POST", "/bridges/b1", type="mixing,dtmf_events")
        _, pb = await client.rq("POST", f"/channels/{call.channel_id}/play", media="sound:liyi/long")
        assert (await client.rq("DELETE", f"/playbacks/{pb['id']}"))[0] == 204
        started = time.monotonic()
        assert (await client.rq("POST", "/bridges/b1/addChannel", channel=call.channel_id))[0] == 204
        assert time.monotonic() - started < 0.3
        finished = await client.wait_for("PlaybackFinished", playback_id=pb["id"])
        assert finished["playback"]["state"] == "done"
        await asyncio.sleep(0)
        assert (await client.rq("GET", "/bridges/b1"))[1]["channels"] == [call.channel_id]
