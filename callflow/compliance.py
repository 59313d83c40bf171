"""Scoring a finished call against the rulebook (R12).

Each rule gets ``kept``, ``broken`` or ``not_applicable`` with the evidence
that decided it, so an admin can see *why*, not only a rate. Rules whose
parts cannot be seen by the engine are left to others: an R8 promise that
later goes overdue is marked broken by the call log when it is noticed
(``db.CallStore.flag_overdue``); R11 (calm under pressure) has no evidence a
machine can judge and is not scored.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from callflow.config import CallFlowConfig
from callflow.facts import CallFacts, HoldRecord, TransferRecord

KEPT = "kept"
BROKEN = "broken"
NOT_APPLICABLE = "not_applicable"

Record = dict[str, dict[str, Any]]


def _r(status: str, **evidence: Any) -> dict[str, Any]:
    return {"status": status, "evidence": evidence}


def _secs(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def score(facts: CallFacts, cfg: CallFlowConfig) -> Record:
    record = _score_all(facts, cfg)
    if facts.recovered_at is not None:
        record = _unseen_before_recovery(record, facts.recovered_at, _seen_after(facts))
    return record


def _seen_after(facts: CallFacts) -> tuple[str, ...]:
    """Start-of-call rules a resumed call lived through after the restart, so they can be judged:
    R1 when the answer came after it (a call resumed while ringing), R2 when the greeting was
    (re)played after it."""
    at = facts.recovered_at
    assert at is not None
    seen: list[str] = []
    if facts.answered_at is not None and facts.answered_at >= at:
        seen.append("R1")
    if facts.greeting_started_at is not None and facts.greeting_started_at >= at:
        seen.append("R2")
    return tuple(seen)


# Rules whose evidence lies at the start of a call: a controller that took the call back
# after a restart never saw it, and must not claim they were kept or broken.
UNSEEN_WHEN_RECOVERED = ("R1", "R2", "R5")
# Rules whose evidence may have been written before the restart (the agent filled in the
# caller's name and purpose on the panel): "kept" after it is true, "broken" is not known.
UNKNOWN_IF_BROKEN_WHEN_RECOVERED = ("R3",)


def _unseen_before_recovery(record: Record, recovered_at: float, seen: tuple[str, ...] = ()) -> Record:
    """A re-adopted call: its start happened before this controller saw it (issue 9), except the
    rules in ``seen`` (resumed early enough that their evidence came after the restart)."""
    out = dict(record)
    for rule in UNSEEN_WHEN_RECOVERED:
        if rule in seen:
            continue
        out[rule] = _r(NOT_APPLICABLE, recovered=True, recovered_at=recovered_at,
                       why="happened before a controller restart; not seen")
    for rule in UNKNOWN_IF_BROKEN_WHEN_RECOVERED:
        if out[rule]["status"] == BROKEN:
            out[rule] = _r(NOT_APPLICABLE, recovered=True, **out[rule]["evidence"],
                           why="may have been recorded before a controller restart; not seen")
    for rule in out:
        if rule not in UNSEEN_WHEN_RECOVERED or rule in seen:
            out[rule] = {"status": out[rule]["status"],
                         "evidence": {**out[rule]["evidence"], "recovered_at": recovered_at}}
    return out


def _score_all(facts: CallFacts, cfg: CallFlowConfig) -> Record:
    return {
        "R1": score_r1(facts, cfg),
        "R2": score_r2(facts, cfg),
        "R3": score_r3(facts),
        "R4": score_r4(facts, cfg),
        "R5": score_r5(facts, cfg),
        "R6": score_r6(facts),
        "R7": score_r7(facts, cfg),
        "R8": score_r8(facts),
        "R9": score_r9(facts, cfg),
        "R10": _r(KEPT, logged_from=facts.created_at, ended_at=facts.ended_at),
    }


def score_r1(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """Answered after ring N had rung in full and by the end of ring 3; agent phones rung at
    most three rings.

    Too early is broken as well as too late: an answer inside the configured
    ring's tone (0.7 s, inside ring 1) is the instant machine pick-up R1 avoids.
    Times are compared to the millisecond, as they are logged.
    """
    start = facts.created_at
    # to the ms on both sides: ring_end(3) of a 0.9/0.7 cadence is 4.1000000000000005
    deadline = round(cfg.cadence.ring_end(3), 3)
    earliest = round(cfg.cadence.ring_end(cfg.answer_after_rings), 3)
    offers: list[dict[str, Any]] = [
        {"agent": o.agent, "rang_seconds": _secs(o.ended_at, o.rung_at), "outcome": o.outcome}
        for o in facts.offers
    ]
    agent_limit = cfg.cadence.ring_end(cfg.agent_rings) + 1.0  # one second for the network
    late_offers = [o for o in offers
                   if o["rang_seconds"] is not None and o["rang_seconds"] > agent_limit]
    evidence: dict[str, Any] = {
        "first_ring_at": start,
        "answered_at": facts.answered_at,
        "agent_offers": offers,
    }
    if start is None:
        return _r(NOT_APPLICABLE, **evidence)
    if facts.answered_at is None:
        waited = _secs(facts.ended_at, start)
        evidence["caller_left_after_seconds"] = waited
        if waited is not None and waited > deadline:
            return _r(BROKEN, reason="not answered within three rings", **evidence)
        return _r(NOT_APPLICABLE, reason="caller hung up before ring 3 ended", **evidence)
    seconds = round(facts.answered_at - start, 3)
    evidence["answer_seconds"] = seconds
    evidence["rings_elapsed"] = cfg.cadence.rings_elapsed(seconds)
    evidence["answer_after_rings"] = cfg.answer_after_rings
    evidence["earliest_seconds"] = earliest
    evidence["latest_seconds"] = deadline
    if seconds < earliest:
        ring = cfg.cadence.rings_elapsed(seconds)
        return _r(BROKEN, reason=f"answered {seconds:g} s after arrival, before ring "
                  f"{cfg.answer_after_rings}'s tone ended at {earliest:g} s (inside ring "
                  f"{ring}): an instant pick-up", **evidence)
    if seconds > deadline:
        return _r(BROKEN, reason=f"answered {seconds:g} s after arrival, after ring 3's tone "
                  f"ended at {deadline:g} s", **evidence)
    if late_offers:
        return _r(BROKEN, reason="an agent phone rang past three rings", **evidence)
    return _r(KEPT, **evidence)


def score_r2(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """Greeted with the right salutation and company, in full, before queueing."""
    evidence: dict[str, Any] = {
        "greeting": facts.greeting_prompt,
        "result": facts.greeting_result,
    }
    if facts.answered_at is None:
        return _r(NOT_APPLICABLE, reason="not answered", **evidence)
    expected = cfg.greeting_for(facts.answered_at)
    evidence["expected"] = expected
    if facts.greeting_prompt != expected:
        return _r(BROKEN, reason="wrong greeting for the time of day", **evidence)
    if facts.greeting_result == "caller-hung-up":
        return _r(KEPT, note="caller hung up during the greeting", **evidence)
    if facts.greeting_result != "done":
        return _r(BROKEN, reason=f"greeting {facts.greeting_result or 'not played'}", **evidence)
    if facts.queued_at is not None and facts.greeting_finished_at is not None \
            and facts.queued_at < facts.greeting_finished_at:
        return _r(BROKEN, reason="queued before the greeting ended", **evidence)
    return _r(KEPT, **evidence)


def score_r9(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """The service never hangs up on a caller; an idle release is the logged exception."""
    evidence: dict[str, Any] = {"first_hangup": facts.first_hangup}
    if facts.idle_released_at is not None:
        evidence["exception"] = "idle line released"
        evidence["idle_seconds"] = cfg.idle_release_seconds
        evidence["closing_started_at"] = facts.closing_started_at
        return _r(KEPT, **evidence)
    if facts.service_hung_up_caller or facts.first_hangup == "service":
        return _r(BROKEN, reason="the service hung up on the caller", **evidence)
    if facts.first_hangup == "agent":
        evidence["closing_played_at"] = facts.closing_started_at
        if facts.closing_started_at is None:
            return _r(BROKEN, reason="caller left without the closing prompt", **evidence)
    return _r(KEPT, **evidence)


def score_r3(facts: CallFacts) -> dict[str, Any]:
    """An agent who talked with the caller recorded their name and purpose (R3)."""
    evidence: dict[str, Any] = {"caller_number": facts.caller_number, "caller_name": facts.stated_name,
                                "purpose": facts.purpose, "wanted": facts.wanted,
                                "recorded_at": facts.info_updated_at, "agents": list(facts.agents_talked)}
    if facts.answered_at is None or not facts.agents_talked:
        return _r(NOT_APPLICABLE, reason="no agent talked with the caller", **evidence)
    if facts.name_recording:
        evidence["name_recording"] = facts.name_recording
    named = facts.stated_name or facts.name_recording
    missing = [what for what, value in (("name", named), ("purpose", facts.purpose)) if not value]
    if missing:
        return _r(BROKEN, reason=f"caller {' and '.join(missing)} not recorded", **evidence)
    return _r(KEPT, **evidence)


def _hold_evidence(hold: HoldRecord) -> dict[str, Any]:
    return {"agent": hold.agent, "reason": hold.reason, "limit_seconds": hold.limit_seconds,
            "started_at": hold.started_at, "seconds": hold.seconds, "periods": len(hold.periods),
            "extended_at": list(hold.extended_at), "reassurances": hold.reassurances,
            "silent_seconds": hold.silent_seconds, "limit_kept": hold.limit_kept,
            "overrun_seconds": hold.longest_overrun_seconds, "outcome": hold.outcome,
            "for_transfer": hold.for_transfer}


def _hold_problem(hold: HoldRecord, cfg: CallFlowConfig) -> str | None:
    """Why a hold broke R4, or None. Overrun is past limit + grace (+ the limit question)."""
    if not hold.reason.strip():
        return "a hold with no reason"
    if hold.limit_seconds <= 0:
        return "a hold with no limit"
    if hold.silent_seconds > 0:
        return "the caller was silent on hold"
    if hold.limit_kept is False:
        return "held past the limit and grace"
    if hold.ended_at is not None and hold.periods:
        # with no question recorded, the last period may last limit + grace at most
        last = hold.ended_at - hold.periods[-1]
        asked = len(hold.limit_reached_at) >= len(hold.periods)
        if not asked and last > hold.limit_seconds + cfg.hold.limit_grace_seconds + 0.001:
            return "held past the limit and grace"
    return None


def score_r4(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """Every hold had a reason and an announced limit, was never silent, never past limit + grace."""
    holds = [_hold_evidence(h) for h in facts.holds]
    if not holds:
        return _r(NOT_APPLICABLE, holds=0)
    for hold in facts.holds:
        problem = _hold_problem(hold, cfg)
        if problem:
            return _r(BROKEN, reason=problem, holds=holds)
    alone = [t.caller_alone_seconds for t in facts.transfers
             if t.caller_alone_seconds > ALONE_SLACK_SECONDS]
    if alone:  # held for a transfer, then left in a bridge with nobody and no music
        return _r(BROKEN, reason="the caller was left in silence during a transfer's handoff",
                  holds=holds, alone_seconds=alone)
    return _r(KEPT, holds=holds)


def score_r7(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """Every interruption by the agent was a hold under R4, so R7 follows the holds' record."""
    r4 = score_r4(facts, cfg)
    return _r(r4["status"], **r4["evidence"])


