"""A callback the center places: the agent first, then the customer (R8), never hung up on (R9).

Why a machine of its own: an inbound call starts with a caller who is
already there; a callback starts with nobody. The handbook's order is
strict — "打电话给客户时不要先问对方姓名": the agent must be on the line
*before* the customer's phone rings, and must speak first, introducing
themselves and the company. So the customer is only dialled once the
agent's leg has answered, and the agent's panel shows the opening line
("您好，我是{公司}的{坐席}，关于您…来电反映的问题给您回电。") while the
customer's phone rings.

Once the customer answers they are the party R9 protects, exactly like an
inbound caller: no command here hangs up the customer's channel after it
answered. If the agent hangs up (or leaves from the panel, or types ``*9``)
the customer hears the closing prompts and the line stays open until they
hang up, or until the long idle release (``ReleaseIdleLine``, the logged
R9 exception). Before the customer answered, their ringing leg is only a
dial attempt, not a caller: it is stopped when the agent goes away or it
rings too long.

Like ``engine.py``: no I/O, no clock (time is each event's ``at``), timers
are ``StartTimer`` commands answered by ``TimerFired`` with a token (a stale
token is ignored), and one transition table below decides which handler
runs for which (state, event). The channel ids are ``<call>-a1`` (agent) and
``<call>-c1`` (customer); both legs come into our app with
``app_args="callback,<call>"``.

Who hung up first (``CallEnded.first_hangup``) uses the inbound words:
``caller`` is the customer's side (they hung up, or never answered / were
busy / unreachable), ``agent`` the agent's side (they left, declined or did
not answer), ``service`` only for an idle release without an earlier side.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from callflow import commands as c
from callflow import events as e
from callflow import keycodes as k
from callflow.compliance import BROKEN, KEPT, NOT_APPLICABLE, Record, score_r9
from callflow.config import CLOSING_MORE_PROMPT, MEDIA_PREFIX, CallFlowConfig
from callflow.core import (
    AGENT_RING,
    IDLE,
    KEYS,
    PROMPT,
    RELEASE_CONFIRM,
    RELEASE_CONFIRM_SECONDS,
    Commands,
    EngineCore,
    channel_of,
)
from callflow.facts import AgentOffer, CallFacts

__all__ = ["CallbackEngine", "CallbackRecord", "CallbackState", "opening_line", "score_callback"]

CUSTOMER_RING = "customer-ring"
#: Asterisk's own originate timeout (``Dial.ring_seconds``) normally ends an unanswered
#: customer leg first, with its real cause; our timer is the backstop a little later.
CUSTOMER_RING_MARGIN_SECONDS = 2.0
DIALING_PROMPT = "callback-dialing"
CAUSE_BUSY = 17
_STOP_KEYS = "+*#"


class CallbackState(StrEnum):
    NEW = "new"
    AGENT_RINGING = "agent-ringing"
    DIALING = "dialing"  # the agent is on the line, the customer's phone rings
    CONNECTED = "connected"
    CLOSING = "closing"  # the agent left first: closing prompts, line open (R9)
    RELEASING = "releasing"  # idle line released (R9 exception), waiting for the channel to go
    ENDED = "ended"


@dataclass(slots=True)
class CallbackRecord:
    """The evidence of one callback attempt, for R8 ("agent first") and the follow-up's history."""

    followup_id: str
    number: str
    agent: str
    opening_line: str
    started_at: float | None = None
    agent_leg: str = ""
    agent_answered_at: float | None = None
    customer_leg: str = ""
    customer_dialled_at: float | None = None
    customer_answered_at: float | None = None
    agent_left_at: float | None = None
    outcome: str = ""  # completed | idle-released | agent-no-answer | customer-no-answer |
    #                    agent-left | no-number
    reason: str = ""  # why it did not connect: no-answer | busy | unreachable | declined | cancelled
    promises: list[dict[str, Any]] = field(default_factory=list)


def opening_line(company: str, agent: str, called_on: dt.date | None = None) -> str:
    """What the agent says first: who they are and which company, never "请问您是哪位" (R8)."""
    when = f"{called_on.month}月{called_on.day}日" if called_on is not None else ""
    return f"您好，我是{company}的{agent}，关于您{when}来电反映的问题给您回电。"


def dialable(number: str) -> str:
    """The number as the trunk may dial it: digits (and a leading +), nothing that could reroute."""
    digits = "".join(ch for ch in number if ch.isdigit())[:32]
    return f"+{digits}" if digits and number.strip().startswith("+") else digits


