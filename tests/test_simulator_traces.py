"""The simulator against real Asterisk 22.10.1 traces (``tests/traces/``).

Each test replays a trace: the same ARI requests the recording app made, in
the same order, and the same caller/agent actions (through ``CallerScript``
and ``AgentScript`` or, for key presses and exact moments, direct actions).
A request or action is issued once the simulator has sent as many events as
Asterisk had sent at that point of the trace, so the replay follows the
trace's causality rather than its wall-clock times (scripts run
``SCALE`` times faster than the recording).

Then the event sequences are compared: event types in order and the fields
an app reads (which channel by role, state, cause, args, playback state,
digit). Responses are compared by status, by exact body for errors, and by
shape and key fields for successes.

Traces 01–10 were recorded with ``subscribeAll=true``; the simulator
implements only the default subscription, so ``default_view`` reduces those
traces to what such an app receives, following traces 11 and 12. Where a
subscribeAll trace's *response* differs too (07: ``GET /applications`` is
404 while the socket is closed), ``Replay.expect`` rewrites the recorded
answer to the one trace 12 shows for the default subscription.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript, SimCall

TRACES = Path(__file__).parent / "traces"
SCALE = 0.05  # scripted delays run this much faster than the recording

# Events the simulator never sends: subscribeAll-only ones, and channel
# bookkeeping (variables, caller id, connected line) no app logic reads.
NOISE = frozenset(
    {
        "ChannelCreated",
        "ChannelDialplan",
        "DeviceStateChanged",
        "PeerStatusChange",
        "ContactStatusChange",
        "EndpointStateChange",
        "BridgeCreated",
        "ChannelCallerId",
        "ChannelConnectedLine",
        "ChannelVarset",
    }
)


# ---------------------------------------------------------------------------- reading traces


@dataclass
class Trace:
    name: str
    lines: list[dict[str, Any]]

    @property
    def meta(self) -> dict[str, Any]:
        return self.lines[0]

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [ln for ln in self.lines if ln["kind"] == "ari_request"]

    def events(self) -> list[tuple[float, dict[str, Any]]]:
        """The events an app with the default subscription gets, with their trace times."""
        return default_view(self.lines)

    def first_inbound(self, after: float = 0.0) -> str:
        """The id of the first inbound caller that entered Stasis after ``after``."""
        for ln in self.lines:
            ev = ln.get("event", {})
            if (ln["kind"] == "ari_event" and ln["t"] >= after and ev.get("type") == "StasisStart"
                    and ev["args"][:1] == ["inbound"]):
                return str(ev["channel"]["id"])
        raise LookupError("no inbound StasisStart")

    def time_of(self, kind: str, predicate: Callable[[dict[str, Any]], bool]) -> float:
        for ln in self.lines:
            if ln["kind"] == kind and predicate(ln):
                return float(ln["t"])
        raise LookupError(kind)


def load_trace(name: str) -> Trace:
    path = next(TRACES.glob(f"{name}-*.jsonl"))
    return Trace(path.stem, [json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def _channel_of(ev: dict[str, Any]) -> dict[str, Any] | None:
    return ev.get("channel") or ev.get("peer")


def default_view(lines: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """Reduce a trace to what the default subscription delivers (traces 11, 12).

    An app is subscribed to a channel from its StasisStart to its StasisEnd;
    to a channel it originated (or subscribed to explicitly) until it is
    destroyed; and to a bridge once one of its channels entered it. Bridge
    playback events, doubled under subscribeAll, come once.
    """
    subscribe_all = bool(lines[0].get("subscribe_all"))
    channels: set[str] = set()
    explicit: set[str] = set()
    bridges: set[str] = set()
    seen_playback: set[tuple[str, str, str]] = set()
    out: list[tuple[float, dict[str, Any]]] = []
    for ln in lines:
        if ln["kind"] == "ari_request" and ln["status"] == 200 and isinstance(ln["response"], dict):
            query = ln["query"] or {}
            if ln["method"] == "POST" and re.fullmatch(r"/channels(/[^/]+)?", ln["path"]) and query.get("app"):
                explicit.add(ln["response"]["id"])
                channels.add(ln["response"]["id"])
            if ln["path"].endswith("/subscription") and ln["method"] == "POST":
                for source in query.get("eventSource", "").split(","):
                    kind, _, ident = source.partition(":")
                    (explicit if kind == "channel" else bridges).add(ident)
        if ln["kind"] != "ari_event":
            continue
        ev = ln["event"]
        kind = ev["type"]
        if kind in NOISE:
            continue
        if not subscribe_all:
            out.append((ln["t"], ev))
            continue
        ch = _channel_of(ev)
        cid = str(ch["id"]) if ch else ""
        keep = False
        if kind == "StasisStart":
            channels.add(cid)
            keep = True
        elif kind.startswith("Playback"):
            pb = ev["playback"]
            target_kind, _, target = pb["target_uri"].partition(":")
            keep = target in (channels if target_kind == "channel" else bridges)
            key = (kind, pb["id"], pb["state"])
            if key in seen_playback:
                keep = False
            seen_playback.add(key)
        elif kind == "BridgeDestroyed":
            keep = ev["bridge"]["id"] in bridges
        elif kind in ("ChannelEnteredBridge", "ChannelLeftBridge"):
            keep = cid in channels or ev["bridge"]["id"] in bridges
            if cid in channels:
                bridges.add(ev["bridge"]["id"])
        elif cid:
            keep = cid in channels
        if keep:
            out.append((ln["t"], ev))
        if kind == "StasisEnd" and cid not in explicit:
            channels.discard(cid)
        if kind == "ChannelDestroyed":
            channels.discard(cid)
            explicit.discard(cid)
    return out


# ---------------------------------------------------------------------------- comparing


class Roles:
    """Names ids by role and order of appearance, so two runs can be compared."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def name(self, ident: str, kind: str) -> str:
        if ident not in self.names:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self.names[ident] = f"{kind}#{self._counts[kind]}"
        return self.names[ident]

    def channel(self, ch: dict[str, Any]) -> str:
        kind = "caller" if ch["name"].startswith("PJSIP/caller") else "agent"
        return self.name(ch["id"], kind)


