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


# -- the same kill, in the pure engine world (tests/engine_driver.py) ----------------------------

from callflow import commands as c  # noqa: E402
from callflow import events as e  # noqa: E402
from callflow import recovery as rc  # noqa: E402
from tests.engine_driver import Issued, World  # noqa: E402


class RestartWorld(World):
    """``World`` whose controller can be killed and started again at any moment (``restart``).

    What a SIGKILL loses: every engine, its timers and the roster's memory of
    who is busy. What survives: the channels and bridges (the world's
    Asterisk), the ``LIYI_CALL`` snapshot each caller's channel holds, and
    the log's answer time. A timer armed before the kill never fires after
    it (timers are keyed by epoch), and an agent leg answering that no
    engine owns is hung up, as the controller does with orphans.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0
        self.restarts: list[tuple[float, str, str, str]] = []  # at, call, was, now
        self.resumed: dict[str, rc.Resumed] = {}
        self.snapshots_at_kill: dict[str, rc.Snapshot | None] = {}
        self.old_engines: dict[str, Any] = {}

    def _start_timer(self, call_id: str, cmd: c.StartTimer) -> None:
        key = (call_id, cmd.name)
        mark = (self.epoch, cmd.token)
        self._timers[key] = mark  # type: ignore[assignment]

        def fire() -> None:
            current = self._timers.get(key) == mark  # type: ignore[comparison-overlap]
            if current:
                del self._timers[key]
                self._deliver(call_id, e.TimerFired(at=self.now, name=cmd.name, token=cmd.token))

        self._schedule(cmd.at, fire)

    def _deliver(self, call_id: str, event: e.Event) -> None:
        engine = self.engines[call_id]
        if isinstance(event, e.StasisStart) and event.channel_id in self.legs \
                and not engine.owns_channel(event.channel_id):
            self._apply_all(call_id, [c.Hangup(channel_id=event.channel_id)])  # an orphan leg
            return
        super()._deliver(call_id, event)

    def _apply_all(self, call_id: str, commands: list[c.Command]) -> None:
        followups: list[e.Event] = []
        for command in commands:
            self.issued.append(Issued(self.now, call_id, command))
            self._apply(call_id, command, followups)
        self._sync_line(call_id)
        for followup in followups:
            self._deliver(call_id, followup)

    def _state(self, channel: str | None) -> str | None:
        leg = self.legs.get(channel or "")
        if leg is None or not leg.alive:
            return None
        return "Up" if leg.in_stasis else "Ringing"

    def restart(self) -> None:
        """Kill the controller now and start a new one that takes every live caller back."""
        self.epoch += 1
        self._timers.clear()
        for agent in list(self.roster):
            if agent.engaged_by:
                self.roster.release(agent.name, call_id=agent.engaged_by, now=self.now,
                                    wrap_up_seconds=0.0, served=False)
        taken: list[tuple[str, rc.Resumed]] = []
        for call_id, engine in list(self.engines.items()):
            line = self.lines[call_id]
            if engine.ended or not line.alive or not line.started:
                continue
            snapshot = rc.parse_snapshot(line.variables.get(rc.VARIABLE))
            self.snapshots_at_kill[call_id] = snapshot
            self.old_engines[call_id] = engine
            caller = rc.LiveCaller(channel_id=line.channel_id, caller_number="13800138000",
                                   created_at=line.created_at, answered=line.answered,
                                   answered_at=engine.facts.answered_at)
            if snapshot is None:
                engine2, first = rc.adopt_waiting(self.config, call_id, caller, self.now, was="unknown")
                resumed = rc.Resumed(engine2, first)
            else:
                around = rc.Around(
                    leg=self._state(snapshot.leg), target=self._state(snapshot.target_leg),
                    bridged=frozenset(self.bridges.get(snapshot.bridge or "", ())))
                resumed = rc.resume(self.config, snapshot, caller, around, self.now)
            for agent in resumed.engage:
                self.roster.engage(agent, call_id=call_id)
            self.engines[call_id] = resumed.engine
            self.resumed[call_id] = resumed
            self.restarts.append((self.now, call_id, snapshot.state if snapshot else "unknown",
                                  resumed.engine.state.value))
            taken.append((call_id, resumed))
        for call_id, _ in taken:
            self._sync_line(call_id)  # everyone in line before anyone asks for an agent (FIFO)
        for call_id, resumed in taken:
            self._apply_all(call_id, resumed.commands)
        for leg in self.legs.values():  # agent legs nobody took back (the controller's sweep)
            if leg.alive and leg.in_stasis and not self.engines[leg.call_id].owns_channel(leg.channel_id):
                self._apply_all(leg.call_id, [c.Hangup(channel_id=leg.channel_id)])

    def restart_at(self, at: float) -> None:
        self._schedule(at, self.restart)
