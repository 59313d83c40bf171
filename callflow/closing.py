"""Closing well and keeping promises (R8), with the caller hanging up first (R9).

When the agent ends the conversation from the panel, the caller may first
be asked "请问您还有其他问题吗？" (if the agent chooses; the agent stays on the
line to hear the answer), then hears "感谢您的来电，欢迎您随时来电。". The agent
stays in the call until the caller hangs up — the etiquette is that the
customer puts the phone down first — and is released only if the caller
stays silent on the line long after the thanks (a phone left off the hook);
the caller's line itself stays open until they hang up or the long idle
release (R9's one exception).

A promise ("三个工作日后给您答复") becomes a follow-up whose due date is
counted in working days on the center's calendar, owned by the agent.
"""

from __future__ import annotations

from callflow import commands as c
from callflow import events as e
from callflow.config import CLOSING_MORE_PROMPT
from callflow.core import AGENT_RELEASE, CallState, Commands, channel_of
from callflow.waiting import QueueWaiting

S = CallState
#: After the thanks, how long the agent waits for the caller to hang up before being freed.
AGENT_WAIT_AFTER_THANKS_SECONDS = 20.0


class ClosingFlow(QueueWaiting):
    """Ending the conversation from the panel, and promises made to the caller."""

    def closing_view(self) -> dict[str, object] | None:
        """What the panel shows while the caller is being closed (no effect on the call)."""
        if self.state is S.CLOSE_ASK:
            return {"stage": "asked", "asked_at": self.facts.closing_question_at}
        if self.state is S.CLOSING and self._offer is not None:
            return {"stage": "thanked"}
        return None

    def _on_end_call(self, ev: e.EndCallRequested) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the agent talking with the caller can end the call")
        if self._transfer is not None:
            return self._refuse(ev, "a transfer is under way: complete or cancel it first")
        if ev.ask_more and self.state is S.CONNECTED:
            self.facts.closing_question_at = ev.at
            return [*self._goto(S.CLOSE_ASK),
                    self._play_to(self.facts.caller_channel, (f"sound:liyi/{CLOSING_MORE_PROMPT}",)),
                    self._log(ev.at, "closing-question", agent=ev.agent, prompt=CLOSING_MORE_PROMPT),
                    *self._notify(ev.agent, "closing", stage="asked")]
        return [self._log(ev.at, "agent-ended-call", agent=ev.agent,
                          asked_more=self.facts.closing_question_at is not None),
                *self._start_closing(ev.at, reason="agent-ended"),
                *self._notify(ev.agent, "closing", stage="thanked")]

    def _on_more_questions(self, ev: e.ResumeRequested) -> Commands:
        """The caller had something more: back to the conversation."""
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the agent talking with the caller can do this")
        return [*self._goto(S.CONNECTED), self._log(ev.at, "closing-question-more", agent=ev.agent)]

    def _on_closing_prompt_end_agent(self, ev: e.Event) -> Commands:
        mine, result = self._prompt_done(ev)
        if not mine:
            return []
        out = [*self._prompt_finished(ev.at), self._log(ev.at, "closing-played", result=result)]
        if self._offer is not None and self.agent is not None:
            out.append(self._timer(AGENT_RELEASE, ev.at + AGENT_WAIT_AFTER_THANKS_SECONDS))
        return out

    def _on_agent_wait_over(self, ev: e.TimerFired) -> Commands:
        """The caller stays silent after the thanks: free the agent, keep the caller's line open."""
        agent = self.agent
        if self.facts.first_hangup is None:
            self.facts.first_hangup = "agent"  # the agent's side ended first; the caller's line stays
        return [*self._let_agent_go(hang_up=True, outcome="completed"),
                self._log(ev.at, "agent-released-after-closing", agent=agent,
                          waited_seconds=AGENT_WAIT_AFTER_THANKS_SECONDS)]

    def _on_leave_in_closing(self, ev: e.LeaveRequested) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._stray(ev)
        if self.facts.first_hangup is None:
            self.facts.first_hangup = "agent"
        return [*self._cancel(AGENT_RELEASE), *self._let_agent_go(hang_up=True, outcome="completed"),
                self._log(ev.at, "agent-left-after-closing", agent=ev.agent, via="request")]

    def _on_hangup_closing(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if self._is_leg(channel):  # the agent put the phone down before the caller
            if self.facts.first_hangup is None:
                self.facts.first_hangup = "agent"
            agent = self.agent
            return [*self._cancel(AGENT_RELEASE), *self._let_agent_go(hang_up=False, outcome="completed"),
                    self._log(ev.at, "agent-hung-up-after-closing", agent=agent)]
        if not self._is_caller(channel):
            return []
        return [*self._let_agent_go(hang_up=True, outcome="completed"),
                *self._on_caller_gone_closing(ev)]

    def _on_caller_gone_closing(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return []
        f = self.facts
        if f.first_hangup is None:
            f.first_hangup = "caller"
        outcome = "after-hours" if self._closed_flow else "completed"
        return [self._log(ev.at, "caller-hung-up", while_state="closing"), *self._end(ev.at, outcome)]

    # -- promises (R8) ----------------------------------------------------------

    def _on_promise(self, ev: e.FollowUpPromised) -> Commands:
        f = self.facts
        if ev.agent not in f.agents_talked:
            return self._refuse(ev, "only an agent who talked with the caller can promise a reply")
        text = ev.text.strip()
        limit = self.config.followups.max_working_days
        days = ev.working_days or self.config.followups.promise_working_days
        if not text:
            return self._refuse(ev, "say what was promised")
        if not 1 <= days <= limit:
            return self._refuse(ev, f"a reply time must be 1..{limit} working days")
        due = self.config.due_date(ev.at, days)
        self._followups += 1
        followup_id = f"{self.call_id}-f{self._followups}"
        f.promises.append({"followup_id": followup_id, "text": text, "due": due.isoformat(),
                           "working_days": days, "owner": ev.agent, "at": ev.at})
        return [c.RecordFollowUp(followup_id=followup_id, kind="promise", text=text,
                                 due=due.isoformat(), owner=ev.agent, number=f.caller_number,
                                 created_at=ev.at, queue=self._queue_name),
                self._log(ev.at, "followup-promised", followup_id=followup_id, agent=ev.agent,
                          text=text, due=due.isoformat(), working_days=days),
                *self._notify(ev.agent, "followup", followup_id=followup_id, due=due.isoformat(),
                              text=text, working_days=days)]
