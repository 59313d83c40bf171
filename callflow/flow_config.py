"""Reading and checking the ``flows:`` section of the config.

A flow an admin writes is a promise about every caller who meets it, so it is
checked as a whole before any call is taken: a route to a step that does not
exist, a step nobody can reach, a loop a caller can never leave, a menu that
does nothing when the caller presses nothing (R5, R9), a flow that does not
start with the greeting (R2) or an open flow that never reaches an agent.
Every problem comes back with its dotted location (``flows.open.steps.main.
keys.2``) so ``liyi check-config`` can print the YAML line next to it.

The syntax (documented with an example in ``liyi.yaml``)::

    flows:
      open:
        start: greeting
        steps:
          greeting: {greeting: true, next: main}
          main: {menu: menu-main, keys: {"1": consult, "2": repair}, default: consult}
          repair: {record_name: true, next: repair-q}
          consult: {queue: 咨询}
          repair-q: {queue: 报修}

Each step is a mapping with exactly one *kind key*; its value is the step's
prompt (``play``, ``menu``; ``record_name`` and ``callback`` take ``true`` for
their default prompt), the department (``queue``: ``""`` for any agent) or
``true`` (``greeting``, ``close``). The other keys are the step's routes and
timings. Pure: plain mappings in, frozen ``Flow`` objects and problems out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callflow.flow import (
    CALLBACK,
    CALLBACK_PROMPT,
    CLOSE,
    DEFAULT_CLOSED,
    DEFAULT_OPEN,
    GREETING,
    MENU,
    NAME_PROMPT,
    PLAY,
    QUEUE,
    RECORD_NAME,
    STEP_KINDS,
    Flow,
    Step,
)

#: A problem: (dotted path, message), turned into ``ConfigProblem`` by ``config.py``.
Problem = tuple[str, str]


class _Problems(list[Problem]):
    """The problems found so far, in the order found."""

    def add(self, path: str, message: str) -> None:
        self.append((path, message))

FLOW_DEFAULTS = {"open": DEFAULT_OPEN, "closed": DEFAULT_CLOSED}

#: What each kind of step may say besides its kind key.
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    GREETING: ("next",),
    PLAY: ("next",),
    MENU: ("keys", "default", "repeat", "timeout_seconds"),
    RECORD_NAME: ("next", "max_seconds"),
    QUEUE: (),
    CALLBACK: ("next",),
    CLOSE: (),
}
#: Kinds that must say where the caller goes next (they cannot end a call).
NEXT_REQUIRED = frozenset({GREETING, PLAY, RECORD_NAME})
#: Kinds whose prompt may be left out (``true``): the engine has a default for them.
DEFAULT_PROMPTS = {RECORD_NAME: NAME_PROMPT, CALLBACK: CALLBACK_PROMPT}
MENU_KEYS = "0123456789*#"
STEP_NAME_CHARS = "-_"

# Bounds of the timed settings, with the reason an admin sees when outside them.
REPEAT_RANGE = (0, 5)
TIMEOUT_RANGE = (2.0, 30.0)
MAX_SECONDS_RANGE = (1.0, 10.0)

_STEP_DEFAULTS = Step("", PLAY)  # the default repeat, timeout and recording length
_ENDS = "a queue, a callback or the closing"


@dataclass
class _Parsed:
    """One flow as read, with where each route was written (for pointing at it)."""

    name: str
    steps: dict[str, Step] = field(default_factory=dict)
    # every route as written: (the step it leaves, its path in the config, the step it names)
    routes: list[tuple[str, str, str]] = field(default_factory=list)
    silent: dict[str, str] = field(default_factory=dict)  # step -> path of its no-input route
    broken: set[str] = field(default_factory=set)  # steps with a problem of their own
    written: set[str] = field(default_factory=set)  # every step name in the config, read or not

    def path(self, step: str = "") -> str:
        base = f"flows.{self.name}"
        return f"{base}.steps.{step}" if step else base


def read_flows(
    raw: Any, *, departments: Iterable[str]
) -> tuple[Flow, Flow, list[Problem]]:
    """The open and the closed flow from the ``flows:`` section, and every problem in it.

    ``raw`` is the section's value (``None`` when the config has none);
    ``departments`` the department names a ``queue`` step may name. A flow
    left out is the default one (greet, then queue for any agent / close).
    The flows returned are meaningful only when the problem list is empty.
    """
    problems = _Problems()
    if raw is None:
        return DEFAULT_OPEN, DEFAULT_CLOSED, problems
    if not isinstance(raw, Mapping):
        problems.add("flows", f"{raw!r} — must be a mapping with open and/or closed")
        return DEFAULT_OPEN, DEFAULT_CLOSED, problems
    for key in raw:
        if key not in FLOW_DEFAULTS:
            problems.add(f"flows.{key}", "unknown flow — there are two: open (opening "
                         "hours) and closed (after hours and holidays)")
    known = tuple(dict.fromkeys(departments))  # as written, for the message naming them
    flows = [_read_flow(name, raw.get(name), known, problems) for name in FLOW_DEFAULTS]
    return flows[0], flows[1], problems


def _read_flow(name: str, raw: Any, departments: tuple[str, ...],
               problems: _Problems) -> Flow:
    default = FLOW_DEFAULTS[name]
    where = f"flows.{name}"
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        problems.add(where, f"{raw!r} — must be a mapping with start and steps")
        return default
    for key in raw:
        if key not in ("start", "steps"):
            problems.add(f"{where}.{key}", "unknown key — a flow has start and steps")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, Mapping) or not steps_raw:
        problems.add(f"{where}.steps", f"{steps_raw!r} — must be a mapping of step names "
                     "to steps, like greeting: {greeting: true, next: main}")
        return default
    flow = _Parsed(name, written={str(n) for n in steps_raw})
    for step_name, body in steps_raw.items():
        step = _read_step(flow, step_name, body, departments, problems)
        if step is not None:
            flow.steps[step.name] = step
    start = _read_start(flow, raw, problems)
    if start is not None:
        _check_graph(flow, start, problems)
    return Flow(name, start or "", tuple(flow.steps.values()))


def _read_start(flow: _Parsed, raw: Mapping[str, Any], problems: _Problems) -> str | None:
    """The first step: it must exist and be the greeting (R2)."""
    where = f"{flow.path()}.start"
    start = raw.get("start")
    if start is None:
        problems.add(where, "missing — name the first step (the greeting, R2)")
        return None
    if not isinstance(start, str) or start not in flow.steps:
        problems.add(where, f"{start!r} — no such step")
        return None
    if flow.steps[start].kind != GREETING:
        problems.add(where, f"{start!r} is a {flow.steps[start].kind} step — the first step "
                     "must be the greeting (R2: time of day and company come first)")
    return start


def _read_step(flow: _Parsed, name: Any, body: Any, departments: tuple[str, ...],
               problems: _Problems) -> Step | None:
    """One step: exactly one kind key, only that kind's settings, each within its bounds."""
    where = flow.path(str(name))
    if not isinstance(name, str) or not name or \
            not all(c.isalnum() or c in STEP_NAME_CHARS for c in name):
        problems.add(where, f"{name!r} — a step name is text: letters, digits, - and _")
        return None
    if not isinstance(body, Mapping):
        problems.add(where, f"{body!r} — must be a mapping like "
                     "{play: prompt-name, next: step}")
        return None
    kinds = [k for k in body if k in STEP_KINDS]
    if len(kinds) != 1:
        if kinds:
            problems.add(where, f"{len(kinds)} kinds ({', '.join(kinds)}) — a step does "
                         "exactly one thing")
        else:
            strangers = [repr(k) for k in body if k not in _ALL_FIELDS]
            hint = f" ({', '.join(strangers)} is not one)" if strangers else ""
            problems.add(where, f"no kind{hint} — needs exactly one of "
                         f"{', '.join(STEP_KINDS)}")
        return None
    kind = kinds[0]
    before = len(problems)
    for key in body:
        if key != kind and key not in STEP_FIELDS[kind]:
            takes = ", ".join(STEP_FIELDS[kind]) or "nothing but its kind key"
            problems.add(f"{where}.{key}", f"not a setting of a {kind} step "
                         f"(it takes {takes})")
    fields: dict[str, Any] = {}
    value = body[kind]
    if kind in (GREETING, CLOSE):
        if value is not True and value is not None:
            why = ("the greeting prompt follows greeting.bands, or hours.closed_prompt "
                   "after hours") if kind == GREETING else \
                "the closing prompts are closing.after_agent_hangup"
            problems.add(f"{where}.{kind}", f"{value!r} — must be true ({why})")
    elif kind == QUEUE:
        fields["department"] = _read_department(f"{where}.queue", value, departments, problems)
    else:
        fields["prompt"] = _read_prompt(f"{where}.{kind}", kind, value, problems)
    nxt = _read_next(flow, name, where, kind, body, problems)
    if nxt is not None:
        fields["next"] = nxt
    if kind == MENU:
        fields.update(_read_menu(flow, name, where, body, problems))
    if kind == RECORD_NAME:
        fields["max_seconds"] = _number(body, "max_seconds", where,
                                        _STEP_DEFAULTS.max_seconds, MAX_SECONDS_RANGE, problems)
    if len(problems) > before:
        flow.broken.add(name)
    return Step(name, kind, **fields)


