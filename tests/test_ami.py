"""AgentPhones (panoramisk AMI client) against the simulator's AmiServer over loopback.

The server's bytes are compared with the real Asterisk 22.10.1 session in
``tests/traces/09-ami-agent-presence.jsonl`` (a copy of the upstream trace, see
``tests/traces/README.md``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ari_handlers.ami_client import (
    DEFAULT_PING_SECONDS,
    MAX_MESSAGE_BYTES,
    AgentPhones,
    AmiConnectionLost,
    AmiGarbledAnswer,
    AmiLoginError,
    PhoneState,
)
from ari_handlers.simulator.ami_server import AmiServer

USER, SECRET = "liyi", "s3cret"
TRACE_09 = Path(__file__).resolve().parent / "traces" / "09-ami-agent-presence.jsonl"

Headers = list[tuple[str, str]]


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``predicate`` holds (the AMI traffic is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class RawAmi:
    """A byte-level AMI client, to look at the server's framing itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> tuple[RawAmi, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await asyncio.wait_for(reader.readline(), 2)
        return cls(reader, writer), banner

    async def send(self, *headers: tuple[str, str]) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n")
        await self.writer.drain()

    async def read(self) -> Headers:
        """One message as ordered (key, value) pairs; it must end with a blank \\r\\n line."""
        block = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 2)
        lines = block.decode().split("\r\n")[:-2]
        return [(k, v) for k, _, v in (line.partition(": ") for line in lines)]

    async def read_list(self) -> list[Headers]:
        """A list action's answer: the ack, the items, and the Complete event."""
        messages = [await self.read()]
        while not dict(messages[-1]).get("Event", "").endswith("Complete"):
            messages.append(await self.read())
        return messages

    async def login(self, secret: str = SECRET) -> list[Headers]:
        await self.send(
            ("Action", "Login"), ("ActionID", "login-1"), ("Username", USER), ("Secret", secret)
        )
        return [await self.read(), await self.read()]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def trace_exchange(action_id: str) -> list[Headers]:
    """Asterisk's answer to one action in trace 09: response then events, in order."""
    out: list[Headers] = []
    for line in TRACE_09.read_text().splitlines():
        entry = json.loads(line)
        body = entry.get("response") or entry.get("event")
        if entry["kind"] in ("ami_response", "ami_event") and body.get("ActionID") == action_id:
            out.append(list(body.items()))
    return out


@pytest.fixture
async def server() -> AsyncIterator[AmiServer]:
    ami = AmiServer(username=USER, secret=SECRET, endpoints=["agent1", "agent2", "caller"])
    await ami.start()
    yield ami
    await ami.stop()


class Recorder:
    """on_change target: every PhoneState in order."""

    def __init__(self) -> None:
        self.changes: list[PhoneState] = []

    def __call__(self, state: PhoneState) -> None:
        self.changes.append(state)


def phones_for(
    server: AmiServer, recorder: Recorder, secret: str = SECRET, ping_seconds: float = 30.0
) -> AgentPhones:
    return AgentPhones(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        secret=secret,
        endpoints=["agent1", "agent2"],
        on_change=recorder,
        reconnect_delay=0.2,
        login_timeout=2.0,
        ping_seconds=ping_seconds,
    )


def received(server: AmiServer, action: str) -> list[tuple[int, dict[str, str]]]:
    """The actions named ``action`` the server read, with the connection each came on."""
    return [(n, h) for n, h in server.received if h.get("Action", "").lower() == action.lower()]


ORIGINATE = {
    "Action": "Originate",
    "Channel": "PJSIP/agent1",
    "Application": "Playback",
    "Data": "hello-world",
    "Async": "true",
}


