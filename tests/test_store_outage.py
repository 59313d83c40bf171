"""Database outages of the call log (issue 9): calls go on, records wait on disk, land once.

The outages here are real where the machine allows it: the SQLite file made
immutable (``chattr +i``: root ignores ``chmod``, and SQLite keeps its file
open, so a mode change would not stop it anyway) and the PostgreSQL cluster
stopped with ``pg_ctlcluster``. "Minutes" of outage are a few seconds with
many records, and a memory limit small enough that most of them wait on disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from db import CallStore
from tests.test_store import RULES, T0, crash, fail_writes, keep_journal, postgres_url, sqlite_url

__all__ = ["postgres_url"]  # the fixture, shared with tests/test_store.py

# Timeline entries each call below writes, in this order.
STEPS = ("StasisStart", "ringing", "answered", "greeted", "queued", "connected", "StasisEnd")


def outage_store(url: str, journal: Path, **options: Any) -> CallStore:
    """A store that retries quickly and keeps few records in memory, so outages spill."""
    settings: dict[str, Any] = {
        "retry_initial": 0.01,
        "retry_max": 0.05,
        "batch_size": 50,
        "memory_limit": 100,
        "journal_sync_interval": 0.05,
    }
    settings.update(options)
    return CallStore(url, journal_path=journal, **settings)


def log_calls(store: CallStore, call_ids: list[str], offset: float = 0.0) -> int:
    """Many concurrent calls, their records interleaved as a busy center's are; the count."""
    for n, call_id in enumerate(call_ids):
        store.call_started(
            call_id,
            channel_id=f"chan-{call_id}",
            caller_number=f"1380013{n:04d}",
            caller_name="",
            created_at=T0 + offset + n,
        )
    for step, kind in enumerate(STEPS):
        for n, call_id in enumerate(call_ids):
            store.append(
                call_id,
                at=T0 + offset + n + step,
                source="event" if kind.startswith("Stasis") else "log",
                kind=kind,
                detail={"step": step},
            )
            if kind == "answered":
                store.call_updated(call_id, answered_at=T0 + offset + n + step, agent="王芳")
    for n, call_id in enumerate(call_ids):
        store.call_ended(
            call_id,
            ended_at=T0 + offset + n + len(STEPS),
            first_hangup="caller",
            outcome="completed",
            compliance={rule: {"status": "kept", "evidence": {"rule": rule}} for rule in RULES},
        )
    return len(call_ids) * (len(STEPS) + 3)


async def assert_each_call_once_and_whole(store: CallStore, call_ids: list[str]) -> None:
    """Every call has one row, ended, all verdicts, and its timeline once, in order."""
    assert store._engine is not None
    async with store._engine.connect() as conn:
        rows = {
            r.call_id: r.n
            for r in await conn.execute(
                sa.text("SELECT call_id, count(*) AS n FROM timeline GROUP BY call_id")
            )
        }
        calls = int(await conn.scalar(sa.text("SELECT count(*) FROM calls")) or 0)
    assert calls == len(call_ids)
    assert rows == dict.fromkeys(call_ids, len(STEPS))
    for call_id in call_ids:
        record = await store.get_call(call_id)
        assert record is not None, call_id
        assert record.ended_at is not None and record.outcome == "completed"
        assert record.answered_at is not None and record.agent == "王芳"
        assert sorted(record.compliance) == sorted(RULES)
        assert [(e.seq, e.kind, e.detail) for e in record.timeline] == [
            (step + 1, kind, {"step": step}) for step, kind in enumerate(STEPS)
        ]


