"""AriClient against a small fake Asterisk that records every request.

The fake answers like Asterisk 22 did in ``tests/traces/`` (status codes,
bodies and error shapes copied from traces 03, 08 and 12), and every request
the client makes is checked against the ARI spec (its digest,
``tests/spec/ari-digest.json``) — the client's spec-conformance test.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ari_handlers.ari_client import (
    DEFAULT_HEARTBEAT_SECONDS,
    AriClient,
    AriConnectionError,
    AriError,
)
from tests.ari_spec import load_spec

USER, PASSWORD, APP = "liyi", "s3cret", "liyi"

# Bodies as the real Asterisk 22.10.1 sent them (trace file and line noted).
CHANNEL = {  # 03-agent-hangs-up-first: POST /channels response
    "id": "1795348817.3",
    "name": "PJSIP/agent1-00000003",
    "state": "Down",
    "protocol_id": "ea192aba-f19d-4f35-ab81-7e603f8ab33b",
    "caller": {"name": "liyi", "number": "4000"},
    "connected": {"name": "liyi", "number": "4000"},
    "accountcode": "",
    "dialplan": {
        "context": "agents",
        "exten": "s",
        "priority": 1,
        "app_name": "AppDial2",
        "app_data": "(Outgoing Line)",
    },
    "creationtime": "2026-11-22T12:00:17.082+0000",
    "language": "en",
}
PLAYBACK = {  # 08-error-shapes: POST /channels/{id}/play response (201)
    "id": "07c3f554-5806-4b41-91e3-d6537cb06380",
    "media_uri": "sound:hello-world",
    "target_uri": "channel:1795348947.19",
    "language": "en",
    "state": "queued",
}
BRIDGE = {  # 08-error-shapes: POST /bridges response
    "id": "8c67065a-429a-4446-8d3e-953167a450b2",
    "technology": "simple_bridge",
    "bridge_type": "mixing",
    "bridge_class": "stasis",
    "creator": "Stasis",
    "name": "err-08-a",
    "channels": [],
    "creationtime": "2026-11-22T12:03:02.360+0000",
    "video_mode": "talker",
}
APPLICATION = {  # 12-app-disconnect-default-subscription: GET /applications/liyi
    "name": "liyi",
    "channel_ids": ["1795349019.32"],
    "bridge_ids": ["29833798-e2c2-47b1-b94d-2b606ae80e71"],
    "endpoint_ids": [],
    "device_names": [],
    "events_allowed": [],
    "events_disallowed": [],
}

LIVE_RECORDING = {  # no trace: shaped as stasis_app_recording_to_json renders a queued recording
    "name": "c0ffee-name",
    "format": "wav",
    "state": "queued",
    "target_uri": "channel:1795348947.19",
}
STORED_RECORDING = {"name": "c0ffee-name", "format": "wav"}

# (method, spec path) -> (status, body); 204 answers have no body.
ANSWERS: dict[tuple[str, str], tuple[int, Any]] = {
    ("POST", "/channels/{channelId}/ring"): (204, None),
    ("POST", "/channels/{channelId}/answer"): (204, None),
    ("POST", "/channels/{channelId}/play"): (201, PLAYBACK),
    ("DELETE", "/playbacks/{playbackId}"): (204, None),
    ("POST", "/channels/{channelId}/moh"): (204, None),
    ("DELETE", "/channels/{channelId}/moh"): (204, None),
    ("POST", "/channels"): (200, CHANNEL),
    ("DELETE", "/channels/{channelId}"): (204, None),
    ("POST", "/bridges/{bridgeId}"): (200, BRIDGE),
    ("POST", "/bridges/{bridgeId}/addChannel"): (204, None),
    ("POST", "/bridges/{bridgeId}/removeChannel"): (204, None),
    ("DELETE", "/bridges/{bridgeId}"): (204, None),
    ("POST", "/channels/{channelId}/variable"): (204, None),
    ("GET", "/channels/{channelId}/variable"): (200, {"value": "agent1"}),
    ("GET", "/channels/{channelId}"): (200, CHANNEL),
    ("GET", "/channels"): (200, [CHANNEL]),
    ("GET", "/applications/{applicationName}"): (200, APPLICATION),
    ("POST", "/channels/{channelId}/record"): (201, LIVE_RECORDING),
    ("POST", "/recordings/live/{recordingName}/stop"): (204, None),
    ("GET", "/recordings/stored/{recordingName}"): (200, STORED_RECORDING),
    ("DELETE", "/recordings/stored/{recordingName}"): (204, None),
}


@dataclass
class Recorded:
    method: str
    path: str  # under /ari
    params: dict[str, str]


@dataclass
class FakeAsterisk:
    """An aiohttp server that answers like Asterisk and remembers what it was asked."""

    requests: list[Recorded] = field(default_factory=list)
    # (method, concrete path) -> (status, body), checked before ANSWERS
    overrides: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    # one script per WebSocket connection: frames to send, then "close" or "hold", or
    # "silent": hold but answer no ping, as a half-open socket (no autoping)
    ws_scripts: list[list[str]] = field(default_factory=list)
    ws_connections: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    def authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return (
            request.headers.get("Authorization") == expected
            or request.query.get("api_key") == f"{USER}:{PASSWORD}"
        )

    async def rest(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/ari")
        self.requests.append(Recorded(request.method, path, dict(request.query)))
        if not self.authorized(request):
            # 08-error-shapes line 21
            return web.json_response({"message": "Authentication required"}, status=401)
        answer = self.overrides.get((request.method, path))
        if answer is None:
            op = load_spec().match(request.method, path)
            answer = ANSWERS.get((request.method, op.path)) if op else None
        if answer is None:
            return web.json_response({"message": "Not found"}, status=404)
        status, body = answer
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        script = self.ws_scripts.pop(0) if self.ws_scripts else ["hold"]
        ws = web.WebSocketResponse(autoping="silent" not in script)
        await ws.prepare(request)
        self.ws_connections.append(dict(request.query))
        for frame in script:
            if frame == "close":
                await ws.close()
                return ws
            if frame in ("hold", "silent"):
                break
            await ws.send_str(frame)
        async for _ in ws:  # hold until the client closes
            pass
        return ws

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/ari/events", self.events)
        app.router.add_route("*", "/ari/{tail:.*}", self.rest)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAsterisk]:
    server = FakeAsterisk()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeAsterisk) -> AsyncIterator[AriClient]:
    ari = AriClient(fake.url, USER, PASSWORD, APP, request_timeout=2.0)
    yield ari
    await ari.close()


# Every public coroutine of AriClient except the plumbing, with a typical call.
CALLS: dict[str, Callable[[AriClient], Awaitable[Any]]] = {
    "ring": lambda c: c.ring("1795348947.19"),
    "answer": lambda c: c.answer("1795348947.19"),
    "play": lambda c: c.play("1795348947.19", ["sound:liyi/greeting", "sound:beep"], "pb-1"),
    "stop_playback": lambda c: c.stop_playback("pb-1"),
    "start_moh": lambda c: c.start_moh("1795348947.19"),
    "stop_moh": lambda c: c.stop_moh("1795348947.19"),
    "originate": lambda c: c.originate(
        endpoint="PJSIP/agent1",
        app=APP,
        app_args="agent,1795348947.19",
        caller_id="liyi <4000>",
        channel_id="call-1-agent1",
        timeout=20,
    ),
    "hangup": lambda c: c.hangup("call-1-agent1"),
    "create_bridge": lambda c: c.create_bridge("call-1", name="call-1"),
    "add_channel": lambda c: c.add_channel("call-1", ["1795348947.19", "call-1-agent1"]),
    "remove_channel": lambda c: c.remove_channel("call-1", "call-1-agent1"),
    "destroy_bridge": lambda c: c.destroy_bridge("call-1"),
    "get_bridge": lambda c: c.get_bridge("call-1"),
    "set_channel_var": lambda c: c.set_channel_var("1795348947.19", "LIYI_STATE", '{"s":1}'),
    "get_channel_var": lambda c: c.get_channel_var("1795348947.19", "LIYI_STATE"),
    "get_channel": lambda c: c.get_channel("1795348947.19"),
    "list_channels": lambda c: c.list_channels(),
    "get_application": lambda c: c.get_application(),
    "record": lambda c: c.record("1795348947.19", "c0ffee-name", max_seconds=4.5),
    "stop_recording": lambda c: c.stop_recording("c0ffee-name"),
    "get_stored_recording": lambda c: c.get_stored_recording("c0ffee-name"),
    "delete_stored_recording": lambda c: c.delete_stored_recording("c0ffee-name"),
}


class TestSpecConformance:
    def test_every_rest_method_is_exercised(self) -> None:
        """Every public REST coroutine of AriClient has an entry in CALLS, so none escapes the spec check."""
        public = {
            name
            for name, fn in inspect.getmembers(AriClient, inspect.iscoroutinefunction)
            if not name.startswith("_")
        }
        assert public - {"close", "events"} == set(CALLS)

    async def test_every_request_is_in_the_spec(
        self, fake: FakeAsterisk, client: AriClient
    ) -> None:
        """Each method sends exactly one request whose path and parameters the ARI spec documents."""
        spec = load_spec()
        for name, call in CALLS.items():
            before = len(fake.requests)
            await call(client)
            sent = fake.requests[before:]
            assert len(sent) == 1, name
            req = sent[0]
            assert spec.check_request(req.method, req.path, req.params) == [], (name, req)

    def test_checker_rejects_what_the_spec_lacks(self) -> None:
        """The spec check is not vacuous: an undocumented parameter or path is reported."""
        spec = load_spec()
        assert spec.check_request("POST", "/channels/x/answer", {"force": "1"})
        assert spec.check_request("POST", "/channels/x/transfer", {})
        assert spec.check_request("DELETE", "/channels/x", {"reason": "no-such-reason"})

    async def test_requests_carry_what_asterisk_needs(
        self, fake: FakeAsterisk, client: AriClient
    ) -> None:
        """Multi-valued params are comma-joined and ids land in the right path segments."""
        await CALLS["play"](client)
        await CALLS["originate"](client)
        await CALLS["add_channel"](client)
        await CALLS["create_bridge"](client)
        await CALLS["hangup"](client)
        play, orig, add, bridge, hangup = fake.requests
        assert (play.method, play.path) == ("POST", "/channels/1795348947.19/play")
        assert play.params == {"media": "sound:liyi/greeting,sound:beep", "playbackId": "pb-1"}
        assert (orig.method, orig.path) == ("POST", "/channels")
        assert orig.params == {
            "endpoint": "PJSIP/agent1",
            "app": APP,
            "appArgs": "agent,1795348947.19",
            "callerId": "liyi <4000>",
            "channelId": "call-1-agent1",
            "timeout": "20",
        }
        assert add.params == {"channel": "1795348947.19,call-1-agent1"}
        assert (bridge.path, bridge.params) == (
            "/bridges/call-1",
            {"type": "mixing,dtmf_events", "name": "call-1"},
        )
        assert (hangup.method, hangup.path, hangup.params) == (
            "DELETE",
            "/channels/call-1-agent1",
            {"reason": "normal"},
        )


class TestRecord:
    async def test_record_sends_the_spec_parameters(
        self, fake: FakeAsterisk, client: AriClient
    ) -> None:
        """record() sends name, format, a whole-second limit rounded up, beep, '#' and ifExists, and returns the LiveRecording."""
        body = await client.record("1795348947.19", "c0ffee-name", max_seconds=4.5)
        await client.record("1795348947.19", "c0ffee-name", max_seconds=6, beep=False,
                            terminate_on="none", fmt="gsm", if_exists="fail", max_silence_seconds=2)
        first, second = fake.requests
        assert body == LIVE_RECORDING
        assert (first.method, first.path) == ("POST", "/channels/1795348947.19/record")
        assert first.params == {
            "name": "c0ffee-name", "format": "wav", "maxDurationSeconds": "5", "beep": "true",
            "terminateOn": "#", "ifExists": "overwrite",
        }
        assert second.params == {
            "name": "c0ffee-name", "format": "gsm", "maxDurationSeconds": "6", "beep": "false",
            "terminateOn": "none", "ifExists": "fail", "maxSilenceSeconds": "2",
        }
        assert load_spec().check_request(second.method, second.path, second.params) == []

    async def test_record_against_the_simulator(self) -> None:
        """Against the simulator, record() gets 201 queued, the caller's '#' ends it, and the name is stored."""
        from ari_handlers.simulator import AsteriskSimulator, CallerScript

        sim = AsteriskSimulator(prompt_seconds=0.05)
        await sim.start()
        ari = AriClient(sim.ari_url, sim.ari_user, sim.ari_password, sim.app)
        seen: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def on_event(event: dict[str, Any]) -> None:
            seen.append(event)

        pump = asyncio.create_task(ari.events(on_event, stop=stop))
        try:
            while not sim.app_connected:
                await asyncio.sleep(0.005)
            call = await sim.place_call("13800138000", script=CallerScript(says_name_seconds=0.2))
            await ari.answer(call.channel_id)
            live = await ari.record(call.channel_id, "abc-name", max_seconds=5)
            assert (live["name"], live["state"]) == ("abc-name", "queued")
            for _ in range(200):
                if any(ev["type"] == "RecordingFinished" for ev in seen):
                    break
                await asyncio.sleep(0.01)
            finished = next(ev for ev in seen if ev["type"] == "RecordingFinished")
            assert finished["recording"]["state"] == "done"
            assert await ari.get_stored_recording("abc-name") == {"name": "abc-name", "format": "wav"}
            await ari.delete_stored_recording("abc-name")
            assert await ari.get_stored_recording("abc-name") is None
        finally:
            stop.set()
            await pump
            await ari.close()
            await sim.stop()


