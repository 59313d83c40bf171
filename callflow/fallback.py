"""The call-log record of a call the dialplan fallback served (R10, R12).

Why a record of its own: the controller never saw these calls, so there is
no engine timeline to replay. What Asterisk wrote (``callflow.fallback_cel``)
still says when the caller arrived and was answered, which agents' phones
rang and for how long, who answered, and who hung up first. This module
turns those facts into the same shape the controller's records have — the
call's fields, a timeline, a compliance mark per rule — flagged
``handled_by: fallback``. A rule whose evidence Asterisk does not record
(the greeting's words, the caller's name, holds, the closing words) is
``not_applicable`` with the reason, never guessed kept or broken.

Pure: facts and config in, a frozen value out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callflow.compliance import BROKEN, KEPT, NOT_APPLICABLE
from callflow.config import CallFlowConfig
from callflow.fallback_cel import FallbackCall

HANDLED_BY = "fallback"
#: Call ids of imported calls: stable, so the same Asterisk call is always the same record.
ID_PREFIX = "fb-"

_UNSEEN = "the fallback dialplan served this call; Asterisk's CEL record does not show it"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineItem:
    at: float
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackRecord:
    """Everything the call log keeps of one fallback call, ready to be written once."""

    call_id: str
    linkedid: str
    channel_id: str
    caller_number: str
    caller_name: str
    created_at: float
    answered_at: float | None
    ended_at: float
    first_hangup: str
    agent: str | None
    outcome: str
    summary: dict[str, Any]
    timeline: tuple[TimelineItem, ...]
    compliance: dict[str, dict[str, Any]]


def record(call: FallbackCall, cfg: CallFlowConfig) -> FallbackRecord:
    """The call-log record of ``call``; agents named as the config names them."""
    agents = {a.endpoint: a.name for a in cfg.agents}
    agent = _agent_name(call.agent_endpoint, agents)
    offers = [
        {"agent": _agent_name(leg.endpoint, agents), "rung_at": leg.rung_at,
         "rang_seconds": _secs(leg.answered_at or leg.ended_at, leg.rung_at),
         "outcome": "answered" if leg.answered_at is not None else _unanswered(leg.hangup_cause)}
        for leg in call.legs
    ]
    outcome = _outcome(call)
    summary = {
        "handled_by": HANDLED_BY,
        "asterisk_linkedid": call.linkedid,
        "agent": agent,
        "agent_offers": offers,
        "hangup_cause": call.hangup_cause,
        "connected_at": call.connected_at,
    }
    return FallbackRecord(
        call_id=ID_PREFIX + call.linkedid, linkedid=call.linkedid,
        channel_id=call.linkedid, caller_number=call.caller_number, caller_name=call.caller_name,
        created_at=call.started_at, answered_at=call.answered_at, ended_at=call.ended_at,
        first_hangup=call.first_hangup, agent=agent, outcome=outcome, summary=summary,
        timeline=_timeline(call, agents, outcome), compliance=_compliance(call, cfg, offers))


def _agent_name(endpoint: str | None, agents: Mapping[str, str]) -> str | None:
    """The config's name for an agent's phone, or the endpoint itself if the config lacks it."""
    if endpoint is None:
        return None
    return agents.get(endpoint, endpoint)


def _unanswered(cause: int | None) -> str:
    # Q.850: 17 user busy, 21 rejected; 26 "answered elsewhere" (another agent took it).
    return {17: "busy", 21: "declined", 26: "answered-elsewhere"}.get(cause or 0, "no-answer")


def _secs(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _outcome(call: FallbackCall) -> str:
    """The controller's outcome words, so reports count fallback calls alongside."""
    if call.first_hangup == "service":
        return "idle-released"
    if call.connected_at is not None:
        return "completed"
    if call.answered_at is None:
        return "abandoned-ringing"
    return "abandoned-waiting"