@contextmanager
def sqlite_unwritable(db: Path) -> Iterator[None]:
    """Make a SQLite database refuse every write (even root's) until the block ends."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make the SQLite file unwritable")
    # Not the -shm file: SQLite maps it, and an immutable mapping kills the process.
    files = [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
    done: list[Path] = []
    try:
        for path in files:
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
            if result.returncode != 0:
                pytest.skip(
                    "cannot make the SQLite file unwritable here (chattr +i needs root and a "
                    f"filesystem with the immutable flag): {result.stderr.decode().strip()}"
                )
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=False)


class TestSqliteUnwritable:
    async def test_every_call_lands_once_after_the_file_is_writable_again(
        self, tmp_path: Path
    ) -> None:
        """Calls logged while the SQLite file refuses writes are all in the log, whole and once."""
        db, journal = tmp_path / "calls.db", tmp_path / "calls.jsonl"
        store = outage_store(sqlite_url(db), journal)
        await store.start()
        before = [f"before-{i}" for i in range(10)]
        log_calls(store, before)
        assert await store.flush()
        during = [f"during-{i}" for i in range(300)]
        with capture_logs() as logs:
            with sqlite_unwritable(db):
                for start in range(0, len(during), 20):
                    log_calls(store, during[start : start + 20], offset=1000 + start)
                    await asyncio.sleep(0.01)  # calls go on; the writer keeps failing
                assert not await store.flush(timeout=0.3)
                # 3 000 records wait, but only the memory limit's worth in memory.
                assert store.pending == 300 * (len(STEPS) + 3)
                assert len(store._queue) <= 100
            assert await store.flush(timeout=60)
        try:
            assert any(e["event"] == "call_log.write_failed" for e in logs)
            assert any(e["event"] == "call_log.spilling_to_journal" for e in logs)
            await assert_each_call_once_and_whole(store, before + during)
        finally:
            await store.close()
        assert journal.read_bytes() == b""


class TestCrashMidOutage:
    async def test_power_cut_loses_at_most_the_last_batch(self, tmp_path: Path) -> None:
        """After a power cut mid-outage only records queued since the last fsync are lost."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = outage_store(url, journal, journal_sync_interval=10.0)
        await first.start()
        committed = [f"committed-{i}" for i in range(5)]
        # Committed, but the crash comes before the journal is emptied: still in it.
        keep_journal(first)
        log_calls(first, committed)
        assert await first.flush()
        fail_writes(first, times=10**9)  # the database goes down
        durable = [f"durable-{i}" for i in range(200)]
        log_calls(first, durable, offset=1000)
        await asyncio.sleep(0.05)
        assert first.pending == 200 * (len(STEPS) + 3) and len(first._queue) <= 100
        assert first._journal is not None
        await first._journal.sync()  # everything so far is on disk
        last_batch = [f"last-{i}" for i in range(3)]
        log_calls(first, last_batch, offset=5000)
        await asyncio.sleep(0.05)  # written by the journal thread, not yet fsync'd
        synced = first._journal.synced_size
        await crash(first, journal_caught_up=False)
        assert journal.stat().st_size > synced
        os.truncate(journal, synced)  # what the disk holds after the power cut

        second = outage_store(url, journal)
        await second.start()
        try:
            assert await second.flush(timeout=30)
            await assert_each_call_once_and_whole(second, committed + durable)
            for call_id in last_batch:
                assert await second.get_call(call_id) is None
        finally:
            await second.close()
        assert journal.read_bytes() == b""

    async def test_kill_mid_outage_loses_nothing_written(self, tmp_path: Path) -> None:
        """A process killed mid-outage leaves every record its journal thread wrote, for one replay."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = outage_store(url, journal)
        await first.start()
        calls = [f"c-{i}" for i in range(150)]
        fail_writes(first, times=10**9)
        log_calls(first, calls)
        await crash(first)

        await assert_a_new_store_lands_each_call_once(url, journal, calls)



async def assert_a_new_store_lands_each_call_once(url: str, journal: Path, calls: Any) -> None:
    """A fresh store on the same journal (the restarted controller) writes every call once, whole."""
    second = outage_store(url, journal)
    await second.start()
    try:
        assert await second.flush(timeout=30)
        await assert_each_call_once_and_whole(second, calls)
    finally:
        await second.close()

class TestJournalSize:
    async def test_busy_center_journal_stays_small(self, tmp_path: Path) -> None:
        """A journal whose queue never empties is rewritten small, and still replays every call once."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        store = outage_store(
            url, journal, journal_compact_bytes=20_000, linger=0.0, memory_limit=10_000,
            batch_size=1000,
        )
        await store.start()
        keep_journal(store)  # only rewriting may shrink it
        real = store._apply_batch

        async def slow(conn: Any, batch: list[dict[str, Any]], state: Any) -> None:
            await asyncio.sleep(0.02)  # records keep arriving during every transaction
            await real(conn, batch, state)

        store._apply_batch = slow  # type: ignore[method-assign]
        calls = [f"c-{i}" for i in range(200)]
        sizes: list[int] = []
        for start in range(0, len(calls), 5):
            log_calls(store, calls[start : start + 5], offset=start)
            await asyncio.sleep(0.01)
            sizes.append(journal.stat().st_size)
        await crash(store)
        # 40 rounds of about the first round's size went through it: it kept far less.
        assert max(sizes) < sizes[0] * 40 / 3

        await assert_a_new_store_lands_each_call_once(url, journal, calls)


