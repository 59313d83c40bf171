"""Holds (R4, R7): a reason, an announced limit, never silence, never without end.

How a hold goes: the caller leaves the bridge (the agent stays in it, their
keys still heard) and hears ``hold-announce-<limit>`` ("请您稍等一分钟"), then
music, with ``hold-reassure`` ("仍在为您查询，请您稍候") every
``reassure_every_seconds``. ``agent_alert_before_seconds`` before the limit
the agent hears a tone and the panel counts down. At the limit the caller
is asked (``hold-limit-ask``): key 1 starts a new period (announced again:
the caller always hears how long), key 2 or no key within the grace period
puts them back with the agent at once, with ``hold-return``. So a caller is
held at most limit + question + grace per period, and only with consent
beyond one period.

A warm transfer holds the caller with this same machinery (``transfer.py``
overrides what "back with the agent" means while a transfer is under way).
"""

from __future__ import annotations

from callflow import events as e
from callflow.core import (
    AGENT_TONE,
    HOLD_ALERT,
    HOLD_GRACE,
    HOLD_LIMIT,
    HOLD_REASSURE,
    PROMPT,
    CallState,
    Commands,
    EngineCore,
    channel_of,
)
from callflow.facts import HoldRecord, Joining

DEFAULT_HOLD_REASON = "查询相关信息"  # the handbook's: "我需要查询相关信息，请您稍等一分钟好吗？"
HOLD_TIMERS = (HOLD_LIMIT, HOLD_ALERT, HOLD_REASSURE, HOLD_GRACE, PROMPT)
S = CallState


