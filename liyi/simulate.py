"""``liyi simulate``: what a caller would hear at a given moment, without any phone.

The admin's question is "if someone calls on 1 December at 19:30 and presses
2, what happens?". The answer comes from the real engine, not from a second
reading of the config: a call is driven through ``CallEngine`` on a fake
clock — prompts end after their recorded length (or an estimate from their
text), keys are pressed when the engine waits for one, the name recording
takes two seconds — until the call reaches a queue (where it would wait for
an agent) or its closing. Nothing is dialled and nothing is written.

It also says when the first agent's phone would ring, counted from the
call's arrival: the moment the call reaches its queue (after the wait
notice), assuming an agent is free — the figure ``liyi check-config`` holds
to ``flows_check.max_seconds_to_agent`` for a caller who presses nothing.
"""

from __future__ import annotations

import datetime as dt
import heapq
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callflow import commands as c
from callflow import events as e
from callflow.config import MEDIA_PREFIX, CallFlowConfig
from callflow.engine import CallEngine, CallState

WAITING_FOR_KEY = frozenset({CallState.MENU, CallState.CALLBACK_OFFER, CallState.CALLBACK_CONFIRM,
                             CallState.CALLBACK_ENTER})
SECONDS_PER_CHARACTER = 0.28  # Mandarin read at a calm pace, for prompts with no recording
NAME_SECONDS = 2.0
#: Log entries worth a line of their own: what the engine decided when no key came.
LOG_NOTES = {
    "menu-repeat": "… {why}: the menu again · 重复菜单",
    "menu-default": "… no choice ({why}; the menu said {tries}×): default route → {to}",
    "callback-declined": "… callback declined ({how})",
    "callback-not-confirmed": "… number not confirmed: no callback recorded",
    "callback-recorded": "✓ callback recorded for {number}, due {due}",
    "name-not-recorded": "… name not recorded ({why})",
}
KEY_GAP_SECONDS = 0.5  # the caller's reaction, and between two keys of a number
MAX_SIMULATED_SECONDS = 3600.0


@dataclass
class Line:
    """One line of the printed answer: when, what kind, what."""

    at: float
    kind: str  # ring | answer | prompt | key | record | queue | closing | note
    text: str


@dataclass
class Outcome:
    """Where the simulated call ended up."""

    lines: list[Line] = field(default_factory=list)
    flow: str = ""
    destination: str = ""  # "queue:<dept>" | "closing" | "caller-left" | "unfinished"
    keys_left: str = ""
    agent_rings_at: float | None = None  # seconds after arrival; None: no agent on this path


def parse_moment(text: str, cfg: CallFlowConfig) -> float:
    """"2026-12-01 19:30" (the center's local time) → epoch seconds; ValueError with a hint."""
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return moment.replace(tzinfo=cfg.tz).timestamp()
    raise ValueError(f"{text!r} — give the center's local time like \"2026-12-01 19:30\"")


def describe_day(at: float, cfg: CallFlowConfig) -> str:
    """"2026-12-01 19:30 周二 工作日" — with 节假日 / 调休上班 when the calendar says so."""
    local = cfg.local_time(at)
    day = local.date()
    weekday = "一二三四五六日"[day.weekday()]
    if day in cfg.calendar.holidays or day in cfg.holidays:
        kind = "节假日 holiday"
    elif day in cfg.calendar.workdays:
        kind = "调休上班 moved working day"
    elif cfg.calendar.is_working_day(day):
        kind = "工作日 working day"
    else:
        kind = "周末 weekend"
    state = "open" if cfg.is_open(local) else "closed"
    return f"{local:%Y-%m-%d %H:%M} 周{weekday} · {kind} · {state}"


class PromptClock:
    """How long each prompt plays: its recording's length, else an estimate from its text."""

    def __init__(self, recordings: Path | None, text_of: Callable[[str], str]) -> None:
        self._recordings = recordings
        self._text_of = text_of
        self._cache: dict[str, float] = {}

    def seconds(self, name: str) -> float:
        if name not in self._cache:
            self._cache[name] = self._measure(name)
        return self._cache[name]

    def _measure(self, name: str) -> float:
        if self._recordings is not None:
            path = self._recordings / f"{name}.wav"
            try:
                with wave.open(str(path), "rb") as audio:
                    return audio.getnframes() / float(audio.getframerate())
            except (OSError, wave.Error, EOFError):
                pass
        return max(1.0, len(self._text_of(name)) * SECONDS_PER_CHARACTER)


