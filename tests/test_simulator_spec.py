"""The simulator serves only what the ARI spec of Asterisk 22 describes.

Routes and the parameters handlers read are checked against the spec's
operations; every event the simulator sends during a set of scripted calls,
and the bodies it answers with, are checked against the spec's models.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript
from ari_handlers.simulator.ari_server import ROUTES
from tests.ari_spec import load_spec
from tests.test_simulator_traces import AriTestClient


def _sim_routes() -> list[tuple[str, str]]:
    sim = AsteriskSimulator()
    out = []
    for resource in sim.server.app.router.resources():
        info = resource.get_info()
        path = str(info.get("formatter") or info.get("path"))
        for r in resource:
            out.append((r.method, path))
    return out


class TestRoutes:
    def test_every_route_is_a_spec_operation(self) -> None:
        """Every method+path on the simulator's router is an ARI operation with exactly that path."""
        spec = load_spec()
        routes = _sim_routes()
        assert len(routes) == len(ROUTES)
        for method, path in routes:
            assert path.startswith("/ari/")
            op = spec.match(method, path[len("/ari"):])
            assert op is not None, f"{method} {path} is not in the ARI spec"
            assert op.path == path[len("/ari"):], f"{method} {path} matches {op.path}"

    def test_every_parameter_read_is_declared_by_the_spec(self) -> None:
        """Each query/body parameter a handler may read exists (and is not a path parameter) for its operation."""
        spec = load_spec()
        for r in ROUTES:
            op = spec.match(r.method, r.path)
            assert op is not None
            for name in r.params:
                assert name in op.params, f"{op.nickname}: {name!r} is not a parameter"
                assert op.params[name]["paramType"] in ("query", "body"), f"{op.nickname}: {name!r}"

    def test_reading_an_undeclared_parameter_fails(self) -> None:
        """A handler cannot silently read a parameter its route did not declare."""
        from aiohttp.test_utils import make_mocked_request

        from ari_handlers.simulator.ari_server import Params

        route = next(r for r in ROUTES if r.path == "/channels/{channelId}/answer")
        params = Params(route, make_mocked_request("POST", "/ari/channels/x/answer"), {"media": "x"}, {})
        with pytest.raises(KeyError):
            params.get("media")


@pytest.fixture
async def recorded() -> Any:
    """A simulator whose every emitted event is recorded, with a connected app client."""
    sim = AsteriskSimulator(prompt_seconds=0.03)
    emitted: list[dict[str, Any]] = []
    sim.on_event(emitted.append)
    sim.add_agent("agent1", script=AgentScript(answer_after=0.01, hang_up_after=0.4))
    sim.add_agent("agent2", script=AgentScript(answer_after=None, decline_after=0.05))
    sim.add_agent("agent3", script=AgentScript(answer_after=None))
    await sim.start()
    async with aiohttp.ClientSession() as session:
        client = AriTestClient(sim, session)
        await client.connect()
        yield sim, client, emitted
        await client.disconnect()
    await sim.stop()


