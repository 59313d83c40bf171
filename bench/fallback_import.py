"""How long importing the dialplan fallback's calls takes: N calls from a CEL file; prints figures.

Why: after a long controller outage the fallback may have served thousands
of calls, and liyi imports them when it reconnects. This writes a CEL file
shaped like the one Asterisk wrote on the real rig (tests/traces/16: per
call a caller answered after 1.5 s, two agent phones rung, one answering
and bridged, the other cancelled, the caller hanging up; 11 lines), then
imports it with ``FallbackImporter`` into a fresh SQLite call log.

Figures per N: wall time and CPU time of the first import (read, parse,
records, write), calls/s, and a second pass over the whole file by a new
importer (a restarted liyi: every call found already there, none written).

    .venv/bin/python bench/fallback_import.py --calls 1000 10000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callflow.config import AgentConfig, CallFlowConfig
from db import CallStore
from liyi.fallback_import import FallbackImporter

CFG = CallFlowConfig(agents=(AgentConfig(name="agent1", endpoint="PJSIP/agent1"),
                             AgentConfig(name="agent2", endpoint="PJSIP/agent2")))


def write_cel(path: Path, calls: int, start: float = 1_796_454_799.0) -> int:
    """``calls`` fallback calls, 20 s apart, as Asterisk's cel_custom writes them; returns bytes."""
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        seq = 0
        for n in range(calls):
            t = start + 20 * n
            linked = f"{int(t)}.{seq}"
            caller = f"PJSIP/carrier-{seq:08x}"
            a1, a2 = f"{int(t) + 3}.{seq + 1}", f"{int(t) + 3}.{seq + 2}"
            c1, c2 = f"PJSIP/agent1-{seq + 1:08x}", f"PJSIP/agent2-{seq + 2:08x}"
            num, name = f"1380013{n:04d}"[-11:], "caller"
            mark = "liyi-fallback"

            def row(event: str, at: float, uid: str, chan: str, user: str = mark,
                    peer: str = "", extra: dict[str, object] | None = None,
                    cid: tuple[str, str] = (num, name)) -> None:
                w.writerow([event, f"{at:.6f}", uid, linked, chan, cid[0], cid[1], "s",
                            "liyi-fallback", user, peer, json.dumps(extra) if extra else ""])

            row("CHAN_START", t, linked, caller, user="")
            row("ANSWER", t + 1.5, linked, caller)
            row("CHAN_START", t + 3.2, a1, c1, user="", cid=("agent1", "Agent 1"))
            row("CHAN_START", t + 3.2, a2, c2, user="", cid=("agent2", "Agent 2"))
            row("ANSWER", t + 6.0, a1, c1, user="", cid=("agent1", "Agent 1"))
            row("HANGUP", t + 6.0, a2, c2, user="", cid=("agent2", "Agent 2"),
                extra={"hangupcause": 26, "hangupsource": "", "dialstatus": ""})
            row("BRIDGE_ENTER", t + 6.01, a1, c1, user="", cid=("agent1", "Agent 1"))
            row("BRIDGE_ENTER", t + 6.02, linked, caller, peer=c1)
            row("HANGUP", t + 15.0, a1, c1, user="", cid=("agent1", "Agent 1"),
                extra={"hangupcause": 16, "hangupsource": caller, "dialstatus": ""})
            row("HANGUP", t + 15.0, linked, caller,
                extra={"hangupcause": 16, "hangupsource": caller, "dialstatus": "ANSWER"})
            row("LINKEDID_END", t + 15.0, linked, caller)
            seq += 3
    return path.stat().st_size


async def one(calls: int, tmp: Path) -> None:
    cel = tmp / f"cel-{calls}.csv"
    size = write_cel(cel, calls)
    store = CallStore(f"sqlite+aiosqlite:///{tmp / f'log-{calls}.db'}")
    await store.start()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        first = await FallbackImporter(cel, store, CFG).run_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall2 = time.perf_counter()
        again = await FallbackImporter(cel, store, CFG).run_once()
        wall2 = time.perf_counter() - wall2
    finally:
        await store.close()
    assert first.imported == calls and again.imported == 0 and again.already == calls
    print(f"{calls:>6} calls ({size / 1e6:5.1f} MB CEL): import {wall:6.2f} s wall, "
          f"{cpu:6.2f} s CPU, {calls / wall:7.0f} calls/s; "
          f"read again by a restarted liyi {wall2:5.2f} s, 0 written")


def main() -> None:
    from liyi.logging_setup import configure

    configure("warning")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.calls:
            asyncio.run(one(n, Path(tmp)))


if __name__ == "__main__":
    main()