class CallbackEngine(EngineCore):
    """One callback: ring the agent, then the customer; bridge them; close like an inbound call."""

    def __init__(self, config: CallFlowConfig, call_id: str, *, followup_id: str, number: str,
                 agent: str, endpoint: str, requested_at: float | None = None) -> None:
        """``requested_at``: when the customer called about it (the follow-up's creation), for
        the date in the opening line; ``None`` leaves the date out."""
        super().__init__(config, call_id)
        self.state: CallbackState = CallbackState.NEW  # type: ignore[assignment]
        self.followup_id = followup_id
        self.number = number
        self.agent_name = agent
        self.endpoint = endpoint
        called_on = config.local_time(requested_at).date() if requested_at is not None else None
        self.record = CallbackRecord(followup_id=followup_id, number=number, agent=agent,
                                     opening_line=opening_line(config.company, agent, called_on))
        self.facts.caller_number = number
        self.facts.agent = agent
        self._agent_leg = f"{call_id}-a1"
        self._customer_leg = f"{call_id}-c1"
        self._alive: set[str] = set()  # legs dialled and not gone (nor hung up by us)
        self._answered: set[str] = set()  # legs that came into our app
        self._agent_on_line = False  # answered and not yet gone / released
        self._agent_released = False
        self._agent_prompt: str | None = None  # "callback-dialing" playing to the agent
        self._asked = False  # "请问您还有其他问题吗？" played, agent still on the line
        self._promises = 0

    # -- public -----------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is CallbackState.ENDED

    @property
    def agent(self) -> str | None:
        """The agent while they are on the line (answered, not yet gone)."""
        return self.agent_name if self._agent_on_line else None

    def owns_channel(self, channel_id: str) -> bool:
        """The agent's leg, and the customer's once dialled (the controller routes events by it)."""
        return channel_id == self._agent_leg or (
            channel_id == self._customer_leg and self.record.customer_dialled_at is not None)

    def restore_connected(self, at: float, *, bridge: str, id_offset: int) -> Commands:
        """Taken back after a controller restart (issue 9): agent and customer both still in ``bridge``.

        From here it is an ordinary connected callback: the customer hanging up
        frees the agent, the agent leaving first gives the customer the closing
        words and an open line (R9). When it was placed and answered was not
        seen by this controller; the recovery time stands in for them.
        """
        f, r = self.facts, self.record
        leg, customer = self._agent_leg, self._customer_leg
        f.created_at = f.seen_at = r.started_at = at
        f.recovered_at = at
        f.caller_channel = r.customer_leg = customer
        r.agent_leg = leg
        r.agent_answered_at = r.customer_dialled_at = r.customer_answered_at = at
        f.answered_at = f.connected_at = at
        f.offers.append(AgentOffer(agent=self.agent_name, leg=leg, rung_at=at, ended_at=at,
                                   outcome="answered"))
        f.agents_talked.append(self.agent_name)
        self._alive = {leg, customer}
        self._answered = {leg, customer}
        self._agent_on_line = True
        self._bridge = bridge
        self._bridges = 1 if bridge == f"{self.call_id}-b" else id_offset
        self._in_bridge = {leg, customer}
        self._present = {leg, customer}
        self._legs = self._playbacks = id_offset
        self._heard(at, "agent")
        return [*self._goto(CallbackState.CONNECTED),
                self._log(at, "recovered", state="connected", agent=self.agent_name, bridge=bridge,
                          followup_id=self.followup_id),
                *self._view_notice()]

    def restore_closing(self, at: float, *, id_offset: int) -> Commands:
        """Taken back after a restart with the customer on the line but not with their agent
        (never bridged, or the agent gone while no controller ran): the closing words and an
        open line until the customer hangs up (R9). Nothing before the restart is claimed."""
        f, r = self.facts, self.record
        customer = self._customer_leg
        f.created_at = f.seen_at = r.started_at = at
        f.recovered_at = at
        f.caller_channel = r.customer_leg = customer
        r.customer_dialled_at = r.customer_answered_at = at
        f.answered_at = at
        f.first_hangup = "agent"  # the agent's side is gone first; the customer's line stays
        self._alive = {customer}
        self._answered = {customer}
        self._legs = self._playbacks = self._bridges = id_offset
        return [self._log(at, "recovered", state="closing", agent=self.agent_name,
                          followup_id=self.followup_id),
                *self._closing(at)]

    def start(self, at: float) -> Commands:
        """Ring the agent's phone (never the customer's first): R1 rings for the agent."""
        if self.state is not CallbackState.NEW:
            return []
        f, r = self.facts, self.record
        f.created_at = f.seen_at = r.started_at = at
        out: Commands = [self._log(at, "callback-started", followup_id=self.followup_id,
                                   number=self.number, agent=self.agent_name)]
        if not dialable(self.number):
            f.first_hangup = "caller"
            r.reason = "no-number"
            return [*out, self._log(at, "callback-failed", reason="no dialable number"),
                    *self._agent_done(at, "no-number", hang_up=False), *self._finish(at, "no-number")]
        leg = self._agent_leg
        f.offers.append(AgentOffer(agent=self.agent_name, leg=leg, rung_at=at))
        r.agent_leg = leg
        self._alive.add(leg)
        self.state = CallbackState.AGENT_RINGING
        rings = self.config.agent_rings
        return out + [
            # ring_seconds 0: the agent's rings (R1) plus the controller's margin, as for inbound
            c.Dial(channel_id=leg, endpoint=self.endpoint,
                   caller_id=f'"回电" <{dialable(self.number)}>', app_args=f"callback,{self.call_id}"),
            self._timer(AGENT_RING, at + self.config.cadence.ring_end(rings)),
            self._log(at, "agent-ringing", agent=self.agent_name, leg=leg, rings=rings),
            *self._view_notice(),
        ]

    def handle(self, event: e.Event) -> Commands:
        """Apply one event; return what must be done, in order."""
        if isinstance(event, e.TimerFired):
            if self._tokens.get(event.name) != event.token:
                return []  # stale: the callback has moved on
            del self._tokens[event.name]
            timer = _TIMERS.get((self.state, event.name))
            return [] if timer is None else timer(self, event)
        if self._repeat_of_gone(event):
            return []  # StasisEnd or ChannelDestroyed after the hang-up request: counted once
        self._side_played(event)
        handler = _TABLE.get((self.state, type(event)))
        if handler is None:
            return self._stray_event(event)
        return handler(self, event)

    def agent_role(self, agent: str) -> str | None:
        """"callback" for this callback's agent until it ends (the panel shows its view)."""
        return "callback" if agent == self.agent_name and not self.ended else None

    def live_channels(self) -> set[str]:
        """The legs this callback still counts on (dialled, not gone, not hung up by us)."""
        return set() if self.ended else set(self._alive)

    def callback_view(self) -> dict[str, object]:
        """What the agent's panel shows: the stage, the number, the opening line to say first."""
        return {"stage": self._stage(), "number": self.number,
                "opening_line": self.record.opening_line, "followup_id": self.followup_id,
                "reason": self.record.reason}

    def closing_view(self) -> dict[str, str] | None:
        """{"stage": "asked"} while "请问您还有其他问题吗？" was asked with the agent still there."""
        return {"stage": "asked"} if self._asked and self.state is CallbackState.CONNECTED else None

    def hold_view(self) -> dict[str, object] | None:
        """No holds on a callback (the inbound engine's panel view, for code that reads any call)."""
        return None

    def transfer_view(self, agent: str) -> dict[str, object] | None:
        """No transfers on a callback."""
        return None

    def _stage(self) -> str:
        s = self.state
        if s in (CallbackState.NEW, CallbackState.AGENT_RINGING):
            return "agent-ringing"
        if s is CallbackState.DIALING:
            return "dialing"
        if s is CallbackState.CONNECTED:
            return "connected"
        if s in (CallbackState.CLOSING, CallbackState.RELEASING):
            return "closing"
        if self.record.outcome == "customer-no-answer" and self.record.reason != "unreachable":
            return "no-answer"
        return "closing" if self.record.customer_answered_at is not None else "failed"

    # -- small helpers --------------------------------------------------------

    def _goto(self, state: CallbackState) -> Commands:  # type: ignore[override]
        """Change state; once the customer is in our app, keep it on their channel for recovery."""
        self.state = state
        if state not in (CallbackState.CONNECTED, CallbackState.CLOSING):
            return []
        snapshot = {"call_id": self.call_id, "kind": "callback", "state": state.value,
                    "agent": self.agent_name, "leg": self._agent_leg, "bridge": self._bridge,
                    "followup_id": self.followup_id}
        return [c.SetVar(channel_id=self._customer_leg, name="LIYI_CALL",
                         value=json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False))]

    def _view_notice(self) -> Commands:
        return [c.NotifyAgent(agent=self.agent_name, kind="callback", data=self.callback_view())]

    def _hangup_leg(self, leg: str) -> Commands:
        """Hang up one of our legs — never the customer's once answered (R9): no table row asks
        for that, and this refuses it anyway rather than trust every future row."""
        if leg not in self._alive or (leg == self._customer_leg and leg in self._answered):
            return []
        self._alive.discard(leg)
        return [c.Hangup(channel_id=leg)]

    def _agent_done(self, at: float, outcome: str, *, hang_up: bool) -> Commands:
        """The agent's part is over: their leg hung up if still there, back to the roster once."""
        self._agent_on_line = False
        self._in_bridge.discard(self._agent_leg)
        out = self._hangup_leg(self._agent_leg) if hang_up else []
        self._alive.discard(self._agent_leg)
        self._agent_prompt = None
        if self._agent_released:
            return out
        self._agent_released = True
        talked = self.record.customer_answered_at is not None
        wrap_up = self.config.wrap_up_for(self.agent_name) if talked else 0.0
        return out + [c.ReleaseAgent(agent=self.agent_name, outcome=outcome, wrap_up_seconds=wrap_up)]

    def _offer_ended(self, at: float, outcome: str) -> None:
        offer = self.facts.offers[-1] if self.facts.offers else None
        if offer is not None and offer.ended_at is None:
            offer.ended_at = at
            offer.outcome = outcome

    def _finish(self, at: float, outcome: str) -> Commands:
        """The callback is over: timers gone, bridge gone, the outcome logged, scored once."""
        self.state = CallbackState.ENDED
        self.record.outcome = outcome
        f = self.facts
        f.ended_at = at
        out: Commands = [c.CancelTimer(name=name) for name in self._tokens]
        self._tokens.clear()
        out += self._drop_bridge()
        first = f.first_hangup or "service"
        out.append(self._log(at, "ended", outcome=outcome, first_hangup=first,
                             followup_id=self.followup_id, reason=self.record.reason))
        out += self._view_notice()
        out.append(c.CallEnded(at=at, first_hangup=first,
                               compliance=score_callback(f, self.record, self.config)))
        return out

    def _stray_event(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.StasisStart) and ev.channel_id == self._agent_leg \
                and ev.channel_id not in self._answered and self._agent_released:
            # the agent's phone answered after we gave up on it: release it, never use it
            return [c.Hangup(channel_id=ev.channel_id),
                    self._log(ev.at, "late-agent-answer-released", leg=ev.channel_id)]
        if isinstance(ev, e.AgentEvent) and not self.ended:
            return self._refuse(ev, f"not possible on a callback now (stage {self._stage()})",
                                log_kind="agent-request-ignored", state=self.state.value)
        return []

    def _mine(self, ev: e.AgentEvent) -> bool:
        return ev.agent == self.agent_name

    # -- AGENT_RINGING: the agent first ----------------------------------------

    def _on_agent_answered(self, ev: e.StasisStart) -> Commands:
        if ev.channel_id != self._agent_leg or ev.channel_id not in self._alive:
            return self._stray_event(ev)
        f, r, cfg = self.facts, self.record, self.config
        self._answered.add(ev.channel_id)
        self._agent_on_line = True
        r.agent_answered_at = ev.at
        self._offer_ended(ev.at, "answered")
        f.agents_talked.append(self.agent_name)
        prompt = self._play_to(self._agent_leg, (f"{MEDIA_PREFIX}{DIALING_PROMPT}",))
        self._agent_prompt = prompt.playback_id
        leg = self._customer_leg
        f.caller_channel = leg
        r.customer_leg = leg
        r.customer_dialled_at = ev.at
        self._alive.add(leg)
        fu = cfg.followups
        self.state = CallbackState.DIALING
        return [
            *self._cancel(AGENT_RING),
            self._log(ev.at, "agent-answered", agent=self.agent_name,
                      ring_seconds=round(ev.at - (r.started_at or ev.at), 3)),
            prompt,
            c.Dial(channel_id=leg, endpoint=fu.customer_dial.format(number=dialable(self.number)),
                   caller_id=fu.caller_id or cfg.company, app_args=f"callback,{self.call_id}",
                   ring_seconds=fu.customer_ring_seconds),
            self._timer(CUSTOMER_RING, ev.at + fu.customer_ring_seconds + CUSTOMER_RING_MARGIN_SECONDS),
            self._log(ev.at, "customer-dialing", number=self.number, leg=leg,
                      opening_line=r.opening_line),
            *self._view_notice(),
        ]

    def _on_agent_not_reached(self, ev: e.Event) -> Commands:
        if channel_of(ev) != self._agent_leg:
            return []
        if isinstance(ev, e.DialFailed):
            reason = "unreachable"
        elif getattr(ev, "cause", 0) == CAUSE_BUSY:  # on the hang-up request or ChannelDestroyed
            reason = "declined"
        else:
            reason = "no-answer"
        return self._agent_missed(ev.at, reason, hang_up=False,
                                  detail=getattr(ev, "reason", "") or getattr(ev, "cause_txt", ""))

    def _on_agent_ring_timeout(self, ev: e.TimerFired) -> Commands:
        return self._agent_missed(ev.at, "no-answer", hang_up=True, detail="")

    def _on_cancel_ringing(self, ev: e.AgentEvent) -> Commands:
        if not self._mine(ev):
            return self._stray_event(ev)
        return self._agent_missed(ev.at, "cancelled", hang_up=True, detail="panel")

    def _agent_missed(self, at: float, reason: str, *, hang_up: bool, detail: str) -> Commands:
        """The agent did not come on the line: the customer was never dialled (agent first)."""
        self.facts.first_hangup = "agent"
        self.record.reason = reason
        self._offer_ended(at, reason)
        return [*self._cancel(AGENT_RING),
                *self._agent_done(at, reason, hang_up=hang_up),
                self._log(at, "callback-agent-no-answer", agent=self.agent_name, reason=reason,
                          detail=detail),
                *self._finish(at, "agent-no-answer")]

    # -- DIALING: the customer's phone rings, the agent waits with the opening line ----

    def _on_customer_answered(self, ev: e.StasisStart) -> Commands:
        if ev.channel_id != self._customer_leg or ev.channel_id not in self._alive:
            return self._stray_event(ev)
        f, r = self.facts, self.record
        self._answered.add(ev.channel_id)
        r.customer_answered_at = f.answered_at = f.connected_at = ev.at
        out: Commands = [*self._cancel(CUSTOMER_RING)]
        if self._agent_prompt is not None:
            out.append(c.StopPlayback(playback_id=self._agent_prompt))
            self._agent_prompt = None
            self._side_playbacks.pop(self._agent_leg, None)
        self._new_bridge()
        self._keys.buffer = ""
        out += self._bridge_in(ev.at, self._customer_leg, self._agent_leg, agents=(self._agent_leg,))
        out += self._goto(CallbackState.CONNECTED)
        out.append(self._log(ev.at, "callback-connected", agent=self.agent_name, number=self.number,
                             ring_seconds=round(ev.at - (r.customer_dialled_at or ev.at), 3)))
        return out + self._view_notice()

    def _on_dialing_gone(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if channel == self._agent_leg:
            return self._agent_left_dialing(ev.at, via="hangup")
        if channel != self._customer_leg or channel not in self._alive:
            return []
        self._alive.discard(channel)
        if isinstance(ev, e.DialFailed):
            reason, detail = "unreachable", ev.reason
        elif getattr(ev, "cause", 0) == CAUSE_BUSY:  # on the hang-up request or ChannelDestroyed
            reason, detail = "busy", getattr(ev, "cause_txt", "") or "User busy"
        else:
            reason, detail = "no-answer", getattr(ev, "cause_txt", "")
        return self._customer_missed(ev.at, reason, detail)

    def _on_customer_ring_timeout(self, ev: e.TimerFired) -> Commands:
        return [*self._hangup_leg(self._customer_leg),
                *self._customer_missed(ev.at, "no-answer", "rang out")]

    def _customer_missed(self, at: float, reason: str, detail: str) -> Commands:
        """Not reached: the agent is told and released; the follow-up stays open for another try."""
        self.facts.first_hangup = "caller"
        self.record.reason = reason
        return [*self._cancel(CUSTOMER_RING),
                self._log(at, "customer-no-answer", number=self.number, reason=reason, detail=detail),
                *self._notify(self.agent_name, "callback-failed", reason=reason, number=self.number,
                              followup_id=self.followup_id),
                *self._agent_done(at, "customer-no-answer", hang_up=True),
                *self._finish(at, "customer-no-answer")]

    def _on_leave_dialing(self, ev: e.AgentEvent) -> Commands:
        if not self._mine(ev):
            return self._stray_event(ev)
        return self._agent_left_dialing(ev.at, via="request")

    def _agent_left_dialing(self, at: float, *, via: str) -> Commands:
        """The agent went before the customer answered: stop the customer's phone ringing."""
        self.facts.first_hangup = "agent"
        self.record.agent_left_at = self.facts.agent_left_at = at
        self.record.reason = "agent-left"
        return [*self._hangup_leg(self._customer_leg),
                *self._agent_done(at, "agent-left", hang_up=via == "request"),
                self._log(at, "agent-left", agent=self.agent_name, via=via, while_state="dialing"),
                *self._finish(at, "agent-left")]

    def _on_agent_prompt_end(self, ev: e.PlaybackFinished) -> Commands:
        if ev.playback_id == self._agent_prompt:
            self._agent_prompt = None
        return []

    # -- CONNECTED: the customer is the caller now (R9) -------------------------

    def _on_hangup_connected(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if channel == self._customer_leg:
            self._alive.discard(channel)
            self.facts.first_hangup = "caller"
            return [self._log(ev.at, "caller-hung-up", while_state="connected"),
                    *self._agent_done(ev.at, "completed", hang_up=True),
                    *self._finish(ev.at, "completed")]
        if channel == self._agent_leg and self._agent_on_line:
            return self._agent_leaves(ev.at, via="hangup")
        return []

    def _on_leave_connected(self, ev: e.AgentEvent) -> Commands:
        if not self._mine(ev):
            return self._stray_event(ev)
        if isinstance(ev, e.EndCallRequested) and ev.ask_more:
            return self._ask_more(ev.at)
        return self._agent_leaves(ev.at, via="request")

    def _ask_more(self, at: float) -> Commands:
        """R8: "请问您还有其他问题吗？" with the agent still on the line, if the agent chooses it."""
        self._asked = True
        out = self._stop_caller_audio(at)
        out += self._play(at, (CLOSING_MORE_PROMPT,), "closing-more")
        return out + [self._log(at, "closing-asked", agent=self.agent_name, prompt=CLOSING_MORE_PROMPT),
                      *self._notify(self.agent_name, "closing", stage="asked")]

    def _on_resume_connected(self, ev: e.AgentEvent) -> Commands:
        """After the question, the customer had more to ask: carry on talking."""
        if not self._mine(ev) or not self._asked:
            return self._stray_event(ev)
        self._asked = False
        return [*self._stop_caller_audio(ev.at),
                self._log(ev.at, "closing-more-questions", agent=self.agent_name),
                *self._notify(self.agent_name, "closing", stage="")]

    def _on_connected_prompt_end(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.PlaybackFinished) and ev.playback_id == self._agent_prompt:
            self._agent_prompt = None
            return []
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), self._log(ev.at, "closing-asked-played", result=result)]

    def _agent_leaves(self, at: float, *, via: str) -> Commands:
        """The agent's part ends first: the customer hears the closing, the line stays open (R9)."""
        f = self.facts
        f.first_hangup = f.first_hangup or "agent"
        f.agent_left_at = self.record.agent_left_at = at
        self._asked = False
        out = [*self._cancel(KEYS),
               *self._agent_done(at, "completed", hang_up=via == "request"),
               self._log(at, "agent-hung-up-first" if via == "hangup" else "agent-left",
                         agent=self.agent_name, via=via)]
        return out + self._closing(at)

    def _closing(self, at: float) -> Commands:
        self.facts.closing_started_at = at
        prompts = self.config.closing_prompts
        return [*self._stop_caller_audio(at), *self._goto(CallbackState.CLOSING),
                *self._play(at, prompts, "closing"),
                self._log(at, "closing", reason="agent-left", prompts=list(prompts)),
                self._timer(IDLE, at + self.config.idle_release_seconds),
                *self._view_notice()]

    # -- agents' key codes: only *9 (leave) means something on a callback ---------

    def _on_dtmf(self, ev: e.ChannelDtmfReceived) -> Commands:
        if ev.channel_id != self._agent_leg or not self._agent_on_line:
            return []  # the customer's keys are theirs to press
        action = self._keys.feed(ev.digit)
        if action is None:
            gap = self.config.keycodes.inter_digit_seconds
            return [self._timer(KEYS, ev.at + gap)] if self._keys.pending else self._cancel(KEYS)
        return [*self._cancel(KEYS), *self._key_action(ev.at, action)]

    def _on_keys_timeout(self, ev: e.TimerFired) -> Commands:
        action = self._keys.timeout()
        return [] if action is None else self._key_action(ev.at, action)

    def _key_action(self, at: float, action: k.KeyAction) -> Commands:
        if action.kind == k.LEAVE:
            request = e.LeaveRequested(at=at, agent=self.agent_name)
            return [self._log(at, "keycode", agent=self.agent_name, keys=action.keys, action=action.kind),
                    *self.handle(request)]
        why = f"key code {action.keys!r} is not available on a callback"
        return [self._log(at, "keycode-unavailable", agent=self.agent_name, keys=action.keys),
                *self._notify(self.agent_name, "error", request="keycode", message=why)]

    # -- CLOSING / RELEASING (R9) --------------------------------------------------

    def _on_closing_prompt_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), self._log(ev.at, "closing-played", result=result)]

    def _on_closing_activity(self, ev: e.ChannelDtmfReceived) -> Commands:
        if ev.channel_id != self._customer_leg:
            return []
        return [self._timer(IDLE, ev.at + self.config.idle_release_seconds)]

    def _on_idle(self, ev: e.TimerFired) -> Commands:
        f = self.facts
        f.idle_released_at = ev.at
        f.first_hangup = f.first_hangup or "service"
        return [self._log(ev.at, "idle-release", exception="R9",
                          idle_seconds=self.config.idle_release_seconds),
                c.ReleaseIdleLine(channel_id=self._customer_leg),
                *self._goto(CallbackState.RELEASING),
                self._timer(RELEASE_CONFIRM, ev.at + RELEASE_CONFIRM_SECONDS)]

    def _on_customer_gone_closing(self, ev: e.Event) -> Commands:
        if channel_of(ev) != self._customer_leg:
            return []
        self._alive.discard(self._customer_leg)
        return [self._log(ev.at, "caller-hung-up", while_state="closing"),
                *self._finish(ev.at, "completed")]

    def _on_released(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.TimerFired) or channel_of(ev) == self._customer_leg:
            self._alive.discard(self._customer_leg)
            return self._finish(ev.at, "idle-released")
        return []

    # -- what the agent writes down (R10), and promises made on the callback (R8) -----

    def _on_promise(self, ev: e.FollowUpPromised) -> Commands:
        """Still not solved on the callback: a new promise, due N working days on (R8)."""
        if not self._mine(ev):
            return self._stray_event(ev)
        fu = self.config.followups
        days = ev.working_days or fu.promise_working_days
        if not 1 <= days <= fu.max_working_days:
            return self._refuse(ev, f"a reply time must be 1…{fu.max_working_days} working days")
        due = self.config.due_date(ev.at, days).isoformat()
        self._promises += 1
        followup_id = f"{self.call_id}-f{self._promises}"
        self.record.promises.append({"followup_id": followup_id, "at": ev.at, "working_days": days,
                                     "due": due, "text": ev.text})
        return [c.RecordFollowUp(followup_id=followup_id, kind="promise", text=ev.text, due=due,
                                 owner=self.agent_name, number=self.number, created_at=ev.at),
                self._log(ev.at, "followup-promised", agent=ev.agent, followup_id=followup_id,
                          working_days=days, due=due, text=ev.text)]