class TestJournalSync:
    async def test_fsync_in_batches_not_per_record_nor_never(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A thousand records cost a handful of fsyncs, and the last one reaches disk unasked."""
        fsyncs: list[int] = []
        real_fsync = os.fsync

        def counting(fd: int) -> None:
            fsyncs.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting)
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        store = outage_store(url, journal, memory_limit=10_000)
        await store.start()
        fail_writes(store, times=10**9)
        for round_ in range(40):
            for i in range(25):
                store.append("c", at=T0 + i, source="log", kind="tick", detail={"r": round_})
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # one sync interval and more: no flush, no close
        assert store._journal is not None
        assert store._journal.synced_size == journal.stat().st_size > 0
        assert len(journal.read_text().splitlines()) == 1000
        assert 1 <= len(fsyncs) <= 20
        await crash(store)

    async def test_slow_disk_never_stalls_the_event_loop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With each fsync taking half a second, logging a call still returns at once."""
        real_fsync = os.fsync

        def slow(fd: int) -> None:
            time.sleep(0.5)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", slow)
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        store = outage_store(url, journal)
        await store.start()
        fail_writes(store, times=10**9)
        loop = asyncio.get_running_loop()
        worst = 0.0
        for round_ in range(20):
            began = loop.time()
            log_calls(store, [f"r{round_}-{i}" for i in range(5)], offset=round_ * 100)
            await asyncio.sleep(0.05)
            worst = max(worst, loop.time() - began - 0.05)
        assert worst < 0.2
        await crash(store, journal_caught_up=False)


# ---------------------------------------------------------------------- PostgreSQL stopped


def _cluster_for(url: str) -> tuple[str, str] | None:
    """The local cluster (version, name) serving ``url``'s port, if pg_lsclusters knows it."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    port = make_url(url).port or 5432
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    )
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == str(port) and fields[3] == "online":
            return fields[0], fields[1]
    return None


async def _pg_ctl(cluster: tuple[str, str], action: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", *cluster, action,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait() == 0


async def _wait_until_up(url: str, timeout: float = 30.0) -> None:
    engine = create_async_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


@pytest.fixture
async def stoppable_postgres(postgres_url: str) -> AsyncIterator[tuple[str, tuple[str, str]]]:
    """A fresh PostgreSQL database whose cluster this test may stop; always running again after."""
    cluster = _cluster_for(postgres_url)
    if cluster is None:
        pytest.skip(
            "cannot control the PostgreSQL cluster of LIYI_TEST_POSTGRES_URL "
            "(no pg_lsclusters/pg_ctlcluster, or no online local cluster on its port)"
        )
    try:
        yield postgres_url, cluster
    finally:
        await _pg_ctl(cluster, "start")  # harmless if it is running; others need it
        await _wait_until_up(postgres_url)


class TestPostgresStopped:
    async def test_calls_during_a_stop_land_once_after_restart(
        self, stoppable_postgres: tuple[str, tuple[str, str]], tmp_path: Path
    ) -> None:
        """Calls logged while PostgreSQL is stopped are all in the log after it restarts, once."""
        url, cluster = stoppable_postgres
        store = outage_store(url, tmp_path / "pg.jsonl")
        await store.start()
        try:
            before = [f"before-{i}" for i in range(10)]
            log_calls(store, before)
            assert await store.flush(timeout=30)
            with capture_logs() as logs:
                if not await _pg_ctl(cluster, "stop"):
                    pytest.skip(f"pg_ctlcluster {' '.join(cluster)} stop failed (not root?)")
                during = [f"during-{i}" for i in range(200)]
                for start in range(0, len(during), 20):
                    log_calls(store, during[start : start + 20], offset=1000 + start)
                    await asyncio.sleep(0.02)
                assert not await store.flush(timeout=0.3)
                assert store.pending == 200 * (len(STEPS) + 3)
                assert len(store._queue) <= 100
                assert await _pg_ctl(cluster, "start")
                assert await store.flush(timeout=60)
            assert any(e["event"] == "call_log.write_failed" for e in logs)
            await assert_each_call_once_and_whole(store, before + during)
        finally:
            await _pg_ctl(cluster, "start")
            await store.close()
