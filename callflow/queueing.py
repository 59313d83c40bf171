"""The waiting line of each queue: who is first, how many are ahead, how long to wait (R5).

Calls are engines of their own, so the order between them lives here, with
the controller: each call's place is set from its engine after every step
(``set``) and read when the call asks for an agent. A caller sent back to
the queue (their agent left) stands before everyone else (R6.5); otherwise
first come, first served. The expected wait is a plain estimate — the
callers up to and including this one, times the configured handling time,
shared among the queue's signed-in agents — good enough to tell a caller
"about three minutes", and never presented as a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Place:
    queue: str
    since: float
    first: bool  # sent back to the queue: served before the others
    ringing: bool  # an agent's phone is ringing for this caller now

    def key(self) -> tuple[bool, float]:
        return (not self.first, self.since)


class WaitingLine:
    """Every waiting caller's place; owned by one event loop, not thread-safe."""

    def __init__(self) -> None:
        self._places: dict[str, Place] = {}

    def __len__(self) -> int:
        return len(self._places)

    def set(self, call_id: str, queue: str | None, *, since: float = 0.0, first: bool = False,
            ringing: bool = False) -> None:
        """Put (or keep) ``call_id`` in ``queue``; ``None`` takes it out of every line."""
        if queue is None:
            self._places.pop(call_id, None)
            return
        place = Place(queue, since, first, ringing)
        if self._places.get(call_id) != place:
            self._places[call_id] = place

    def place(self, call_id: str) -> Place | None:
        return self._places.get(call_id)

    def ahead(self, call_id: str) -> int:
        """How many callers of the same queue will be served before this one."""
        mine = self._places.get(call_id)
        if mine is None:
            return 0
        mine_key = (mine.key(), call_id)
        return sum(1 for other, p in self._places.items()
                   if other != call_id and p.queue == mine.queue and (p.key(), other) < mine_key)

    def waiting_before(self, call_id: str) -> bool:
        """Someone earlier in this caller's queue is waiting with no agent ringing for them yet.

        They get the next free agent first; this caller is told "no agent
        free" and keeps their place.
        """
        mine = self._places.get(call_id)
        if mine is None:
            return False
        key = mine.key()
        return any(p.queue == mine.queue and not p.ringing and (p.key(), other) < (key, call_id)
                   for other, p in self._places.items() if other != call_id)

    def expected_wait(self, call_id: str, *, agents: int, handle_seconds: float) -> float:
        """Seconds until this caller's turn, roughly; rounded up to whole minutes by the prompts."""
        position = self.ahead(call_id) + 1
        return math.ceil(position / max(1, agents)) * handle_seconds