def _read_department(where: str, value: Any, departments: tuple[str, ...],
                     problems: _Problems) -> str:
    """The queue's department by name; ``""`` (or nothing) is any agent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(where, f"{value!r} — must be a department name, or \"\" for any agent")
        return ""
    name: str = value.strip()
    if name and name not in departments:
        known = ", ".join(departments) or "none are configured"
        problems.add(where, f"{name!r} — no such department (departments: {known}; "
                     "\"\" queues for any agent)")
    return name


def _read_prompt(where: str, kind: str, value: Any, problems: _Problems) -> str:
    default = DEFAULT_PROMPTS.get(kind)
    if default is not None and (value is True or value is None):
        return default
    if isinstance(value, str) and value.strip():
        return value.strip()
    accepted = "a prompt name, or true for the default " + default if default else \
        "a prompt name from scripts_zh/"
    problems.add(where, f"{value!r} — must be {accepted}")
    return default or ""


def _read_next(flow: _Parsed, name: str, where: str, kind: str, body: Mapping[str, Any],
               problems: _Problems) -> str | None:
    """Where the caller goes after this step (for a callback: when they decline or are silent)."""
    if "next" not in STEP_FIELDS[kind]:
        return None
    value = body.get("next")
    if value is None or value == "":
        if kind in NEXT_REQUIRED:
            problems.add(f"{where}.next", f"missing — after a {kind.replace('_', ' ')} step "
                         "the caller must go on somewhere")
        return None
    if not isinstance(value, str):
        problems.add(f"{where}.next", f"{value!r} — must be a step name")
        return None
    flow.routes.append((name, f"{where}.next", value))
    flow.silent[name] = f"{where}.next"
    return value


def _read_menu(flow: _Parsed, name: str, where: str, body: Mapping[str, Any],
               problems: _Problems) -> dict[str, Any]:
    """A menu's keys (single DTMF digits), its default, and its repeat and timeout."""
    fields: dict[str, Any] = {}
    raw_keys = body.get("keys")
    keys: dict[str, str] = {}
    if not isinstance(raw_keys, Mapping) or not raw_keys:
        problems.add(f"{where}.keys", f"{raw_keys!r} — must map keys to steps, "
                     "like {\"1\": consult, \"2\": repair}")
    else:
        for key, target in raw_keys.items():
            digit = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None
            at = f"{where}.keys.{key}"
            if digit is None or len(digit) != 1 or digit not in MENU_KEYS:
                problems.add(at, f"{key!r} — a menu key is one of 0-9, * or # "
                             "(quote * and # in YAML)")
            elif digit in keys:
                problems.add(at, f"{key!r} — key {digit} is listed twice")
            elif not isinstance(target, str) or not target:
                problems.add(at, f"{target!r} — must be a step name")
            else:
                keys[digit] = target
                flow.routes.append((name, at, target))
    fields["keys"] = tuple(keys.items())
    default = body.get("default")
    if default is None or default == "":
        problems.add(f"{where}.default", "missing — when the caller presses nothing the "
                     "menu must still lead somewhere (R5/R9: no input never strands the "
                     "caller or hangs up)")
    elif not isinstance(default, str):
        problems.add(f"{where}.default", f"{default!r} — must be a step name")
    else:
        fields["default"] = default
        flow.routes.append((name, f"{where}.default", default))
        flow.silent[name] = f"{where}.default"
    fields["repeat"] = int(_number(body, "repeat", where, _STEP_DEFAULTS.repeat, REPEAT_RANGE,
                                   problems, integer=True))
    fields["timeout_seconds"] = _number(body, "timeout_seconds", where,
                                        _STEP_DEFAULTS.timeout_seconds, TIMEOUT_RANGE, problems)
    return fields