class TestAmiServerFraming:
    async def test_login_and_device_state_list_match_trace_09(self, server: AmiServer) -> None:
        """Banner, login, FullyBooted and a DeviceStateList answer are byte-for-byte Asterisk's shapes."""
        server.set_contact("agent1", True)
        server.set_device_state("Queue:support_avail", "INUSE")
        raw, banner = await RawAmi.connect(server.port)
        try:
            assert banner == b"Asterisk Call Manager/11.0.0\r\n"
            response, booted = await raw.login()
            assert response == [
                ("Response", "Success"),
                ("ActionID", "login-1"),
                ("Message", "Authentication accepted"),
            ]
            assert [k for k, _ in booted] == [
                "Event",
                "Privilege",
                "Uptime",
                "LastReload",
                "Status",
            ]
            assert dict(booted)["Status"] == "Fully Booted"
            await raw.send(("Action", "DeviceStateList"), ("ActionID", "devicestatelist-3"))
            assert await raw.read_list() == trace_exchange("devicestatelist-3")
        finally:
            await raw.close()

    async def test_contact_and_endpoint_lists_match_trace_09(self, server: AmiServer) -> None:
        """PJSIPShowContacts and PJSIPShowEndpoints have trace 09's headers, order and counts."""
        server.set_contact("agent1", True)
        raw, _ = await RawAmi.connect(server.port)
        try:
            await raw.login()
            await raw.send(("Action", "PJSIPShowContacts"), ("ActionID", "pjsipshowcontacts-2"))
            got = await raw.read_list()
            want = trace_exchange("pjsipshowcontacts-2")
            assert [[k for k, _ in m] for m in got] == [[k for k, _ in m] for m in want]
            assert got[0] == want[0] and got[-1] == want[-1]  # ack and Complete exactly
            assert dict(got[1])["Endpoint"] == "agent1"

            await raw.send(("Action", "PJSIPShowEndpoints"), ("ActionID", "pjsipshowendpoints-4"))
            got = await raw.read_list()
            want = trace_exchange("pjsipshowendpoints-4")
            volatile = {"Contacts", "Auths"}  # contact URIs differ; our "caller" has an auth
            assert [[(k, v) for k, v in m if k not in volatile] for m in got] == [
                [(k, v) for k, v in m if k not in volatile] for m in want
            ]
            assert dict(got[1])["Contacts"].startswith("agent1/sip:agent1")
        finally:
            await raw.close()

    async def test_wrong_secret_is_refused_and_dropped(self, server: AmiServer) -> None:
        """A bad secret gets "Authentication failed" and the connection closes, as in Asterisk."""
        raw, _ = await RawAmi.connect(server.port)
        await raw.send(
            ("Action", "Login"), ("ActionID", "l1"), ("Username", USER), ("Secret", "wrong")
        )
        assert await raw.read() == [
            ("Response", "Error"),
            ("ActionID", "l1"),
            ("Message", "Authentication failed"),
        ]
        assert await asyncio.wait_for(raw.reader.read(), 2) == b""
        assert server.clients == 0
        await raw.close()

    async def test_other_actions(self, server: AmiServer) -> None:
        """Unauthenticated actions are denied; Ping, unknown actions and Logoff answer like Asterisk."""
        raw, _ = await RawAmi.connect(server.port)
        await raw.send(("Action", "Ping"), ("ActionID", "p0"))
        assert await raw.read() == [
            ("Response", "Error"),
            ("ActionID", "p0"),
            ("Message", "Permission denied"),
        ]
        await raw.login()
        assert server.clients == 1
        await raw.send(("Action", "Ping"), ("ActionID", "p1"))
        assert dict(await raw.read())["Ping"] == "Pong"
        await raw.send(("Action", "NoSuchThing"), ("ActionID", "x1"))
        assert await raw.read() == [
            ("Response", "Error"),
            ("ActionID", "x1"),
            ("Message", "Invalid/unknown command"),
        ]
        await raw.send(("Action", "Logoff"), ("ActionID", "logoff-17"))
        assert await raw.read() == trace_exchange("logoff-17")[0]
        assert await asyncio.wait_for(raw.reader.read(), 2) == b""
        await raw.close()

    async def test_endpoint_may_be_given_as_device(self, server: AmiServer) -> None:
        """set_contact("PJSIP/agent2") means endpoint agent2, not "PJSIP/PJSIP/agent2"."""
        raw, _ = await RawAmi.connect(server.port)
        try:
            await raw.login()
            server.set_contact("PJSIP/agent2", True)
            peer, device, contact = [dict(await raw.read()) for _ in range(3)]
        finally:
            await raw.close()
        assert peer["Peer"] == device["Device"] == "PJSIP/agent2"
        assert contact["EndpointName"] == "agent2"

    async def test_register_events_match_trace_09(self, server: AmiServer) -> None:
        """set_contact emits PeerStatus, DeviceStateChange, ContactStatus in trace 09's order and shape."""
        raw, _ = await RawAmi.connect(server.port)
        try:
            await raw.login()
            server.set_contact("agent2", True)
            got = [await raw.read() for _ in range(3)]
            server.set_contact("agent2", False)
            got += [await raw.read() for _ in range(3)]
        finally:
            await raw.close()
        want = [
            list(e["event"].items())
            for e in map(json.loads, TRACE_09.read_text().splitlines())
            if e["kind"] == "ami_event"
            and e["event"]["Event"] in ("PeerStatus", "DeviceStateChange", "ContactStatus")
            and "ActionID" not in e["event"]
            and "agent2" in json.dumps(e["event"])
        ][:6]
        assert [[(k, v) for k, v in m if k != "URI"] for m in got] == [
            [(k, v) for k, v in m if k != "URI"] for m in want
        ]


