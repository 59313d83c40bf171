"""How long a caller who presses nothing takes to reach an agent's phone.

A menu, a name step and a wait notice each cost the caller seconds before a
person's phone rings; added up they can turn a kind flow into a long one (the
first example config kept a silent caller 56 s from any agent). The caller who
presses nothing is the one who waits longest — every menu times out, every
repeat is said — so that path is the one worth measuring before a call meets
it: ``liyi check-config`` warns when it runs past
``flows_check.max_seconds_to_agent``.

The path is read from the flow as the engine walks it (``engine.py``,
``steps.py``, ``waiting.py``): the answer (R1), the greeting (R2), then step
by step — a menu is its prompt and timeout, said again ``repeat`` times after
the no-input apology, then its ``default``; a name step is its prompt and the
whole recording (a silent caller never presses #); a callback offer is its
prompt and the offer timeout, then ``next``; a queue step is the wait notice,
then the first agent is rung (if one is free). Prompt lengths come from the
caller of this module (``prompt_seconds``), who reads the recordings: this
module does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from callflow import flow as fl
from callflow.config import CallFlowConfig, ConfigProblem

@dataclass(frozen=True, slots=True)
class Leg:
    """One stretch of the silent path: what the caller hears or waits through, and for how long."""

    what: str
    seconds: float


@dataclass(frozen=True, slots=True)
class SilentPath:
    """A flow walked by a caller who presses nothing, from the first ring.

    ``queue`` is the department the caller ends up waiting for ("" = any
    agent), or None when the path never reaches an agent: it ends in the
    closing (a closed flow), or goes round a loop only a key could leave.
    """

    flow: str
    legs: tuple[Leg, ...]
    queue: str | None
    loops: bool = False

    @property
    def seconds(self) -> float:
        """Seconds from the first ring to the end of the path (an agent rung, or the closing)."""
        return sum(leg.seconds for leg in self.legs)

    @property
    def reaches_agent(self) -> bool:
        return self.queue is not None

    def summary(self) -> str:
        """"answer 1.5 s + greeting-evening 6.1 s + …", the legs as an admin reads them."""
        return " + ".join(f"{leg.what} {leg.seconds:.1f} s" for leg in self.legs)


def silent_path(
    cfg: CallFlowConfig,
    flow: fl.Flow,
    prompt_seconds: Callable[[str], float],
    *,
    greeting: str | None = None,
) -> SilentPath:
    """Walk ``flow`` as a caller who presses nothing and never hangs up.

    ``greeting`` is the greeting prompt heard; None takes the longest one the
    flow can play (every time band's for the open flow, the closed greeting
    for the closed flow), so the figure holds at any hour.
    """
    if greeting is None:
        candidates = [cfg.closed_prompt] if flow.name == "closed" else [b.prompt for b in cfg.bands]
        greeting = max(candidates, key=prompt_seconds)
    legs: list[Leg] = [Leg("answer", cfg.answer_seconds()),
                       Leg(greeting, prompt_seconds(greeting))]
    first = flow.first()
    name = first.next if first.kind == fl.GREETING else first.name
    seen: set[str] = set()
    while name:
        if name in seen:
            return SilentPath(flow.name, tuple(legs), None, loops=True)
        seen.add(name)
        step = flow.step(name)
        kind = step.kind
        if kind in (fl.PLAY, fl.GREETING):
            prompt = step.prompt or greeting
            legs.append(Leg(prompt, prompt_seconds(prompt)))
            name = step.next
        elif kind == fl.MENU:
            said = prompt_seconds(step.prompt) + step.timeout_seconds
            again = prompt_seconds(fl.MENU_NO_INPUT_PROMPT) + said
            times = f" ×{step.repeat + 1}" if step.repeat else ""
            legs.append(Leg(f"menu {step.name}{times}", said + step.repeat * again))
            name = step.default
        elif kind == fl.RECORD_NAME:
            prompt = step.prompt or fl.NAME_PROMPT
            legs.append(Leg(prompt, prompt_seconds(prompt)))
            legs.append(Leg("name recording", float(math.ceil(step.max_seconds))))
            name = step.next
        elif kind == fl.CALLBACK:
            prompt = step.prompt or fl.CALLBACK_PROMPT
            # the flow's offer waits with the general queue's timeout (no queue chosen yet)
            legs.append(Leg(prompt, prompt_seconds(prompt) + cfg.queue.offer_timeout_seconds))
            name = step.next
        elif kind == fl.QUEUE:
            if cfg.wait_prompt:
                legs.append(Leg(cfg.wait_prompt, prompt_seconds(cfg.wait_prompt)))
            return SilentPath(flow.name, tuple(legs), step.department)
        else:  # close
            break
    return SilentPath(flow.name, tuple(legs), None)


def slow_flow_warnings(
    cfg: CallFlowConfig, prompt_seconds: Callable[[str], float]
) -> list[ConfigProblem]:
    """Flows where a caller who presses nothing waits too long for an agent.

    Warnings, not problems: the flow is sound (nobody is stranded or cut
    off), only slow, and the admin may have reasons; ``liyi check-config``
    prints them and still accepts the config. A closed flow that ends in the
    closing is expected to reach no agent and is not warned about.
    """
    limit = cfg.max_seconds_to_agent
    warnings: list[ConfigProblem] = []
    for flow in (cfg.open_flow, cfg.closed_flow):
        path = silent_path(cfg, flow, prompt_seconds)
        where = f"flows.{flow.name}"
        if path.reaches_agent and path.seconds > limit:
            warnings.append(ConfigProblem(
                where, f"a caller who presses nothing waits {path.seconds:.1f} s before an "
                f"agent's phone rings ({path.summary()}) — more than "
                f"flows_check.max_seconds_to_agent ({limit:g} s); shorten the prompts, or a "
                "menu's repeat or timeout_seconds"))
    return warnings
