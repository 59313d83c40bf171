"""Warm transfers (R6): consent, hold, a target who answered and accepted — or back, never dropped.

How a transfer goes:
1. ``TransferRequested`` (panel, or ``*2``/``*3`` keys): the caller leaves the
   bridge and hears ``transfer-consent``; key 1 or the agent's ``ConsentGiven``
   agrees; key 2 or no key within ``consent_timeout_seconds`` keeps the caller
   with the first agent ("consent refused"). No consent, no transfer.
2. The caller is held under R4 with the default limit (``hold.py``) while
   the roster is asked for the target (``RequestAgent(only=...)``) and the
   target's phone rings for at most ``agent_rings`` rings.
3. When the target answers: an agent target joins the first agent in the
   bridge (consultation, the caller not there) and accepts from the panel
   (``TargetAnswered``) or with key 1; a department's agent hears
   ``transfer-announce`` and accepts with key 1. Key 2, ``accepted=False`` or
   no acceptance within ``accept_timeout_seconds`` declines.
4. Only then is the caller bridged with the target — for an agent target
   when the first agent completes (or hangs up after the acceptance), for a
   department at acceptance. A prompt still playing to the target is stopped
   first (Asterisk adds a channel to a bridge only when its prompt ends), the
   caller keeps their hold music, and the handoff counts only once Asterisk
   reports both in the bridge (ChannelEnteredBridge): then the music stops,
   the hold ends, the first agent's leg is hung up and the target's panel
   shows "很抱歉让您久等了". A target who cannot be put in the bridge sends
   the caller back to the first agent, who is still on the line.
5. Anything else (no answer, declined, target hung up, cancelled, the caller
   chose to stop waiting at the hold limit) brings the caller back to the
   first agent with ``transfer-failed`` — or, if the first agent has left, to
   the queue with ``requeue-apology``. A caller who hangs up releases the
   target's leg.
"""

from __future__ import annotations

from callflow import commands as c
from callflow import events as e
from callflow.core import (
    CONSENT_WAIT,
    HOLD_ALERT,
    HOLD_GRACE,
    HOLD_LIMIT,
    HOLD_REASSURE,
    TARGET_ACCEPT,
    TARGET_RING,
    CallState,
    Commands,
    channel_of,
)
from callflow.facts import AgentOffer, Joining, TransferRecord
from callflow.hold import HoldFlow

TRANSFER_TIMERS = (CONSENT_WAIT, TARGET_RING, TARGET_ACCEPT)
TARGET_SCRIPT = "很抱歉让您久等了"
S = CallState

# transfer phases (while a TransferRecord is open)
CONSENT = "consent"
REQUESTING = "requesting"  # asked the roster for the target
RINGING = "ringing"
ANSWERED = "answered"  # a person is on the target leg, not yet accepted
ACCEPTED = "accepted"
HANDOFF = "handoff"  # caller and target put in the bridge, not both seen there yet
_LEG_UP = (RINGING, ANSWERED, ACCEPTED, HANDOFF)



