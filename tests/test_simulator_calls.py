"""The simulator's people and bookkeeping: what callers hear, agent legs, device states, refusals."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript
from ari_handlers.simulator.model import ari_time
from tests.test_simulator_traces import AriTestClient


@pytest.fixture
async def world() -> Any:
    sim = AsteriskSimulator(prompt_seconds=lambda media: 0.3 if "greeting" in media else 0.1)
    sim.add_agent("agent1", script=AgentScript(answer_after=0.05))
    await sim.start()
    async with aiohttp.ClientSession() as session:
        client = AriTestClient(sim, session)
        await client.connect()
        yield sim, client
        await client.disconnect()
    await sim.stop()


class TestHeard:
    async def test_heard_and_silences_of_a_simple_call(self, world: Any) -> None:
        """A rung, answered caller hears the greeting, a 0.4 s silence, the closing, then hangs up after it."""
        sim, c = world
        call = await sim.place_call("13800138000", script=CallerScript(hang_up_after_prompt=("closing", 0.05)))
        cid = call.channel_id
        assert (await c.rq("POST", f"/channels/{cid}/ring"))[0] == 204
        assert (await c.rq("POST", f"/channels/{cid}/answer"))[0] == 204
        status, pb = await c.rq("POST", f"/channels/{cid}/play", media="sound:liyi/greeting")
        assert status == 201 and pb["state"] == "queued"
        await c.wait_for("PlaybackFinished", playback_id=pb["id"])
        await asyncio.sleep(0.4)
        await c.rq("POST", f"/channels/{cid}/play", media="sound:liyi/closing")
        await asyncio.wait_for(call.ended.wait(), 2)

        assert call.whats() == ["ringing", "answered", "prompt", "prompt", "hangup-by-caller"]
        assert [h.detail for h in call.heard if h.what == "prompt"] == ["sound:liyi/greeting", "sound:liyi/closing"]
        gaps = call.silences(0.2)
        assert len(gaps) == 1
        start, end = gaps[0]
        greeting_end = call.heard[2].at + 0.3
        assert abs(start - greeting_end) < 0.05 and 0.35 < end - start < 0.6
        assert call.silences(0.0)[-1][1] == pytest.approx(call.ended_at)  # the 0.05 s before the BYE
        await c.wait_for("StasisEnd", channel_id=cid)
        assert c.types(cid) == ["StasisStart", "ChannelStateChange", "ChannelHangupRequest", "StasisEnd"]

    async def test_music_and_agent_count_as_sound(self, world: Any) -> None:
        """Music on hold and being bridged with an agent are not silence; the agent leaving is."""
        sim, c = world
        sim.set_agent_script("agent1", AgentScript(answer_after=0.02, hang_up_after=0.3))
        call = await sim.place_call("13800138001")
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await c.rq("POST", f"/channels/{cid}/moh")
        _, leg = await c.rq("POST", "/channels", endpoint="PJSIP/agent1", app="liyi", appArgs=f"agent,{cid}")
        await c.wait_for("StasisStart", channel_id=leg["id"])
        await c.rq("POST", "/bridges/b1", type="mixing")
        await c.rq("DELETE", f"/channels/{cid}/moh")
        await c.rq("POST", "/bridges/b1/addChannel", channel=f"{cid},{leg['id']}")
        await c.wait_for("ChannelDestroyed", channel_id=leg["id"])
        caller_events = c.types(cid)
        await asyncio.sleep(0.25)
        assert c.types(cid) == caller_events  # Asterisk tells the app nothing when the agent leaves (trace 03)
        sim.caller_hangs_up(call)

        assert call.whats() == ["answered", "music-start", "music-stop", "connected", "agent-left", "hangup-by-caller"]
        gaps = call.silences(0.1)
        agent_left = call.heard[4].at
        assert len(gaps) == 1 and abs(gaps[0][0] - agent_left) < 0.01  # silence only after the agent hung up
        assert caller_events[-1] == "ChannelEnteredBridge"


class TestBridgeSound:
    async def test_holding_bridge_music_and_announcements_are_sound(self, world: Any) -> None:
        """In a holding bridge the announcement is a prompt and the bridge's music is music; only the gap
        between them is silence; a play under the music fails, and stopping absent music is 409 (trace 05)."""
        sim, c = world
        call = await sim.place_call("13800138010")
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await c.rq("POST", "/bridges/h", type="holding")
        assert (await c.rq("POST", "/bridges/h/addChannel", channel=cid, role="participant"))[0] == 204
        _, first = await c.rq("POST", "/bridges/h/play", media="sound:liyi/hold-notice")
        await c.wait_for("PlaybackFinished", playback_id=first["id"])
        await asyncio.sleep(0.3)
        assert (await c.rq("POST", "/bridges/h/moh", mohClass="default"))[0] == 204
        _, second = await c.rq("POST", "/bridges/h/play", media="sound:liyi/again")
        assert (await c.wait_for("PlaybackFinished", playback_id=second["id"]))["playback"]["state"] == "failed"
        await asyncio.sleep(0.3)
        assert (await c.rq("DELETE", "/bridges/h/moh"))[0] == 204
        assert await c.rq("DELETE", "/bridges/h/moh") == (409, {"message": "Bridge isn't playing music"})
        sim.caller_hangs_up(call)

        assert call.whats() == ["answered", "prompt", "music-start", "prompt-failed", "music-stop", "hangup-by-caller"]
        assert call.heard[1].detail == "sound:liyi/hold-notice"
        gaps = call.silences(0.2)
        music_start = call.heard[2].at
        assert len(gaps) == 1 and abs(gaps[0][1] - music_start) < 0.01 and gaps[0][1] - gaps[0][0] >= 0.28

    async def test_entering_a_bridge_mid_announcement(self, world: Any) -> None:
        """A caller added to a bridge whose announcer is playing hears that prompt until it ends."""
        sim, c = world
        call = await sim.place_call("13800138011")
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", "/bridges/m", type="mixing")
        _, pb = await c.rq("POST", "/bridges/m/play", media="sound:liyi/greeting")  # 0.3 s
        await c.rq("POST", "/bridges/m/addChannel", channel=call.channel_id)
        await c.wait_for("PlaybackFinished", playback_id=pb["id"])
        await asyncio.sleep(0.25)
        sim.caller_hangs_up(call)
        assert [(h.what, h.detail) for h in call.heard] == [
            ("answered", ""), ("prompt", "sound:liyi/greeting"), ("hangup-by-caller", "")]
        gaps = call.silences(0.2)
        assert len(gaps) == 1 and gaps[0][1] == pytest.approx(call.ended_at)  # only after the prompt

    async def test_holding_bridge_participants_hear_only_the_announcer(self, world: Any) -> None:
        """In a holding bridge a participant caller hears an agent only if the agent joined as announcer."""
        sim, c = world
        call = await sim.place_call("13800138012")
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        _, leg = await c.rq("POST", "/channels", endpoint="PJSIP/agent1", app="liyi", appArgs="agent")
        await c.wait_for("StasisStart", channel_id=leg["id"])
        await c.rq("POST", "/bridges/h", type="holding")
        await c.rq("POST", "/bridges/h/addChannel", channel=f"{call.channel_id},{leg['id']}")
        assert "connected" not in call.whats()
        await c.rq("POST", "/bridges/h/addChannel", channel=leg["id"], role="announcer")
        assert call.whats()[-1] == "connected"
        await c.rq("POST", "/bridges/h/addChannel", channel=leg["id"])  # roles are cleared on every addChannel
        assert call.whats()[-1] == "agent-left"
        sim.caller_hangs_up(call)


class TestAgentLegs:
    async def test_outcomes_and_device_states(self, world: Any) -> None:
        """Legs record answered/declined/no-answer/cancelled, and the AMI side sees RINGING, INUSE, NOT_INUSE."""
        sim, c = world
        sim.add_agent("agent2", script=AgentScript(answer_after=None, decline_after=0.05))
        sim.add_agent("agent3", script=AgentScript(answer_after=None))
        sim.add_agent("agent4", registered=False)
        assert (await c.rq("POST", "/channels", endpoint="PJSIP/agent4", app="liyi")) == (
            500, {"error": "Allocation failed"})
        assert (await c.rq("GET", "/endpoints/PJSIP/agent4"))[1]["state"] == "offline"
        await c.rq("POST", "/channels/l1", endpoint="PJSIP/agent1", app="liyi", appArgs="agent")
        await c.rq("POST", "/channels/l2", endpoint="PJSIP/agent2", app="liyi", appArgs="agent")
        await c.rq("POST", "/channels/l3", endpoint="PJSIP/agent3", app="liyi", appArgs="agent", timeout="1")
        await c.rq("POST", "/channels/l4", endpoint="PJSIP/agent3", app="liyi", appArgs="agent")
        await c.wait_for("ChannelStateChange", channel_id="l4", state="Ringing")
        assert (await c.rq("DELETE", "/channels/l4"))[0] == 204
        await c.wait_for("StasisStart", channel_id="l1")
        await c.rq("DELETE", "/channels/l1")
        await c.wait_for("ChannelDestroyed", channel_id="l3", timeout=2)

        assert {leg.channel_id: leg.outcome for leg in sim.agent_legs} == {
            "l1": "service-hung-up", "l2": "declined", "l3": "no-answer", "l4": "cancelled"}
        assert sim.legs_of("agent3")[0].ring_seconds == pytest.approx(1.0, abs=0.1)
        # by leg, not in order: under load l4's DELETE can come before agent2's 0.05 s decline
        assert {e["channel"]["id"]: e["cause"] for e in c.events if e["type"] == "ChannelDestroyed"} == {
            "l1": 16, "l2": 17, "l3": 19, "l4": 16}
        # a ringing leg the app DELETEs: hang-up request, Dial NOANSWER, destroyed (trace 15)
        assert c.types("l4") == ["Dial", "ChannelStateChange", "Dial", "ChannelHangupRequest", "Dial",
                                 "ChannelDestroyed"]
        states = [args for method, args in sim.ami_log if method == "set_device_state" and args[0] == "PJSIP/agent1"]
        assert [s for _, s in states] == ["NOT_INUSE", "RINGING", "INUSE", "NOT_INUSE"]
        sim.unregister_agent("agent1")
        assert sim.device_state("agent1") == "UNAVAILABLE"
        assert (await c.rq("GET", "/endpoints/PJSIP/agent1"))[1]["state"] == "offline"


class TestStasisEntry:
    async def test_call_refused_when_app_not_connected(self, world: Any) -> None:
        """With no app WebSocket, Stasis fails at once: no StasisStart, the service ends the call (trace 07 C)."""
        sim, c = world
        await c.disconnect()
        call = await sim.place_call("13800138002")
        assert call.ended.is_set() and call.refused and call.hung_up_by == "service"
        assert sim.channels == {}
        await c.connect()
        assert [e["type"] for e in c.events] == []

    async def test_stasis_delay_keeps_creationtime(self) -> None:
        """With stasis_delay, StasisStart comes later but the channel's creationtime is when it was created."""
        sim = AsteriskSimulator(stasis_delay=0.3)
        await sim.start()
        async with aiohttp.ClientSession() as session:
            c = AriTestClient(sim, session)
            await c.connect()
            before = time.time()
            call = await sim.place_call("13800138003")
            assert time.time() - before >= 0.3
            ev = await c.wait_for("StasisStart")
            assert ev["channel"]["creationtime"] <= ari_time(before + 0.05)
            assert ev["timestamp"] >= ari_time(before + 0.3)
            sim.caller_hangs_up(call)
            await c.disconnect()
        await sim.stop()

    async def test_app_stays_registered_while_disconnected(self, world: Any) -> None:
        """After its socket closes, GET /applications/liyi still lists the app's channel (trace 12)."""
        sim, c = world
        call = await sim.place_call("13800138004")
        await c.disconnect()
        status, app = await c.rq("GET", "/applications/liyi")
        assert status == 200 and app["channel_ids"] == [call.channel_id]
        assert (await c.rq("GET", "/applications/other"))[0] == 404
        await c.rq("POST", "/applications/liyi/subscription", eventSource=f"channel:{call.channel_id}")
        await c.connect()
        sim.caller_hangs_up(call)
        await c.wait_for("ChannelDestroyed", channel_id=call.channel_id)
        assert [e["type"] for e in c.events] == [
            "ChannelHangupRequest", "StasisEnd", "ChannelHangupRequest", "ChannelDestroyed"]

    async def test_app_forgotten_when_disconnected_with_nothing_subscribed(self, world: Any) -> None:
        """With its socket closed and no channel or bridge left, the app is unregistered (404) until it
        connects again, as Asterisk's cleanup of finished apps does."""
        _, c = world
        await c.disconnect()
        assert await c.rq("GET", "/applications/liyi") == (404, {"message": "Application not found"})
        assert await c.rq("GET", "/applications") == (200, [])
        await c.connect()
        assert (await c.rq("GET", "/applications/liyi"))[0] == 200