def _transfer_evidence(t: TransferRecord) -> dict[str, Any]:
    return {"first_agent": t.first_agent, "target": t.target, "target_agent": t.target_agent,
            "reason": t.reason, "consent": t.consent, "consent_at": t.consent_at,
            "ring_seconds": t.ring_seconds, "answered_at": t.answered_at, "accepted": t.accepted,
            "accepted_at": t.accepted_at, "handoff_at": t.handoff_at, "outcome": t.outcome,
            "caller_returned_to": t.caller_returned_to, "apology": t.apology,
            "handoff_requested_at": t.handoff_requested_at,
            "caller_in_bridge_at": t.caller_in_bridge_at, "target_in_bridge_at": t.target_in_bridge_at,
            "caller_music_stopped_at": t.caller_music_stopped_at,
            "caller_alone_seconds": t.caller_alone_seconds}


CONSENTED = ("caller-key", "agent-confirmed")
#: The caller may be in the bridge without the target and without music this long (one
#: handoff's requests and events) before it counts as being left alone (R4, R6).
ALONE_SLACK_SECONDS = 1.0


def _transfer_problem(t: TransferRecord) -> str | None:
    if t.caller_alone_seconds > ALONE_SLACK_SECONDS:
        return "the caller was left in the bridge without the target and without music"
    if t.outcome == "completed" or t.handoff_at is not None:
        if t.consent not in CONSENTED:
            return "transferred without the caller's consent"
        if t.answered_at is None or not t.accepted or t.accepted_at is None \
                or t.handoff_at is None or t.accepted_at > t.handoff_at:
            return "caller connected to a target who had not answered and accepted"
        return None
    if t.outcome in ("caller-hung-up", "pending"):
        return None
    if t.caller_returned_to not in ("first-agent", "queue"):
        return "a failed transfer left the caller without an agent"
    if t.outcome != "consent-refused" and t.consent in CONSENTED and not t.apology:
        return "the caller came back without an apology"
    return None


