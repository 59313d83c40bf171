"""Agents' SIP phones as AMI (panoramisk) sees them: registered? idle?

Why AMI and not ARI: with the default ARI subscription our app never hears
about endpoints or device states (trace 11), and ``GET /deviceStates`` lists
only ARI-controlled states (trace 09). AMI reports every REGISTER and
un-REGISTER and every device state change of ``PJSIP/agentN``.

How it works (messages as in ``tests/traces/09-ami-agent-presence.jsonl``):

* After every login (the first and each reconnect) we read the whole truth:
  ``PJSIPShowContacts`` (which endpoints have a contact) and
  ``DeviceStateList`` (``PJSIP/agent1`` → ``NOT_INUSE``). Events lost while
  disconnected therefore do not matter.
* Between snapshots we follow ``PeerStatus`` (Reachable/Unreachable),
  ``ContactStatus`` (NonQualified/Reachable/.../Removed) and
  ``DeviceStateChange``. A REGISTER arrives as PeerStatus Reachable →
  DeviceStateChange NOT_INUSE → ContactStatus NonQualified, so ``on_change``
  can see an intermediate state (registered but still UNAVAILABLE).
* Connection life (issue 9), where panoramisk 1.4 falls short — read in its
  source (``manager.py``, ``ami_protocol.py``):

  - Its pinger sends ``Ping`` every ``ping_interval`` but never looks at the
    answer, so a half-open socket (Asterisk's host gone, a NAT/firewall that
    forgot the flow) is never noticed: TCP reports nothing until its own
    retransmission gives up, many minutes later. Ours sends a Ping every
    ``ping_seconds`` and aborts the connection when the previous one is still
    unanswered at the next tick: a silent peer is noticed within
    ``2 × ping_seconds`` (10 s by default).
  - It reconnects every ``reconnect_timeout`` seconds, forever, and its
    ``connect`` has no timeout. Ours waits ``reconnect_delay`` doubling to
    :data:`RECONNECT_MAX_DELAY` (with jitter, reset after a login), gives each
    TCP connect ``connect_timeout`` seconds, and stops for good after
    :meth:`AgentPhones.stop`. A refused first login raises
    :class:`AmiLoginError`; a refused re-login is logged each time and retried
    with the same backoff (an admin may be fixing the secret).
  - On a lost connection it queues every unanswered action and sends it again
    after the next login (``AMIProtocol.close`` → ``awaiting_actions`` →
    ``send_awaiting_actions`` on FullyBooted). Asterisk may have run it
    already — an Originate sent twice rings a phone twice — so ours fails
    every pending action with :class:`AmiConnectionLost` instead and sends
    nothing again; the snapshot is simply read afresh after the next login.
  - A header Asterisk repeats becomes a list in panoramisk; when that header
    is one it routes by (``Event``, ``ActionID``, ``Response``...), its own
    dispatch raises and asyncio drops the connection. Ours skips such a
    message with one ``ami.garbled_message`` warning and stays connected; if
    it answered a pending action, that action fails with
    :class:`AmiGarbledAnswer` rather than waiting forever.
  - It buffers a message without limit. Ours drops the connection (and
    reconnects with the backoff) when one message passes
    :data:`MAX_MESSAGE_BYTES`.

A phone counts as registered while it has a contact that is not
``Unreachable``/``Removed``: a contact that stopped answering qualify cannot
take a call either.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk import Manager  # type: ignore[import-untyped]
from panoramisk.actions import Action  # type: ignore[import-untyped]
from panoramisk.ami_protocol import AMIProtocol  # type: ignore[import-untyped]
from panoramisk.message import Message  # type: ignore[import-untyped]

log = structlog.get_logger(__name__)

#: ContactStatus values meaning "this contact cannot take calls" (res_pjsip's status map).
_CONTACT_DOWN = {"Unreachable", "Unavailable", "Removed"}
#: Stand-in contact when PeerStatus says Reachable before we know the contact's URI.
_PEER_REACHABLE = "<peer reachable>"
#: Every device state Asterisk reports (``ast_devstate_str``); anything else is not a phone's state.
KNOWN_DEVICE_STATES = frozenset({
    "UNKNOWN", "NOT_INUSE", "INUSE", "BUSY", "INVALID", "UNAVAILABLE", "RINGING", "RINGINUSE", "ONHOLD",
})
#: What a value sent to AMI must not hold: a CR or LF would end its header line and start
#: another (header injection), a NUL ends the string inside Asterisk.
_AMI_LINE_BREAKERS = str.maketrans("", "", "\r\n\x00")


def ami_safe(value: object) -> str:
    """``value`` as one AMI header value: CR, LF and NUL removed, lone surrogates replaced.

    Why here and not at each caller: every action we send (panoramisk's Login
    and Ping included) passes :class:`_Protocol`, so no value — a caller id,
    a configured username — can add a header line, whoever built the action.
    """
    text = (value if isinstance(value, str) else str(value)).translate(_AMI_LINE_BREAKERS)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def ami_safe_action(action: Any) -> Any:
    """``action`` with every key and value :func:`ami_safe`; an :class:`Action` is cleaned in place
    (it carries the future its sender awaits), a plain mapping is copied."""
    cleaned = {
        ami_safe(k): [ami_safe(v) for v in value] if isinstance(value, list | tuple) else ami_safe(value)
        for k, value in action.items()
    }
    if not isinstance(action, Action):
        return cleaned
    # panoramisk's CaseInsensitiveDict refuses ``del``; its store is the one place to empty.
    action._store.clear()
    action.update(cleaned)
    return action



#: The most one AMI message may hold. Asterisk's messages to us are well under 4 KiB (a
#: ContactList item is the longest); a peer sending more without a blank line is broken or
#: hostile, and would otherwise grow our buffer until the controller runs out of memory.
MAX_MESSAGE_BYTES = 1024 * 1024
#: Headers panoramisk reads as one string, lower-cased as AMI compares them: to route a
#: message (to a pending action by ActionID/CommandID, else to the handlers by Event) and
#: to tell a list answer's end (Response, Message, EventList). Written twice, any of them
#: would make panoramisk raise, or complete the wrong action.
ROUTING_HEADERS = frozenset({"event", "actionid", "commandid", "response", "message", "eventlist"})
#: How an AMI session starts (then the version and CRLF).
BANNER = b"Asterisk Call Manager/"
#: How many characters of a skipped message the warning quotes.
_EXCERPT_CHARS = 200
#: How many garbled actions' ids are remembered, so the rest of their answer is skipped too.
_ABANDONED_IDS = 64

#: A Ping every this many seconds; one unanswered at the next tick ends the connection.
DEFAULT_PING_SECONDS = 5.0
#: Reconnect delays: ``reconnect_delay`` doubling up to this cap.
RECONNECT_MAX_DELAY = 10.0
#: Seconds a TCP connect to AMI may take (panoramisk's own has no limit).
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class PhoneState:
    """What we know of one agent's phone: its PJSIP endpoint, registration and device state."""

    endpoint: str
    registered: bool
    device_state: str  # Asterisk's words: NOT_INUSE, INUSE, RINGING, UNAVAILABLE, UNKNOWN...