class TestHttp:
    async def test_auth_and_unknown_routes(self, world: Any) -> None:
        """Missing credentials → 401, api_key works, unknown path → 404, wrong method → 405, like res_ari.c."""
        sim, c = world
        url = sim.ari_url + "/ari"
        async with aiohttp.ClientSession() as raw:
            async with raw.get(url + "/channels") as resp:
                assert resp.status == 401 and await resp.json() == {"message": "Authentication required"}
            async with raw.get(url + "/channels", params={"api_key": "liyi:liyi-sim"}) as resp:
                assert resp.status == 200
            async with raw.get(url + "/events", params={"app": "liyi"}) as resp:
                assert resp.status == 401
        assert await c.rq("GET", "/channels/x/rtp_statistics") == (404, {"message": "Resource not found"})
        assert await c.rq("PUT", "/channels") == (405, {"message": "Invalid method"})
        assert ("GET", "/channels", {}) in sim.requests

    async def test_answer_waits_for_early_media(self, world: Any) -> None:
        """A play before the answer is early media; the answer's 204 comes only after it ends (trace 08)."""
        sim, c = world
        call = await sim.place_call("13800138005")
        await c.rq("POST", f"/channels/{call.channel_id}/play", media="sound:liyi/greeting")
        started = time.monotonic()
        assert (await c.rq("POST", f"/channels/{call.channel_id}/answer"))[0] == 204
        assert time.monotonic() - started >= 0.25
        assert c.types(call.channel_id)[-1] == "ChannelStateChange"
        assert call.whats() == ["early-media", "answered"]
        sim.caller_hangs_up(call)

    async def test_many_concurrent_calls(self, world: Any) -> None:
        """Two hundred concurrent answered calls with a prompt each finish promptly on one loop."""
        sim, c = world
        calls = [await sim.place_call(f"1380000{i:04d}", script=CallerScript(hang_up_after_prompt=("bye", 0.05)))
                 for i in range(200)]
        started = time.monotonic()
        for call in calls:
            await c.rq("POST", f"/channels/{call.channel_id}/answer")
            await c.rq("POST", f"/channels/{call.channel_id}/play", media="sound:liyi/bye")
        await asyncio.wait_for(asyncio.gather(*(call.ended.wait() for call in calls)), 10)
        assert time.monotonic() - started < 8
        assert all(call.hung_up_by == "caller" for call in calls)
        assert sim.channels == {}


