"""The per-call etiquette engine: events in, commands out.

Everything that decides what a caller experiences lives in this file's
transition table (one row per state and event). ``handle`` never performs
I/O, never sleeps and never reads a clock: the time is each event's ``at``.
Timers are commands (``StartTimer``) answered later by ``TimerFired``; a
timer whose token is no longer current is ignored, so a late timer can never
act on a call that has moved on.

The rules it makes true:
- R1: ring indication at once, answer after ``answer_after_rings`` counted
  from the channel's creation (or at once if that moment has passed); agents
  rung at most ``agent_rings`` rings each, then the next agent.
- R2: the greeting for the local time band (or the closed greeting) is played
  in full before music and agents.
- R9: there is no command that hangs up a caller; when the agent leaves first
  the caller hears the closing prompt and the line stays open until they hang
  up, or until the long idle release (``ReleaseIdleLine``, logged).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum

from callflow import commands as c
from callflow import events as e
from callflow.compliance import score
from callflow.config import MEDIA_PREFIX, CallFlowConfig
from callflow.facts import AgentOffer, CallFacts


class CallState(StrEnum):
    NEW = "new"
    RINGING = "ringing"
    GREETING = "greeting"
    WAIT_NOTICE = "wait-notice"
    OFFERING = "offering"
    CONNECTED = "connected"
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

RELEASE_CONFIRM_SECONDS = 5.0

_PERSISTED = frozenset({CallState.RINGING, CallState.CONNECTED, CallState.CLOSING})

Commands = list[c.Command]


class CallEngine:
    """One caller's call, from first ring to the caller hanging up."""

    def __init__(self, config: CallFlowConfig, call_id: str) -> None:
        self.config = config
        self.call_id = call_id
        self.state = CallState.NEW
        self.facts = CallFacts(call_id=call_id)
        self._tokens: dict[str, int] = {}
        self._next_token = 0
        self._playback: str | None = None
        self._playback_purpose = ""
        self._playbacks = 0
        self._legs = 0
        self._offer: AgentOffer | None = None
        self._tried: list[str] = []
        self._old_legs: set[str] = set()
        self._waiting_logged = False
        self._bridge: str | None = None
        self._closed_flow = False

    # -- public -----------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def caller_channel(self) -> str:
        return self.facts.caller_channel

    def owns_channel(self, channel_id: str) -> bool:
        return channel_id == self.facts.caller_channel or (
            self._offer is not None and self._offer.leg == channel_id
        ) or channel_id in self._old_legs

    def handle(self, event: e.Event) -> Commands:
        """Apply one event; return what must be done, in order."""
        if isinstance(event, e.TimerFired):
            if self._tokens.get(event.name) != event.token:
                return []  # stale: the call has moved on
            del self._tokens[event.name]
            handler = _TIMERS.get((self.state, event.name), _ignore)
            return handler(self, event)
        found = _TABLE.get((self.state, type(event)))
        if found is None:
            return self._stray(event)
        return found(self, event)

    # -- helpers ----------------------------------------------------------

    def _timer(self, name: str, at: float) -> c.StartTimer:
        self._next_token += 1
        self._tokens[name] = self._next_token
        return c.StartTimer(name=name, token=self._next_token, at=at)

    def _cancel(self, name: str) -> list[c.Command]:
        if self._tokens.pop(name, None) is None:
            return []
        return [c.CancelTimer(name=name)]

    def _play(self, at: float, prompts: tuple[str, ...], purpose: str) -> Commands:
        self._playbacks += 1
        self._playback = f"{self.call_id}-p{self._playbacks}"
        self._playback_purpose = purpose
        media = tuple(f"{MEDIA_PREFIX}{p}" for p in prompts)
        return [
            c.Play(channel_id=self.facts.caller_channel, playback_id=self._playback, media=media),
            self._timer(PROMPT, at + self.config.prompt_timeout_seconds * len(prompts)),
        ]

    def _log(self, at: float, kind: str, **detail: object) -> c.Log:
        return c.Log(at=at, kind=kind, detail=dict(detail))

    def _goto(self, state: CallState) -> list[c.Command]:
        """Change state; keep the states a restarted controller needs on the caller's channel.

        Only the states that change what recovery must do are written (each is an
        ARI request): the call's id from the first ring, who is connected, and
        whether the caller is in closing (R9 idle timing).
        """
        self.state = state
        if state not in _PERSISTED:
            return []
        snapshot = {"call_id": self.call_id, "state": state.value, "agent": self.facts.agent,
                    "leg": self._offer.leg if self._offer else None, "bridge": self._bridge}
        return [c.SetVar(channel_id=self.facts.caller_channel, name="LIYI_CALL",
                         value=json.dumps(snapshot, separators=(",", ":")))]

    def _end(self, at: float, outcome: str) -> Commands:
        self.state = CallState.ENDED
        self.facts.ended_at = at
        out: Commands = [c.CancelTimer(name=name) for name in self._tokens]
        self._tokens.clear()
        if self._bridge:
            out.append(c.DestroyBridge(bridge_id=self._bridge))
        out.append(self._log(at, "ended", outcome=outcome, first_hangup=self.facts.first_hangup))
        out.append(c.CallEnded(at=at, first_hangup=self.facts.first_hangup or "caller",
                               compliance=score(self.facts, self.config)))
        return out

    def _end_offer(self, at: float, outcome: str) -> Commands:
        """Stop ringing the current agent (if any) and give them back to the roster."""
        offer = self._offer
        if offer is None:
            return []
        self._offer = None
        offer.ended_at = at
        offer.outcome = outcome
        self._old_legs.add(offer.leg)
        out: Commands = [*self._cancel(AGENT_RING)]
        if outcome in ("no-answer", "caller-hung-up"):
            out.append(c.Hangup(channel_id=offer.leg))
        out.append(c.ReleaseAgent(agent=offer.agent, outcome=outcome))
        return out

    def _stray(self, event: e.Event) -> Commands:
        # An agent leg answering after we gave up on it: release it, never bridge it.
        if isinstance(event, e.StasisStart) and event.channel_id in self._old_legs:
            return [c.Hangup(channel_id=event.channel_id),
                    self._log(event.at, "late-agent-answer-released", leg=event.channel_id)]
        return []

    def _is_caller(self, channel_id: str) -> bool:
        return channel_id == self.facts.caller_channel

    def _is_leg(self, channel_id: str) -> bool:
        return self._offer is not None and self._offer.leg == channel_id

    # -- NEW / RINGING (R1) -------------------------------------------------

    def _on_arrival(self, ev: e.StasisStart) -> Commands:
        f = self.facts
        f.caller_channel = ev.channel_id
        f.caller_number = ev.caller_number
        f.caller_name = ev.caller_name
        f.created_at = ev.created_at if ev.created_at is not None and ev.created_at <= ev.at else ev.at
        f.seen_at = ev.at
        cfg = self.config
        answer_at = f.created_at + cfg.cadence.ring_end(cfg.answer_after_rings) - cfg.answer_guard_seconds
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
        greeting = self.config.greeting_for(at)
        self._closed_flow = greeting == self.config.closed_prompt
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
        if not self._is_caller(_channel(ev)):
            return []
        self.facts.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state="ringing"),
                *self._end(ev.at, "abandoned-ringing")]

    # -- GREETING / WAIT_NOTICE (R2) ----------------------------------------

    def _prompt_done(self, ev: e.Event) -> tuple[bool, str]:
        """Is this the end of the prompt we are waiting for, and how did it end?"""
        if isinstance(ev, e.PlaybackFinished):
            if ev.playback_id != self._playback:
                return False, ""
            return True, "done" if ev.state == "done" else "failed"
        return True, "timeout"  # the prompt timer

    def _on_greeting_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        f = self.facts
        f.greeting_finished_at = ev.at
        f.greeting_result = result
        self._playback = None
        out: Commands = [*self._cancel(PROMPT), self._log(ev.at, "greeted", result=result)]
        if self._closed_flow:
            return out + self._start_closing(ev.at, reason="after-hours")
        if self.config.wait_prompt:
            out.extend(self._goto(CallState.WAIT_NOTICE))
            return out + self._play(ev.at, (self.config.wait_prompt,), "wait-notice")
        return out + self._queue(ev.at)

    def _on_wait_notice_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        self._playback = None
        return [*self._cancel(PROMPT), self._log(ev.at, "wait-notice-played", result=result),
                *self._queue(ev.at)]

    def _on_caller_gone_greeting(self, ev: e.Event) -> Commands:
        if not self._is_caller(_channel(ev)):
            return []
        f = self.facts
        if f.greeting_result is None:
            f.greeting_result = "caller-hung-up"
        f.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state=self.state.value),
                *self._end(ev.at, "abandoned-greeting")]

    # -- OFFERING (R1 agent rings, never silence) -----------------------------

    def _queue(self, at: float) -> Commands:
        self.facts.queued_at = at
        return [
            c.StartMusic(channel_id=self.facts.caller_channel, moh_class=self.config.moh_class),
            *self._goto(CallState.OFFERING),
            self._log(at, "queued", music=self.config.moh_class),
            c.RequestAgent(skip=()),
        ]

    def _on_agent_picked(self, ev: e.AgentPicked) -> Commands:
        self._legs += 1
        leg = f"{self.call_id}-a{self._legs}"
        self._offer = AgentOffer(agent=ev.agent, leg=leg, rung_at=ev.at)
        self.facts.offers.append(self._offer)
        self._waiting_logged = False
        f = self.facts
        ring_end = ev.at + self.config.cadence.ring_end(self.config.agent_rings)
        return [
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
            out.append(self._log(ev.at, "waiting-for-agent"))
        out.append(self._timer(AGENT_RETRY, ev.at + self.config.agent_retry_seconds))
        return out

    def _on_retry(self, ev: e.TimerFired) -> Commands:
        return [c.RequestAgent(skip=tuple(self._tried))]

    def _on_agent_ring_timeout(self, ev: e.TimerFired) -> Commands:
        offer = self._offer
        assert offer is not None
        self._tried.append(offer.agent)
        return [
            *self._end_offer(ev.at, "no-answer"),
            self._log(ev.at, "agent-no-answer", agent=offer.agent, rings=self.config.agent_rings),
            c.RequestAgent(skip=tuple(self._tried)),
        ]

    def _on_leg_failed(self, ev: e.Event) -> Commands:
        channel = _channel(ev)
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
                      reason=getattr(ev, "reason", "") or getattr(ev, "cause_txt", "")),
            c.RequestAgent(skip=tuple(self._tried)),
        ]

    def _on_agent_answered(self, ev: e.StasisStart) -> Commands:
        if not self._is_leg(ev.channel_id):
            return self._stray(ev)
        offer = self._offer
        assert offer is not None
        offer.outcome = "answered"
        offer.ended_at = ev.at
        f = self.facts
        f.agent = offer.agent
        f.connected_at = ev.at
        self._bridge = f"{self.call_id}-b"
        return [
            *self._cancel(AGENT_RING),
            c.StopMusic(channel_id=f.caller_channel),
            c.Bridge(bridge_id=self._bridge, channel_ids=(f.caller_channel, offer.leg)),
            *self._goto(CallState.CONNECTED),
            self._log(ev.at, "connected", agent=offer.agent,
                      ring_seconds=round(ev.at - offer.rung_at, 3)),
        ]

    def _on_caller_gone_offering(self, ev: e.Event) -> Commands:
        if not self._is_caller(_channel(ev)):
            return self._on_leg_failed(ev) if self._is_leg(_channel(ev)) else []
        self.facts.first_hangup = "caller"
        return [*self._end_offer(ev.at, "caller-hung-up"),
                self._log(ev.at, "caller-hung-up", while_state="waiting"),
                *self._end(ev.at, "abandoned-waiting")]

    # -- CONNECTED / CLOSING (R9) ---------------------------------------------

    def _on_hangup_connected(self, ev: e.Event) -> Commands:
        channel = _channel(ev)
        offer = self._offer
        if self._is_caller(channel):
            self.facts.first_hangup = "caller"
            out: Commands = [self._log(ev.at, "caller-hung-up", while_state="connected")]
            if offer is not None:
                self._offer = None
                self._old_legs.add(offer.leg)
                out += [c.Hangup(channel_id=offer.leg),
                        c.ReleaseAgent(agent=offer.agent, outcome="completed")]
            return out + self._end(ev.at, "completed")
        if offer is not None and channel == offer.leg:
            self._offer = None
            self._old_legs.add(offer.leg)
            self.facts.first_hangup = "agent"
            self.facts.agent_left_at = ev.at
            return [c.ReleaseAgent(agent=offer.agent, outcome="completed"),
                    self._log(ev.at, "agent-hung-up-first", agent=offer.agent),
                    *self._start_closing(ev.at, reason="agent-left")]
        return []

    def _start_closing(self, at: float, *, reason: str) -> Commands:
        self.facts.closing_started_at = at
        return [
            *self._goto(CallState.CLOSING),
            *self._play(at, self.config.closing_prompts, "closing"),
            self._log(at, "closing", reason=reason, prompts=list(self.config.closing_prompts)),
            self._timer(IDLE, at + self.config.idle_release_seconds),
        ]

    def _on_closing_prompt_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        self._playback = None
        return [*self._cancel(PROMPT), self._log(ev.at, "closing-played", result=result)]

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

    def _on_caller_gone_closing(self, ev: e.Event) -> Commands:
        if not self._is_caller(_channel(ev)):
            return []
        f = self.facts
        if f.first_hangup is None:
            f.first_hangup = "caller"
        outcome = "after-hours" if self._closed_flow else "completed"
        return [self._log(ev.at, "caller-hung-up", while_state="closing"), *self._end(ev.at, outcome)]

    def _on_released(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.TimerFired) or self._is_caller(_channel(ev)):
            return self._end(ev.at, "idle-released")
        return []


