"""The call log (R10, R12): round trips, outages, crash journal, hostile text, migrations."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from structlog.testing import capture_logs

from db import AmbiguousCallId, CallRecord, CallStore, ComplianceMark, TimelineEntry
from db.migrations import downgrade_to, upgrade
from db.models import Agent, Base, Call, ComplianceRow, TimelineRow
from db.sanitize import NUL_REPLACEMENT

T0 = 1_763_000_000.125  # an epoch with milliseconds
RULES = [f"R{i}" for i in range(1, 11)]
APP_TABLES = {
    "calls", "timeline", "compliance", "agents", "journal_marks", "agent_accounts", "followups",
    "audit_log",
}


def make_store(url: str, journal: Path | None = None) -> CallStore:
    """A store that retries quickly, so outage tests stay fast."""
    return CallStore(url, journal_path=journal, retry_initial=0.01, retry_max=0.05)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, UTC)


def assert_same_instant(value: datetime | None, offset: float) -> None:
    assert value is not None
    assert value.tzinfo is not None and value.utcoffset() == UTC.utcoffset(None)
    assert abs(value.timestamp() - (T0 + offset)) < 0.001


def compliance_all_kept() -> dict[str, dict[str, Any]]:
    return {rule: {"status": "kept", "evidence": {"rule": rule}} for rule in RULES}


def log_whole_call(
    store: CallStore, call_id: str, offset: float = 0.0, agent: str = "王芳"
) -> None:
    """The writes a controller makes for one answered call."""
    store.call_started(
        call_id,
        channel_id=f"chan-{call_id}",
        caller_number="13800138000",
        caller_name="张三",
        created_at=T0 + offset,
    )
    store.append(call_id, at=T0 + offset, source="event", kind="StasisStart", detail={"n": 1})
    store.append(call_id, at=T0 + offset + 5, source="log", kind="answered", detail={"rings": 1})
    store.call_updated(call_id, answered_at=T0 + offset + 5, agent=agent, state="greeting")
    store.append(call_id, at=T0 + offset + 9, source="event", kind="StasisEnd", detail={})
    store.call_ended(
        call_id,
        ended_at=T0 + offset + 9,
        first_hangup="caller",
        outcome="completed",
        compliance=compliance_all_kept(),
        summary={"purpose": "查询订单"},
    )


async def crash(store: CallStore, *, journal_caught_up: bool = True) -> None:
    """Stop a store the way a killed process stops: no flush, journal left as it is.

    ``journal_caught_up``: killed after the journal thread wrote what it was
    handed (the usual case); False: also lose the lines it had not written.
    """
    if journal_caught_up and store._journal is not None:
        await store._journal.sync()
    assert store._writer is not None
    store._writer.cancel()
    with suppress(asyncio.CancelledError):
        await store._writer
    store._writer = None
    store._closed = True
    if store._journal is not None:
        store._journal.abandon()
    assert store._engine is not None
    await store._engine.dispose()


def keep_journal(store: CallStore) -> None:
    """Never empty the store's journal, as if the process died just before it could."""
    assert store._journal is not None

    def never() -> asyncio.Future[bool]:
        kept: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        kept.set_result(False)
        return kept

    store._journal.clear = never  # type: ignore[method-assign]


