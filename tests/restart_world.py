"""A restart harness for end-to-end tests: liyi against the simulator, killed and started again.

A controller is "killed" the way SIGKILL leaves things — its tasks and
sockets simply stop, nothing is hung up or said goodbye to — and a fresh one
is started on the same call log (``Site.crash`` / ``Site.restart``). Asterisk
(here the simulator) keeps callers in Stasis while the app is gone and
replays nothing when it comes back (traces 07, 12). ``tests/test_e2e_recovery.py``
and ``tests/test_e2e_restart_states.py`` drive it; ``bench/restart_adoption.py``
times it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ari_handlers.simulator import AsteriskSimulator, CallerScript
from liyi.app import Service
from liyi.settings import AsteriskSettings, Settings
from tests.e2e_world import call_ended_in_log, fast_settings

ADOPT_WITHIN = 3.0  # seconds after the new controller starts


@dataclass
class Site:
    sim: AsteriskSimulator
    settings: Settings
    asterisk: AsteriskSettings
    service: Service

    async def crash(self) -> None:
        """What SIGKILL leaves: no hang-ups, no closing words, the event socket just drops."""
        service = self.service
        ctrl = service.controller
        assert ctrl is not None
        tasks = [t for t in (service._task, service._followup_watch) if t is not None]
        for call in list(ctrl.calls.values()):
            for handle in call.timers.values():
                handle.cancel()
            if call.task is not None:
                tasks.append(call.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if service.phones is not None:
            await service.phones.stop()
        assert service.ari is not None
        await service.ari.close()
        await service.store.close()  # what was logged stays (the crash journal's job on a real kill)
        for _ in range(100):
            if not self.sim.app_connected:
                break
            await asyncio.sleep(0.02)

    async def restart(self) -> float:
        """A new controller on the same call log; returns when it started."""
        started = time.monotonic()
        self.service = Service(self.settings, self.asterisk, web_enabled=False)
        await self.service.start()
        await self.service.wait_connected()
        return started

    @property
    def store(self) -> Any:
        return self.service.store

    async def adopted(self, channel_id: str, state: str, since: float) -> Any:
        """The new controller's live call on ``channel_id`` once it is in ``state`` (within 3 s)."""
        ctrl = self.service.controller
        assert ctrl is not None
        while time.monotonic() - since < ADOPT_WITHIN:
            call = ctrl._by_channel.get(channel_id)
            if call is not None and call.engine.state.value == state:
                return call
            await asyncio.sleep(0.02)
        raise AssertionError(f"{channel_id} not taken back as {state} within {ADOPT_WITHIN} s")

    async def adopted_call(self, predicate: Any, since: float) -> Any:
        """The new controller's first live call for which ``predicate`` holds (within 3 s)."""
        ctrl = self.service.controller
        assert ctrl is not None
        while time.monotonic() - since < ADOPT_WITHIN:
            for call in list(ctrl.calls.values()):
                if predicate(call):
                    return call
            await asyncio.sleep(0.02)
        raise AssertionError(f"no call taken back within {ADOPT_WITHIN} s")

    async def ended_record(self, channel_id: str, timeout: float = 10.0) -> Any:
        return await call_ended_in_log(self.store, channel_id, timeout)

    async def connected_then_crash(self) -> tuple[Any, Any]:
        """A caller talking with agent1 when the controller dies: the call and agent1's leg."""
        call = await self.sim.place_call("13800138000", script=CallerScript())
        await until(lambda: "connected" in kinds(call))
        leg = self.sim.legs_of("agent1")[-1]
        await asyncio.sleep(0.2)
        await self.crash()
        return call, leg


@asynccontextmanager
async def site(tmp_path: Path, *, prompt_seconds: float = 0.05,
               agents: tuple[str, ...] = ("agent1", "agent2"), **callflow: Any) -> AsyncIterator[Site]:
    """A running liyi on a fresh simulator; ``callflow`` overrides the fast call-flow config."""
    sim = AsteriskSimulator(prompt_seconds=prompt_seconds)
    await sim.start()
    for name in agents:
        sim.add_agent(name)
    settings = replace(fast_settings(tmp_path / "calls.db", **callflow), web_port=0)
    asterisk = AsteriskSettings(ari_url=sim.ari_url, ari_user="liyi", ari_password="liyi-sim",
                                ami_host="127.0.0.1", ami_port=sim.ami_port, ami_user="liyi",
                                ami_secret="liyi-sim")
    service = Service(settings, asterisk, web_enabled=False)
    here = Site(sim, settings, asterisk, service)
    try:
        await service.start()
        await service.wait_connected()
        await asyncio.sleep(0.1)  # AMI device states reach the roster
        yield here
    finally:
        await here.service.stop()
        await sim.stop()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def kinds(call: Any) -> list[str]:
    return [h.what for h in call.heard]


def log_kinds(record: Any) -> list[str]:
    return [t.kind for t in record.timeline if t.source == "log"]
