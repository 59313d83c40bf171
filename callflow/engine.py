"""The per-call etiquette engine: events in, commands out.

Everything that decides what a caller experiences is chosen by this file's
transition table (one row per state and event); the handlers live here for
the first ring to the agent and closing, in ``hold.py`` for holds (R4, R7)
and in ``transfer.py`` for warm transfers (R6), on the shared core of
``core.py``. ``handle`` never performs I/O, never sleeps and never reads a
clock: the time is each event's ``at``. Timers are commands (``StartTimer``)
answered later by ``TimerFired``; a timer whose token is no longer current
is ignored, so a late timer can never act on a call that has moved on.

The rules it makes true:
- R1: ring indication at once, answer ``answer_delay_seconds`` after ring
  ``answer_after_rings``' tone has ended, counted from the channel's creation
  (1.5 s by default; at once if that moment has passed) — never inside a
  ring's tone, never after ring 3's; agents rung at most ``agent_rings``
  rings each, then the next agent.
- R2: the greeting for the local time band (or the closed greeting) is played
  in full before music and agents.
- R4, R7: holds have a reason and an announced limit, never silence, never
  beyond limit + grace without the caller's consent (``hold.py``).
- R6: transfers only with consent, to a target who answered and accepted;
  otherwise back to the first agent with an apology (``transfer.py``).
- Connected means in the bridge: caller and agent (or target) count as
  talking only once Asterisk reports both there (``ChannelEnteredBridge``),
  never on the strength of an addChannel request (trace 14); until then the
  caller hears music, and a caller who left meanwhile is not "connected" and
  the agent is released.
- R9: there is no command that hangs up a caller; when the agent leaves first
  the caller hears the closing prompt and the line stays open until they hang
  up, or until the long idle release (``ReleaseIdleLine``, logged).
- R9, R10: a hang-up counts on its first sign — Asterisk's ChannelHangupRequest,
  before the failed prompt and StasisEnd (trace 13) — and once; a prompt that
  ends ``failed`` is not taken as heard: ``GetChannel`` first, so no music
  starts and no agent rings for a caller who has left.

Agents act through ``AgentEvent``s from the panel, or key codes typed on
their phone (``keycodes.py``), which become the same events.
"""

from __future__ import annotations

from collections.abc import Callable

from callflow import commands as c
from callflow import events as e
from callflow import keycodes as k
from callflow.closing import ClosingFlow
from callflow.core import (
    AGENT_RELEASE,
    AGENT_RETRY,
    AGENT_RING,
    ANSWER,
    CALLBACK_KEY,
    CONSENT_WAIT,
    HOLD_ALERT,
    HOLD_GRACE,
    HOLD_LIMIT,
    HOLD_REASSURE,
    IDLE,
    JOIN,
    KEYS,
    MENU_WAIT,
    PROMPT,
    QUEUE_ANNOUNCE,
    QUEUE_MAX,
    RECORD,
    RELEASE_CONFIRM,
    RELEASE_CONFIRM_SECONDS,
    TARGET_ACCEPT,
    TARGET_RING,
    CallState,
    Commands,
    channel_of,
)
from callflow.facts import AgentOffer, CallFacts, Joining
from callflow.transfer import ACCEPTED, ANSWERED

__all__ = ["CallEngine", "CallState"]