class TestAbsorbedDtmf:
    async def test_an_agents_keys_reach_the_caller_unless_absorbed(self) -> None:
        """In a dtmf_events bridge an agent's key is heard by the caller, unless added with absorbDTMF."""
        import aiohttp

        from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript

        sim = AsteriskSimulator(prompt_seconds=0.05)
        await sim.start()
        sim.add_agent("agent1", script=AgentScript(answer_after=0.0))
        auth = {"Authorization": aiohttp.encode_basic_auth("liyi", "liyi-sim")}
        try:
            async with aiohttp.ClientSession(headers=auth) as http, http.ws_connect(
                    f"{sim.ari_url}/ari/events?app=liyi") as ws:
                call = await sim.place_call("13800138000", script=CallerScript(max_seconds=10))
                base = f"{sim.ari_url}/ari"
                await http.post(f"{base}/channels/{call.channel_id}/answer")
                await http.post(f"{base}/channels", params={
                    "endpoint": "PJSIP/agent1", "app": "liyi", "appArgs": "agent,x",
                    "channelId": "leg-1"})
                await asyncio.sleep(0.1)
                await http.post(f"{base}/bridges/b1", params={"type": "mixing,dtmf_events"})
                await http.post(f"{base}/bridges/b1/addChannel", params={"channel": call.channel_id})
                await http.post(f"{base}/bridges/b1/addChannel",
                                params={"channel": "leg-1", "absorbDTMF": "true"})
                sim.agent_sends_dtmf("leg-1", "5")
                await asyncio.sleep(0.05)
                assert "dtmf" not in call.whats()
                await http.post(f"{base}/bridges/b1/addChannel", params={"channel": "leg-1"})
                sim.agent_sends_dtmf("leg-1", "6")
                await asyncio.sleep(0.05)
                assert [h.detail for h in call.heard if h.what == "dtmf"] == ["6"]
                await ws.close()
        finally:
            await sim.stop()
