"""End to end: controller + simulator + SQLite over real loopback sockets.

Each demo scenario is rung in through the simulated Asterisk and checked on
both sides: what the simulated caller heard, in order, and what the call log
holds (timeline, who hung up first, compliance).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_handlers.simulator import AgentScript, CallerScript
from callflow.replay import event_from_dict, replay
from tests.ari_spec import load_spec
from tests.e2e_world import FAST, running_world

pytestmark = pytest.mark.asyncio


def heard_kinds(call) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.what for h in call.heard]


def statuses(record) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {rule: status for rule, (status, _evidence) in record.compliance.items()}


def log_kinds(record) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.kind for t in record.timeline if t.source == "log"]


class TestOrdinaryCall:
    async def test_caller_is_rung_answered_greeted_and_connected(self, tmp_path: Path) -> None:
        """An ordinary call: ring, answer within ring 1, greeting, music, agent, caller hangs up first."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000", caller_name="张先生",
                                              script=CallerScript(hang_up_after_connected=0.3))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)

        kinds = heard_kinds(call)
        assert kinds[:2] == ["ringing", "answered"]
        prompts = [h.detail for h in call.heard if h.what == "prompt"]
        assert prompts[0].startswith("sound:liyi/greeting-")
        assert kinds.index("music-start") > kinds.index("prompt")
        assert "connected" in kinds and kinds[-1] == "hangup-by-caller"
        assert call.hung_up_by == "caller"
        answered = next(h.at for h in call.heard if h.what == "answered")
        first_ring = next(h.at for h in call.heard if h.what == "ringing")
        assert answered - first_ring <= FAST.ring_end(3)
        connected = next(h.at for h in call.heard if h.what == "connected")
        assert [g for g in call.silences(0.25) if answered <= g[0] < connected] == []

        assert record.caller_number == "13800138000"
        assert record.caller_name == "张先生"
        assert record.agent == "agent1"
        assert record.first_hangup == "caller"
        assert record.answered_at is not None
        s = statuses(record)
        assert (s["R1"], s["R2"], s["R9"], s["R10"]) == ("kept", "kept", "kept", "kept")
        assert log_kinds(record)[:3] == ["ringing", "answered", "greeting"]
        assert "connected" in log_kinds(record) and log_kinds(record)[-1] == "ended"

    async def test_every_request_the_controller_made_is_in_the_ari_spec(self, tmp_path: Path) -> None:
        """Against the simulator, the controller only uses ARI calls the Asterisk 22 spec documents."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000",
                                              script=CallerScript(hang_up_after_connected=0.2))
            await asyncio.wait_for(call.ended.wait(), 10)
            await world.call_ended_in_log(call.channel_id)
            requests = list(world.sim.requests)
        spec = load_spec()
        assert requests, "the controller made no ARI request"
        problems = [p for method, path, params in requests
                    for p in spec.check_request(method, path, params)]
        assert problems == []

    async def test_logged_events_replay_to_the_same_compliance(self, tmp_path: Path) -> None:
        """Replaying a call's logged engine events reproduces its compliance record."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000",
                                              script=CallerScript(hang_up_after_connected=0.2))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)
            config = world.service.settings.callflow
        events = [event_from_dict(t.detail) for t in record.timeline if t.source == "event"]
        engine, _ = replay(config, record.id, events)
        assert engine.ended
        from callflow.compliance import score
        replayed = {rule: r["status"] for rule, r in score(engine.facts, config).items()}
        assert replayed == statuses(record)


class TestCallerGivesUpWhileRinging:
    async def test_unanswered_call_is_logged_with_the_caller_hanging_up_first(self, tmp_path: Path) -> None:
        """A caller who hangs up before the answer is in the log, never answered, R1 not applicable."""
        async with running_world(tmp_path, answer_after_rings=3) as world:
            call = await world.sim.place_call("13911112222",
                                              script=CallerScript(hang_up_while_ringing_after=0.15))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)
        assert "answered" not in heard_kinds(call)
        assert record.answered_at is None
        assert record.first_hangup == "caller"
        assert record.outcome == "abandoned-ringing"
        assert statuses(record)["R1"] == "not_applicable"
        assert statuses(record)["R10"] == "kept"


class TestRollover:
    async def test_agent_who_lets_it_ring_three_times_is_skipped_for_the_next(self, tmp_path: Path) -> None:
        """Agent1 never answers: after three rings agent2 is rung and connected; music meanwhile."""
        async with running_world(tmp_path) as world:
            world.sim.set_agent_script("agent1", AgentScript(answer_after=None))
            world.sim.set_agent_script("agent2", AgentScript(answer_after=0.1))
            call = await world.sim.place_call("02188886666",
                                              script=CallerScript(hang_up_after_connected=0.2))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)

        connected = [h.detail for h in call.heard if h.what == "connected"]
        assert connected == ["agent2"]
        kinds = log_kinds(record)
        assert kinds.count("agent-ringing") == 2
        assert "agent-no-answer" in kinds
        no_answer = next(t for t in record.timeline if t.kind == "agent-no-answer")
        first_offer = next(t for t in record.timeline if t.kind == "agent-ringing")
        rang = (no_answer.at - first_offer.at).total_seconds()
        assert FAST.ring_end(3) - 0.05 <= rang <= FAST.ring_end(3) + 0.5
        music_start = next(h.at for h in call.heard if h.what == "music-start")
        connected_at = next(h.at for h in call.heard if h.what == "connected")
        gaps = [g for g in call.silences(0.2) if g[0] >= music_start and g[1] <= connected_at]
        assert gaps == [], "the caller heard silence while the call rolled over"
        assert record.agent == "agent2"
        assert statuses(record)["R1"] == "kept"


