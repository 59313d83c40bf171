"""How fast a restarted controller takes back control of live calls, in the simulator; prints figures.

Each round puts calls in different states — talking with an agent, queued
for one (more callers than agents), on hold — kills the controller the way
SIGKILL does (``tests/restart_world.Site.crash``: tasks and sockets just
stop) and starts a new one on the same call log. "Control regained" is the
moment every caller still on the line has a live engine again (the goal is
< 3 s). Figures: p50/p99/max seconds from the restart to control regained
over the rounds, callers hung up by the service (must be 0), and the ARI
requests the recovery itself made per call. It also counts the snapshot
writes (``LIYI_CALL``) of one ordinary call: ring, queue, agent rung,
connected, closing.

    .venv/bin/python bench/restart_adoption.py --rounds 10 --calls 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ordinary_call_writes(tmp: Path) -> int:
    """SetVar requests one ordinary call makes, the agent ending it from the panel."""
    from ari_handlers.simulator import CallerScript
    from callflow import events as e
    from tests.restart_world import kinds, site, until

    async with site(tmp) as s:
        call = await s.sim.place_call("13800138000",
                                      script=CallerScript(hang_up_after_prompt=("closing-thanks", 0.1)))
        await until(lambda: "connected" in kinds(call))
        s.service.controller.agent_request(e.EndCallRequested(at=time.time(), agent="agent1"))
        await asyncio.wait_for(call.ended.wait(), 20)
        await s.ended_record(call.channel_id)
        leg = s.sim.legs_of("agent1")[-1].channel_id
        return sum(1 for method, path, _ in s.sim.requests
                   if method == "POST" and path.endswith("/variable")
                   and (call.channel_id in path or leg in path))


async def rounds(tmp: Path, count: int, calls: int) -> tuple[list[float], int, float]:
    from ari_handlers.simulator import AgentScript, CallerScript
    from tests.restart_world import site, until

    agents = tuple(f"agent{i}" for i in range(max(1, calls // 2)))
    took: list[float] = []
    hung_up_by_service = 0
    recovery_requests = 0
    async with site(tmp, agents=agents, prompt_seconds=0.3) as s:
        for name in agents:
            s.sim.set_agent_script(name, AgentScript(answer_after=0.3))
        placed = [await s.sim.place_call(f"138{i:08d}", script=CallerScript(max_seconds=600))
                  for i in range(calls)]
        ctrl = s.service.controller
        await until(lambda: sum(1 for c in ctrl.calls.values()
                                if c.engine.state.value in ("connected", "offering")) == calls, 30)
        for n in range(count):
            live = [c for c in placed if c.channel_id in s.sim.channels]
            before = len(s.sim.requests)
            await s.crash()
            started = time.monotonic()
            await s.restart()
            ctrl = s.service.controller
            await until(lambda: all(c.channel_id in ctrl._by_channel for c in live), 30)
            took.append(time.monotonic() - started)
            recovery_requests += len(s.sim.requests) - before
            await asyncio.sleep(0.5 + (n % 3) * 0.3)  # let the calls move on a little
        hung_up_by_service = sum(1 for c in placed if c.hung_up_by == "service")
        for c in placed:
            if c.channel_id in s.sim.channels:
                s.sim.caller_hangs_up(c)
        await asyncio.sleep(0.5)
    return took, hung_up_by_service, recovery_requests / max(1, count * calls)


async def main(count: int, calls: int) -> None:
    from liyi.logging_setup import configure

    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("one", "many"):
            (Path(tmp) / part).mkdir()
        writes = await ordinary_call_writes(Path(tmp) / "one")
        took, hung_up, per_call = await rounds(Path(tmp) / "many", count, calls)
    print(f"restarts: {count}, live calls each: {calls} (connected and queued)")
    print(f"restart -> control regained: p50 {statistics.median(took):.3f} s, "
          f"p99 {quantile(took, 0.99):.3f} s, max {max(took):.3f} s (goal < 3 s)")
    print(f"callers hung up by the service: {hung_up}")
    print(f"ARI requests per call per restart (whole restart: listing, reads, resume): {per_call:.1f}")
    print(f"LIYI_CALL snapshot writes of one ordinary call: {writes}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
