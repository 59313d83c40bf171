"""The call-flow configuration: read once, validated, frozen, passed in.

Validation is where a rule is protected before any call is taken: a config
that would break R1 (answer after ring 4) or R2 (an hour with no greeting) is
rejected with every problem and where it is, rather than half-applied. The
parser takes plain mappings (already loaded from YAML by ``liyi``), so this
module does no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callflow.calendar import SATURDAY, WorkCalendar
from callflow.flow import (
    DEFAULT_CLOSED,
    DEFAULT_OPEN,
    MENU,
    MENU_INVALID_PROMPT,
    MENU_NO_INPUT_PROMPT,
    Flow,
)
from callflow.flow_config import read_flows

DEFAULT_APP_NAME = "liyi"
MEDIA_PREFIX = "sound:liyi/"

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config, with its dotted location (and line, if known)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class RingCadence:
    """How a ring sounds: ``on`` seconds of tone then ``off`` of silence.

    "Within N rings" means before the end of the N-th ring's tone; a ring
    counts only once its tone has played in full, so "after ring N" means no
    earlier than that same moment (ETIQUETTE.md R1).
    """

    on: float = 1.0
    off: float = 4.0

    @property
    def period(self) -> float:
        return self.on + self.off

    def ring_end(self, rings: int) -> float:
        """Seconds from the start of ringing to the end of ring ``rings``' tone."""
        return (rings - 1) * self.period + self.on

    def rings_elapsed(self, seconds: float) -> int:
        """How many rings had started ``seconds`` after ringing began."""
        if seconds < 0:
            return 0
        return int(seconds // self.period) + 1


@dataclass(frozen=True, slots=True)
class TimeBand:
    """A part of the day with its own salutation (早上好/中午好/下午好/晚上好)."""

    start: dt.time
    end: dt.time
    prompt: str

    def contains(self, t: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # wraps midnight


@dataclass(frozen=True, slots=True)
class OpenHours:
    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    endpoint: str
    wrap_up_seconds: float = 0.0  # after each call, no new call for this long (R5)


ANNOUNCE_KINDS = ("position", "wait", "both", "none")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """R5: how a waiting caller is kept informed, and when they are offered a callback.

    ``announce`` chooses what is said every ``announce_every_seconds``: the
    caller's place in line (``queue-ahead-N``), the expected wait
    (``queue-wait-N``, in minutes), or both. The expected wait is the number
    of callers ahead (and this one) times ``expected_handle_seconds`` shared
    among the queue's signed-in agents. After ``max_wait_seconds`` the caller
    is offered a callback; if they keep waiting the offer comes again after
    another ``max_wait_seconds``. Nothing here ever ends a waiting call.
    """

    announce: str = "position"
    announce_every_seconds: float = 45.0
    max_wait_seconds: float = 180.0
    callback_offer: bool = True
    expected_handle_seconds: float = 180.0
    offer_timeout_seconds: float = 8.0  # no key after the offer: keep waiting
    number_timeout_seconds: float = 10.0  # no key while typing a number: read back what we have


@dataclass(frozen=True, slots=True)
class FollowUpConfig:
    """R8: promises and callbacks, with due dates counted on the center's working days."""

    promise_working_days: int = 3  # "三个工作日后给您答复": the panel's default
    callback_working_days: int = 1  # a callback left in the queue is due this many working days on
    max_working_days: int = 30
    # Placing a callback (agent first, then the customer): how the customer is dialled
    # through the trunk, what their phone shows, and how long it may ring.
    customer_dial: str = "PJSIP/{number}@carrier"  # the carrier endpoint of asterisk-conf/pjsip.conf
    caller_id: str = ""
    customer_ring_seconds: float = 30.0


HOLD_STEP_SECONDS = 30  # every announced limit has its own recorded prompt: hold-announce-<s>


@dataclass(frozen=True, slots=True)
class HoldConfig:
    """R4/R7: how long a caller may be held and how they are kept company meanwhile.

    Limits are whole multiples of 30 s because each has its own pre-recorded
    announcement (``hold-announce-60`` says "请您稍等一分钟"); a limit with no
    prompt could not be announced, so it is refused rather than rounded.
    """

    default_limit_seconds: int = 60
    max_limit_seconds: int = 300
    reassure_every_seconds: float = 30.0
    agent_alert_before_seconds: float = 10.0
    limit_grace_seconds: float = 15.0

    def allowed_limits(self) -> tuple[int, ...]:
        return tuple(range(HOLD_STEP_SECONDS, self.max_limit_seconds + 1, HOLD_STEP_SECONDS))

    def is_allowed(self, seconds: float) -> bool:
        return seconds in self.allowed_limits()

    @staticmethod
    def announce_prompt(seconds: float) -> str:
        return f"hold-announce-{int(seconds)}"


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """R6: how long the caller has to agree, and the target to accept, before we give up."""

    consent_timeout_seconds: float = 15.0
    accept_timeout_seconds: float = 20.0


@dataclass(frozen=True, slots=True)
class KeyCodeConfig:
    """Softphone key codes for agents without the web panel (``callflow.keycodes``)."""

    hold: str = "*1"
    resume: str = "*0"
    transfer_agent: str = "*2"
    transfer_department: str = "*3"
    leave: str = "*9"
    end: str = "#"
    inter_digit_seconds: float = 3.0


@dataclass(frozen=True, slots=True)
class Department:
    """A transfer target by trade (售后, 技术…): its dial number and its agents."""

    name: str
    number: str
    agents: tuple[str, ...]
    queue: QueueConfig | None = None  # this department's queue settings; None: the defaults


HOLD_PROMPTS = ("hold-reassure", "hold-limit-ask", "hold-return", "requeue-apology")
TRANSFER_PROMPTS = ("transfer-consent", "transfer-announce", "transfer-failed")
#: R5: the place in line / the expected wait are pre-recorded per number, like hold limits.
QUEUE_AHEAD_MAX = 9  # queue-ahead-0 ("您是下一位") … queue-ahead-9, then queue-ahead-many
QUEUE_WAIT_MAX_MINUTES = 10  # queue-wait-1 … queue-wait-10 (minutes), then queue-wait-many
QUEUE_PROMPTS = (
    *(f"queue-ahead-{n}" for n in range(QUEUE_AHEAD_MAX + 1)), "queue-ahead-many",
    *(f"queue-wait-{n}" for n in range(1, QUEUE_WAIT_MAX_MINUTES + 1)), "queue-wait-many",
    "queue-continue",
)
#: R5/R8: the callback offer, the number read back digit by digit, the thanks.
CALLBACK_PROMPTS = (
    "callback-offer", "callback-number-is", "callback-confirm", "callback-enter",
    "callback-recorded", "callback-no-number", "callback-dialing",
    *(f"digit-{d}" for d in "0123456789"),
)
CLOSING_MORE_PROMPT = "closing-more"  # R8: "请问您还有其他问题吗？", when the agent chooses it
#: A flow with a menu says these when the caller presses nothing or a key the menu lacks.
MENU_PROMPTS = (MENU_NO_INPUT_PROMPT, MENU_INVALID_PROMPT)


def queue_ahead_prompt(ahead: int) -> str:
    return f"queue-ahead-{ahead}" if ahead <= QUEUE_AHEAD_MAX else "queue-ahead-many"


def queue_wait_prompt(seconds: float) -> str:
    minutes = max(1, -(-int(seconds) // 60))
    return f"queue-wait-{minutes}" if minutes <= QUEUE_WAIT_MAX_MINUTES else "queue-wait-many"


#: The default pause between the end of ring N's tone and the answer: long enough that the
#: caller has heard the ring in full, short of the next ring (R1).
ANSWER_DELAY_SECONDS = 0.5
#: How long a caller who presses nothing may take to reach an agent's phone before
#: check-config warns (``flows_check.max_seconds_to_agent``): half a minute of prompts
#: and menus is as long as a caller who only wants a person should wait.
MAX_SECONDS_TO_AGENT = 30.0

DEFAULT_BANDS = (
    TimeBand(dt.time(5), dt.time(11), "greeting-morning"),
    TimeBand(dt.time(11), dt.time(13), "greeting-noon"),
    TimeBand(dt.time(13), dt.time(18), "greeting-afternoon"),
    TimeBand(dt.time(18), dt.time(5), "greeting-evening"),
)


@dataclass(frozen=True, slots=True)
class CallFlowConfig:
    """Everything the engine needs to decide, per call, what to do next."""

    company: str = "礼仪客服中心"
    timezone: str = "Asia/Shanghai"
    cadence: RingCadence = RingCadence()
    answer_after_rings: int = 1
    # R1: the answer comes this long after ring N's tone has ended, in the silence before the
    # next ring: 1.0 + 0.5 = 1.5 s after arrival by default, like the dialplan fallback.
    answer_delay_seconds: float = ANSWER_DELAY_SECONDS
    agent_rings: int = 3
    bands: tuple[TimeBand, ...] = DEFAULT_BANDS
    open_hours: tuple[OpenHours, ...] = ()  # empty: open around the clock
    holidays: frozenset[dt.date] = frozenset()  # hours.holidays as written; also in calendar
    calendar: WorkCalendar = field(default_factory=WorkCalendar)  # days off, 调休 days worked
    closed_prompt: str = "greeting-closed"
    wait_prompt: str | None = "ring-wait"
    moh_class: str = "default"
    agent_retry_seconds: float = 2.0
    closing_prompts: tuple[str, ...] = ("closing-thanks",)
    idle_release_seconds: float = 600.0
    prompt_timeout_seconds: float = 30.0
    agents: tuple[AgentConfig, ...] = ()
    hold: HoldConfig = HoldConfig()
    transfer: TransferConfig = TransferConfig()
    keycodes: KeyCodeConfig = KeyCodeConfig()
    departments: tuple[Department, ...] = ()
    queue: QueueConfig = QueueConfig()
    followups: FollowUpConfig = FollowUpConfig()
    open_flow: Flow = DEFAULT_OPEN
    closed_flow: Flow = DEFAULT_CLOSED
    # check-config warns when a caller who presses nothing waits longer than this before an
    # agent's phone rings (``callflow.flow_timing``); nothing at run time depends on it
    max_seconds_to_agent: float = MAX_SECONDS_TO_AGENT
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"), compare=False)

    def local_time(self, epoch: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, self.tz)

    def answer_seconds(self) -> float:
        """When a caller is answered, in seconds after the call arrived (R1).

        Never inside ring N's tone (a ring the caller has not heard in full
        would be the instant pick-up R1 avoids), and never after ring 3's: the
        parser refuses a delay that would pass it, and a config built in code
        (``replace(cfg, answer_after_rings=3)`` keeps the 0.5 s delay) is held
        to it here.
        """
        planned = self.cadence.ring_end(self.answer_after_rings) + self.answer_delay_seconds
        return min(planned, self.cadence.ring_end(3))

    def greeting_for(self, epoch: float) -> str:
        """The greeting prompt for this moment: closed greeting outside hours, else the band's."""
        local = self.local_time(epoch)
        if not self.is_open(local):
            return self.closed_prompt
        for band in self.bands:
            if band.contains(local.time()):
                return band.prompt
        return self.bands[0].prompt  # unreachable for a validated config

    def is_open(self, local: dt.datetime) -> bool:
        """Open at this local moment: not a day off, and inside that day's opening hours.

        A moved working day (调休 Saturday or Sunday) keeps weekday hours: the
        notice does not say which weekday it stands in for, so it is open when
        any Monday–Friday opening hours cover the time.
        """
        day = local.date()
        if day in self.holidays or day in self.calendar.holidays:
            return False
        if not self.open_hours:
            return True
        weekdays = set(range(SATURDAY)) if day in self.calendar.workdays else {local.weekday()}
        return any(
            not weekdays.isdisjoint(oh.days) and oh.start <= local.time() < oh.end
            for oh in self.open_hours
        )

    def prompts_used(self) -> set[str]:
        names = {b.prompt for b in self.bands} | {self.closed_prompt} | set(self.closing_prompts)
        if self.wait_prompt:
            names.add(self.wait_prompt)
        names.update(self.hold.announce_prompt(s) for s in self.hold.allowed_limits())
        names.update(HOLD_PROMPTS)
        names.update(TRANSFER_PROMPTS)
        names.update(QUEUE_PROMPTS)
        names.update(CALLBACK_PROMPTS)
        names.add(CLOSING_MORE_PROMPT)
        for flow in (self.open_flow, self.closed_flow):
            names.update(step.prompt for step in flow.steps if step.prompt)
            if any(step.kind == MENU for step in flow.steps):
                names.update(MENU_PROMPTS)
        return names

    def due_date(self, epoch: float, working_days: int) -> dt.date:
        """The due date of a promise made at ``epoch``: that many working days on (R8).

        Counted from the center's local day on its calendar (weekends,
        holidays, 调休); 0 means today if it is a working day, else the next one.
        """
        today = self.local_time(epoch).date()
        if working_days <= 0:
            return today if self.calendar.is_working_day(today) else self.calendar.add_working_days(today, 1)
        return self.calendar.add_working_days(today, working_days)

    def queue_for(self, department: str) -> QueueConfig:
        """The queue settings of a department ("" = the general queue)."""
        dept = self.department(department) if department else None
        return dept.queue if dept is not None and dept.queue is not None else self.queue

    def queue_agents(self, department: str) -> tuple[str, ...]:
        """Who answers a queue: the department's agents, or () for any agent."""
        dept = self.department(department) if department else None
        return dept.agents if dept is not None else ()

    def wrap_up_for(self, agent: str) -> float:
        for a in self.agents:
            if a.name == agent:
                return a.wrap_up_seconds
        return 0.0

    def flow_for(self, epoch: float) -> Flow:
        """The open or the closed flow for this moment (hours, holidays, 调休)."""
        return self.open_flow if self.is_open(self.local_time(epoch)) else self.closed_flow

    def department(self, name_or_number: str) -> Department | None:
        """A department by its name (``售后``) or its dial number (``1``)."""
        for dept in self.departments:
            if name_or_number in (dept.name, dept.number):
                return dept
        return None


class _Reader:
    """Collects problems while reading a nested mapping, so all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(path, message))

    def section(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(_join(path, key), f"{value!r} — must be a mapping")
            return {}
        return value

    def number(
        self, data: Mapping[str, Any], key: str, path: str, default: float,
        lo: float, hi: float, why: str = "", integer: bool = False,
    ) -> float:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        where = _join(path, key)
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            kind = "a whole number" if integer else "a number"
            self.problem(where, f"{value!r} — must be {kind}{_why(why)}")
            return default
        if not lo <= value <= hi:
            rng = f"{lo:g}..{hi:g}"
            self.problem(where, f"{value} — must be {rng}{_why(why)}")
            return default
        return float(value)

    def text(self, data: Mapping[str, Any], key: str, path: str, default: str) -> str:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(_join(path, key), f"{value!r} — must be a non-empty text")
            return default
        return value.strip()

    def clock(self, value: Any, where: str) -> dt.time | None:
        if isinstance(value, int) and 0 <= value < 24 * 60:  # YAML 1.1 reads 09:00 as 540
            return dt.time(value // 60, value % 60)
        if isinstance(value, str):
            try:
                hh, mm = value.strip().split(":")
                if int(hh) == 24 and int(mm) == 0:
                    return dt.time.max  # "24:00": the end of the day
                return dt.time(int(hh), int(mm))
            except ValueError:
                pass
        self.problem(where, f"{value!r} — must be a time like \"09:00\"")
        return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _why(why: str) -> str:
    return f" ({why})" if why else ""


def parse_callflow(
    data: Mapping[str, Any], *, known_prompts: Iterable[str] | None = None
) -> tuple[CallFlowConfig | None, list[ConfigProblem]]:
    """Read the call-flow parts of a config; return the config or every problem found."""
    r = _Reader()
    if not isinstance(data, Mapping):
        return None, [ConfigProblem("(top)", "the config must be a mapping of sections")]

    company = r.section(data, "company", "")
    name = r.text(company, "name", "company", "")
    if not name:
        r.problem("company.name", "missing — the greeting must name the company (R2)")
    tz_name = r.text(company, "timezone", "company", "Asia/Shanghai")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        r.problem("company.timezone", f"{tz_name!r} — unknown time zone (e.g. Asia/Shanghai)")
        tz = ZoneInfo("Asia/Shanghai")

    ring = r.section(data, "ring", "")
    cad = r.section(ring, "cadence", "ring")
    cadence = RingCadence(
        on=r.number(cad, "on_seconds", "ring.cadence", 1.0, 0.01, 10.0),
        off=r.number(cad, "off_seconds", "ring.cadence", 4.0, 0.0, 10.0),
    )
    answer_after = int(r.number(ring, "answer_after_rings", "ring", 1, 1, 3, "R1", integer=True))
    agent_rings = int(r.number(ring, "agent_rings", "ring", 3, 1, 3, "R1", integer=True))
    delay = _read_answer_delay(r, ring, cadence, answer_after)

    bands = _read_bands(r, r.section(data, "greeting", ""))

    hours = r.section(data, "hours", "")
    open_hours = _read_open_hours(r, hours.get("open"), "hours.open")
    holidays = _read_dates(r, hours.get("holidays"), "hours.holidays")
    closed_prompt = r.text(hours, "closed_prompt", "hours", "greeting-closed")
    calendar = _read_calendar(r, r.section(data, "calendar", ""), holidays)

    waiting = r.section(data, "waiting", "")
    raw_wait = waiting.get("prompt", "ring-wait")
    wait_prompt: str | None = None  # "", false or null: no wait notice, music at once
    if not (raw_wait is None or raw_wait is False or raw_wait == ""):
        wait_prompt = r.text(waiting, "prompt", "waiting", "ring-wait")
    moh = r.text(waiting, "music_class", "waiting", "default")
    retry = r.number(waiting, "agent_retry_seconds", "waiting", 2.0, 0.05, 60.0)

    closing = r.section(data, "closing", "")
    closing_prompts = _read_names(r, closing.get("after_agent_hangup", ["closing-thanks"]),
                                  "closing.after_agent_hangup")
    if not closing_prompts:
        r.problem("closing.after_agent_hangup",
                  "empty — a caller left by the agent must hear the closing prompt (R9)")
    idle_min = r.number(closing, "idle_release_minutes", "closing", 10.0, 1.0, 24 * 60.0,
                        "R9: a silent line may be released only after a long idle time")
    prompt_timeout = r.number(closing, "prompt_timeout_seconds", "closing", 30.0, 1.0, 600.0)

    queue_raw = r.section(data, "queue", "")
    queue = _read_queue(r, queue_raw, "queue", QueueConfig())
    wrap_up = r.number(queue_raw, "wrap_up_seconds", "queue", 0.0, 0.0, WRAP_UP_MAX_SECONDS)
    agents = _read_agents(r, data.get("agents", []), wrap_up)
    hold = _read_hold(r, r.section(data, "hold", ""))
    transfer_s = r.section(data, "transfer", "")
    transfer = TransferConfig(
        consent_timeout_seconds=r.number(transfer_s, "consent_timeout_seconds", "transfer", 15.0,
                                         3.0, 120.0, "R6: no consent, no transfer"),
        accept_timeout_seconds=r.number(transfer_s, "accept_timeout_seconds", "transfer", 20.0,
                                        3.0, 120.0, "R6: the target must accept"),
    )
    keycodes = _read_keycodes(r, r.section(data, "keycodes", ""))
    departments = _read_departments(r, data.get("departments", []), {a.name for a in agents},
                                    queue)
    followups = _read_followups(r, r.section(data, "followups", ""))
    open_flow, closed_flow, flow_problems = read_flows(
        data.get("flows"), departments=_department_names(data.get("departments")))
    for path, message in flow_problems:
        r.problem(path, message)
    flows_check = r.section(data, "flows_check", "")
    _unknown_keys(r, flows_check, "flows_check", ("max_seconds_to_agent",))
    max_to_agent = r.number(flows_check, "max_seconds_to_agent", "flows_check",
                            MAX_SECONDS_TO_AGENT, 5.0, 600.0,
                            "a caller who presses nothing reaches an agent's phone within it")

    cfg = CallFlowConfig(
        company=name or "?", timezone=tz_name, cadence=cadence, answer_after_rings=answer_after,
        answer_delay_seconds=delay, agent_rings=agent_rings, bands=bands, open_hours=open_hours,
        holidays=holidays, calendar=calendar, closed_prompt=closed_prompt,
        wait_prompt=wait_prompt, moh_class=moh,
        agent_retry_seconds=retry, closing_prompts=closing_prompts,
        idle_release_seconds=idle_min * 60.0, prompt_timeout_seconds=prompt_timeout,
        agents=agents, hold=hold, transfer=transfer, keycodes=keycodes, departments=departments,
        queue=queue, followups=followups, open_flow=open_flow, closed_flow=closed_flow,
        max_seconds_to_agent=max_to_agent, tz=tz,
    )
    if known_prompts is not None:
        known = set(known_prompts)
        for prompt in sorted(cfg.prompts_used() - known):
            r.problem(_prompt_path(cfg, prompt), f"prompt {prompt!r} does not exist in scripts_zh/")
    if r.problems:
        return None, r.problems
    return cfg, []


def _read_answer_delay(
    r: _Reader, ring: Mapping[str, Any], cadence: RingCadence, answer_after: int
) -> float:
    """``ring.answer_delay_seconds``: how long after ring N's tone ends the caller is answered.

    R1 asks for the answer after ring N has rung in full and, whatever N, by
    the end of ring 3's tone. So the delay must fit in the silence after ring
    N (an answer inside ring N+1's tone would cut a ring short), and with
    N = 3 there is no room at all: the answer comes as ring 3's tone ends.
    The default shrinks to fit rather than make a short cadence invalid.
    """
    if "answer_guard_seconds" in ring:
        r.problem("ring.answer_guard_seconds", "no longer used — the answer now comes "
                  "answer_delay_seconds after ring N's tone ends, never inside it (R1); "
                  "remove it")
    room = min(cadence.off, cadence.ring_end(3) - cadence.ring_end(answer_after))
    delay = r.number(ring, "answer_delay_seconds", "ring", min(ANSWER_DELAY_SECONDS, room),
                     0.0, 10.0, "R1: seconds after ring N's tone ends")
    if delay > room + 1e-9:
        last = cadence.ring_end(3)
        if answer_after == 3:
            why = (f"with answer_after_rings 3 the answer must come as ring 3's tone ends, "
                   f"{last:g} s after arrival — the last moment R1 allows; use 0")
        else:
            why = (f"must be 0..{room:g}: the answer comes in the silence after ring "
                   f"{answer_after}'s tone, before ring {answer_after + 1} starts (R1)")
        r.problem("ring.answer_delay_seconds", f"{delay:g} — {why}")
        return min(ANSWER_DELAY_SECONDS, room)
    return delay


def _prompt_path(cfg: CallFlowConfig, prompt: str) -> str:
    for i, band in enumerate(cfg.bands):
        if band.prompt == prompt:
            return f"greeting.bands[{i}].prompt"
    if prompt == cfg.closed_prompt:
        return "hours.closed_prompt"
    if prompt == cfg.wait_prompt:
        return "waiting.prompt"
    if prompt.startswith("hold-announce-"):
        return "hold.max_limit_seconds"
    if prompt in HOLD_PROMPTS:
        return "hold"
    if prompt in TRANSFER_PROMPTS:
        return "transfer"
    for flow in (cfg.open_flow, cfg.closed_flow):
        for step in flow.steps:
            # the prompt is written as the value of the step's kind key (menu: menu-main)
            if step.prompt == prompt:
                return f"flows.{flow.name}.steps.{step.name}.{step.kind}"
            if prompt in MENU_PROMPTS and step.kind == MENU:
                return f"flows.{flow.name}.steps.{step.name}"
    if prompt in QUEUE_PROMPTS:
        return "queue"
    if prompt in CALLBACK_PROMPTS:
        return "queue.callback_offer"
    if prompt == CLOSING_MORE_PROMPT:
        return "closing"
    return "closing.after_agent_hangup"


def _read_hold(r: _Reader, hold: Mapping[str, Any]) -> HoldConfig:
    """R4 limits: whole 30 s steps (each has its announcement prompt), a bounded grace."""
    step = HOLD_STEP_SECONDS
    why = "R4: a multiple of 30 s, each limit has its own announcement prompt"
    max_limit = int(r.number(hold, "max_limit_seconds", "hold", 300, step, 1800, why, integer=True))
    if max_limit % step:
        r.problem("hold.max_limit_seconds", f"{max_limit} — must be a multiple of {step} ({why})")
        max_limit = 300
    default = int(r.number(hold, "default_limit_seconds", "hold", min(60, max_limit), step,
                           max_limit, why + ", at most max_limit_seconds", integer=True))
    if default % step:
        r.problem("hold.default_limit_seconds", f"{default} — must be a multiple of {step} ({why})")
        default = min(60, max_limit)
    return HoldConfig(
        default_limit_seconds=default,
        max_limit_seconds=max_limit,
        reassure_every_seconds=r.number(hold, "reassure_every_seconds", "hold", 30.0, 5.0, 120.0,
                                        "R4: never silence on hold"),
        agent_alert_before_seconds=r.number(hold, "agent_alert_before_seconds", "hold", 10.0, 0.0,
                                            step - 1, "must fall inside the shortest hold"),
        limit_grace_seconds=r.number(hold, "limit_grace_seconds", "hold", 15.0, 3.0, 60.0,
                                     "R4: never left waiting without end"),
    )


DTMF_KEYS = set("0123456789*#ABCD")


def _read_keycodes(r: _Reader, raw: Mapping[str, Any]) -> KeyCodeConfig:
    """Agent key codes: DTMF only, and no code may be the start of another (or it never fires)."""
    default = KeyCodeConfig()
    codes: dict[str, str] = {}
    for key in ("hold", "resume", "transfer_agent", "transfer_department", "leave"):
        value = raw.get(key, getattr(default, key))
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value) \
                or not set(str(value)) <= DTMF_KEYS:
            r.problem(f"keycodes.{key}", f"{value!r} — must be DTMF keys like \"*1\"")
            value = getattr(default, key)
        codes[key] = str(value)
    end = raw.get("end", default.end)
    if not isinstance(end, str) or len(end) != 1 or end not in DTMF_KEYS:
        r.problem("keycodes.end", f"{end!r} — must be one DTMF key like \"#\"")
        end = default.end
    for key, code in codes.items():
        if end in code:
            r.problem(f"keycodes.{key}", f"{code!r} contains the end key {end!r}")
        for other, other_code in codes.items():
            if other != key and other_code.startswith(code):
                r.problem(f"keycodes.{key}", f"{code!r} is the start of keycodes.{other} "
                          f"{other_code!r} — one of them could never be typed")
    gap = r.number(raw, "inter_digit_seconds", "keycodes", 3.0, 0.5, 15.0)
    return KeyCodeConfig(end=end, inter_digit_seconds=gap, **codes)


def _mapping_items(
    r: _Reader, raw: Sequence[Any], path: str, fields: str
) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """The mapping entries of a config list, with their location; any other entry is a problem."""
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            r.problem(where, f"{item!r} — must be a mapping with {fields}")
            continue
        yield i, where, item


def _read_departments(
    r: _Reader, raw: Any, agent_names: set[str], queue: QueueConfig
) -> tuple[Department, ...]:
    """Transfer targets by trade, each a queue; every agent named must exist, every number
    be unique. A department's ``queue:`` overrides the general ``queue:`` settings key by key."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        r.problem("departments", "must be a list of {name, number, agents}")
        return ()
    result: list[Department] = []
    names: set[str] = set()
    numbers: dict[str, int] = {}
    for i, where, item in _mapping_items(r, raw, "departments", "name, number, agents"):
        name = r.text(item, "name", where, "")
        if not name:
            r.problem(f"{where}.name", "missing")
        elif name in names:
            r.problem(f"{where}.name", f"{name!r} — listed twice")
        number = item.get("number")
        if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
            number = str(number)
        if not isinstance(number, str) or not number.isdigit():
            r.problem(f"{where}.number", f"{number!r} — must be digits, dialled after *3")
            number = None
        elif number in numbers:
            r.problem(f"{where}.number", f"{number!r} — already used by departments[{numbers[number]}]")
            number = None
        members = item.get("agents")
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, Sequence) or not members:
            r.problem(f"{where}.agents", "must list at least one agent name")
            members = []
        agents: list[str] = []
        for j, member in enumerate(members):
            if not isinstance(member, str) or member not in agent_names:
                r.problem(f"{where}.agents[{j}]", f"{member!r} — not an agent in agents")
            elif member not in agents:
                agents.append(member)
        own_queue: QueueConfig | None = None
        if item.get("queue") is not None:
            own_queue = _read_queue(r, r.section(item, "queue", where), f"{where}.queue", queue)
        if name and number is not None and agents and name not in names:
            names.add(name)
            numbers[number] = i
            result.append(Department(name, number, tuple(agents), own_queue))
        elif name:
            names.add(name)
    return tuple(result)


def _read_bands(r: _Reader, greeting: Mapping[str, Any]) -> tuple[TimeBand, ...]:
    raw = greeting.get("bands")
    if raw is None:
        return DEFAULT_BANDS
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        r.problem("greeting.bands", "must be a list of {from, to, prompt} (R2)")
        return DEFAULT_BANDS
    bands: list[TimeBand] = []
    for i, where, item in _mapping_items(r, raw, "greeting.bands", "from, to, prompt"):
        start = r.clock(item.get("from"), f"{where}.from")
        end = r.clock(item.get("to"), f"{where}.to")
        prompt = r.text(item, "prompt", where, "")
        if not prompt:
            r.problem(f"{where}.prompt", "missing — each band needs its greeting prompt (R2)")
        if start is not None and end is not None and prompt:
            if start == end:
                r.problem(where, "from and to are equal — an empty band")
            else:
                bands.append(TimeBand(start, end, prompt))
    if bands and len(bands) == len(raw):
        _check_day_covered(r, bands)
    return tuple(bands) or DEFAULT_BANDS


def _check_day_covered(r: _Reader, bands: list[TimeBand]) -> None:
    """Every minute of the day must have exactly one salutation (R2)."""
    for minute in range(24 * 60):
        t = dt.time(minute // 60, minute % 60)
        hits = [i for i, b in enumerate(bands) if b.contains(t)]
        if not hits:
            r.problem("greeting.bands", f"no band covers {t:%H:%M} — every hour needs a greeting (R2)")
            return
        if len(hits) > 1:
            where = ", ".join(f"[{i}]" for i in hits)
            r.problem("greeting.bands", f"bands {where} overlap at {t:%H:%M}")
            return


def _read_open_hours(r: _Reader, raw: Any, path: str) -> tuple[OpenHours, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        r.problem(path, "must be a list of {days, from, to}")
        return ()
    result = []
    for i, where, item in _mapping_items(r, raw, path, "days, from, to"):
        days_raw = item.get("days", list(WEEKDAYS[:5]))
        days: set[int] = set()
        for d in days_raw if isinstance(days_raw, Sequence) and not isinstance(days_raw, str) else [days_raw]:
            if isinstance(d, str) and d.lower()[:3] in WEEKDAYS:
                days.add(WEEKDAYS.index(d.lower()[:3]))
            else:
                r.problem(f"{where}.days", f"{d!r} — must be one of {', '.join(WEEKDAYS)}")
        start = r.clock(item.get("from"), f"{where}.from")
        end = r.clock(item.get("to"), f"{where}.to")
        if start is not None and end is not None:
            if end <= start:
                r.problem(where, "to must be later than from")
            else:
                result.append(OpenHours(frozenset(days), start, end))
    return tuple(result)


def _read_dates(r: _Reader, raw: Any, path: str) -> frozenset[dt.date]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        r.problem(path, "must be a list of dates like 2026-10-01")
        return frozenset()
    dates = set()
    for i, item in enumerate(raw):
        if isinstance(item, dt.date):
            dates.add(item)
            continue
        try:
            dates.add(dt.date.fromisoformat(str(item)))
        except ValueError:
            r.problem(f"{path}[{i}]", f"{item!r} — must be a date like 2026-10-01")
    return frozenset(dates)


def _read_calendar(
    r: _Reader, raw: Mapping[str, Any], hours_holidays: frozenset[dt.date]
) -> WorkCalendar:
    """The center's days off and moved working days (调休), from the State Council's notice.

    ``hours.holidays`` (the older, closed-days-only list) joins the calendar's
    holidays, so follow-up due dates and opening hours agree on the days off.
    A day both off and worked, or a "moved working day" that is already a
    weekday, is a typo in copying the notice: refused, not guessed at.
    """
    holidays = _read_date_items(r, raw.get("holidays"), "calendar.holidays")
    workdays = _read_date_items(r, raw.get("workdays"), "calendar.workdays")
    off = {d for _, d in holidays} | hours_holidays
    worked: set[dt.date] = set()
    for where, day in workdays:
        if day in off:
            r.problem(where, f"{day.isoformat()} — also listed as a holiday; "
                      "a day is either off or worked")
        elif day.weekday() < SATURDAY:
            r.problem(where, f"{day.isoformat()} is a {day:%A} — a moved working day (调休) "
                      "must be a Saturday or Sunday")
        else:
            worked.add(day)
    return WorkCalendar(holidays=frozenset(off), workdays=frozenset(worked))


def _read_date_items(r: _Reader, raw: Any, path: str) -> list[tuple[str, dt.date]]:
    """Each date of a list with its dotted path, so later checks can point at the entry."""
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        r.problem(path, f"{raw!r} — must be a list of dates like 2026-10-01")
        return []
    items: list[tuple[str, dt.date]] = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        day: dt.date | None = None
        if isinstance(item, dt.date) and not isinstance(item, dt.datetime):
            day = item
        elif isinstance(item, str):
            try:
                day = dt.date.fromisoformat(item.strip())
            except ValueError:
                day = None
        if day is None:
            r.problem(where, f"{item!r} — must be a date like 2026-10-01")
        else:
            items.append((where, day))
    return items


def _read_names(r: _Reader, raw: Any, path: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Sequence):
        r.problem(path, "must be a list of prompt names")
        return ()
    names = []
    for i, item in enumerate(raw):
        if isinstance(item, str) and item.strip():
            names.append(item.strip())
        else:
            r.problem(f"{path}[{i}]", f"{item!r} — must be a prompt name")
    return tuple(names)


def _department_names(raw: Any) -> tuple[str, ...]:
    """Every department name written, valid or not, so a flow's queue step naming a
    department with a problem of its own is not reported a second time."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return ()
    return tuple(item["name"].strip() for item in raw
                 if isinstance(item, Mapping) and isinstance(item.get("name"), str))


def _read_agents(r: _Reader, raw: Any, wrap_up: float = 0.0) -> tuple[AgentConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        r.problem("agents", "must be a list of {name, endpoint}")
        return ()
    agents: list[AgentConfig] = []
    seen: set[str] = set()
    for i, where, item in _mapping_items(r, raw, "agents", "name and endpoint"):
        name = r.text(item, "name", where, "")
        if not name:
            r.problem(f"{where}.name", "missing")
            continue
        if not all(c.isalnum() or c in "-_." for c in name):
            r.problem(f"{where}.name", f"{name!r} — letters, digits, - _ . only")
            continue
        if name in seen:
            r.problem(f"{where}.name", f"{name!r} — listed twice")
            continue
        seen.add(name)
        endpoint = r.text(item, "endpoint", where, f"PJSIP/{name}")
        if "/" not in endpoint:
            r.problem(f"{where}.endpoint", f"{endpoint!r} — must look like PJSIP/{name}")
            continue
        own_wrap_up = r.number(item, "wrap_up_seconds", where, wrap_up, 0.0, WRAP_UP_MAX_SECONDS)
        agents.append(AgentConfig(name, endpoint, own_wrap_up))
    return tuple(agents)


WRAP_UP_MAX_SECONDS = 600.0
QUEUE_KEYS = ("announce", "announce_every_seconds", "max_wait_seconds", "callback_offer",
              "expected_handle_seconds", "offer_timeout_seconds", "number_timeout_seconds")


def _unknown_keys(r: _Reader, raw: Mapping[str, Any], path: str, known: Sequence[str]) -> None:
    """A misspelt key would silently keep its default; name it instead."""
    for key in raw:
        if key not in known:
            r.problem(_join(path, str(key)), f"unknown key (known: {', '.join(known)})")


def _read_queue(r: _Reader, raw: Mapping[str, Any], path: str, base: QueueConfig) -> QueueConfig:
    """R5 settings of the general queue (``queue:``) or of one department's, over ``base``."""
    general = path == "queue"
    _unknown_keys(r, raw, path, (*QUEUE_KEYS, "wrap_up_seconds") if general else QUEUE_KEYS)
    announce = base.announce
    if raw.get("announce") is not None:
        value = raw["announce"]
        if value == "none":
            r.problem(_join(path, "announce"), "none — a waiting caller must hear their position "
                      "or the expected wait (R5); use position, wait or both")
        elif value in ANNOUNCE_KINDS:
            announce = value
        else:
            r.problem(_join(path, "announce"),
                      f"{value!r} — must be one of position, wait, both (R5)")
    offer = base.callback_offer
    if raw.get("callback_offer") is not None:
        if raw["callback_offer"] is False:
            r.problem(_join(path, "callback_offer"), "false — after the maximum wait the caller "
                      "must be offered a callback or to keep waiting (R5)")
        elif isinstance(raw["callback_offer"], bool):
            offer = raw["callback_offer"]
        else:
            r.problem(_join(path, "callback_offer"),
                      f"{raw['callback_offer']!r} — must be true or false (R5)")
    return QueueConfig(
        announce=announce,
        announce_every_seconds=r.number(
            raw, "announce_every_seconds", path, base.announce_every_seconds, 15.0, 300.0,
            "R5: a waiting caller hears where they are"),
        max_wait_seconds=r.number(raw, "max_wait_seconds", path, base.max_wait_seconds, 30.0,
                                  1800.0, "R5: no long waits in the queue"),
        callback_offer=offer,
        expected_handle_seconds=r.number(raw, "expected_handle_seconds", path,
                                         base.expected_handle_seconds, 30.0, 3600.0),
        offer_timeout_seconds=r.number(raw, "offer_timeout_seconds", path,
                                       base.offer_timeout_seconds, 3.0, 30.0),
        number_timeout_seconds=r.number(raw, "number_timeout_seconds", path,
                                        base.number_timeout_seconds, 3.0, 30.0),
    )


FOLLOWUP_KEYS = ("promise_working_days", "callback_working_days", "max_working_days",
                 "customer_dial", "caller_id", "customer_ring_seconds")


def _read_followups(r: _Reader, raw: Mapping[str, Any]) -> FollowUpConfig:
    """R8: the reply times promised and the way a callback reaches the customer."""
    path = "followups"
    default = FollowUpConfig()
    _unknown_keys(r, raw, path, FOLLOWUP_KEYS)
    most = int(r.number(raw, "max_working_days", path, default.max_working_days, 1, 60,
                        integer=True))
    promise = int(r.number(raw, "promise_working_days", path,
                           min(default.promise_working_days, most), 1, most,
                           "R8: a promise has a due date, at most max_working_days",
                           integer=True))
    callback = int(r.number(raw, "callback_working_days", path,
                            min(default.callback_working_days, most), 0, most,
                            "at most max_working_days", integer=True))
    dial = r.text(raw, "customer_dial", path, default.customer_dial)
    try:
        formatted = dial.format(number="0")
    except (KeyError, IndexError, ValueError):
        formatted = ""
    if "{number}" not in dial or "/" not in dial or not formatted:
        r.problem(f"{path}.customer_dial", f"{dial!r} — must be a dial string with {{number}}, "
                  "like PJSIP/{number}@trunk")
        dial = default.customer_dial
    caller_id = raw.get("caller_id", default.caller_id)
    if caller_id is None:
        caller_id = ""
    if isinstance(caller_id, int) and not isinstance(caller_id, bool):
        caller_id = str(caller_id)
    if not isinstance(caller_id, str):
        r.problem(f"{path}.caller_id", f"{caller_id!r} — must be text like "
                  "\"礼仪客服中心 <4008001234>\"")
        caller_id = default.caller_id
    return FollowUpConfig(
        promise_working_days=promise,
        callback_working_days=callback,
        max_working_days=most,
        customer_dial=dial,
        caller_id=caller_id.strip(),
        customer_ring_seconds=r.number(raw, "customer_ring_seconds", path,
                                       default.customer_ring_seconds, 10.0, 120.0),
    )
