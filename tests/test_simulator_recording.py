"""Recording a caller's name (R3) on the simulator: ``POST /channels/{id}/record`` and stored recordings.

No real-Asterisk trace covers recording, so these tests pin the behaviour
the simulator documents (``AsteriskSimulator.record``): the ARI spec's
routes, codes and models, and res_stasis_recording's order of events. Every
event and body is checked against the spec.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript
from tests.ari_spec import load_spec
from tests.test_simulator_traces import AriTestClient


@pytest.fixture
async def world() -> Any:
    sim = AsteriskSimulator(prompt_seconds=0.05)
    emitted: list[dict[str, Any]] = []
    sim.on_event(emitted.append)
    sim.add_agent("agent1", script=AgentScript(answer_after=0.01))
    await sim.start()
    async with aiohttp.ClientSession() as session:
        client = AriTestClient(sim, session)
        await client.connect()
        yield sim, client, emitted
        await client.disconnect()
    await sim.stop()


def _rec_events(c: AriTestClient, name: str) -> list[dict[str, Any]]:
    return [ev for ev in c.events if ev.get("recording", {}).get("name") == name]


async def _recording_ended(c: AriTestClient, name: str, timeout: float = 3.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for ev in _rec_events(c, name):
            if ev["type"] in ("RecordingFinished", "RecordingFailed"):
                return ev
        await asyncio.sleep(0.005)
    raise AssertionError(f"recording {name} did not end: {[e['type'] for e in c.events]}")


def _no_spec_problems(emitted: list[dict[str, Any]], *bodies: tuple[str, Any]) -> None:
    spec = load_spec()
    problems = [p for ev in emitted for p in spec.check_event(ev)]
    problems += [p for model, body in bodies for p in spec.check_model(model, body)]
    assert problems == []


class TestNameRecording:
    async def test_prompt_beep_name_hash_then_stored_and_played_to_the_agent(self, world: Any) -> None:
        """A record sent during the prompt waits for it, beeps, ends on the caller's '#', and the name plays to the agent."""
        sim, c, emitted = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.3))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        _, pb = await c.rq("POST", f"/channels/{cid}/play", media="sound:liyi/say-your-name")
        status, live = await c.rq("POST", f"/channels/{cid}/record", name="c1-name", format="wav",
                                  maxDurationSeconds="5", beep="true", terminateOn="#", ifExists="overwrite")
        assert status == 201 and live == {"name": "c1-name", "format": "wav", "state": "queued",
                                          "target_uri": f"channel:{cid}"}
        done = await _recording_ended(c, "c1-name")
        assert done["type"] == "RecordingFinished"
        assert done["recording"]["state"] == "done" and done["recording"]["duration"] == 0  # 0.3 s, whole seconds

        kinds = [ev["type"] for ev in c.events if ev["type"] != "ChannelStateChange"]
        assert kinds == ["StasisStart", "PlaybackStarted", "PlaybackFinished", "RecordingStarted",
                         "ChannelDtmfReceived", "RecordingFinished"]
        assert c.events[-2]["digit"] == "#"
        assert call.whats() == ["answered", "prompt", "beep", "recording-started", "recording-stopped"]
        assert not call.silences(0.1)  # speaking into the recording is not a silence
        assert (await c.rq("GET", "/recordings/live/c1-name"))[0] == 404
        status, stored = await c.rq("GET", "/recordings/stored")
        assert status == 200 and stored == [{"name": "c1-name", "format": "wav"}]
        assert 0.25 < sim.stored_recordings["c1-name"].seconds < 0.5

        _, leg = await c.rq("POST", "/channels", endpoint="PJSIP/agent1", app="liyi", appArgs=f"agent,{cid}",
                            channelId="c1-a1")
        await c.wait_for("StasisStart", channel_id="c1-a1")
        _, whisper = await c.rq("POST", "/channels/c1-a1/play", media="recording:c1-name")
        finished = await c.wait_for("PlaybackFinished", playback_id=whisper["id"])
        assert finished["playback"]["state"] == "done"
        assert [(h.what, h.detail) for h in sim.legs_of("agent1")[0].heard] == [("prompt", "recording:c1-name")]
        _no_spec_problems(emitted, ("LiveRecording", live), ("List[StoredRecording]", stored),
                          ("Channel", leg), ("Playback", pb))

    async def test_a_stored_name_plays_as_long_as_it_was_said(self, world: Any) -> None:
        """Played to another caller, ``recording:<name>`` is a prompt lasting the captured time, not prompt_seconds."""
        sim, c, _ = world
        speaker = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.4))
        await c.rq("POST", f"/channels/{speaker.channel_id}/record", name="n", format="wav", terminateOn="#")
        await _recording_ended(c, "n")
        listener = await sim.place_call("13800138001")
        await c.rq("POST", f"/channels/{listener.channel_id}/answer")
        _, pb = await c.rq("POST", f"/channels/{listener.channel_id}/play", media="recording:n")
        started = asyncio.get_running_loop().time()
        await c.wait_for("PlaybackFinished", playback_id=pb["id"])
        assert asyncio.get_running_loop().time() - started == pytest.approx(0.4, abs=0.1)
        assert [(h.what, h.detail) for h in listener.heard][-1] == ("prompt", "recording:n")

    async def test_unknown_recording_media_fails(self, world: Any) -> None:
        """Playing a recording that was never stored starts and fails at once, like a missing sound."""
        sim, c, _ = world
        call = await sim.place_call("13800138000")
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        _, pb = await c.rq("POST", f"/channels/{call.channel_id}/play", media="recording:nobody-name")
        finished = await c.wait_for("PlaybackFinished", playback_id=pb["id"])
        assert finished["playback"]["state"] == "failed"
        assert call.whats()[-1] == "prompt-failed"

    async def test_unanswered_channel_is_answered_first(self, world: Any) -> None:
        """Recording a ringing channel answers it (ChannelStateChange Up) before RecordingStarted."""
        sim, c, _ = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.05))
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="r", format="wav", terminateOn="#")
        await _recording_ended(c, "r")
        kinds = c.types(call.channel_id) + [ev["type"] for ev in _rec_events(c, "r")]
        assert kinds[:2] == ["StasisStart", "ChannelStateChange"]
        assert [ev["type"] for ev in c.events][1:3] == ["ChannelStateChange", "RecordingStarted"]
        assert call.answered_at is not None


