"""The controller's side of a caller's hang-up: nothing more for a caller who left (issue 8).

The engine decides; but under load a call's worker can still be carrying out
commands decided before the caller's ChannelHangupRequest arrived (it waits
in the call's queue). The controller marks the call the moment the request
comes in and from then on rings no agent and plays nothing to that caller;
and it answers ``GetChannel`` (after a failed prompt) from ``GET
/channels/{id}``: 404 gone, 200 there, no answer taken as there. A fake ARI
client records what would have reached Asterisk.
"""

from __future__ import annotations

from typing import Any

import pytest

from ari_handlers.ari_client import AriError
from ari_handlers.controller import Controller, LiveCall
from callflow import commands as c
from callflow import events as e
from callflow.config import AgentConfig, CallFlowConfig
from callflow.engine import CallEngine
from callflow.roster import Roster

pytestmark = pytest.mark.asyncio

CALLER = "1796398541.8"
CFG = CallFlowConfig(agents=(AgentConfig("agent1", "PJSIP/agent1"),))


class FakeAri:
    """Records every request; ``channel`` is what GET /channels/{id} answers (or raises)."""

    def __init__(self, channel: Any = None) -> None:
        self.requests: list[tuple[str, tuple[Any, ...]]] = []
        self.channel = channel

    async def get_channel(self, channel_id: str) -> dict[str, Any] | None:
        self.requests.append(("get_channel", (channel_id,)))
        if isinstance(self.channel, Exception):
            raise self.channel
        return self.channel  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        async def request(*args: Any, **kwargs: Any) -> None:
            self.requests.append((name, args))

        return request


class NullStore:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def controller(ari: FakeAri) -> tuple[Controller, LiveCall]:
    """A controller with one live call for CALLER (its worker not started: commands run by hand)."""
    ctl = Controller(config=CFG, ari=ari, store=NullStore(),  # type: ignore[arg-type]
                     roster=Roster([("agent1", "PJSIP/agent1")], assume_registered=True))
    call = LiveCall(engine=CallEngine(CFG, "c1"), first_channel=CALLER)
    ctl.calls["c1"] = call
    ctl._by_channel[CALLER] = call
    return ctl, call


def hang_up_request() -> dict[str, Any]:
    """Trace 13's ChannelHangupRequest for the caller (a BYE: no cause)."""
    return {"type": "ChannelHangupRequest", "timestamp": "2026-12-04T15:35:45.000+0000",
            "channel": {"id": CALLER, "name": "PJSIP/caller-00000004", "state": "Up"},
            "asterisk_id": "02:fc:00:00:00:01", "application": "liyi"}


class TestCallerGone:
    async def test_after_the_hang_up_request_no_agent_is_rung_and_nothing_played(self) -> None:
        """Commands decided before the hang-up was handled reach Asterisk no more: no originate, play or
        music for the caller, no agent taken from the roster; hanging up a leg still goes through."""
        ari = FakeAri()
        ctl, call = controller(ari)
        await ctl.on_event(hang_up_request())
        assert call.caller_gone and call.queue.qsize() == 1  # the engine still hears it, next
        late = [c.StartMusic(channel_id=CALLER), c.Play(channel_id=CALLER, playback_id="c1-p2",
                                                       media=("sound:liyi/ring-wait",)),
                c.RequestAgent(), c.Dial(channel_id="c1-a1", endpoint="PJSIP/agent1",
                                         caller_id="x", app_args=f"agent,{CALLER}"),
                c.Hangup(channel_id="c1-a0")]
        feedback = await ctl._carry_out(call, late)
        assert feedback == []
        assert [name for name, _ in ari.requests] == ["hangup"]
        assert all(agent.engaged_by is None for agent in ctl.roster)

    async def test_an_agent_legs_hang_up_does_not_mark_the_caller_gone(self) -> None:
        """An agent leg's own hang-up request leaves the caller's commands alone."""
        ari = FakeAri()
        ctl, call = controller(ari)
        msg = hang_up_request()
        msg["channel"] = {"id": "c1-a1", "name": "PJSIP/agent1-0000000b", "state": "Ringing"}
        await ctl.on_event({**msg, "cause": 32, "soft": True})
        assert not call.caller_gone
        await ctl._carry_out(call, [c.StartMusic(channel_id=CALLER)])
        assert [name for name, _ in ari.requests] == ["start_moh"]


class TestChannelCheck:
    @pytest.mark.parametrize(("answer", "exists"), [
        ({"id": CALLER, "state": "Up"}, True),
        (None, False),  # 404 "Channel not found" (trace 13)
        (TimeoutError(), True),  # cannot tell: the caller is not left in silence
        (AriError(500, "Internal Server Error"), True),
    ])
    async def test_get_channel_answers_whether_the_caller_is_there(self, answer: Any, exists: bool) -> None:
        """GetChannel becomes GET /channels/{id}: 200 there, 404 gone, an error taken as there."""
        ari = FakeAri(channel=answer)
        ctl, call = controller(ari)
        (checked,) = await ctl._carry_out(call, [c.GetChannel(channel_id=CALLER)])
        assert isinstance(checked, e.ChannelChecked)
        assert (checked.channel_id, checked.exists) == (CALLER, exists)

    async def test_a_caller_known_gone_is_gone_without_asking(self) -> None:
        """Once the caller's hang-up request is in, the check answers "gone" at once."""
        ari = FakeAri(channel={"id": CALLER})
        ctl, call = controller(ari)
        await ctl.on_event(hang_up_request())
        (checked,) = await ctl._carry_out(call, [c.GetChannel(channel_id=CALLER)])
        assert isinstance(checked, e.ChannelChecked) and checked.exists is False
        assert ari.requests == []


class TestWorker:
    async def test_the_worker_ends_the_call_on_the_request(self) -> None:
        """Fed to a running call, the hang-up request ends it: one CallEnded, the caller first."""
        ari = FakeAri()
        ctl = Controller(config=CFG, ari=ari, store=NullStore(),  # type: ignore[arg-type]
                         roster=Roster([("agent1", "PJSIP/agent1")], assume_registered=True))
        ended: list[c.CallEnded] = []

        class Watch:
            def on_log(self, call_id: str, caller_number: str, entry: c.Log) -> None:
                pass

            def on_end(self, call_id: str, caller_number: str, done: c.CallEnded) -> None:
                ended.append(done)

        ctl.observers.append(Watch())
        await ctl.on_event({"type": "StasisStart", "timestamp": "2026-12-04T15:35:41.989+0000",
                            "args": ["inbound"], "channel": {"id": CALLER, "name": "PJSIP/caller-00000004",
                                                             "state": "Ring", "caller": {"number": "caller"}}})
        await ctl.on_event(hang_up_request())
        await ctl.on_event({**hang_up_request(), "type": "StasisEnd"})
        await ctl.drain(timeout=2.0)
        assert [done.first_hangup for done in ended] == ["caller"]
        assert not ctl.calls
