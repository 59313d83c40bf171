"""The controller's reconciliation after a (re)connect, against a fake ARI and a fake call log (issue 9).

The end-to-end tests (``test_e2e_recovery.py``) kill and restart a whole
liyi; these check the choices that are hard to provoke there: a reconnect
never closes a call this process knows, a channel Asterisk cannot describe
is left alone, and a caller is never among the channels hung up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from ari_handlers.ari_client import AriConnectionError
from ari_handlers.controller import Controller, _our_leg
from callflow.config import AgentConfig, CallFlowConfig
from callflow.roster import Roster

pytestmark = pytest.mark.asyncio

CFG = CallFlowConfig(agents=(AgentConfig("agent1", "PJSIP/agent1"),))
NOW = 1_800_000_000.0


@dataclass
class Record:
    id: str
    channel_id: str
    created_at: dt.datetime
    state: str = "connected"
    agent: str | None = "agent1"
    answered_at: dt.datetime | None = None
    caller_number: str = ""
    caller_name: str = ""


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class FakeStore:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def open_calls(self) -> list[Record]:
        return self.records

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.writes.append((name, args, kwargs))


class FakeAri:
    """Asterisk with the given app channels; ``unreadable`` channels answer GET with no connection."""

    def __init__(self, channels: dict[str, dict[str, Any]], unreadable: tuple[str, ...] = ()) -> None:
        self.channels = channels
        self.unreadable = unreadable
        self.hung_up: list[str] = []

    async def get_application(self) -> dict[str, Any]:
        return {"name": "liyi", "channel_ids": [*self.channels, *self.unreadable], "bridge_ids": []}

    async def get_channel(self, channel_id: str) -> dict[str, Any] | None:
        if channel_id in self.unreadable:
            raise AriConnectionError(0, "refused")
        return self.channels.get(channel_id)

    async def get_channel_var(self, channel_id: str, variable: str) -> str | None:
        return None

    async def list_channels(self) -> list[dict[str, Any]]:
        return list(self.channels.values())

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self.hung_up.append(channel_id)

    def __getattr__(self, name: str) -> Any:
        async def request(*args: Any, **kwargs: Any) -> None:
            return None

        return request


def controller(ari: FakeAri, store: FakeStore) -> Controller:
    return Controller(config=CFG, ari=ari, store=store,  # type: ignore[arg-type]
                      roster=Roster([("agent1", "PJSIP/agent1")], assume_registered=True),
                      clock=lambda: NOW)


def ended(store: FakeStore) -> list[str]:
    return [args[0] for name, args, _ in store.writes if name == "call_ended"]


class TestClosingRecords:
    async def test_only_calls_from_before_this_process_are_closed_as_ended_while_down(self) -> None:
        """A reconnect closes the open record of a call from before the restart, never one this
        process started (its own end may still be on its way to the database)."""
        old = Record("aaaaaaaaaaaa", "1796398541.8", at(NOW - 600))
        mine = Record("bbbbbbbbbbbb", "1796398542.9", at(NOW + 5))
        store = FakeStore([old, mine])
        await controller(FakeAri({}), store).on_connect()
        assert ended(store) == ["aaaaaaaaaaaa"]
        kwargs = next(kw for name, _, kw in store.writes if name == "call_ended")
        assert kwargs["first_hangup"] == "unknown" and kwargs["outcome"] == "ended-while-down"

    async def test_a_caller_asterisk_cannot_describe_is_left_open_and_never_hung_up(self) -> None:
        """When Asterisk does not answer about a listed caller, their record stays open and their
        channel is not touched; the next reconnect looks again."""
        record = Record("aaaaaaaaaaaa", "1796398541.8", at(NOW - 600))
        store = FakeStore([record])
        ari = FakeAri({}, unreadable=("1796398541.8",))
        ctl = controller(ari, store)
        await ctl.on_connect()
        assert ended(store) == [] and ari.hung_up == [] and ctl.calls == {}


class TestWhoIsALeg:
    async def test_only_ids_the_controller_makes_are_taken_for_its_legs(self) -> None:
        """Agent, target and customer legs are ours; Asterisk's ids, with or without a system name, never are."""
        assert all(_our_leg(f"0123456789ab-{leg}") for leg in ("a1", "t12", "c1"))
        for caller in ("1796398541.8", "pbx1-1796398541.8", "asterisk0001-a1", "0123456789ab-x1",
                       "0123456789ab-a", "0123456789ab-ab"):
            assert not _our_leg(caller)

    async def test_an_unknown_agent_leg_is_hung_up_but_a_caller_never(self) -> None:
        """Legs left from a lost controller are hung up; the live caller is taken back, not hung up."""
        channels = {
            "1796398541.8": {"id": "1796398541.8", "state": "Up", "caller": {"number": "138"}},
            "0123456789ab-a1": {"id": "0123456789ab-a1", "state": "Up"},
        }
        ari = FakeAri(channels)
        ctl = controller(ari, FakeStore([]))
        await ctl.on_connect()
        assert ari.hung_up == ["0123456789ab-a1"]
        assert "1796398541.8" in ctl._by_channel
        for call in ctl.calls.values():
            if call.task is not None:
                call.task.cancel()