_DIAL_PHASE = {("Dial", ""): 0, ("ChannelStateChange", "Ringing"): 1, ("Dial", "RINGING"): 2,
               ("ChannelStateChange", "Up"): 3, ("Dial", "ANSWER"): 4}


def normalize(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Event type, channel role and the fields an app reads, one tuple per event."""
    roles = Roles()
    out: list[tuple[Any, ...]] = []
    for ev in events:
        kind = ev["type"]
        ch = _channel_of(ev) or {}
        who = roles.channel(ch) if ch else None
        if kind == "StasisStart":
            args = tuple(roles.names.get(a, a) for a in ev["args"])
            out.append((kind, who, args, ch["state"]))
        elif kind == "ChannelStateChange":
            out.append((kind, who, ch["state"]))
        elif kind == "ChannelHangupRequest":
            cause = ev.get("cause")
            soft = bool(ev.get("soft"))
            # a BYE arrives with no cause (01, 03, 11) or cause 16 (06): both normal clearing
            out.append((kind, who, "normal" if cause in (None, 16) and not soft else cause, soft))
        elif kind == "ChannelDestroyed":
            out.append((kind, who, ev["cause"]))
        elif kind == "Dial":
            out.append((kind, who, ev["dialstatus"]))
        elif kind.startswith("Playback"):
            pb = ev["playback"]
            target_kind, _, target = pb["target_uri"].partition(":")
            target_role = roles.names.get(target) or roles.name(target, target_kind)
            out.append((kind, roles.name(pb["id"], "playback"), pb["state"], pb["media_uri"], target_role))
        elif kind in ("ChannelEnteredBridge", "ChannelLeftBridge"):
            out.append((kind, who, roles.name(ev["bridge"]["id"], "bridge")))
        elif kind == "BridgeDestroyed":
            out.append((kind, roles.name(ev["bridge"]["id"], "bridge")))
        elif kind == "ChannelDtmfReceived":
            out.append((kind, who, ev["digit"], ev["duration_ms"]))
        else:
            out.append((kind, who))
    return _canonical_dial_order(out)


def _canonical_dial_order(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Asterisk raises Dial and ChannelStateChange of a ringing leg from different threads:
    their order differs between traces 03, 04 C, 06 and 11. Sort each run of them by phase."""
    out = list(events)
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and (out[j][0], out[j][-1]) in _DIAL_PHASE and out[j][1] == out[i][1]:
            j += 1
        if j - i > 1:
            out[i:j] = sorted(out[i:j], key=lambda e: _DIAL_PHASE[(e[0], e[-1])])
        i = max(j, i + 1)
    return out


# ---------------------------------------------------------------------------- replaying


Action = Callable[["Replay"], Awaitable[object] | None]


@dataclass
class Replay:
    """Drives a simulator through a trace and records what its WebSocket receives."""

    sim: AsteriskSimulator
    session: aiohttp.ClientSession
    received: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # trace id -> simulator id
    calls: dict[str, SimCall] = field(default_factory=dict)  # trace channel id -> call
    transform: Callable[[str, str, dict[str, str]], dict[str, str]] | None = None
    # rewrites a recorded request's expected status/response (a subscribeAll-only answer)
    expect: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    mismatches: list[str] = field(default_factory=list)
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the app's WebSocket with the default subscription."""
        ws = await self.session.ws_connect(self.sim.ari_url + "/ari/events?app=liyi", headers=_auth(self.sim))
        self._ws = ws

        async def read() -> None:
            async for msg in ws:
                self.received.append(json.loads(msg.data))

        self._reader = asyncio.create_task(read())
        while not self.sim.app_connected:
            await asyncio.sleep(0.001)

    async def disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
        while self.sim.app_connected:
            await asyncio.sleep(0.001)

    def bind(self, trace_id: str, sim_id: str) -> None:
        self.ids[trace_id] = sim_id

    def to_sim(self, text: str) -> str:
        return re.sub(r"[\w.\-]+", lambda m: self.ids.get(m.group(0), m.group(0)), text)

    def to_trace(self, value: Any) -> Any:
        back = {v: k for k, v in self.ids.items()}
        text = json.dumps(value)
        return json.loads(re.sub(r"[\w.\-]+", lambda m: back.get(m.group(0), m.group(0)), text))

    def relevant(self) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] not in NOISE]

    async def wait_events(self, count: int, timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.relevant()) < count and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def place(self, trace_id: str, script: CallerScript | None = None, **kw: Any) -> SimCall:
        call = await self.sim.place_call("caller", caller_name="caller", script=script or CallerScript(), **kw)
        self.bind(trace_id, call.channel_id)
        self.calls[trace_id] = call
        return call

    async def request(self, req: dict[str, Any]) -> None:
        if self.expect is not None:
            req = self.expect(req)
        query = {k: self.to_sim(str(v)) for k, v in (req["query"] or {}).items()}
        if self.transform is not None:
            query = self.transform(req["method"], req["path"], query)
        path = self.to_sim(req["path"])
        auth = _auth(self.sim) if req["status"] != 401 else _auth(self.sim, "wrong")
        async with self.session.request(
            req["method"], self.sim.ari_url + "/ari" + path, params=query, headers=auth
        ) as resp:
            text = await resp.text()
            body = json.loads(text) if text else None
        where = f"{req['method']} {req['path']} {req['query']}"
        if resp.status != req["status"]:
            self.mismatches.append(f"{where}: status {resp.status} != {req['status']} ({text})")
            return
        expected = req["response"]
        if isinstance(expected, dict) and isinstance(body, dict) and "id" in expected and "id" in body:
            self.bind(expected["id"], body["id"])
        problem = compare_bodies(expected, self.to_trace(body))
        if problem:
            self.mismatches.append(f"{where}: {problem}")

    async def run(self, trace: Trace, actions: list[tuple[float, Action]]) -> None:
        """Issue the trace's requests and the given actions in trace order, each after the
        simulator has sent as many events as Asterisk had by then."""
        times = [t for t, _ in trace.events()]
        steps: list[tuple[float, int, Any]] = [(t, 0, a) for t, a in actions]
        steps += [(r["t_sent"], 1, r) for r in trace.requests]
        for at, is_request, step in sorted(steps, key=lambda s: (s[0], s[1])):
            await self.wait_events(sum(1 for t in times if t < at))
            if is_request:
                await self.request(step)
            else:
                result = step(self)
                if asyncio.iscoroutine(result):
                    await result
        await self.wait_events(len(times))
        await asyncio.sleep(0.05)  # room for any extra event the trace does not have


