"""Issue 9, Asterisk restarts or drops the connection: noticed, reconnected, reconciled.

The clients' own tests (``test_ari_client.py``, ``test_ami.py``) check
detection and the no-resend rule on each socket; here the settings that
expose the intervals, and the whole liyi against a simulator whose sockets go
silent mid-call (``AsteriskSimulator.stall_connections``: half-open, nothing
closed, nothing answered — a dead host or a NAT that forgot the flows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ari_handlers.ami_client import DEFAULT_PING_SECONDS
from ari_handlers.ari_client import DEFAULT_HEARTBEAT_SECONDS
from ari_handlers.simulator import CallerScript
from liyi.settings import (
    DEFAULT_AMI_PING_SECONDS,
    DEFAULT_ARI_HEARTBEAT_SECONDS,
    ConfigError,
    load_settings,
)
from tests.e2e_world import running_world

ROOT = Path(__file__).resolve().parent.parent
SHORT = {"ari_heartbeat_seconds": 0.5, "ami_ping_seconds": 0.5}


async def eventually(predicate: Callable[[], bool], timeout: float) -> None:
    """Wait until ``predicate`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs]


class TestSettings:
    def test_defaults_notice_a_silent_asterisk_within_15_seconds(self) -> None:
        """Out of the box both links notice a silent Asterisk within 15 s, and the settings'
        defaults are the clients' own."""
        assert DEFAULT_ARI_HEARTBEAT_SECONDS == DEFAULT_HEARTBEAT_SECONDS
        assert DEFAULT_AMI_PING_SECONDS == DEFAULT_PING_SECONDS
        assert 1.5 * DEFAULT_ARI_HEARTBEAT_SECONDS + 2 <= 15
        assert 2 * DEFAULT_AMI_PING_SECONDS <= 15

    def test_shipped_config_sets_the_intervals(self) -> None:
        """The commented liyi.yaml states both intervals, at their defaults."""
        settings = load_settings(ROOT / "liyi.yaml", env={})
        assert settings.asterisk is not None
        assert settings.asterisk.ari_heartbeat_seconds == DEFAULT_ARI_HEARTBEAT_SECONDS
        assert settings.asterisk.ami_ping_seconds == DEFAULT_AMI_PING_SECONDS

    def test_bad_intervals_are_refused_with_their_line(self, tmp_path: Path) -> None:
        """A zero, a word or an interval over a minute is refused, each with its line."""
        config = tmp_path / "liyi.yaml"
        config.write_text(
            "company: {name: 礼仪客服中心}\n"
            "asterisk:\n"
            "  ari_heartbeat_seconds: 0\n"
            "  ami_ping_seconds: often\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as info:
            load_settings(config, env={})
        found = {(p.path, p.line) for p in info.value.problems}
        assert found == {("asterisk.ari_heartbeat_seconds", 3), ("asterisk.ami_ping_seconds", 4)}
        config.write_text(
            "company: {name: 礼仪客服中心}\nasterisk: {ami_ping_seconds: 120}\n", encoding="utf-8"
        )
        with pytest.raises(ConfigError):
            load_settings(config, env={})

    def test_fractions_are_accepted(self, tmp_path: Path) -> None:
        """Intervals may be fractions of a second (what the tests use)."""
        config = tmp_path / "liyi.yaml"
        config.write_text(
            "company: {name: 礼仪客服中心}\n"
            "asterisk: {ari_heartbeat_seconds: 0.5, ami_ping_seconds: 2}\n",
            encoding="utf-8",
        )
        settings = load_settings(config, env={})
        assert settings.asterisk is not None
        assert (settings.asterisk.ari_heartbeat_seconds, settings.asterisk.ami_ping_seconds) == (
            0.5, 2.0)


class TestSilentAsterisk:
    async def test_call_and_roster_are_reconciled_after_the_links_go_silent(
        self, tmp_path: Path
    ) -> None:
        """When both links go silent mid-call, liyi notices within seconds, logs it, reconnects,
        gives the caller whose agent left meanwhile the closing prompt (R9), and marks the
        agent whose phone un-registered meanwhile as unregistered."""
        async with running_world(tmp_path, asterisk_options=SHORT) as world:
            roster = world.service.controller.roster
            assert roster.get("agent2").registered
            call = await world.sim.place_call(
                "13800138000", script=CallerScript(hang_up_after_prompt=("closing-thanks", 0.2)))
            await eventually(lambda: "connected" in [h.what for h in call.heard], 10)
            leg = world.sim.legs_of("agent1")[-1].channel_id
            with capture_logs() as logs:
                world.sim.stall_connections()
                world.sim._agent_hangs_up(world.sim.channels[leg])  # lost with the socket
                world.sim.unregister_agent("agent2")  # its AMI events are lost too
                # 0.5 s intervals: about 1 s expected; 5 s is the flake-proof bound.
                await eventually(lambda: "ari.disconnected" in events(logs), 5)
                await eventually(lambda: "ami.disconnected" in events(logs), 5)
                await eventually(lambda: "ari.reconnected" in events(logs), 10)
                await eventually(lambda: not roster.get("agent2").registered, 10)
                await asyncio.wait_for(call.ended.wait(), 15)
            record = await world.call_ended_in_log(call.channel_id)
        kinds = [h.what for h in call.heard]
        after = [h.detail for h in call.heard[kinds.index("agent-left"):] if h.what == "prompt"]
        assert after and after[0].endswith("closing-thanks")
        assert call.hung_up_by == "caller" and record.first_hangup == "agent"
        assert "call.channel_lost_while_disconnected" in events(logs)
        assert "ami.logged_in" in events(logs) and "ami.snapshot" in events(logs)
