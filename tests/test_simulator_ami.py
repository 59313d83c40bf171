"""The whole simulator's AMI side against trace 09 (``tests/traces/09-ami-agent-presence.jsonl``).

``tests/test_ami.py`` checks ``AmiServer`` on its own; here an agent's phone
is registered and unregistered through ``AsteriskSimulator`` (as the demo
and the end-to-end tests do), and a plain TCP client logged in to the
simulator's AMI port must see the same unsolicited events, in the same
order, with the same headers in the same order, as the real Asterisk sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ari_handlers.simulator import AsteriskSimulator

TRACE_09 = Path(__file__).parent / "traces" / "09-ami-agent-presence.jsonl"
SECURITY_EVENTS = frozenset({"ChallengeSent", "SuccessfulAuth"})  # SIP digest auth: the simulator has no SIP
Message = list[tuple[str, str]]


def trace_events_after(note: str) -> list[dict[str, Any]]:
    """The unsolicited AMI events (no ActionID) between the note containing ``note`` and the next note."""
    lines = [json.loads(line) for line in TRACE_09.read_text().splitlines() if line.strip()]
    start = next(i for i, ln in enumerate(lines) if ln["kind"] == "note" and note in ln["text"])
    out = []
    for ln in lines[start + 1:]:
        if ln["kind"] == "note":
            break
        if ln["kind"] == "ami_event" and "ActionID" not in ln["event"] and ln["event"]["Event"] not in SECURITY_EVENTS:
            out.append(ln["event"])
    return out


class AmiReader:
    """A raw AMI client: one message is ``Key: Value`` lines up to a blank line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, **headers: str) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")
        await self.writer.drain()

    async def read(self) -> Message:
        block = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 2)
        return [(k, v) for k, _, v in (line.partition(": ") for line in block.decode().split("\r\n")[:-2])]

    async def read_events(self, count: int) -> list[Message]:
        return [await self.read() for _ in range(count)]


@pytest.fixture
async def ami() -> AsyncIterator[tuple[AsteriskSimulator, AmiReader]]:
    sim = AsteriskSimulator()
    sim.add_agent("agent1")
    sim.add_agent("agent2", registered=False)
    await sim.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.ami_port)
    client = AmiReader(reader, writer)
    assert (await reader.readline()) == b"Asterisk Call Manager/11.0.0\r\n"
    await client.send(Action="Login", ActionID="login-1", Username="liyi", Secret="liyi-sim")
    assert dict(await client.read())["Response"] == "Success"
    assert dict(await client.read())["Event"] == "FullyBooted"
    yield sim, client
    writer.close()
    await sim.stop()


def assert_like_trace(actual: list[Message], expected: list[dict[str, Any]]) -> str:
    """Same events, headers and values in order; the contact URI only by shape. Returns the URI."""
    uris = {dict(m).get("URI") for m in actual} - {None}
    assert len(uris) == 1
    uri = uris.pop()
    assert re.fullmatch(r"sip:agent2-0x[0-9a-f]{12}@127\.0\.0\.1:\d+", str(uri))
    recorded = [[(k, uri if k == "URI" else v) for k, v in event.items()] for event in expected]
    assert actual == recorded
    return str(uri)


class TestAgentPresence:
    async def test_register_and_unregister_give_trace_09_events(
        self, ami: tuple[AsteriskSimulator, AmiReader]
    ) -> None:
        """register_agent → PeerStatus Reachable, DeviceStateChange NOT_INUSE, ContactStatus NonQualified;
        unregister_agent → Unreachable, UNAVAILABLE, ContactStatus Removed for the same contact (trace 09)."""
        sim, client = ami
        on_register = trace_events_after("baresip starts and REGISTERs")
        on_unregister = trace_events_after("baresip stops")
        assert [e["Event"] for e in on_register] == ["PeerStatus", "DeviceStateChange", "ContactStatus"]

        sim.register_agent("agent2")
        uri = assert_like_trace(await client.read_events(len(on_register)), on_register)
        sim.unregister_agent("agent2")
        assert assert_like_trace(await client.read_events(len(on_unregister)), on_unregister) == uri
        assert sim.device_state("agent2") == "UNAVAILABLE"

    async def test_registering_twice_says_nothing_more(self, ami: tuple[AsteriskSimulator, AmiReader]) -> None:
        """A phone already registered re-registering (a refresh) emits no new presence events."""
        sim, client = ami
        sim.register_agent("agent1")
        await client.send(Action="Ping", ActionID="p-1")
        assert dict(await client.read())["Response"] == "Success"  # the Pong is the next message: no event came
