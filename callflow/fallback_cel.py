"""Reading Asterisk's CEL record of the calls its dialplan fallback served (R10).

Why: while the controller is down, ``asterisk-conf/extensions.conf``'s
``[liyi-fallback]`` answers callers and rings agents, and only Asterisk sees
it. With ``cel.conf`` and ``cel_custom.conf`` it writes one CSV line per
channel event to ``liyi-fallback.csv``; this module turns those lines into
one :class:`FallbackCall` per Asterisk call (its ``linkedid``), so the call
log can hold them too (``callflow.fallback`` makes the record).

Pure: text in, values out, no I/O. A line that cannot be read (wrong number
of fields, a time that is not a number, an event we did not ask for) is
returned as a :class:`BadLine` with its line number and skipped; it never
stops the rest. Only calls the fallback marked (``CHANNEL(userfield)`` set
to ``liyi-fallback``) and that are over (``LINKEDID_END`` seen) become
calls; the rest are left for a later read.

The column order is ``cel_custom.conf``'s ``fields``; keep them in step.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: cel_custom.conf's ``fields``, in order (res_cdrel_custom's names).
FIELDS = ("eventtype", "eventtime", "uniqueid", "linkedid", "channame", "num", "name",
          "exten", "context", "userfield", "peer", "eventextra")
#: The events cel.conf asks for; any other is reported, not guessed at.
EVENTS = frozenset({"CHAN_START", "ANSWER", "BRIDGE_ENTER", "HANGUP", "LINKEDID_END"})
#: CHANNEL(userfield) the fallback sets on its callers; "-released" once it let an idle line go.
MARK = "liyi-fallback"
RELEASED_MARK = "liyi-fallback-released"
# A bad line is quoted in the report only this far: a garbled file may hold megabytes on one line.
_QUOTE_LIMIT = 200
# Values longer than this are cut: a caller ID name is never this long, a garbled one may be.
_VALUE_LIMIT = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class CelLine:
    """One CEL event as Asterisk wrote it."""

    line: int
    event: str
    at: float
    uniqueid: str
    linkedid: str
    channel: str
    cid_num: str
    cid_name: str
    exten: str
    context: str
    userfield: str
    peer: str
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BadLine:
    """A line that could not be read, kept for the import's report."""

    line: int
    reason: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLeg:
    """One agent phone the fallback's Dial rang for this call."""

    channel: str
    endpoint: str  # "PJSIP/agent1": the channel name without its "-0000000n"
    rung_at: float
    answered_at: float | None = None
    bridged_at: float | None = None
    ended_at: float | None = None
    hangup_cause: int | None = None
    hangup_source: str = ""  # the channel Asterisk says hung up (its own, or the caller's)


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackCall:
    """What Asterisk knows of one call the fallback served: the facts the record is made from.

    ``first_hangup`` is "caller" or "agent" when Asterisk named who hung up
    (its ``hangupsource``), "service" when the fallback released an idle
    line (the R9 exception), "unknown" otherwise.
    """

    linkedid: str
    caller_channel: str
    caller_number: str
    caller_name: str
    started_at: float
    answered_at: float | None
    ended_at: float
    agent_endpoint: str | None  # the leg that answered and was bridged with the caller
    connected_at: float | None
    first_hangup: str
    hangup_cause: int | None
    legs: tuple[AgentLeg, ...] = ()
    lines: tuple[CelLine, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CelRead:
    """Lines read, lines refused, and how many characters of the text were used.

    ``consumed`` stops before a last record still being written (no newline
    yet, or a quote still open): the next read starts there.
    """

    lines: tuple[CelLine, ...]
    bad: tuple[BadLine, ...]
    consumed: int


def read_lines(text: str, *, first_line: int = 1) -> CelRead:
    """Every complete CEL line of ``text`` (a chunk of the file), bad ones reported apart."""
    end = text.rfind("\n") + 1
    physical = text[:end].splitlines(keepends=True)
    offsets = [0]
    for piece in physical:
        offsets.append(offsets[-1] + len(piece))
    good: list[CelLine] = []
    bad: list[BadLine] = []
    reader = csv.reader(_unnulled(physical), strict=True)
    consumed = 0
    done = 0  # physical lines the reader has used
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            used = max(reader.line_num, done + 1)
            if used >= len(physical) and "end of data" in str(exc):
                break  # a record still being written: read it next time
            bad.append(BadLine(line=first_line + done, reason=f"not CSV: {exc}",
                               text=_quote("".join(physical[done:used]))))
            done = used
            consumed = offsets[done]
            continue
        number = first_line + done
        done = reader.line_num
        consumed = offsets[done]
        if not row or row == [""]:
            continue
        parsed = _line(row, number)
        if isinstance(parsed, BadLine):
            bad.append(parsed)
        else:
            good.append(parsed)
    return CelRead(lines=tuple(good), bad=tuple(bad), consumed=consumed)


def calls(lines: Iterable[CelLine]) -> tuple[list[FallbackCall], dict[str, list[CelLine]]]:
    """The finished fallback calls among ``lines``, and the lines of calls not finished yet.

    A call is finished once Asterisk wrote its ``LINKEDID_END``; calls the
    fallback never marked (the controller served them) are dropped. The
    unfinished ones are returned by linkedid, to be read again with the
    lines that follow.
    """
    by_call: dict[str, list[CelLine]] = {}
    for line in lines:
        by_call.setdefault(line.linkedid, []).append(line)
    finished: list[FallbackCall] = []
    pending: dict[str, list[CelLine]] = {}
    for linkedid, group in by_call.items():
        if not any(x.event == "LINKEDID_END" for x in group):
            pending[linkedid] = group
            continue
        if not any(x.userfield.startswith(MARK) for x in group):
            continue
        call = _call(linkedid, group)
        if call is not None:
            finished.append(call)
    finished.sort(key=lambda c: (c.started_at, c.linkedid))
    return finished, pending


def endpoint_of(channel: str) -> str:
    """"PJSIP/agent1-0000001a" → "PJSIP/agent1": the device, as the config names agents."""
    head, sep, tail = channel.rpartition("-")
    return head if sep and tail and all(ch in "0123456789abcdef" for ch in tail.lower()) else channel


# ----------------------------------------------------------------- internals


def _unnulled(lines: list[str]) -> Iterator[str]:
    """The csv module refuses NUL; a garbled file may hold some. Dropped, the line still reads."""
    for line in lines:
        yield line.replace("\0", "")


def _quote(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "…"


def _line(row: list[str], number: int) -> CelLine | BadLine:
    if len(row) != len(FIELDS):
        return BadLine(line=number, reason=f"{len(row)} fields, expected {len(FIELDS)}",
                       text=_quote(",".join(row)))
    values = dict(zip(FIELDS, (v[:_VALUE_LIMIT] for v in row), strict=True))
    event = values["eventtype"].strip()
    if event not in EVENTS:
        return BadLine(line=number, reason=f"unknown event {event[:40]!r}", text=_quote(",".join(row)))
    try:
        at = float(values["eventtime"])
    except ValueError:
        return BadLine(line=number, reason=f"eventtime {values['eventtime'][:40]!r} is not a number",
                       text=_quote(",".join(row)))
    if not (at == at and 0 < at < 1e11):  # NaN, inf, negative: not a moment
        return BadLine(line=number, reason=f"eventtime {values['eventtime'][:40]!r} is not a time",
                       text=_quote(",".join(row)))
    if not values["uniqueid"] or not values["linkedid"]:
        return BadLine(line=number, reason="no uniqueid or linkedid", text=_quote(",".join(row)))
    return CelLine(line=number, event=event, at=at, uniqueid=values["uniqueid"],
                   linkedid=values["linkedid"], channel=values["channame"],
                   cid_num=values["num"], cid_name=values["name"], exten=values["exten"],
                   context=values["context"], userfield=values["userfield"],
                   peer=values["peer"], extra=_extra(values["eventextra"]))


def _extra(text: str) -> dict[str, Any]:
    """The event's extra JSON; anything else (garbled, not an object) reads as nothing."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cause(extra: dict[str, Any]) -> int | None:
    cause = extra.get("hangupcause")
    return cause if isinstance(cause, int) and not isinstance(cause, bool) else None


def _call(linkedid: str, group: list[CelLine]) -> FallbackCall | None:
    group = sorted(group, key=lambda x: (x.at, x.line))
    caller = [x for x in group if x.uniqueid == linkedid]
    if not caller:
        return None  # the caller's own lines were lost (garbled): nothing to say who called
    start = next((x for x in caller if x.event == "CHAN_START"), caller[0])
    caller_channel = start.channel
    answered = next((x.at for x in caller if x.event == "ANSWER"), None)
    caller_hangup = next((x for x in caller if x.event == "HANGUP"), None)
    end_line = caller_hangup or next(x for x in group if x.event == "LINKEDID_END")
    number = next((x.cid_num for x in caller if x.cid_num), "")
    name = next((x.cid_name for x in caller if x.cid_name), "")
    legs = _legs(linkedid, group)
    bridged = [leg for leg in legs if leg.bridged_at is not None]
    agent = bridged[0] if bridged else next((leg for leg in legs if leg.answered_at), None)
    first = _first_hangup(caller_channel, caller_hangup, agent)
    return FallbackCall(
        linkedid=linkedid, caller_channel=caller_channel, caller_number=number,
        caller_name=name, started_at=start.at, answered_at=answered, ended_at=end_line.at,
        agent_endpoint=agent.endpoint if agent else None,
        connected_at=agent.bridged_at if agent else None, first_hangup=first,
        hangup_cause=_cause(caller_hangup.extra) if caller_hangup else None,
        legs=tuple(legs), lines=tuple(group))


def _legs(linkedid: str, group: list[CelLine]) -> list[AgentLeg]:
    """Each agent channel of the call, in the order its phone started ringing."""
    legs: dict[str, dict[str, Any]] = {}
    for x in group:
        if x.uniqueid == linkedid or x.event == "LINKEDID_END":
            continue
        leg = legs.setdefault(x.uniqueid, {"channel": x.channel, "rung_at": x.at})
        if x.event == "ANSWER" and "answered_at" not in leg:
            leg["answered_at"] = x.at
        elif x.event == "BRIDGE_ENTER" and "bridged_at" not in leg:
            leg["bridged_at"] = x.at
        elif x.event == "HANGUP" and "ended_at" not in leg:
            leg["ended_at"] = x.at
            leg["hangup_cause"] = _cause(x.extra)
            leg["hangup_source"] = str(x.extra.get("hangupsource", ""))
    return sorted((AgentLeg(endpoint=endpoint_of(v["channel"]), **v) for v in legs.values()),
                  key=lambda leg: (leg.rung_at, leg.channel))


def _first_hangup(caller_channel: str, caller_hangup: CelLine | None, agent: AgentLeg | None) -> str:
    """Who hung up first, as far as Asterisk says (its ``hangupsource``).

    On a bridged call both HANGUP lines name whoever ended the bridge (trace
    16): a caller who hangs up is named on the agent's line too; an agent who
    hangs up first is named on their own line and still on the caller's,
    written when the caller leaves after the closing. The agent's line is
    read first, the caller's if there is none.
    """
    if caller_hangup is not None and caller_hangup.userfield == RELEASED_MARK:
        return "service"  # the fallback let an idle line go after the closing (R9 exception)
    sources = []
    if agent is not None and agent.ended_at is not None:
        sources.append(agent.hangup_source)
    if caller_hangup is not None:
        sources.append(str(caller_hangup.extra.get("hangupsource", "")))
    for source in sources:
        if not source:
            continue
        if source == caller_channel:
            return "caller"
        if agent is not None and source == agent.channel:
            return "agent"
    if agent is None and caller_hangup is not None:
        # No agent ever answered: the fallback never hangs up (extensions.conf has no
        # Hangup() but the idle release, marked above), so the caller left.
        return "caller"
    return "unknown"