class TestAgentHangsUpFirst:
    async def test_caller_hears_the_closing_and_stays_connected_until_they_hang_up(self, tmp_path: Path) -> None:
        """The agent leaves first: closing prompt to the caller, no hang-up by the service (R9)."""
        async with running_world(tmp_path) as world:
            for name in ("agent1", "agent2"):
                world.sim.set_agent_script(name, AgentScript(answer_after=0.1, hang_up_after=0.2))
            call = await world.sim.place_call(
                "075566667777", script=CallerScript(hang_up_after_prompt=("closing-thanks", 0.3)))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)

        kinds = heard_kinds(call)
        left = kinds.index("agent-left")
        after = [h.detail for h in call.heard[left:] if h.what == "prompt"]
        assert after and "closing-thanks" in after[0]
        assert call.hung_up_by == "caller"
        assert record.first_hangup == "agent"
        assert "agent-hung-up-first" in log_kinds(record)
        assert statuses(record)["R9"] == "kept"


class TestBadInput:
    async def test_hostile_caller_id_is_logged_safely(self, tmp_path: Path) -> None:
        """A caller id full of control characters and SQL is cleaned, logged, and the call goes on."""
        nasty = "'); DROP TABLE calls;--\x00\x1b[31m<script>"
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("1380013\n8000", caller_name=nasty,
                                              script=CallerScript(hang_up_after_connected=0.1))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)
        assert "\x00" not in record.caller_name and "\x1b" not in record.caller_name
        assert "DROP TABLE" in record.caller_name  # kept as text, harmless
        assert record.first_hangup == "caller"

    async def test_a_failing_call_log_loses_no_call(self, tmp_path: Path) -> None:
        """When every call-log write raises, the caller is still answered, greeted and connected."""
        async with running_world(tmp_path) as world:
            class Broken:
                def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                    def fail(*args: object, **kwargs: object) -> None:
                        raise RuntimeError("database is down")
                    return fail
            controller = world.service.controller
            assert controller is not None
            real = controller.store
            controller.store = Broken()  # type: ignore[assignment]
            try:
                call = await world.sim.place_call("13800138000",
                                                  script=CallerScript(hang_up_after_connected=0.2))
                await asyncio.wait_for(call.ended.wait(), 10)
            finally:
                controller.store = real
        assert "connected" in heard_kinds(call)
        assert call.hung_up_by == "caller"
        assert controller.log_write_errors > 0

    async def test_malformed_ari_messages_are_skipped(self, tmp_path: Path) -> None:
        """Garbage from the event socket is counted and skipped; the next call is served."""
        async with running_world(tmp_path) as world:
            controller = world.service.controller
            assert controller is not None
            for junk in ({"type": "StasisStart"}, {"type": "ChannelDtmfReceived", "digit": "xx",
                                                   "channel": {"id": "1.1"}}, {"no": "type"}):
                await controller.on_event(junk)
            assert controller.bad_events == 3
            call = await world.sim.place_call("13800138000",
                                              script=CallerScript(hang_up_after_connected=0.1))
            await asyncio.wait_for(call.ended.wait(), 10)
        assert "connected" in heard_kinds(call)


class TestRecoverableState:
    async def test_a_live_call_can_be_found_again_from_asterisk_and_the_log(self, tmp_path: Path) -> None:
        """While connected, the caller's channel names the call, agent and bridge, and the log lists it open."""
        import json

        from ari_handlers.ari_client import AriClient

        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("13800138000",
                                              script=CallerScript(hang_up_after_connected=1.5))
            for _ in range(100):
                if "connected" in heard_kinds(call):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            ari = AriClient(world.sim.ari_url, "liyi", "liyi-sim", "liyi")
            try:
                raw = await ari.get_channel_var(call.channel_id, "LIYI_CALL")
            finally:
                await ari.close()
            await world.store.flush()
            open_calls = await world.store.open_calls()
            await asyncio.wait_for(call.ended.wait(), 10)
        assert raw is not None
        saved = json.loads(raw)
        assert saved["state"] == "connected" and saved["agent"] == "agent1"
        assert saved["bridge"] and saved["leg"]
        assert [c.id for c in open_calls] == [saved["call_id"]]


class TestLostEvents:
    async def test_an_agent_who_left_while_the_event_socket_was_down_is_noticed_on_reconnect(
            self, tmp_path: Path) -> None:
        """Asterisk replays nothing after a reconnect: the controller finds the agent's leg gone
        and gives the caller the closing prompt instead of leaving them in silence (R9)."""
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call(
                "13800138000", script=CallerScript(hang_up_after_prompt=("closing-thanks", 0.2)))
            for _ in range(200):
                if "connected" in heard_kinds(call):
                    break
                await asyncio.sleep(0.02)
            leg = world.sim.legs_of("agent1")[-1].channel_id
            await world.sim.server.hub.close_all()  # the controller's socket drops...
            world.sim._agent_hangs_up(world.sim.channels[leg])  # ...and the agent leaves meanwhile
            await asyncio.wait_for(call.ended.wait(), 15)
            record = await world.call_ended_in_log(call.channel_id)
        kinds = heard_kinds(call)
        assert "agent-left" in kinds
        after = [h.detail for h in call.heard[kinds.index("agent-left"):] if h.what == "prompt"]
        assert after and after[0].endswith("closing-thanks")
        assert call.hung_up_by == "caller"
        assert record.first_hangup == "agent"
