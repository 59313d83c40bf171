"""A small Asterisk Manager Interface (AMI) server for the simulator and the tests.

Why it exists: the controller learns whether an agent's phone is registered
and idle from AMI (``ari_handlers/ami_client.py``). To test that without a
real Asterisk, this server speaks the same bytes Asterisk 22.10.1 did in
``tests/traces/09-ami-agent-presence.jsonl``: the banner, ``Key:
Value\\r\\n`` lines ending with a blank line, responses echoing the ActionID,
list actions framed as ``Response: Success`` + ``EventList: start`` → items
carrying the ActionID → ``...Complete`` with ``EventList: Complete`` and
``ListItems: N``, and the unsolicited PeerStatus / DeviceStateChange /
ContactStatus events a REGISTER and an un-REGISTER produce, in that order.
Header order follows the trace, so a byte-level comparison is meaningful.

It keeps two tables, like Asterisk does: device states (``PJSIP/agent1`` →
``NOT_INUSE``) and PJSIP contacts. The simulator changes them through
:meth:`AmiServer.set_device_state` and :meth:`AmiServer.set_contact`, which
also broadcast the matching events to every logged-in client. For tests of
what a broken or hostile peer might send, :meth:`AmiServer.write_raw` writes
exact bytes and :meth:`AmiServer.stall` leaves a connection half-open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

BANNER = "Asterisk Call Manager/11.0.0\r\n"

#: ast_devstate_str(): how PJSIPShowEndpoints spells a device state.
DEVICE_STATE_TEXT = {
    "UNKNOWN": "Unknown",
    "NOT_INUSE": "Not in use",
    "INUSE": "In use",
    "BUSY": "Busy",
    "INVALID": "Invalid",
    "UNAVAILABLE": "Unavailable",
    "RINGING": "Ringing",
    "RINGINUSE": "Ring+Inuse",
    "ONHOLD": "On Hold",
}
_BUSY_STATES = {"INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"}

Message = Mapping[str, str | list[str]]


def encode(message: Message) -> bytes:
    """One AMI message on the wire: ``Key: Value`` lines and a blank line (repeated keys repeat)."""
    lines: list[str] = []
    for key, value in message.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}: {item}\r\n")
    return ("".join(lines) + "\r\n").encode("utf-8")


@dataclass
class _Contact:
    """One registered PJSIP contact, with the fields ContactList reports (trace 09)."""

    endpoint: str
    uri: str
    object_name: str
    call_id: str
    via_port: int
    expiration: int


@dataclass(eq=False)
class _Session:
    """One TCP client of the manager interface."""

    writer: asyncio.StreamWriter
    peer: str
    number: int = 0
    authenticated: bool = False
    events: bool = True
    closed: bool = False
    stalled: bool = False  # half-open: reads on, answers nothing (see AmiServer.stall)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def send(self, message: Message) -> None:
        if self.closed or self.stalled or self.writer.is_closing():
            return
        self.writer.write(encode(message))


class AmiServer:
    """An asyncio TCP AMI server with Asterisk's framing and a device/contact table."""

    def __init__(
        self,
        *,
        username: str,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        endpoints: Iterable[str] = (),
    ) -> None:
        """``endpoints`` are PJSIP endpoints that exist before any phone registers.

        They are listed by PJSIPShowEndpoints and start as ``UNAVAILABLE`` in
        DeviceStateList, as an unregistered endpoint does in Asterisk. Endpoints
        first seen by :meth:`set_contact` or :meth:`set_device_state` are added.
        """
        self.username = username
        self.secret = secret
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._devices: dict[str, str] = {}
        self._endpoints: dict[str, None] = {}  # ordered set
        self._contacts: dict[str, _Contact] = {}
        self._started_at = time.monotonic()
        self._session_count = 0
        #: Every action received, as (connection number, headers), oldest first, so a test
        #: can check what reached "Asterisk" and how often.
        self.received: deque[tuple[int, dict[str, str]]] = deque(maxlen=10_000)
        for endpoint in endpoints:
            self._add_endpoint(endpoint)
            self._devices.setdefault(f"PJSIP/{endpoint}", "UNAVAILABLE")

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Listen; after a :meth:`stop` it binds the same port again (a restarted Asterisk)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ami_server.started", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Stop listening and drop every client, as an Asterisk shutdown would."""
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions)
        for session in sessions:
            session.closed = True
            session.writer.close()
        tasks = [t for s in sessions for t in s.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._sessions.clear()
        log.info("ami_server.stopped", port=self.port)

    def stall(self) -> None:
        """Make every current connection half-open: still read (and recorded), never answered.

        What a client sees when Asterisk's host vanishes or a NAT forgets the
        flow: no FIN, no RST, just silence. New connections are served as usual,
        as they would be once the path is back.
        """
        for session in self._sessions:
            session.stalled = True
        log.info("ami_server.stalled", sessions=len(self._sessions))

    def write_raw(self, data: bytes) -> int:
        """Write ``data`` as it is to every open connection, logged in, stalled or not; how many.

        For tests: the exact bytes a faulty or hostile Asterisk might send (a
        header written twice, a message with no end), over the real socket.
        """
        sessions = [s for s in self._sessions if not s.closed and not s.writer.is_closing()]
        for session in sessions:
            session.writer.write(data)
        log.debug("ami_server.raw", size=len(data), sessions=len(sessions))
        return len(sessions)

    @property
    def clients(self) -> int:
        """How many connections are logged in right now."""
        return sum(1 for s in self._sessions if s.authenticated and not s.closed)

    # -- what the simulator changes ------------------------------------------------

    def set_device_state(self, device: str, state: str) -> None:
        """Set ``device`` (``PJSIP/agent1``) to ``state`` and emit DeviceStateChange if it changed."""
        if device.startswith("PJSIP/"):
            self._add_endpoint(device.removeprefix("PJSIP/"))
        if self._devices.get(device) == state:
            return
        self._devices[device] = state
        self.emit(
            {
                "Event": "DeviceStateChange",
                "Privilege": "call,all",
                "Device": device,
                "State": state,
            }
        )

    def set_contact(self, endpoint: str, registered: bool) -> None:
        """A phone REGISTERs (``True``) or un-REGISTERs: emit the events trace 09 shows.

        REGISTER: PeerStatus Reachable, DeviceStateChange NOT_INUSE, ContactStatus
        NonQualified. Un-REGISTER: PeerStatus Unreachable, DeviceStateChange
        UNAVAILABLE, ContactStatus Removed. Repeating the current state emits nothing.
        ``endpoint`` is the PJSIP endpoint name (``agent1``); ``PJSIP/agent1`` is
        accepted too, since the simulator names agents by their device.
        """
        endpoint = endpoint.removeprefix("PJSIP/")
        self._add_endpoint(endpoint)
        current = self._contacts.get(endpoint)
        if registered == (current is not None):
            return
        if registered:
            contact = self._new_contact(endpoint)
            self._contacts[endpoint] = contact
            peer_status, device_state, contact_status = "Reachable", "NOT_INUSE", "NonQualified"
        else:
            assert current is not None
            contact = current
            del self._contacts[endpoint]
            peer_status, device_state, contact_status = "Unreachable", "UNAVAILABLE", "Removed"
        self.emit(
            {
                "Event": "PeerStatus",
                "Privilege": "system,all",
                "ChannelType": "PJSIP",
                "Peer": f"PJSIP/{endpoint}",
                "PeerStatus": peer_status,
            }
        )
        self.set_device_state(f"PJSIP/{endpoint}", device_state)
        self.emit(
            {
                "Event": "ContactStatus",
                "Privilege": "system,all",
                "URI": contact.uri,
                "ContactStatus": contact_status,
                "AOR": endpoint,
                "EndpointName": endpoint,
                "RoundtripUsec": "0",
            }
        )

    def emit(self, event: Mapping[str, str | list[str]]) -> None:
        """Send an event to every logged-in client that asked for events."""
        log.debug("ami_server.event", ami_event=event.get("Event"), clients=self.clients)
        for session in list(self._sessions):
            if session.authenticated and session.events:
                session.send(event)

    # -- internals ----------------------------------------------------------------

    def _add_endpoint(self, endpoint: str) -> None:
        self._endpoints.setdefault(endpoint, None)

    def _new_contact(self, endpoint: str) -> _Contact:
        # Deterministic look-alikes of what baresip registered in trace 09.
        digest = hashlib.md5(f"{endpoint}:{time.time_ns()}".encode()).hexdigest()
        port = 5080 + 2 * list(self._endpoints).index(endpoint)
        return _Contact(
            endpoint=endpoint,
            uri=f"sip:{endpoint}-0x{digest[:12]}@127.0.0.1:{port}",
            object_name=f"{endpoint};@{digest}",
            call_id=digest[-16:],
            via_port=port,
            expiration=int(time.time()) + 3600,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        self._session_count += 1
        session = _Session(writer=writer, peer=peer, number=self._session_count)
        task = asyncio.current_task()
        if task is not None:
            session.tasks.add(task)
        self._sessions.add(session)
        log.debug("ami_server.connected", peer=peer)
        try:
            writer.write(BANNER.encode())
            while not session.closed:
                action = await self._read_message(reader)
                if action is None:
                    break
                self.received.append((session.number, dict(action)))
                if session.stalled:
                    continue
                self._handle(session, action)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            session.closed = True
            self._sessions.discard(session)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            log.debug("ami_server.disconnected", peer=peer)

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> list[tuple[str, str]] | None:
        """Headers up to the blank line (``\\r\\n`` or bare ``\\n``); ``None`` at EOF."""
        headers: list[tuple[str, str]] = []
        while True:
            raw = await reader.readline()
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if headers:
                    return headers
                continue
            key, sep, value = line.partition(":")
            if sep:
                headers.append((key.strip(), value.lstrip(" ")))

    def _handle(self, session: _Session, headers: list[tuple[str, str]]) -> None:
        """Answer one action (headers are case-insensitive, as in manager.c)."""
        fields = {key.lower(): value for key, value in headers}
        action = fields.get("action", "").strip().lower()
        action_id = fields.get("actionid")

        def reply(response: str, **extra: str) -> dict[str, str]:
            message = {"Response": response}
            if action_id is not None:
                message["ActionID"] = action_id
            message.update(extra)
            return message

        if not action:
            session.send(reply("Error", Message="Missing action in request"))
            return
        if not session.authenticated and action not in ("login", "logoff", "challenge"):
            session.send(reply("Error", Message="Permission denied"))
            return
        if action == "login":
            self._login(session, fields, reply)
        elif action == "logoff":
            session.send(reply("Goodbye", Message="Thanks for all the fish."))
            session.closed = True
        elif action == "ping":
            session.send(reply("Success", Ping="Pong", Timestamp=f"{time.time():.6f}"))
        elif action == "devicestatelist":
            items = [
                {"Event": "DeviceStateChange", "Device": device, "State": state}
                for device, state in self._devices.items()
            ]
            self._send_list(
                session,
                action_id,
                "Device State Changes will follow",
                items,
                "DeviceStateListComplete",
            )
        elif action == "pjsipshowcontacts":
            self._send_list(
                session,
                action_id,
                "A listing of Contacts follows, presented as ContactList events",
                [self._contact_item(c) for c in self._contacts.values()],
                "ContactListComplete",
            )
        elif action == "pjsipshowendpoints":
            if not self._endpoints:
                session.send(reply("Error", Message="No endpoints found"))
                return
            self._send_list(
                session,
                action_id,
                "A listing of Endpoints follows, presented as EndpointList events",
                [self._endpoint_item(e) for e in self._endpoints],
                "EndpointListComplete",
            )
        else:
            session.send(reply("Error", Message="Invalid/unknown command"))

    def _login(
        self, session: _Session, fields: dict[str, str], reply: Callable[..., dict[str, str]]
    ) -> None:
        if fields.get("username") != self.username or fields.get("secret") != self.secret:
            # Asterisk answers, then drops the connection (manager.c returns -1).
            log.info("ami_server.login_refused", peer=session.peer, username=fields.get("username"))
            session.send(reply("Error", Message="Authentication failed"))
            session.closed = True
            return
        session.authenticated = True
        session.events = fields.get("events", "on").strip().lower() != "off"
        log.info("ami_server.login", peer=session.peer, username=self.username)
        session.send(reply("Success", Message="Authentication accepted"))
        uptime = str(int(time.monotonic() - self._started_at))
        if session.events:
            session.send(
                {
                    "Event": "FullyBooted",
                    "Privilege": "system,all",
                    "Uptime": uptime,
                    "LastReload": uptime,
                    "Status": "Fully Booted",
                }
            )

    @staticmethod
    def _send_list(
        session: _Session,
        action_id: str | None,
        message: str,
        items: list[dict[str, str]],
        complete_event: str,
    ) -> None:
        """Asterisk's list framing: ack with EventList start, items, then the Complete event."""
        ack = {"Response": "Success"}
        tag = {} if action_id is None else {"ActionID": action_id}
        ack.update(tag)
        ack.update({"EventList": "start", "Message": message})
        session.send(ack)
        for item in items:
            event = {"Event": item["Event"], **tag}
            event.update({k: v for k, v in item.items() if k != "Event"})
            session.send(event)
        session.send(
            {"Event": complete_event, **tag, "EventList": "Complete", "ListItems": str(len(items))}
        )

    @staticmethod
    def _contact_item(contact: _Contact) -> dict[str, str]:
        return {
            "Event": "ContactList",
            "ObjectType": "contact",
            "ObjectName": contact.object_name,
            "ViaAddr": "127.0.0.1",
            "QualifyTimeout": "3.000000",
            "Qualify2xxOnly": "false",
            "CallId": contact.call_id,
            "RegServer": "",
            "PruneOnBoot": "no",
            "Path": "",
            "Endpoint": contact.endpoint,
            "ViaPort": str(contact.via_port),
            "AuthenticateQualify": "no",
            "Uri": contact.uri,
            "QualifyFrequency": "0",
            "UserAgent": "baresip v1.0.0 (x86_64/linux)",
            "ExpirationTime": str(contact.expiration),
            "OutboundProxy": "",
            "Status": "NonQualified",
            "RoundtripUsec": "N/A",
        }

    def _endpoint_item(self, endpoint: str) -> dict[str, str]:
        contact = self._contacts.get(endpoint)
        state = self._devices.get(f"PJSIP/{endpoint}", "UNAVAILABLE")
        return {
            "Event": "EndpointList",
            "ObjectType": "endpoint",
            "ObjectName": endpoint,
            "Transport": "",
            "Aor": endpoint,
            "Auths": f"{endpoint}-auth",
            "OutboundAuths": "",
            "Contacts": f"{endpoint}/{contact.uri}," if contact else "",
            "DeviceState": DEVICE_STATE_TEXT.get(state, "Unknown"),
            "ActiveChannels": "1" if state in _BUSY_STATES else "0",
        }
