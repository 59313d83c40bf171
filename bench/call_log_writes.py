"""What the call log costs: N calls' records written through ``CallStore``; prints figures.

Why: the controller's CPU per call is mostly the call log, and a center must
carry 1000 concurrent calls on one core. This drives the store alone with a
load shaped like the controller's, per call: 1 ``call_started``, ~25
``append(source="event")``, ~15 ``append(source="log")``, ~15
``call_updated``, 1 ``call_ended`` with 7 compliance rules, and 2–4
``agent_state`` changes of its agent. The calls run at the same time: their
records are interleaved in time order.

Two shapes of arrival:

- paced (``--duration S``, the default 5 s): the calls start within the first
  fifth of S and their records arrive spread over the rest, as a controller
  would write them; the writer's group commit (linger) decides batch sizes.
- burst (``--duration 0``): every record is queued as fast as possible
  (yielding to the loop every 100 records); records/s is then the store's
  capacity.

Figures: records/s written (records over the wall time from the first write
until ``flush()`` returned), CPU seconds per 1000 records and per call
(``time.process_time()``: the event loop and aiosqlite's thread alike, and the
producer's own small share), transactions (commits) and statements the
writer sent. The store writes to a temporary SQLite file with a journal, as
the service does.

    .venv/bin/python bench/call_log_writes.py --calls 100 1000
    .venv/bin/python bench/call_log_writes.py --calls 1000 --duration 0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db import CallStore

RULES = ("R1", "R2", "R3", "R5", "R7", "R9", "R12")
EVENT_KINDS = (
    "StasisStart",
    "ChannelStateChange",
    "ChannelDtmfReceived",
    "PlaybackStarted",
    "PlaybackFinished",
    "TimerFired",
    "ChannelHangupRequest",
    "StasisEnd",
)
LOG_KINDS = ("ringing", "answered", "greeting_played", "offer", "connected", "hold", "ended")
STATES = ("ringing", "greeting", "waiting", "offering", "connected", "ending")
DEVICE_STATES = ("NOT_INUSE", "RINGING", "INUSE", "NOT_INUSE")

Write = Callable[[Any], None]
# The paced load sleeps only when it is this far ahead (an event loop wakes in ticks).
TICK = 0.01


@dataclass(frozen=True)
class Figures:
    """One run's results."""

    calls: int
    records: int
    wall: float
    cpu: float
    driving: float
    transactions: int
    statements: int
    max_pending: int
    flushed: bool


def call_writes(
    i: int, start: float, length: float, rng: random.Random
) -> list[tuple[float, Write]]:
    """One call's writes, each with its due time (seconds from the bench's start)."""
    call_id = f"{i:06d}{rng.getrandbits(24):06x}"
    agent = f"agent{i:04d}"
    endpoint = f"PJSIP/{agent}"
    epoch = 1_763_000_000.0 + start
    events = 24 + rng.randint(0, 2)
    logs = 14 + rng.randint(0, 2)
    updates = 14 + rng.randint(0, 2)
    agents = 2 + rng.randint(0, 2)
    middle = ["event"] * events + ["log"] * logs + ["update"] * updates + ["agent"] * agents
    rng.shuffle(middle)
    step = length / (len(middle) + 1)
    writes: list[tuple[float, Write]] = []

    def started(s: CallStore) -> None:
        s.call_started(
            call_id,
            channel_id=f"1763000000.{i}",
            caller_number=f"138{i:08d}",
            caller_name="张三",
            created_at=epoch,
        )

    writes.append((start, started))
    for k, what in enumerate(middle, start=1):
        at = epoch + k * step
        if what == "event":
            kind = EVENT_KINDS[k % len(EVENT_KINDS)]
            detail: dict[str, Any] = {
                "channel": f"1763000000.{i}",
                "digit": str(k % 10),
                "token": k,
                "playback": f"pb-{call_id}-{k}",
            }
            writes.append((start + k * step, _append(call_id, at, "event", kind, detail)))
        elif what == "log":
            kind = LOG_KINDS[k % len(LOG_KINDS)]
            detail = {"rings": k % 3, "prompt": "您好，欢迎致电礼仪客服中心", "agent": agent}
            writes.append((start + k * step, _append(call_id, at, "log", kind, detail)))
        elif what == "update":
            writes.append((start + k * step, _update(call_id, at, STATES[k % len(STATES)], agent)))
        else:
            state = DEVICE_STATES[k % len(DEVICE_STATES)]
            writes.append((start + k * step, _agent(agent, endpoint, state, at)))
    compliance = {
        r: {"status": "kept", "evidence": {"rule": r, "at": epoch + length}} for r in RULES
    }

    def ended(s: CallStore) -> None:
        s.call_ended(
            call_id,
            ended_at=epoch + length,
            first_hangup="caller",
            outcome="completed",
            compliance=compliance,
            summary={"agent": agent, "rings": 1, "offers": [agent]},
        )

    writes.append((start + length, ended))
    return writes


def _append(call_id: str, at: float, source: str, kind: str, detail: dict[str, Any]) -> Write:
    return lambda s: s.append(call_id, at=at, source=source, kind=kind, detail=detail)