class TestResponses:
    async def test_bodies_are_returned_parsed(self, client: AriClient) -> None:
        """JSON answers come back as dicts/lists and 204 answers as None."""
        assert await CALLS["play"](client) == PLAYBACK
        assert await CALLS["originate"](client) == CHANNEL
        assert await CALLS["create_bridge"](client) == BRIDGE
        assert await CALLS["get_channel_var"](client) == "agent1"
        assert await CALLS["get_channel"](client) == CHANNEL
        assert await CALLS["list_channels"](client) == [CHANNEL]
        assert await CALLS["get_application"](client) == APPLICATION
        assert await CALLS["answer"](client) is None


class TestErrors:
    async def test_message_shape(self, fake: FakeAsterisk, client: AriClient) -> None:
        """A 404 {"message": ...} (trace 02/08: answer after the caller left) raises AriError with both parts."""
        fake.overrides[("POST", "/channels/gone/answer")] = (404, {"message": "Channel not found"})
        with pytest.raises(AriError) as info:
            await client.answer("gone")
        assert (info.value.status, info.value.message) == (404, "Channel not found")

    async def test_error_shape_of_originate(self, fake: FakeAsterisk, client: AriClient) -> None:
        """Originate's 500 {"error": "Allocation failed"} (trace 04/08) is read from the "error" key."""
        fake.overrides[("POST", "/channels")] = (500, {"error": "Allocation failed"})
        with pytest.raises(AriError) as info:
            await CALLS["originate"](client)
        assert (info.value.status, info.value.message) == (500, "Allocation failed")

    async def test_bad_credentials(self, fake: FakeAsterisk) -> None:
        """Wrong credentials give AriError 401 "Authentication required" (trace 08)."""
        ari = AriClient(fake.url, USER, "wrong", APP)
        try:
            with pytest.raises(AriError) as info:
                await ari.list_channels()
        finally:
            await ari.close()
        assert (info.value.status, info.value.message) == (401, "Authentication required")

    async def test_not_found_reads_return_none(self, fake: FakeAsterisk, client: AriClient) -> None:
        """get_channel, get_application and an unset variable answer None instead of raising."""
        fake.overrides[("GET", "/channels/gone")] = (404, {"message": "Channel not found"})
        fake.overrides[("GET", f"/applications/{APP}")] = (
            404,
            {"message": "Application not found"},
        )
        fake.overrides[("GET", "/channels/c1/variable")] = (
            404,
            {"message": "Provided variable was not found"},
        )
        assert await client.get_channel("gone") is None
        assert await client.get_application() is None
        assert await client.get_channel_var("c1", "LIYI_STATE") is None

    async def test_variable_of_vanished_channel_raises(
        self, fake: FakeAsterisk, client: AriClient
    ) -> None:
        """A missing channel is not mistaken for a missing variable."""
        fake.overrides[("GET", "/channels/gone/variable")] = (404, {"message": "Channel not found"})
        with pytest.raises(AriError):
            await client.get_channel_var("gone", "LIYI_STATE")

    async def test_unreachable_asterisk(self) -> None:
        """A refused connection raises AriConnectionError (an AriError with status 0)."""
        ari = AriClient(
            f"http://127.0.0.1:{_free_port()}", USER, PASSWORD, APP, request_timeout=1.0
        )
        try:
            with pytest.raises(AriConnectionError) as info:
                await ari.answer("c1")
        finally:
            await ari.close()
        assert info.value.status == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _event(n: int) -> str:
    return json.dumps(
        {
            "type": "ChannelVarset",
            "variable": "N",
            "value": str(n),
            "application": APP,
            "timestamp": "2026-11-22T12:00:00.000+0000",
        }
    )