class TestAgentPhones:
    async def test_initial_state_from_lists(self, server: AmiServer) -> None:
        """start() learns registration and device state from PJSIPShowContacts and DeviceStateList."""
        server.set_contact("agent1", True)
        server.set_device_state("PJSIP/agent1", "INUSE")
        rec = Recorder()
        phones = phones_for(server, rec)
        await phones.start()
        try:
            assert phones.connected and server.clients == 1
            assert phones.state("agent1") == PhoneState("agent1", True, "INUSE")
            assert phones.state("agent2") == PhoneState("agent2", False, "UNAVAILABLE")
            assert set(rec.changes) == {phones.state("agent1"), phones.state("agent2")}
        finally:
            await phones.stop()

    async def test_live_changes_reach_on_change(self, server: AmiServer) -> None:
        """REGISTER, device-state changes and un-REGISTER of a tracked phone reach on_change; others don't."""
        rec = Recorder()
        phones = phones_for(server, rec)
        await phones.start()
        try:
            rec.changes.clear()
            server.set_contact("agent2", True)
            await eventually(
                lambda: phones.state("agent2") == PhoneState("agent2", True, "NOT_INUSE")
            )
            server.set_device_state("PJSIP/agent2", "RINGING")
            await eventually(lambda: phones.state("agent2").device_state == "RINGING")
            server.set_contact("caller", True)  # not an agent
            server.set_device_state("PJSIP/caller", "INUSE")
            server.set_contact("agent2", False)
            await eventually(
                lambda: phones.state("agent2") == PhoneState("agent2", False, "UNAVAILABLE")
            )
            assert {s.endpoint for s in rec.changes} == {"agent2"}
            assert rec.changes[-1] == PhoneState("agent2", False, "UNAVAILABLE")
            assert PhoneState("agent2", True, "RINGING") in rec.changes
        finally:
            await phones.stop()

    async def test_reconnects_after_server_restart(self, server: AmiServer) -> None:
        """When Asterisk restarts, the client reconnects, logs in again and re-reads the lists."""
        rec = Recorder()
        phones = phones_for(server, rec)
        await phones.start()
        try:
            assert not phones.state("agent1").registered
            await server.stop()
            await eventually(lambda: not phones.connected)
            server.set_contact("agent1", True)  # happens while we are away: no event reaches us
            await asyncio.sleep(0.3)  # at least one refused reconnect
            await server.start()
            await eventually(lambda: phones.connected and server.clients == 1)
            await eventually(
                lambda: phones.state("agent1") == PhoneState("agent1", True, "NOT_INUSE")
            )
            server.set_device_state("PJSIP/agent1", "INUSE")  # live events flow again
            await eventually(lambda: phones.state("agent1").device_state == "INUSE")
        finally:
            await phones.stop()

    async def test_stop_means_no_reconnect(self, server: AmiServer) -> None:
        """After stop() the client does not come back, even though panoramisk would."""
        phones = phones_for(server, Recorder())
        await phones.start()
        await phones.stop()
        await eventually(lambda: server.clients == 0)
        await asyncio.sleep(0.5)
        assert server.clients == 0 and not phones.connected

    async def test_wrong_secret_raises(self, server: AmiServer) -> None:
        """A refused login raises AmiLoginError and is not retried."""
        phones = phones_for(server, Recorder(), secret="wrong")
        with capture_logs() as logs:
            with pytest.raises(AmiLoginError):
                await phones.start()
            await asyncio.sleep(0.5)  # longer than reconnect_delay
        connects = [e for e in logs if e["event"] == "ami_server.connected"]
        assert len(connects) == 1
        assert not phones.connected

    async def test_asterisk_down_at_start(self) -> None:
        """If AMI is down at start, start() returns disconnected and the client connects once it is up."""
        ami = AmiServer(username=USER, secret=SECRET, endpoints=["agent1", "agent2"])
        await ami.start()
        await ami.stop()  # keep the port, nobody listening
        rec = Recorder()
        phones = phones_for(ami, rec)
        await phones.start()
        try:
            assert not phones.connected
            ami.set_contact("agent2", True)
            await ami.start()
            await eventually(lambda: phones.state("agent2").registered)
            assert phones.connected
        finally:
            await phones.stop()
            await ami.stop()