class AmiLoginError(Exception):
    """Asterisk refused our AMI username/secret."""


class AmiConnectionLost(ConnectionError):
    """The AMI connection was down, or dropped before Asterisk answered the action.

    The action is not sent again after the reconnect: Asterisk may have run it.
    """


class AmiGarbledAnswer(Exception):
    """Asterisk's answer to the action could not be read (a routing header written twice).

    The action may or may not have run; the connection stays up.
    """


def excerpt(text: str) -> str:
    """The start of ``text`` as one printable ASCII line (CR, LF, controls and non-ASCII
    escaped), short enough for a log line whatever a peer sent."""
    escaped = text[:_EXCERPT_CHARS].encode("unicode_escape").decode("ascii")
    if len(text) > _EXCERPT_CHARS or len(escaped) > _EXCERPT_CHARS:
        return escaped[:_EXCERPT_CHARS] + "..."
    return escaped


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback that reads a future's outcome, so a failed Ping logs no warning."""
    if not future.cancelled():
        future.exception()


class _Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's protocol, writing only actions whose values cannot break a header line,
    reading only messages it can route (see :meth:`data_received`), and failing the pending
    actions when it closes.

    ``AMIProtocol.close`` moves every unanswered action (but Ping and Login) to
    the manager's ``awaiting_actions``, to be sent again on the next
    connection. Here each pending action's future fails with
    :class:`AmiConnectionLost` at once and nothing is queued, so no action is
    ever sent twice and no caller waits on a future that only a reconnect
    would settle (panoramisk also forgets actions that had a partial answer,
    leaving their futures pending forever).
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._buffer = bytearray()
        self._scanned = 0  # where the next search for a blank line starts
        self._abandoned: dict[str, None] = {}  # ids of garbled answers, oldest first

    def send(self, data: Any, as_list: bool = False) -> Any:
        return super().send(ami_safe_action(data), as_list=as_list)

    def data_received(self, data: bytes) -> None:
        """panoramisk's framing (a message ends with a blank line), in bytes, with a size cap.

        Bytes rather than panoramisk's per-chunk decode: a UTF-8 character
        split between two reads is kept whole.
        """
        buffer = self._buffer
        buffer += data
        if self.version is None and buffer.startswith(BANNER) and b"\r\n" in buffer:
            banner = buffer.split(b"\r\n", 1)[0].decode("ascii", "replace")
            self.version = banner.partition("/")[2].strip()
        start = 0
        while not self.closed:
            end = buffer.find(b"\r\n\r\n", max(start, self._scanned))
            if end < 0:
                break
            self._scanned = 0
            if end - start > MAX_MESSAGE_BYTES:
                self._too_large(end - start)
                return
            self._deliver(bytes(buffer[start:end]))
            start = end + 4
        del buffer[:start]
        self._scanned = max(0, len(buffer) - 3)
        if len(buffer) > MAX_MESSAGE_BYTES and not self.closed:
            self._too_large(len(buffer))

    def _deliver(self, raw: bytes) -> None:
        """Parse one message and hand it to panoramisk, unless it is garbled or its action's
        answer already was: a message must never raise out of here (asyncio would drop the
        connection) nor complete the wrong action."""
        text = raw.decode(getattr(self, "encoding", "utf-8"), "ignore").strip()
        message = Message.from_line(text)
        if message is None:
            return
        # AMI header names are case-insensitive: "ActionID" and "actionid" are one header twice.
        # str.count on the lowered text, not a second parse: this runs for every message.
        lines = "\r\n" + text.lower()
        repeated = [h for h in ROUTING_HEADERS if lines.count(f"\r\n{h}:") > 1]
        if repeated:
            self._skip(text, f"{', '.join(sorted(repeated))} repeated", repeated=sorted(repeated))
            return
        if message.action_id is not None and message.action_id in self._abandoned:
            return  # the rest of an answer already failed as garbled
        try:
            self.handle_message(message)
        except Exception as exc:  # noqa: BLE001 - whatever panoramisk or a handler raised, stay up
            self._skip(text, f"unreadable: {exc!r}", error=repr(exc))

    def _skip(self, text: str, why: str, **fields: Any) -> None:
        """Log a garbled message once; fail the pending action it answers (by any ActionID or
        CommandID it carries, in any letter case)."""
        headers = (line.partition(":") for line in text.split("\r\n"))
        ids = [value.strip() for key, _, value in headers
               if key.strip().lower() in ("actionid", "commandid")]
        failed: list[str] = []
        for action_id in ids:
            action = self.responses.pop(action_id, None)
            if action is None:
                continue
            for other in filter(None, (action.id, action.action_id)):
                self.responses.pop(other, None)
                self._abandoned[other] = None
            if not action.future.done():
                name = str(action.get("Action"))
                failed.append(name)
                action.future.set_exception(
                    AmiGarbledAnswer(f"Asterisk's answer to {name!r} was garbled ({why})")
                )
        while len(self._abandoned) > _ABANDONED_IDS:
            del self._abandoned[next(iter(self._abandoned))]
        log.warning("ami.garbled_message", reason=why, failed_actions=failed,
                    excerpt=excerpt(text), **fields)

    def _too_large(self, size: int) -> None:
        """One message past the cap: drop the connection; the manager reconnects with backoff."""
        self._buffer.clear()
        log.error("ami.message_too_large", size=size, limit=MAX_MESSAGE_BYTES)
        reason = f"an AMI message of over {MAX_MESSAGE_BYTES} bytes"
        if isinstance(self.factory, _Manager) and self.factory.protocol is self:
            self.factory.drop(reason)
        else:
            self.transport.abort()

    def close(self) -> None:
        responses: dict[str, Any] = getattr(self, "responses", {})
        pending = {id(action): action for action in responses.values()}
        responses.clear()  # in place: the manager holds the same dict
        for action in pending.values():
            if not action.future.done():
                name = action.get("Action")
                action.future.set_exception(
                    AmiConnectionLost(f"AMI connection lost before {name!r} was answered")
                )
        if not getattr(self, "closed", True):
            try:
                self.transport.close()
            finally:
                self.closed = True


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager with liveness, backoff, a stop switch and no re-sent actions."""

    def __init__(
        self,
        owner: AgentPhones,
        *,
        reconnect_delay: float,
        ping_seconds: float,
        connect_timeout: float,
        **config: Any,
    ) -> None:
        super().__init__(protocol_factory=_Protocol, **config)
        # Manager.__init__ truncates these to int; call_later takes fractions.
        self.reconnect_timeout = reconnect_delay
        self.ping_delay = self.ping_interval = ping_seconds
        self.connect_timeout = connect_timeout
        self.owner = owner
        self.stopped = False
        self._next_delay = reconnect_delay
        self._unanswered_ping: asyncio.Future[Any] | None = None
        self._lost_reason: str | None = None

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """One TCP connect, bounded by ``connect_timeout`` (a SYN into a black hole
        would otherwise wait for the kernel's minutes-long retry)."""
        if self.stopped:  # a reconnect scheduled before stop()
            return None
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        task = self.loop.create_task(
            asyncio.wait_for(
                self.loop.create_connection(
                    _Protocol, self.config["host"], self.config["port"], ssl=self.config["ssl"]
                ),
                self.connect_timeout,
            )
        )
        task.add_done_callback(self.connection_made)
        return task

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            return
        if self.stopped:
            if f.exception() is None:
                f.result()[0].close()
            return
        exc = f.exception()
        if exc is not None:
            # Refused, unreachable or timed out (TimeoutError is an OSError): try again later.
            self.owner._connect_failed(exc)
            self._schedule_reconnect()
            return
        self._unanswered_ping = None
        self._lost_reason = None
        super().connection_made(f)  # logs in; schedules ping() after ping_delay

    def login(self, future: asyncio.Future[Any]) -> bool:
        if future.cancelled() or future.exception() is not None:
            # The connection died before the answer; the reconnect logs in again.
            self.authenticated_future = None
            if not future.cancelled() and isinstance(future.exception(), AmiGarbledAnswer):
                # Still connected but not logged in: start over rather than wait forever.
                self.drop("garbled answer to Login")
            return False
        ok = bool(super().login(future))
        if ok:
            self._next_delay = self.reconnect_timeout
        self.owner._login_result(ok, future.result())
        return ok

    def ping(self) -> None:
        """Liveness check, every ``ping_interval`` seconds from the TCP connect on.

        The previous Ping still unanswered means the peer has gone silent:
        abort (not close, which would wait for unsent bytes a dead peer never
        acknowledges), and ``connection_lost`` reconnects. Before login
        Asterisk answers Ping with "Permission denied", which proves it alive
        just as well.
        """
        self.pinger = self.loop.call_later(self.ping_interval, self.ping)
        protocol = self.protocol
        if protocol is None or protocol.closed:
            return
        previous = self._unanswered_ping
        if previous is not None and not previous.done():
            self.drop(f"no answer to Ping within {self.ping_interval:g} s")
            return
        self._unanswered_ping = protocol.send({"Action": "Ping"})
        self._unanswered_ping.add_done_callback(_retrieve)

    def drop(self, reason: str) -> None:
        """End the connection now, saying why; ``connection_lost`` reconnects.

        Abort, not close: close would wait for unsent bytes a dead peer never
        acknowledges.
        """
        protocol = self.protocol
        if protocol is None or protocol.closed:
            return
        self._lost_reason = reason
        protocol.transport.abort()

    async def send_awaiting_actions(self, *_: Any) -> None:
        """Run by panoramisk on FullyBooted to re-send queued actions: we fail them instead."""
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost("not re-sent after a reconnect"))

    def connection_lost(self, exc: Any) -> None:
        """panoramisk's, with our reason, backoff and stop switch (its own is not called)."""
        self._connected = False
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        reason = self._lost_reason
        if reason is None:
            if isinstance(exc, Mapping) and str(exc.get("Event", "")).lower() == "shutdown":
                reason = "Asterisk shut down"
            elif exc is None:
                reason = "closed by Asterisk"
            else:
                reason = repr(exc)
        self.owner._connection_lost(reason)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self.stopped:
            return
        delay = min(RECONNECT_MAX_DELAY, self._next_delay * random.uniform(0.8, 1.2))
        self._next_delay = min(RECONNECT_MAX_DELAY, self._next_delay * 2)
        self.owner._reconnect_wait(delay)
        self.loop.call_later(delay, self.connect)