def _auth(sim: AsteriskSimulator, password: str | None = None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(sim.ari_user, password or sim.ari_password)}


_COMPARED_KEYS = ("state", "bridge_type", "channels", "media_uri", "target_uri", "caller", "dialplan",
                  "message", "error", "value", "args", "channel_ids", "bridge_ids")


def compare_bodies(expected: Any, actual: Any) -> str | None:
    """Same JSON shape, and the same values where an app reads them (ids mapped back)."""
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"expected a list of {len(expected)}, got {actual!r}"
        for e, a in zip(expected, actual):
            problem = compare_bodies(e, a)
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"expected an object, got {actual!r}"
        if set(expected) != set(actual):
            return f"keys {sorted(actual)} != {sorted(expected)}"
        for key in _COMPARED_KEYS:
            if key in expected and expected[key] != actual[key]:
                return f"{key}: {actual[key]!r} != {expected[key]!r}"
        return None
    return None if expected == actual else f"{actual!r} != {expected!r}"


@pytest.fixture
async def replay() -> Any:
    sim = AsteriskSimulator(prompt_seconds=0.05)
    await sim.start()
    async with aiohttp.ClientSession() as session:
        rp = Replay(sim, session)
        await rp.connect()
        yield rp
        await rp.disconnect()
    await sim.stop()


