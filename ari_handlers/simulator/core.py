"""``AsteriskSimulator``: a stand-in for Asterisk 22 behind ARI (and AMI).

It behaves like the real Asterisk 22.10.1 recorded in ``tests/traces/``:
which events follow which request, in what order, with which fields, as an
app with the **default subscription** sees them (trace 11). The HTTP and
WebSocket side lives in ``ari_server``; the objects' JSON in ``model``; the
people (callers, agents) in ``scripts``. This module is the behaviour.

What the recordings taught, and the simulator therefore does:

- an inbound call enters Stasis in state ``Ring`` with ``args ["inbound"]``;
  ``ring`` changes nothing visible; ``answer`` sends ChannelStateChange Up
  before its 204; a ``play`` before the answer is early media and the next
  ``answer`` waits for it to end (trace 08);
- a caller who hangs up gets ChannelHangupRequest (a BYE: no cause), then
  ChannelLeftBridge, PlaybackFinished ``failed`` for a prompt it was hearing,
  StasisEnd and then nothing more: no ChannelDestroyed unless the app
  subscribed to the channel explicitly, no BridgeDestroyed (traces 11, 12,
  13, 14, 15); requests about it from then on are 404 "Channel not found"
  (trace 13); with ``hangup_window`` StasisEnd comes that much later, and an
  addChannel of the caller in between races as in trace 14 (400, 422, or
  204 with ChannelEnteredBridge, ChannelLeftBridge, StasisEnd; forced by
  ``bridge_race`` or drawn 7:1:1 from ``seed``);
- an originated leg that rings gets Dial "" and "RINGING" and a
  ChannelStateChange Ringing, never a StasisStart; the app's DELETE while it
  rings gives ChannelHangupRequest cause 32 soft, Dial NOANSWER, then
  ChannelDestroyed cause 16 (trace 15);
- addChannel of a channel with a prompt playing waits for the prompt to end
  (the real Asterisk of issue 8; no recorded trace);
- an agent who hangs up in a bridge leaves the caller alone, Up, in silence;
  Asterisk does nothing for the caller (trace 03);
- an originate to an unregistered endpoint is ``500 {"error": "Allocation
  failed"}``; an unanswered leg ends with ChannelDestroyed cause 19 and no
  hangup request; a declined one with cause 17 and Dial BUSY (trace 04);
- no ARI event for hold or channel music on hold, only AMI MusicOnHoldStart/
  Stop on the held channel; hold then moh then unhold stops the music once
  (trace 05); bridge music (``/bridges/{id}/moh``) gives no event at all;
- a bridge ``play`` reports ``target_uri bridge:<id>`` once per app (twice only
  under subscribeAll); in a holding bridge whose music runs it starts and
  fails at once; ``DELETE /playbacks/{id}`` finishes it ``done`` and a later
  GET is 404 (trace 05);
- channels move between bridges with addChannel (``role`` accepted), a
  two-PJSIP mixing bridge reports ``native_rtp``, and a bridge lists its
  channel ids sorted (traces 06, 10);
- DTMF reaches the app only from a channel in Stasis that is not bridged or
  is in a ``dtmf_events`` bridge (trace 06);
- with the app's WebSocket closed its channels live on and REST works, events
  are lost and never replayed; the app stays registered while it is still
  subscribed to a channel or bridge (trace 12, the default subscription;
  subscribeAll's 404 in trace 07 does not apply); an inbound call fails at
  once (STASISSTATUS=FAILED, 603 Decline; trace 07 C).

Not covered by any trace, so built from the ARI spec and Asterisk's sources
(res/ari/resource_channels.c, res/stasis_recording) and marked as such:

- ``record`` (R3 names): 201 LiveRecording ``queued``; it shares the
  channel's command queue with ``play`` (each waits for the other); it
  answers an unanswered channel, sends RecordingStarted, beeps, captures, and
  ends with RecordingFinished ``done`` (whole-second ``duration``), also on a
  hang-up (between ChannelHangupRequest and StasisEnd, keeping what was
  captured); ``DELETE /recordings/live/{name}`` gives ``canceled`` and no
  file; RecordingFailed only through the ``recording_failure`` hook. The key
  that ends a recording still raises ChannelDtmfReceived;
- customers through the trunk (``PJSIP/<number>@trunk``): the agent-leg
  event order of traces 03/04/11; a busy line is cause 17 and Dial BUSY
  without ringing.

Everything runs on the event loop with ``call_later`` timers, so thousands
of concurrent calls cost little.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from ari_handlers.simulator.model import (
    ASTERISK_ID,
    BRIDGE_TYPE_FLAGS,
    CAUSE_TEXT,
    HANGUP_REASONS,
    RECORDING_FORMATS,
    RECORDING_IF_EXISTS,
    RECORDING_TERMINATE_ON,
    AgentPhone,
    Bridge,
    Channel,
    IdSource,
    LiveRecording,
    Playback,
    StoredRecording,
    ari_time,
    endpoint_json,
    media_outcome,
    queued_recording_name,
    recording_queue_id,
)
from ari_handlers.simulator.scripts import (
    AgentLeg,
    AgentScript,
    CallerScript,
    CustomerScript,
    Heard,
    SimCall,
)

log = structlog.get_logger()

_ANSWERS_SOON = AgentScript()
_PLAIN_CALLER = CallerScript()
_UNANSWERED_CUSTOMER = CustomerScript(answer_after=None)
_BUSY_AFTER = 0.1  # seconds from the INVITE to the carrier's 486 Busy Here

NOT_IN_STASIS = "Channel not in Stasis application"
AMI_STATE = {"Down": "0", "Ring": "4", "Ringing": "5", "Up": "6"}


class AriError(Exception):
    """An ARI error response: status and the JSON body Asterisk sends (trace 08)."""

    def __init__(self, status: int, message: str, key: str = "message") -> None:
        super().__init__(message)
        self.status = status
        self.body = {key: message}


class AsteriskSimulator:
    """A simulated Asterisk 22 with PJSIP callers and agents, serving ARI and AMI on loopback."""

    def __init__(
        self,
        *,
        app: str = "liyi",
        ari_user: str = "liyi",
        ari_password: str = "liyi-sim",
        ami_user: str = "liyi",
        ami_secret: str = "liyi-sim",
        host: str = "127.0.0.1",
        ari_port: int = 0,
        ami_port: int = 0,
        prompt_seconds: float | Callable[[str], float] = 0.3,
        stasis_delay: float = 0.0,
        trunks: tuple[str, ...] = ("trunk", "carrier"),
        hangup_window: float = 0.0,
        bridge_race: str | None = None,
        seed: int | None = None,
    ) -> None:
        from ari_handlers.simulator.ari_server import AriServer

        self.app = app
        self.ari_user = ari_user
        self.ari_password = ari_password
        self.host = host
        self.prompt_seconds = prompt_seconds
        self.stasis_delay = stasis_delay
        self.trunks = trunks  # PJSIP/<number>@<trunk> reaches a customer
        # A caller's BYE: ChannelHangupRequest (and ChannelLeftBridge) at once, StasisEnd this
        # much later. An addChannel of the caller in between is trace 14's race, answered as
        # ``bridge_race`` says ("400", "422" or "204"), or by a seeded draw 7:1:1 as recorded.
        self.hangup_window = hangup_window
        self.bridge_race = bridge_race
        self._race = random.Random(seed)
        self.started_at = time.time()
        self.calls: list[SimCall] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.agent_legs: list[AgentLeg] = []
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.playbacks: dict[str, Playback] = {}
        self.agents: dict[str, AgentPhone] = {}
        self.customers: dict[str, CustomerScript] = {}  # number -> how that customer's phone behaves
        self.customer_calls: list[SimCall] = []  # every customer leg placed, oldest first
        self.live_recordings: dict[str, LiveRecording] = {}
        self.stored_recordings: dict[str, StoredRecording] = {}
        # set it to make every recording that starts fail at once with this cause (RecordingFailed)
        self.recording_failure: str | None = None
        self.known_apps: set[str] = set()  # apps that connected once stay registered (trace 12)
        self.ami_log: list[tuple[str, Any]] = []  # everything told to the AMI side, in order
        self.ami: Any = None
        self._ami_settings = (ami_user, ami_secret, host, ami_port)
        self._ids = IdSource()
        self._calls_by_channel: dict[str, SimCall] = {}
        self._legs_by_channel: dict[str, AgentLeg] = {}
        self._leg_timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._leg_args: dict[str, list[str]] = {}
        self._customer_scripts: dict[str, CustomerScript] = {}
        self._device_states: dict[str, str] = {}
        self._event_hooks: list[Callable[[dict[str, Any]], None]] = []
        self.server = AriServer(self, host=host, port=ari_port)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve ARI, and AMI if the AMI server module is available."""
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        try:
            from ari_handlers.simulator.ami_server import AmiServer  # written separately
        except ImportError:
            log.warning("sim.ami_unavailable", reason="ari_handlers.simulator.ami_server missing")
        else:
            user, secret, host, port = self._ami_settings
            self.ami = AmiServer(username=user, secret=secret, host=host, port=port)
            await self.ami.start()
            for agent in self.agents.values():
                self.ami.set_contact(agent.endpoint, agent.registered)
                self.ami.set_device_state(agent.endpoint, self._device_states.get(agent.endpoint, "UNAVAILABLE"))
        log.info("sim.started", ari_url=self.ari_url, ami_port=self.ami_port)

    async def stop(self) -> None:
        for call in self.calls:
            if not call.ended.is_set():
                call.finish("service", "simulator stopped")
        for timers in self._leg_timers.values():
            for timer in timers:
                timer.cancel()
        for pb in self.playbacks.values():
            if pb.timer:
                pb.timer.cancel()
        for rec in self.live_recordings.values():
            rec.cancel_timers()
        for call in self.customer_calls:
            if not call.ended.is_set():
                call.finish("service", "simulator stopped")
        await self.server.stop()
        if self.ami is not None:
            await self.ami.stop()

    def stall_connections(self) -> None:
        """Asterisk's end of every open ARI event socket and AMI session goes silent.

        As when its host or the network path dies without a word: nothing is
        closed, nothing more is answered, events are lost. New connections are
        served, so a client that notices and reconnects finds Asterisk again.
        """
        self.server.hub.stall()
        if self.ami is not None:
            self.ami.stall()

    @property
    def ari_url(self) -> str:
        return f"http://{self.host}:{self.server.port}"

    @property
    def ami_port(self) -> int:
        return int(self.ami.port) if self.ami is not None else 0

    @property
    def app_connected(self) -> bool:
        return self.server.hub.connected(self.app)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def on_event(self, hook: Callable[[dict[str, Any]], None]) -> None:
        """Call ``hook`` with every ARI event the simulator emits (delivered or not)."""
        self._event_hooks.append(hook)

    # ------------------------------------------------------------------ agents

    def add_agent(self, name: str, *, registered: bool = True, script: AgentScript = _ANSWERS_SOON) -> None:
        """Create endpoint ``PJSIP/<name>``, with a phone registered or not."""
        self.agents[name] = AgentPhone(name, registered, script)
        self._ami("set_contact", f"PJSIP/{name}", registered)
        self._refresh_device(name)

    def set_agent_script(self, name: str, script: AgentScript) -> None:
        self.agents[name].script = script

    def register_agent(self, name: str) -> None:
        self._set_registered(name, True)

    def unregister_agent(self, name: str) -> None:
        self._set_registered(name, False)

    def _set_registered(self, name: str, registered: bool) -> None:
        agent = self.agents[name]
        if agent.registered == registered:
            return
        agent.registered = registered
        log.info("sim.agent_registration", agent=name, registered=registered)
        self._ami("set_contact", agent.endpoint, registered)
        self._refresh_device(name)

    def legs_of(self, agent: str) -> list[AgentLeg]:
        return [leg for leg in self.agent_legs if leg.agent == agent]

    # ------------------------------------------------------------------ inbound calls

    async def place_call(
        self,
        caller_number: str,
        *,
        caller_name: str = "",
        script: CallerScript = _PLAIN_CALLER,
        extension: str = "4000",
    ) -> SimCall:
        """A caller dials ``extension``: 4000 is ``Stasis(app,inbound)``, 4001 a never-connected
        app (falls back to ``Playback(beep)``), 3001 ``Answer``+``Echo`` (never in Stasis).

        Returns once StasisStart was sent, or once the call was refused because the
        app has no WebSocket (STASISSTATUS=FAILED → 603 Decline, trace 07 C).
        """
        now = time.time()
        channel_id, n = self._ids.next(now)
        ch = Channel(
            id=channel_id,
            name=f"PJSIP/caller-{n:08x}",
            role="caller",
            created=now,
            state="Ring",
            protocol_id=f"{n}-sim@127.0.0.1",
            caller_name=caller_name,
            caller_number=caller_number,
            context="inbound",
            exten=extension,
        )
        self.channels[channel_id] = ch
        call = SimCall(
            channel_id=channel_id,
            caller_number=caller_number,
            caller_name=caller_name,
            script=script,
            actions=self,
            loop=self.loop,
        )
        self.calls.append(call)
        self._calls_by_channel[channel_id] = call
        self._ami_channel_event("Newchannel", ch)
        call.started()
        log.info("sim.call_placed", call_id=channel_id, caller=caller_number, extension=extension)
        if extension == "3001":
            ch.app_name, ch.priority = "Echo", 2
            self._set_up(ch)
            return call
        if self.stasis_delay > 0:
            await asyncio.sleep(self.stasis_delay)
            if ch.gone:
                return call
        if extension == "4001":
            self._stasis_failed_fallback(ch, call)
            return call
        if not self.app_connected:
            call.refused = True
            log.info("sim.stasis_failed", call_id=channel_id, app=self.app)
            self._destroy(ch, cause=16)
            call.finish("service", "603 Decline: Stasis app not connected (STASISSTATUS=FAILED)")
            return call
        ch.in_stasis = ch.subscribed = True
        ch.app_name, ch.app_data, ch.priority = "Stasis", f"{self.app},inbound", 2
        self._emit_channel("StasisStart", ch, args=["inbound"])
        return call

    def _stasis_failed_fallback(self, ch: Channel, call: SimCall) -> None:
        """4001: Stasis(liyi-ghost) fails, then ``Playback(beep)`` answers and ``Hangup()`` (trace 07 D)."""
        call.refused = True
        ch.app_name, ch.app_data, ch.priority = "Playback", "beep", 4
        self._set_up(ch)
        call.prompt_started("dialplan", "sound:beep", early=False)

        def done() -> None:
            if not ch.gone:
                call.prompt_stopped("dialplan", "sound:beep", completed=True)
                self._destroy(ch, cause=16)
                call.finish("service", "dialplan Hangup() after Stasis failed")

        self.loop.call_later(self._duration("sound:beep"), done)

    # ------------------------------------------------------------------ caller actions (scripts)

    def caller_hangs_up(self, call: SimCall) -> None:
        """The caller's phone hangs up: BYE if answered, CANCEL while ringing (traces 01, 02)."""
        ch = self.channels.get(call.channel_id)
        if ch is None or ch.gone:
            return
        if ch.role == "customer":
            self._customer_hangs_up(ch, call)
            return
        answered = ch.state == "Up"
        log.info("sim.caller_hangup", call_id=ch.id, answered=answered)
        # The caller's experience ends with their hangup: leaving the bridge
        # afterwards is no "agent-left" or "music-stop" they heard.
        call.finish("caller")
        if ch.in_stasis:
            if answered:
                self._emit_channel("ChannelHangupRequest", ch)
            else:
                self._emit_channel("ChannelHangupRequest", ch, cause=127, tech_cause=487)
            if self.hangup_window > 0:
                # trace 14: ChannelHangupRequest → ChannelLeftBridge → (a moment) → StasisEnd
                ch.hanging_up = True
                if ch.bridge_id is not None:
                    self._leave_bridge(ch)
                self.loop.call_later(self.hangup_window, self._caller_gone, ch, answered)
                return
        self._caller_gone(ch, answered)

    def _caller_gone(self, ch: Channel, answered: bool) -> None:
        """The end of a caller's hang-up: StasisEnd (leaving any bridge first), then the channel is gone."""
        if ch.gone:
            return
        ch.hanging_up = False
        if ch.in_stasis:
            self._leave_stasis(ch)
            if ch.explicit_subscription:
                extra = {} if answered else {"tech_cause": 487}
                self._emit_channel("ChannelHangupRequest", ch, cause=16, soft=True, **extra)
        self._destroy(ch, cause=16 if answered else 127, tech_cause=None if answered else 487)

    def _race_outcome(self) -> str:
        """How Asterisk answers addChannel for a channel hanging up (trace 14: 7× 400, 1× 422, 1× 204)."""
        if self.bridge_race is not None:
            return self.bridge_race
        return self._race.choices(("400", "422", "204"), weights=(7, 1, 1))[0]

    def caller_sends_dtmf(self, call: SimCall, digit: str, duration_ms: int = 100) -> None:
        ch = self.channels.get(call.channel_id)
        if ch is not None:
            self._dtmf(ch, digit, duration_ms)

    def agent_sends_dtmf(self, channel_id: str, digit: str, duration_ms: int = 100) -> None:
        """The agent presses a key on the phone of leg ``channel_id`` (baresip ``sndcode``, trace 06)."""
        ch = self.channels.get(channel_id)
        if ch is not None and ch.role == "agent":
            self._dtmf(ch, digit, duration_ms)

    def _dtmf(self, ch: Channel, digit: str, duration_ms: int) -> None:
        if not ch.in_stasis:
            return
        bridge = self.bridges.get(ch.bridge_id) if ch.bridge_id else None
        if bridge is not None and not ch.absorb_dtmf:
            # The tone passes through the bridge: the others hear it (trace 06).
            for other_id in bridge.channels:
                call = self._calls_by_channel.get(other_id)
                if other_id != ch.id and call is not None:
                    call.note("dtmf", digit)
        if bridge is not None and not bridge.dtmf_events:
            return  # native/simple mixing bridge: passed through, no event (trace 06)
        self._emit_channel("ChannelDtmfReceived", ch, digit=digit, duration_ms=duration_ms)
        rec = self._recording_on(ch)
        capturing = rec is not None and rec.state == "recording" and rec.capture_started is not None
        if capturing and rec is not None and rec.terminate_on in ("any", digit):
            self._finish_recording(rec, "done")

    # ------------------------------------------------------------------ channel operations (REST)

    def get_channel(self, channel_id: str) -> Channel:
        ch = self.channels.get(channel_id)
        if ch is None or ch.gone:
            raise AriError(404, "Channel not found")
        return ch

    def stasis_channel(self, channel_id: str) -> Channel:
        ch = self.get_channel(channel_id)
        if not ch.in_stasis:
            raise AriError(409, NOT_IN_STASIS)
        return ch

    def ring(self, channel_id: str, on: bool) -> None:
        ch = self.stasis_channel(channel_id)
        if ch.state == "Up":
            return
        if on and not ch.ringing_indicated:
            call = self._calls_by_channel.get(ch.id)
            if call is not None:
                call.note("ringing")
        ch.ringing_indicated = on

    async def answer(self, channel_id: str) -> None:
        ch = self.stasis_channel(channel_id)
        while ch.state != "Up" and ch.playback_queue:  # early media plays out first (trace 08)
            pb = self.playbacks.get(ch.playback_queue[0])
            if pb is None:
                break
            await pb.finished.wait()
        if ch.gone:
            raise AriError(404, "Channel not found")
        if ch.state != "Up":
            self._set_up(ch)

    def _set_up(self, ch: Channel) -> None:
        ch.state = "Up"
        ch.ringing_indicated = False
        self._emit_channel("ChannelStateChange", ch)
        self._ami_channel_event("Newstate", ch)
        call = self._calls_by_channel.get(ch.id)
        if call is not None:
            call.answered()
            for pb_id in ch.playback_queue[:1]:
                pb = self.playbacks.get(pb_id)
                if pb is not None and pb.state == "playing":
                    call.set_audible(f"playback:{pb.id}", True)

    def hangup(self, channel_id: str, reason: str | None, reason_code: str | None) -> None:
        """DELETE /channels/{id}: ChannelHangupRequest cause 32 soft, then the channel ends (traces 05, 08);
        a leg still ringing also gets Dial NOANSWER before its ChannelDestroyed cause 16 (trace 15)."""
        ch = self.get_channel(channel_id)
        cause = 16
        if reason_code:
            try:
                cause = int(reason_code)
            except ValueError:
                raise AriError(400, "Invalid reason for hangup reason provided") from None
        elif reason is not None:
            if reason not in HANGUP_REASONS:
                raise AriError(400, "Invalid reason for hangup reason provided")
            cause = HANGUP_REASONS[reason]
        log.info("sim.service_hangup", call_id=ch.id, role=ch.role, state=ch.state)
        call = self._calls_by_channel.get(ch.id)
        if call is not None:
            call.finish("service")  # the BYE ends what the caller hears, before the bridge is left
        if ch.subscribed:
            self._emit_channel("ChannelHangupRequest", ch, cause=32, soft=True)
        leg = self._legs_by_channel.get(ch.id)
        if ch.in_stasis:
            self._leave_stasis(ch)
            if ch.role == "caller" and ch.explicit_subscription:
                self._emit_channel("ChannelHangupRequest", ch, cause=16, soft=True)
        if ch.state == "Ringing" and ch.role in ("agent", "customer"):
            self._emit_dial(ch, "NOANSWER")  # the dial we cancel ends unanswered (trace 15)
        if leg is not None and leg.outcome in ("ringing", "answered"):
            self._end_leg(leg, "cancelled" if leg.outcome == "ringing" else "service-hung-up")
        self._cancel_leg_timers(ch.id)
        self._destroy(ch, cause=cause)

    def start_moh(self, channel_id: str, moh_class: str | None) -> None:
        ch = self.stasis_channel(channel_id)
        self._channel_music(ch, True)

    def stop_moh(self, channel_id: str) -> None:
        ch = self.stasis_channel(channel_id)
        self._channel_music(ch, False)

    def hold(self, channel_id: str, on: bool) -> None:
        """Hold gives the held channel music (AMI MusicOnHoldStart) and no ARI event (trace 05)."""
        ch = self.stasis_channel(channel_id)
        if on and not ch.on_hold:
            ch.on_hold = True
            self._channel_music(ch, True)
        elif not on and ch.on_hold:
            ch.on_hold = False
            self._channel_music(ch, False)

    def _channel_music(self, ch: Channel, on: bool) -> None:
        if on and ch.moh_class is None:
            ch.moh_class = "default"  # an unknown class plays "default" (trace 08)
            self._ami_channel_event("MusicOnHoldStart", ch, Class="default")
        elif not on and ch.moh_class is not None:
            ch.moh_class = None
            self._ami_channel_event("MusicOnHoldStop", ch)
        else:
            return
        self._refresh_audio(ch)

    def set_variable(self, channel_id: str, variable: str | None, value: str, report: bool) -> None:
        if not variable:
            raise AriError(400, "Missing variable parameter.")
        ch = self.stasis_channel(channel_id)
        ch.variables[variable] = value
        if report:
            ch.reported_variables.add(variable)
        self._emit_channel("ChannelVarset", ch, variable=variable, value=value)

    def get_variable(self, channel_id: str, variable: str | None) -> str:
        if not variable:
            raise AriError(400, "Missing variable parameter.")
        ch = self.get_channel(channel_id)
        if variable not in ch.variables:
            raise AriError(404, "Provided variable was not found")
        return ch.variables[variable]

    # ------------------------------------------------------------------ playbacks

    def play(
        self, kind: str, target_id: str, media: list[str], lang: str | None, playback_id: str | None
    ) -> dict[str, Any]:
        """Queue ``media`` on a channel or bridge; it starts now if nothing else plays there.

        Returns the Playback JSON as it was when queued: the 201 body says
        ``queued`` although PlaybackStarted follows at once (trace 01).
        """
        if kind == "channel":
            target: Channel | Bridge = self.stasis_channel(target_id)
        else:
            target = self.get_bridge(target_id)
        if not media:
            raise AriError(500, "Failed to queue media for playback")
        playback_id = playback_id or str(uuid.uuid4())
        if playback_id in self.playbacks:
            raise AriError(409, "Playback with id already exists")
        pb = Playback(id=playback_id, media=media, target_kind=kind, target_id=target_id, language=lang or "en")
        self.playbacks[pb.id] = pb
        target.playback_queue.append(pb.id)
        snapshot = pb.to_json()
        if len(target.playback_queue) == 1:
            self._start_playback(pb)
        return snapshot

    def get_playback(self, playback_id: str) -> Playback:
        pb = self.playbacks.get(playback_id)
        if pb is None:
            raise AriError(404, "Playback not found")
        return pb

    def stop_playback(self, playback_id: str) -> None:
        """DELETE /playbacks/{id}: PlaybackFinished with state ``done``, not "stopped" (trace 05)."""
        pb = self.get_playback(playback_id)
        if pb.state == "queued":
            self._drop_playback(pb)
            return
        self._finish_playback(pb, "done", completed=False)

    def _start_playback(self, pb: Playback) -> None:
        bridge = self.bridges.get(pb.target_id) if pb.target_kind == "bridge" else None
        ch = self.channels.get(pb.target_id) if pb.target_kind == "channel" else None
        pb.state = "playing"
        pb.early = ch is not None and ch.state != "Up"
        self._emit_playback("PlaybackStarted", pb)
        if bridge is not None and bridge.is_holding and bridge.moh_class is not None:
            # the holding bridge's music already is its one announcer: Asterisk logs
            # "already has an announcer" and the playback fails at once (trace 05 2b)
            for call in self._listeners(pb):
                call.prompt_failed(pb.current_media)
            self._finish_playback(pb, "failed", completed=False)
            return
        self._play_current(pb)

    def _play_current(self, pb: Playback) -> None:
        media = pb.current_media
        outcome = self._media_outcome(media)
        if outcome == "missing":
            for call in self._listeners(pb):
                call.prompt_failed(media)
            self._finish_playback(pb, "failed", completed=False)
            return
        if outcome == "unknown":
            # Asterisk starts it and never finishes it; the playback is gone (trace 08)
            self._drop_playback(pb)
            return
        for call in self._listeners(pb):
            if pb.target_kind == "channel":
                call.prompt_started(pb.id, media, pb.early)
            else:
                call.note("prompt", media)
        for leg in self._legs_hearing(pb):
            leg.heard.append(Heard(time.time(), "prompt", media))
        if pb.target_kind == "bridge":
            self._refresh_bridge(pb.target_id)
        pb.timer = self.loop.call_later(self._duration(media), self._media_done, pb)

    def _media_done(self, pb: Playback) -> None:
        pb.timer = None
        if pb.index + 1 < len(pb.media):
            pb.state = "continuing"
            self._emit_playback("PlaybackContinuing", pb)
            pb.index += 1
            pb.state = "playing"
            for call in self._listeners(pb):
                call.prompt_stopped(pb.id, pb.media[pb.index - 1], completed=True)
            self._play_current(pb)
            return
        self._finish_playback(pb, "done", completed=True)

    def _finish_playback(self, pb: Playback, state: str, *, completed: bool) -> None:
        if pb.timer is not None:
            pb.timer.cancel()
            pb.timer = None
        pb.state = state
        self._emit_playback("PlaybackFinished", pb)
        listeners = self._listeners(pb)
        self._drop_playback(pb)
        for call in listeners:
            call.prompt_stopped(pb.id, pb.current_media, completed=completed and state == "done")

    def _drop_playback(self, pb: Playback) -> None:
        """Forget a playback and start the next one queued on the same target."""
        if pb.timer is not None:
            pb.timer.cancel()
            pb.timer = None
        self.playbacks.pop(pb.id, None)
        pb.finished.set()
        target = self.channels.get(pb.target_id) if pb.target_kind == "channel" else self.bridges.get(pb.target_id)
        if target is None or pb.id not in target.playback_queue:
            return
        was_current = target.playback_queue[0] == pb.id
        target.playback_queue.remove(pb.id)
        if pb.target_kind == "bridge":
            self._refresh_bridge(pb.target_id)
        if was_current:
            self._start_next(target)

    def _start_next(self, target: Channel | Bridge) -> None:
        """Start what waits first in the target's queue: a playback or (channels) a recording."""
        if not target.playback_queue:
            return
        first = target.playback_queue[0]
        name = queued_recording_name(first)
        if name is not None:
            rec = self.live_recordings.get(name)
            if rec is not None and isinstance(target, Channel):
                self._start_recording(rec, target)
            return
        nxt = self.playbacks.get(first)
        if nxt is not None:
            self._start_playback(nxt)

    def _end_playbacks(self, target: Channel | Bridge, state: str = "done") -> None:
        """The target is going away: the current playback ends with ``state``, queued ones vanish.

        A channel that hangs up mid-prompt ends it ``failed`` (trace 13: ChannelHangupRequest,
        PlaybackFinished ``failed``, StasisEnd); a destroyed bridge's playback ends ``done``.
        """
        queue = list(target.playback_queue)
        target.playback_queue.clear()
        for i, pb_id in enumerate(queue):
            name = queued_recording_name(pb_id)
            if name is not None:
                self._end_recording_with_channel(name, current=i == 0)
                continue
            pb = self.playbacks.get(pb_id)
            if pb is None:
                continue
            if i == 0 and pb.state == "playing":
                if pb.timer is not None:
                    pb.timer.cancel()
                    pb.timer = None
                pb.state = state
                self._emit_playback("PlaybackFinished", pb)
                for call in self._listeners(pb):
                    call.set_audible(f"playback:{pb.id}", False)
            self.playbacks.pop(pb_id, None)
            pb.finished.set()

    def _listeners(self, pb: Playback) -> list[SimCall]:
        """The simulated callers who hear this playback."""
        if pb.target_kind == "channel":
            call = self._calls_by_channel.get(pb.target_id)
            return [call] if call is not None and not call.ended.is_set() else []
        bridge = self.bridges.get(pb.target_id)
        if bridge is None:
            return []
        calls = (self._calls_by_channel.get(cid) for cid in bridge.channels)
        return [c for c in calls if c is not None and not c.ended.is_set()]

    def _legs_hearing(self, pb: Playback) -> list[AgentLeg]:
        """The agents who hear this playback: on their own leg, or bridged with it."""
        if pb.target_kind == "channel":
            ids = [pb.target_id]
        else:
            bridge = self.bridges.get(pb.target_id)
            ids = list(bridge.channels) if bridge is not None else []
        legs = (self._legs_by_channel.get(cid) for cid in ids)
        return [leg for leg in legs if leg is not None and leg.outcome == "answered"]

    def _media_outcome(self, media: str) -> str:
        """``media_outcome``, and a ``recording:`` that is not stored fails like a missing sound."""
        scheme, _, name = media.partition(":")
        if scheme == "recording":
            return "ok" if name in self.stored_recordings else "missing"
        return media_outcome(media)

    def _duration(self, media: str) -> float:
        scheme, _, name = media.partition(":")
        stored = self.stored_recordings.get(name) if scheme == "recording" else None
        if stored is not None:
            return stored.seconds
        if callable(self.prompt_seconds):
            return float(self.prompt_seconds(media))
        return float(self.prompt_seconds)

    # ------------------------------------------------------------------ recordings (R3: the caller's name)

    def record(self, channel_id: str, params: dict[str, str | None]) -> dict[str, Any]:
        """POST /channels/{id}/record: queue a recording on the channel's command queue.

        No trace recorded this, so it follows the ARI spec and
        res/ari/resource_channels.c + res/stasis_recording: 404/409 for a
        channel that is gone or not in Stasis; 409 when it is bridged; 400 for
        a negative limit, an unknown ``terminateOn``/``ifExists`` or a bad name;
        422 for an unknown format; 409 when the name is being recorded, or is
        stored and ``ifExists=fail``. The 201 body is the LiveRecording
        ``queued``; like ``play`` it waits for the channel's earlier playbacks,
        then answers the channel if needed, sends RecordingStarted, plays the
        beep, and captures until the terminating key, ``maxDurationSeconds``,
        ``maxSilenceSeconds`` of silence, ``stop`` or a hang-up. Each ends with
        RecordingFinished ``done`` (a hang-up keeps what was captured, as
        ``ast_play_and_record`` does; status is not checked by record_file),
        ``DELETE`` with RecordingFinished ``canceled`` and no file.
        RecordingFailed only comes from ``recording_failure`` (a test hook
        standing in for e.g. "Failed to answer channel").
        """
        ch = self.stasis_channel(channel_id)
        if ch.bridge_id is not None:
            raise AriError(409, "Channel is currently bridged with other channels")
        max_duration = _atoi(params.get("maxDurationSeconds"))
        max_silence = _atoi(params.get("maxSilenceSeconds"))
        if max_duration < 0:
            raise AriError(400, "max_duration_seconds cannot be negative")
        if max_silence < 0:
            raise AriError(400, "max_silence_seconds cannot be negative")
        terminate_on = params.get("terminateOn") or "none"
        if terminate_on not in RECORDING_TERMINATE_ON:
            raise AriError(400, "terminateOn invalid")
        if_exists = params.get("ifExists") or "fail"
        if if_exists not in RECORDING_IF_EXISTS:
            raise AriError(400, "ifExists invalid")
        fmt = params.get("format") or ""
        if fmt not in RECORDING_FORMATS:
            raise AriError(422, "specified format is unknown on this system")
        name = params.get("name") or ""
        if not name or ".." in name or name.startswith("/"):
            raise AriError(400, "Recording name invalid")
        if name in self.live_recordings or (if_exists == "fail" and name in self.stored_recordings):
            raise AriError(409, f"Recording '{name}' already exists and can not be overwritten")
        rec = LiveRecording(
            name=name,
            format=fmt,
            channel_id=ch.id,
            max_duration=max_duration,
            max_silence=max_silence,
            beep=(params.get("beep") or "").lower() in ("true", "yes", "1"),
            terminate_on=terminate_on,
            if_exists=if_exists,
        )
        self.live_recordings[name] = rec
        ch.playback_queue.append(recording_queue_id(name))
        snapshot = rec.to_json()
        log.info("sim.record", call_id=ch.id, recording=name, max_seconds=max_duration)
        if len(ch.playback_queue) == 1:
            self._start_recording(rec, ch)
        return snapshot

    def get_live_recording(self, name: str) -> LiveRecording:
        rec = self.live_recordings.get(name)
        if rec is None:
            raise AriError(404, "Recording not found")
        return rec

    def stop_recording(self, name: str, *, cancel: bool = False) -> None:
        """``stop`` keeps what was captured (``done``); ``cancel`` (DELETE) discards it (``canceled``).

        A recording still queued behind a playback just leaves the queue.
        """
        rec = self.get_live_recording(name)
        if rec.state == "queued":
            self._drop_queued_recording(rec)
            return
        self._finish_recording(rec, "canceled" if cancel else "done")

    def get_stored_recording(self, name: str) -> StoredRecording:
        stored = self.stored_recordings.get(name)
        if stored is None:
            raise AriError(404, "Recording not found")
        return stored

    def delete_stored_recording(self, name: str) -> None:
        self.get_stored_recording(name)
        del self.stored_recordings[name]

    def copy_stored_recording(self, name: str, destination: str | None) -> StoredRecording:
        source = self.get_stored_recording(name)
        if not destination or ".." in destination:
            raise AriError(400, "Recording name invalid")
        if destination in self.stored_recordings:
            raise AriError(409, "A recording with the same name already exists on the system")
        copy = StoredRecording(destination, source.format, source.seconds)
        self.stored_recordings[destination] = copy
        return copy

    def _recording_on(self, ch: Channel) -> LiveRecording | None:
        """The recording capturing this channel now (not one still queued)."""
        if not ch.playback_queue:
            return None
        name = queued_recording_name(ch.playback_queue[0])
        rec = self.live_recordings.get(name) if name is not None else None
        return rec if rec is not None and rec.state == "recording" else None

    def _start_recording(self, rec: LiveRecording, ch: Channel) -> None:
        """record_file: answer if needed, RecordingStarted, the beep, then capture."""
        if self.recording_failure is not None:
            self._finish_recording(rec, "failed", cause=self.recording_failure)
            return
        if ch.state != "Up":
            self._set_up(ch)
        rec.state = "recording"
        self._emit_recording("RecordingStarted", rec)
        call = self._calls_by_channel.get(ch.id)
        if rec.beep:
            if call is not None:
                call.recording_beep(rec.name)
            rec.timers.append(self.loop.call_later(self._duration("sound:beep"), self._capture, rec))
        else:
            self._capture(rec)

    def _capture(self, rec: LiveRecording) -> None:
        ch = self.channels.get(rec.channel_id)
        if ch is None or ch.gone or rec.state != "recording":
            return
        rec.capture_started = time.time()
        call = self._calls_by_channel.get(ch.id)
        if call is not None:
            call.recording_started(rec.name)
        if rec.max_duration > 0:
            rec.timers.append(self.loop.call_later(rec.max_duration, self._finish_recording, rec, "done"))
        if rec.max_silence > 0:
            talk = self._talk_seconds(rec)
            rec.timers.append(
                self.loop.call_later(talk + rec.max_silence, functools.partial(
                    self._finish_recording, rec, "done", silence_ended=True))
            )

    def _talk_seconds(self, rec: LiveRecording) -> float:
        """How long the person on the recorded channel talks (their script's ``says_name_seconds``)."""
        call = self._calls_by_channel.get(rec.channel_id)
        return (call.script.says_name_seconds or 0.0) if call is not None else 0.0

    def _finish_recording(self, rec: LiveRecording, state: str, *, cause: str = "",
                          silence_ended: bool = False) -> None:
        """End a recording: durations, the stored file, the event, and the channel's next command."""
        if rec.state not in ("queued", "recording"):
            return
        rec.cancel_timers()
        captured: float | None = None
        if rec.capture_started is not None:
            captured = time.time() - rec.capture_started
            if silence_ended:  # Asterisk trims the silence that ended it
                captured = max(0.0, captured - rec.max_silence)
            rec.duration = int(captured)
            if rec.max_silence > 0:
                rec.talking_duration = int(min(self._talk_seconds(rec), captured))
                rec.silence_duration = max(0, rec.duration - rec.talking_duration)
        rec.state, rec.cause = state, cause
        self.live_recordings.pop(rec.name, None)
        if state == "done" and captured is not None:
            old = self.stored_recordings.get(rec.name)
            seconds = captured + (old.seconds if old is not None and rec.if_exists == "append" else 0.0)
            self.stored_recordings[rec.name] = StoredRecording(rec.name, rec.format, seconds)
        log.info("sim.recording_ended", call_id=rec.channel_id, recording=rec.name, state=state,
                 duration=rec.duration)
        self._emit_recording("RecordingFailed" if state == "failed" else "RecordingFinished", rec)
        call = self._calls_by_channel.get(rec.channel_id)
        if call is not None:
            call.recording_stopped(rec.name)
        self._leave_channel_queue(rec)

    def _drop_queued_recording(self, rec: LiveRecording) -> None:
        rec.cancel_timers()
        self.live_recordings.pop(rec.name, None)
        self._leave_channel_queue(rec)

    def _leave_channel_queue(self, rec: LiveRecording) -> None:
        ch = self.channels.get(rec.channel_id)
        queue_id = recording_queue_id(rec.name)
        if ch is None or queue_id not in ch.playback_queue:
            return
        was_current = ch.playback_queue[0] == queue_id
        ch.playback_queue.remove(queue_id)
        if was_current and not ch.gone:
            self._start_next(ch)

    def _end_recording_with_channel(self, name: str, *, current: bool) -> None:
        """The channel leaves Stasis: a running recording finishes with what it has, a queued one vanishes."""
        rec = self.live_recordings.get(name)
        if rec is None:
            return
        if current and rec.state == "recording":
            self._finish_recording(rec, "done")
        else:
            self._drop_queued_recording(rec)

    def _emit_recording(self, kind: str, rec: LiveRecording) -> None:
        ch = self.channels.get(rec.channel_id)
        apps = self._channel_apps(ch) if ch is not None else set()
        self._publish({"type": kind, "recording": rec.to_json()}, apps)

    # ------------------------------------------------------------------ bridges

    def get_bridge(self, bridge_id: str) -> Bridge:
        bridge = self.bridges.get(bridge_id)
        if bridge is None:
            raise AriError(404, "Bridge not found")
        return bridge

    def create_bridge(self, type_: str | None, bridge_id: str | None, name: str | None) -> Bridge:
        flags = frozenset(f.strip() for f in (type_ or "mixing").split(",") if f.strip()) or frozenset({"mixing"})
        if not flags <= BRIDGE_TYPE_FLAGS:
            raise AriError(500, f"Unable to create bridge. Possible duplicate bridge id '{bridge_id or '(null)'}'")
        if bridge_id and bridge_id in self.bridges:
            raise AriError(409, f"Bridge with id '{bridge_id}' already exists")
        bridge = Bridge(id=bridge_id or str(uuid.uuid4()), name=name or "", flags=flags, created=time.time())
        self.bridges[bridge.id] = bridge
        log.info("sim.bridge_created", bridge_id=bridge.id, flags=sorted(flags))
        return bridge

    async def add_to_bridge(self, bridge_id: str, channel_csv: str | None, role: str | None = None,
                            *, absorb_dtmf: bool = False) -> None:
        """addChannel: each channel leaves its bridge (if any) and enters this one (traces 05, 08, 10).

        ``role`` replaces the channel's bridge roles, as Asterisk clears them
        on every addChannel; a holding bridge treats ``announcer`` specially
        and everything else (``participant``, none) as a participant.

        A channel that is hanging up (between ChannelHangupRequest and
        StasisEnd) is trace 14's race: 400 "Channel not found", 422 "Channel
        not in Stasis application", or 204 — it enters the bridge, leaves it
        and its StasisEnd follows at once. A channel with a prompt playing
        (or queued) enters only when its prompts have ended, and the request
        waits for that, as the real Asterisk 22.10.1 did in issue 8 (a target
        accepting during a 10 s announcement was added when it ended; no
        recorded trace shows it).
        """
        bridge = self.get_bridge(bridge_id)
        chans = self._bridge_channels(channel_csv)
        bouncing: list[Channel] = []
        for ch in chans:
            if ch.hanging_up:
                outcome = self._race_outcome()
                if outcome == "400":
                    raise AriError(400, "Channel not found")
                if outcome == "422":
                    raise AriError(422, NOT_IN_STASIS)
                bouncing.append(ch)
            if not ch.in_stasis:
                raise AriError(422, NOT_IN_STASIS)
            if self._recording_on(ch) is not None:
                raise AriError(409, "Channel currently recording")
        for ch in chans:
            while ch.playback_queue and not ch.gone:
                pb = self.playbacks.get(ch.playback_queue[0])
                if pb is None:
                    break
                await pb.finished.wait()
        if any(ch.gone or not ch.in_stasis for ch in chans):
            raise AriError(400, "Channel not found")  # hung up while its prompt played
        bridge = self.get_bridge(bridge_id)
        for ch in chans:
            if ch.bridge_id is not None:
                self._leave_bridge(ch)  # re-adding to the same bridge: left + entered (trace 08)
            ch.bridge_role = role or ""
            ch.absorb_dtmf = absorb_dtmf
            bridge.channels.append(ch.id)
            ch.bridge_id = bridge.id
            self._emit_channel("ChannelEnteredBridge", ch, bridge=bridge.to_json())
            bridge.retune()
            self._joins_announcement(ch, bridge)
        self._refresh_bridge(bridge.id)
        for ch in bouncing:  # the dead channel's moment in the bridge is over (trace 14, 204)
            if ch.bridge_id is not None:
                self._leave_bridge(ch)
            self._caller_gone(ch, ch.state == "Up")

    def _joins_announcement(self, ch: Channel, bridge: Bridge) -> None:
        """A caller who enters a bridge while its announcer plays hears the rest of that prompt."""
        call = self._calls_by_channel.get(ch.id)
        pb = self.playbacks.get(bridge.playback_queue[0]) if bridge.playback_queue else None
        if call is not None and not call.ended.is_set() and pb is not None and pb.state == "playing":
            call.note("prompt", pb.current_media)

    def remove_from_bridge(self, bridge_id: str, channel_csv: str | None) -> None:
        bridge = self.get_bridge(bridge_id)
        chans = self._bridge_channels(channel_csv)
        for ch in chans:
            if not ch.in_stasis:
                raise AriError(422, NOT_IN_STASIS)
            if ch.bridge_id != bridge.id:
                raise AriError(422, "Channel not in this bridge")
        for ch in chans:
            self._leave_bridge(ch)

    def _bridge_channels(self, channel_csv: str | None) -> list[Channel]:
        if not channel_csv:
            raise AriError(400, "Missing parameter channel")
        out = []
        for cid in channel_csv.split(","):
            ch = self.channels.get(cid.strip())
            if ch is None or ch.gone:
                raise AriError(400, "Channel not found")
            out.append(ch)
        return out

    def destroy_bridge(self, bridge_id: str) -> None:
        """Channels leave (last first, trace 06) and stay in Stasis; then BridgeDestroyed."""
        bridge = self.get_bridge(bridge_id)
        self._end_playbacks(bridge)
        for cid in reversed(list(bridge.channels)):
            ch = self.channels.get(cid)
            if ch is not None:
                self._leave_bridge(ch)
        del self.bridges[bridge.id]
        self._publish({"type": "BridgeDestroyed", "bridge": bridge.to_json()}, bridge.apps)
        log.info("sim.bridge_destroyed", bridge_id=bridge.id)

    def bridge_moh(self, bridge_id: str, moh_class: str | None, on: bool) -> None:
        """Bridge music comes from an ``Announcer/ARI_MOH`` channel: no ARI event and no AMI
        MusicOnHoldStart for the bridged channels (traces 05, 10). Stopping music that is not
        playing is 409 (res/ari/resource_bridges.c)."""
        bridge = self.get_bridge(bridge_id)
        if not on and bridge.moh_class is None:
            raise AriError(409, "Bridge isn't playing music")
        bridge.moh_class = (moh_class or "default") if on else None
        log.info("sim.bridge_moh", bridge_id=bridge.id, on=on)
        self._refresh_bridge(bridge.id)

    def _leave_bridge(self, ch: Channel) -> None:
        bridge = self.bridges.get(ch.bridge_id or "")
        ch.bridge_id = None
        if bridge is None:
            return
        if ch.id in bridge.channels:
            bridge.channels.remove(ch.id)
        self._emit_channel("ChannelLeftBridge", ch, bridge=bridge.to_json())
        bridge.retune()
        self._refresh_audio(ch)
        self._refresh_bridge(bridge.id)

    # ------------------------------------------------------------------ what the caller hears

    def _refresh_bridge(self, bridge_id: str) -> None:
        bridge = self.bridges.get(bridge_id)
        if bridge is None:
            return
        for cid in bridge.channels:
            ch = self.channels.get(cid)
            if ch is not None:
                self._refresh_audio(ch)

    def _refresh_audio(self, ch: Channel) -> None:
        """Recompute what reaches a caller: music, agents present, a bridge announcement."""
        call = self._calls_by_channel.get(ch.id)
        if call is None or call.ended.is_set():
            return
        bridge = self.bridges.get(ch.bridge_id) if ch.bridge_id else None
        call.set_music(ch.moh_class is not None or (bridge is not None and bridge.moh_class is not None))
        agents: set[str] = set()
        announcement = False
        if bridge is not None:
            for other_id in bridge.channels:
                other = self.channels.get(other_id)
                if other is None or other.role != "agent" or other.state != "Up" or other.gone:
                    continue
                # a holding bridge's participants hear only its announcer, never each other
                if not bridge.is_holding or (other.bridge_role == "announcer" and ch.bridge_role != "announcer"):
                    agents.add(other.endpoint.split("/", 1)[1])
            if bridge.playback_queue:
                pb = self.playbacks.get(bridge.playback_queue[0])
                announcement = pb is not None and pb.state == "playing"
        call.set_agents(agents)
        call.set_audible("bridge-playback", announcement)

    # ------------------------------------------------------------------ originate (agent legs)

    def originate(
        self, params: dict[str, str], channel_id: str | None, variables: dict[str, str]
    ) -> tuple[Channel, int]:
        """POST /channels: ring an agent's phone, or a customer through the trunk, into the app
        (traces 03, 04, 11).

        ``timeout`` is the ringing limit in seconds (spec default 30; ``-1`` or
        ``0``: no limit); when it runs out the leg ends with ChannelDestroyed
        cause 19 only (trace 04 B).
        """
        endpoint = params.get("endpoint")
        app = params.get("app")
        if not endpoint:
            raise AriError(400, "Endpoint must be specified")
        if not app and not params.get("extension"):
            raise AriError(400, "Application or extension must be specified")
        if channel_id and channel_id in self.channels:
            raise AriError(409, "Channel with given unique ID already exists")
        tech, _, resource = endpoint.partition("/")
        number, _, trunk = resource.rpartition("@")
        customer = tech.upper() == "PJSIP" and bool(number) and trunk in self.trunks
        agent = self.agents.get(resource) if tech.upper() == "PJSIP" else None
        if not customer and (agent is None or not agent.registered):
            log.info("sim.originate_failed", endpoint=endpoint)
            raise AriError(500, "Allocation failed", key="error")
        if not app:
            raise AriError(500, "Allocation failed", key="error")  # the simulator has no agent dialplan
        try:
            timeout = int(params.get("timeout") or 30)
        except ValueError:
            raise AriError(400, "Invalid parameters for originating a channel.") from None
        now = time.time()
        generated, n = self._ids.next(now)
        cid_name, cid_number = _parse_caller_id(params.get("callerId") or "")
        device = f"PJSIP/{trunk}" if customer else f"PJSIP/{resource}"
        ch = Channel(
            id=channel_id or generated,
            name=f"{device}-{n:08x}",
            role="customer" if customer else "agent",
            created=now,
            state="Down",
            caller_name=cid_name,
            caller_number=cid_number,
            connected_name=cid_name,
            connected_number=cid_number,
            context="from-trunk" if customer else "agents",
            exten="s",
            priority=1,
            app_name="AppDial2",
            app_data="(Outgoing Line)",
            endpoint=device,
            dialstring=resource,
            app=app,
            subscribed=True,
            explicit_subscription=True,
            variables=dict(variables),
        )
        self.channels[ch.id] = ch
        app_args = params.get("appArgs") or ""
        self._leg_args[ch.id] = app_args.split(",") if app_args else []
        if customer:
            script = self.customers.get(number, _UNANSWERED_CUSTOMER)
            call = SimCall(
                channel_id=ch.id,
                caller_number=number,
                caller_name="",
                script=script.script,
                actions=self,
                loop=self.loop,
                kind="customer",
            )
            self.customer_calls.append(call)
            self._calls_by_channel[ch.id] = call
            self._customer_scripts[ch.id] = script
            call.started()
            log.info("sim.originate", call_id=ch.id, customer=number, timeout=timeout)
        else:
            assert agent is not None
            leg = AgentLeg(agent=agent.name, channel_id=ch.id, started_at=now)
            self.agent_legs.append(leg)
            self._legs_by_channel[ch.id] = leg
            log.info("sim.originate", call_id=ch.id, agent=agent.name, timeout=timeout)
        self._ami_channel_event("Newchannel", ch)
        return ch, timeout

    def start_dialing(self, ch: Channel, timeout: int) -> None:
        """After the 200: Dial, Ringing, Dial RINGING, then the phone's script (trace 11 order)."""
        if ch.gone:
            return
        if ch.role == "customer":
            self._dial_customer(ch, timeout)
            return
        agent = self.agents[ch.endpoint.split("/", 1)[1]]
        self._emit_dial(ch, "")
        ch.state = "Ringing"
        self._emit_channel("ChannelStateChange", ch)
        self._emit_dial(ch, "RINGING")
        self._refresh_device(agent.name)
        script: AgentScript = agent.script
        timers = self._leg_timers.setdefault(ch.id, [])
        if script.answer_after is not None:
            timers.append(self.loop.call_later(script.answer_after, self._agent_answers, ch))
        if script.decline_after is not None:
            timers.append(self.loop.call_later(script.decline_after, self._agent_declines, ch))
        if timeout > 0:
            timers.append(self.loop.call_later(timeout, self._leg_times_out, ch))

    # ------------------------------------------------------------------ customers (through the trunk)

    def customer(
        self,
        number: str,
        *,
        answer_after: float | None = 1.0,
        hang_up_after: float | None = None,
        busy: bool = False,
        script: CallerScript = _PLAIN_CALLER,
    ) -> CustomerScript:
        """Script the customer at ``number``: the next originates to ``PJSIP/<number>@trunk`` reach them.

        An unscripted number rings until the originate ``timeout`` (cause 19).
        """
        scripted = CustomerScript(answer_after=answer_after, hang_up_after=hang_up_after, busy=busy, script=script)
        self.customers[number] = scripted
        return scripted

    def calls_to(self, number: str) -> list[SimCall]:
        """Every customer leg placed to ``number``, oldest first."""
        return [c for c in self.customer_calls if c.caller_number == number]

    def _dial_customer(self, ch: Channel, timeout: int) -> None:
        """A busy line answers 486 before any ringing; otherwise the phone rings like an agent's (trace 04)."""
        script = self._customer_scripts[ch.id]
        timers = self._leg_timers.setdefault(ch.id, [])
        self._emit_dial(ch, "")
        if script.busy:
            timers.append(self.loop.call_later(_BUSY_AFTER, self._customer_busy, ch))
            return
        ch.state = "Ringing"
        self._emit_channel("ChannelStateChange", ch)
        self._emit_dial(ch, "RINGING")
        self._calls_by_channel[ch.id].note("ringing")
        if script.answer_after is not None:
            timers.append(self.loop.call_later(script.answer_after, self._customer_answers, ch))
        if timeout > 0:
            timers.append(self.loop.call_later(timeout, self._customer_times_out, ch))

    def _customer_answers(self, ch: Channel) -> None:
        if ch.gone or ch.state == "Up":
            return
        self._cancel_leg_timers(ch.id)
        ch.state = "Up"
        self._emit_channel("ChannelStateChange", ch)
        self._emit_dial(ch, "ANSWER")
        args = self._leg_args.get(ch.id, [])
        ch.in_stasis = True
        ch.app_name, ch.app_data = "Stasis", ",".join([ch.app, *args])
        call = self._calls_by_channel[ch.id]
        log.info("sim.customer_answered", call_id=ch.id, customer=call.caller_number)
        call.answered()
        self._emit_channel("StasisStart", ch, args=args)
        hang_up_after = self._customer_scripts[ch.id].hang_up_after
        if hang_up_after is not None:
            call.hang_up_in(hang_up_after)

    def _customer_busy(self, ch: Channel) -> None:
        """486 Busy Here from the carrier: like an agent's decline (trace 04 C), without ringing."""
        if ch.gone or ch.state == "Up":
            return
        call = self._calls_by_channel[ch.id]
        log.info("sim.customer_busy", call_id=ch.id, customer=call.caller_number)
        self._cancel_leg_timers(ch.id)
        call.finish("caller", "busy")
        self._emit_channel("ChannelHangupRequest", ch, cause=17, tech_cause=486)
        self._emit_dial(ch, "BUSY")
        self._destroy(ch, cause=17, tech_cause=486)

    def _customer_times_out(self, ch: Channel) -> None:
        """Originate timeout: only ChannelDestroyed cause 19 (trace 04 B)."""
        if ch.gone or ch.state == "Up":
            return
        call = self._calls_by_channel[ch.id]
        log.info("sim.customer_no_answer", call_id=ch.id, customer=call.caller_number)
        self._cancel_leg_timers(ch.id)
        call.finish("service", "no answer (originate timeout)")
        self._destroy(ch, cause=19, tech_cause=480)

    def _customer_hangs_up(self, ch: Channel, call: SimCall) -> None:
        """The customer hangs up: like an agent from the phone (trace 03); while ringing, a decline."""
        if ch.state != "Up":
            self._customer_busy(ch)
            return
        log.info("sim.customer_hangup", call_id=ch.id, customer=call.caller_number)
        call.finish("caller")
        self._emit_channel("ChannelHangupRequest", ch)
        if ch.in_stasis:
            self._leave_stasis(ch)
        self._destroy(ch, cause=16)

    def _agent_answers(self, ch: Channel) -> None:
        leg = self._legs_by_channel[ch.id]
        if ch.gone or leg.outcome != "ringing":
            return
        self._cancel_leg_timers(ch.id)
        ch.state = "Up"
        self._emit_channel("ChannelStateChange", ch)
        self._emit_dial(ch, "ANSWER")
        leg.answered_at, leg.outcome = time.time(), "answered"
        self._refresh_device(leg.agent)
        app = ch.app
        args = self._leg_args.get(ch.id, [])
        ch.in_stasis = True
        ch.app_name, ch.app_data = "Stasis", ",".join([app, *args])
        log.info("sim.agent_answered", call_id=ch.id, agent=leg.agent)
        self._emit_channel("StasisStart", ch, args=args)
        hang_up_after = self.agents[leg.agent].script.hang_up_after
        if hang_up_after is not None:
            self._leg_timers.setdefault(ch.id, []).append(
                self.loop.call_later(hang_up_after, self._agent_hangs_up, ch)
            )

    def _agent_declines(self, ch: Channel) -> None:
        leg = self._legs_by_channel[ch.id]
        if ch.gone or leg.outcome != "ringing":
            return
        log.info("sim.agent_declined", call_id=ch.id, agent=leg.agent)
        self._emit_channel("ChannelHangupRequest", ch, cause=17, tech_cause=486)
        self._emit_dial(ch, "BUSY")
        self._end_leg(leg, "declined")
        self._destroy(ch, cause=17, tech_cause=486)

    def _leg_times_out(self, ch: Channel) -> None:
        """Originate timeout: only ChannelDestroyed cause 19, no hangup request, no final Dial (trace 04 B)."""
        leg = self._legs_by_channel[ch.id]
        if ch.gone or leg.outcome != "ringing":
            return
        log.info("sim.agent_no_answer", call_id=ch.id, agent=leg.agent)
        self._end_leg(leg, "no-answer")
        self._destroy(ch, cause=19, tech_cause=480)

    def _agent_hangs_up(self, ch: Channel) -> None:
        """The agent hangs up from the phone; nothing at all happens to the caller (trace 03)."""
        leg = self._legs_by_channel[ch.id]
        if ch.gone or leg.outcome != "answered":
            return
        log.info("sim.agent_hangup", call_id=ch.id, agent=leg.agent)
        self._emit_channel("ChannelHangupRequest", ch)
        if ch.in_stasis:
            self._leave_stasis(ch)
        self._end_leg(leg, "agent-hung-up")
        self._destroy(ch, cause=16)

    def _end_leg(self, leg: AgentLeg, outcome: str) -> None:
        leg.outcome = outcome
        leg.ended_at = time.time()
        self._cancel_leg_timers(leg.channel_id)
        self._refresh_device(leg.agent)

    def _cancel_leg_timers(self, channel_id: str) -> None:
        for timer in self._leg_timers.pop(channel_id, []):
            timer.cancel()

    def _emit_dial(self, ch: Channel, status: str) -> None:
        self._publish(
            {
                "type": "Dial",
                "dialstatus": status,
                "forward": "",
                "dialstring": ch.dialstring or ch.endpoint.split("/", 1)[1],
                "peer": ch.to_json(),
            },
            self._channel_apps(ch),
        )

    # ------------------------------------------------------------------ applications

    def registered_apps(self) -> list[str]:
        """The apps Asterisk still knows, sorted (GET /applications)."""
        return sorted(name for name in self.known_apps if self._app_registered(name))

    def _app_registered(self, name: str) -> bool:
        """An app stays registered while its socket is closed as long as it is still
        subscribed to a channel or bridge (trace 12); once it has neither, Asterisk's
        cleanup forgets it (res_stasis ``app_is_finished``), so GET is 404 again."""
        if name not in self.known_apps:
            return False
        if self.server.hub.connected(name):
            return True
        return any(c.subscribed and self._app_of(c) == name for c in self.channels.values()) or any(
            name in b.apps for b in self.bridges.values()
        )

    def application_json(self, name: str) -> dict[str, Any]:
        if not self._app_registered(name):
            raise AriError(404, "Application not found")
        return {
            "name": name,
            "channel_ids": [c.id for c in self.channels.values() if c.subscribed and self._app_of(c) == name],
            "bridge_ids": [b.id for b in self.bridges.values() if name in b.apps],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }

    def subscribe(self, name: str, sources: str | None, on: bool) -> dict[str, Any]:
        if not sources:
            raise AriError(400, "Missing parameter eventSource")
        self.application_json(name)
        for source in sources.split(","):
            kind, _, ident = source.partition(":")
            if kind == "channel" and ident in self.channels:
                ch = self.channels[ident]
                ch.explicit_subscription = on
                ch.subscribed = on or ch.in_stasis
            elif kind == "bridge" and ident in self.bridges:
                apps = self.bridges[ident].apps
                if on:
                    apps.add(name)
                else:
                    apps.discard(name)
            else:
                raise AriError(422, "Event source does not exist")
        return self.application_json(name)

    def endpoint(self, tech: str, resource: str) -> dict[str, Any]:
        agent = self.agents.get(resource) if tech == "PJSIP" else None
        if agent is None:
            raise AriError(404, "Endpoint not found")
        return self._endpoint_json(agent)

    def endpoints(self) -> list[dict[str, Any]]:
        return [self._endpoint_json(a) for a in self.agents.values()]

    def _endpoint_json(self, agent: AgentPhone) -> dict[str, Any]:
        ids = [c.id for c in self.channels.values() if c.endpoint == agent.endpoint and not c.gone]
        return endpoint_json("PJSIP", agent.name, agent.registered, ids)

    def asterisk_info(self) -> dict[str, Any]:
        started = ari_time(self.started_at)
        return {
            "system": {"version": "22.10.1", "entity_id": ASTERISK_ID},
            "status": {"startup_time": started, "last_reload_time": started},
            "config": {
                "name": "liyi-sim",
                "default_language": "en",
                "setid": {"user": "asterisk", "group": "asterisk"},
            },
        }

    # ------------------------------------------------------------------ shared channel lifecycle

    def _leave_stasis(self, ch: Channel) -> None:
        """Bridge, playbacks, then StasisEnd; the app keeps the channel only if it subscribed explicitly."""
        if ch.bridge_id is not None:
            self._leave_bridge(ch)
        self._end_playbacks(ch, "failed")
        self._emit_channel("StasisEnd", ch)
        ch.in_stasis = False
        if not ch.explicit_subscription:
            ch.subscribed = False

    def _destroy(self, ch: Channel, *, cause: int, tech_cause: int | None = None) -> None:
        if ch.gone:
            return
        if ch.bridge_id is not None:
            self._leave_bridge(ch)
        self._end_playbacks(ch, "failed")
        if ch.subscribed:
            extra = {"tech_cause": tech_cause} if tech_cause is not None else {}
            self._emit_channel(
                "ChannelDestroyed", ch, cause=cause, cause_txt=CAUSE_TEXT.get(cause, "Unknown"), **extra
            )
        ch.gone = True
        ch.subscribed = False
        del self.channels[ch.id]
        self._ami_channel_event("Hangup", ch, Cause=str(cause), **{"Cause-txt": CAUSE_TEXT.get(cause, "Unknown")})

    def _refresh_device(self, agent_name: str) -> None:
        """The agent's device state as Asterisk aggregates it from its channels (trace 09)."""
        agent = self.agents.get(agent_name)
        if agent is None:
            return
        live = [
            leg
            for leg in self.agent_legs
            if leg.agent == agent_name and leg.outcome in ("ringing", "answered")
        ]
        if any(leg.outcome == "answered" for leg in live):
            state = "INUSE"
        elif live:
            state = "RINGING"
        else:
            state = "NOT_INUSE" if agent.registered else "UNAVAILABLE"
        if self._device_states.get(agent.endpoint) != state:
            self._device_states[agent.endpoint] = state
            self._ami("set_device_state", agent.endpoint, state)

    def device_state(self, agent_name: str) -> str:
        return self._device_states.get(f"PJSIP/{agent_name}", "UNKNOWN")

    # ------------------------------------------------------------------ event plumbing

    def _app_of(self, ch: Channel) -> str:
        return ch.app or self.app

    def _channel_apps(self, ch: Channel) -> set[str]:
        return {self._app_of(ch)} if ch.subscribed else set()

    def _emit_channel(self, kind: str, ch: Channel, **fields: Any) -> None:
        apps = self._channel_apps(ch)
        bridge = fields.get("bridge")
        if bridge is not None:
            b = self.bridges.get(bridge["id"])
            if b is not None:
                b.apps |= apps
                apps = apps | b.apps
        self._publish({"type": kind, **fields, "channel": ch.to_json()}, apps)

    def _emit_playback(self, kind: str, pb: Playback) -> None:
        if pb.target_kind == "channel":
            ch = self.channels.get(pb.target_id)
            apps = self._channel_apps(ch) if ch is not None else set()
        else:
            bridge = self.bridges.get(pb.target_id)
            apps = bridge.apps if bridge is not None else set()
        self._publish({"type": kind, "playback": pb.to_json()}, apps)

    def _publish(self, event: dict[str, Any], apps: set[str]) -> None:
        """Send an event to the subscribed apps; with none subscribed Asterisk sends nothing."""
        now = time.time()
        for app in sorted(apps):
            full = {"type": event["type"], "timestamp": ari_time(now)}
            full.update(event)
            full["asterisk_id"] = ASTERISK_ID
            full["application"] = app
            for hook in self._event_hooks:
                hook(full)
            self.server.hub.publish(app, full)

    def _ami(self, method: str, *args: Any) -> None:
        self.ami_log.append((method, args))
        if self.ami is not None:
            getattr(self.ami, method)(*args)

    def _ami_channel_event(self, name: str, ch: Channel, **extra: str) -> None:
        event = {
            "Event": name,
            "Privilege": "call,all",
            "Channel": ch.name,
            "ChannelState": AMI_STATE.get(ch.state, "0"),
            "ChannelStateDesc": ch.state,
            "CallerIDNum": ch.caller_number or "<unknown>",
            "CallerIDName": ch.caller_name or "<unknown>",
            "ConnectedLineNum": ch.connected_number or "<unknown>",
            "ConnectedLineName": ch.connected_name or "<unknown>",
            "Language": ch.language,
            "AccountCode": "",
            "Context": ch.context,
            "Exten": ch.exten,
            "Priority": str(ch.priority),
            "Uniqueid": ch.id,
            "Linkedid": ch.id,
            **extra,
        }
        self._ami("emit", event)


def _atoi(value: str | None) -> int:
    """ARI parses int query parameters with ``atoi``: junk is 0, a leading number counts."""
    text = (value or "").strip()
    sign = -1 if text.startswith("-") else 1
    digits = ""
    for ch in text.lstrip("+-"):
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _parse_caller_id(value: str) -> tuple[str, str]:
    """``liyi <4000>`` → ("liyi", "4000"); a bare number is both name-less and the number."""
    value = value.strip()
    if "<" in value and value.endswith(">"):
        name, _, number = value[:-1].partition("<")
        return name.strip().strip('"'), number.strip()
    return "", value