def fail_writes(store: CallStore, times: int, error: Exception | None = None) -> Callable[[], int]:
    """Make the next ``times`` batch writes fail as an unavailable database would."""
    real = store._apply_batch
    attempts = 0

    async def failing(conn: AsyncConnection, batch: list[dict[str, Any]], state: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= times:
            raise error or sa_exc.OperationalError("INSERT", {}, Exception("database is locked"))
        await real(conn, batch, state)

    store._apply_batch = failing  # type: ignore[method-assign]
    return lambda: attempts


async def count(store: CallStore, table: str) -> int:
    assert store._engine is not None
    async with store._engine.connect() as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = make_store(sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl")
    await s.start()
    yield s
    await s.close()


class TestRoundTrip:
    async def test_whole_call_comes_back(self, store: CallStore) -> None:
        """A call's start, timeline, update, end and compliance are stored and read back."""
        log_whole_call(store, "call-1")
        assert await store.flush()
        record = await store.get_call("call-1")
        assert isinstance(record, CallRecord)
        assert (record.channel_id, record.caller_number, record.caller_name) == (
            "chan-call-1",
            "13800138000",
            "张三",
        )
        assert_same_instant(record.created_at, 0)
        assert_same_instant(record.answered_at, 5)
        assert_same_instant(record.ended_at, 9)
        assert (record.first_hangup, record.outcome, record.agent, record.state) == (
            "caller",
            "completed",
            "王芳",
            "greeting",
        )
        assert record.summary == {"purpose": "查询订单"}
        assert [(e.seq, e.source, e.kind) for e in record.timeline] == [
            (1, "event", "StasisStart"),
            (2, "log", "answered"),
            (3, "event", "StasisEnd"),
        ]
        assert record.timeline[1].detail == {"rings": 1}
        assert_same_instant(record.timeline[1].at, 5)
        assert set(record.compliance) == set(RULES)
        assert record.compliance["R3"] == ComplianceMark("kept", {"rule": "R3"})
        status, evidence = record.compliance["R10"]
        assert (status, evidence) == ("kept", {"rule": "R10"})

    async def test_timeline_keeps_append_order(self, store: CallStore) -> None:
        """Timeline entries keep the order they were appended in, with seq 1, 2, 3…, even when
        their timestamps are out of order."""
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        kinds = [f"k{i}" for i in range(1200)]  # more than one batch
        for i, kind in enumerate(kinds):
            store.append("c", at=T0 + (i % 7), source="log", kind=kind, detail={"i": i})
        assert await store.flush()
        record = await store.get_call("c")
        assert record is not None
        assert [e.kind for e in record.timeline] == kinds
        assert [e.seq for e in record.timeline] == list(range(1, 1201))

    async def test_timeline_events_are_only_engine_inputs(self, store: CallStore) -> None:
        """timeline_events() returns the "event" entries in order, without the "log" ones."""
        log_whole_call(store, "c")
        assert await store.flush()
        events = await store.timeline_events("c")
        assert all(isinstance(e, TimelineEntry) for e in events)
        assert [(e.seq, e.kind) for e in events] == [(1, "StasisStart"), (3, "StasisEnd")]

    async def test_list_is_newest_first_and_pages(self, store: CallStore) -> None:
        """list_calls() orders by first ring, newest first, and honours limit/offset."""
        for i, offset in enumerate([30, 10, 50, 20, 40]):
            log_whole_call(store, f"call-{i}", offset=offset)
        assert await store.flush()
        calls = await store.list_calls()
        assert [c.id for c in calls] == ["call-2", "call-4", "call-0", "call-3", "call-1"]
        page = await store.list_calls(limit=2, offset=1)
        assert [c.id for c in page] == ["call-4", "call-0"]
        assert_same_instant(calls[0].created_at, 50)
        assert all(c.compliance == dict.fromkeys(RULES, "kept") for c in calls + page)

    async def test_open_calls_are_those_without_an_end(self, store: CallStore) -> None:
        """open_calls() lists the calls that have started and not ended, oldest first."""
        log_whole_call(store, "ended")
        for name, offset in [("open-late", 20), ("open-early", 10)]:
            store.call_started(
                name, channel_id=name, caller_number="1", caller_name="", created_at=T0 + offset
            )
        assert await store.flush()
        open_calls = await store.open_calls()
        assert [c.id for c in open_calls] == ["open-early", "open-late"]
        assert all(c.compliance == {} for c in open_calls)

    async def test_agent_state_is_upserted(self, store: CallStore) -> None:
        """agent_state() keeps one row per agent with the latest state."""
        store.agent_state(
            "alice", endpoint="PJSIP/1001", registered=True, device_state="NOT_INUSE", at=T0
        )
        store.agent_state(
            "alice", endpoint="PJSIP/1001", registered=False, device_state="UNAVAILABLE", at=T0 + 3
        )
        assert await store.flush()
        (alice,) = await store.agents()
        assert (alice.name, alice.registered, alice.device_state) == ("alice", False, "UNAVAILABLE")
        assert_same_instant(alice.updated_at, 3)

    async def test_detail_is_snapshot_at_append(self, store: CallStore) -> None:
        """Changing a detail dict after append() does not change what is logged."""
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        detail: dict[str, Any] = {"digits": ["1"]}
        store.append("c", at=T0, source="event", kind="ChannelDtmfReceived", detail=detail)
        detail["digits"].append("2")
        assert await store.flush()
        record = await store.get_call("c")
        assert record is not None and record.timeline[0].detail == {"digits": ["1"]}

    async def test_seq_continues_after_restart(self, tmp_path: Path) -> None:
        """A new store continues a call's seq numbers from the database, not from 1."""
        url = sqlite_url(tmp_path / "calls.db")
        first = make_store(url)
        await first.start()
        first.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        for i in range(3):
            first.append("c", at=T0 + i, source="log", kind=f"before-{i}", detail={})
        await first.close()
        second = make_store(url)
        await second.start()
        for i in range(2):
            second.append("c", at=T0 + 10 + i, source="log", kind=f"after-{i}", detail={})
        assert await second.flush()
        record = await second.get_call("c")
        await second.close()
        assert record is not None
        assert [(e.seq, e.kind) for e in record.timeline] == [
            (1, "before-0"),
            (2, "before-1"),
            (3, "before-2"),
            (4, "after-0"),
            (5, "after-1"),
        ]

    async def test_record_for_unknown_call_gets_a_placeholder(self, store: CallStore) -> None:
        """An entry for a call whose start was never logged still lands; a later start fills it."""
        store.append("lost-start", at=T0 + 1, source="event", kind="StasisEnd", detail={})
        assert await store.flush()
        placeholder = await store.get_call("lost-start")
        assert placeholder is not None and placeholder.state == "unknown"
        assert [e.kind for e in placeholder.timeline] == ["StasisEnd"]
        store.call_started(
            "lost-start", channel_id="ch", caller_number="42", caller_name="李四", created_at=T0
        )
        assert await store.flush()
        filled = await store.get_call("lost-start")
        assert filled is not None
        assert (filled.caller_number, filled.caller_name, filled.state) == ("42", "李四", None)
        assert_same_instant(filled.created_at, 0)

    async def test_bad_inputs_never_raise(self, store: CallStore) -> None:
        """Malformed arguments are logged as best they can be; the write methods do not raise."""
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        with capture_logs() as logs:
            store.call_started(
                "c", channel_id="x", caller_number="1", caller_name="", created_at=float("nan")
            )
            store.append("c", at="soon", source="elsewhere", kind="odd", detail=cyclic)  # type: ignore[arg-type]
            store.append(
                "c",
                at=T0,
                source="log",
                kind="obj",
                detail={"o": object(), "f": float("inf"), 3: b"\xff"},  # type: ignore[dict-item]
            )
            store.call_updated("c", colour="blue", answered_at=None)
            store.call_ended(
                "c",
                ended_at=T0,
                first_hangup="nobody",
                outcome="x",
                compliance={"R1": "kept"},  # type: ignore[dict-item]
            )
        assert await store.flush()
        record = await store.get_call("c")
        assert record is not None
        assert record.compliance["R1"] == ("kept", {})
        assert (
            record.timeline[1].detail["f"] == "inf" and record.timeline[1].detail["3"] == "\ufffd"
        )
        assert {e["event"] for e in logs} >= {
            "call_log.bad_time",
            "call_log.unknown_source",
            "call_log.unknown_field",
            "call_log.unknown_hangup_side",
        }


class TestPrefixLookup:
    async def test_unique_prefix_finds_the_call(self, store: CallStore) -> None:
        """get_call() accepts a unique prefix of the id and returns the whole call."""
        log_whole_call(store, "a1b2c3d4-0000")
        log_whole_call(store, "ffee0000-0000")
        assert await store.flush()
        record = await store.get_call("a1b2")
        assert record is not None and record.id == "a1b2c3d4-0000"
        assert len(record.timeline) == 3

    async def test_ambiguous_prefix_raises_and_unknown_is_none(self, store: CallStore) -> None:
        """A prefix of several ids raises AmbiguousCallId; one matching nothing gives None."""
        log_whole_call(store, "abc-1")
        log_whole_call(store, "abc-2")
        assert await store.flush()
        with pytest.raises(AmbiguousCallId) as raised:
            await store.get_call("abc")
        assert raised.value.matches == ["abc-1", "abc-2"]
        assert await store.get_call("zzz") is None
        assert await store.get_call("") is None

    async def test_prefix_is_literal_and_case_sensitive(self, store: CallStore) -> None:
        """LIKE wildcards in a prefix match themselves only, and case matters (SQLite too)."""
        log_whole_call(store, "abcdef")
        log_whole_call(store, "50%_off")
        assert await store.flush()
        assert await store.get_call("%") is None
        assert await store.get_call("_") is None
        assert await store.get_call("ABC") is None
        record = await store.get_call("50%_")
        assert record is not None and record.id == "50%_off"


class TestOutage:
    async def test_writes_return_while_database_hangs(self, store: CallStore) -> None:
        """While the database hangs, writes still return at once and pending grows."""
        release = asyncio.Event()
        real = store._apply_batch

        async def hanging(conn: AsyncConnection, batch: list[dict[str, Any]], state: Any) -> None:
            await release.wait()
            await real(conn, batch, state)

        store._apply_batch = hanging  # type: ignore[method-assign]
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        await asyncio.sleep(0.05)  # the writer is now stuck inside the first batch
        for i in range(300):
            store.append("c", at=T0 + i, source="log", kind="tick", detail={"i": i})
        assert store.pending == 301
        assert not await store.flush(timeout=0.05)
        release.set()
        assert await store.flush()
        assert store.pending == 0
        assert await count(store, "timeline") == 300

    async def test_failed_writes_are_retried_until_they_land(self, store: CallStore) -> None:
        """A database failing for several attempts loses nothing; a warning reports pending."""
        attempts = fail_writes(store, times=4)
        with capture_logs() as logs:
            log_whole_call(store, "c1")
            log_whole_call(store, "c2", offset=1)
            assert store.pending == 12
            assert await store.flush()
        assert attempts() == 5
        failures = [e for e in logs if e["event"] == "call_log.write_failed"]
        assert len(failures) == 4 and all(e["pending"] == 12 for e in failures)
        assert any(e["event"] == "call_log.write_recovered" for e in logs)
        for call_id in ("c1", "c2"):
            record = await store.get_call(call_id)
            assert record is not None and len(record.timeline) == 3
            assert len(record.compliance) == 10

    async def test_database_unreachable_at_start(self, tmp_path: Path) -> None:
        """A store whose database cannot be opened yet starts anyway and writes once it can."""
        missing_dir = tmp_path / "not-yet"
        store = make_store(sqlite_url(missing_dir / "calls.db"), tmp_path / "j.jsonl")
        with capture_logs() as logs:
            await store.start()
            log_whole_call(store, "c")
            assert not await store.flush(timeout=0.1)
        assert store.pending == 6
        assert any(e["event"] == "call_log.database_unavailable" for e in logs)
        missing_dir.mkdir()
        assert await store.flush()
        record = await store.get_call("c")
        await store.close()
        assert record is not None and len(record.timeline) == 3

    async def test_lost_commit_reply_does_not_duplicate(self, store: CallStore) -> None:
        """If a batch commits but the reply is lost, the retry does not write it twice."""
        real_write = store._write
        calls = 0

        async def commit_then_fail(batch: list[dict[str, Any]]) -> None:
            nonlocal calls
            calls += 1
            await real_write(batch)
            if calls == 1:
                raise sa_exc.OperationalError("COMMIT", {}, Exception("connection reset"))

        store._write = commit_then_fail  # type: ignore[method-assign]
        log_whole_call(store, "c")
        assert await store.flush()
        assert calls == 2
        assert await count(store, "timeline") == 3
        assert await count(store, "compliance") == 10

    async def test_refused_record_is_dropped_alone(self, store: CallStore) -> None:
        """A record the database keeps refusing is dropped after retries; the others land."""
        real = store._write_agent

        async def refuse_mallory(conn: AsyncConnection, record: dict[str, Any], state: Any) -> None:
            if record["name"] == "mallory":
                raise sa_exc.IntegrityError("INSERT", {}, Exception("refused"))
            await real(conn, record, state)

        store._write_agent = refuse_mallory  # type: ignore[method-assign]
        with capture_logs() as logs:
            log_whole_call(store, "before")
            store.agent_state("mallory", endpoint="e", registered=True, device_state="x", at=T0)
            log_whole_call(store, "after", offset=1)
            assert await store.flush()
        assert [c.id for c in await store.list_calls()] == ["after", "before"]
        assert await store.agents() == []
        dropped = [e for e in logs if e["event"] == "call_log.record_dropped"]
        assert len(dropped) == 1 and dropped[0]["record"]["name"] == "mallory"


class TestJournal:
    async def test_replay_after_crash_writes_everything_once(self, tmp_path: Path) -> None:
        """Records queued when the process died are written by the next store, exactly once."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        log_whole_call(first, "committed")
        assert await first.flush()
        fail_writes(first, times=10_000)
        log_whole_call(first, "in-flight", offset=1)
        first.append("committed", at=T0 + 20, source="log", kind="late-note", detail={})
        await asyncio.sleep(0.05)
        assert first.pending == 7
        await crash(first)

        second = make_store(url, journal)
        await second.start()
        assert await second.flush()
        record = await second.get_call("in-flight")
        committed = await second.get_call("committed")
        assert await count(second, "timeline") == 7
        await second.close()
        assert record is not None and [e.seq for e in record.timeline] == [1, 2, 3]
        assert record.outcome == "completed" and len(record.compliance) == 10
        assert committed is not None
        assert [e.kind for e in committed.timeline][-1] == "late-note"
        assert journal.read_text() == ""

    async def test_crash_before_journal_cleared_does_not_duplicate(self, tmp_path: Path) -> None:
        """Records committed but still in the journal at a crash are not written again."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        assert first._journal is not None
        keep_journal(first)
        log_whole_call(first, "c")
        assert await first.flush()
        await crash(first)
        assert len(journal.read_text().splitlines()) == 6

        second = make_store(url, journal)
        await second.start()
        second.append("c", at=T0 + 30, source="log", kind="after-restart", detail={})
        assert await second.flush()
        record = await second.get_call("c")
        calls = await count(second, "calls")
        await second.close()
        assert calls == 1
        assert record is not None
        assert [(e.seq, e.kind) for e in record.timeline] == [
            (1, "StasisStart"),
            (2, "answered"),
            (3, "StasisEnd"),
            (4, "after-restart"),
        ]
        assert journal.read_text() == ""
        # Once no journal holds their lines, a clean close leaves no marks behind.
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM journal_marks")) == 0
        await engine.dispose()

    async def test_torn_last_line_is_skipped(self, tmp_path: Path) -> None:
        """A half-written last journal line is skipped and does not spoil later records."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        fail_writes(first, times=10_000)
        first.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        await crash(first)
        with journal.open("a", encoding="utf-8") as f:
            f.write('{"op":"append","call_id":"c","at":')

        second = make_store(url, journal)
        with capture_logs() as logs:
            await second.start()
        fail_writes(second, times=10_000)
        second.append("c", at=T0 + 1, source="log", kind="after", detail={})
        await crash(second)
        assert any(e["event"] == "call_log.journal_lines_skipped" for e in logs)

        third = make_store(url, journal)
        await third.start()
        assert await third.flush()
        record = await third.get_call("c")
        await third.close()
        assert record is not None and [e.kind for e in record.timeline] == ["after"]

    async def test_journal_holds_pending_records_and_empties(self, store: CallStore) -> None:
        """Each queued record is in the journal until it is committed, then the journal empties."""
        assert store._journal is not None
        path = store._journal.path
        release = asyncio.Event()
        real = store._apply_batch

        async def held(conn: AsyncConnection, batch: list[dict[str, Any]], state: Any) -> None:
            await release.wait()
            await real(conn, batch, state)

        store._apply_batch = held  # type: ignore[method-assign]
        log_whole_call(store, "c")
        await store._journal.sync()
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert [r["op"] for r in lines] == ["start", "append", "append", "update", "append", "end"]
        release.set()
        assert await store.flush()
        assert path.read_text() == ""

    async def test_journal_is_not_shared_by_two_live_stores(self, tmp_path: Path) -> None:
        """A second live store on the same journal neither replays nor empties it."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        fail_writes(first, times=10_000)
        first.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        second = make_store(url, journal)
        with capture_logs() as logs:
            await second.start()
        second.call_started("d", channel_id="y", caller_number="2", caller_name="", created_at=T0)
        assert await second.flush()
        assert [c.id for c in await second.list_calls()] == ["d"]
        await second.close()
        assert any(e["event"] == "call_log.journal_in_use" for e in logs)
        assert [json.loads(line)["call_id"] for line in journal.read_text().splitlines()] == ["c"]
        await crash(first)

    async def test_close_keeps_unwritten_records_for_next_start(self, tmp_path: Path) -> None:
        """close() with the database down gives up after its timeout; the next start writes them."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        fail_writes(first, times=10_000)
        log_whole_call(first, "c")
        with capture_logs() as logs:
            started = time.monotonic()
            await first.close(timeout=0.2)
        assert time.monotonic() - started < 2
        assert any(e["event"] == "call_log.closed_with_pending" for e in logs)
        second = make_store(url, journal)
        await second.start()
        assert await second.flush()
        record = await second.get_call("c")
        await second.close()
        assert record is not None and len(record.timeline) == 3


def count_statements(store: CallStore) -> dict[str, int]:
    """Count the writer's transactions and SQL statements from now on, by kind."""
    assert store._engine is not None
    counts: dict[str, int] = {"commit": 0}

    def on_commit(_conn: Any) -> None:
        counts["commit"] += 1

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        table = re.search(r"\b(?:INTO|UPDATE|FROM)\s+(\w+)", statement)
        key = f"{words[0]} {table.group(1) if table else '?'}"
        counts[key] = counts.get(key, 0) + 1

    sa.event.listen(store._engine.sync_engine, "commit", on_commit)
    sa.event.listen(store._engine.sync_engine, "before_cursor_execute", on_execute)
    return counts


async def count_rows(url: str, table: str) -> int:
    """Rows of ``table``, read by an engine of its own (the store may be closed)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")))
    finally:
        await engine.dispose()


class TestGroupCommit:
    async def test_records_arriving_together_share_transactions(self, tmp_path: Path) -> None:
        """Records that keep arriving are committed at most once per linger, not one by one."""
        store = CallStore(sqlite_url(tmp_path / "calls.db"), linger=0.2)
        await store.start()
        counts = count_statements(store)
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        started = time.monotonic()
        for tick in range(30):  # ticks of 10 ms: 0.3 s or more of steady traffic
            for i in range(5):
                store.append("c", at=T0 + tick, source="log", kind="k", detail={"i": i})
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        assert await store.flush()
        commits = counts["commit"]
        await store.close()
        assert await count_rows(sqlite_url(tmp_path / "calls.db"), "timeline") == 150
        # The first goes at once, then at most one per 0.2 s while records keep
        # coming, then the flush's: not one per record (151).
        assert 2 <= commits <= 2 + elapsed / 0.2 + 1

    async def test_flush_does_not_wait_out_the_linger(self, tmp_path: Path) -> None:
        """flush() has the writer commit at once, however long the linger."""
        store = CallStore(sqlite_url(tmp_path / "calls.db"), linger=30.0)
        await store.start()
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        assert await store.flush(timeout=5)  # the first transaction: the writer was idle
        store.append("c", at=T0, source="log", kind="later", detail={})
        await asyncio.sleep(0.05)
        assert store.pending == 1  # lingering: a transaction began less than 30 s ago
        started = time.monotonic()
        assert await store.flush(timeout=5)
        assert time.monotonic() - started < 1
        assert store.pending == 0
        started = time.monotonic()
        store.append("c", at=T0, source="log", kind="last", detail={})
        await store.close()
        assert time.monotonic() - started < 1
        reopened = make_store(sqlite_url(tmp_path / "calls.db"))
        await reopened.start()
        record = await reopened.get_call("c")
        await reopened.close()
        assert record is not None and [e.kind for e in record.timeline] == ["later", "last"]

    async def test_full_batch_goes_without_waiting(self, tmp_path: Path) -> None:
        """A full batch is written at once, without waiting for the linger or a flush."""
        store = CallStore(sqlite_url(tmp_path / "calls.db"), linger=30.0, batch_size=10)
        await store.start()
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        assert await store.flush(timeout=5)
        for i in range(10):
            store.append("c", at=T0, source="log", kind="k", detail={"i": i})
        deadline = time.monotonic() + 2
        while store.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert store.pending == 0
        await store.close()


class TestBulkWrites:
    async def test_a_batch_costs_a_few_statements_whatever_its_size(self, store: CallStore) -> None:
        """Twenty whole calls in one batch take one statement per kind of write, and no
        SELECT for the calls this store creates."""
        counts = count_statements(store)
        for i in range(20):
            log_whole_call(store, f"call-{i}", offset=i, agent=f"agent-{i % 3}")
            store.call_updated(f"call-{i}", state="connected")
            store.agent_state(
                f"agent-{i % 3}", endpoint="PJSIP/1", registered=True, device_state="INUSE", at=T0
            )
        assert await store.flush()
        assert counts["commit"] == 1
        assert {kind: n for kind, n in counts.items() if kind != "commit"} == {
            "SELECT calls": 1,  # are the new call ids new?
            "SELECT agents": 1,  # are the agents new?
            "INSERT calls": 1,  # each row with its updates and end merged in
            "INSERT timeline": 1,
            "INSERT compliance": 1,
            "INSERT agents": 1,
            "INSERT journal_marks": 1,
        }
        assert await count(store, "timeline") == 60
        assert await count(store, "compliance") == 200

    async def test_known_calls_and_agents_need_no_select(self, store: CallStore) -> None:
        """Later batches for calls and agents this store already wrote read nothing back."""
        for i in range(5):
            store.call_started(
                f"c{i}", channel_id="x", caller_number="1", caller_name="", created_at=T0
            )
            store.agent_state(
                f"a{i}", endpoint="PJSIP/1", registered=True, device_state="NOT_INUSE", at=T0
            )
        assert await store.flush()
        counts = count_statements(store)
        for i in range(5):
            store.append(f"c{i}", at=T0 + 1, source="event", kind="StasisStart", detail={})
            store.call_updated(f"c{i}", state="greeting")
            store.agent_state(
                f"a{i}", endpoint="PJSIP/1", registered=True, device_state="INUSE", at=T0 + 1
            )
            store.call_ended(
                f"c{i}",
                ended_at=T0 + 2,
                first_hangup="caller",
                outcome="completed",
                compliance={"R1": {"status": "kept", "evidence": {}}},
            )
        assert await store.flush()
        assert not [kind for kind in counts if kind.startswith(("SELECT", "DELETE"))]
        record = await store.get_call("c3")
        assert record is not None and record.state == "greeting" and len(record.timeline) == 1

    async def test_agent_changes_in_a_batch_leave_the_latest(self, store: CallStore) -> None:
        """Several states of one agent in a batch are written once, as the latest."""
        counts = count_statements(store)
        for n, state in enumerate(["NOT_INUSE", "RINGING", "INUSE", "NOT_INUSE", "UNAVAILABLE"]):
            store.agent_state(
                "alice", endpoint="PJSIP/1001", registered=n < 4, device_state=state, at=T0 + n
            )
        assert await store.flush()
        assert counts.get("INSERT agents", 0) + counts.get("UPDATE agents", 0) == 1
        (alice,) = await store.agents()
        assert (alice.registered, alice.device_state) == (False, "UNAVAILABLE")
        assert_same_instant(alice.updated_at, 4)

    async def test_updates_of_a_call_in_a_batch_apply_in_order(self, store: CallStore) -> None:
        """Updates coalesced within a batch give what they give applied one by one."""
        store.call_started("c", channel_id="x", caller_number="1", caller_name="", created_at=T0)
        assert await store.flush()
        store.call_updated("c", state="ringing", agent="王芳")
        store.call_updated("c", state="greeting", answered_at=T0 + 3)
        store.call_updated("c", agent=None)
        store.call_ended(
            "c", ended_at=T0 + 9, first_hangup="agent", outcome="completed", compliance={}
        )
        store.call_updated("c", outcome="follow_up")
        assert await store.flush()
        record = await store.get_call("c")
        assert record is not None
        assert (record.state, record.agent, record.outcome, record.first_hangup) == (
            "greeting",
            None,
            "follow_up",
            "agent",
        )
        assert_same_instant(record.answered_at, 3)
        assert_same_instant(record.ended_at, 9)

    async def test_malformed_record_in_a_coalesced_batch_is_isolated(
        self, store: CallStore
    ) -> None:
        """A record that cannot be staged (say, a foreign journal line) is dropped alone."""
        log_whole_call(store, "before")
        store._enqueue({"op": "update", "call_id": "before"})  # no "fields"
        log_whole_call(store, "after", offset=1)
        with capture_logs() as logs:
            assert await store.flush()
        assert [c.id for c in await store.list_calls()] == ["after", "before"]
        assert await count(store, "timeline") == 6
        dropped = [e for e in logs if e["event"] == "call_log.record_dropped"]
        assert len(dropped) == 1 and dropped[0]["record"]["op"] == "update"

    async def test_second_end_replaces_the_verdicts(self, store: CallStore) -> None:
        """A call ended twice keeps the later verdict of each rule, in one batch or two."""
        for call_id, split in (("one-batch", False), ("two-batches", True)):
            store.call_started(
                call_id, channel_id="x", caller_number="1", caller_name="", created_at=T0
            )
            for n, status in enumerate(["broken", "kept"]):
                store.call_ended(
                    call_id,
                    ended_at=T0 + n,
                    first_hangup="caller",
                    outcome=f"end-{n}",
                    compliance={"R1": {"status": status, "evidence": {"n": n}}, f"R{n + 2}": {}},
                )
                if split:
                    assert await store.flush()
            assert await store.flush()
            record = await store.get_call(call_id)
            assert record is not None and record.outcome == "end-1"
            assert record.compliance == {
                "R1": ("kept", {"n": 1}),
                "R2": ("", {}),
                "R3": ("", {}),
            }


def mixed_writes(store: CallStore, prefix: str, part: int) -> None:
    """Writes that take every path of batch staging; ``part`` 2 follows part 1 in a later batch."""
    late, whole, twice = f"{prefix}late-start", f"{prefix}whole", f"{prefix}twice"
    if part == 1:
        store.append(late, at=T0 + 1, source="event", kind="StasisStart", detail={"n": 1})
        store.call_updated(late, state="unknown", agent="王芳")
        log_whole_call(store, whole)
        store.call_updated(whole, state="ringing", summary={"a": 1})
        store.call_updated(whole, state=None, summary=None, answered_at=None)
        store.call_started(twice, channel_id="t", caller_number="2", caller_name="", created_at=T0)
        store.call_ended(
            twice,
            ended_at=T0 + 1,
            first_hangup="agent",
            outcome="first",
            compliance={"R1": {"status": "broken", "evidence": {"n": 1}}},
        )
        for n, state in enumerate(["NOT_INUSE", "RINGING", "INUSE"]):
            store.agent_state(
                f"{prefix}alice", endpoint="PJSIP/1", registered=True, device_state=state, at=T0 + n
            )
    else:
        store.call_started(
            late, channel_id="l", caller_number="3", caller_name="李四", created_at=T0
        )
        store.append(late, at=T0 + 2, source="log", kind="answered", detail={})
        store.call_ended(
            twice,
            ended_at=T0 + 2,
            first_hangup="caller",
            outcome="second",
            compliance={"R1": {"status": "kept", "evidence": {"n": 2}}, "R2": {"status": "kept"}},
        )
        store.agent_state(
            f"{prefix}alice",
            endpoint="PJSIP/1",
            registered=False,
            device_state="UNAVAILABLE",
            at=T0 + 5,
        )


async def bulk_matches_one_by_one(url: str, tmp_path: Path) -> None:
    """``mixed_writes`` give the same calls and agents in bulk and one record at a time."""
    bulk = CallStore(url, journal_path=tmp_path / "bulk.jsonl")
    single = CallStore(url, journal_path=tmp_path / "single.jsonl", batch_size=1)
    for store in (bulk, single):
        await store.start()
    try:
        for part in (1, 2):
            mixed_writes(bulk, "bulk-", part)
            mixed_writes(single, "single-", part)
            assert await bulk.flush() and await single.flush()
        for name in ("late-start", "whole", "twice"):
            got = await bulk.get_call(f"bulk-{name}")
            expected = await single.get_call(f"single-{name}")
            assert got is not None and expected is not None
            assert dataclasses.replace(got, id="", channel_id="") == dataclasses.replace(
                expected, id="", channel_id=""
            )
        late = await bulk.get_call("bulk-late-start")
        assert late is not None and (late.state, late.caller_name) == (None, "李四")
        twice = await bulk.get_call("bulk-twice")
        assert twice is not None and twice.compliance["R1"] == ("kept", {"n": 2})
        agents = {
            a.name.split("-", 1)[1]: dataclasses.replace(a, name="")
            for a in await bulk.agents()
            if a.name.startswith("bulk-")
        }
        assert agents == {
            a.name.split("-", 1)[1]: dataclasses.replace(a, name="")
            for a in await single.agents()
            if a.name.startswith("single-")
        }
    finally:
        for store in (bulk, single):
            await store.close()


# ---------------------------------------------------------------- batches agree with one by one

CALL_IDS = ["a", "b"]
TEXTS = st.sampled_from(["ringing", "greeting", "unknown", "connected", "王芳", "x"])
OFFSETS = st.integers(min_value=0, max_value=600).map(float)


def _start(call_id: str, offset: float) -> Callable[[CallStore], None]:
    return lambda s: s.call_started(
        call_id,
        channel_id=f"ch-{offset}",
        caller_number="1",
        caller_name="张三",
        created_at=T0 + offset,
    )


def _append(call_id: str, offset: float, source: str) -> Callable[[CallStore], None]:
    return lambda s: s.append(
        call_id, at=T0 + offset, source=source, kind="k", detail={"at": offset}
    )


def _update(call_id: str, fields: dict[str, Any]) -> Callable[[CallStore], None]:
    return lambda s: s.call_updated(call_id, **fields)


def _end(
    call_id: str, offset: float, verdicts: dict[str, str], summary: dict[str, Any] | None
) -> Callable[[CallStore], None]:
    compliance = {
        rule: {"status": status, "evidence": {"o": offset}} for rule, status in verdicts.items()
    }
    return lambda s: s.call_ended(
        call_id,
        ended_at=T0 + offset,
        first_hangup="caller",
        outcome=f"o{offset}",
        compliance=compliance,
        summary=summary,
    )


def _agent(name: str, registered: bool, offset: float) -> Callable[[CallStore], None]:
    return lambda s: s.agent_state(
        name,
        endpoint=f"PJSIP/{name}",
        registered=registered,
        device_state=f"S{offset}",
        at=T0 + offset,
    )


UPDATE_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "state": st.none() | TEXTS,
        "agent": st.none() | TEXTS,
        "outcome": TEXTS,
        "answered_at": st.none() | OFFSETS.map(lambda o: T0 + o),
        "summary": st.none() | st.fixed_dictionaries({"n": OFFSETS}),
    },
)
CALL = st.sampled_from(CALL_IDS)
Write = tuple[str, str, Callable[[CallStore], None]]  # kind, call id, the write
WRITES = st.lists(
    st.one_of(
        st.builds(lambda c, o: ("start", c, _start(c, o)), CALL, OFFSETS),
        st.builds(
            lambda c, o, s: ("append", c, _append(c, o, s)),
            CALL,
            OFFSETS,
            st.sampled_from(["event", "log"]),
        ),
        st.builds(lambda c, f: ("update", c, _update(c, f)), CALL, UPDATE_FIELDS),
        st.builds(
            lambda c, o, v, s: ("end", c, _end(c, o, v, s)),
            CALL,
            OFFSETS,
            st.dictionaries(
                st.sampled_from(["R1", "R2", "R3"]), st.sampled_from(["kept", "broken"])
            ),
            st.none() | st.fixed_dictionaries({"s": OFFSETS}),
        ),
        st.builds(
            lambda n, r, o: ("agent", "", _agent(n, r, o)),
            st.sampled_from(["x", "y"]),
            st.booleans(),
            OFFSETS,
        ),
    ),
    min_size=1,
    max_size=25,
)


async def _snapshot(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (the timeline without its surrogate id), sorted."""
    tables = {
        "calls": sa.select(*Call.__table__.c),
        "timeline": sa.select(*(c for c in TimelineRow.__table__.c if c.name != "id")),
        "compliance": sa.select(*ComplianceRow.__table__.c),
        "agents": sa.select(*Agent.__table__.c),
    }
    async with engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in await conn.execute(query)), key=repr)
            for name, query in tables.items()
        }