def assert_same_events(trace: Trace, rp: Replay) -> None:
    expected = normalize([ev for _, ev in trace.events()])
    actual = normalize(rp.relevant())
    assert rp.mismatches == []
    assert actual == expected


def _at(trace: Trace, text: str) -> float:
    return trace.time_of("note", lambda ln: text in ln.get("text", ""))


# ---------------------------------------------------------------------------- the traces


class TestTraceReduction:
    def test_default_view_of_trace_03_matches_trace_11(self) -> None:
        """Reducing subscribeAll trace 03 to the default subscription gives trace 11's events (same call flow)."""
        t03 = [ev for _, ev in load_trace("03").events()]
        t11 = [ev for _, ev in load_trace("11").events()]
        skip = {"PlaybackStarted", "PlaybackFinished"}  # 11 also plays hello-world before dialing
        assert [e for e in normalize(t03) if e[0] not in skip] == [e for e in normalize(t11) if e[0] not in skip]


class TestTraces:
    async def test_01_ring_answer_play_bye(self, replay: Replay) -> None:
        """Trace 01: ring gives no event, answer → ChannelStateChange Up, play → Started/Finished, BYE → StasisEnd."""
        trace = load_trace("01")
        caller = trace.first_inbound()
        bye_after = (5.3319 - 3.2285) * SCALE
        script = CallerScript(hang_up_after_prompt=("hello-world", bye_after))
        await replay.run(trace, [(trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller, script))])
        assert_same_events(trace, replay)
        assert replay.calls[caller].hung_up_by == "caller"

    async def test_02_caller_cancels_while_ringing(self, replay: Replay) -> None:
        """Trace 02: a CANCEL gives ChannelHangupRequest cause 127 then StasisEnd; a later answer is 404."""
        trace = load_trace("02")
        caller = trace.first_inbound()
        script = CallerScript(hang_up_while_ringing_after=1.5 * SCALE)
        await replay.run(trace, [(trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller, script))])
        assert_same_events(trace, replay)

    async def test_03_agent_hangs_up_first(self, replay: Replay) -> None:
        """Trace 03: the agent's BYE ends only the agent's leg; the caller stays Up, alone in the bridge."""
        trace = load_trace("03")
        replay.sim.add_agent("agent1", script=AgentScript(answer_after=0.0, hang_up_after=3.0 * SCALE))
        caller = trace.first_inbound()
        script = CallerScript(hang_up_after_connected=11.0 * SCALE)
        await replay.run(trace, [(trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller, script))])
        assert_same_events(trace, replay)
        assert [leg.outcome for leg in replay.sim.agent_legs] == ["agent-hung-up"]

    async def test_04_agent_unregistered_no_answer_and_declined(self, replay: Replay) -> None:
        """Trace 04: 500 Allocation failed while unregistered; timeout → cause 19; decline → 17 and Dial BUSY."""
        trace = load_trace("04")
        sim = replay.sim
        sim.add_agent("agent2", registered=False, script=AgentScript(answer_after=None))

        def shorter_timeout(method: str, path: str, query: dict[str, str]) -> dict[str, str]:
            return {**query, "timeout": "1"} if "timeout" in query else query  # 5 s in the trace

        replay.transform = shorter_timeout
        await replay.run(
            trace,
            [
                (_at(trace, "part B") + 1e-4, lambda rp: sim.register_agent("agent2")),
                (_at(trace, "part C"), lambda rp: sim.set_agent_script(
                    "agent2", AgentScript(answer_after=None, decline_after=2.0 * SCALE))),
            ],
        )
        assert_same_events(trace, replay)
        assert [leg.outcome for leg in sim.agent_legs] == ["no-answer", "declined"]
        sim.unregister_agent("agent2")
        assert sim.device_state("agent2") == "UNAVAILABLE"

    async def test_06_dtmf_outside_bridges_and_in_dtmf_events_bridge(self, replay: Replay) -> None:
        """Trace 06: DTMF raises ChannelDtmfReceived unbridged or in a dtmf_events bridge, never in a plain one."""
        trace = load_trace("06")
        sim = replay.sim
        sim.add_agent("agent1", script=AgentScript(answer_after=0.0))
        caller = trace.first_inbound()
        actions: list[tuple[float, Action]] = [(trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller))]
        for t, ev in trace.events():
            if ev["type"] == "ChannelDtmfReceived":
                actions.append((t - 1e-4, _key_press(ev["channel"]["id"], ev["digit"], ev["duration_ms"])))
        agent_leg = next(r["response"]["id"] for r in trace.requests if r["path"] == "/channels")
        # in the plain mixing bridge: '5' from the agent, '9' from the caller, no event for either
        actions.append((trace.time_of("phone", lambda ln: ln.get("params") == "5"), _key_press(agent_leg, "5", 180)))
        actions.append((12.3, _key_press(caller, "9", 280)))
        bye = trace.time_of("ari_event", lambda ln: ln["event"]["type"] == "ChannelHangupRequest"
                            and ln["event"]["channel"]["id"] == caller)
        actions.append((bye - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])))
        await replay.run(trace, actions)
        assert_same_events(trace, replay)

    async def test_08_error_shapes(self, replay: Replay) -> None:
        """Trace 08: every error's status and body, early media delaying the answer, channels outside Stasis."""
        trace = load_trace("08")
        caller = trace.first_inbound()
        echo = trace.time_of("ari_event", lambda ln: ln["event"]["type"] == "ChannelCreated"
                             and ln["event"]["channel"]["dialplan"]["exten"] == "3001")
        echo_id = next(ln["event"]["channel"]["id"] for ln in trace.lines
                       if ln["kind"] == "ari_event" and ln["t"] == echo)
        await replay.run(
            trace,
            [
                (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
                (echo, lambda rp: rp.place(echo_id, extension="3001")),
            ],
        )
        assert_same_events(trace, replay)

    async def test_11_default_subscription_call(self, replay: Replay) -> None:
        """Trace 11: the default subscription's events for ring, answer, play, agent leg, agent BYE, caller BYE."""
        trace = load_trace("11")
        replay.sim.add_agent("agent1", script=AgentScript(answer_after=0.0, hang_up_after=3.0 * SCALE))
        caller = trace.first_inbound()
        script = CallerScript(hang_up_after_connected=(11.3312 - 3.7329) * SCALE)
        await replay.run(trace, [(trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller, script))])
        assert_same_events(trace, replay)
        assert replay.calls[caller].whats()[-2:] == ["agent-left", "hangup-by-caller"]