class HoldFlow(EngineCore):
    """The hold part of a call's engine."""

    # -- starting ---------------------------------------------------------

    def _on_hold_requested(self, ev: e.HoldRequested) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the agent talking with the caller can hold", "hold-refused")
        hold = self.config.hold
        limit = ev.limit_seconds or hold.default_limit_seconds
        if not hold.is_allowed(limit):
            return self._refuse(
                ev, f"hold limit {limit:g} s is not allowed: a multiple of 30 s from 30 s to "
                    f"{hold.max_limit_seconds} s", "hold-refused",
                limit_seconds=limit, allowed=list(hold.allowed_limits()))
        return self._start_hold(ev.at, reason=ev.reason.strip() or DEFAULT_HOLD_REASON,
                                limit=limit, for_transfer=False)

    def _start_hold(self, at: float, *, reason: str, limit: float, for_transfer: bool) -> Commands:
        agent = self.agent or self.facts.agent or ""
        record = HoldRecord(agent=agent, reason=reason, limit_seconds=limit, started_at=at,
                            for_transfer=for_transfer)
        out = [*self._unbridge(self.facts.caller_channel), *self._stop_caller_audio(at)]
        self._hold = record
        self.facts.holds.append(record)
        out.append(self._log(at, "hold-started", agent=agent, reason=reason, limit_seconds=limit,
                             for_transfer=for_transfer))
        out += self._notify(self.agent, "hold", reason=reason, limit_seconds=limit,
                            ends_at=at + limit, for_transfer=for_transfer)
        return out + self._start_period(at)

    def _start_period(self, at: float) -> Commands:
        """A limit period starts: the caller hears how long, then music; the limit runs."""
        hold = self._hold
        assert hold is not None
        cfg = self.config.hold
        hold.periods.append(at)
        self._ask_started_at = None
        self._ask_allowance = None
        out = [*self._goto(S.HOLD),
               *self._play(at, (cfg.announce_prompt(hold.limit_seconds),), "hold-announce"),
               self._timer(HOLD_LIMIT, at + hold.limit_seconds),
               self._timer(HOLD_REASSURE, at + cfg.reassure_every_seconds)]
        if 0 < cfg.agent_alert_before_seconds < hold.limit_seconds:
            out.append(self._timer(HOLD_ALERT, at + hold.limit_seconds - cfg.agent_alert_before_seconds))
        return out

    def _resume_hold(self, at: float, *, reason: str, limit: float, started_at: float,
                     period_at: float) -> Commands:
        """A hold taken back after a controller restart: its reason, announced limit and deadline
        are the ones the caller heard, and its timers run to the same moments (R4).

        The caller hears music again at once (a reassurance or the announcement
        may have been cut by the restart); the next reassurance keeps its
        interval from the period's start; a deadline already passed asks the
        caller at once. The agent's panel is told the same deadline.
        """
        cfg = self.config.hold
        agent = self.agent or self.facts.agent or ""
        record = HoldRecord(agent=agent, reason=reason, limit_seconds=limit, started_at=started_at)
        record.periods.append(period_at)
        self._hold = record
        self.facts.holds.append(record)
        self.state = S.HOLD
        deadline = period_at + limit
        every = cfg.reassure_every_seconds
        beats = int(max(0.0, at - period_at) // every) + 1 if every > 0 else 1
        out = [self._log(at, "hold-resumed", agent=agent, reason=reason, limit_seconds=limit,
                         period_at=period_at, deadline=round(deadline, 3)),
               *self._notify(self.agent, "hold", reason=reason, limit_seconds=limit,
                             ends_at=deadline, for_transfer=False),
               *self._start_music(at),
               self._timer(HOLD_LIMIT, max(at, deadline)),
               self._timer(HOLD_REASSURE, max(at, period_at + beats * every))]
        alert_at = deadline - cfg.agent_alert_before_seconds
        if 0 < cfg.agent_alert_before_seconds < limit and alert_at > at:
            out.append(self._timer(HOLD_ALERT, alert_at))
        return out

    # -- while held -------------------------------------------------------

    def _on_hold_prompt_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        purpose = self._playback_purpose
        out = self._prompt_finished(ev.at)
        if purpose == "hold-announce":
            out.append(self._log(ev.at, "hold-announced", result=result))
        return out + self._start_music(ev.at)

    def _on_reassure_timer(self, ev: e.TimerFired) -> Commands:
        hold = self._hold
        assert hold is not None
        again = self._timer(HOLD_REASSURE, ev.at + self.config.hold.reassure_every_seconds)
        if self._playback is not None:
            return [again]  # a prompt is still playing: the caller is not alone
        hold.reassurances += 1
        return [*self._stop_caller_audio(ev.at), *self._play(ev.at, ("hold-reassure",), "hold-reassure"),
                again, self._log(ev.at, "hold-reassured", count=hold.reassurances)]

    def _alert_agent(self, at: float, seconds_left: float) -> Commands:
        """A short tone on the holding agent's phone and a countdown on their panel."""
        hold = self._hold
        assert hold is not None
        hold.agent_alerted_at.append(at)
        out: Commands = []
        if self._offer is not None and self.agent is not None:
            out.append(self._play_to(self._offer.leg, (AGENT_TONE,)))
        out += self._notify(self.agent, "hold-countdown", seconds_left=seconds_left,
                            ends_at=at + seconds_left)
        return out + [self._log(at, "hold-agent-alerted", seconds_left=seconds_left)]

    def _on_hold_alert(self, ev: e.TimerFired) -> Commands:
        return self._alert_agent(ev.at, self.config.hold.agent_alert_before_seconds)

    def _on_hold_limit(self, ev: e.TimerFired) -> Commands:
        hold = self._hold
        assert hold is not None
        hold.limit_reached_at.append(ev.at)
        out = [*self._cancel(HOLD_REASSURE, HOLD_ALERT), *self._stop_caller_audio(ev.at),
               self._log(ev.at, "hold-limit-reached", limit_seconds=hold.limit_seconds),
               *self._alert_agent(ev.at, 0.0), *self._goto(S.HOLD_ASK)]
        self._ask_started_at = ev.at
        return out + self._play(ev.at, ("hold-limit-ask",), "hold-ask")

    def _on_ask_prompt_end(self, ev: e.Event) -> Commands:
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        if self._ask_started_at is not None:
            self._ask_allowance = ev.at - self._ask_started_at
        return [*self._prompt_finished(ev.at), *self._start_music(ev.at),
                self._timer(HOLD_GRACE, ev.at + self.config.hold.limit_grace_seconds)]

    def _on_ask_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        """The caller's answer at the limit: 1 waits another limit (consent logged), 2 goes back."""
        if ev.digit == "1":
            hold = self._hold
            assert hold is not None
            self._close_period(ev.at)
            hold.extended_at.append(ev.at)
            return [*self._cancel(HOLD_GRACE), *self._stop_caller_audio(ev.at),
                    self._log(ev.at, "hold-extended", consent="caller-key-1",
                              limit_seconds=hold.limit_seconds),
                    *self._notify(self.agent, "hold", reason=hold.reason,
                                  limit_seconds=hold.limit_seconds,
                                  ends_at=ev.at + hold.limit_seconds, extended=True),
                    *self._start_period(ev.at)]
        if ev.digit == "2":
            return self._return_from_hold(ev.at, "returned-by-caller")
        return []

    def _on_hold_grace(self, ev: e.TimerFired) -> Commands:
        return self._return_from_hold(ev.at, "returned-no-answer")

    # -- ending -----------------------------------------------------------

    def _close_period(self, at: float) -> None:
        """Score the period that ends now: how far past limit + question + grace it went."""
        hold = self._hold
        assert hold is not None
        allowance = self._ask_allowance
        if allowance is None:
            allowance = 0.0 if self._ask_started_at is None else at - self._ask_started_at
        length = at - hold.periods[-1]
        overrun = round(length - hold.limit_seconds - self.config.hold.limit_grace_seconds - allowance, 3)
        if hold.longest_overrun_seconds is None or overrun > hold.longest_overrun_seconds:
            hold.longest_overrun_seconds = overrun
        hold.limit_kept = hold.longest_overrun_seconds <= 0.001

    def _end_hold(self, at: float, outcome: str, *, keep_music: bool = False) -> Commands:
        """The hold is over; ``keep_music`` when the caller goes back into a bridge (see ``_join``)."""
        hold = self._hold
        if hold is None:
            return []
        self._close_period(at)
        out = [*self._cancel(*HOLD_TIMERS), *self._stop_caller_audio(at, keep_music=keep_music)]
        hold.ended_at = at
        hold.outcome = outcome
        self._hold = None
        out.append(self._log(at, "hold-ended", outcome=outcome, seconds=hold.seconds,
                             reason=hold.reason, limit_seconds=hold.limit_seconds,
                             periods=len(hold.periods), reassurances=hold.reassurances,
                             limit_kept=hold.limit_kept, silent_seconds=hold.silent_seconds))
        return out + self._notify(hold.agent or None, "hold-ended", outcome=outcome)

    def _back_to_agent(self, at: float, prompt: str | None) -> Commands:
        """The caller talks with their agent again, at once; an apology plays to them if due.

        The music goes on until caller and agent are both really in the
        bridge (``_joined`` "resume"), so a slow addChannel is never silence.
        """
        offer = self._offer
        assert offer is not None
        caller = self.facts.caller_channel
        out = [*self._music_until_joined(at),
               *self._bridge_in(at, caller, offer.leg, agents=(offer.leg,)), *self._goto(S.CONNECTED),
               self._log(at, "back-with-agent", agent=offer.agent, apology=prompt)]
        if prompt is not None:
            out.append(self._play_to(caller, (f"sound:liyi/{prompt}",)))
        return out + self._notify(offer.agent, "connected") + self._join(at, "resume", caller, offer.leg)

    def _joined(self, at: float, joining: Joining) -> Commands:
        if joining.purpose != "resume":
            return super()._joined(at, joining)
        out = self._stop_music(at) if self._hold is None else []
        self._heard(at, "agent")
        return out

    def _join_failed(self, at: float, joining: Joining, channel: str, why: str) -> Commands:
        if joining.purpose != "resume":
            return super()._join_failed(at, joining, channel, why)
        # whoever is missing hangs up (its StasisEnd follows): talk over no music meanwhile
        return self._stop_music(at) if self._hold is None else []

    def _return_from_hold(self, at: float, outcome: str) -> Commands:
        """Key 2 or no answer at the limit: back with the agent, with an apology."""
        return [*self._end_hold(at, outcome, keep_music=True), *self._back_to_agent(at, "hold-return")]

    def _on_resume(self, ev: e.ResumeRequested) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the holding agent can resume")
        return [*self._end_hold(ev.at, "resumed", keep_music=True), *self._back_to_agent(ev.at, None)]

    def _on_leave(self, ev: e.LeaveRequested) -> Commands:
        """The agent ends the call from the panel or ``*9``: closing prompts, line open (R8, R9)."""
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the agent talking with the caller can leave the call")
        if self._transfer is not None:
            return self._refuse(ev, "a transfer is under way: complete or cancel it first")
        out = self._end_hold(ev.at, "closing")
        self.facts.first_hangup = "agent"
        self.facts.agent_left_at = ev.at
        return [*out, *self._let_agent_go(hang_up=True, outcome="completed"),
                self._log(ev.at, "agent-left", agent=ev.agent, via="request"),
                *self._start_closing(ev.at, reason="agent-left")]

    def _agent_gone_on_hold(self, at: float) -> Commands:
        """The holding agent hung up: the caller is not left alone — apology, queued again."""
        agent = self.agent
        return [*self._end_hold(at, "agent-left"), *self._let_agent_go(hang_up=False, outcome="left"),
                self._log(at, "agent-left-during-hold", agent=agent),
                *self._requeue(at, why="agent-left-during-hold")]

    def _caller_gone_on_hold(self, at: float) -> Commands:
        self.facts.first_hangup = "caller"
        state = self.state.value
        return [*self._end_hold(at, "caller-hung-up"), *self._end_transfer_for_caller(at),
                *self._let_agent_go(hang_up=True, outcome="completed"),
                self._log(at, "caller-hung-up", while_state=state),
                *self._end(at, "completed")]

    def _end_transfer_for_caller(self, at: float) -> Commands:
        """Overridden by the transfer flow: release the target when the caller leaves."""
        return []

    def _on_hangup_on_hold(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if self._is_caller(channel):
            return self._caller_gone_on_hold(ev.at)
        if self._is_leg(channel):
            return self._agent_gone_on_hold(ev.at)
        return []

    def _on_requeue_prompt_end(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), self._log(ev.at, "requeue-apology-played", result=result),
                *self._queue(ev.at)]

    def _on_caller_gone_requeue(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return []
        self.facts.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state=self.state.value),
                *self._end(ev.at, "abandoned-waiting")]