class TestEventsAndBodies:
    async def test_scripted_calls_emit_only_spec_events(self, recorded: Any) -> None:
        """Every event sent during ringing, early media, prompts, DTMF, bridging, hold and hangups fits events.json."""
        sim, c, emitted = recorded
        spec = load_spec()
        bodies: list[tuple[str, Any]] = []

        async def ok(model: str, method: str, path: str, **params: str) -> Any:
            status, body = await c.rq(method, path, **params)
            assert status < 300, (method, path, status, body)
            bodies.append((model, body))
            return body

        # call 1: early media, answer, prompts, variables, hold, DTMF, agent, bridges
        call = await sim.place_call("13800000001", caller_name="张三",
                                    script=CallerScript(dtmf=((0.05, "1"), (0.5, "#"))))
        cid = call.channel_id
        await ok("Channel", "GET", f"/channels/{cid}")
        await c.rq("POST", f"/channels/{cid}/ring")
        await ok("Playback", "POST", f"/channels/{cid}/play", media="sound:liyi/welcome")
        await c.rq("POST", f"/channels/{cid}/answer")
        await ok("Playback", "POST", f"/channels/{cid}/play/greet-1", media="sound:a,sound:b")
        await ok("Playback", "POST", f"/channels/{cid}/play", media="sound:missing-file")
        await ok("Playback", "POST", f"/channels/{cid}/play", media="bogus:thing")
        await c.rq("POST", f"/channels/{cid}/variable", variable="LIYI_STATE", value="greeted", report_events="true")
        assert (await c.rq("GET", f"/channels/{cid}/variable", variable="LIYI_STATE")) == (200, {"value": "greeted"})
        await c.rq("POST", f"/channels/{cid}/hold")
        await c.rq("POST", f"/channels/{cid}/moh", mohClass="default")
        await c.rq("DELETE", f"/channels/{cid}/moh")
        await c.rq("DELETE", f"/channels/{cid}/hold")
        await c.wait_for("ChannelDtmfReceived", digit="1")
        agent = await ok("Channel", "POST", "/channels", endpoint="PJSIP/agent1", app="liyi",
                         appArgs=f"agent,{cid}", callerId="liyi <4000>", channelId="leg-1")
        await c.wait_for("StasisStart", channel_id=agent["id"])
        bridge = await ok("Bridge", "POST", "/bridges", type="mixing,dtmf_events", bridgeId="br-1", name="call")
        await c.rq("POST", "/bridges/br-1/addChannel", channel=f"{cid},{agent['id']}")
        await ok("Bridge", "GET", f"/bridges/{bridge['id']}")
        await c.wait_for("ChannelDtmfReceived", digit="#")
        await ok("Playback", "POST", "/bridges/br-1/play", media="sound:liyi/hold-notice")
        await c.rq("POST", "/bridges/br-1/moh", mohClass="default")
        await ok("Playback", "POST", "/bridges/br-1/play", media="sound:liyi/again")
        await c.rq("DELETE", "/bridges/br-1/moh")
        await ok("Bridge", "POST", "/bridges/hold-1", type="holding", name="hold")
        await c.rq("POST", "/bridges/hold-1/addChannel", channel=cid, role="participant")
        await ok("Playback", "POST", "/bridges/hold-1/play", media="sound:pls-hold-while-try")
        await c.rq("POST", "/bridges/hold-1/moh", mohClass="default")
        await ok("Playback", "POST", "/bridges/hold-1/play", media="sound:pls-hold-while-try")  # fails at once
        await ok("Bridge", "GET", "/bridges/hold-1")
        await c.rq("DELETE", "/bridges/hold-1/moh")
        await c.rq("POST", "/bridges/br-1/addChannel", channel=cid)
        await c.rq("DELETE", "/bridges/hold-1")
        await c.wait_for("ChannelDestroyed", channel_id=agent["id"])  # agent1 hangs up after 0.4 s
        await ok("Endpoint", "GET", "/endpoints/PJSIP/agent1")
        await ok("Application", "GET", "/applications/liyi")
        await ok("AsteriskInfo", "GET", "/asterisk/info")
        await ok("AsteriskPing", "GET", "/asterisk/ping")
        await ok("List[Channel]", "GET", "/channels")
        await ok("List[Bridge]", "GET", "/bridges")
        await c.rq("POST", "/applications/liyi/subscription", eventSource=f"channel:{cid}")
        sim.caller_hangs_up(call)
        await c.wait_for("ChannelDestroyed", channel_id=cid)
        await c.rq("DELETE", "/bridges/br-1")

        # call 2: cancelled while ringing; agent legs declined, unanswered, cancelled
        call2 = await sim.place_call("13800000002", script=CallerScript(hang_up_while_ringing_after=0.05))
        await c.rq("POST", "/channels/leg-2", endpoint="PJSIP/agent2", app="liyi", appArgs="agent")
        await c.rq("POST", "/channels/leg-3", endpoint="PJSIP/agent3", app="liyi", appArgs="agent", timeout="1")
        await c.rq("POST", "/channels/leg-4", endpoint="PJSIP/agent3", app="liyi", appArgs="agent")
        await c.wait_for("ChannelStateChange", channel_id="leg-4", state="Ringing")
        await c.rq("DELETE", "/channels/leg-4")
        await call2.ended.wait()
        await c.wait_for("ChannelDestroyed", channel_id="leg-3")

        types = {e["type"] for e in emitted}
        assert types >= {
            "StasisStart", "StasisEnd", "ChannelStateChange", "ChannelHangupRequest", "ChannelDestroyed",
            "ChannelDtmfReceived", "ChannelVarset", "Dial", "PlaybackStarted", "PlaybackContinuing",
            "PlaybackFinished", "ChannelEnteredBridge", "ChannelLeftBridge", "BridgeDestroyed",
        }
        problems = [p for e in emitted for p in spec.check_event(e)]
        problems += [p for model, body in bodies for p in spec.check_model(model, body)]
        assert problems == []
        assert len(c.events) == len(emitted)  # all of it reached the app's WebSocket
