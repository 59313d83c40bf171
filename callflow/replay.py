"""Events as data: written to the call log as they happen, replayed later.

The log keeps every event a call's engine received, in order. Feeding them to
a fresh engine must reproduce the same end state and compliance record; that
is what makes the log trustworthy evidence and lets a rule change be
re-scored against past calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from callflow import commands as c
from callflow.config import CallFlowConfig
from callflow.engine import CallEngine
from callflow.events import EVENT_TYPES, Event


def event_to_dict(event: Event) -> dict[str, Any]:
    data = dataclasses.asdict(event)
    data["type"] = type(event).__name__
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event; unknown fields are dropped so older logs stay readable."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


def replay(config: CallFlowConfig, call_id: str, events: Iterable[Event]) -> tuple[CallEngine, list[c.Command]]:
    engine = CallEngine(config, call_id)
    out: list[c.Command] = []
    for event in events:
        out.extend(engine.handle(event))
    return engine, out