def _update(call_id: str, at: float, state: str, agent: str) -> Write:
    if state == "greeting":
        return lambda s: s.call_updated(call_id, answered_at=at, state=state)
    if state == "connected":
        return lambda s: s.call_updated(call_id, agent=agent, state=state)
    return lambda s: s.call_updated(call_id, state=state)


def _agent(name: str, endpoint: str, state: str, at: float) -> Write:
    return lambda s: s.agent_state(
        name, endpoint=endpoint, registered=True, device_state=state, at=at
    )


def schedule(calls: int, duration: float, seed: int) -> list[tuple[float, Write]]:
    """Every call's writes in time order; all at time 0 (in call order) when ``duration`` is 0."""
    rng = random.Random(seed)
    writes: list[tuple[float, Write]] = []
    for i in range(calls):
        start = rng.uniform(0, duration * 0.2)
        length = duration * 0.8 * rng.uniform(0.7, 1.0)
        writes.extend(call_writes(i, start, length, rng))
    if duration:
        writes.sort(key=lambda w: w[0])
    return writes


class NullLog:
    """The store's write methods doing nothing: what driving the load costs by itself."""

    pending = 0

    def call_started(self, *args: Any, **kwargs: Any) -> None:
        pass

    def append(self, *args: Any, **kwargs: Any) -> None:
        pass

    def call_updated(self, *args: Any, **kwargs: Any) -> None:
        pass

    def call_ended(self, *args: Any, **kwargs: Any) -> None:
        pass

    def agent_state(self, *args: Any, **kwargs: Any) -> None:
        pass


async def drive(log: Any, writes: list[tuple[float, Write]], duration: float) -> int:
    """Make the writes on time (in 10 ms ticks, as an event loop would), or all at once.

    Returns the most records seen pending.
    """
    max_pending = 0
    t0 = time.perf_counter()
    for n, (due, write) in enumerate(writes):
        if duration:
            wait = due - (time.perf_counter() - t0)
            if wait > TICK:
                max_pending = max(max_pending, log.pending)
                await asyncio.sleep(wait)
        elif n % 100 == 0:
            max_pending = max(max_pending, log.pending)
            await asyncio.sleep(0)
        write(log)
    return max_pending


async def run(
    calls: int, duration: float, linger: float | None, batch_size: int | None, seed: int
) -> Figures:
    writes = schedule(calls, duration, seed)
    cpu0 = time.process_time()
    await drive(NullLog(), writes, duration)
    driving = time.process_time() - cpu0
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {} if linger is None else {"linger": linger}
        if batch_size is not None:
            options["batch_size"] = batch_size
        store = CallStore(
            f"sqlite+aiosqlite:///{tmp}/bench.db", journal_path=Path(tmp) / "bench.jsonl", **options
        )
        await store.start()
        assert store._engine is not None
        counts = {"commit": 0, "statements": 0}

        def on_commit(_conn: Any) -> None:
            counts["commit"] += 1

        def on_execute(*_args: Any) -> None:
            counts["statements"] += 1

        event.listen(store._engine.sync_engine, "commit", on_commit)
        event.listen(store._engine.sync_engine, "before_cursor_execute", on_execute)
        await asyncio.sleep(0.1)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        max_pending = await drive(store, writes, duration)
        flushed = await store.flush(timeout=600)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        transactions, statements = counts["commit"], counts["statements"]
        await store.close()
    return Figures(
        calls=calls,
        records=len(writes),
        wall=wall,
        cpu=cpu,
        driving=driving,
        transactions=transactions,
        statements=statements,
        max_pending=max_pending,
        flushed=flushed,
    )


def report(f: Figures, duration: float) -> None:
    shape = f"paced over {duration:g} s" if duration else "burst"
    store_cpu = f.cpu - f.driving
    print(f"calls {f.calls} ({shape}): {f.records} records, flushed: {f.flushed}")
    print(f"  written            {f.records / f.wall:10.0f} records/s (wall {f.wall:.2f} s)")
    print(
        f"  CPU, store         {store_cpu:10.3f} s: {store_cpu / f.records * 1e6:.1f} ms per 1000 "
        f"records, {store_cpu / f.calls * 1000:.2f} ms per call"
    )
    print(f"  CPU, whole run     {f.cpu:10.3f} s (driving the load alone: {f.driving:.3f} s)")
    print(
        f"  transactions       {f.transactions:10d}  ({f.records / max(1, f.transactions):.0f} "
        f"records each), statements {f.statements}, most pending {f.max_pending}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, nargs="+", default=[100, 1000])
    ap.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds the load is spread over; 0 queues everything at once",
    )
    ap.add_argument("--linger", type=float, default=None, help="the store's group-commit wait")
    ap.add_argument("--batch-size", type=int, default=None, help="the store's batch size")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for calls in args.calls:
        report(
            asyncio.run(run(calls, args.duration, args.linger, args.batch_size, args.seed)),
            args.duration,
        )


if __name__ == "__main__":
    main()