# -- compliance of a callback (R12) ------------------------------------------------


def _r(status: str, **evidence: Any) -> dict[str, Any]:
    return {"status": status, "evidence": evidence}


def score_callback(facts: CallFacts, record: CallbackRecord, cfg: CallFlowConfig) -> Record:
    """R8 (agent first, introduced first) and R9 (never before the customer) for a callback.

    Kept apart from ``compliance.score`` so that inbound scoring cannot change:
    a callback has no ring to answer, no greeting, no queue; those rules are
    not applicable rather than falsely kept.
    """
    placed = "a callback placed by the center"
    reached = record.customer_answered_at is not None
    out: Record = {rule: _r(NOT_APPLICABLE, reason=placed) for rule in
                   ("R1", "R2", "R3", "R4", "R5", "R6", "R7")}
    out["R8"] = score_agent_first(record, cfg)
    if reached:
        out["R9"] = score_r9(facts, cfg)
    else:
        out["R9"] = _r(NOT_APPLICABLE, reason="the customer was not reached",
                       first_hangup=facts.first_hangup)
    out["R10"] = _r(KEPT, logged_from=facts.created_at, ended_at=facts.ended_at,
                    followup_id=record.followup_id)
    return out


def score_agent_first(record: CallbackRecord, cfg: CallFlowConfig) -> dict[str, Any]:
    """Kept when the customer was reached with the agent already on the line, line in hand."""
    evidence: dict[str, Any] = {
        "followup_id": record.followup_id, "agent": record.agent,
        "agent_answered_at": record.agent_answered_at,
        "customer_dialled_at": record.customer_dialled_at,
        "customer_answered_at": record.customer_answered_at,
        "opening_line": record.opening_line, "outcome": record.outcome,
        "not_connected_because": record.reason,
        "promises": list(record.promises),
    }
    if record.customer_dialled_at is not None and (
            record.agent_answered_at is None or record.customer_dialled_at < record.agent_answered_at):
        return _r(BROKEN, reason="the customer was dialled before the agent was on the line",
                  **evidence)
    if record.customer_answered_at is None:
        return _r(NOT_APPLICABLE, reason="the customer was not reached", **evidence)
    if record.agent_left_at is not None and record.agent_left_at <= record.customer_answered_at:
        return _r(BROKEN, reason="the agent was gone when the customer answered", **evidence)
    if cfg.company not in record.opening_line or record.agent not in record.opening_line:
        return _r(BROKEN, reason="the opening line does not name the agent and the company",
                  **evidence)
    return _r(KEPT, **evidence)


