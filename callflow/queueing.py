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

import bisect
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


Entry = tuple[tuple[bool, float], str]  # (place key, call id): a total order within a queue


class WaitingLine:
    """Every waiting caller's place; owned by one event loop, not thread-safe.

    Each queue keeps its callers sorted (and, apart, those with no agent
    ringing for them), so "how many ahead" and "is anyone earlier still
    waiting" are binary searches: a thousand waiting callers asking every two
    seconds cost next to nothing.
    """

    def __init__(self) -> None:
        self._places: dict[str, Place] = {}
        self._order: dict[str, list[Entry]] = {}  # queue -> every waiting caller, in turn
        self._unserved: dict[str, list[Entry]] = {}  # queue -> those with no agent ringing

    def __len__(self) -> int:
        return len(self._places)

    def set(self, call_id: str, queue: str | None, *, since: float = 0.0, first: bool = False,
            ringing: bool = False) -> None:
        """Put (or keep) ``call_id`` in ``queue``; ``None`` takes it out of every line."""
        old = self._places.get(call_id)
        new = None if queue is None else Place(queue, since, first, ringing)
        if old == new:
            return
        if old is not None:
            self._remove(self._order[old.queue], (old.key(), call_id))
            if not old.ringing:
                self._remove(self._unserved[old.queue], (old.key(), call_id))
            del self._places[call_id]
        if new is not None:
            self._places[call_id] = new
            bisect.insort(self._order.setdefault(new.queue, []), (new.key(), call_id))
            if not new.ringing:
                bisect.insort(self._unserved.setdefault(new.queue, []), (new.key(), call_id))

    @staticmethod
    def _remove(entries: list[Entry], entry: Entry) -> None:
        i = bisect.bisect_left(entries, entry)
        if i < len(entries) and entries[i] == entry:
            del entries[i]

    def place(self, call_id: str) -> Place | None:
        return self._places.get(call_id)

    def ahead(self, call_id: str) -> int:
        """How many callers of the same queue will be served before this one."""
        mine = self._places.get(call_id)
        if mine is None:
            return 0
        return bisect.bisect_left(self._order[mine.queue], (mine.key(), call_id))

    def waiting_before(self, call_id: str) -> bool:
        """Someone earlier in this caller's queue is waiting with no agent ringing for them yet.

        They get the next free agent first; this caller is told "no agent
        free" and keeps their place.
        """
        mine = self._places.get(call_id)
        if mine is None:
            return False
        return bisect.bisect_left(self._unserved.get(mine.queue, []), (mine.key(), call_id)) > 0

    def expected_wait(self, call_id: str, *, agents: int, handle_seconds: float) -> float:
        """Seconds until this caller's turn, roughly; rounded up to whole minutes by the prompts."""
        position = self.ahead(call_id) + 1
        return math.ceil(position / max(1, agents)) * handle_seconds