async def _write_in_batches(
    path: Path, writes: list[Callable[[CallStore], None]], chunks: list[int], batch_size: int
) -> dict[str, list[tuple[Any, ...]]]:
    """Write ``writes`` cut into ``chunks``, each by a new store (a restart between them)."""
    done = 0
    for size in chunks:
        store = CallStore(sqlite_url(path), batch_size=batch_size)
        await store.start()
        for write in writes[done : done + size]:
            write(store)
        assert await store.flush()
        await store.close()
        done += size
    engine = create_async_engine(sqlite_url(path))
    try:
        return await _snapshot(engine)
    finally:
        await engine.dispose()


def _mask_guessed_created_at(
    snapshot: dict[str, list[tuple[Any, ...]]], writes: list[Write]
) -> None:
    """A call first seen in an update gets "now" as its first ring: not comparable."""
    first: dict[str, str] = {}
    started: set[str] = set()
    for kind, call_id, _ in writes:
        first.setdefault(call_id, kind)
        if kind == "start":
            started.add(call_id)
    guessed = {c for c, kind in first.items() if kind == "update" and c not in started}
    snapshot["calls"] = [
        row[:4] + (None,) + row[5:] if row[0] in guessed else row for row in snapshot["calls"]
    ]


class TestBatchesAgreeWithOneByOne:
    async def test_every_staging_path(self, tmp_path: Path) -> None:
        """Placeholders, repeated starts and ends, coalesced updates and agent states give
        the same calls and agents in bulk as one record per transaction."""
        await bulk_matches_one_by_one(sqlite_url(tmp_path / "calls.db"), tmp_path)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(writes=WRITES, cut=st.integers(min_value=0, max_value=25))
    def test_same_tables_however_records_are_batched(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        writes: list[Write],
        cut: int,
    ) -> None:
        """Random calls' records give the same tables written in one batch, one record per
        transaction, or in two batches with a restart (empty caches) between them."""
        tmp = tmp_path_factory.mktemp("batches")
        calls = [write for _, _, write in writes]
        cut = min(cut, len(calls))

        async def run() -> list[dict[str, list[tuple[Any, ...]]]]:
            return [
                await _write_in_batches(tmp / "one.db", calls, [len(calls)], 500),
                await _write_in_batches(tmp / "single.db", calls, [len(calls)], 1),
                await _write_in_batches(tmp / "split.db", calls, [cut, len(calls) - cut], 500),
            ]

        with capture_logs():
            snapshots = asyncio.run(run())
        for snapshot in snapshots:
            _mask_guessed_created_at(snapshot, writes)
        assert snapshots[0] == snapshots[1]
        assert snapshots[2] == snapshots[1]