# -- the one transition table ----------------------------------------------------------

S = CallbackState
Handler = Callable[[CallbackEngine, Any], Commands]
_GONE = e.GONE_EVENTS  # the first of them counts (see EngineCore._repeat_of_gone)
_LIVE = (S.AGENT_RINGING, S.DIALING, S.CONNECTED, S.CLOSING, S.RELEASING)
_LEAVE = (e.LeaveRequested, e.EndCallRequested)
_WITH_AGENT = (S.DIALING, S.CONNECTED)
_SPOKEN = (S.CONNECTED, S.CLOSING, S.RELEASING)  # the customer was talked to: a promise may follow

_TABLE: dict[tuple[CallbackState, type[e.Event]], Handler] = {
    (S.AGENT_RINGING, e.StasisStart): CallbackEngine._on_agent_answered,
    (S.AGENT_RINGING, e.DialFailed): CallbackEngine._on_agent_not_reached,
    **{(S.AGENT_RINGING, g): CallbackEngine._on_agent_not_reached for g in _GONE},
    **{(S.AGENT_RINGING, r): CallbackEngine._on_cancel_ringing for r in _LEAVE},
    (S.DIALING, e.StasisStart): CallbackEngine._on_customer_answered,
    (S.DIALING, e.DialFailed): CallbackEngine._on_dialing_gone,
    **{(S.DIALING, g): CallbackEngine._on_dialing_gone for g in _GONE},
    **{(S.DIALING, r): CallbackEngine._on_leave_dialing for r in _LEAVE},
    (S.DIALING, e.PlaybackFinished): CallbackEngine._on_agent_prompt_end,
    **{(S.CONNECTED, g): CallbackEngine._on_hangup_connected for g in _GONE},
    **{(S.CONNECTED, r): CallbackEngine._on_leave_connected for r in _LEAVE},
    (S.CONNECTED, e.ResumeRequested): CallbackEngine._on_resume_connected,
    (S.CONNECTED, e.PlaybackFinished): CallbackEngine._on_connected_prompt_end,
    **{(s, e.FollowUpPromised): CallbackEngine._on_promise for s in _SPOKEN},
    **{(s, e.ChannelDtmfReceived): CallbackEngine._on_dtmf for s in _WITH_AGENT},
    (S.CLOSING, e.PlaybackFinished): CallbackEngine._on_closing_prompt_end,
    (S.CLOSING, e.ChannelDtmfReceived): CallbackEngine._on_closing_activity,
    **{(S.CLOSING, g): CallbackEngine._on_customer_gone_closing for g in _GONE},
    **{(S.RELEASING, g): CallbackEngine._on_released for g in _GONE},
    **{(s, e.NoteAdded): CallbackEngine._on_note for s in _LIVE},
    **{(s, e.CallerInfoUpdated): CallbackEngine._on_caller_info for s in _LIVE},
}

# Timers by (state, name); a timer firing in a state not listed is ignored.
_TIMERS: dict[tuple[CallbackState, str], Handler] = {
    (S.AGENT_RINGING, AGENT_RING): CallbackEngine._on_agent_ring_timeout,
    (S.DIALING, CUSTOMER_RING): CallbackEngine._on_customer_ring_timeout,
    (S.CONNECTED, PROMPT): CallbackEngine._on_connected_prompt_end,
    **{(s, KEYS): CallbackEngine._on_keys_timeout for s in _WITH_AGENT},
    (S.CLOSING, PROMPT): CallbackEngine._on_closing_prompt_end,
    (S.CLOSING, IDLE): CallbackEngine._on_idle,
    (S.RELEASING, RELEASE_CONFIRM): CallbackEngine._on_released,
}