class TestHowRecordingsEnd:
    async def test_silent_caller_is_cut_off_by_max_duration(self, world: Any) -> None:
        """A caller who says nothing and presses nothing is recorded until maxDurationSeconds."""
        sim, c, emitted = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=None))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="quiet", format="wav",
                   maxDurationSeconds="1", terminateOn="#")
        done = await _recording_ended(c, "quiet")
        assert done["recording"] == {"name": "quiet", "format": "wav", "state": "done",
                                     "target_uri": f"channel:{call.channel_id}", "duration": 1}
        assert not call.pressed
        _no_spec_problems(emitted)

    async def test_silence_detection_ends_and_trims(self, world: Any) -> None:
        """With maxSilenceSeconds, a silent caller's recording ends after that silence, trimmed to nothing."""
        sim, c, emitted = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=None))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="hush", format="wav",
                   maxDurationSeconds="10", maxSilenceSeconds="1")
        done = await _recording_ended(c, "hush", timeout=2.0)
        assert (done["recording"]["duration"], done["recording"]["talking_duration"],
                done["recording"]["silence_duration"]) == (0, 0, 0)
        _no_spec_problems(emitted)

    async def test_terminate_on_none_ignores_the_hash(self, world: Any) -> None:
        """With terminateOn=none the caller's '#' is only a ChannelDtmfReceived; stop ends the recording."""
        sim, c, _ = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.05))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="n", format="wav", terminateOn="none")
        await c.wait_for("ChannelDtmfReceived", digit="#")
        status, live = await c.rq("GET", "/recordings/live/n")
        assert status == 200 and live["state"] == "recording"
        assert (await c.rq("POST", "/recordings/live/n/stop"))[0] == 204
        assert (await _recording_ended(c, "n"))["recording"]["state"] == "done"
        assert "n" in sim.stored_recordings

    async def test_caller_hangs_up_while_recording(self, world: Any) -> None:
        """A hang-up ends the recording 'done' with what was captured, between the hangup request and StasisEnd."""
        sim, c, emitted = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=None))
        cid = call.channel_id
        await c.rq("POST", f"/channels/{cid}/answer")
        await c.rq("POST", f"/channels/{cid}/record", name="gone", format="wav", maxDurationSeconds="10")
        await asyncio.sleep(0.2)
        sim.caller_hangs_up(call)
        done = await _recording_ended(c, "gone")
        assert done["recording"]["state"] == "done" and done["recording"]["duration"] == 0
        kinds = [ev["type"] for ev in c.events]
        assert kinds[-3:] == ["ChannelHangupRequest", "RecordingFinished", "StasisEnd"]
        assert 0.1 < sim.stored_recordings["gone"].seconds < 0.4
        assert call.whats()[-1] == "hangup-by-caller"  # nothing noted after the caller's own hangup
        _no_spec_problems(emitted)

    async def test_cancel_keeps_nothing(self, world: Any) -> None:
        """DELETE /recordings/live/{name} ends it with RecordingFinished 'canceled' and stores no file."""
        sim, c, emitted = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=None))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="x", format="wav")
        assert (await c.rq("DELETE", "/recordings/live/x"))[0] == 204
        done = await _recording_ended(c, "x")
        assert (done["type"], done["recording"]["state"]) == ("RecordingFinished", "canceled")
        assert (await c.rq("GET", "/recordings/stored/x"))[0] == 404
        _no_spec_problems(emitted)

    async def test_failure_hook_gives_recording_failed(self, world: Any) -> None:
        """With recording_failure set, a recording fails at once with that cause and no RecordingStarted."""
        sim, c, emitted = world
        sim.recording_failure = "Failed to answer channel"
        call = await sim.place_call("13800138000")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="f", format="wav")
        done = await _recording_ended(c, "f")
        assert done["type"] == "RecordingFailed"
        assert (done["recording"]["state"], done["recording"]["cause"]) == ("failed", "Failed to answer channel")
        assert [ev["type"] for ev in _rec_events(c, "f")] == ["RecordingFailed"]
        _no_spec_problems(emitted)

    async def test_play_during_recording_waits(self, world: Any) -> None:
        """A play sent while recording starts only after RecordingFinished (one command queue per channel)."""
        sim, c, _ = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.2))
        await c.rq("POST", f"/channels/{call.channel_id}/answer")
        await c.rq("POST", f"/channels/{call.channel_id}/record", name="q", format="wav", terminateOn="#")
        _, pb = await c.rq("POST", f"/channels/{call.channel_id}/play", media="sound:liyi/thanks")
        await c.wait_for("PlaybackFinished", playback_id=pb["id"])
        kinds = [ev["type"] for ev in c.events if ev["type"].startswith(("Recording", "Playback"))]
        assert kinds == ["RecordingStarted", "RecordingFinished", "PlaybackStarted", "PlaybackFinished"]