HOSTILE = [
    'O\'Brien "the caller" <sip:1001@evil>',
    "'; DROP TABLE calls; --",
    "Robert'); DELETE FROM timeline WHERE ('1'='1",
    "line one\nline two\r\nline three\ttabbed",
    "客服中心：您好，请问有什么可以帮您？",
    "长" * 700 + "x" * 2048,
    "emoji 📞 and RTL \u202e text",
    "%_\\ like wildcards and backslash \\x00",
]


async def hostile_round_trip(store: CallStore) -> None:
    """Every hostile string survives as itself; NUL and lone surrogates are replaced."""
    for i, text in enumerate(HOSTILE):
        call_id = f"hostile-{i}-{text[:20]}"
        store.call_started(
            call_id, channel_id=text, caller_number=text, caller_name=text, created_at=T0 + i
        )
        store.append(
            call_id, at=T0 + i, source="log", kind=text, detail={text: [text, {"nested": text}]}
        )
        store.call_ended(
            call_id,
            ended_at=T0 + i + 1,
            first_hangup="caller",
            outcome=text,
            compliance={"R3": {"status": "kept", "evidence": {"name": text}}},
            summary={"notes": text},
        )
    store.call_started(
        "nul\x00id",
        channel_id="a\x00b",
        caller_number="1\x002",
        caller_name="bad \ud800 half",
        created_at=T0 + 100,
    )
    store.append(
        "nul\x00id", at=T0 + 100, source="log", kind="k\x00", detail={"k\x00": "v\x00\ud83d"}
    )
    assert await store.flush()

    for i, text in enumerate(HOSTILE):
        record = await store.get_call(f"hostile-{i}-{text[:20]}")
        assert record is not None
        assert (record.channel_id, record.caller_number, record.caller_name, record.outcome) == (
            text,
            text,
            text,
            text,
        )
        (entry,) = record.timeline
        assert entry.kind == text and entry.detail == {text: [text, {"nested": text}]}
        assert record.compliance["R3"] == ("kept", {"name": text})
        assert record.summary == {"notes": text}

    cleaned_id = f"nul{NUL_REPLACEMENT}id"
    record = await store.get_call(cleaned_id)
    assert record is not None
    assert (record.channel_id, record.caller_number) == (
        f"a{NUL_REPLACEMENT}b",
        f"1{NUL_REPLACEMENT}2",
    )
    assert record.caller_name == "bad ? half"
    assert record.timeline[0].kind == f"k{NUL_REPLACEMENT}"
    assert record.timeline[0].detail == {f"k{NUL_REPLACEMENT}": f"v{NUL_REPLACEMENT}?"}
    assert await count(store, "calls") == len(HOSTILE) + 1


