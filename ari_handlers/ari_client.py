"""Asterisk REST Interface (ARI) client: REST requests and the event WebSocket.

Why this module is thin: the call engine (``callflow/``) decides, this client
only carries its commands to Asterisk and Asterisk's events back. Every method
is named after the ARI spec's nickname (snake_case) and sends only paths and
query parameters that the ARI spec documents (``tests/spec/ari-digest.json``);
``tests/test_ari_client.py`` checks every request against the spec.

Things the real Asterisk 22 traces taught us (``tests/traces/``):

* Errors are ``{"message": ...}`` except a failed originate, which answers
  ``500 {"error": "Allocation failed"}`` (trace 08). :class:`AriError` reads both.
* A 404 on a channel that has just hung up is normal (trace 02/08); callers
  catch :class:`AriError`. The few reads where "not found" is an answer rather
  than a failure (:meth:`AriClient.get_channel`, :meth:`AriClient.get_channel_var`,
  :meth:`AriClient.get_application`) return ``None`` instead.
* After the WebSocket reconnects Asterisk replays nothing, no StasisStart
  (trace 07/12). :meth:`AriClient.events` therefore calls ``on_connect`` after
  every (re)connect, so the controller can reconcile with ``list_channels``.
* A socket can die without a word (Asterisk's host gone, a NAT or firewall
  that forgot the flow): TCP then says nothing for many minutes. The event
  socket therefore uses aiohttp's heartbeat: after ``heartbeat_seconds``
  without a frame it sends a WebSocket ping and gives up when no pong comes
  within half that, so a silent Asterisk is noticed within about
  1.5 × ``heartbeat_seconds`` (+ up to 1 s of aiohttp's timer rounding):
  under 10 s by default. The opening handshake gets ``connect_timeout``
  seconds, so a reconnect to a peer that accepts and never answers is retried
  instead of waiting for aiohttp's 5-minute default.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

log = structlog.get_logger(__name__)

#: Reconnect delays of the event WebSocket: first retry, then doubling up to the cap.
RECONNECT_MIN_DELAY = 0.2
RECONNECT_MAX_DELAY = 10.0
#: Seconds without a frame before the event socket pings Asterisk (no pong in half → dead).
DEFAULT_HEARTBEAT_SECONDS = 6.0
#: Seconds the event socket's opening handshake (TCP + HTTP upgrade) may take.
DEFAULT_CONNECT_TIMEOUT = 5.0

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
ConnectionHandler = Callable[[], Awaitable[None]]


class AriError(Exception):
    """An ARI request that Asterisk refused (non-2xx) or that never got an answer.

    ``status`` is the HTTP status (0 when Asterisk could not be reached) and
    ``message`` the text Asterisk gave, from either ``{"message": ...}`` or
    ``{"error": ...}``.
    """

    def __init__(self, status: int, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {message}".strip())
        self.status = status
        self.message = message
        self.method = method
        self.path = path

    @classmethod
    def from_body(cls, status: int, body: str, *, method: str = "", path: str = "") -> AriError:
        """Build the error from a response body, whichever of Asterisk's two shapes it has."""
        message = body.strip()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key in ("message", "error"):
                value = parsed.get(key)
                if isinstance(value, str):
                    message = value
                    break
        return cls(status, message, method=method, path=path)


class AriConnectionError(AriError):
    """Asterisk did not answer at all (refused, reset or timed out): status is 0."""


def _seg(value: str) -> str:
    """One path segment, quoted so that an id can never change the route."""
    return quote(value, safe="")