class TestLiveness:
    """Issue 9: a half-open AMI socket is noticed, reconnected, re-read; no action is sent twice."""

    def test_default_ping_notices_a_silent_asterisk_within_15_seconds(self) -> None:
        """With the default settings a silent Asterisk is noticed within 15 s (two Ping ticks)."""
        assert 2 * DEFAULT_PING_SECONDS <= 15

    async def test_silent_asterisk_is_noticed_and_the_roster_read_again(
        self, server: AmiServer
    ) -> None:
        """When Asterisk stops answering on an open socket, the client notices within seconds, logs
        the disconnect, reconnects and re-reads the phones, so a REGISTER it missed is known."""
        rec = Recorder()
        phones = phones_for(server, rec, ping_seconds=0.5)
        await phones.start()
        try:
            assert phones.connected and not phones.state("agent2").registered
            with capture_logs() as logs:
                server.stall()
                server.set_contact("agent2", True)  # its events go nowhere: the socket is silent
                await eventually(lambda: not phones.connected, timeout=5.0)  # 2 × 0.5 s expected
                await eventually(lambda: phones.connected, timeout=5.0)
                await eventually(lambda: phones.state("agent2").registered, timeout=5.0)
            lost = [e for e in logs if e["event"] == "ami.disconnected"]
            assert len(lost) == 1 and "Ping" in lost[0]["reason"]
            assert [e["event"] for e in logs].count("ami.logged_in") == 1
            assert rec.changes[-1] == PhoneState("agent2", True, "NOT_INUSE")
            await eventually(lambda: server.clients == 1)  # the silent socket was dropped
        finally:
            await phones.stop()

    async def test_action_pending_at_a_drop_is_not_sent_again(self, server: AmiServer) -> None:
        """An Originate still unanswered when Asterisk restarts fails for its sender and is not
        sent again after the reconnect (panoramisk would re-send it: a phone rung twice)."""
        phones = phones_for(server, Recorder())
        await phones.start()
        try:
            server.stall()  # Asterisk reads the Originate but never answers...
            pending = asyncio.ensure_future(phones.send_action(ORIGINATE))
            await eventually(lambda: len(received(server, "Originate")) == 1)
            await server.stop()  # ...then restarts
            await server.start()
            await eventually(lambda: phones.connected, timeout=5.0)
            first = received(server, "Originate")[0][0]
            await eventually(  # the new connection's snapshot is done: FullyBooted has passed
                lambda: any(n > first for n, _ in received(server, "DeviceStateList"))
            )
            await asyncio.sleep(0.3)
            # Checked after the reconnect, so that panoramisk's own re-send (put back) fails here.
            assert [n for n, _ in received(server, "Originate")] == [first], "the Originate was sent again"
            with pytest.raises(AmiConnectionLost):
                await asyncio.wait_for(pending, 1)
        finally:
            await phones.stop()

    async def test_action_pending_on_a_silent_socket_is_not_sent_again(
        self, server: AmiServer
    ) -> None:
        """An Originate sent into a silent socket fails once the silence is noticed, and the
        reconnected client does not send it again."""
        phones = phones_for(server, Recorder(), ping_seconds=0.5)
        await phones.start()
        try:
            server.stall()
            pending = asyncio.ensure_future(phones.send_action(ORIGINATE))
            with pytest.raises(AmiConnectionLost):
                await asyncio.wait_for(pending, 5)
            await eventually(lambda: phones.connected, timeout=5.0)
            pings = received(server, "Ping")
            await eventually(lambda: len(received(server, "Ping")) > len(pings), timeout=5.0)
            assert len(received(server, "Originate")) == 1
        finally:
            await phones.stop()

    async def test_action_while_disconnected_fails_at_once(self) -> None:
        """With AMI down, send_action raises AmiConnectionLost at once instead of queueing."""
        ami = AmiServer(username=USER, secret=SECRET, endpoints=["agent1"])
        await ami.start()
        await ami.stop()
        phones = phones_for(ami, Recorder())
        await phones.start()
        try:
            with pytest.raises(AmiConnectionLost):
                await asyncio.wait_for(phones.send_action(ORIGINATE), 1)
        finally:
            await phones.stop()

    async def test_reconnect_delays_grow(self) -> None:
        """While Asterisk stays down the client retries with growing delays, not in a tight loop."""
        ami = AmiServer(username=USER, secret=SECRET, endpoints=["agent1"])
        await ami.start()
        await ami.stop()
        phones = phones_for(ami, Recorder())
        with capture_logs() as logs:
            await phones.start()
            await asyncio.sleep(2.0)
            await phones.stop()
        delays = [e["delay"] for e in logs if e["event"] == "ami.reconnect_wait"]
        assert 3 <= len(delays) <= 5  # 0.2, 0.4, 0.8, ... (±20 %) within 2 s
        assert delays[-1] > 2 * delays[0]