class TestOnConnected:
    async def test_the_hook_runs_after_every_connect_and_cannot_break_it(self) -> None:
        """After each (re)connect's recovery the on_connected hook runs (the fallback import's cue); one that raises changes nothing."""
        cues: list[int] = []
        ctl = controller(FakeAri({}), FakeStore([]))
        ctl.on_connected = lambda: cues.append(len(cues))
        await ctl.on_connect()
        await ctl.on_connect()
        assert cues == [0, 1] and ctl.connected.is_set()

        def broken() -> None:
            raise RuntimeError("import wiring broke")

        ctl.on_connected = broken
        await ctl.on_connect()
        assert ctl.connected.is_set()


class JournalStore(FakeStore):
    """A call log whose last record is still in the journal until ``flush`` lands it."""

    def __init__(self, pending: Record) -> None:
        super().__init__([])
        self.pending: Record | None = pending

    async def flush(self, timeout: float = 5.0) -> bool:
        if self.pending is not None:
            self.records.append(self.pending)
            self.pending = None
        return True


class TestJournalFlushedFirst:
    async def test_a_record_still_in_the_journal_is_seen_and_its_caller_taken_back_under_its_id(
            self) -> None:
        """The restart flushes the journal before reading open calls: a caller whose record was
        written just before the kill is taken back as that call, not logged a second time."""
        record = Record("aaaaaaaaaaaa", "1796398541.8", at(NOW - 30), state="greeting",
                        answered_at=at(NOW - 29))
        store = JournalStore(record)
        ari = FakeAri({"1796398541.8": {"id": "1796398541.8", "state": "Up",
                                        "caller": {"number": "13800138000", "name": ""}}})
        ctl = controller(ari, store)
        await ctl.on_connect()
        assert list(ctl.calls) == ["aaaaaaaaaaaa"]
        assert not [args for name, args, _ in store.writes if name == "call_started"]
        assert ari.hung_up == []
        await ctl.drain(0.1)


class TestCallbackCustomers:
    async def test_a_callback_customer_asterisk_cannot_describe_is_never_hung_up(self) -> None:
        """A callback's customer listed in the app but unreadable is left alone and its record open."""
        record = Record("abcdef123456", "abcdef123456-c1", at(NOW - 60))
        store = FakeStore([record])
        ari = FakeAri({}, unreadable=("abcdef123456-c1",))
        await controller(ari, store).on_connect()
        assert "abcdef123456-c1" not in ari.hung_up and ended(store) == []

    async def test_a_callback_still_dialling_is_stopped_and_its_record_closed(self) -> None:
        """A callback whose customer's phone still rang at the restart: both legs are hung up (a
        ringing leg is a dial attempt, not a caller) and the record is closed, not left open."""
        record = Record("abcdef123456", "abcdef123456-c1", at(NOW - 60))
        store = FakeStore([record])
        ari = FakeAri({"abcdef123456-c1": {"id": "abcdef123456-c1", "state": "Ringing"}})
        await controller(ari, store).on_connect()
        assert {"abcdef123456-c1", "abcdef123456-a1"} <= set(ari.hung_up)
        assert ended(store) == ["abcdef123456"]