class TransferFlow(HoldFlow):
    """The warm-transfer part of a call's engine."""

    _candidates: tuple[str, ...] = ()

    # -- 1. request and consent ---------------------------------------------

    def _on_transfer_requested(self, ev: e.TransferRequested) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the agent talking with the caller can transfer",
                                "transfer-refused")
        target = ev.target.strip()
        department = None
        if target.startswith("dept:"):
            department = self.config.department(target.removeprefix("dept:"))
            if department is None:
                return self._refuse(ev, f"unknown department {target!r}", "transfer-refused",
                                    target=target)
            candidates = tuple(a for a in department.agents if a != ev.agent)
            target = f"dept:{department.name}"
        else:
            known = {a.name for a in self.config.agents}
            if not target or target == ev.agent or (known and target not in known):
                return self._refuse(ev, f"unknown transfer target {target!r}", "transfer-refused",
                                    target=target)
            candidates = (target,)
        if not candidates:
            return self._refuse(ev, f"no other agent in {target!r}", "transfer-refused", target=target)
        record = TransferRecord(first_agent=ev.agent, target=target,
                                department=department.name if department else None,
                                reason=ev.reason, requested_at=ev.at)
        self._transfer = record
        self._transfer_phase = CONSENT
        self._candidates = candidates
        self.facts.transfers.append(record)
        out = [*self._unbridge(self.facts.caller_channel), *self._stop_caller_audio(ev.at),
               *self._goto(S.CONSENT),
               self._log(ev.at, "transfer-requested", agent=ev.agent, target=target,
                         reason=ev.reason),
               *self._notify(ev.agent, "transfer", phase="consent", target=target)]
        return out + self._play(ev.at, ("transfer-consent",), "consent")

    def _on_consent_prompt_end(self, ev: e.Event) -> Commands:
        mine, _ = self._prompt_done(ev)
        if not mine:
            return []
        return [*self._prompt_finished(ev.at), *self._start_music(ev.at),
                self._timer(CONSENT_WAIT, ev.at + self.config.transfer.consent_timeout_seconds)]

    def _on_consent_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if ev.digit == "1":
            return self._consented(ev.at, "caller-key")
        if ev.digit == "2":
            return self._consent_refused(ev.at, "refused")
        return []

    def _on_consent_given(self, ev: e.ConsentGiven) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the transferring agent can confirm consent")
        return self._consented(ev.at, "agent-confirmed")

    def _on_consent_timeout(self, ev: e.TimerFired) -> Commands:
        return self._consent_refused(ev.at, "no-answer")

    def _consented(self, at: float, how: str) -> Commands:
        record = self._transfer
        assert record is not None
        record.consent = how
        record.consent_at = at
        self._transfer_phase = REQUESTING
        out = [*self._cancel(CONSENT_WAIT), self._log(at, "transfer-consent", consent=how)]
        reason = f"转接: {record.reason}" if record.reason else "转接"
        out += self._start_hold(at, reason=reason, limit=self.config.hold.default_limit_seconds,
                                for_transfer=True)
        return out + [c.RequestAgent(skip=(record.first_agent,), only=self._candidates)]

    def _consent_refused(self, at: float, how: str) -> Commands:
        record = self._transfer
        assert record is not None
        record.consent = how
        out = [*self._stop_caller_audio(at), *self._transfer_over(at, "consent-refused", "first-agent")]
        return out + self._back_to_agent(at, None)

    def _on_consent_cancel(self, ev: e.AgentEvent) -> Commands:
        if not self._is_current_agent(ev.agent):
            return self._refuse(ev, "only the transferring agent can cancel")
        return [*self._stop_caller_audio(ev.at), *self._transfer_over(ev.at, "cancelled", "first-agent"),
                *self._back_to_agent(ev.at, None)]

    def _on_hangup_consent(self, ev: e.Event) -> Commands:
        channel = channel_of(ev)
        if self._is_caller(channel):
            return self._caller_gone_on_hold(ev.at)
        if self._is_leg(channel):  # the first agent left before the caller agreed
            agent = self.agent
            return [*self._transfer_over(ev.at, "first-agent-left", "queue", "requeue-apology"),
                    *self._let_agent_go(hang_up=False, outcome="left"),
                    self._log(ev.at, "agent-left-during-transfer", agent=agent),
                    *self._requeue(ev.at, why="agent-left-during-transfer")]
        return []

    # -- 2./3. the target ---------------------------------------------------

    def _on_target_picked(self, ev: e.AgentPicked) -> Commands:
        record = self._transfer
        if record is None or self._transfer_phase != REQUESTING:
            return self._stray(ev)
        self._target_legs += 1
        leg = f"{self.call_id}-t{self._target_legs}"
        record.target_agent = ev.agent
        record.leg = leg
        record.rung_at = ev.at
        self._transfer_phase = RINGING
        cfg = self.config
        return [
            *self._persist(),  # the target's leg on record: a restart releases it (recovery.py)
            c.Dial(channel_id=leg, endpoint=ev.endpoint, caller_id=_caller_id(self.facts.caller_number),
                   app_args=f"agent,{self.facts.caller_channel}"),
            self._timer(TARGET_RING, ev.at + cfg.cadence.ring_end(cfg.agent_rings)),
            self._log(ev.at, "transfer-ringing", target=ev.agent, leg=leg, rings=cfg.agent_rings),
            *self._notify(record.first_agent if self.agent else None, "transfer",
                          phase="ringing", target=ev.agent),
        ]

    def _on_target_none(self, ev: e.NoAgentFree) -> Commands:
        if self._transfer is None or self._transfer_phase != REQUESTING:
            return []
        return self._transfer_failed(ev.at, "target-unavailable")

    def _on_target_leg_answered(self, ev: e.StasisStart) -> Commands:
        record = self._transfer
        if record is None or ev.channel_id != record.leg or self._transfer_phase != RINGING:
            return self._stray(ev)
        record.answered_at = ev.at
        self._transfer_phase = ANSWERED
        target = record.target_agent
        out = [*self._cancel(TARGET_RING),
               self._timer(TARGET_ACCEPT, ev.at + self.config.transfer.accept_timeout_seconds),
               self._log(ev.at, "transfer-target-answered", target=target,
                         ring_seconds=record.ring_seconds)]
        if record.department is None and self._offer is not None:
            # consultation: the first agent and the target talk, the caller is not there
            out += self._bridge_in(ev.at, ev.channel_id, agents=(ev.channel_id,))
            out += self._notify(record.first_agent, "transfer", phase="consulting", target=target)
            if self.facts.name_recording:  # R3/R6: the target hears who is calling
                out.append(self._play_to(ev.channel_id, (f"recording:{self.facts.name_recording}",)))
        else:
            media: tuple[str, ...] = ("sound:liyi/transfer-announce",)
            if self.facts.name_recording:
                media += (f"recording:{self.facts.name_recording}",)
            out.append(self._play_to(ev.channel_id, media))
        f = self.facts
        return out + self._notify(target, "transfer-offer", caller_number=f.caller_number,
                                  caller_name=f.stated_name or f.caller_name, purpose=f.purpose,
                                  wanted=f.wanted, reason=record.reason, from_agent=record.first_agent,
                                  department=record.department)

    def _on_target_answered(self, ev: e.TargetAnswered) -> Commands:
        record = self._transfer
        if record is None or ev.agent != record.target_agent:
            return self._refuse(ev, "no transfer is waiting for you on this call")
        return self._target_says(ev.at, ev.accepted, "panel")

    def _on_target_key(self, ev: e.ChannelDtmfReceived) -> Commands:
        if ev.digit in ("1", "2"):
            return self._target_says(ev.at, ev.digit == "1", f"key-{ev.digit}")
        return []

    def _target_says(self, at: float, accepted: bool, how: str) -> Commands:
        record = self._transfer
        assert record is not None
        phase = self._transfer_phase
        if not accepted and phase in _LEG_UP:
            return self._transfer_failed(at, "declined")
        if not accepted or phase != ANSWERED:
            return [self._log(at, "transfer-accept-ignored", phase=phase, via=how)]
        record.accepted = True
        record.accepted_at = at
        self._transfer_phase = ACCEPTED
        out = [*self._cancel(TARGET_ACCEPT),
               self._log(at, "transfer-accepted", target=record.target_agent, via=how)]
        if record.department is not None or self._offer is None:
            return out + self._complete_transfer(at)
        return out + self._notify(record.first_agent, "transfer", phase="accepted",
                                  target=record.target_agent)

    def _on_target_ring_timeout(self, ev: e.TimerFired) -> Commands:
        return self._transfer_failed(ev.at, "no-answer")

    def _on_target_accept_timeout(self, ev: e.TimerFired) -> Commands:
        return self._transfer_failed(ev.at, "not-accepted")

    def _on_target_dial_failed(self, ev: e.DialFailed) -> Commands:
        record = self._transfer
        if record is None or ev.channel_id != record.leg or self._transfer_phase not in _LEG_UP:
            return []
        return self._transfer_failed(ev.at, "unreachable", hang_up_target=False)

    def _target_gone(self, ev: e.Event) -> Commands:
        phase = self._transfer_phase
        if phase == RINGING:
            outcome = "declined" if getattr(ev, "cause", 0) == 17 else "no-answer"
        else:
            outcome = "target-hung-up"
        return self._transfer_failed(ev.at, outcome, hang_up_target=False)

    # -- 4. handing over ---------------------------------------------------

    def _on_transfer_complete(self, ev: e.TransferCompleteRequested) -> Commands:
        record = self._transfer
        if record is None or not self._is_current_agent(ev.agent):
            return self._refuse(ev, "no transfer of yours is under way")
        if self._transfer_phase != ACCEPTED:
            return self._refuse(ev, "the target has not answered and accepted yet (R6.3)",
                                "transfer-complete-refused", phase=self._transfer_phase)
        return self._complete_transfer(ev.at)

    def _complete_transfer(self, at: float) -> Commands:
        """The caller goes to the target who accepted; handed over once both are really in.

        The target's announcement is stopped first (Asterisk would add the
        target only when it ended, trace 05 / issue 8), the first agent leaves
        the bridge, and the caller — still on hold, hearing music — joins the
        target. Only when Asterisk reports both in the bridge (``_handed_over``)
        does the music stop, the hold end and the first agent go; until then
        the first agent is still on the line to take the caller back.
        """
        record = self._transfer
        assert record is not None and record.leg is not None and record.target_agent is not None
        assert record.accepted  # R6.3: never hand over to a target who has not accepted
        out = self._cancel(*TRANSFER_TIMERS, HOLD_LIMIT, HOLD_ALERT, HOLD_REASSURE, HOLD_GRACE)
        out += self._music_until_joined(at)
        first_leg = self._offer.leg if self._offer is not None else None
        if first_leg is not None:
            out += self._unbridge(first_leg)
        record.handoff_requested_at = at
        if record.leg in self._present:
            record.target_in_bridge_at = at  # consultation: the target is in the bridge already
        self._transfer_phase = HANDOFF
        caller = self.facts.caller_channel
        out += self._bridge_in(at, caller, record.leg, agents=(record.leg,))
        out += self._goto(S.HANDOFF)
        out.append(self._log(at, "transfer-handing-over", target=record.target_agent, leg=record.leg))
        return out + self._join(at, "handoff", caller, record.leg)

    def _entered(self, at: float, channel: str) -> Commands:
        record = self._transfer
        if record is None or self._transfer_phase != HANDOFF:
            return super()._entered(at, channel)
        if self._is_caller(channel) and record.caller_in_bridge_at is None:
            record.caller_in_bridge_at = at
        elif channel == record.leg and record.target_in_bridge_at is None:
            record.target_in_bridge_at = at
        return []

    def _joined(self, at: float, joining: Joining) -> Commands:
        if joining.purpose != "handoff":
            return super()._joined(at, joining)
        return self._handed_over(at)

    def _handed_over(self, at: float) -> Commands:
        """Caller and target are both in the bridge: the music stops, the first agent goes (R6.4)."""
        record = self._transfer
        assert record is not None and record.leg is not None and record.target_agent is not None
        if self._music:
            record.caller_music_stopped_at = at
        out = self._end_hold(at, "transferred")
        self._heard(at, "agent")
        first_out = self._let_agent_go(hang_up=True, outcome="transferred")
        self._offer = AgentOffer(agent=record.target_agent, leg=record.leg,
                                 rung_at=record.rung_at or at, ended_at=record.answered_at,
                                 outcome="answered")
        f = self.facts
        f.agent = record.target_agent
        f.agents_talked.append(record.target_agent)
        self._keys.buffer = ""
        out += first_out
        record.handoff_at = at
        join_seconds = round(at - (record.handoff_requested_at or at), 3)
        out += self._transfer_over(at, "completed", "target")
        out += self._goto(S.CONNECTED)
        return out + [
            self._log(at, "transfer-completed", target=record.target_agent, leg=record.leg,
                      join_seconds=join_seconds),
            *self._notify(record.target_agent, "script", line=TARGET_SCRIPT,
                          caller_name=f.stated_name or f.caller_name, purpose=f.purpose),
        ]

    def _join_failed(self, at: float, joining: Joining, channel: str, why: str) -> Commands:
        if joining.purpose != "handoff":
            return super()._join_failed(at, joining, channel, why)
        if self._is_caller(channel) and why != "timeout":
            return self._caller_gone_on_hold(at)  # refused or bounced out: the caller left
        # the target could not be put with the caller: back to the first agent, never alone
        return self._transfer_failed(at, "handoff-failed")

    # -- 5. when it does not work ------------------------------------------

    def _transfer_failed(self, at: float, outcome: str, *, hang_up_target: bool = True,
                         apology: str = "transfer-failed", hold_outcome: str = "transfer-failed"
                         ) -> Commands:
        """Back to the first agent with an apology, or to the queue if they left — never dropped."""
        out = self._release_target(outcome, hang_up=hang_up_target)
        self._note_handoff_music(at)
        out += self._end_hold(at, hold_outcome, keep_music=self._offer is not None)
        if self._offer is not None:
            out += self._transfer_over(at, outcome, "first-agent", apology)
            return out + self._back_to_agent(at, apology)
        out += self._transfer_over(at, outcome, "queue", "requeue-apology")
        return out + self._requeue(at, why=f"transfer-{outcome}")

    def _release_target(self, outcome: str, *, hang_up: bool) -> Commands:
        record = self._transfer
        if record is None or record.leg is None or record.target_agent is None \
                or self._transfer_phase not in _LEG_UP:
            return []
        self._old_legs.add(record.leg)
        self._in_bridge.discard(record.leg)
        self._present.discard(record.leg)
        out: Commands = [c.Hangup(channel_id=record.leg)] if hang_up else []
        return out + [c.ReleaseAgent(agent=record.target_agent, outcome=f"transfer-{outcome}")]

    def _note_handoff_music(self, at: float) -> None:
        """A handoff that ends without the target: the caller's music, as evidence (R4, R6)."""
        record = self._transfer
        if record is not None and self._transfer_phase == HANDOFF and not self._music \
                and record.caller_music_stopped_at is None:
            record.caller_music_stopped_at = at

    def _transfer_over(self, at: float, outcome: str, returned_to: str | None,
                       apology: str | None = None) -> Commands:
        record = self._transfer
        if record is None:
            return []
        record.outcome = outcome
        record.ended_at = at
        record.caller_returned_to = returned_to
        record.apology = apology
        self._transfer = None
        self._transfer_phase = ""
        out = self._cancel(*TRANSFER_TIMERS)
        out.append(self._log(at, "transfer-ended", outcome=outcome, target=record.target or None,
                             target_agent=record.target_agent, consent=record.consent,
                             ring_seconds=record.ring_seconds, accepted=record.accepted,
                             handoff_at=record.handoff_at, caller_returned_to=returned_to,
                             caller_in_bridge_at=record.caller_in_bridge_at,
                             target_in_bridge_at=record.target_in_bridge_at,
                             caller_alone_seconds=record.caller_alone_seconds))
        return out + self._notify(record.first_agent, "transfer", phase="ended", outcome=outcome)

    # -- how the hold flow behaves while a transfer is under way --------------

    def _return_from_hold(self, at: float, outcome: str) -> Commands:
        if self._transfer is None:
            return super()._return_from_hold(at, outcome)
        return self._transfer_failed(at, "hold-limit", apology="hold-return", hold_outcome=outcome)

    def _on_resume(self, ev: e.ResumeRequested) -> Commands:
        if self._transfer is None:
            return super()._on_resume(ev)
        return self._on_transfer_cancel(ev)

    def _on_transfer_cancel(self, ev: e.AgentEvent) -> Commands:
        if self._transfer is None or not self._is_current_agent(ev.agent):
            return self._refuse(ev, "no transfer of yours is under way")
        return self._transfer_failed(ev.at, "cancelled")

    def _on_hangup_on_hold(self, ev: e.Event) -> Commands:
        record = self._transfer
        channel = channel_of(ev)
        if record is None or self._is_caller(channel):
            return super()._on_hangup_on_hold(ev)
        if channel == record.leg and self._transfer_phase in _LEG_UP:
            return self._target_gone(ev)
        if self._is_leg(channel):
            return self._first_agent_gone_in_transfer(ev.at)
        return []

    def _first_agent_gone_in_transfer(self, at: float) -> Commands:
        """Completed if the target accepted; a department transfer goes on; else back to the queue."""
        record = self._transfer
        assert record is not None
        agent = self.agent
        out: Commands = [self._log(at, "agent-left-during-transfer", agent=agent,
                                   phase=self._transfer_phase)]
        if self._transfer_phase == HANDOFF:  # the caller is on the way to the target already
            first = self._offer
            assert first is not None
            self._in_bridge.discard(first.leg)
            self._present.discard(first.leg)
            self._offer = None
            self._old_legs.add(first.leg)
            return out + [c.ReleaseAgent(agent=first.agent, outcome="transferred")]
        if self._transfer_phase == ACCEPTED:
            first = self._offer
            assert first is not None
            self._in_bridge.discard(first.leg)
            out += [c.ReleaseAgent(agent=first.agent, outcome="transferred")]
            self._offer = None
            self._old_legs.add(first.leg)
            return out + self._complete_transfer(at)
        out += self._let_agent_go(hang_up=False, outcome="left")
        if record.department is not None:  # the department's agent needs nobody to accept
            return out + self._drop_bridge()
        return out + self._transfer_failed(at, "first-agent-left")

    def _end_transfer_for_caller(self, at: float) -> Commands:
        if self._transfer is None:
            return []
        return [*self._release_target("caller-hung-up", hang_up=True),
                *self._transfer_over(at, "caller-hung-up", None)]


def _caller_id(number: str) -> str:
    """What the target's phone shows: the caller's number, never raw hostile text."""
    digits = "".join(ch for ch in number if ch.isdigit() or ch in "+*#")[:32]
    return f'"转接" <{digits or "unknown"}>'