def wire(*lines: str) -> bytes:
    """One AMI message exactly as written: these header lines, then the blank line."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def device_event(device: str, state: str, *extra: str) -> bytes:
    return wire("Event: DeviceStateChange", "Privilege: call,all", f"Device: {device}",
                f"State: {state}", *extra)


#: A DeviceStateChange for agent1 with one routing header written twice, as a broken or hostile
#: peer might send it (panoramisk 1.4 raises on each, and asyncio then drops the connection).
GARBLED_EVENTS = {
    "Event": wire("Event: DeviceStateChange", "Event: PeerStatus", "Device: PJSIP/agent1", "State: INUSE"),
    "ActionID": wire("Event: DeviceStateChange", "ActionID: a", "ActionID: b", "Device: PJSIP/agent1",
                     "State: INUSE"),
    "actionid in two spellings": wire("Event: DeviceStateChange", "ActionID: a", "actionid: b",
                                      "Device: PJSIP/agent1", "State: INUSE"),
}


class TestGarbledMessages:
    """Issue 9: a message with a routing header written twice is skipped; an endless one ends the link."""

    @pytest.mark.parametrize("garbled", sorted(GARBLED_EVENTS))
    async def test_a_garbled_event_is_skipped_and_the_connection_stays_up(
        self, server: AmiServer, garbled: str
    ) -> None:
        """An event with Event or ActionID repeated changes no phone, is logged once with a one-line
        excerpt, and the same connection goes on carrying events."""
        rec = Recorder()
        phones = phones_for(server, rec)
        await phones.start()
        try:
            with capture_logs() as logs:
                assert server.write_raw(GARBLED_EVENTS[garbled] + device_event("PJSIP/agent2", "RINGING")) == 1
                await eventually(lambda: phones.state("agent2").device_state == "RINGING")
            assert phones.state("agent1").device_state == "UNAVAILABLE"  # the garbled INUSE was not taken
            skipped = [e for e in logs if e["event"] == "ami.garbled_message"]
            assert len(skipped) == 1, logs
            assert "\r" not in skipped[0]["excerpt"] and "\n" not in skipped[0]["excerpt"]
            assert "DeviceStateChange" in skipped[0]["excerpt"]
            assert not [e for e in logs if e["event"] == "ami.disconnected"]
            assert phones.connected and server.clients == 1
            assert len(received(server, "Login")) == 1  # never reconnected
        finally:
            await phones.stop()

    @pytest.mark.parametrize("answer", [
        ("Response: Success", "Response: Error", "ActionID: {id}", "Message: Endpoint found"),
        ("Response: Success", "ActionID: {id}", "ActionID: {id}", "Message: Endpoint found"),
        ("Response: Success", "ActionID: {id}", "Message: Endpoint found", "Message: again"),
        ("Event: EndpointList", "Event: EndpointList", "ActionID: {id}", "ObjectName: agent1"),
    ], ids=["Response", "ActionID", "Message", "Event-of-a-list-item"])
    async def test_a_garbled_answer_fails_its_action_and_the_connection_stays_up(
        self, server: AmiServer, answer: tuple[str, ...]
    ) -> None:
        """A pending action whose answer comes garbled fails at once with AmiGarbledAnswer (it never
        hangs), and the connection still carries events."""
        phones = phones_for(server, Recorder())
        await phones.start()
        try:
            server.stall()  # Asterisk reads the action; only the garbled answer below comes back
            pending = asyncio.ensure_future(phones.send_action({"Action": "PJSIPShowEndpoints"}))
            await eventually(lambda: len(received(server, "PJSIPShowEndpoints")) == 1)
            action_id = received(server, "PJSIPShowEndpoints")[0][1]["ActionID"]
            with capture_logs() as logs:
                server.write_raw(wire(*(line.format(id=action_id) for line in answer)))
                with pytest.raises(AmiGarbledAnswer, match="PJSIPShowEndpoints"):
                    await asyncio.wait_for(pending, 2)
                # The rest of that answer, had Asterisk gone on, is not taken for live events.
                server.write_raw(device_event("PJSIP/agent1", "INUSE", f"ActionID: {action_id}"))
                server.write_raw(device_event("PJSIP/agent2", "RINGING"))
                await eventually(lambda: phones.state("agent2").device_state == "RINGING")
            assert phones.state("agent1").device_state == "UNAVAILABLE"
            [skipped] = [e for e in logs if e["event"] == "ami.garbled_message"]
            assert skipped["failed_actions"] == ["PJSIPShowEndpoints"]
            assert phones.connected and len(received(server, "Login")) == 1
        finally:
            await phones.stop()

    async def test_a_message_just_under_the_cap_is_read(self, server: AmiServer) -> None:
        """An event of almost 1 MiB (a long header) is read like any other."""
        phones = phones_for(server, Recorder())
        await phones.start()
        try:
            event = device_event("PJSIP/agent1", "INUSE", "Padding: ")
            padding = "x" * (MAX_MESSAGE_BYTES - len(event))
            server.write_raw(device_event("PJSIP/agent1", "INUSE", f"Padding: {padding}"))
            await eventually(lambda: phones.state("agent1").device_state == "INUSE")
            assert phones.connected and len(received(server, "Login")) == 1
        finally:
            await phones.stop()

    @pytest.mark.parametrize("ended", [False, True], ids=["never-ends", "ends"])
    async def test_a_message_over_1_mib_drops_the_connection_and_it_comes_back(
        self, server: AmiServer, ended: bool
    ) -> None:
        """A message past 1 MiB (with or without its blank line) is not buffered further: the link is
        dropped with that reason, and the client reconnects and reads the phones again."""
        phones = phones_for(server, Recorder())
        await phones.start()
        try:
            with capture_logs() as logs:
                head = device_event("PJSIP/agent1", "INUSE", "Padding: ")[:-4]
                flood = head + b"x" * MAX_MESSAGE_BYTES + (b"\r\n\r\n" if ended else b"")
                server.write_raw(flood)
                await eventually(lambda: not phones.connected, timeout=5.0)
                server.set_device_state("PJSIP/agent2", "INUSE")  # missed while down: read again
                await eventually(lambda: phones.connected, timeout=5.0)
                await eventually(lambda: phones.state("agent2").device_state == "INUSE")
            [too_large] = [e for e in logs if e["event"] == "ami.message_too_large"]
            assert too_large["size"] > MAX_MESSAGE_BYTES
            [lost] = [e for e in logs if e["event"] == "ami.disconnected"]
            assert "bytes" in lost["reason"]
            assert phones.state("agent1").device_state == "UNAVAILABLE"
            assert len(received(server, "Login")) == 2
        finally:
            await phones.stop()

    async def test_a_garbled_login_answer_is_not_a_dead_end(self) -> None:
        """When Asterisk's answer to Login comes garbled, the client does not sit connected but
        logged out: it drops that connection, logs in again and reads the phones."""

        class GarbledFirstLogin(AmiServer):
            def _login(self, session: Any, fields: dict[str, str], reply: Callable[..., dict[str, str]]) -> None:
                if session.number == 1:
                    session.writer.write(wire("Response: Success", "Response: Success",
                                              f"ActionID: {fields.get('actionid', '')}",
                                              "Message: Authentication accepted"))
                    return
                super()._login(session, fields, reply)

        ami = GarbledFirstLogin(username=USER, secret=SECRET, endpoints=["agent1", "agent2"])
        await ami.start()
        phones = phones_for(ami, Recorder())
        try:
            with capture_logs() as logs:
                await phones.start()
                await eventually(lambda: phones.connected, timeout=5.0)
            assert len(received(ami, "Login")) == 2
            assert [e["event"] for e in logs].count("ami.garbled_message") == 1
            assert any(e["event"] == "ami.snapshot" for e in logs)
        finally:
            await phones.stop()
            await ami.stop()