def _number(body: Mapping[str, Any], key: str, where: str, default: float,
            bounds: tuple[float, float], problems: _Problems, *,
            integer: bool = False) -> float:
    if key not in body or body[key] is None:
        return default
    value = body[key]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        problems.add(f"{where}.{key}",
                     f"{value!r} — must be {'a whole number' if integer else 'a number'}")
        return default
    lo, hi = bounds
    if not lo <= value <= hi:
        problems.add(f"{where}.{key}", f"{value} — must be {lo:g}..{hi:g}")
        return default
    return float(value)


def _check_graph(flow: _Parsed, start: str, problems: _Problems) -> None:
    """Routes, reachability, ways out, and the rules about the greeting and the queue."""
    steps = flow.steps
    for step_name, path, target in flow.routes:
        if target not in steps:
            if target not in flow.written:  # else the step is there, with its own problem
                problems.add(path, f"routes to {target!r} — no such step")
            flow.broken.add(step_name)
        elif target == start and steps[start].kind == GREETING:
            problems.add(path, f"routes back to the greeting {start!r} — a caller is "
                         "greeted once, first (R2)")
    for step in steps.values():
        if step.kind == GREETING and step.name != start and steps[start].kind == GREETING:
            problems.add(flow.path(step.name), f"a second greeting — the greeting comes "
                         f"once, as the first step {start!r} (R2)")

    order = _reachable(steps, start)
    for step in steps.values():
        if step.name not in order:
            problems.add(flow.path(step.name), f"unreachable — no route from {start!r} "
                         "leads here")

    ending = _reaching_an_end(steps)
    covered: set[str] = set()
    for name in order:
        if name in ending or name in covered:
            continue
        trap = _reachable(steps, name)  # none of these reach an end either
        covered.update(trap)
        if trap.keys() & flow.broken:
            continue  # a missing route already explains it
        loop = [n for n in trap if any(n in _reachable(steps, t) for t in steps[n].exits()
                                       if t in steps)]
        loop = loop or list(trap)
        went = f"{loop[0]!r} leads only back to itself" if len(loop) == 1 else \
            f"{', '.join(loop)} lead only to each other"
        problems.add(flow.path(loop[0]), f"loop without exit: {went} — none reaches "
                     f"{_ENDS} (the caller would be stranded, R5/R9)")
    _check_silent_paths(flow, order, ending, problems)

    if flow.name == "open" and not any(steps[n].kind == QUEUE for n in order):
        problems.add(flow.path(), f"no queue step reachable from {start!r} — callers in "
                     "opening hours could never reach an agent")