class AriClient:
    """REST calls and the event stream of one Stasis application."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        *,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 5.0,
        api_key_in_url: bool = False,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """``base_url`` is Asterisk's HTTP server (``http://127.0.0.1:8088``); ``/ari`` is added.

        ``heartbeat_seconds``: the event socket pings after that long without a
        frame and reconnects when the pong does not come within half of it.
        ``connect_timeout`` bounds each (re)connect of the event socket.

        ``api_key_in_url`` authenticates the WebSocket with ``?api_key=user:pass``
        instead of a Basic ``Authorization`` header (both are accepted by Asterisk;
        some proxies drop the header on upgrade).
        """
        self.base_url = base_url.rstrip("/")
        self.app = app
        # A plain header: aiohttp 3.14 deprecates its BasicAuth/auth= in favour of this.
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._auth_headers = {"Authorization": f"Basic {token}"}
        self._api_key = f"{username}:{password}"
        self._api_key_in_url = api_key_in_url
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._heartbeat = heartbeat_seconds
        self._connect_timeout = connect_timeout

    # -- plumbing ---------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the client can be built outside a running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def _request(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        """Send one request; return the parsed JSON body (``None`` for 204) or raise AriError."""
        url = f"{self.base_url}/ari{path}"
        query = {k: v for k, v in (params or {}).items()}
        try:
            async with self._get_session().request(
                method,
                url,
                params=query or None,
                headers=self._auth_headers,
                timeout=self._timeout,
            ) as resp:
                body = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("ari.request_failed", method=method, path=path, error=repr(exc))
            raise AriConnectionError(0, repr(exc), method=method, path=path) from exc
        log.debug("ari.request", method=method, path=path, params=query, status=status)
        if not 200 <= status < 300:
            raise AriError.from_body(status, body, method=method, path=path)
        if status == 204 or not body:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise AriError(
                status, f"unparsable response body: {body[:200]!r}", method=method, path=path
            ) from exc

    # -- channels ---------------------------------------------------------------

    async def ring(self, channel_id: str) -> None:
        """``ring``: send ringing (SIP 180) to a channel that is not answered yet."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def answer(self, channel_id: str) -> None:
        """``answer``: answer a channel (ChannelStateChange Up comes before the 204)."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def play(
        self, channel_id: str, media: Sequence[str], playback_id: str | None = None
    ) -> dict[str, Any]:
        """``play``: queue media (``sound:...``) on a channel; returns the Playback.

        Several media play one after another under one playback id (the spec's
        ``allowMultiple``, comma-joined). Choosing ``playback_id`` lets the engine
        match the PlaybackFinished to its own command.
        """
        if isinstance(media, str):
            media = [media]
        params = {"media": ",".join(media)}
        if playback_id is not None:
            params["playbackId"] = playback_id
        result: dict[str, Any] = await self._request(
            "POST", f"/channels/{_seg(channel_id)}/play", params
        )
        return result

    async def stop_playback(self, playback_id: str) -> None:
        """``stop`` on /playbacks: stop it (PlaybackFinished then says ``done``, trace 05)."""
        await self._request("DELETE", f"/playbacks/{_seg(playback_id)}")

    async def start_moh(self, channel_id: str, moh_class: str = "default") -> None:
        """``startMoh``: music on hold on one channel, so a waiting caller never hears silence."""
        await self._request("POST", f"/channels/{_seg(channel_id)}/moh", {"mohClass": moh_class})

    async def stop_moh(self, channel_id: str) -> None:
        """``stopMoh``: stop the channel's music on hold (204 even when none plays)."""
        await self._request("DELETE", f"/channels/{_seg(channel_id)}/moh")

    async def originate(
        self,
        *,
        endpoint: str,
        app: str,
        app_args: str,
        caller_id: str,
        channel_id: str,
        timeout: int | None = None,
    ) -> dict[str, Any]:
        """``originate``: call ``endpoint`` (``PJSIP/agent1``) into Stasis ``app``.

        The channel id is ours, so the events of the new leg can be tied to the
        call before the 200 arrives. An unregistered phone answers
        ``500 {"error": "Allocation failed"}`` (trace 04).
        """
        params = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "callerId": caller_id,
            "channelId": channel_id,
        }
        if timeout is not None:
            params["timeout"] = str(int(timeout))
        result: dict[str, Any] = await self._request("POST", "/channels", params)
        return result

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        max_seconds: float,
        beep: bool = True,
        terminate_on: str = "#",
        fmt: str = "wav",
        if_exists: str = "overwrite",
        max_silence_seconds: int = 0,
    ) -> dict[str, Any]:
        """``record``: record what the caller says (their name, R3) into stored recording ``name``.

        Returns the LiveRecording (``queued``; 201). It waits for the channel's
        playbacks queued before it, beeps, and ends with RecordingFinished
        (``recording.duration`` in whole seconds) on ``terminate_on`` (``#``,
        ``*``, ``any`` or ``none``), after ``max_seconds`` (rounded up; 0 = no
        limit), after ``max_silence_seconds`` of silence (0 = off), or when the
        caller hangs up. The key that ends it still arrives as
        ChannelDtmfReceived. ``if_exists`` is ``fail``, ``overwrite`` or
        ``append``; a name being recorded is 409 whatever it says. Play it back
        with media ``recording:<name>``.
        """
        params = {
            "name": name,
            "format": fmt,
            "maxDurationSeconds": str(max(0, math.ceil(max_seconds))),
            "beep": "true" if beep else "false",
            "terminateOn": terminate_on,
            "ifExists": if_exists,
        }
        if max_silence_seconds:
            params["maxSilenceSeconds"] = str(int(max_silence_seconds))
        result: dict[str, Any] = await self._request(
            "POST", f"/channels/{_seg(channel_id)}/record", params
        )
        return result

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        """A GET whose 404 means "Asterisk no longer has it" (a caller gone, a bridge deleted)."""
        try:
            result: dict[str, Any] = await self._request("GET", path)
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def stop_recording(self, name: str) -> None:
        """``stop`` on /recordings/live: end a recording now, keeping what was captured."""
        await self._request("POST", f"/recordings/live/{_seg(name)}/stop")

    async def get_stored_recording(self, name: str) -> dict[str, Any] | None:
        """``getStored``: the StoredRecording (``name``, ``format``), or ``None`` if there is none."""
        return await self._get_or_none(f"/recordings/stored/{_seg(name)}")

    async def delete_stored_recording(self, name: str) -> None:
        """``deleteStored``: remove a stored recording (a caller's name once it is no longer needed)."""
        await self._request("DELETE", f"/recordings/stored/{_seg(name)}")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """``hangup``: DELETE a channel with a Q.850-ish ``reason`` from the spec's list."""
        await self._request("DELETE", f"/channels/{_seg(channel_id)}", {"reason": reason})

    async def set_channel_var(self, channel_id: str, variable: str, value: str) -> None:
        """``setChannelVar``: keep state where Asterisk keeps it, for recovery after a restart."""
        await self._request(
            "POST",
            f"/channels/{_seg(channel_id)}/variable",
            {"variable": variable, "value": value},
        )

    async def get_channel_var(self, channel_id: str, variable: str) -> str | None:
        """``getChannelVar``: the value, or ``None`` when the variable is not set.

        Asterisk answers an unset variable with 404 "Provided variable was not
        found" (trace 08); any other error (e.g. "Channel not found") still raises.
        """
        try:
            result = await self._request(
                "GET", f"/channels/{_seg(channel_id)}/variable", {"variable": variable}
            )
        except AriError as exc:
            if exc.status == 404 and "variable" in exc.message.lower():
                return None
            raise
        if not isinstance(result, dict):
            return None
        value = result.get("value")
        return value if isinstance(value, str) else None

    async def get_channel(self, channel_id: str) -> dict[str, Any] | None:
        """``get``: the channel, or ``None`` if Asterisk no longer has it."""
        return await self._get_or_none(f"/channels/{_seg(channel_id)}")

    async def list_channels(self) -> list[dict[str, Any]]:
        """``list``: every channel Asterisk has, in Stasis or not (for reconciling)."""
        result = await self._request("GET", "/channels")
        return list(result or [])

    # -- bridges ----------------------------------------------------------------

    async def create_bridge(
        self, bridge_id: str, bridge_type: str = "mixing,dtmf_events", name: str = ""
    ) -> dict[str, Any]:
        """``createWithId``: a bridge with our id.

        The default ``mixing,dtmf_events`` keeps media in Asterisk so DTMF still
        raises ChannelDtmfReceived; a plain ``mixing`` bridge of two PJSIP
        channels goes native RTP and DTMF events vanish (trace 06).
        """
        params = {"type": bridge_type}
        if name:
            params["name"] = name
        result: dict[str, Any] = await self._request("POST", f"/bridges/{_seg(bridge_id)}", params)
        return result

    async def add_channel(
        self, bridge_id: str, channels: Sequence[str], *, absorb_dtmf: bool = False,
        role: str | None = None,
    ) -> None:
        """``addChannel``: put channels in a bridge (moving them from any other bridge).

        ``absorb_dtmf`` keeps the channels' key presses out of the bridge: an
        agent's softphone key codes raise events for us but the caller does
        not hear the tones.
        """
        if isinstance(channels, str):
            channels = [channels]
        params = {"channel": ",".join(channels)}
        if absorb_dtmf:
            params["absorbDTMF"] = "true"
        if role:
            params["role"] = role
        await self._request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params)

    async def remove_channel(self, bridge_id: str, channel: str) -> None:
        """``removeChannel``: take one channel out of a bridge."""
        await self._request(
            "POST", f"/bridges/{_seg(bridge_id)}/removeChannel", {"channel": channel}
        )

    async def get_bridge(self, bridge_id: str) -> dict[str, Any] | None:
        """``get`` on /bridges: the bridge (its ``channels``), or ``None`` if there is none.

        A restarted controller reads it to tell a caller still talking with
        their agent from one left alone (issue 9).
        """
        return await self._get_or_none(f"/bridges/{_seg(bridge_id)}")

    async def destroy_bridge(self, bridge_id: str) -> None:
        """``destroy``: a bridge outlives its last channel until we delete it (trace 03)."""
        await self._request("DELETE", f"/bridges/{_seg(bridge_id)}")

    # -- applications -----------------------------------------------------------

    async def get_application(self) -> dict[str, Any] | None:
        """``get`` on /applications: our app, or ``None`` when Asterisk does not know it.

        With subscribeAll Asterisk forgets the app while its socket is closed
        (404, trace 07); with the default subscription it keeps it (trace 12).
        """
        return await self._get_or_none(f"/applications/{_seg(self.app)}")

    # -- events -----------------------------------------------------------------

    def events_url(self) -> str:
        """The WebSocket URL: default subscription (no subscribeAll), as trace 11/12."""
        scheme, sep, rest = self.base_url.partition("://")
        ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        url = f"{ws_scheme}{sep}{rest}/ari/events?app={quote(self.app, safe='')}"
        if self._api_key_in_url:
            url += f"&api_key={quote(self._api_key, safe=':')}"
        return url

    async def events(
        self,
        on_event: EventHandler,
        *,
        on_connect: ConnectionHandler | None = None,
        on_disconnect: ConnectionHandler | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Deliver every event of our app to ``on_event``, in order, until ``stop`` is set.

        The socket is reopened with capped exponential backoff and jitter when
        it drops or Asterisk is down. ``on_connect`` runs after each successful
        (re)connect, before the first event of that connection, because
        Asterisk replays nothing: the controller reconciles there.
        ``on_disconnect`` runs once per lost connection. A message that is not
        a JSON object, or an ``on_event`` that raises, is logged and skipped.
        """
        stop = stop if stop is not None else asyncio.Event()
        url = self.events_url()
        headers = None if self._api_key_in_url else self._auth_headers
        backoff = RECONNECT_MIN_DELAY
        while not stop.is_set():
            connected = False
            reason = ""
            try:
                # ws_connect's handshake would otherwise use the session's 5-minute default.
                async with asyncio.timeout(self._connect_timeout):
                    ws = await self._get_session().ws_connect(
                        url,
                        headers=headers,
                        heartbeat=self._heartbeat,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    )
                async with ws:
                    connected = True
                    backoff = RECONNECT_MIN_DELAY
                    log.info("ari.events_connected", app=self.app)
                    closer = asyncio.create_task(self._close_when(stop, ws))
                    try:
                        await self._notify(on_connect, "ari.on_connect_failed")
                        await self._pump(ws, on_event)
                    finally:
                        closer.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await closer
                    reason = self._lost_reason(ws, stop)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if connected:
                    reason = repr(exc)
                else:
                    log.warning("ari.events_connect_failed", app=self.app, error=repr(exc))
            if connected:
                if stop.is_set():
                    log.info("ari.events_disconnected", app=self.app, reason="stopping")
                else:
                    log.warning("ari.events_disconnected", app=self.app, reason=reason)
                await self._notify(on_disconnect, "ari.on_disconnect_failed")
            if stop.is_set():
                break
            delay = min(
                RECONNECT_MAX_DELAY, max(RECONNECT_MIN_DELAY, backoff * random.uniform(0.8, 1.2))
            )
            log.debug("ari.events_reconnect_wait", delay=round(delay, 3))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            backoff = min(RECONNECT_MAX_DELAY, backoff * 2)
        log.info("ari.events_stopped", app=self.app)

    @staticmethod
    def _lost_reason(ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> str:
        """Why the socket ended, for the log: a missed pong, a close frame, or a dropped TCP."""
        if stop.is_set():
            return "stopping"
        exc = ws.exception()
        if exc is not None:
            return str(exc) or repr(exc)
        if ws.close_code is not None:
            return f"closed by Asterisk (code {ws.close_code})"
        return "connection dropped"

    @staticmethod
    async def _notify(handler: ConnectionHandler | None, failure_event: str) -> None:
        """Run a connect/disconnect hook; its failure is logged, never fatal to the stream."""
        if handler is None:
            return
        try:
            await handler()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(failure_event)

    @staticmethod
    async def _close_when(stop: asyncio.Event, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close the socket once ``stop`` is set, which ends the receive loop."""
        await stop.wait()
        await ws.close()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse, on_event: EventHandler) -> None:
        """Read one connection until it closes, handing each event on in order."""
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    log.warning("ari.events_socket_error", error=repr(ws.exception()))
                    break
                log.warning("ari.events_skipped_frame", frame_type=str(msg.type))
                continue
            try:
                event = json.loads(msg.data)
            except ValueError:
                log.warning("ari.events_malformed", data=str(msg.data)[:200])
                continue
            if not isinstance(event, dict):
                log.warning("ari.events_malformed", data=str(msg.data)[:200])
                continue
            try:
                await on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug in one handler must not cost us every later event.
                log.exception("ari.events_handler_failed", event_type=event.get("type"))
