"""What every part of a call's engine shares: its state, its timers, how it speaks.

``CallEngine`` (``engine.py``) is built from three layers so that no file
holds everything: this core (state, timers, prompts, bridge bookkeeping, the
moves several flows end in — queueing, closing, ending), ``hold.py`` (R4, R7)
and ``transfer.py`` (R6). The one transition table that decides which handler
runs for which (state, event) stays in ``engine.py``.

The core also keeps, from the commands it issues, what the caller is hearing
(a prompt, music, an agent, or nothing) so that a hold's silent time is
measured from what the engine did, not assumed.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score
from callflow.config import MEDIA_PREFIX, CallFlowConfig
from callflow.facts import AgentOffer, CallFacts, HoldRecord, Joining, TransferRecord
from callflow.flow import Step
from callflow.keycodes import KeyCodeParser


class CallState(StrEnum):
    NEW = "new"
    RINGING = "ringing"
    GREETING = "greeting"
    WAIT_NOTICE = "wait-notice"
    OFFERING = "offering"
    CONNECTING = "connecting"  # the agent answered; caller and agent not both in the bridge yet
    CONNECTED = "connected"
    HOLD = "hold"  # caller out of the bridge: announcement, music, reassurance (R4)
    HOLD_ASK = "hold-ask"  # at the limit: "还需要一分钟，您愿意继续等吗？" 1 wait, 2 back
    CONSENT = "transfer-consent"  # R6.1: the caller is asked; key 1 or the agent confirms
    HANDOFF = "transfer-handoff"  # R6.4: caller (music on) and target going into the bridge
    REQUEUE = "requeue"  # the agent left mid-call: apology, then queued again
    STEP = "step"  # a flow's play step (or a second greeting)
    MENU = "menu"  # "咨询请按1…": waiting for the caller's choice
    NAME = "name"  # "请在提示音后说出您的姓名" (R3)
    NAME_RECORDING = "name-recording"
    CALLBACK_OFFER = "callback-offer"  # R5: 1 leave a number, 2 keep waiting
    CALLBACK_CONFIRM = "callback-confirm"  # the number read back: 1 yes, 2 another number
    CALLBACK_ENTER = "callback-enter"  # the caller types a number, # ends it
    CLOSE_ASK = "closing-question"  # R8: "请问您还有其他问题吗？", the agent still on the line
    CLOSING = "closing"
    RELEASING = "releasing"
    ENDED = "ended"


# timer names
ANSWER = "answer"
PROMPT = "prompt"
AGENT_RING = "agent-ring"
AGENT_RETRY = "agent-retry"
IDLE = "idle"
RELEASE_CONFIRM = "release-confirm"
HOLD_LIMIT = "hold-limit"
HOLD_ALERT = "hold-alert"
HOLD_REASSURE = "hold-reassure"
HOLD_GRACE = "hold-grace"
CONSENT_WAIT = "consent-wait"
TARGET_RING = "target-ring"
TARGET_ACCEPT = "target-accept"
KEYS = "keys"
MENU_WAIT = "menu-wait"
RECORD = "record"
QUEUE_ANNOUNCE = "queue-announce"
QUEUE_MAX = "queue-max-wait"
CALLBACK_KEY = "callback-key"
AGENT_RELEASE = "agent-release"
JOIN = "bridge-join"

RELEASE_CONFIRM_SECONDS = 5.0
# How long both parties may take to be really in the bridge (ChannelEnteredBridge) after we
# asked: a stopped prompt ends at once, so this is only reached when something went wrong
# (ARI's request timeout is 5 s; the caller keeps hearing music meanwhile).
JOIN_SECONDS = 6.0
AGENT_TONE = "sound:beep"

# States written to ``LIYI_CALL`` on entry (``_goto``); the others resume from the last one written.
_PERSISTED = frozenset({
    CallState.RINGING, CallState.STEP, CallState.MENU, CallState.NAME, CallState.WAIT_NOTICE,
    CallState.OFFERING, CallState.CONNECTED, CallState.HOLD, CallState.CONSENT,
    CallState.HANDOFF, CallState.REQUEUE, CallState.CLOSE_ASK, CallState.CLOSING})
_STEP_STATES = frozenset({CallState.STEP, CallState.MENU, CallState.NAME, CallState.WAIT_NOTICE})

Commands = list[c.Command]


class EngineCore:
    """One caller's call: its state and the helpers every flow uses."""

    def __init__(self, config: CallFlowConfig, call_id: str) -> None:
        self.config = config
        self.call_id = call_id
        self.state = CallState.NEW
        self.facts = CallFacts(call_id=call_id)
        self._tokens: dict[str, int] = {}
        self._next_token = 0
        self._playback: str | None = None  # the caller's tracked prompt
        self._playback_purpose = ""
        self._playbacks = 0
        self._legs = 0
        self._offer: AgentOffer | None = None  # the agent being rung, or talking with the caller
        self._tried: list[str] = []
        self._old_legs: set[str] = set()
        self._waiting_logged = False
        self._bridge: str | None = None
        self._bridges = 0
        self._in_bridge: set[str] = set()  # channels we asked to be in the call's bridge
        self._present: set[str] = set()  # channels Asterisk says are in it (ChannelEnteredBridge)
        self._joining: Joining | None = None  # who must be in the bridge before it counts
        self._side_playbacks: dict[str, str] = {}  # channel -> a prompt nobody waits for, playing
        self._closed_flow = False
        self._music = False
        self._hearing = "nothing"  # what the caller hears, from our own commands
        self._hearing_since = 0.0
        self._hold: HoldRecord | None = None
        self._ask_started_at: float | None = None
        self._ask_allowance: float | None = None
        self._transfer: TransferRecord | None = None
        self._transfer_phase = ""
        self._target_legs = 0
        self._keys = KeyCodeParser(config.keycodes)
        # the call's flow (open or closed, chosen when answered) and where it stands
        self._flow = config.open_flow
        self._step: Step | None = None
        self._menu_tries = 0
        self._queue_name = ""  # the department queue the caller waits in ("" = any agent)
        self._ahead = -1  # callers ahead, as the controller last said (R5)
        self._expected_wait = -1.0
        self._callback_from = ""  # "queue" or "flow": where a declined callback offer returns
        self._callback_digits = ""
        self._callback_number = ""
        self._callback_source = ""  # caller-id | keyed
        self._callback_due = False  # the maximum wait passed while an agent's phone rang
        self._told_in_line = False
        self._followups = 0
        self._gone: set[str] = set()  # channels whose first sign of going was handled
        self._failed_prompt: e.PlaybackFinished | None = None  # waiting for ChannelChecked

    # -- public -----------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def speaking(self) -> bool:
        """A prompt the flow waits for is playing to the caller now."""
        return self._playback is not None

    @property
    def caller_channel(self) -> str:
        return self.facts.caller_channel

    @property
    def agent(self) -> str | None:
        """The agent talking with (or holding) the caller now, if any."""
        offer = self._offer
        return offer.agent if offer is not None and offer.outcome == "answered" else None

    def owns_channel(self, channel_id: str) -> bool:
        return channel_id == self.facts.caller_channel or (
            self._offer is not None and self._offer.leg == channel_id
        ) or channel_id in self._old_legs or (
            self._transfer is not None and self._transfer.leg == channel_id)

    # -- taken back after a controller restart (``recovery.py``) -----------------

    def _restore_caller(self, at: float, *, channel: str, number: str, name: str,
                        created_at: float | None, answered_at: float | None,
                        id_offset: int) -> None:
        """The caller as a restarted controller finds them; ids made from here on start at
        ``id_offset``, clear of the legs and prompts the lost controller made."""
        f = self.facts
        f.caller_channel = channel
        f.caller_number = number
        f.caller_name = name
        f.created_at = created_at if created_at is not None and created_at <= at else at
        f.seen_at = at
        f.recovered_at = at
        f.answered_at = answered_at
        self._legs = self._target_legs = self._playbacks = self._bridges = id_offset
        self._choose_flow(at)

    def _choose_flow(self, at: float) -> None:
        """Overridden by the flows (``steps.py``): the open or closed flow for this moment."""

    def _restore_agent(self, at: float, *, agent: str, leg: str, bridge: str,
                       caller_in_bridge: bool, id_offset: int) -> None:
        """The agent a lost controller had connected (their leg waiting in ``bridge``, with the
        caller or without), so hang-ups and requests act on them as on any connected call."""
        offer = AgentOffer(agent=agent, leg=leg, rung_at=at, ended_at=at, outcome="answered")
        self._offer = offer
        f = self.facts
        f.offers.append(offer)
        f.agent = agent
        f.agents_talked.append(agent)
        f.connected_at = at
        self._bridge = bridge
        self._bridges = max(self._bridges, id_offset)  # a new bridge never takes a lost one's id
        there = {leg, self.facts.caller_channel} if caller_in_bridge else {leg}
        self._in_bridge = set(there)
        self._present = set(there)
        if caller_in_bridge:
            self._heard(at, "agent")

    # -- channels going: the first sign counts, once ---------------------------

    def _repeat_of_gone(self, event: e.Event) -> bool:
        """Is this a later sign of a channel already known to be going?

        Asterisk tells of one hang-up up to three times — ChannelHangupRequest,
        StasisEnd, ChannelDestroyed (traces 01, 13, 15) — and the first is the
        one that counts: acting on it at once stops agents being rung for a
        caller who left, and acting only once keeps "who hung up first" true.
        """
        if not isinstance(event, e.GONE_EVENTS):
            return False
        channel = channel_of(event)
        if channel in self._gone:
            return True
        self._gone.add(channel)
        return False

    # -- timers, prompts, logs ----------------------------------------------

    def _timer(self, name: str, at: float) -> c.StartTimer:
        self._next_token += 1
        self._tokens[name] = self._next_token
        return c.StartTimer(name=name, token=self._next_token, at=at)

    def _cancel(self, *names: str) -> Commands:
        return [c.CancelTimer(name=name) for name in names if self._tokens.pop(name, None) is not None]

    def _play(self, at: float, prompts: tuple[str, ...], purpose: str) -> Commands:
        """A prompt to the caller that the flow waits for (its end, or the prompt timer)."""
        self._playbacks += 1
        self._playback = f"{self.call_id}-p{self._playbacks}"
        self._playback_purpose = purpose
        media = tuple(f"{MEDIA_PREFIX}{p}" for p in prompts)
        self._heard(at, "prompt")
        return [
            c.Play(channel_id=self.facts.caller_channel, playback_id=self._playback, media=media),
            self._timer(PROMPT, at + self.config.prompt_timeout_seconds * len(prompts)),
        ]

    def _play_to(self, channel: str, media: tuple[str, ...]) -> c.Play:
        """A prompt or tone nobody waits for: an apology over the bridge, a beep to an agent."""
        self._playbacks += 1
        playback = f"{self.call_id}-p{self._playbacks}"
        self._side_playbacks[channel] = playback
        return c.Play(channel_id=channel, playback_id=playback, media=media)

    def _side_played(self, ev: e.Event) -> None:
        """A prompt nobody waited for ended: nothing left to stop before bridging its channel."""
        if isinstance(ev, e.PlaybackFinished):
            for channel, playback in list(self._side_playbacks.items()):
                if playback == ev.playback_id:
                    del self._side_playbacks[channel]

    def _prompt_done(self, ev: e.Event) -> tuple[bool, str]:
        """Is this the end of the prompt we are waiting for, and how did it end?"""
        if isinstance(ev, e.PlaybackFinished):
            if ev.playback_id != self._playback:
                return False, ""
            return True, "done" if ev.state == "done" else "failed"
        return True, "timeout"  # the prompt timer

    def _check_failed_prompt(self, ev: e.PlaybackFinished) -> Commands | None:
        """A prompt the flow waits for failed: ask whether the caller is still there first.

        A failed playback is not a finished one. It is what a caller who hung
        up leaves behind (trace 13: ChannelHangupRequest, PlaybackFinished
        ``failed``, StasisEnd), and also what a missing sound file gives while
        the caller listens (trace 08). Moving on at once would start music and
        ring agents for nobody; so the flow waits for ``ChannelChecked``:
        gone ends the call as the caller's hang-up, there goes on with the
        prompt logged (and scored) as failed, so the caller is never left in
        silence. ``None``: not a failed prompt the flow waits for.
        """
        if ev.state == "done" or ev.playback_id != self._playback:
            return None
        if self._failed_prompt is not None and self._failed_prompt.playback_id == ev.playback_id:
            return []  # already asking
        self._failed_prompt = ev
        return [self._log(ev.at, "prompt-failed", purpose=self._playback_purpose,
                          playback_id=ev.playback_id, playback_state=ev.state),
                c.GetChannel(channel_id=self.facts.caller_channel)]

    def _take_checked_prompt(self, ev: e.ChannelChecked) -> e.PlaybackFinished | None:
        """The failed prompt a ``ChannelChecked`` answers, if the flow still waits for it."""
        pending, self._failed_prompt = self._failed_prompt, None
        if pending is None or not self._is_caller(ev.channel_id):
            return None
        if pending.playback_id != self._playback:
            return None
        return pending

    def _prompt_finished(self, at: float) -> Commands:
        self._playback = None
        self._heard(at, "music" if self._music else "nothing")
        return self._cancel(PROMPT)

    def _start_music(self, at: float) -> Commands:
        self._music = True
        if self._playback is None:
            self._heard(at, "music")
        return [c.StartMusic(channel_id=self.facts.caller_channel, moh_class=self.config.moh_class)]

    def _stop_caller_audio(self, at: float, *, keep_music: bool = False) -> Commands:
        """Stop whatever the caller hears from us (prompt or music), e.g. before the next prompt.

        ``keep_music``: stop only a prompt; the music goes on (a caller going
        into a bridge hears it until the other party is really there).
        """
        out: Commands = []
        if self._playback is not None:
            out.append(c.StopPlayback(playback_id=self._playback))
            self._playback = None
            out += self._cancel(PROMPT)
        if self._music and not keep_music:
            self._music = False
            out.append(c.StopMusic(channel_id=self.facts.caller_channel))
        self._heard(at, "music" if self._music else "nothing")
        return out

    def _stop_music(self, at: float) -> Commands:
        """Stop the caller's music only (a prompt they hear goes on)."""
        if not self._music:
            return []
        self._music = False
        self._heard(at, "prompt" if self._playback is not None else "nothing")
        return [c.StopMusic(channel_id=self.facts.caller_channel)]

    def _music_until_joined(self, at: float) -> Commands:
        """The caller hears music (no prompt) while going into a bridge, until ``_joined``."""
        out = self._stop_caller_audio(at, keep_music=True)
        if not self._music:
            out += self._start_music(at)
        return out

    def _heard(self, at: float, what: str) -> None:
        """Note what the caller hears from now; silence during a hold is counted as evidence."""
        if self._hearing == "nothing" and self._hold is not None and at > self._hearing_since:
            self._hold.silent_seconds = round(self._hold.silent_seconds + at - self._hearing_since, 3)
        self._hearing = what
        self._hearing_since = at

    def _log(self, at: float, kind: str, **detail: object) -> c.Log:
        return c.Log(at=at, kind=kind, detail=dict(detail))

    def _notify(self, agent: str | None, kind: str, **data: Any) -> Commands:
        return [] if agent is None else [c.NotifyAgent(agent=agent, kind=kind, data=data)]

    def _refuse(self, ev: e.AgentEvent, why: str, log_kind: str = "agent-request-refused",
                **data: Any) -> Commands:
        """An agent's request that would break a rule, or makes no sense now: logged, told, not done."""
        request = type(ev).__name__
        return [self._log(ev.at, log_kind, agent=ev.agent, request=request, why=why, **data),
                *self._notify(ev.agent, "error", request=request, message=why, **data)]

    def _goto(self, state: CallState) -> Commands:
        """Change state; keep on the caller's channel what a restarted controller needs to resume it.

        Only the states that change what a resume does are written (each is
        one ARI request, ``recovery.py`` says what each becomes): the first
        ring, each flow step, joining the queue (with when: the caller keeps
        their place), an agent's phone ringing (``_persist``), connected, each
        hold period (reason, announced limit, deadline), a transfer's consent
        and handoff, and closing. An ordinary call (ring, wait notice, queue,
        agent rung, connected, closing) makes six writes (bench/restart_adoption.py).
        """
        self.state = state
        if state not in _PERSISTED:
            return []
        return self._persist()

    def _persist(self) -> Commands:
        """The snapshot of where the call stands now, as one ``SetVar`` of ``LIYI_CALL``."""
        f = self.facts
        offer = self._offer
        snapshot: dict[str, object] = {
            "call_id": self.call_id, "state": self.state.value,
            "agent": offer.agent if offer is not None else f.agent,
            "leg": offer.leg if offer else None, "bridge": self._bridge}
        if self._queue_name:
            snapshot["queue"] = self._queue_name
        if self._step is not None and self.state in _STEP_STATES:
            snapshot["step"] = self._step.name
        if f.queued_at is not None:
            snapshot["queued_at"] = round(f.queued_at, 3)
            if f.requeued:
                snapshot["first"] = True
        if offer is not None and offer.outcome == "ringing":
            snapshot["rung_at"] = round(offer.rung_at, 3)
        hold = self._hold
        if hold is not None and hold.ended_at is None and hold.periods:
            snapshot["hold"] = {"reason": hold.reason, "limit": hold.limit_seconds,
                                "started_at": round(hold.started_at, 3),
                                "period_at": round(hold.periods[-1], 3),
                                "transfer": hold.for_transfer}
        transfer = self._transfer
        if transfer is not None and transfer.ended_at is None:
            snapshot["transfer"] = {"target": transfer.target, "target_agent": transfer.target_agent,
                                    "target_leg": transfer.leg, "accepted": bool(transfer.accepted)}
        if f.closing_started_at is not None and self.state is CallState.CLOSING:
            snapshot["closing_at"] = round(f.closing_started_at, 3)
        return [c.SetVar(channel_id=f.caller_channel, name="LIYI_CALL",
                         value=json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False))]

    # -- bridges ----------------------------------------------------------

    def _new_bridge(self) -> str:
        self._bridges += 1
        self._bridge = f"{self.call_id}-b" if self._bridges == 1 else f"{self.call_id}-b{self._bridges}"
        self._in_bridge = set()
        self._present = set()
        return self._bridge

    def _bridge_in(self, at: float, *channels: str, agents: tuple[str, ...] = ()) -> Commands:
        """Put channels not yet in the call's bridge into it; agents' keys are absorbed.

        A prompt still playing to a channel is stopped first: Asterisk adds a
        channel to a bridge only once its playback ends, so a 10 s
        announcement to a transfer target would keep the caller waiting in
        the bridge alone (the incident of issue 8). What the caller hears
        meanwhile is the caller's own flow's business: music stays on until
        the parties are really in (``_join``).
        """
        bridge = self._bridge or self._new_bridge()
        new = tuple(ch for ch in channels if ch not in self._in_bridge)
        if not new:
            return []
        out: Commands = []
        for ch in new:
            playback = self._side_playbacks.pop(ch, None)
            if playback is not None:
                out.append(c.StopPlayback(playback_id=playback))
        if self.facts.caller_channel in new and self._playback is not None:
            out.append(c.StopPlayback(playback_id=self._playback))
            self._playback = None
            out += self._cancel(PROMPT)
            self._heard(at, "music" if self._music else "nothing")
        self._in_bridge.update(new)
        absorb = tuple(ch for ch in new if ch in agents)
        return [*out, c.Bridge(bridge_id=bridge, channel_ids=new, absorb_dtmf=absorb)]

    def _unbridge(self, channel: str) -> Commands:
        if self._bridge is None or channel not in self._in_bridge:
            return []
        self._in_bridge.discard(channel)
        self._present.discard(channel)
        if self._joining is not None and channel in self._joining.channels:
            self._joining = None
            return [*self._cancel(JOIN), c.Unbridge(bridge_id=self._bridge, channel_id=channel)]
        return [c.Unbridge(bridge_id=self._bridge, channel_id=channel)]

    def _drop_bridge(self) -> Commands:
        if self._bridge is None:
            return []
        bridge, self._bridge = self._bridge, None
        self._in_bridge = set()
        self._present = set()
        self._joining = None
        return [*self._cancel(JOIN), c.DestroyBridge(bridge_id=bridge)]

    # -- really in the bridge (ChannelEnteredBridge), not just asked ------------

    def _join(self, at: float, purpose: str, *channels: str) -> Commands:
        """Wait until ``channels`` are all really in the bridge, then ``_joined(purpose)``.

        Until then the caller keeps the music they hear (R4: never silence)
        and nothing counts as connected; a refusal (``BridgeFailed``), a party
        leaving or ``JOIN_SECONDS`` without it ends in ``_join_failed``.
        """
        self._joining = Joining(purpose=purpose, channels=tuple(channels), since=at)
        if all(ch in self._present for ch in channels):
            return self._joined_now(at)
        return [self._timer(JOIN, at + JOIN_SECONDS)]

    def _joined_now(self, at: float) -> Commands:
        joining = self._joining
        assert joining is not None
        self._joining = None
        return [*self._cancel(JOIN), *self._joined(at, joining)]

    def _joined(self, at: float, joining: Joining) -> Commands:
        """Overridden by the flows: what happens once everyone is in."""
        return []

    def _join_failed(self, at: float, joining: Joining, channel: str, why: str) -> Commands:
        """Overridden by the flows: ``channel`` could not be put in the bridge."""
        return []

    def _on_bridge_event(self, ev: e.Event) -> Commands:
        """ChannelEnteredBridge, ChannelLeftBridge and BridgeFailed: the truth about the bridge."""
        if self.ended or self._bridge is None or getattr(ev, "bridge_id", None) != self._bridge:
            return []
        joining = self._joining
        if isinstance(ev, e.ChannelEnteredBridge):
            if ev.channel_id not in self._in_bridge:
                return []  # it left again before this was read; its ChannelLeftBridge follows
            self._present.add(ev.channel_id)
            out = self._entered(ev.at, ev.channel_id)
            if joining is not None and all(ch in self._present for ch in joining.channels):
                out += self._joined_now(ev.at)
            return out
        if isinstance(ev, e.ChannelLeftBridge):
            self._present.discard(ev.channel_id)
            if ev.channel_id not in self._in_bridge:
                return []  # we took it out
            # Nobody else moves our channels: one leaving on its own is hanging up (trace 14).
            self._in_bridge.discard(ev.channel_id)
            if joining is not None and ev.channel_id in joining.channels:
                self._joining = None
                return [*self._cancel(JOIN), self._log(ev.at, "bridge-left", channel=ev.channel_id,
                                                       purpose=joining.purpose),
                        *self._join_failed(ev.at, joining, ev.channel_id, "left")]
            return []
        assert isinstance(ev, e.BridgeFailed)
        failed = [ch for ch in ev.channel_ids if ch in self._in_bridge]
        for ch in failed:
            self._in_bridge.discard(ch)
        out = [self._log(ev.at, "bridge-failed", channels=list(ev.channel_ids), status=ev.status,
                         reason=ev.reason)]
        hit = [ch for ch in failed if joining is not None and ch in joining.channels]
        if joining is None or not hit:
            return out
        self._joining = None
        return [*out, *self._cancel(JOIN), *self._join_failed(ev.at, joining, hit[0], f"refused-{ev.status}")]

    def _on_join_timeout(self, ev: e.TimerFired) -> Commands:
        joining = self._joining
        if joining is None:
            return []
        self._joining = None
        missing = [ch for ch in joining.channels if ch not in self._present]
        channel = missing[0] if missing else ""
        return [self._log(ev.at, "bridge-join-timeout", purpose=joining.purpose, missing=missing),
                *self._join_failed(ev.at, joining, channel, "timeout")]

    def _entered(self, at: float, channel: str) -> Commands:
        """Overridden by the transfer flow: when the caller and the target each came in."""
        return []

    # -- agents -----------------------------------------------------------

    def _is_caller(self, channel_id: str) -> bool:
        return channel_id == self.facts.caller_channel

    def _is_leg(self, channel_id: str) -> bool:
        return self._offer is not None and self._offer.leg == channel_id

    def _is_current_agent(self, agent: str) -> bool:
        return self.agent is not None and agent == self.agent

    def _end_offer(self, at: float, outcome: str, *, served: bool = True) -> Commands:
        """Stop ringing the current agent (if any) and give them back to the roster.

        ``served=False``: the agent answered but was never with the caller in
        the bridge; the roster keeps their place in line.
        """
        offer = self._offer
        if offer is None:
            return []
        self._offer = None
        offer.ended_at = at
        offer.outcome = outcome
        self._old_legs.add(offer.leg)
        self._in_bridge.discard(offer.leg)
        self._present.discard(offer.leg)
        out: Commands = [*self._cancel(AGENT_RING)]
        if outcome in ("no-answer", "caller-hung-up", "not-connected"):
            out.append(c.Hangup(channel_id=offer.leg))
        out.append(c.ReleaseAgent(agent=offer.agent, outcome=outcome, served=served))
        return out

    def _let_agent_go(self, *, hang_up: bool, outcome: str) -> Commands:
        """The connected agent leaves the call (their leg hung up if still there) and is free again."""
        offer = self._offer
        if offer is None:
            return []
        self._offer = None
        self._old_legs.add(offer.leg)
        self._in_bridge.discard(offer.leg)
        self._present.discard(offer.leg)
        out: Commands = [c.Hangup(channel_id=offer.leg)] if hang_up else []
        return out + [c.ReleaseAgent(agent=offer.agent, outcome=outcome,
                                     wrap_up_seconds=self.config.wrap_up_for(offer.agent))]

    def _stray(self, event: e.Event) -> Commands:
        # An agent leg answering after we gave up on it: release it, never bridge it.
        if isinstance(event, e.StasisStart) and event.channel_id in self._old_legs:
            return [c.Hangup(channel_id=event.channel_id),
                    self._log(event.at, "late-agent-answer-released", leg=event.channel_id)]
        if isinstance(event, e.AgentEvent):
            return self._refuse(event, f"not possible now (call is {self.state.value})",
                                log_kind="agent-request-ignored", state=self.state.value)
        if isinstance(event, e.AgentPicked):  # the roster engaged someone we no longer need
            return [c.ReleaseAgent(agent=event.agent, outcome="not-needed")]
        return []

    # -- what agents write down (R3, R10), on any call they are part of --------

    def _on_note(self, ev: e.NoteAdded) -> Commands:
        self.facts.notes.append((ev.at, ev.agent, ev.text))
        return [self._log(ev.at, "note", agent=ev.agent, text=ev.text)]

    def _on_caller_info(self, ev: e.CallerInfoUpdated) -> Commands:
        f = self.facts
        f.stated_name = ev.caller_name.strip() or f.stated_name
        f.purpose = ev.purpose.strip() or f.purpose
        f.wanted = ev.wanted.strip() or f.wanted
        f.info_updated_at = ev.at
        return [self._log(ev.at, "caller-info", agent=ev.agent, caller_name=f.stated_name,
                          purpose=f.purpose, wanted=f.wanted)]

    # -- moves several flows end in ------------------------------------------

    def _queue(self, at: float) -> Commands:
        """Wait for an agent of the call's queue with music (R5); offers and announcements follow."""
        f = self.facts
        first = f.queued_at is None
        if first:
            f.queued_at = at
            f.queue = self._queue_name
        self._tried.clear()
        self._waiting_logged = False
        self._told_in_line = False  # the first "no agent free" is announced at once
        q = self.config.queue_for(self._queue_name)
        out = [
            *self._start_music(at),
            *self._goto(CallState.OFFERING),
            self._log(at, "queued", music=self.config.moh_class, queue=self._queue_name or "all",
                      max_wait_seconds=q.max_wait_seconds),
            self._request_agent(),
        ]
        if QUEUE_ANNOUNCE not in self._tokens and q.announce != "none":
            # told at the interval even while agents ring out one after another (R5)
            out.append(self._timer(QUEUE_ANNOUNCE, at + q.announce_every_seconds))
        if QUEUE_MAX not in self._tokens and q.callback_offer and f.callback is None:
            # the first wait counts from joining the queue; a new wait (requeued, or the
            # caller chose to keep waiting) gets a whole max wait before the next offer
            since = f.queued_at if first and f.queued_at is not None else at
            out.append(self._timer(QUEUE_MAX, since + q.max_wait_seconds))
        return out

    def _resume_queue(self, at: float) -> Commands:
        """Back in the line where the caller stood before a restart (``facts.queued_at`` kept).

        Music again (an announcement may have been cut), the next agent asked
        for unless one is ringing already, the caller told where they stand
        at once, and the maximum wait still counted from joining the queue (R5).
        """
        f = self.facts
        assert f.queued_at is not None
        f.queue = self._queue_name
        self.state = CallState.OFFERING
        self._waiting_logged = False
        self._told_in_line = False
        q = self.config.queue_for(self._queue_name)
        out: Commands = [
            *self._start_music(at),
            self._log(at, "queue-resumed", queue=self._queue_name or "all", queued_at=f.queued_at,
                      waited_seconds=round(at - f.queued_at, 3), first_in_line=f.requeued),
        ]
        if self._offer is None:
            out.append(self._request_agent())
        if q.announce != "none":
            out.append(self._timer(QUEUE_ANNOUNCE, at + q.announce_every_seconds))
        if q.callback_offer and f.callback is None:
            out.append(self._timer(QUEUE_MAX, max(at, f.queued_at + q.max_wait_seconds)))
        return out

    def _request_agent(self) -> c.RequestAgent:
        return c.RequestAgent(skip=tuple(self._tried), first_in_line=self.facts.requeued,
                              only=self.config.queue_agents(self._queue_name),
                              queue=self._queue_name)

    @property
    def waiting_queue(self) -> str | None:
        """The queue this caller waits in for an agent now, or None (R5 order and positions)."""
        if self.state in (CallState.OFFERING, CallState.REQUEUE, CallState.CALLBACK_OFFER,
                          CallState.CALLBACK_CONFIRM, CallState.CALLBACK_ENTER) \
                and self._callback_from != "flow" and self.facts.queued_at is not None:
            return self._queue_name
        return None

    @property
    def being_offered(self) -> bool:
        """An agent's phone is ringing for this caller now."""
        return self._offer is not None and self._offer.outcome == "ringing"

    def _requeue(self, at: float, *, why: str) -> Commands:
        self.facts.requeued = True
        """The agent is gone mid-call: apologise, then offer the caller to agents again (never silence)."""
        out = [*self._stop_caller_audio(at), *self._drop_bridge(), *self._goto(CallState.REQUEUE),
               self._log(at, "requeued", why=why)]
        return out + self._play(at, ("requeue-apology",), "requeue")

    def _start_closing(self, at: float, *, reason: str,
                       prompts: tuple[str, ...] | None = None) -> Commands:
        """The closing words (R8), then the line stays open until the caller hangs up (R9)."""
        said = prompts if prompts is not None else self.config.closing_prompts
        f = self.facts
        f.closing_started_at = at
        f.closing_reason = reason
        f.closing_prompts_played.extend(said)
        return [
            *self._stop_caller_audio(at),
            *self._goto(CallState.CLOSING),
            *self._play(at, said, "closing"),
            self._log(at, "closing", reason=reason, prompts=list(said)),
            self._timer(IDLE, at + self.config.idle_release_seconds),
        ]

    def _end(self, at: float, outcome: str) -> Commands:
        self.state = CallState.ENDED
        self.facts.ended_at = at
        out: Commands = [c.CancelTimer(name=name) for name in self._tokens]
        self._tokens.clear()
        out += self._drop_bridge()
        out.append(self._log(at, "ended", outcome=outcome, first_hangup=self.facts.first_hangup))
        out.append(c.CallEnded(at=at, first_hangup=self.facts.first_hangup or "caller",
                               compliance=score(self.facts, self.config)))
        return out


def channel_of(ev: e.Event) -> str:
    return getattr(ev, "channel_id", "")