def _check_silent_paths(flow: _Parsed, order: Mapping[str, None], ending: set[str],
                        problems: _Problems) -> None:
    """A caller who never presses a key must still arrive at an end (R5/R9).

    Each step has at most one no-input route (``next``, or a menu's
    ``default``), so the silent path from a step is a line that either ends
    or runs into a cycle; each such cycle is reported once.
    """
    steps = flow.steps
    reported: set[str] = set()
    for first in order:
        if first not in ending:
            continue  # already reported as a loop without exit
        path: list[str] = []
        name: str | None = first
        while name is not None and name in ending and name not in path:
            if name in reported:
                break
            path.append(name)
            name = _silent_exit(steps[name])
        if name is None or name not in path:
            continue
        cycle = path[path.index(name):]
        reported.update(cycle)
        entry = cycle[0]
        problems.add(flow.silent[entry], f"a caller who presses nothing goes round "
                     f"{' → '.join(cycle)} → {entry} forever — without a key the flow "
                     f"must still reach {_ENDS} (R5/R9)")


def _silent_exit(step: Step) -> str | None:
    if step.kind == MENU:
        return step.default or None
    return step.next or None


def _reachable(steps: Mapping[str, Step], start: str) -> dict[str, None]:
    """Steps reachable from ``start`` (itself included), in breadth-first order."""
    seen: dict[str, None] = {start: None}
    queue = [start]
    while queue:
        for target in steps[queue.pop(0)].exits():
            if target in steps and target not in seen:
                seen[target] = None
                queue.append(target)
    return seen


def _reaching_an_end(steps: Mapping[str, Step]) -> set[str]:
    """Steps from which some route leads to a queue, the closing, or a callback that ends."""
    ending = {s.name for s in steps.values() if _is_end(s)}
    grew = True
    while grew:
        grew = False
        for step in steps.values():
            if step.name not in ending and any(t in ending for t in step.exits()):
                ending.add(step.name)
                grew = True
    return ending


def _is_end(step: Step) -> bool:
    return step.kind in (QUEUE, CLOSE) or (step.kind == CALLBACK and not step.next)


_ALL_FIELDS = frozenset(STEP_KINDS) | {f for fs in STEP_FIELDS.values() for f in fs}