class TestRecordErrors:
    async def test_error_codes(self, world: Any) -> None:
        """404, 409, 400 and 422 as the spec lists them for record, and addChannel refused while recording."""
        sim, c, _ = world
        call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=None))
        cid = call.channel_id
        echo = await sim.place_call("13800138001", extension="3001")  # never in Stasis
        ok = {"name": "e", "format": "wav"}
        assert await c.rq("POST", "/channels/nope/record", **ok) == (404, {"message": "Channel not found"})
        assert (await c.rq("POST", f"/channels/{echo.channel_id}/record", **ok))[0] == 409
        assert (await c.rq("POST", f"/channels/{cid}/record", name="e", format="mp9"))[0] == 422
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok, terminateOn="0"))[0] == 400
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok, ifExists="keep"))[0] == 400
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok, maxDurationSeconds="-1"))[0] == 400
        assert (await c.rq("POST", f"/channels/{cid}/record", name="../etc/x", format="wav"))[0] == 400
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok))[0] == 201
        status, body = await c.rq("POST", f"/channels/{cid}/record", **ok, ifExists="overwrite")
        assert (status, body) == (409, {"message": "Recording 'e' already exists and can not be overwritten"})
        await c.rq("POST", "/bridges/b1", type="mixing")
        assert await c.rq("POST", "/bridges/b1/addChannel", channel=cid) == (
            409, {"message": "Channel currently recording"})
        await c.rq("POST", "/recordings/live/e/stop")
        await _recording_ended(c, "e")
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok))[0] == 409  # stored, ifExists=fail
        assert (await c.rq("POST", f"/channels/{cid}/record", **ok, ifExists="append"))[0] == 201
        await c.rq("POST", "/recordings/live/e/stop")
        assert (await c.rq("POST", "/bridges/b1/addChannel", channel=cid))[0] == 204
        assert (await c.rq("POST", f"/channels/{cid}/record", name="f", format="wav"))[0] == 409  # bridged
        assert (await c.rq("GET", "/recordings/live/none"))[0] == 404
        assert (await c.rq("DELETE", "/recordings/stored/none"))[0] == 404
        assert (await c.rq("DELETE", "/recordings/stored/e"))[0] == 204
        assert (await c.rq("GET", "/recordings/stored"))[1] == []
