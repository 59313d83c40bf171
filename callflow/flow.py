"""Call flows: the steps an admin lays out for callers, open and closed.

A flow is a small graph of named steps. The engine walks it (``engine.py``,
``steps.py``); this module holds the model, the defaults that reproduce the
plain "greet, then queue for any agent" center, and the reading and checking
of the ``flows:`` section of the config (``flow_config.read_flows``), so that a flow
that could strand a caller — a step nobody reaches, a loop with no way out,
a menu that does nothing on silence — is refused before a call meets it.

Step kinds (exactly one per step):

- ``greeting``: the time-of-day greeting with the company name (R2), or the
  closed greeting in the closed flow; then ``next``.
- ``play``: a prompt, then ``next``.
- ``menu``: a prompt of choices; ``keys`` maps a digit to a step. No key
  within ``timeout_seconds`` or a key not in the menu: the menu is said again
  up to ``repeat`` times, then ``default`` (never a hang-up).
- ``record_name``: "请在提示音后说出您的姓名" then a recording of at most
  ``max_seconds`` kept with the call and played to a transfer target (R3, R6).
- ``queue``: wait for an agent of ``department`` ("" = any agent) (R5). End.
- ``callback``: offer to leave a callback number (1) — declined or no
  answer: ``next``. Accepted: the number is taken, read back, confirmed,
  and the call closes with thanks. End when ``next`` is empty.
- ``close``: the closing prompts, line open until the caller hangs up (R9). End.
"""

from __future__ import annotations

from dataclasses import dataclass

GREETING = "greeting"
PLAY = "play"
MENU = "menu"
RECORD_NAME = "record_name"
QUEUE = "queue"
CALLBACK = "callback"
CLOSE = "close"

STEP_KINDS = (GREETING, PLAY, MENU, RECORD_NAME, QUEUE, CALLBACK, CLOSE)
#: Steps after which the flow is over (the caller waits, or is closed).
TERMINAL = frozenset({QUEUE, CLOSE})

NAME_PROMPT = "name-ask"
CALLBACK_PROMPT = "callback-offer-closed"
MENU_NO_INPUT_PROMPT = "menu-no-input"
MENU_INVALID_PROMPT = "menu-invalid"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a flow; which fields matter depends on ``kind`` (see the module doc)."""

    name: str
    kind: str
    prompt: str = ""  # play / menu / record_name / callback
    next: str = ""  # greeting / play / record_name / callback (declined)
    keys: tuple[tuple[str, str], ...] = ()  # menu: (digit, step name)
    default: str = ""  # menu: after the repeats with no (valid) key
    repeat: int = 2  # menu: times said again on no / invalid input before default
    timeout_seconds: float = 6.0  # menu: wait for a key after the prompt ends
    max_seconds: float = 5.0  # record_name
    department: str = ""  # queue: "" = any agent

    def key_target(self, digit: str) -> str | None:
        for key, target in self.keys:
            if key == digit:
                return target
        return None

    def exits(self) -> tuple[str, ...]:
        """The steps this one can lead to (for reachability and loop checks)."""
        out = [self.next] if self.next else []
        out += [target for _, target in self.keys]
        if self.default:
            out.append(self.default)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class Flow:
    """A named flow (``open`` or ``closed``): its first step and all its steps."""

    name: str
    start: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def first(self) -> Step:
        return self.step(self.start)


#: Without a ``flows:`` section: greet, then wait for any agent (the ring-wait notice and
#: music come with the queue step); closed: the closed greeting, then the closing.
DEFAULT_OPEN = Flow("open", "greeting", (
    Step("greeting", GREETING, next="queue"),
    Step("queue", QUEUE),
))
DEFAULT_CLOSED = Flow("closed", "greeting", (
    Step("greeting", GREETING, next="close"),
    Step("close", CLOSE),
))