def _channel(ev: e.Event) -> str:
    return getattr(ev, "channel_id", "")


def _caller_id(f: CallFacts) -> str:
    """What the agent's phone shows: the caller's number, never raw hostile text."""
    number = "".join(ch for ch in f.caller_number if ch.isdigit() or ch in "+*#")[:32]
    return f'"来电" <{number or "unknown"}>'


S = CallState
Handler = Callable[[CallEngine, e.Event], Commands]
_GONE = (e.StasisEnd, e.ChannelDestroyed)


def _ignore(engine: CallEngine, ev: e.Event) -> Commands:
    return []


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
    **{(S.CONNECTED, g): CallEngine._on_hangup_connected for g in _GONE},
    (S.CLOSING, e.PlaybackFinished): CallEngine._on_closing_prompt_end,
    (S.CLOSING, e.ChannelDtmfReceived): CallEngine._on_closing_activity,  # type: ignore[dict-item]
    **{(S.CLOSING, g): CallEngine._on_caller_gone_closing for g in _GONE},
    **{(S.RELEASING, g): CallEngine._on_released for g in _GONE},
}

# Timers, by (state, timer name). A timer firing in a state not listed is ignored.
_TIMERS: dict[tuple[CallState, str], Handler] = {
    (S.RINGING, ANSWER): CallEngine._on_answer_timer,  # type: ignore[dict-item]
    (S.GREETING, PROMPT): CallEngine._on_greeting_end,
    (S.WAIT_NOTICE, PROMPT): CallEngine._on_wait_notice_end,
    (S.OFFERING, AGENT_RING): CallEngine._on_agent_ring_timeout,  # type: ignore[dict-item]
    (S.OFFERING, AGENT_RETRY): CallEngine._on_retry,  # type: ignore[dict-item]
    (S.CLOSING, PROMPT): CallEngine._on_closing_prompt_end,
    (S.CLOSING, IDLE): CallEngine._on_idle,  # type: ignore[dict-item]
    (S.RELEASING, RELEASE_CONFIRM): CallEngine._on_released,
}