class TestEvents:
    async def test_order_skip_reconnect_stop(self, fake: FakeAsterisk, client: AriClient) -> None:
        """Events arrive in order, a malformed frame is skipped, a dropped socket is reopened with on_connect again, and stop ends the loop."""
        fake.ws_scripts = [
            [_event(1), "{not json", "[1, 2]", _event(2), "close"],
            [_event(3), "hold"],
        ]
        seen: list[str] = []
        stop = asyncio.Event()

        async def on_event(event: dict[str, Any]) -> None:
            seen.append(event["value"])
            if event["value"] == "3":
                stop.set()

        async def on_connect() -> None:
            seen.append("connect")

        async def on_disconnect() -> None:
            seen.append("disconnect")

        await asyncio.wait_for(
            client.events(on_event, on_connect=on_connect, on_disconnect=on_disconnect, stop=stop),
            timeout=5,
        )
        assert seen == ["connect", "1", "2", "disconnect", "connect", "3", "disconnect"]
        assert fake.ws_connections == [{"app": APP}, {"app": APP}]  # default subscription

    async def test_handler_error_does_not_kill_the_loop(
        self, fake: FakeAsterisk, client: AriClient
    ) -> None:
        """A raising on_connect or on_event is logged and the next event is still delivered."""
        fake.ws_scripts = [[_event(1), _event(2), "hold"]]
        seen: list[str] = []
        stop = asyncio.Event()

        async def on_event(event: dict[str, Any]) -> None:
            seen.append(event["value"])
            if event["value"] == "1":
                raise RuntimeError("bug in a handler")
            stop.set()

        async def on_connect() -> None:
            seen.append("connect")
            raise RuntimeError("reconciliation failed")

        with capture_logs() as logs:
            await asyncio.wait_for(
                client.events(on_event, on_connect=on_connect, stop=stop), timeout=5
            )
        assert seen == ["connect", "1", "2"]
        failures = [e["event"] for e in logs if e["log_level"] == "error"]
        assert failures == ["ari.on_connect_failed", "ari.events_handler_failed"]

    async def test_waits_for_asterisk_to_come_up(self) -> None:
        """When Asterisk is down the loop keeps retrying and connects once it is up."""
        port = _free_port()
        ari = AriClient(f"http://127.0.0.1:{port}", USER, PASSWORD, APP)
        stop = asyncio.Event()
        connected = asyncio.Event()

        async def on_connect() -> None:
            connected.set()

        async def on_event(event: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(ari.events(on_event, on_connect=on_connect, stop=stop))
        server = FakeAsterisk()
        try:
            await asyncio.sleep(0.5)  # a couple of refused attempts
            assert not connected.is_set()
            await server.start(port)
            await asyncio.wait_for(connected.wait(), timeout=5)
            stop.set()
            await asyncio.wait_for(task, timeout=5)
        finally:
            task.cancel()
            await server.stop()
            await ari.close()

    async def test_stop_while_disconnected(self) -> None:
        """Setting stop during the backoff wait ends the loop at once."""
        ari = AriClient(f"http://127.0.0.1:{_free_port()}", USER, PASSWORD, APP)
        stop = asyncio.Event()

        async def on_event(event: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(ari.events(on_event, stop=stop))
        await asyncio.sleep(0.3)
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=1)
        finally:
            await ari.close()

    async def test_api_key_variant(self, fake: FakeAsterisk) -> None:
        """With api_key_in_url the socket authenticates by ?api_key= and still opens."""
        ari = AriClient(fake.url, USER, PASSWORD, APP, api_key_in_url=True)
        stop = asyncio.Event()

        async def on_connect() -> None:
            stop.set()

        async def on_event(event: dict[str, Any]) -> None:
            pass

        try:
            await asyncio.wait_for(ari.events(on_event, on_connect=on_connect, stop=stop), 5)
        finally:
            await ari.close()
        assert fake.ws_connections == [{"app": APP, "api_key": f"{USER}:{PASSWORD}"}]


class TestLiveness:
    """Issue 9: a half-open event socket is noticed and reopened."""

    def test_default_heartbeat_notices_a_silent_asterisk_within_15_seconds(self) -> None:
        """With the default heartbeat a silent Asterisk is noticed within 15 s (ping, half for
        the pong, and up to 1 s of aiohttp's timer rounding on each)."""
        assert 1.5 * DEFAULT_HEARTBEAT_SECONDS + 2 <= 15

    async def test_socket_that_stops_answering_pings_is_reopened(self, fake: FakeAsterisk) -> None:
        """When Asterisk stops answering on an open event socket, the client notices within
        seconds, logs why, reconnects and runs on_connect again (to reconcile)."""
        fake.ws_scripts = [[_event(1), "silent"], [_event(2), "hold"]]
        ari = AriClient(fake.url, USER, PASSWORD, APP, heartbeat_seconds=0.5)
        seen: list[str] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        times: dict[str, float] = {}

        async def on_event(event: dict[str, Any]) -> None:
            seen.append(event["value"])
            times.setdefault(event["value"], loop.time())
            if event["value"] == "2":
                stop.set()

        async def on_connect() -> None:
            seen.append("connect")

        async def on_disconnect() -> None:
            seen.append("disconnect")
            times.setdefault("disconnect", loop.time())

        try:
            with capture_logs() as logs:
                await asyncio.wait_for(
                    ari.events(on_event, on_connect=on_connect, on_disconnect=on_disconnect,
                               stop=stop),
                    timeout=10,
                )
        finally:
            await ari.close()
        assert seen == ["connect", "1", "disconnect", "connect", "2", "disconnect"]
        assert times["disconnect"] - times["1"] < 5.0  # 0.5 s + 0.25 s expected
        lost = [e for e in logs if e["event"] == "ari.events_disconnected"]
        assert lost[0]["log_level"] == "warning" and "PONG" in lost[0]["reason"]
        assert lost[-1]["reason"] == "stopping"

    async def test_handshake_that_never_answers_is_retried(self) -> None:
        """A peer that accepts the TCP connection but never answers the WebSocket upgrade is
        given up on after connect_timeout and tried again, not waited on for minutes."""
        accepted: list[asyncio.StreamWriter] = []

        async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ari = AriClient(f"http://127.0.0.1:{port}", USER, PASSWORD, APP, connect_timeout=0.5)
        stop = asyncio.Event()

        async def on_event(event: dict[str, Any]) -> None:
            pass

        task = asyncio.create_task(ari.events(on_event, stop=stop))
        try:
            for _ in range(100):
                if len(accepted) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(accepted) >= 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await ari.close()
            for writer in accepted:
                writer.close()
            server.close()
            await server.wait_closed()
