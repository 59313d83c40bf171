"""Walking a call flow: the greeting, prompts, key menus and the recorded name.

The admin's flow (``callflow.flow``) is a graph of steps; this layer runs
one step at a time for the caller and moves on when the step is over. A
menu never ends the call: no key (or a key the menu does not have) repeats
the menu, then takes the default route. The recorded name (R3) is kept with
the call so a transfer target hears who is calling (R6).
"""

from __future__ import annotations

from callflow import commands as c
from callflow import events as e
from callflow import flow as fl
from callflow.core import MENU_WAIT, RECORD, CallState, Commands, channel_of
from callflow.transfer import TransferFlow

S = CallState
RECORD_MARGIN_SECONDS = 5.0  # Asterisk reports a recording's end soon after its maximum


class FlowSteps(TransferFlow):
    """The steps between the greeting and the queue (or the closing)."""

    def _choose_flow(self, at: float) -> None:
        self._flow = self.config.flow_for(at)
        self.facts.flow = self._flow.name
        self._closed_flow = self._flow.name == "closed"

    def _after_greeting(self, at: float) -> Commands:
        """Where the flow goes once its greeting has been said (R2 always comes first)."""
        first = self._flow.first()
        target = first.next if first.kind == fl.GREETING else first.name
        return self._run_step(at, target)

    def _run_step(self, at: float, name: str) -> Commands:
        step = self._flow.step(name)
        self._step = step
        self.facts.steps.append((at, name))
        out: Commands = [self._log(at, "flow-step", flow=self._flow.name, step=name, step_kind=step.kind)]
        kind = step.kind
        if kind in (fl.PLAY, fl.GREETING):
            prompt = step.prompt or self.config.greeting_for(at)
            return out + [*self._goto(S.STEP), *self._play(at, (prompt,), "step")]
        if kind == fl.MENU:
            self._menu_tries = 0
            return out + [*self._goto(S.MENU), *self._play(at, (step.prompt,), "menu")]
        if kind == fl.RECORD_NAME:
            return out + [*self._goto(S.NAME), *self._play(at, (step.prompt or fl.NAME_PROMPT,), "name-ask")]
        if kind == fl.QUEUE:
            self._queue_name = step.department
            if self.config.wait_prompt:
                return out + [*self._goto(S.WAIT_NOTICE),
                              *self._play(at, (self.config.wait_prompt,), "wait-notice")]
            return out + self._queue(at)
        if kind == fl.CALLBACK:
            return out + self._offer_callback(at, "flow", step.prompt or fl.CALLBACK_PROMPT)
        return out + self._start_closing(at, reason="after-hours" if self._closed_flow else "flow-end")

    def _next_step(self, at: float) -> Commands:
        step = self._step
        assert step is not None
        if step.next:
            return self._run_step(at, step.next)
        return self._start_closing(at, reason="after-hours" if self._closed_flow else "flow-end")

    # -- play ---------------------------------------------------------------

    def _on_step_prompt_end(self, ev: e.Event) -> Commands:
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), *self._next_step(ev.at)]

    # -- menu ---------------------------------------------------------------

    def _on_menu_prompt_end(self, ev: e.Event) -> Commands:
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        step = self._step
        assert step is not None
        return [*self._prompt_finished(ev.at), self._timer(MENU_WAIT, ev.at + step.timeout_seconds)]

    def _on_menu_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if not self._is_caller(ev.channel_id):
            return []
        step = self._step
        assert step is not None
        target = step.key_target(ev.digit)
        out = [*self._stop_caller_audio(ev.at), *self._cancel(MENU_WAIT)]
        if target is not None:
            self.facts.menu_choices.append({"at": ev.at, "step": step.name, "key": ev.digit,
                                            "to": target, "how": "key"})
            return out + [self._log(ev.at, "menu-choice", step=step.name, key=ev.digit, to=target),
                          *self._run_step(ev.at, target)]
        return out + self._menu_again(ev.at, "invalid", key=ev.digit)

    def _on_menu_no_input(self, ev: e.TimerFired) -> Commands:
        return self._menu_again(ev.at, "no-input")

    def _menu_again(self, at: float, why: str, key: str = "") -> Commands:
        """Say the menu again, or after the repeats take the default route — never hang up."""
        step = self._step
        assert step is not None
        self._menu_tries += 1
        if self._menu_tries > step.repeat:
            self.facts.menu_choices.append({"at": at, "step": step.name, "key": key,
                                            "to": step.default, "how": f"default-after-{why}"})
            return [self._log(at, "menu-default", step=step.name, why=why, to=step.default,
                              tries=self._menu_tries),
                    *self._run_step(at, step.default)]
        sorry = fl.MENU_INVALID_PROMPT if why == "invalid" else fl.MENU_NO_INPUT_PROMPT
        return [self._log(at, "menu-repeat", step=step.name, why=why, key=key, tries=self._menu_tries),
                *self._play(at, (sorry, step.prompt), "menu")]

    # -- the caller's name (R3) ----------------------------------------------

    def _on_name_prompt_end(self, ev: e.Event) -> Commands:
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        step = self._step
        assert step is not None
        name = f"{self.call_id}-name"
        return [*self._prompt_finished(ev.at), *self._goto(S.NAME_RECORDING),
                c.Record(channel_id=self.facts.caller_channel, name=name, max_seconds=step.max_seconds),
                self._timer(RECORD, ev.at + step.max_seconds + RECORD_MARGIN_SECONDS),
                self._log(ev.at, "name-recording", recording=name, max_seconds=step.max_seconds)]

    def _on_name_recorded(self, ev: e.RecordingFinished) -> Commands:
        if ev.recording_name != f"{self.call_id}-name":
            return []
        f = self.facts
        f.name_recording = ev.recording_name
        f.name_recording_seconds = ev.duration_seconds
        return [*self._cancel(RECORD),
                self._log(ev.at, "name-recorded", recording=ev.recording_name,
                          seconds=ev.duration_seconds),
                *self._next_step(ev.at)]

    def _on_name_not_recorded(self, ev: e.Event) -> Commands:
        if isinstance(ev, e.RecordingFailed) and ev.recording_name != f"{self.call_id}-name":
            return []
        why = ev.cause if isinstance(ev, e.RecordingFailed) else "no-end-reported"
        return [*self._cancel(RECORD), self._log(ev.at, "name-not-recorded", why=why),
                *self._next_step(ev.at)]

    # -- the caller leaves during the flow -----------------------------------

    def _on_caller_gone_flow(self, ev: e.Event) -> Commands:
        if not self._is_caller(channel_of(ev)):
            return []
        self.facts.first_hangup = "caller"
        return [self._log(ev.at, "caller-hung-up", while_state=self.state.value),
                *self._end(ev.at, f"abandoned-{self.state.value}")]

    # provided by the queue layer
    def _offer_callback(self, at: float, source: str, prompt: str) -> Commands:
        raise NotImplementedError