class TestTrace12:
    async def test_12_app_disconnect_and_explicit_subscription(self, replay: Replay) -> None:
        """Trace 12: the app stays registered while disconnected, gets no StasisStart replay, and after an
        explicit subscription also gets the caller's ChannelDestroyed."""
        trace = load_trace("12")
        caller = trace.first_inbound()
        closes = [ln["t"] for ln in trace.lines if ln["kind"] == "note" and ln["text"] == "app closes its websocket"]
        opens = [ln["t"] for ln in trace.lines if ln["kind"] == "note" and ln["text"] == "app websocket connected"]
        bye = trace.time_of("ari_event", lambda ln: ln["event"]["type"] == "ChannelHangupRequest")
        await replay.run(
            trace,
            [
                (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
                (closes[0], lambda rp: rp.disconnect()),
                (opens[1], _reconnect_after_beep),
                (bye - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
            ],
        )
        assert_same_events(trace, replay)


class TestHoldAndTransferTraces:
    async def test_05_hold_moh_holding_bridge_and_playbacks(self, replay: Replay) -> None:
        """Trace 05: hold and MOH give no ARI event; a holding bridge's announcement plays, fails at once
        under bridge MOH; a stopped channel playback finishes "done" and is then 404."""
        trace = load_trace("05")
        sim = replay.sim
        sim.add_agent("agent1", script=AgentScript(answer_after=0.0))
        sim.prompt_seconds = lambda media: 5.0 if "monkeys" in media else 0.05  # stopped after 0.8 s in the trace
        caller = trace.first_inbound()
        await replay.run(trace, [
            (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
            (_caller_bye(trace, caller) - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
        ])
        assert_same_events(trace, replay)
        assert _sim_moh_events(sim) == _trace_moh_events(trace)
        assert replay.calls[caller].whats() == [
            "answered", "connected",
            "music-start", "music-stop",  # 1a hold, unhold
            "music-start", "music-stop",  # 1b hold + moh, moh off (unhold changes nothing)
            "music-start", "music-stop",  # 1c moh without hold
            "agent-left", "prompt",  # 2: alone in the holding bridge, its announcement
            "music-start", "prompt-failed", "music-stop",  # 2b: bridge MOH, a play that fails under it
            "connected", "prompt",  # 3: back with the agent, tt-monkeys (stopped early)
            "hangup-by-caller",
        ]

    async def test_10_attended_transfer_primitives(self, replay: Replay) -> None:
        """Trace 10: caller held in a holding bridge with MOH, agent2 originated, agents consult in bridge C,
        the caller joins C and agent1 is hung up; C of two PJSIP channels is native_rtp."""
        trace = load_trace("10")
        sim = replay.sim
        sim.add_agent("agent1", script=AgentScript(answer_after=0.0))
        sim.add_agent("agent2", registered=False, script=AgentScript(answer_after=2.0 * SCALE))
        caller = trace.first_inbound()
        registers = trace.time_of("phone", lambda ln: "will REGISTER" in ln.get("action", ""))
        unregisters = trace.time_of("phone", lambda ln: "un-REGISTERs" in ln.get("action", ""))
        await replay.run(trace, [
            (registers, lambda rp: rp.sim.register_agent("agent2")),
            (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
            (_caller_bye(trace, caller) - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
            (unregisters, lambda rp: rp.sim.unregister_agent("agent2")),
        ])
        assert_same_events(trace, replay)
        assert [leg.outcome for leg in sim.agent_legs] == ["service-hung-up", "service-hung-up"]
        initial, *changes = _sim_device_states(sim, "PJSIP/agent2")
        assert initial == "UNAVAILABLE"  # set by add_agent, before any phone registered
        assert changes == _trace_device_states(trace, "PJSIP/agent2")  # NOT_INUSE RINGING INUSE NOT_INUSE UNAVAILABLE
        assert [(h.what, h.detail) for h in replay.calls[caller].heard] == [
            ("answered", ""), ("connected", "agent1"),  # with agent1 in A
            ("agent-left", "agent1"), ("music-start", ""),  # alone in H, with H's music
            ("music-stop", ""), ("connected", "agent1"), ("connected", "agent2"),  # into C, agent1 still there
            ("agent-left", "agent1"),  # removed from C and hung up
            ("hangup-by-caller", ""),
        ]


class TestTrace07:
    async def test_07_app_disconnect_with_default_subscription(self, replay: Replay) -> None:
        """Trace 07 seen with the default subscription: while the socket is closed the channel stays Up, REST
        works, events are lost and not replayed; with no socket an inbound call is refused (603), and 4001
        falls back to Playback(beep). GET /applications follows trace 12 (200 while disconnected)."""
        trace = load_trace("07")
        caller = trace.first_inbound()
        closes = [ln["t"] for ln in trace.lines if ln["kind"] == "note" and ln["text"] == "app closes its websocket"]
        opens = [ln["t"] for ln in trace.lines if ln["kind"] == "note" and ln["text"] == "app websocket connected"]
        no_app = trace.time_of("sip", lambda ln: ln["first_line"].startswith("SIP/2.0 603"))
        ghost = trace.time_of("sip", lambda ln: ln["first_line"].startswith("INVITE sip:4001"))
        refused: list[SimCall] = []

        async def call_in(rp: Replay, extension: str) -> None:
            call = await rp.sim.place_call("caller", caller_name="caller", extension=extension)
            refused.append(call)
            await asyncio.wait_for(call.ended.wait(), 2)  # both were over before the app came back

        replay.expect = _default_subscription_applications(trace)
        await replay.run(
            trace,
            [
                (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
                (closes[0], lambda rp: rp.disconnect()),
                (opens[1], _reconnect_after_beep),
                (closes[1], lambda rp: rp.disconnect()),
                (opens[2], lambda rp: rp.connect()),
                (closes[2], lambda rp: rp.disconnect()),
                (no_app, lambda rp: call_in(rp, "4000")),
                (ghost, lambda rp: call_in(rp, "4001")),
                (opens[3], lambda rp: rp.connect()),
            ],
        )
        expected = normalize([ev for _, ev in trace.events()])
        # Asterisk sent BridgeDestroyed for the app's DELETE after the recorder had closed its socket (the
        # same millisecond); the simulator sends it before the 204, so the replay's socket still gets it.
        assert replay.mismatches == []
        assert normalize(replay.relevant()) == [*expected, ("BridgeDestroyed", "bridge#1")]
        assert replay.calls[caller].hung_up_by == "service"  # by the app's DELETE, not by the gap
        no_app_call, ghost_call = refused
        assert no_app_call.refused and no_app_call.whats() == ["hangup-by-service"]
        assert ghost_call.refused and ghost_call.whats() == ["answered", "prompt", "hangup-by-service"]


class TestHangUpRaces:
    """Traces 13 and 15 (recorded 2026-12-04 with the default subscription, app ``trace``)."""

    async def test_13_caller_hangs_up_during_playback(self, replay: Replay) -> None:
        """Trace 13: a BYE mid-prompt gives ChannelHangupRequest (no cause), PlaybackFinished "failed", StasisEnd,
        and no ChannelDestroyed; moh and GET sent right after the hang-up request are 404 "Channel not found"."""
        trace = load_trace("13")
        sim = replay.sim
        sim.prompt_seconds = lambda media: 16.2 if "monkeys" in media else 0.05  # outlasts the call
        replay.transform = _app_as_liyi
        caller = trace.first_inbound()
        await replay.run(trace, [
            (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
            (_caller_bye(trace, caller) - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
        ])
        assert_same_events(trace, replay)
        ends = [ev for ev in replay.relevant() if ev["type"] == "PlaybackFinished"]
        assert [ev["playback"]["state"] for ev in ends] == ["failed"]
        assert replay.calls[caller].hung_up_by == "caller"
        checks = [r for r in trace.requests if r["t_sent"] > _caller_bye(trace, caller)]
        assert {(r["method"], r["status"]) for r in checks} == {("POST", 404), ("GET", 404), ("POST", 500)}

    async def test_15_caller_hangs_up_while_agent_rings(self, replay: Replay) -> None:
        """Trace 15: the ringing agent leg gets only Dial and ChannelStateChange Ringing; the caller's BYE gives
        ChannelHangupRequest, ChannelLeftBridge (holding bridge), StasisEnd; the app's DELETE of the ringing
        leg gives ChannelHangupRequest cause 32 soft, Dial NOANSWER, ChannelDestroyed cause 16."""
        trace = load_trace("15")
        sim = replay.sim
        sim.add_agent("agent1", script=AgentScript(answer_after=None))  # rings, never answers
        replay.transform = _app_as_liyi
        replay.expect = _agents_context(trace)
        caller = trace.first_inbound()
        await replay.run(trace, [
            (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller)),
            (_caller_bye(trace, caller) - 1e-4, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
        ])
        assert_same_events(trace, replay)
        leg = replay.ids["trace13-agent-C1-1796398584"]
        mine = [ev for ev in replay.relevant() if (_channel_of(ev) or {}).get("id") == leg]
        assert "StasisStart" not in [ev["type"] for ev in mine]
        assert [leg.outcome for leg in sim.agent_legs] == ["cancelled"]
        assert sim.device_state("agent1") == "NOT_INUSE"


def _app_as_liyi(method: str, path: str, query: dict[str, str]) -> dict[str, str]:
    """Traces 13–15 were recorded with the app named ``trace``; the replay's app is ``liyi``."""
    return {**query, "app": "liyi"} if query.get("app") == "trace" else query


def _agents_context(trace: Trace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Trace 15's agent endpoint had dialplan context ``from-agent``; ours (``asterisk-conf/``,
    and the simulator) is ``agents`` — the one thing of the originate's answer that differs by setup."""

    def rewrite(req: dict[str, Any]) -> dict[str, Any]:
        response = req.get("response")
        if req["method"] != "POST" or req["path"] != "/channels" or not isinstance(response, dict):
            return req
        dialplan = {**response["dialplan"], "context": "agents"}
        return {**req, "response": {**response, "dialplan": dialplan}}

    return rewrite


class TestHangUpRaceTraces:
    async def test_14_caller_hangs_up_during_bridge_moh_and_addchannel_races(self, replay: Replay) -> None:
        """Trace 14: BYE in bridge MOH → ChannelHangupRequest, ChannelLeftBridge, StasisEnd, no BridgeDestroyed;
        addChannel right after the hang-up request is 422, after StasisEnd 400."""
        trace = load_trace("14")
        caller = trace.first_inbound()
        replay.sim.hangup_window = 0.2  # the ~1 ms between ChannelLeftBridge and StasisEnd, widened
        replay.sim.bridge_race = "422"  # what this recorded run got (400 in 7 of 9 runs, 204 once)
        bye = _caller_bye(trace, caller) - 1e-4
        await replay.run(trace, [
            (trace.events()[0][0] - 1e-4, lambda rp: rp.place(caller, CallerScript())),
            (bye, lambda rp: rp.sim.caller_hangs_up(rp.calls[caller])),
        ])
        assert_same_events(trace, replay)
        kinds = [ev["type"] for ev in replay.relevant()]
        assert kinds[kinds.index("ChannelHangupRequest"):] == [
            "ChannelHangupRequest", "ChannelLeftBridge", "StasisEnd", "BridgeDestroyed"]  # ours: the DELETE


def _caller_bye(trace: Trace, caller: str) -> float:
    """When the caller's BYE reached the app (its first ChannelHangupRequest)."""
    return trace.time_of("ari_event", lambda ln: ln["event"]["type"] == "ChannelHangupRequest"
                         and ln["event"]["channel"]["id"] == caller)


def _trace_moh_events(trace: Trace) -> list[tuple[str, str | None]]:
    return [(ln["event"]["Event"], ln["event"].get("Class")) for ln in trace.lines
            if ln["kind"] == "ami_event" and ln["event"]["Event"].startswith("MusicOnHold")]


def _sim_moh_events(sim: AsteriskSimulator) -> list[tuple[str, str | None]]:
    return [(args[0]["Event"], args[0].get("Class")) for method, args in sim.ami_log
            if method == "emit" and args[0]["Event"].startswith("MusicOnHold")]


def _trace_device_states(trace: Trace, device: str) -> list[str]:
    return [ln["event"]["State"] for ln in trace.lines if ln["kind"] == "ami_event"
            and ln["event"]["Event"] == "DeviceStateChange" and ln["event"].get("Device") == device]


def _sim_device_states(sim: AsteriskSimulator, device: str) -> list[str]:
    return [args[1] for method, args in sim.ami_log if method == "set_device_state" and args[0] == device]


def _default_subscription_applications(trace: Trace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Trace 07's GET /applications answers as an app with the default subscription gets them.

    With subscribeAll the app is unregistered while its socket is closed (404)
    and lists the ``__AST_*_ALL_TOPIC`` sources; with the default subscription
    it stays registered while subscribed to a live channel or bridge, listing
    them (trace 12). The caller and its bridge live until the app's DELETEs.
    """
    caller = trace.first_inbound()
    bridge = next(r["response"]["id"] for r in trace.requests if r["method"] == "POST" and r["path"] == "/bridges")
    gone = trace.time_of("ari_request", lambda ln: ln["method"] == "DELETE" and ln["path"] == f"/bridges/{bridge}")

    def rewrite(req: dict[str, Any]) -> dict[str, Any]:
        if not req["path"].startswith("/applications"):
            return req
        live = req["t"] < gone
        app = {"name": "liyi", "channel_ids": [caller] if live else [], "bridge_ids": [bridge] if live else [],
               "endpoint_ids": [], "device_names": [], "events_allowed": [], "events_disallowed": []}
        return {**req, "status": 200, "response": app if req["path"] == "/applications/liyi" else [app]}

    return rewrite


async def _reconnect_after_beep(rp: Replay) -> None:
    await asyncio.sleep(0.15)  # the gap outlasts the beep played meanwhile, as in the trace (5 s)
    await rp.connect()


def _key_press(trace_channel: str, digit: str, duration_ms: int) -> Action:
    def press(rp: Replay) -> None:
        if trace_channel in rp.calls:
            rp.sim.caller_sends_dtmf(rp.calls[trace_channel], digit, duration_ms)
        else:
            rp.sim.agent_sends_dtmf(rp.ids[trace_channel], digit, duration_ms)

    return press


# ---------------------------------------------------------------------------- a plain client for other tests


class AriTestClient:
    """Raw aiohttp requests and a WebSocket event log against one simulator."""

    def __init__(self, sim: AsteriskSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.events: list[dict[str, Any]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, app: str = "liyi") -> None:
        self._ws = await self.session.ws_connect(f"{self.sim.ari_url}/ari/events?app={app}", headers=_auth(self.sim))
        ws = self._ws

        async def read() -> None:
            async for msg in ws:
                self.events.append(json.loads(msg.data))

        self._reader = asyncio.create_task(read())
        while not self.sim.app_connected:
            await asyncio.sleep(0.001)

    async def disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
        while self.sim.app_connected:
            await asyncio.sleep(0.001)

    async def rq(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.sim.ari_url}/ari{path}", params=params, headers=_auth(self.sim)
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def wait_for(self, kind: str, timeout: float = 3.0, **fields: Any) -> dict[str, Any]:
        """The first event of type ``kind`` whose channel/playback has the given fields."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for ev in self.events:
                if ev["type"] == kind and all(_field(ev, k) == v for k, v in fields.items()):
                    return ev
            await asyncio.sleep(0.005)
        raise AssertionError(f"no {kind} {fields} in {[e['type'] for e in self.events]}")

    def types(self, channel_id: str | None = None) -> list[str]:
        return [e["type"] for e in self.events if channel_id is None or (_channel_of(e) or {}).get("id") == channel_id]


def _field(ev: dict[str, Any], key: str) -> Any:
    """``channel_id``, ``playback_id``, ``state``, ``digit``... looked up where ARI puts them."""
    ch = _channel_of(ev) or {}
    if key == "channel_id":
        return ch.get("id")
    if key == "playback_id":
        return ev.get("playback", {}).get("id")
    if key == "playback_state":
        return ev.get("playback", {}).get("state")
    if key == "state":
        return ch.get("state")
    return ev.get(key)
