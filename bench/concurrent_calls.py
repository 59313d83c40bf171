"""N simultaneous calls through the controller and the simulator; prints figures.

The simulator runs in a child process so the controller's CPU time and memory
are its own. Every call is a full ordinary call: ring, answer after ring 1
(China cadence), greeting, music, an agent answers, the caller hangs up.
Figures: calls handled, p50/p99 delay from call arrival (channel creation) to
the answer reaching Asterisk, and how late that was against the plan (the
config's answer moment: ring 1's tone ends at 1.0 s, the answer follows
``ring.answer_delay_seconds`` later, 1.5 s by default), controller CPU seconds
per call, and the controller's peak memory.

    .venv/bin/python bench/concurrent_calls.py --calls 100
    .venv/bin/python bench/concurrent_calls.py --calls 1000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_simulator(conn, calls: int, agents: int, hold_seconds: float) -> None:  # type: ignore[no-untyped-def]
    from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript

    async def main() -> None:
        from liyi.logging_setup import configure

        configure("warning")
        sim = AsteriskSimulator(prompt_seconds=0.5)
        await sim.start()
        for i in range(agents):
            sim.add_agent(f"agent{i:04d}", script=AgentScript(answer_after=0.5))
        conn.send((sim.ari_url, sim.ami_port))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # go
        script = CallerScript(hang_up_after_connected=hold_seconds, max_seconds=300)
        placed = await asyncio.gather(*(sim.place_call(f"138{i:08d}", script=script)
                                        for i in range(calls)))
        await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in placed)), 600)
        results = []
        for c in placed:
            ring = next((h.at for h in c.heard if h.what == "ringing"), None)
            answered = next((h.at for h in c.heard if h.what == "answered"), None)
            connected = next((h.at for h in c.heard if h.what == "connected"), None)
            results.append((c.started_at, ring, answered, connected, c.hung_up_by))
        conn.send(results)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # controller done
        await sim.stop()

    asyncio.run(main())


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def controller(ari_url: str, ami_port: int, agents: int, db: Path, conn) -> dict:  # type: ignore[no-untyped-def]
    from callflow.config import AgentConfig, parse_callflow
    from liyi.app import Service
    from liyi.logging_setup import configure
    from liyi.settings import AsteriskSettings, Settings

    configure("warning")
    cfg, _ = parse_callflow({"company": {"name": "礼仪客服中心"}})
    assert cfg is not None
    cfg = replace(cfg, agents=tuple(AgentConfig(f"agent{i:04d}", f"PJSIP/agent{i:04d}")
                                    for i in range(agents)))
    settings = Settings(callflow=cfg, asterisk=None, database_url=f"sqlite+aiosqlite:///{db}")
    asterisk = AsteriskSettings(ari_url=ari_url, ari_password="liyi-sim", ami_port=ami_port,
                                ami_secret="liyi-sim")
    service = Service(settings, asterisk, web_enabled=False)
    await service.start()
    await service.wait_connected()
    await asyncio.sleep(0.5)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    conn.send("go")
    loop = asyncio.get_running_loop()
    results = await loop.run_in_executor(None, conn.recv)
    assert service.controller is not None
    deadline = time.monotonic() + 30
    while service.controller.calls and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    flushed = await service.store.flush(timeout=60)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    logged = len(await service.store.list_calls(limit=100000))
    handled = service.controller.calls_ended
    await service.stop()
    conn.send("done")
    return {"results": results, "cpu": cpu, "wall": wall, "handled": handled,
            "logged": logged, "flushed": flushed, "planned": cfg.answer_seconds(),
            "rings": cfg.answer_after_rings, "delay": cfg.answer_delay_seconds,
            "deadline": cfg.cadence.ring_end(3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each caller talks to the agent")
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.Process(target=run_simulator, args=(child, args.calls, args.calls, args.hold), daemon=True)
    proc.start()
    ari_url, ami_port = parent.recv()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(controller(ari_url, ami_port, args.calls, Path(tmp) / "bench.db", parent))
    proc.join(10)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arrival_to_answer = [a - c for (c, _r, a, _k, _h) in out["results"] if a is not None]
    planned = out["planned"]
    late = [d - planned for d in arrival_to_answer]
    connected = sum(1 for r in out["results"] if r[3] is not None)
    by_caller = sum(1 for r in out["results"] if r[4] == "caller")
    n = args.calls
    print(f"concurrent calls          {n}")
    print(f"calls handled (ended)     {out['handled']}  (logged: {out['logged']}, log flushed: {out['flushed']})")
    print(f"connected to an agent     {connected};  caller hung up first: {by_caller}")
    print(f"arrival → answer  p50     {pct(arrival_to_answer, 50) * 1000:8.1f} ms   (planned {planned * 1000:.0f} ms: "
          f"end of ring {out['rings']}'s tone + {out['delay']:g} s)")
    print(f"arrival → answer  p99     {pct(arrival_to_answer, 99) * 1000:8.1f} ms   max {max(arrival_to_answer, default=float('nan')) * 1000:.1f} ms")
    print(f"answer lateness   p50/p99 {pct(late, 50) * 1000:8.1f} / {pct(late, 99) * 1000:.1f} ms   (R1 deadline: ring 3 ends at {out['deadline'] * 1000:.0f} ms)")
    print(f"controller CPU            {out['cpu']:.2f} s total, {out['cpu'] / max(1, n) * 1000:.2f} ms per call (wall {out['wall']:.1f} s)")
    print(f"controller peak RSS       {rss / 1024:.1f} MiB (before calls {rss0 / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
