"""Waiting for an agent (R5): where the caller stands, and the callback offer.

While a caller waits they hear music, and every ``announce_every_seconds``
their place in line or the expected wait (the controller tells each call
its figures with every ``NoAgentFree``). After ``max_wait_seconds`` they are
offered a callback: 1 leaves a number — the one they are calling from, read
back digit by digit, or one they key in — and 2 (or no key) keeps them
waiting, in the same place. Nothing here ends a waiting call: a confirmed
callback closes with thanks and the line stays open until the caller hangs
up (R9). A confirmed callback becomes a follow-up (R8) due a configured
number of working days later.
"""

from __future__ import annotations

from callflow import commands as c
from callflow import events as e
from callflow.config import queue_ahead_prompt, queue_wait_prompt
from callflow.core import (
    AGENT_RETRY,
    AGENT_RING,
    CALLBACK_KEY,
    QUEUE_ANNOUNCE,
    QUEUE_MAX,
    CallState,
    Commands,
)
from callflow.steps import FlowSteps

S = CallState
MIN_NUMBER_DIGITS = 5  # shorter is not a phone number we could call back
MAX_NUMBER_DIGITS = 20


def callable_number(raw: str) -> str:
    """The digits of a caller id if they make a number we can dial back, else ""."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    return digits if MIN_NUMBER_DIGITS <= len(digits) <= MAX_NUMBER_DIGITS else ""


class QueueWaiting(FlowSteps):
    """The queue's announcements and the callback offer, number, read-back and confirmation."""

    # -- announcements ---------------------------------------------------------

    def _on_queue_figures(self, ev: e.NoAgentFree) -> Commands:
        """New figures for this caller; the first wait is announced at once, then at the interval."""
        if ev.ahead >= 0:
            self._ahead = ev.ahead
        if ev.expected_wait_seconds >= 0:
            self._expected_wait = ev.expected_wait_seconds
        q = self.config.queue_for(self._queue_name)
        if q.announce == "none" or self._told_in_line or self._ahead < 0:
            return []
        self.facts.announce_every_seconds = q.announce_every_seconds
        return self._announce(ev.at)

    def _on_announce_timer(self, ev: e.TimerFired) -> Commands:
        return self._announce(ev.at)

    def _announce(self, at: float) -> Commands:
        q = self.config.queue_for(self._queue_name)
        again = self._timer(QUEUE_ANNOUNCE, at + q.announce_every_seconds)
        if self._playback is not None:
            return [again]  # something is being said to the caller already
        prompts: list[str] = []
        ahead, expected = self._ahead, self._expected_wait
        if self.being_offered:
            # No figures yet, but an agent is being rung for them: they are next, and the
            # wait is the ring itself — under a minute (R5: told where they stand either way).
            ahead = 0 if ahead < 0 else ahead
            expected = 0.0 if expected < 0 else expected
        if q.announce in ("position", "both") and ahead >= 0:
            prompts.append(queue_ahead_prompt(ahead))
        if q.announce in ("wait", "both") and expected >= 0:
            prompts.append(queue_wait_prompt(expected))
        if not prompts:
            prompts.append("queue-continue")  # nothing known yet: "请您继续稍候", never silence
        self._told_in_line = True
        self.facts.queue_announcements.append((at, "+".join(prompts)))
        return [*self._stop_caller_audio(at), *self._play(at, tuple(prompts), "queue-announce"), again,
                self._log(at, "queue-announced", prompts=prompts, ahead=self._ahead,
                          expected_wait_seconds=round(self._expected_wait)
                          if self._expected_wait >= 0 else None)]

    def _on_queue_prompt_end(self, ev: e.Event) -> Commands:
        """An announcement (or "please keep waiting") is over: music again."""
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), *self._start_music(ev.at)]

    # -- the maximum wait: offer a callback -------------------------------------

    def _on_max_wait(self, ev: e.TimerFired) -> Commands:
        if self.being_offered:  # an agent's phone is ringing for them: the offer comes if it rings out
            self._callback_due = True
            return []
        return self._max_wait_reached(ev.at)

    def _after_unanswered(self, at: float) -> Commands:
        """An agent did not answer: the next agent, or the callback offer if the wait is over."""
        if self._callback_due:
            return self._max_wait_reached(at)
        return [self._request_agent()]

    def _max_wait_reached(self, at: float) -> Commands:
        self._callback_due = False
        waited = round(at - (self.facts.queued_at or at), 3)
        return [self._log(at, "queue-max-wait", waited_seconds=waited),
                *self._offer_callback(at, "queue", "callback-offer")]

    def _offer_callback(self, at: float, source: str, prompt: str) -> Commands:
        self._callback_from = source
        self._callback_digits = ""
        self.facts.callback_offers.append(at)
        out = [*self._cancel(AGENT_RETRY, QUEUE_ANNOUNCE, CALLBACK_KEY), *self._stop_caller_audio(at),
               *self._goto(S.CALLBACK_OFFER), *self._play(at, (prompt,), "callback-offer"),
               self._log(at, "callback-offered", source=source)]
        return out

    def _on_callback_prompt_end(self, ev: e.Event) -> Commands:
        """After the offer or the read-back: wait for the caller's key (never forever)."""
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        q = self.config.queue_for(self._queue_name)
        out = self._prompt_finished(ev.at)
        if self.state is S.CALLBACK_ENTER:
            return out + [self._timer(CALLBACK_KEY, ev.at + q.number_timeout_seconds)]
        out += self._start_music(ev.at) if self._callback_from == "queue" else []
        return out + [self._timer(CALLBACK_KEY, ev.at + q.offer_timeout_seconds)]

    def _on_offer_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if not self._is_caller(ev.channel_id) or ev.digit not in "12":
            return []
        out = [*self._cancel(CALLBACK_KEY), *self._stop_caller_audio(ev.at)]
        if ev.digit == "2":
            return out + self._callback_declined(ev.at, "key-2")
        self.facts.callback_choices.append((ev.at, "callback"))
        number = callable_number(self.facts.caller_number)
        out.append(self._log(ev.at, "callback-accepted", caller_id_usable=bool(number)))
        if number:
            self._callback_number = number
            self._callback_source = "caller-id"
            return out + self._read_back(ev.at)
        return out + self._ask_number(ev.at)

    def _on_offer_timeout(self, ev: e.TimerFired) -> Commands:
        return self._callback_declined(ev.at, "no-key")

    def _callback_declined(self, at: float, how: str) -> Commands:
        self.facts.callback_choices.append((at, f"wait:{how}"))
        out = [self._log(at, "callback-declined", how=how, source=self._callback_from)]
        return out + self._leave_callback(at, ("queue-continue",))

    def _leave_callback(self, at: float, prompts: tuple[str, ...]) -> Commands:
        """Back to where the offer came from: the same place in the queue, or the flow's next step."""
        out = self._stop_caller_audio(at)
        if self._callback_from == "flow":
            self._callback_from = ""
            return out + self._next_step(at)
        out += self._goto(S.OFFERING)
        out += self._play(at, prompts, "queue-continue")
        q = self.config.queue_for(self._queue_name)
        self._tried.clear()
        out.append(self._request_agent())
        if q.callback_offer:
            out.append(self._timer(QUEUE_MAX, at + q.max_wait_seconds))
        if q.announce != "none":
            out.append(self._timer(QUEUE_ANNOUNCE, at + q.announce_every_seconds))
        return out

    # -- the number: read back, or keyed in ----------------------------------------

    def _read_back(self, at: float) -> Commands:
        digits = tuple(f"digit-{d}" for d in self._callback_number)
        return [*self._goto(S.CALLBACK_CONFIRM),
                *self._play(at, ("callback-number-is", *digits, "callback-confirm"), "callback-confirm"),
                self._log(at, "callback-number-read-back", number=self._callback_number,
                          source=self._callback_source)]

    def _ask_number(self, at: float) -> Commands:
        self._callback_digits = ""
        return [*self._goto(S.CALLBACK_ENTER), *self._play(at, ("callback-enter",), "callback-enter")]

    def _on_confirm_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if not self._is_caller(ev.channel_id) or ev.digit not in "12":
            return []
        out = [*self._cancel(CALLBACK_KEY), *self._stop_caller_audio(ev.at)]
        if ev.digit == "2":
            self.facts.callback_choices.append((ev.at, "other-number"))
            return out + self._ask_number(ev.at)
        return out + self._callback_confirmed(ev.at)

    def _on_confirm_timeout(self, ev: e.TimerFired) -> Commands:
        """No confirmation: no callback is recorded on a number the caller did not confirm."""
        self.facts.callback_choices.append((ev.at, "unconfirmed"))
        return [self._log(ev.at, "callback-not-confirmed"),
                *self._leave_callback(ev.at, ("queue-continue",))]

    def _on_number_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if not self._is_caller(ev.channel_id):
            return []
        out: Commands = []
        if self._playback is not None:
            out += self._stop_caller_audio(ev.at)
        if ev.digit == "#" or (ev.digit.isdigit() and len(self._callback_digits) + 1 >= MAX_NUMBER_DIGITS):
            if ev.digit.isdigit():
                self._callback_digits += ev.digit
            return out + self._cancel(CALLBACK_KEY) + self._number_typed(ev.at)
        if ev.digit.isdigit():
            self._callback_digits += ev.digit
        q = self.config.queue_for(self._queue_name)
        return out + [self._timer(CALLBACK_KEY, ev.at + q.number_timeout_seconds)]

    def _on_number_timeout(self, ev: e.TimerFired) -> Commands:
        return self._number_typed(ev.at)

    def _number_typed(self, at: float) -> Commands:
        digits = self._callback_digits
        if len(digits) >= MIN_NUMBER_DIGITS:
            self._callback_number = digits
            self._callback_source = "keyed"
            return self._read_back(at)
        self.facts.callback_choices.append((at, "no-number"))
        return [self._log(at, "callback-no-number", digits=len(digits)),
                *self._leave_callback(at, ("callback-no-number", "queue-continue"))]

    def _callback_confirmed(self, at: float) -> Commands:
        f = self.facts
        days = self.config.followups.callback_working_days
        due = self.config.due_date(at, days)
        self._followups += 1
        followup_id = f"{self.call_id}-f{self._followups}"
        f.callback = {"number": self._callback_number, "source": self._callback_source,
                      "followup_id": followup_id, "due": due.isoformat(), "at": at,
                      "queue": self._queue_name if self._callback_from == "queue" else None}
        f.callback_choices.append((at, "confirmed"))
        if self._callback_from == "queue":
            f.queue_left_at = at
        out = [*self._cancel(QUEUE_MAX, QUEUE_ANNOUNCE, AGENT_RETRY, AGENT_RING),
               c.RecordFollowUp(followup_id=followup_id, kind="callback", text="来电者请求回电",
                                due=due.isoformat(), owner="", number=self._callback_number,
                                created_at=at, queue=self._queue_name),
               self._log(at, "callback-recorded", followup_id=followup_id,
                         number=self._callback_number, source=self._callback_source,
                         due=due.isoformat(), working_days=days)]
        self._callback_from = ""
        return out + self._start_closing(at, reason="callback", prompts=("callback-recorded",))
