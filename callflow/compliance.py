"""Scoring a finished call against the rulebook (R12).

Each rule gets ``kept``, ``broken`` or ``not_applicable`` with the evidence
that decided it, so an admin can see *why*, not only a rate. Rules whose
parts are not built yet (R3 agent panel, R5 queue announcements, R8 closing
script and follow-ups) are not scored rather than scored falsely.
"""

from __future__ import annotations

from typing import Any

from callflow.config import CallFlowConfig
from callflow.facts import CallFacts

KEPT = "kept"
BROKEN = "broken"
NOT_APPLICABLE = "not_applicable"

Record = dict[str, dict[str, Any]]


def _r(status: str, **evidence: Any) -> dict[str, Any]:
    return {"status": status, "evidence": evidence}


def _secs(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def score(facts: CallFacts, cfg: CallFlowConfig) -> Record:
    return {
        "R1": score_r1(facts, cfg),
        "R2": score_r2(facts, cfg),
        "R4": _r(NOT_APPLICABLE, holds=0),
        "R6": _r(NOT_APPLICABLE, transfers=0),
        "R7": _r(NOT_APPLICABLE, holds=0),
        "R9": score_r9(facts, cfg),
        "R10": _r(KEPT, logged_from=facts.created_at, ended_at=facts.ended_at),
    }


def score_r1(facts: CallFacts, cfg: CallFlowConfig) -> dict[str, Any]:
    """Answered before the end of ring 3; every agent phone rung at most three rings."""
    start = facts.created_at
    deadline = cfg.cadence.ring_end(3)
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
    seconds = facts.answered_at - start
    evidence["answer_seconds"] = round(seconds, 3)
    evidence["rings_elapsed"] = cfg.cadence.rings_elapsed(seconds)
    if seconds > deadline:
        return _r(BROKEN, reason="answered after ring 3", **evidence)
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
