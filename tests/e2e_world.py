"""A whole liyi against the simulator over loopback sockets, for end-to-end tests.

Rings are shortened (0.1 s tone, 0.3 s silence) so a call takes about a
second; every other part — ARI over HTTP and WebSocket, AMI over TCP, the
SQLite call log — is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ari_handlers.simulator import AsteriskSimulator
from callflow.config import AgentConfig, RingCadence, parse_callflow
from liyi.app import Service
from liyi.settings import AsteriskSettings, Settings

FAST = RingCadence(on=0.1, off=0.3)


def fast_settings(db_path: Path, **callflow: Any) -> Settings:
    cfg, problems = parse_callflow({"company": {"name": "礼仪客服中心"}})
    assert cfg is not None, problems
    fast: dict[str, Any] = {
        "cadence": FAST, "answer_delay_seconds": 0.05, "agent_retry_seconds": 0.1,
        "agents": (AgentConfig("agent1", "PJSIP/agent1"), AgentConfig("agent2", "PJSIP/agent2"))}
    cfg = replace(cfg, **{**fast, **callflow})  # a test may slow any of them down
    return Settings(callflow=cfg, asterisk=None, database_url=f"sqlite+aiosqlite:///{db_path}")


@dataclass
class World:
    sim: AsteriskSimulator
    service: Service

    @property
    def store(self) -> Any:
        return self.service.store

    async def call_ended_in_log(self, channel_id: str, timeout: float = 10.0) -> Any:
        """Wait until the call on ``channel_id`` is closed in the call log, and return it."""
        return await call_ended_in_log(self.store, channel_id, timeout)

    async def agent_talking(self, agent: str, timeout: float = 15.0) -> None:
        """Wait until the engine has ``agent`` in a conversation — not only the simulator's bridge.

        The simulator hears "connected" when the caller joins the bridge; the engine is still
        joining the agent's leg then, and a panel action in that moment is (rightly) refused.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.service.controller.call_of_agent(agent)
            if found is not None and found[0].engine.state.value == "connected":
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{agent} never got to talk with the caller")


async def call_ended_in_log(store: Any, channel_id: str, timeout: float = 10.0) -> Any:
    """Wait until the call on ``channel_id`` is closed in ``store``'s log, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await store.flush()
        for summary in await store.list_calls(limit=50):
            if summary.channel_id == channel_id and summary.ended_at is not None:
                return await store.get_call(summary.id)
        await asyncio.sleep(0.05)
    raise AssertionError(f"call on {channel_id} never ended in the log")


@asynccontextmanager
async def running_world(tmp_path: Path, *, prompt_seconds: float = 0.05,
                        agents: tuple[str, ...] = ("agent1", "agent2"), web: bool = False,
                        asterisk_options: dict[str, Any] | None = None,
                        **callflow: Any) -> AsyncIterator[World]:
    sim = AsteriskSimulator(prompt_seconds=prompt_seconds)
    await sim.start()
    for name in agents:
        sim.add_agent(name)
    settings = replace(fast_settings(tmp_path / "calls.db", **callflow), web_port=0)
    asterisk = AsteriskSettings(ari_url=sim.ari_url, ari_user="liyi", ari_password="liyi-sim",
                                ami_host="127.0.0.1", ami_port=sim.ami_port, ami_user="liyi",
                                ami_secret="liyi-sim", **(asterisk_options or {}))
    service = Service(settings, asterisk, web_enabled=web)
    try:
        await service.start()
        await service.wait_connected()
        await asyncio.sleep(0.1)  # AMI device states reach the roster
        yield World(sim, service)
    finally:
        await service.stop()
        await sim.stop()