class CallEngine(ClosingFlow):
    """One caller's call, from first ring to the caller hanging up."""

    def handle(self, event: e.Event) -> Commands:
        """Apply one event; return what must be done, in order."""
        if isinstance(event, e.TimerFired):
            if self._tokens.get(event.name) != event.token:
                return []  # stale: the call has moved on
            del self._tokens[event.name]
            if event.name == JOIN:
                return self._on_join_timeout(event)
            handler = _TIMERS.get((self.state, event.name), _ignore)
            return handler(self, event)
        if self._repeat_of_gone(event):
            return []  # StasisEnd or ChannelDestroyed after the hang-up request: counted once
        if isinstance(event, e.PlaybackFinished) and not self.ended:
            checking = self._check_failed_prompt(event)
            if checking is not None:
                return checking
        if isinstance(event, e.ChannelChecked):
            return self._on_channel_checked(event)
        return self._dispatch(event)

    def _on_channel_checked(self, ev: e.ChannelChecked) -> Commands:
        """After a failed prompt: the caller gone ends the call; the caller there hears the flow go on."""
        failed = self._take_checked_prompt(ev)
        if failed is None or self.ended:
            return []
        checked = self._log(ev.at, "caller-checked", present=ev.exists,
                            purpose=self._playback_purpose)
        if ev.exists:
            return [checked, *self._dispatch(failed)]
        out: Commands = [checked]
        gone = e.ChannelHangupRequest(at=ev.at, channel_id=ev.channel_id)
        if self._repeat_of_gone(gone):
            return out
        return out + self._dispatch(gone)

    # -- what the agent panel reads (no effect on the call) ------------------

    def agent_role(self, agent: str) -> str | None:
        """How ``agent`` is part of this call: "ringing", "first" (talking/holding), "target"."""
        if self.ended:
            return None
        transfer = self._transfer
        if transfer is not None and transfer.ended_at is None and transfer.target_agent == agent:
            return "target"
        offer = self._offer
        if offer is not None and offer.agent == agent:
            return "first" if offer.outcome == "answered" else "ringing"
        if self.facts.agent == agent and self.state in (CallState.CLOSING,):
            return "first"
        return None

    def live_channels(self) -> set[str]:
        """The channels this call still counts on: the caller, the agent, a transfer target."""
        if self.ended:
            return set()
        channels = {self.facts.caller_channel} if self.facts.caller_channel else set()
        if self._offer is not None:
            channels.add(self._offer.leg)
        transfer = self._transfer
        if transfer is not None and transfer.ended_at is None and transfer.leg:
            channels.add(transfer.leg)
        return channels

    def hold_view(self) -> dict[str, object] | None:
        hold = self._hold
        if hold is None or hold.ended_at is not None:
            return None
        start = hold.periods[-1] if hold.periods else hold.started_at
        return {"reason": hold.reason, "limit_seconds": hold.limit_seconds, "started_at": start,
                "ends_at": start + hold.limit_seconds, "alert": bool(hold.agent_alerted_at),
                "asking": self.state is CallState.HOLD_ASK}

    def transfer_view(self, agent: str) -> dict[str, object] | None:
        transfer = self._transfer
        if transfer is None or transfer.ended_at is not None:
            return None
        return {"role": "target" if transfer.target_agent == agent else "first",
                "target": transfer.target, "target_agent": transfer.target_agent,
                "stage": self._transfer_phase or "consent",
                "consent": transfer.consent in ("caller-key", "agent-confirmed"),
                "accepted": bool(transfer.accepted), "reason": transfer.reason,
                "from_agent": transfer.first_agent}

    def _dispatch(self, event: e.Event) -> Commands:
        if isinstance(event, _BRIDGE_EVENTS):
            return self._on_bridge_event(event)
        self._side_played(event)
        found = _TABLE.get((self.state, type(event)))
        if found is None:
            return self._stray(event)
        return found(self, event)

    # -- NEW / RINGING (R1) -------------------------------------------------

    def _on_arrival(self, ev: e.StasisStart) -> Commands:
        f = self.facts
        f.caller_channel = ev.channel_id
        f.caller_number = ev.caller_number
        f.caller_name = ev.caller_name
        f.created_at = ev.created_at if ev.created_at is not None and ev.created_at <= ev.at else ev.at
        f.seen_at = ev.at
        cfg = self.config
        answer_at = f.created_at + cfg.answer_seconds()
        out: Commands = [
            c.Ring(channel_id=ev.channel_id),
            *self._goto(CallState.RINGING),
            self._log(ev.at, "ringing", first_ring_at=f.created_at, caller_number=f.caller_number,
                      caller_name=f.caller_name, answer_planned_at=round(answer_at, 3)),
        ]
        if answer_at <= ev.at:
            return out + self._answer(ev.at)
        out.append(self._timer(ANSWER, answer_at))
        return out

    def _on_answer_timer(self, ev: e.TimerFired) -> Commands:
        return self._answer(ev.at)

    def _answer(self, at: float) -> Commands:
        f = self.facts
        f.answered_at = at
        assert f.created_at is not None
        rings = self.config.cadence.rings_elapsed(at - f.created_at)
        self._choose_flow(at)
        greeting = self.config.closed_prompt if self._closed_flow else self.config.greeting_for(at)
        f.greeting_prompt = greeting
        f.greeting_started_at = at
        return [
            c.Answer(channel_id=f.caller_channel),
            self._log(at, "answered", rings_elapsed=rings, seconds=round(at - f.created_at, 3)),
            *self._goto(CallState.GREETING),
            *self._play(at, (greeting,), "greeting"),
            self._log(at, "greeting", prompt=greeting, closed=self._closed_flow),
        ]

    def _on_caller_gone_ringing(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return []
        self.facts.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state="ringing"),
                *self._end(ev.at, "abandoned-ringing")]

    # -- GREETING / WAIT_NOTICE (R2) ----------------------------------------

    def _on_greeting_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        f = self.facts
        f.greeting_finished_at = ev.at
        f.greeting_result = result
        out: Commands = [*self._prompt_finished(ev.at), self._log(ev.at, "greeted", result=result)]
        return out + self._after_greeting(ev.at)

    def _on_wait_notice_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), self._log(ev.at, "wait-notice-played", result=result),
                *self._queue(ev.at)]

    def _on_caller_gone_greeting(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return []
        f = self.facts
        if f.greeting_result is None:
            f.greeting_result = "caller-hung-up"
        f.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state=self.state.value),
                *self._end(ev.at, "abandoned-greeting")]

    # -- OFFERING (R1 agent rings, never silence) -----------------------------

    def _on_agent_picked(self, ev: e.AgentPicked) -> Commands:
        self._legs += 1
        leg = f"{self.call_id}-a{self._legs}"
        self._offer = AgentOffer(agent=ev.agent, leg=leg, rung_at=ev.at)
        self.facts.offers.append(self._offer)
        self._waiting_logged = False
        f = self.facts
        ring_end = ev.at + self.config.cadence.ring_end(self.config.agent_rings)
        return [
            *self._persist(),  # before the phone rings: a restart lets it ring on (recovery.py)
            c.Dial(channel_id=leg, endpoint=ev.endpoint, caller_id=_caller_id(f),
                   app_args=f"agent,{f.caller_channel}"),
            self._timer(AGENT_RING, ring_end),
            self._log(ev.at, "agent-ringing", agent=ev.agent, leg=leg, rings=self.config.agent_rings),
        ]

    def _on_no_agent(self, ev: e.NoAgentFree) -> Commands:
        out: Commands = []
        if self._tried:
            self._tried.clear()  # everyone free has had a turn: start a new round
        if not self._waiting_logged:
            self._waiting_logged = True
            out.append(self._log(ev.at, "waiting-for-agent", ahead=ev.ahead,
                                 expected_wait_seconds=ev.expected_wait_seconds))
        out.append(self._timer(AGENT_RETRY, ev.at + self.config.agent_retry_seconds))
        return out + self._on_queue_figures(ev)

    def _on_retry(self, ev: e.TimerFired) -> Commands:
        if self._offer is not None:
            return []  # an agent is being rung already
        return [self._request_agent()]

    def _on_agent_ring_timeout(self, ev: e.TimerFired) -> Commands:
        offer = self._offer
        assert offer is not None
        self._tried.append(offer.agent)
        return [
            *self._end_offer(ev.at, "no-answer"),
            self._log(ev.at, "agent-no-answer", agent=offer.agent, rings=self.config.agent_rings),
            *self._after_unanswered(ev.at),
        ]

    def _on_leg_failed(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if not self._is_leg(channel):
            if self._is_caller(channel):
                return self._on_caller_gone_offering(ev)
            return []
        offer = self._offer
        assert offer is not None
        outcome = "unreachable" if isinstance(ev, e.DialFailed) else (
            "declined" if getattr(ev, "cause", 0) == 17 else "no-answer")
        self._tried.append(offer.agent)
        return [
            *self._end_offer(ev.at, outcome),
            self._log(ev.at, f"agent-{outcome}", agent=offer.agent,
                      reason=getattr(ev, "reason", "") or getattr(ev, "cause_txt", "")
                      or _CAUSE_TEXT.get(getattr(ev, "cause", 0), "")),
            *self._after_unanswered(ev.at),
        ]

    def _on_agent_answered(self, ev: e.StasisStart) -> Commands:
        """The agent's phone answered: bridge both; "connected" only once both are really in.

        The caller keeps hearing music until Asterisk reports both parties in
        the bridge (``_joined``): a caller who hung up meanwhile is refused
        (400/422) or bounces in and out (204, trace 14) and is never counted
        as connected.
        """
        if not self._is_leg(ev.channel_id):
            return self._stray(ev)
        offer = self._offer
        assert offer is not None
        offer.outcome = "answered"
        offer.ended_at = ev.at
        self._callback_due = False
        self._new_bridge()
        self._keys.buffer = ""
        caller = self.facts.caller_channel
        return [
            *self._cancel(AGENT_RING, QUEUE_ANNOUNCE, QUEUE_MAX),
            *self._music_until_joined(ev.at),
            *self._bridge_in(ev.at, caller, offer.leg, agents=(offer.leg,)),
            *self._goto(CallState.CONNECTING),
            self._log(ev.at, "agent-answered", agent=offer.agent,
                      ring_seconds=round(ev.at - offer.rung_at, 3)),
            *self._join(ev.at, "connect", caller, offer.leg),
        ]

    def _joined(self, at: float, joining: Joining) -> Commands:
        if joining.purpose == "connect":
            return self._connected(at, joining)
        return super()._joined(at, joining)

    def _connected(self, at: float, joining: Joining) -> Commands:
        """Caller and agent are both in the bridge: now they talk, the music stops."""
        offer = self._offer
        assert offer is not None
        f = self.facts
        f.agent = offer.agent
        f.agents_talked.append(offer.agent)
        if f.connected_at is None:
            f.connected_at = at
        if f.queue_left_at is None:
            f.queue_left_at = at
        out = self._stop_caller_audio(at)
        self._heard(at, "agent")
        return [*out, *self._goto(CallState.CONNECTED),
                self._log(at, "connected", agent=offer.agent,
                          ring_seconds=round((offer.ended_at or at) - offer.rung_at, 3),
                          join_seconds=round(at - joining.since, 3))]

    def _join_failed(self, at: float, joining: Joining, channel: str, why: str) -> Commands:
        if joining.purpose != "connect":
            return super()._join_failed(at, joining, channel, why)
        if self._is_caller(channel) and why != "timeout":
            return self._caller_gone_connecting(at)  # refused or bounced out: the caller left
        return self._not_connected(at, why)

    def _caller_gone_connecting(self, at: float) -> Commands:
        """The caller left before being in the bridge: the agent is released, never counted."""
        offer = self._offer
        self.facts.first_hangup = "caller"
        return [*self._end_offer(at, "caller-hung-up", served=False),
                self._log(at, "caller-hung-up", while_state="connecting",
                          agent=offer.agent if offer else None),
                *self._end(at, "abandoned-connecting")]

    def _not_connected(self, at: float, why: str) -> Commands:
        """The agent could not be put with the caller: released, the caller waits on with music."""
        offer = self._offer
        assert offer is not None
        self._tried.append(offer.agent)
        return [*self._end_offer(at, "not-connected", served=False), *self._drop_bridge(),
                self._log(at, "agent-not-connected", agent=offer.agent, why=why),
                *self._queue(at)]

    def _on_hangup_connecting(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if self._is_caller(channel):
            return self._caller_gone_connecting(ev.at)
        if self._is_leg(channel):
            return self._not_connected(ev.at, "agent-hung-up")
        return []

    def _on_caller_gone_offering(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return self._on_leg_failed(ev) if self._is_leg(channel_of(ev)) else []
        self.facts.first_hangup = "caller"
        return [*self._end_offer(ev.at, "caller-hung-up"),
                self._log(ev.at, "caller-hung-up", while_state="waiting"),
                *self._end(ev.at, "abandoned-waiting")]

    # -- CONNECTED / CLOSING (R9) ---------------------------------------------

    def _on_hangup_connected(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if self._is_caller(channel):
            self.facts.first_hangup = "caller"
            return [self._log(ev.at, "caller-hung-up", while_state="connected"),
                    *self._let_agent_go(hang_up=True, outcome="completed"),
                    *self._end(ev.at, "completed")]
        offer = self._offer
        if offer is not None and channel == offer.leg:
            self.facts.first_hangup = "agent"
            self.facts.agent_left_at = ev.at
            return [*self._let_agent_go(hang_up=False, outcome="completed"),
                    self._log(ev.at, "agent-hung-up-first", agent=offer.agent),
                    *self._start_closing(ev.at, reason="agent-left")]
        return []

    def _on_closing_activity(self, ev: e.ChannelDtmfReceived) -> Commands:
        if not self._is_caller(ev.channel_id):
            return []
        return [self._timer(IDLE, ev.at + self.config.idle_release_seconds)]

    def _on_idle(self, ev: e.TimerFired) -> Commands:
        f = self.facts
        f.idle_released_at = ev.at
        if f.first_hangup is None:
            f.first_hangup = "service"
        return [
            self._log(ev.at, "idle-release", exception="R9", idle_seconds=self.config.idle_release_seconds),
            c.ReleaseIdleLine(channel_id=f.caller_channel),
            *self._goto(CallState.RELEASING),
            self._timer(RELEASE_CONFIRM, ev.at + RELEASE_CONFIRM_SECONDS),
        ]

    def _on_released(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.TimerFired) or self._is_caller(channel_of(ev)):
            return self._end(ev.at, "idle-released")
        return []

    # -- keys: the caller's answers, the target's acceptance, agents' key codes -----

    def _on_dtmf(self, ev: e.ChannelDtmfReceived) -> Commands:
        channel = ev.channel_id
        if self._is_caller(channel):
            if self.state is CallState.HOLD_ASK:
                return self._on_ask_key(ev)
            if self.state is CallState.CONSENT:
                return self._on_consent_key(ev)
            return []  # the caller's keys while talking are theirs to press
        record = self._transfer
        if record is not None and channel == record.leg and self._transfer_phase in (ANSWERED, ACCEPTED):
            return self._on_target_key(ev)
        if self._is_leg(channel) and self.agent is not None:
            action = self._keys.feed(ev.digit)
            if action is None:
                gap = self.config.keycodes.inter_digit_seconds
                return [self._timer(KEYS, ev.at + gap)] if self._keys.pending else self._cancel(KEYS)
            return [*self._cancel(KEYS), *self._key_action(ev.at, action)]
        return []

    def _on_keys_timeout(self, ev: e.TimerFired) -> Commands:
        action = self._keys.timeout()
        return [] if action is None else self._key_action(ev.at, action)

    def _key_action(self, at: float, action: k.KeyAction) -> Commands:
        """A key code becomes the same request the panel would send, through the same table."""
        agent = self.agent
        if agent is None:
            return []
        request: e.Event | None = None
        if action.kind == k.HOLD:
            request = e.HoldRequested(at=at, agent=agent)
        elif action.kind == k.RESUME:
            request = e.ResumeRequested(at=at, agent=agent)
        elif action.kind == k.LEAVE:
            request = e.LeaveRequested(at=at, agent=agent)
        elif action.kind == k.TRANSFER_AGENT:
            target = k.agent_for_digits(action.arg, self.config.agents)
            if target is not None:
                request = e.TransferRequested(at=at, agent=agent, target=target)
        elif action.kind == k.TRANSFER_DEPARTMENT:
            dept = next((d for d in self.config.departments if d.number == action.arg), None)
            if dept is not None:
                request = e.TransferRequested(at=at, agent=agent, target=f"dept:{dept.name}")
        if request is None:
            why = f"unknown key code {action.keys!r}"
            return [self._log(at, "keycode-unknown", agent=agent, keys=action.keys),
                    *self._notify(agent, "error", request="keycode", message=why)]
        return [self._log(at, "keycode", agent=agent, keys=action.keys, action=action.kind),
                *self._dispatch(request)]



def _caller_id(f: CallFacts) -> str:
    """What the agent's phone shows: the caller's number, never raw hostile text."""
    number = "".join(ch for ch in f.caller_number if ch.isdigit() or ch in "+*#")[:32]
    return f'"来电" <{number or "unknown"}>'


# Q.850 causes an agent leg's hang-up request may carry before ChannelDestroyed says it in words.
_CAUSE_TEXT = {16: "Normal Clearing", 17: "User busy", 19: "User alerting, no answer"}

S = CallState
Handler = Callable[[CallEngine, e.Event], Commands]
_GONE = e.GONE_EVENTS  # the first of them counts (see EngineCore._repeat_of_gone)
_BRIDGE_EVENTS = (e.ChannelEnteredBridge, e.ChannelLeftBridge, e.BridgeFailed)


def _ignore(engine: CallEngine, ev: e.Event) -> Commands:
    return []


_HELD = (S.HOLD, S.HOLD_ASK)
_TALKING = (S.CONNECTED, S.HOLD, S.HOLD_ASK, S.CONSENT, S.CLOSE_ASK)  # an agent is on the call: key codes count
_LIVE = tuple(s for s in S if s not in (S.NEW, S.ENDED))
_FLOW = (S.STEP, S.MENU, S.NAME, S.NAME_RECORDING, S.CALLBACK_OFFER, S.CALLBACK_CONFIRM,
         S.CALLBACK_ENTER)
_CALLBACK = (S.CALLBACK_OFFER, S.CALLBACK_CONFIRM, S.CALLBACK_ENTER)
_PROMPT_ENDS: dict[CallState, Handler] = {
    S.STEP: CallEngine._on_step_prompt_end,
    S.MENU: CallEngine._on_menu_prompt_end,
    S.NAME: CallEngine._on_name_prompt_end,
    S.OFFERING: CallEngine._on_queue_prompt_end,
    **{s: CallEngine._on_callback_prompt_end for s in _CALLBACK},
}

# One row per (state, event type): the whole machine. Anything else is a stray event.
_TABLE: dict[tuple[CallState, type[e.Event]], Handler] = {
    (S.NEW, e.StasisStart): CallEngine._on_arrival,  # type: ignore[dict-item]
    **{(S.RINGING, g): CallEngine._on_caller_gone_ringing for g in _GONE},
    (S.GREETING, e.PlaybackFinished): CallEngine._on_greeting_end,
    **{(S.GREETING, g): CallEngine._on_caller_gone_greeting for g in _GONE},
    (S.WAIT_NOTICE, e.PlaybackFinished): CallEngine._on_wait_notice_end,
    **{(S.WAIT_NOTICE, g): CallEngine._on_caller_gone_greeting for g in _GONE},
    (S.OFFERING, e.AgentPicked): CallEngine._on_agent_picked,  # type: ignore[dict-item]
    (S.OFFERING, e.NoAgentFree): CallEngine._on_no_agent,  # type: ignore[dict-item]
    (S.OFFERING, e.StasisStart): CallEngine._on_agent_answered,  # type: ignore[dict-item]
    (S.OFFERING, e.DialFailed): CallEngine._on_leg_failed,
    **{(S.OFFERING, g): CallEngine._on_caller_gone_offering for g in _GONE},
    **{(S.CONNECTING, g): CallEngine._on_hangup_connecting for g in _GONE},
    **{(S.CONNECTED, g): CallEngine._on_hangup_connected for g in _GONE},
    **{(S.HANDOFF, g): CallEngine._on_hangup_on_hold for g in _GONE},
    (S.CONNECTED, e.HoldRequested): CallEngine._on_hold_requested,  # type: ignore[dict-item]
    (S.CONNECTED, e.TransferRequested): CallEngine._on_transfer_requested,  # type: ignore[dict-item]
    (S.CONNECTED, e.LeaveRequested): CallEngine._on_leave,  # type: ignore[dict-item]
    # holds (R4, R7) — and the transfer target's side, which happens while the caller is held
    (S.HOLD, e.PlaybackFinished): CallEngine._on_hold_prompt_end,
    (S.HOLD_ASK, e.PlaybackFinished): CallEngine._on_ask_prompt_end,
    **{(h, g): CallEngine._on_hangup_on_hold for h in _HELD for g in _GONE},
    **{(h, e.ResumeRequested): CallEngine._on_resume for h in _HELD},  # type: ignore[misc]
    **{(h, e.LeaveRequested): CallEngine._on_leave for h in _HELD},  # type: ignore[misc]
    **{(h, e.AgentPicked): CallEngine._on_target_picked for h in _HELD},  # type: ignore[misc]
    **{(h, e.NoAgentFree): CallEngine._on_target_none for h in _HELD},  # type: ignore[misc]
    **{(h, e.StasisStart): CallEngine._on_target_leg_answered for h in _HELD},  # type: ignore[misc]
    **{(h, e.DialFailed): CallEngine._on_target_dial_failed for h in _HELD},  # type: ignore[misc]
    **{(h, e.TargetAnswered): CallEngine._on_target_answered for h in _HELD},  # type: ignore[misc]
    **{(h, e.TransferCompleteRequested): CallEngine._on_transfer_complete  # type: ignore[misc]
       for h in _HELD},
    **{(h, e.TransferCancelRequested): CallEngine._on_transfer_cancel for h in _HELD},  # type: ignore[misc]
    # transfer consent (R6.1)
    (S.CONSENT, e.PlaybackFinished): CallEngine._on_consent_prompt_end,
    (S.CONSENT, e.ConsentGiven): CallEngine._on_consent_given,  # type: ignore[dict-item]
    (S.CONSENT, e.TransferCancelRequested): CallEngine._on_consent_cancel,  # type: ignore[dict-item]
    (S.CONSENT, e.ResumeRequested): CallEngine._on_consent_cancel,  # type: ignore[dict-item]
    **{(S.CONSENT, g): CallEngine._on_hangup_consent for g in _GONE},
    # the agent left mid-call: apology, then the queue again
    (S.REQUEUE, e.PlaybackFinished): CallEngine._on_requeue_prompt_end,
    **{(S.REQUEUE, g): CallEngine._on_caller_gone_requeue for g in _GONE},
    **{(t, e.ChannelDtmfReceived): CallEngine._on_dtmf for t in _TALKING},  # type: ignore[misc]
    (S.CLOSING, e.PlaybackFinished): CallEngine._on_closing_prompt_end_agent,
    (S.CLOSING, e.ChannelDtmfReceived): CallEngine._on_closing_activity,  # type: ignore[dict-item]
    **{(S.CLOSING, g): CallEngine._on_hangup_closing for g in _GONE},
    (S.CLOSING, e.LeaveRequested): CallEngine._on_leave_in_closing,  # type: ignore[dict-item]
    # the call flow: prompts, menus, the recorded name, the callback offer (R3, R5)
    **{(s, e.PlaybackFinished): h for s, h in _PROMPT_ENDS.items()},
    **{(s, g): CallEngine._on_caller_gone_flow for s in _FLOW for g in _GONE},
    (S.MENU, e.ChannelDtmfReceived): CallEngine._on_menu_key,  # type: ignore[dict-item]
    (S.NAME_RECORDING, e.RecordingFinished): CallEngine._on_name_recorded,  # type: ignore[dict-item]
    (S.NAME_RECORDING, e.RecordingFailed): CallEngine._on_name_not_recorded,
    (S.CALLBACK_OFFER, e.ChannelDtmfReceived): CallEngine._on_offer_key,  # type: ignore[dict-item]
    (S.CALLBACK_CONFIRM, e.ChannelDtmfReceived): CallEngine._on_confirm_key,  # type: ignore[dict-item]
    (S.CALLBACK_ENTER, e.ChannelDtmfReceived): CallEngine._on_number_key,  # type: ignore[dict-item]
    # closing from the panel (R8): the question, then the thanks; the caller hangs up first
    (S.CONNECTED, e.EndCallRequested): CallEngine._on_end_call,  # type: ignore[dict-item]
    (S.CLOSE_ASK, e.EndCallRequested): CallEngine._on_end_call,  # type: ignore[dict-item]
    (S.CLOSE_ASK, e.ResumeRequested): CallEngine._on_more_questions,  # type: ignore[dict-item]
    (S.CLOSE_ASK, e.LeaveRequested): CallEngine._on_leave,  # type: ignore[dict-item]
    **{(S.CLOSE_ASK, g): CallEngine._on_hangup_connected for g in _GONE},
    **{(s, e.FollowUpPromised): CallEngine._on_promise for s in _LIVE},  # type: ignore[misc]
    **{(S.RELEASING, g): CallEngine._on_released for g in _GONE},
    # notes and caller details, whenever an agent writes them (R3, R10)
    **{(s, e.NoteAdded): CallEngine._on_note for s in _LIVE},  # type: ignore[misc]
    **{(s, e.CallerInfoUpdated): CallEngine._on_caller_info for s in _LIVE},  # type: ignore[misc]
}

# Timers, by (state, timer name). A timer firing in a state not listed is ignored.
_TIMERS: dict[tuple[CallState, str], Handler] = {
    (S.RINGING, ANSWER): CallEngine._on_answer_timer,  # type: ignore[dict-item]
    (S.GREETING, PROMPT): CallEngine._on_greeting_end,
    (S.WAIT_NOTICE, PROMPT): CallEngine._on_wait_notice_end,
    (S.OFFERING, AGENT_RING): CallEngine._on_agent_ring_timeout,  # type: ignore[dict-item]
    (S.OFFERING, AGENT_RETRY): CallEngine._on_retry,  # type: ignore[dict-item]
    (S.HOLD, PROMPT): CallEngine._on_hold_prompt_end,
    (S.HOLD, HOLD_REASSURE): CallEngine._on_reassure_timer,  # type: ignore[dict-item]
    (S.HOLD, HOLD_ALERT): CallEngine._on_hold_alert,  # type: ignore[dict-item]
    (S.HOLD, HOLD_LIMIT): CallEngine._on_hold_limit,  # type: ignore[dict-item]
    (S.HOLD_ASK, PROMPT): CallEngine._on_ask_prompt_end,
    (S.HOLD_ASK, HOLD_GRACE): CallEngine._on_hold_grace,  # type: ignore[dict-item]
    **{(h, TARGET_RING): CallEngine._on_target_ring_timeout for h in _HELD},  # type: ignore[misc]
    **{(h, TARGET_ACCEPT): CallEngine._on_target_accept_timeout for h in _HELD},  # type: ignore[misc]
    (S.CONSENT, PROMPT): CallEngine._on_consent_prompt_end,
    (S.CONSENT, CONSENT_WAIT): CallEngine._on_consent_timeout,  # type: ignore[dict-item]
    (S.REQUEUE, PROMPT): CallEngine._on_requeue_prompt_end,
    **{(t, KEYS): CallEngine._on_keys_timeout for t in _TALKING},  # type: ignore[misc]
    (S.CLOSING, PROMPT): CallEngine._on_closing_prompt_end_agent,
    (S.CLOSING, IDLE): CallEngine._on_idle,  # type: ignore[dict-item]
    (S.CLOSING, AGENT_RELEASE): CallEngine._on_agent_wait_over,  # type: ignore[dict-item]
    **{(s, PROMPT): h for s, h in _PROMPT_ENDS.items()},
    (S.MENU, MENU_WAIT): CallEngine._on_menu_no_input,  # type: ignore[dict-item]
    (S.NAME_RECORDING, RECORD): CallEngine._on_name_not_recorded,
    (S.OFFERING, QUEUE_ANNOUNCE): CallEngine._on_announce_timer,  # type: ignore[dict-item]
    (S.OFFERING, QUEUE_MAX): CallEngine._on_max_wait,  # type: ignore[dict-item]
    (S.CALLBACK_OFFER, CALLBACK_KEY): CallEngine._on_offer_timeout,  # type: ignore[dict-item]
    (S.CALLBACK_CONFIRM, CALLBACK_KEY): CallEngine._on_confirm_timeout,  # type: ignore[dict-item]
    (S.CALLBACK_ENTER, CALLBACK_KEY): CallEngine._on_number_timeout,  # type: ignore[dict-item]
    (S.RELEASING, RELEASE_CONFIRM): CallEngine._on_released,
}
