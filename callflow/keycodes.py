"""Agent key codes typed on a softphone: ``*1`` hold, ``*0`` resume, ``*2`` 12 ``#`` transfer…

Agents without the web panel still need hold (R4, R7), warm transfer (R6) and
leaving the call (R8). Their keys reach us as ``ChannelDtmfReceived`` from the
agent's leg (the bridge absorbs them, so the caller hears nothing). This
module only turns a stream of digits into actions; the engine decides what an
action means in the call's current state and owns the inter-digit timer: when
it fires, ``timeout()`` discards a half-typed code so a stray ``*`` never waits
forever to be completed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from callflow.config import AgentConfig, KeyCodeConfig

HOLD = "hold"
RESUME = "resume"
TRANSFER_AGENT = "transfer-agent"
TRANSFER_DEPARTMENT = "transfer-department"
LEAVE = "leave"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class KeyAction:
    """What the agent typed: an action, its argument (digits before the end key), the keys."""

    kind: str
    arg: str = ""
    keys: str = ""


class KeyCodeParser:
    """Collects one agent's digits until they form a code, or cannot any more."""

    def __init__(self, codes: KeyCodeConfig) -> None:
        self.codes = codes
        self._simple = {codes.hold: HOLD, codes.resume: RESUME, codes.leave: LEAVE}
        self._with_arg = {codes.transfer_agent: TRANSFER_AGENT,
                          codes.transfer_department: TRANSFER_DEPARTMENT}
        self.buffer = ""

    @property
    def pending(self) -> bool:
        """Digits typed that are not yet a code: the inter-digit timer should run."""
        return bool(self.buffer)

    def feed(self, digit: str) -> KeyAction | None:
        """Add one key; return the action it completes, ``None`` while more keys may follow."""
        self.buffer += digit
        keys = self.buffer
        if keys in self._simple:
            return self._done(KeyAction(self._simple[keys], keys=keys))
        for prefix, kind in self._with_arg.items():
            if keys.startswith(prefix):
                if digit != self.codes.end or len(keys) == len(prefix):
                    return None  # still typing the number
                arg = keys[len(prefix):-1]
                return self._done(KeyAction(kind if arg else UNKNOWN, arg, keys))
        if any(code.startswith(keys) for code in (*self._simple, *self._with_arg)):
            return None
        if len(keys) == 1 and keys not in "*#":
            self.buffer = ""
            return None  # a lone digit outside a code (e.g. dialling habit): not an attempt
        return self._done(KeyAction(UNKNOWN, keys=keys))

    def timeout(self) -> KeyAction | None:
        """The agent stopped typing: a half-typed code is unknown, never guessed."""
        if not self.buffer:
            return None
        return self._done(KeyAction(UNKNOWN, keys=self.buffer))

    def _done(self, action: KeyAction) -> KeyAction:
        self.buffer = ""
        return action


def agent_for_digits(digits: str, agents: Iterable[AgentConfig]) -> str | None:
    """The agent an agent typed after ``*2``: their extension, their name, or their name's number.

    ``PJSIP/1001`` is reached by 1001; ``agent3`` by ``3`` when no other agent's
    name ends in the same number. Ambiguity gives ``None``: a wrong target is
    worse than asking the agent to use the panel.
    """
    agents = list(agents)
    for agent in agents:
        if agent.endpoint.split("/", 1)[-1] == digits or agent.name == digits:
            return agent.name
    matches = [a.name for a in agents if _trailing_digits(a.name) == digits]
    return matches[0] if len(matches) == 1 else None


def _trailing_digits(name: str) -> str:
    i = len(name)
    while i > 0 and name[i - 1].isdigit():
        i -= 1
    return name[i:]