class TestHostileText:
    async def test_hostile_strings_round_trip(self, store: CallStore) -> None:
        """Quotes, SQL, newlines, Chinese and 2 KB strings come back intact; NUL is replaced."""
        await hostile_round_trip(store)

    async def test_hostile_strings_in_journal_replay(self, tmp_path: Path) -> None:
        """Hostile strings survive the JSONL journal and its replay unchanged."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        fail_writes(first, times=10_000)
        text = HOSTILE[3] + HOSTILE[4] + "\u2028\u2029\x85\x1c\x0b\x0c"
        first.call_started("c", channel_id="x", caller_number=text, caller_name=text, created_at=T0)
        await crash(first)
        second = make_store(url, journal)
        await second.start()
        assert await second.flush()
        record = await second.get_call("c")
        await second.close()
        assert record is not None and record.caller_name == text


async def schema_diffs(conn: AsyncConnection) -> list[Any]:
    def compare(sync_conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    return await conn.run_sync(compare)


async def table_names(conn: AsyncConnection) -> set[str]:
    return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


class TestMigrations:
    async def test_upgrade_creates_schema_matching_models(self, tmp_path: Path) -> None:
        """upgrade head on an empty database creates exactly the schema the models describe."""
        engine = create_async_engine(sqlite_url(tmp_path / "empty.db"))
        try:
            await upgrade(engine)
            async with engine.connect() as conn:
                assert await table_names(conn) == APP_TABLES | {"alembic_version"}
                assert await schema_diffs(conn) == []
                assert (
                    await conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0005"
                )
        finally:
            await engine.dispose()

    async def test_downgrade_and_upgrade_again(self, tmp_path: Path) -> None:
        """Downgrading to base drops the tables, and upgrading again restores them."""
        engine = create_async_engine(sqlite_url(tmp_path / "cycle.db"))
        try:
            await upgrade(engine)
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to, "base")
            async with engine.connect() as conn:
                assert await table_names(conn) & APP_TABLES == set()
            await upgrade(engine)
            async with engine.connect() as conn:
                assert await schema_diffs(conn) == []
        finally:
            await engine.dispose()

    async def test_start_migrates_and_is_idempotent(self, tmp_path: Path) -> None:
        """Starting a store twice on the same file migrates once and keeps the data."""
        url = sqlite_url(tmp_path / "calls.db")
        for call_id in ("first", "second"):
            store = make_store(url)
            await store.start()
            log_whole_call(store, call_id)
            await store.close()
        store = make_store(url)
        await store.start()
        assert [c.id for c in await store.list_calls()] == ["second", "first"]
        await store.close()


POSTGRES_URL = os.environ.get("LIYI_TEST_POSTGRES_URL")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("set LIYI_TEST_POSTGRES_URL=postgresql+asyncpg://user@host/db to run")
    # pre-ping: a test may restart the cluster, closing the connection this engine keeps.
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"liyi_test_{uuid.uuid4().hex[:12]}"
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def with_store(
    url: str, tmp_path: Path, body: Callable[[CallStore], Awaitable[None]]
) -> None:
    store = make_store(url, tmp_path / "pg.jsonl")
    await store.start()
    try:
        await body(store)
    finally:
        await store.close()


class TestPostgres:
    async def test_round_trip_and_schema(self, postgres_url: str, tmp_path: Path) -> None:
        """On PostgreSQL the schema matches the models and a whole call round-trips."""

        async def body(store: CallStore) -> None:
            log_whole_call(store, "pg-1")
            log_whole_call(store, "pg-2", offset=5)
            assert await store.flush()
            assert [c.id for c in await store.list_calls()] == ["pg-2", "pg-1"]
            record = await store.get_call("pg-1")
            assert record is not None and [e.seq for e in record.timeline] == [1, 2, 3]
            assert_same_instant(record.answered_at, 5)
            assert record.compliance["R9"] == ("kept", {"rule": "R9"})
            assert store._engine is not None
            async with store._engine.connect() as conn:
                assert await schema_diffs(conn) == []

        await with_store(postgres_url, tmp_path, body)

    async def test_bulk_matches_one_by_one(self, postgres_url: str, tmp_path: Path) -> None:
        """On PostgreSQL bulk staging gives what one record per transaction gives."""
        await bulk_matches_one_by_one(postgres_url, tmp_path)

    async def test_hostile_strings(self, postgres_url: str, tmp_path: Path) -> None:
        """On PostgreSQL hostile strings round-trip and NUL never reaches the server."""
        await with_store(postgres_url, tmp_path, hostile_round_trip)

    async def test_replay_after_crash(self, postgres_url: str, tmp_path: Path) -> None:
        """On PostgreSQL a crashed store's journal is replayed exactly once."""
        journal = tmp_path / "pg.jsonl"
        first = make_store(postgres_url, journal)
        await first.start()
        log_whole_call(first, "a")
        assert await first.flush()
        assert first._journal is not None
        keep_journal(first)
        log_whole_call(first, "b", offset=1)
        assert await first.flush()
        fail_writes(first, times=10_000)
        log_whole_call(first, "c", offset=2)
        await crash(first)

        async def body(store: CallStore) -> None:
            assert await store.flush()
            assert await count(store, "timeline") == 9
            assert await count(store, "compliance") == 30

        await with_store(postgres_url, tmp_path, body)