def simulate(cfg: CallFlowConfig, at: float, keys: str, *, caller_number: str = "13800138000",
             prompt_clock: PromptClock, text_of: Callable[[str], str]) -> Outcome:
    """Drive one call through the engine from its first ring; stop at a queue or the closing."""
    engine = CallEngine(cfg, "sim")
    out = Outcome()
    pending_keys = list(keys)
    timers: list[tuple[float, int, e.Event]] = []
    seq = 0
    now = at
    channel = "caller"

    def schedule(when: float, event: e.Event) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(timers, (when, seq, event))

    def note(kind: str, text: str) -> None:
        out.lines.append(Line(now - at, kind, text))

    def carry_out(commands: list[c.Command]) -> bool:
        """Apply the engine's commands to the fake world; True once the simulation is over."""
        for cmd in commands:
            match cmd:
                case c.Ring():
                    note("ring", "振铃 · ringing")
                case c.Answer():
                    note("answer", "接听 · answered")
                case c.Play() if cmd.channel_id == channel:
                    names = [_prompt_name(media) for media in cmd.media]
                    for text in _spoken(names, text_of):
                        note("prompt", text)
                    length = sum(prompt_clock.seconds(name) for name in names)
                    schedule(now + length, e.PlaybackFinished(at=now + length, playback_id=cmd.playback_id))
                case c.Record():
                    note("record", f"● 录音 the caller says their name (up to {cmd.max_seconds:g} s)")
                    schedule(now + NAME_SECONDS, e.RecordingFinished(
                        at=now + NAME_SECONDS, recording_name=cmd.name, duration_seconds=NAME_SECONDS))
                case c.StartTimer():
                    schedule(cmd.at, e.TimerFired(at=cmd.at, name=cmd.name, token=cmd.token))
                case c.RequestAgent():
                    queue = cmd.queue or ""
                    agents = ", ".join(cmd.only) or "any agent · 全部坐席"
                    wait = cfg.queue_for(queue)
                    note("queue", f"→ 排队 queue {queue or '(general)'} · agents: {agents} · "
                                  f"position announced every {wait.announce_every_seconds:g} s, "
                                  f"callback offered after {wait.max_wait_seconds:g} s")
                    out.destination = f"queue:{queue}"
                    out.agent_rings_at = now - at
                    return True
                case c.RecordFollowUp():
                    note("note", f"跟进 follow-up {cmd.kind}: {cmd.number} due {cmd.due}")
                case c.Log(kind="closing"):
                    out.destination = "closing"
                case c.Log(kind=kind) if kind in LOG_NOTES:
                    note("note", LOG_NOTES[kind].format(**cmd.detail))
                case _:
                    pass
        return False

    done = carry_out(engine.handle(e.StasisStart(at=now, channel_id=channel,
                                                 caller_number=caller_number, created_at=now)))
    out.flow = engine.facts.flow
    while not done and timers:
        now, _, event = heapq.heappop(timers)
        if now - at > MAX_SIMULATED_SECONDS:
            break
        done = carry_out(engine.handle(event))
        out.flow = out.flow or engine.facts.flow
        if out.destination == "closing" and engine.state is CallState.CLOSING and \
                not any(isinstance(ev, e.PlaybackFinished) for _, _, ev in timers):
            note("closing", "线路保持，直到来电者挂机 · the line stays open until the caller hangs up")
            break
        while not done and engine.state in WAITING_FOR_KEY and pending_keys and not engine.speaking:
            key = pending_keys.pop(0)
            now += KEY_GAP_SECONDS
            note("key", f"⌨ 来电者按 {key} · caller presses {key}")
            done = carry_out(engine.handle(e.ChannelDtmfReceived(at=now, channel_id=channel, digit=key)))
    if not out.destination:
        out.destination = "unfinished"
    out.keys_left = "".join(pending_keys)
    return out


def render(outcome: Outcome, heading: str, *,
           max_seconds_to_agent: float | None = None) -> Iterator[str]:
    """The printed answer; with ``max_seconds_to_agent``, a first ring later than it is flagged."""
    yield heading
    yield f"flow: {outcome.flow or '?'}"
    for line in outcome.lines:
        minutes, seconds = divmod(line.at, 60)
        yield f"  {int(minutes):02d}:{seconds:04.1f}  {line.text}"
    if outcome.destination.startswith("queue:"):
        yield "结果 result: the caller waits in the queue for an agent (R5)"
    elif outcome.destination == "closing":
        yield "结果 result: closing — the caller hears the closing and hangs up (R8, R9)"
    else:
        yield f"结果 result: {outcome.destination}"
    if outcome.agent_rings_at is not None:
        late = ""
        if max_seconds_to_agent is not None and outcome.agent_rings_at > max_seconds_to_agent:
            late = f" — later than flows_check.max_seconds_to_agent ({max_seconds_to_agent:g} s)"
        yield (f"坐席振铃 first agent rings {outcome.agent_rings_at:.1f} s after the call arrived "
               f"(if an agent is free){late}")
    elif outcome.destination != "unfinished":
        yield "坐席振铃 no agent's phone rings on this path"
    if outcome.keys_left:
        yield f"unused keys: {outcome.keys_left} (the flow did not ask for them)"


def _spoken(names: list[str], text_of: Callable[[str], str]) -> Iterator[str]:
    """One line per prompt; a number read back digit by digit is one line."""
    digits = ""
    for name in names:
        if name.startswith("digit-"):
            digits += name.removeprefix("digit-")
            continue
        if digits:
            yield f"digits {digits}"
            digits = ""
        yield f"{name}  「{text_of(name)}」"
    if digits:
        yield f"digits {digits}"


def _prompt_name(media: str) -> str:
    return media.removeprefix(MEDIA_PREFIX)
