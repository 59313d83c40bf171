"""Customers reached through the trunk (callbacks, R8): ``PJSIP/<number>@trunk`` originates.

A customer leg is originated like an agent leg (trace 03/04/11 order of
Dial and state events) but reaches a scripted customer (``sim.customer``)
whose side of the call is a ``SimCall`` like an inbound caller's.
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


def _ids(c: AriTestClient, channel_id: str) -> list[tuple[str, Any]]:
    """Event types of one leg, with the detail an app reads (dialstatus, state, cause)."""
    out: list[tuple[str, Any]] = []
    for ev in c.events:
        ch = ev.get("channel") or ev.get("peer") or {}
        if ch.get("id") != channel_id:
            continue
        detail = {"Dial": ev.get("dialstatus"), "ChannelStateChange": ch.get("state"),
                  "ChannelDestroyed": ev.get("cause"), "StasisStart": ev.get("args"),
                  "ChannelHangupRequest": ev.get("cause")}.get(ev["type"])
        out.append((ev["type"], detail))
    return out


def _no_spec_problems(emitted: list[dict[str, Any]], *bodies: tuple[str, Any]) -> None:
    spec = load_spec()
    problems = [p for ev in emitted for p in spec.check_event(ev)]
    problems += [p for model, body in bodies for p in spec.check_model(model, body)]
    assert problems == []


class TestCustomerLegs:
    async def test_answered_callback_leg_bridged_with_the_agent(self, world: Any) -> None:
        """A scripted customer rings, answers into Stasis with the app args, hears prompts and the agent, hangs up."""
        sim, c, emitted = world
        sim.customer("13800138000", answer_after=0.1, hang_up_after=0.4)
        status, leg = await c.rq("POST", "/channels", endpoint="PJSIP/13800138000@trunk", app="liyi",
                                 appArgs="callback,c0ffee", callerId="liyi <4000>", channelId="c0ffee-c1",
                                 timeout="5")
        assert status == 200 and leg["state"] == "Down" and leg["name"].startswith("PJSIP/trunk-")
        await c.wait_for("StasisStart", channel_id="c0ffee-c1")
        dial = next(ev for ev in c.events if ev["type"] == "Dial")
        assert dial["dialstring"] == "13800138000@trunk"
        (customer,) = sim.calls_to("13800138000")
        assert customer.kind == "customer" and customer.channel_id == "c0ffee-c1"

        await c.rq("POST", "/channels/c0ffee-c1/play", media="sound:liyi/callback-hello")
        _, agent = await c.rq("POST", "/channels", endpoint="PJSIP/agent1", app="liyi",
                              appArgs="callback,c0ffee", channelId="c0ffee-a1")
        await c.wait_for("StasisStart", channel_id="c0ffee-a1")
        await c.rq("POST", "/bridges/c0ffee", type="mixing,dtmf_events")
        await c.rq("POST", "/bridges/c0ffee/addChannel", channel="c0ffee-c1,c0ffee-a1")
        await asyncio.wait_for(customer.ended.wait(), 2)
        await c.wait_for("ChannelDestroyed", channel_id="c0ffee-c1")

        assert _ids(c, "c0ffee-c1") == [
            ("Dial", ""), ("ChannelStateChange", "Ringing"), ("Dial", "RINGING"),
            ("ChannelStateChange", "Up"), ("Dial", "ANSWER"), ("StasisStart", ["callback", "c0ffee"]),
            ("ChannelEnteredBridge", None), ("ChannelHangupRequest", None), ("ChannelLeftBridge", None),
            ("StasisEnd", None), ("ChannelDestroyed", 16),
        ]
        assert customer.whats() == ["ringing", "answered", "prompt", "connected", "hangup-by-caller"]
        assert customer.hung_up_by == "caller"
        assert [h.detail for h in customer.heard if h.what == "connected"] == ["agent1"]
        assert sim.legs_of("agent1")[0].outcome == "answered"  # the agent stays: nothing happens to them (trace 03)
        _no_spec_problems(emitted, ("Channel", leg), ("Channel", agent))

    async def test_unscripted_number_rings_until_the_originate_timeout(self, world: Any) -> None:
        """An unscripted customer never answers: ChannelDestroyed cause 19 after `timeout` seconds, no hangup request."""
        sim, c, emitted = world
        status, _ = await c.rq("POST", "/channels", endpoint="PJSIP/13900139000@trunk", app="liyi",
                               appArgs="callback,f00d", channelId="f00d-c1", timeout="1")
        assert status == 200
        destroyed = await c.wait_for("ChannelDestroyed", channel_id="f00d-c1", timeout=3)
        (customer,) = sim.calls_to("13900139000")
        assert customer.ended_at is not None
        assert customer.ended_at - customer.heard[0].at == pytest.approx(1.0, abs=0.1)  # rang for `timeout`
        assert (destroyed["cause"], destroyed["cause_txt"]) == (19, "User alerting, no answer")
        assert [k for k, _ in _ids(c, "f00d-c1")] == ["Dial", "ChannelStateChange", "Dial", "ChannelDestroyed"]
        assert customer.whats() == ["ringing", "hangup-by-service"] and customer.answered_at is None
        _no_spec_problems(emitted)

    async def test_busy_line(self, world: Any) -> None:
        """A busy customer gives cause 17 and Dial BUSY without ever ringing (trace 04 C without the ringing)."""
        sim, c, emitted = world
        sim.customer("13700137000", busy=True)
        await c.rq("POST", "/channels", endpoint="PJSIP/13700137000@carrier", app="liyi",
                   appArgs="callback,beef", channelId="beef-c1")
        destroyed = await c.wait_for("ChannelDestroyed", channel_id="beef-c1")
        assert destroyed["cause"] == 17
        assert _ids(c, "beef-c1") == [("Dial", ""), ("ChannelHangupRequest", 17), ("Dial", "BUSY"),
                                      ("ChannelDestroyed", 17)]
        assert sim.calls_to("13700137000")[0].whats() == ["hangup-by-caller"]
        _no_spec_problems(emitted)

    async def test_service_cancels_a_ringing_customer(self, world: Any) -> None:
        """DELETE on a ringing customer leg ends it for good: the scripted answer never comes."""
        sim, c, _ = world
        sim.customer("13800138000", answer_after=0.2)
        await c.rq("POST", "/channels", endpoint="PJSIP/13800138000@trunk", app="liyi",
                   appArgs="callback,c1", channelId="c1-c1")
        await c.wait_for("ChannelStateChange", channel_id="c1-c1", state="Ringing")
        assert (await c.rq("DELETE", "/channels/c1-c1"))[0] == 204
        await asyncio.sleep(0.3)
        assert "StasisStart" not in [k for k, _ in _ids(c, "c1-c1")]
        assert sim.calls_to("13800138000")[0].hung_up_by == "service"

    async def test_customer_presses_keys_after_a_prompt(self, world: Any) -> None:
        """A customer scripted with keys_on answers the confirm prompt with '1' (ChannelDtmfReceived on its leg)."""
        sim, c, _ = world
        sim.customer("13800138000", answer_after=0.01,
                     script=CallerScript(keys_on={"callback-confirm": "1"}, key_delay=0.05))
        await c.rq("POST", "/channels", endpoint="PJSIP/13800138000@trunk", app="liyi",
                   appArgs="callback,c2", channelId="c2-c1")
        await c.wait_for("StasisStart", channel_id="c2-c1")
        await c.rq("POST", "/channels/c2-c1/play", media="sound:liyi/callback-confirm")
        dtmf = await c.wait_for("ChannelDtmfReceived", channel_id="c2-c1")
        assert dtmf["digit"] == "1"

    async def test_unknown_trunk_or_number_is_allocation_failed(self, world: Any) -> None:
        """Only PJSIP/<number>@<a known trunk> reaches a customer; anything else is 500 Allocation failed."""
        _, c, _ = world
        for endpoint in ("PJSIP/13800138000@elsewhere", "PJSIP/@trunk", "SIP/13800138000@trunk"):
            status, body = await c.rq("POST", "/channels", endpoint=endpoint, app="liyi")
            assert (status, body) == (500, {"error": "Allocation failed"}), endpoint