def score_r6(facts: CallFacts) -> dict[str, Any]:
    """Warm transfers only: consent, a target who answered and accepted, or back with an apology."""
    transfers = [_transfer_evidence(t) for t in facts.transfers]
    if not transfers:
        return _r(NOT_APPLICABLE, transfers=0)
    for t in facts.transfers:
        problem = _transfer_problem(t)
        if problem:
            return _r(BROKEN, reason=problem, transfers=transfers)
    return _r(KEPT, transfers=transfers)


def rates(calls: list[tuple[str, dict[str, str]]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Compliance rates by group (R12: per agent, per day…): kept / (kept + broken) per rule.

    ``calls`` are (group key, rule → status) pairs, e.g. ("agent1", {"R1": "kept"}).
    Not-applicable marks count in neither side: a rule that never applied has no rate,
    not 100 %.
    """
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for key, statuses in calls:
        rules = out.setdefault(key, {})
        for rule, status in statuses.items():
            cell = rules.setdefault(rule, {"kept": 0, "broken": 0})
            if status in (KEPT, BROKEN):
                cell[status] = int(cell[status]) + 1
    for rules in out.values():
        for cell in rules.values():
            judged = int(cell["kept"]) + int(cell["broken"])
            cell["rate"] = round(int(cell["kept"]) / judged, 4) if judged else -1.0
    return out


#: Announcements and offers are timers plus a prompt's length: this much lateness is not a breach.
QUEUE_SLACK_SECONDS = 15.0


def score_r5(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """A waiting caller was told where they stand, offered a callback in time, never cut off.

    Judged over the caller's first wait (from joining the queue to an agent,
    a callback, or hanging up); a later wait after a requeue is R6's concern.
    """
    if facts.queued_at is None:
        return _r(NOT_APPLICABLE, reason="the caller never waited for an agent")
    q = cfg.queue_for(facts.queue or "")
    end = facts.queue_left_at or facts.connected_at or facts.ended_at
    waited = _secs(end, facts.queued_at)
    announcements = [round(at - facts.queued_at, 3) for at, _ in facts.queue_announcements
                     if end is None or at <= end]
    offers = [round(at - facts.queued_at, 3) for at in facts.callback_offers
              if end is None or at <= end]
    evidence: dict[str, Any] = {
        "queue": facts.queue or "all", "waited_seconds": waited,
        "announce": q.announce, "announce_every_seconds": q.announce_every_seconds,
        "announced_after_seconds": announcements, "max_wait_seconds": q.max_wait_seconds,
        "callback_offered_after_seconds": offers,
        "callback_choices": [choice for _, choice in facts.callback_choices],
        "callback": facts.callback,
    }
    if facts.first_hangup == "service" and facts.idle_released_at is None:
        return _r(BROKEN, reason="the service ended a waiting call", **evidence)
    if waited is None:
        return _r(NOT_APPLICABLE, reason="the wait has no end", **evidence)
    late = q.max_wait_seconds + QUEUE_SLACK_SECONDS
    if q.callback_offer and waited > late and (not offers or offers[0] > late):
        return _r(BROKEN, reason="no callback offered after the maximum wait", **evidence)
    if q.announce != "none":
        informed = [0.0, *sorted(announcements + offers), waited]
        longest = max(b - a for a, b in pairwise(informed))
        evidence["longest_uninformed_seconds"] = round(longest, 3)
        if longest > q.announce_every_seconds + QUEUE_SLACK_SECONDS:
            return _r(BROKEN, reason="the caller waited without a position or wait announcement",
                      **evidence)
    return _r(KEPT, **evidence)


def score_r8(facts: CallFacts) -> dict[str, Any]:
    """Closed with the thanks (the question if the agent chose it); promises carry a due date.

    Applies when an agent talked with the caller and the call was closed by
    the agent, or when something was promised (a reply, a callback). A
    promise that goes overdue later is marked broken by the call log.
    """
    promises = [{"followup_id": p["followup_id"], "due": p.get("due"), "owner": p.get("owner")}
                for p in facts.promises]
    if facts.callback is not None:
        promises.append({"followup_id": facts.callback.get("followup_id"),
                         "due": facts.callback.get("due"), "owner": "", "callback": True})
    evidence: dict[str, Any] = {
        "closing_reason": facts.closing_reason,
        "question_asked_at": facts.closing_question_at,
        "closing_prompts": list(facts.closing_prompts_played),
        "promises": promises,
    }
    closed_by_agent = facts.closing_reason in ("agent-ended", "agent-left") and facts.agents_talked
    if not closed_by_agent and not promises:
        return _r(NOT_APPLICABLE, reason="no closing by an agent and nothing promised", **evidence)
    if closed_by_agent and not facts.closing_prompts_played:
        return _r(BROKEN, reason="closed without the thanks", **evidence)
    undated = [p["followup_id"] for p in promises if not p.get("due")]
    if undated:
        return _r(BROKEN, reason="a promise without a due date", **evidence)
    return _r(KEPT, **evidence)