class AgentPhones:
    """Tracks registration and device state of the agents' PJSIP phones over AMI."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        endpoints: Iterable[str],
        on_change: Callable[[PhoneState], None],
        reconnect_delay: float = 0.2,
        login_timeout: float = 10.0,
        ping_seconds: float = DEFAULT_PING_SECONDS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """``endpoints`` are PJSIP endpoint names (``agent1``); ``on_change`` gets each new state.

        ``ping_seconds``: a Ping every so often; a silent Asterisk is noticed
        within twice that. ``reconnect_delay``: the first retry's delay,
        doubling up to :data:`RECONNECT_MAX_DELAY`.
        """
        self._config = {"host": host, "port": port, "username": username, "secret": secret}
        self._on_change = on_change
        self._reconnect_delay = reconnect_delay
        self._login_timeout = login_timeout
        self._ping_seconds = ping_seconds
        self._connect_timeout = connect_timeout
        self._contacts: dict[str, set[str]] = {e: set() for e in endpoints}
        self._devices: dict[str, str] = {e: "UNKNOWN" for e in self._contacts}
        self._states: dict[str, PhoneState] = {
            e: PhoneState(e, False, "UNKNOWN") for e in self._contacts
        }
        self._manager: _Manager | None = None
        self._first_login: asyncio.Future[bool] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self.connected = False

    # -- public -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, log in and read the initial state.

        If Asterisk is not reachable yet this returns with ``connected`` False
        and panoramisk keeps retrying in the background. A refused login
        raises :class:`AmiLoginError` (retrying a wrong secret is pointless).
        """
        loop = asyncio.get_running_loop()
        self._first_login = loop.create_future()
        self._manager = self._new_manager(loop)
        try:
            await self._manager.connect()
        except OSError as exc:
            log.warning(
                "ami.unreachable",
                host=self._config["host"],
                port=self._config["port"],
                error=repr(exc),
            )
            return
        try:
            ok = await asyncio.wait_for(asyncio.shield(self._first_login), self._login_timeout)
        except TimeoutError:
            log.warning("ami.login_timeout", host=self._config["host"])
            return
        if not ok:
            await self.stop()
            raise AmiLoginError(f"AMI login refused for {self._config['username']!r}")
        if self._resync_task is not None:
            # wait() rather than await: a snapshot cut short by a drop is retried
            # after the reconnect, and must not look like start() being cancelled.
            await asyncio.wait({self._resync_task})

    async def stop(self) -> None:
        """Disconnect for good: no reconnect after this (Asterisk needs no Logoff)."""
        if self._manager is not None:
            self._manager.stopped = True
            self._manager.close()
        await self._cancel_resync()
        self.connected = False

    def _new_manager(self, loop: asyncio.AbstractEventLoop) -> _Manager:
        """The panoramisk manager, not yet connected, with our event handlers registered."""
        manager = _Manager(
            self,
            reconnect_delay=self._reconnect_delay,
            ping_seconds=self._ping_seconds,
            connect_timeout=self._connect_timeout,
            loop=loop,
            events="on",
            **self._config,
        )
        manager.register_event("DeviceStateChange", self._on_device_state)
        manager.register_event("PeerStatus", self._on_peer_status)
        manager.register_event("ContactStatus", self._on_contact_status)
        return manager

    def state(self, endpoint: str) -> PhoneState:
        """The last known state of a tracked endpoint (KeyError for one we do not track)."""
        return self._states[endpoint]

    async def send_action(self, action: Mapping[str, str]) -> Any:
        """Send one AMI action; its answer (a Message, or a list for list actions).

        Raises :class:`AmiConnectionLost` when AMI is down now or the
        connection drops before Asterisk answers, :class:`AmiGarbledAnswer`
        when the answer cannot be read. The action is then never
        sent again after the reconnect (panoramisk would): Asterisk may have
        run it, and an Originate sent twice rings a phone twice. Whether to
        try again is the caller's call, knowing what the action does.
        """
        manager = self._manager
        protocol = manager.protocol if manager is not None else None
        if manager is None or not self.connected or protocol is None or protocol.closed:
            raise AmiConnectionLost(f"AMI is not connected; {action.get('Action')!r} not sent")
        return await manager.send_action(dict(action))

    # -- panoramisk callbacks ---------------------------------------------------------

    def _login_result(self, ok: bool, response: Message) -> None:
        if self._first_login is not None and not self._first_login.done():
            self._first_login.set_result(ok)
        if not ok:
            log.error(
                "ami.login_refused",
                username=self._config["username"],
                message=response.get("Message", ""),
            )
            return
        self.connected = True
        log.info("ami.logged_in", host=self._config["host"], port=self._config["port"])
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.ensure_future(self._resync())

    def _connection_lost(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if self._resync_task is not None:
            self._resync_task.cancel()
            self._resync_task = None
        if was:
            log.warning("ami.disconnected", host=self._config["host"],
                        port=self._config["port"], reason=reason)
        else:
            log.info("ami.connection_lost_before_login", host=self._config["host"], reason=reason)

    def _connect_failed(self, exc: BaseException) -> None:
        log.debug("ami.connect_failed", host=self._config["host"], error=repr(exc))

    def _reconnect_wait(self, delay: float) -> None:
        log.debug("ami.reconnect_wait", delay=round(delay, 3))

    async def _cancel_resync(self) -> None:
        task, self._resync_task = self._resync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _resync(self) -> None:
        """Read contacts and device states afresh; emit what changed."""
        try:
            await self._read_snapshot()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Never fatal: the next login (or live events) will set things right.
            log.exception("ami.snapshot_failed")

    async def _read_snapshot(self) -> None:
        assert self._manager is not None
        contacts, devices = await asyncio.gather(
            self._manager.send_action({"Action": "PJSIPShowContacts"}),
            self._manager.send_action({"Action": "DeviceStateList"}),
        )
        fresh_contacts: dict[str, set[str]] = {e: set() for e in self._contacts}
        for item in _items(contacts, "ContactList"):
            fields = _headers(item, "Endpoint", "Status", "Uri", "ObjectName")
            if fields is None:
                continue
            endpoint, status, uri, object_name = fields
            if endpoint in fresh_contacts and status not in _CONTACT_DOWN:
                fresh_contacts[endpoint].add(uri or object_name)
        fresh_devices = {e: "UNKNOWN" for e in self._devices}
        for item in _items(devices, "DeviceStateChange"):
            fields = _headers(item, "Device", "State")
            if fields is None:
                continue
            endpoint = _pjsip_endpoint(fields[0])
            if endpoint in fresh_devices and fields[1] in KNOWN_DEVICE_STATES:
                fresh_devices[endpoint] = fields[1]
        self._contacts = fresh_contacts
        self._devices = fresh_devices
        log.info(
            "ami.snapshot",
            contacts=sum(map(len, fresh_contacts.values())),
            devices=len(fresh_devices),
        )
        for endpoint in self._states:
            self._publish(endpoint)

    def _on_device_state(self, _manager: Manager, event: Message) -> None:
        fields = _headers(event, "Device", "State")
        if fields is None:
            return
        endpoint = _pjsip_endpoint(fields[0])
        if endpoint not in self._devices:
            return
        state = fields[1] or "UNKNOWN"
        if state not in KNOWN_DEVICE_STATES:
            # Not one of Asterisk's words: keep what we knew rather than guess free or busy.
            log.warning("ami.bad_event", ami_event="DeviceStateChange", endpoint=endpoint, state=state[:80])
            return
        self._devices[endpoint] = state
        self._publish(endpoint)

    def _on_peer_status(self, _manager: Manager, event: Message) -> None:
        fields = _headers(event, "Peer", "PeerStatus")
        if fields is None:
            return
        endpoint = _pjsip_endpoint(fields[0])
        if endpoint not in self._contacts:
            return
        status = fields[1]
        if status == "Reachable":
            if not self._contacts[endpoint]:
                self._contacts[endpoint].add(_PEER_REACHABLE)
        elif status in ("Unreachable", "Unregistered", "Rejected"):
            self._contacts[endpoint].clear()
        self._publish(endpoint)

    def _on_contact_status(self, _manager: Manager, event: Message) -> None:
        fields = _headers(event, "EndpointName", "AOR", "URI", "ContactStatus")
        if fields is None:
            return
        name, aor, uri, status = fields
        endpoint = name or aor
        if endpoint not in self._contacts:
            return
        contacts = self._contacts[endpoint]
        contacts.discard(_PEER_REACHABLE)  # now we know the real contact
        if status in _CONTACT_DOWN:
            contacts.discard(uri)
        else:
            contacts.add(uri)
        self._publish(endpoint)

    def _publish(self, endpoint: str) -> None:
        """Recompute one phone's state; tell ``on_change`` only if it differs."""
        new = PhoneState(endpoint, bool(self._contacts[endpoint]), self._devices[endpoint])
        if new == self._states[endpoint]:
            return
        self._states[endpoint] = new
        log.info(
            "ami.phone_state",
            endpoint=endpoint,
            registered=new.registered,
            device_state=new.device_state,
        )
        try:
            self._on_change(new)
        except Exception:
            log.exception("ami.on_change_failed", endpoint=endpoint)


def _headers(message: Message, *keys: str) -> tuple[str, ...] | None:
    """The text of each header (``""`` when absent), or ``None`` when one is not a single string.

    Why: panoramisk turns a header written twice into a list, and a garbled
    message must change no phone's state — it is logged and skipped, never
    raised out of the event handler (which would drop the AMI connection).
    """
    values = tuple(message.get(key, "") for key in keys)
    if all(isinstance(v, str) for v in values):
        return values
    log.warning("ami.bad_event", ami_event=str(message.get("Event", ""))[:80],
                headers=[k for k, v in zip(keys, values, strict=True) if not isinstance(v, str)])
    return None


def _pjsip_endpoint(device: str) -> str:
    """``PJSIP/agent1`` → ``agent1``; anything else → ``""``."""
    tech, _, name = device.partition("/")
    return name if tech.upper() == "PJSIP" else ""


def _items(result: Any, event: str) -> list[Message]:
    """The list items of a list action's result (panoramisk gives a list, or one Message on error)."""
    if not isinstance(result, list):
        log.warning("ami.list_failed", expected=event, response=dict(result or {}))
        return []
    return [m for m in result if m.get("Event") == event]
