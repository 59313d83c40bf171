"""How much the queue's order costs the controller when many callers wait (R5).

Every waiting caller asks for an agent every ``agent_retry_seconds`` (2 s);
each ask reads the caller's place (``waiting_before``, ``ahead``,
``expected_wait``). This prints the cost of one ask and the share of one
CPU core it takes with N callers waiting, for a few N.

    .venv/bin/python bench/waiting_line.py [--waiting 100 1000 5000]
"""

from __future__ import annotations

import argparse
import time

from callflow.queueing import WaitingLine


def measure(waiting: int, asks: int = 2000) -> float:
    line = WaitingLine()
    for i in range(waiting):
        line.set(f"c{i}", "报修" if i % 3 else "", since=float(i), ringing=i % 7 == 0)
    calls = [f"c{i}" for i in range(0, waiting, max(1, waiting // asks))]
    start = time.perf_counter()
    for call in calls:
        line.waiting_before(call)
        line.ahead(call)
        line.expected_wait(call, agents=10, handle_seconds=180.0)
    return (time.perf_counter() - start) / len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--retry-seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'waiting':>8} {'µs per ask':>11} {'share of a core':>16}")
    for n in args.waiting:
        per_ask = measure(n)
        share = per_ask * n / args.retry_seconds
        print(f"{n:>8} {per_ask * 1e6:>11.1f} {share * 100:>15.2f}%")


if __name__ == "__main__":
    main()
