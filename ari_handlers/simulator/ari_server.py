"""The simulator's ARI face: aiohttp REST routes under ``/ari`` and the ``/ari/events`` WebSocket.

Only operations of the ARI spec (``tests/spec/ari-digest.json``) are routed,
each declared once in ``ROUTES`` with the parameters its handler may read;
``tests/test_simulator_spec.py`` checks both against the spec. Anything
else gets Asterisk's own answers: 404 ``Resource not found`` or 405
``Invalid method`` (res/res_ari.c), and 401 ``Authentication required``
without valid credentials (Basic auth or ``api_key=user:password``).

Events caused by a request are written to the WebSocket before the request's
response, as Asterisk does for ``answer`` (ChannelStateChange before the 204)
and ``addChannel`` (ChannelEnteredBridge before the 204). Originate is the
exception: its 200 goes first, then the Dial events (trace 11).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from aiohttp import WSMsgType, web

from ari_handlers.simulator.core import AriError
from ari_handlers.simulator.model import ASTERISK_ID, ari_time

if TYPE_CHECKING:
    from ari_handlers.simulator.core import AsteriskSimulator

log = structlog.get_logger()

Handler = Callable[["AsteriskSimulator", "Params"], Awaitable[web.StreamResponse]]
AFTER_RESPONSE: web.RequestKey[Callable[[], None]] = web.RequestKey("after_response")
PARAMS: web.RequestKey[tuple[dict[str, str], dict[str, Any]]] = web.RequestKey("params")


# ---------------------------------------------------------------------------- WebSocket fan-out


class _Connection:
    """One app WebSocket with an ordered outgoing queue and one writer task."""

    def __init__(self, ws: web.WebSocketResponse, apps: tuple[str, ...]) -> None:
        self.ws = ws
        self.apps = apps
        self.stalled = False  # half-open: events lost, pings unanswered (EventHub.stall)
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task = asyncio.get_running_loop().create_task(self._write())

    def push(self, text: str) -> None:
        if self.stalled:
            return
        self._queue.append(text)
        self.idle.clear()
        self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                text = self._queue.popleft()
                try:
                    await self.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self._queue.clear()
            self.idle.set()


class EventHub:
    """Routes each app's events to the WebSocket currently holding that app."""

    def __init__(self) -> None:
        self._by_app: dict[str, _Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def connected(self, app: str) -> bool:
        conn = self._by_app.get(app)
        return conn is not None and not conn.ws.closed

    def publish(self, app: str, event: dict[str, Any]) -> None:
        conn = self._by_app.get(app)
        if conn is not None:
            conn.push(json.dumps(event))

    async def drain(self) -> None:
        """Wait until every queued event has been handed to its socket."""
        for conn in set(self._by_app.values()):
            if not conn.idle.is_set():
                try:
                    await asyncio.wait_for(conn.idle.wait(), 1.0)
                except TimeoutError:
                    log.warning("sim.ws_slow", apps=conn.apps)

    def attach(self, ws: web.WebSocketResponse, apps: tuple[str, ...]) -> _Connection:
        conn = _Connection(ws, apps)
        for app in apps:
            old = self._by_app.get(app)
            if old is not None and old is not conn:
                # Asterisk tells the old socket it lost the app (ApplicationReplaced)
                old.push(json.dumps({"type": "ApplicationReplaced", "timestamp": ari_time(_now()),
                                     "asterisk_id": ASTERISK_ID, "application": app}))
                task = asyncio.get_running_loop().create_task(_close_later(old))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            self._by_app[app] = conn
        return conn

    def detach(self, conn: _Connection) -> None:
        for app in conn.apps:
            if self._by_app.get(app) is conn:
                del self._by_app[app]
        conn.task.cancel()

    async def close_all(self) -> None:
        for conn in set(self._by_app.values()):
            await conn.ws.close()

    def stall(self) -> None:
        """Make every current app socket half-open: its events are lost, its pings unanswered.

        What the app sees when Asterisk's host or the network path dies: no
        close frame, no FIN, just silence. A new socket is served as usual.
        """
        for conn in set(self._by_app.values()):
            conn.stalled = True
            conn._queue.clear()
        log.info("sim.ws_stalled", sockets=len(self._by_app))


async def _close_later(conn: _Connection) -> None:
    await conn.idle.wait()
    await conn.ws.close()
    conn.task.cancel()


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One ARI operation the simulator serves, and the query/body parameters it reads."""

    method: str
    path: str  # as in the spec, under /ari
    handler: Handler
    params: tuple[str, ...] = ()


ROUTES: list[Route] = []


def route(method: str, path: str, *params: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, params))
        return handler

    return register


class Params:
    """A request's parameters; a handler may read only those its route declares."""

    def __init__(self, route_: Route, request: web.Request, values: dict[str, str], body: dict[str, Any]) -> None:
        self._route = route_
        self._request = request
        self._values = values
        self._body = body

    def get(self, name: str) -> str | None:
        if name not in self._route.params:
            raise KeyError(f"{self._route.method} {self._route.path} did not declare parameter {name!r}")
        return self._values.get(name)

    def flag(self, name: str) -> bool:
        return (self.get(name) or "").lower() in ("true", "yes", "1")

    @property
    def request(self) -> web.Request:
        return self._request

    def path(self, name: str) -> str:
        return self._request.match_info[name]

    def body_object(self, name: str) -> dict[str, str]:
        """A JSON-body container parameter such as originate's ``variables``."""
        if name not in self._route.params:
            raise KeyError(f"{self._route.method} {self._route.path} did not declare parameter {name!r}")
        value = self._body.get(name)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def after_response(self, action: Callable[[], None]) -> None:
        self._request[AFTER_RESPONSE] = action


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _no_content() -> web.Response:
    return web.Response(status=204)


def _media(p: Params) -> list[str]:
    return [m for m in (p.get("media") or "").split(",") if m]


# -- asterisk, applications, endpoints, device states


@route("GET", "/asterisk/info", "only")
async def get_info(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    info = sim.asterisk_info()
    only = p.get("only")
    if only:
        info = {k: v for k, v in info.items() if k in only.split(",")}
    return _json(info)


@route("GET", "/asterisk/ping")
async def ping(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json({"asterisk_id": ASTERISK_ID, "ping": "pong", "timestamp": ari_time(_now())})


@route("GET", "/applications")
async def list_applications(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json([sim.application_json(name) for name in sim.registered_apps()])


@route("GET", "/applications/{applicationName}")
async def get_application(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.application_json(p.path("applicationName")))


@route("POST", "/applications/{applicationName}/subscription", "eventSource")
async def subscribe(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.subscribe(p.path("applicationName"), p.get("eventSource"), True))


@route("DELETE", "/applications/{applicationName}/subscription", "eventSource")
async def unsubscribe(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.subscribe(p.path("applicationName"), p.get("eventSource"), False))


@route("GET", "/endpoints")
async def list_endpoints(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.endpoints())


@route("GET", "/endpoints/{tech}/{resource}")
async def get_endpoint(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.endpoint(p.path("tech"), p.path("resource")))


@route("GET", "/deviceStates")
async def list_device_states(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json([])  # only ARI-controlled device states are listed, and we set none (trace 09)


# -- channels

_ORIGINATE_PARAMS = ("endpoint", "app", "appArgs", "callerId", "timeout", "extension", "variables")


async def _originate(sim: AsteriskSimulator, p: Params, channel_id: str | None) -> web.StreamResponse:
    values = {name: p.get(name) or "" for name in _ORIGINATE_PARAMS if name != "variables"}
    ch, timeout = sim.originate(values, channel_id, p.body_object("variables"))
    body = ch.to_json()
    p.after_response(lambda: sim.start_dialing(ch, timeout))
    return _json(body)


@route("GET", "/channels")
async def list_channels(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json([ch.to_json() for ch in sim.channels.values()])


@route("POST", "/channels", *_ORIGINATE_PARAMS, "channelId")
async def originate(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return await _originate(sim, p, p.get("channelId") or None)


@route("POST", "/channels/{channelId}", *_ORIGINATE_PARAMS)
async def originate_with_id(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return await _originate(sim, p, p.path("channelId"))


@route("GET", "/channels/{channelId}")
async def get_channel(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.get_channel(p.path("channelId")).to_json())


@route("DELETE", "/channels/{channelId}", "reason", "reason_code")
async def hangup(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.hangup(p.path("channelId"), p.get("reason"), p.get("reason_code"))
    return _no_content()


@route("POST", "/channels/{channelId}/answer")
async def answer(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    await sim.answer(p.path("channelId"))
    return _no_content()


@route("POST", "/channels/{channelId}/ring")
async def ring(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.ring(p.path("channelId"), True)
    return _no_content()


@route("DELETE", "/channels/{channelId}/ring")
async def ring_stop(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.ring(p.path("channelId"), False)
    return _no_content()


@route("POST", "/channels/{channelId}/hold")
async def hold(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.hold(p.path("channelId"), True)
    return _no_content()


@route("DELETE", "/channels/{channelId}/hold")
async def unhold(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.hold(p.path("channelId"), False)
    return _no_content()


@route("POST", "/channels/{channelId}/moh", "mohClass")
async def start_moh(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.start_moh(p.path("channelId"), p.get("mohClass"))
    return _no_content()


@route("DELETE", "/channels/{channelId}/moh")
async def stop_moh(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.stop_moh(p.path("channelId"))
    return _no_content()


@route("POST", "/channels/{channelId}/play", "media", "lang", "playbackId")
async def play(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    body = sim.play("channel", p.path("channelId"), _media(p), p.get("lang"), p.get("playbackId"))
    return _json(body, 201)


@route("POST", "/channels/{channelId}/play/{playbackId}", "media", "lang")
async def play_with_id(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    body = sim.play("channel", p.path("channelId"), _media(p), p.get("lang"), p.path("playbackId"))
    return _json(body, 201)


@route("GET", "/channels/{channelId}/variable", "variable")
async def get_variable(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json({"value": sim.get_variable(p.path("channelId"), p.get("variable"))})


@route("POST", "/channels/{channelId}/variable", "variable", "value", "report_events")
async def set_variable(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.set_variable(p.path("channelId"), p.get("variable"), p.get("value") or "", p.flag("report_events"))
    return _no_content()


_RECORD_PARAMS = ("name", "format", "maxDurationSeconds", "maxSilenceSeconds", "ifExists", "beep", "terminateOn")


@route("POST", "/channels/{channelId}/record", *_RECORD_PARAMS)
async def record(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    """201 Created with the LiveRecording and ``Location: /recordings/live/<name>`` (ast_ari_response_created)."""
    body = sim.record(p.path("channelId"), {name: p.get(name) for name in _RECORD_PARAMS})
    resp = _json(body, 201)
    resp.headers["Location"] = f"/recordings/live/{quote(body['name'], safe='')}"
    return resp


# -- bridges


@route("GET", "/bridges")
async def list_bridges(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json([b.to_json() for b in sim.bridges.values()])


@route("POST", "/bridges", "type", "bridgeId", "name")
async def create_bridge(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.create_bridge(p.get("type"), p.get("bridgeId"), p.get("name")).to_json())


@route("POST", "/bridges/{bridgeId}", "type", "name")
async def create_bridge_with_id(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.create_bridge(p.get("type"), p.path("bridgeId"), p.get("name")).to_json())


@route("GET", "/bridges/{bridgeId}")
async def get_bridge(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.get_bridge(p.path("bridgeId")).to_json())


@route("DELETE", "/bridges/{bridgeId}")
async def destroy_bridge(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.destroy_bridge(p.path("bridgeId"))
    return _no_content()


@route("POST", "/bridges/{bridgeId}/addChannel", "channel", "role", "absorbDTMF")
async def add_channel(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    absorb = (p.get("absorbDTMF") or "").lower() in ("true", "1", "yes")
    await sim.add_to_bridge(p.path("bridgeId"), p.get("channel"), p.get("role"), absorb_dtmf=absorb)
    return _no_content()


@route("POST", "/bridges/{bridgeId}/removeChannel", "channel")
async def remove_channel(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.remove_from_bridge(p.path("bridgeId"), p.get("channel"))
    return _no_content()


@route("POST", "/bridges/{bridgeId}/moh", "mohClass")
async def bridge_start_moh(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.bridge_moh(p.path("bridgeId"), p.get("mohClass"), True)
    return _no_content()


@route("DELETE", "/bridges/{bridgeId}/moh")
async def bridge_stop_moh(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.bridge_moh(p.path("bridgeId"), None, False)
    return _no_content()


@route("POST", "/bridges/{bridgeId}/play", "media", "lang", "playbackId")
async def bridge_play(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    body = sim.play("bridge", p.path("bridgeId"), _media(p), p.get("lang"), p.get("playbackId"))
    return _json(body, 201)


@route("POST", "/bridges/{bridgeId}/play/{playbackId}", "media", "lang")
async def bridge_play_with_id(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    body = sim.play("bridge", p.path("bridgeId"), _media(p), p.get("lang"), p.path("playbackId"))
    return _json(body, 201)


# -- playbacks


@route("GET", "/playbacks/{playbackId}")
async def get_playback(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.get_playback(p.path("playbackId")).to_json())


@route("DELETE", "/playbacks/{playbackId}")
async def stop_playback(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.stop_playback(p.path("playbackId"))
    return _no_content()


# -- recordings


@route("GET", "/recordings/live/{recordingName}")
async def get_live_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.get_live_recording(p.path("recordingName")).to_json())


@route("POST", "/recordings/live/{recordingName}/stop")
async def stop_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.stop_recording(p.path("recordingName"))
    return _no_content()


@route("DELETE", "/recordings/live/{recordingName}")
async def cancel_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.stop_recording(p.path("recordingName"), cancel=True)
    return _no_content()


@route("GET", "/recordings/stored")
async def list_stored_recordings(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json([r.to_json() for r in sim.stored_recordings.values()])


@route("GET", "/recordings/stored/{recordingName}")
async def get_stored_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    return _json(sim.get_stored_recording(p.path("recordingName")).to_json())


@route("DELETE", "/recordings/stored/{recordingName}")
async def delete_stored_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    sim.delete_stored_recording(p.path("recordingName"))
    return _no_content()


@route("POST", "/recordings/stored/{recordingName}/copy", "destinationRecordingName")
async def copy_stored_recording(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    copy = sim.copy_stored_recording(p.path("recordingName"), p.get("destinationRecordingName"))
    return _json(copy.to_json())


# -- events WebSocket


@route("GET", "/events", "app", "subscribeAll")
async def events(sim: AsteriskSimulator, p: Params) -> web.StreamResponse:
    """The app's event stream. ``subscribeAll`` is accepted but the simulator always behaves
    like the default subscription (trace 11): it never sends ChannelCreated, ChannelDialplan,
    DeviceStateChanged and the like."""
    apps = tuple(a for a in (p.get("app") or "").split(",") if a)
    if not apps:
        raise AriError(400, "Missing parameter app")
    if p.flag("subscribeAll"):
        log.warning("sim.subscribe_all_ignored", apps=apps)
    # Pings are answered here rather than by aiohttp, so that a stalled socket can stop.
    ws = web.WebSocketResponse(autoping=False)
    await ws.prepare(p.request)
    sim.known_apps.update(apps)
    conn = sim.server.hub.attach(ws, apps)
    log.info("sim.app_connected", apps=apps)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
            if msg.type == WSMsgType.PING and not conn.stalled:
                await ws.pong(msg.data)
    finally:
        sim.server.hub.detach(conn)
        log.info("sim.app_disconnected", apps=apps)
    return ws


# ---------------------------------------------------------------------------- server


def _credentials_ok(request: web.Request, user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{user}:{password}"
    api_key = request.query.get("api_key")
    return api_key == f"{user}:{password}"


async def _read_params(request: web.Request) -> tuple[dict[str, str], dict[str, Any]]:
    """Query string, form body and JSON body merged, as Asterisk does (res_ari.c)."""
    values = {k: v for k, v in request.query.items() if k != "api_key"}
    body: dict[str, Any] = {}
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                parsed = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise AriError(400, "Error parsing request body") from None
            if isinstance(parsed, dict):
                body = parsed
                for k, v in parsed.items():
                    if not isinstance(v, (dict, list)):
                        values.setdefault(k, str(v).lower() if isinstance(v, bool) else str(v))
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            for k, v in (await request.post()).items():
                if isinstance(v, str):
                    values.setdefault(k, v)
    return values, body


class AriServer:
    """The aiohttp application serving ``ROUTES`` for one simulator."""

    def __init__(self, sim: AsteriskSimulator, *, host: str, port: int) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.hub = EventHub()
        self.app = build_app(sim)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()


def build_app(sim: AsteriskSimulator) -> web.Application:
    @web.middleware
    async def ari_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path.removeprefix("/ari")
        try:
            values, body = await _read_params(request)
        except AriError as err:
            return _json(err.body, err.status)
        logged = dict(values)
        if "variables" in body:
            logged["variables"] = json.dumps(body["variables"])
        sim.requests.append((request.method, path, logged))
        request[PARAMS] = (values, body)
        if not _credentials_ok(request, sim.ari_user, sim.ari_password):
            denied = _json({"message": "Authentication required"}, 401)
            denied.headers["WWW-Authenticate"] = 'Basic realm="Asterisk REST Interface"'
            return denied
        resp: web.StreamResponse
        try:
            resp = await handler(request)
        except AriError as err:
            resp = _json(err.body, err.status)
        except web.HTTPNotFound:
            resp = _json({"message": "Resource not found"}, 404)
        except web.HTTPMethodNotAllowed:
            resp = _json({"message": "Invalid method"}, 405)
        if isinstance(resp, web.WebSocketResponse):
            return resp
        await sim.server.hub.drain()
        after = request.get(AFTER_RESPONSE)
        if after is not None:
            await resp.prepare(request)
            await resp.write_eof()
            after()
        return resp

    app = web.Application(middlewares=[ari_middleware])
    for r in ROUTES:
        app.router.add_route(r.method, "/ari" + r.path, _bind(sim, r))
    return app


def _bind(sim: AsteriskSimulator, r: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        values, body = request[PARAMS]
        return await r.handler(sim, Params(r, request, values, body))

    handle.__name__ = r.handler.__name__
    return handle