def _timeline(call: FallbackCall, agents: Mapping[str, str], outcome: str) -> tuple[TimelineItem, ...]:
    items = [TimelineItem(at=call.started_at, kind="fallback-arrived",
                          detail={"linkedid": call.linkedid, "channel": call.caller_channel})]
    if call.answered_at is not None:
        items.append(TimelineItem(at=call.answered_at, kind="answered", detail={}))
    for leg in call.legs:
        name = _agent_name(leg.endpoint, agents)
        items.append(TimelineItem(at=leg.rung_at, kind="agent-ringing",
                                  detail={"agent": name, "channel": leg.channel}))
        if leg.answered_at is not None:
            items.append(TimelineItem(at=leg.answered_at, kind="agent-answered",
                                      detail={"agent": name}))
        if leg.bridged_at is not None and leg.endpoint == call.agent_endpoint:
            items.append(TimelineItem(at=leg.bridged_at, kind="connected", detail={"agent": name}))
        if leg.ended_at is not None:
            items.append(TimelineItem(at=leg.ended_at, kind="agent-hangup",
                                      detail={"agent": name, "cause": leg.hangup_cause,
                                              "by": leg.hangup_source}))
    items.sort(key=lambda item: item.at)  # stable: same-instant entries keep their order
    # Last, whatever the clock says: an agent leg's HANGUP may be written a few µs after the caller's.
    items.append(TimelineItem(at=call.ended_at, kind="ended",
                              detail={"outcome": outcome, "first_hangup": call.first_hangup,
                                      "cause": call.hangup_cause}))
    return tuple(items)


def _r(status: str, **evidence: Any) -> dict[str, Any]:
    return {"status": status, "evidence": {"handled_by": HANDLED_BY, **evidence}}


def _compliance(call: FallbackCall, cfg: CallFlowConfig,
                offers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    unseen = _r(NOT_APPLICABLE, why=_UNSEEN)
    return {
        "R1": _r1(call, cfg, offers),
        "R2": _r(NOT_APPLICABLE, why="the fallback plays one fixed greeting (fallback-apology), "
                 "not the time of day's; its playing is not in the CEL record"),
        "R3": unseen, "R4": unseen, "R5": _r(NOT_APPLICABLE, why=_UNSEEN, waited_seconds=_secs(
            call.connected_at or call.ended_at, call.answered_at)),
        "R6": _r(NOT_APPLICABLE, why="the fallback makes no transfers"),
        "R7": unseen, "R8": unseen,
        "R9": _r9(call),
        "R10": _r(KEPT, logged_from=call.started_at, ended_at=call.ended_at,
                  imported_from="Asterisk CEL", linkedid=call.linkedid),
    }


def _r1(call: FallbackCall, cfg: CallFlowConfig, offers: list[dict[str, Any]]) -> dict[str, Any]:
    """R1 as the controller judges it: answered after ring N, by the end of ring 3."""
    deadline = round(cfg.cadence.ring_end(3), 3)
    earliest = round(cfg.cadence.ring_end(cfg.answer_after_rings), 3)
    agent_limit = cfg.cadence.ring_end(cfg.agent_rings) + 1.0  # one second for the network
    evidence: dict[str, Any] = {"first_ring_at": call.started_at, "answered_at": call.answered_at,
                                "agent_offers": offers}
    if call.answered_at is None:
        waited = _secs(call.ended_at, call.started_at)
        evidence["caller_left_after_seconds"] = waited
        if waited is not None and waited > deadline:
            return _r(BROKEN, reason="not answered within three rings", **evidence)
        return _r(NOT_APPLICABLE, reason="caller hung up before ring 3 ended", **evidence)
    seconds = round(call.answered_at - call.started_at, 3)
    evidence.update(answer_seconds=seconds, earliest_seconds=earliest, latest_seconds=deadline)
    if seconds < earliest:
        return _r(BROKEN, reason=f"answered {seconds:g} s after arrival, before ring "
                  f"{cfg.answer_after_rings}'s tone ended at {earliest:g} s", **evidence)
    if seconds > deadline:
        return _r(BROKEN, reason=f"answered {seconds:g} s after arrival, after ring 3's tone "
                  f"ended at {deadline:g} s", **evidence)
    late = [o for o in offers if o["rang_seconds"] is not None and o["rang_seconds"] > agent_limit]
    if late:
        return _r(BROKEN, reason="an agent phone rang past three rings", **evidence)
    return _r(KEPT, **evidence)


def _r9(call: FallbackCall) -> dict[str, Any]:
    evidence: dict[str, Any] = {"first_hangup": call.first_hangup}
    if call.first_hangup == "service":
        return _r(KEPT, exception="idle line released", **evidence)
    if call.first_hangup == "unknown":
        return _r(NOT_APPLICABLE, why="Asterisk did not say who hung up first", **evidence)
    if call.first_hangup == "agent":
        # extensions.conf: Dial(…g) goes on to the closing prompt and an open line.
        evidence["closing"] = "played by the fallback dialplan (Dial g option), not seen in CEL"
    return _r(KEPT, **evidence)
