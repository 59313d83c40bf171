"""Structured logs an operator can follow: one event per state change, each with its call id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from ari_handlers.simulator import CallerScript
from tests.e2e_world import running_world


class TestCallLogs:
    async def test_every_state_change_is_one_event_carrying_the_call_id(self, tmp_path: Path) -> None:
        """Each timeline step of a call is logged once as `call.<kind>` with that call's id."""
        async with running_world(tmp_path) as world:
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                call = await world.sim.place_call("13800138000",
                                                  script=CallerScript(hang_up_after_connected=0.1))
                await asyncio.wait_for(call.ended.wait(), 10)
                record = await world.call_ended_in_log(call.channel_id)
        call_events = [e for e in logs if str(e.get("event", "")).startswith("call.")]
        assert call_events, "no call.* log events"
        assert {e.get("call_id") for e in call_events} == {record.id}
        kinds = [e["event"].removeprefix("call.") for e in call_events]
        timeline = [t.kind for t in record.timeline if t.source == "log"]
        assert kinds == timeline
