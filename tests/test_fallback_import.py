"""Fallback calls reach the call log from Asterisk's CEL file, exactly once (issue 9, R10).

Against SQLite files under tmp_path, with the CEL file Asterisk 22.10.1
wrote on the real rig (tests/traces/16-fallback-cel.csv).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from callflow.config import AgentConfig, CallFlowConfig
from db import CallStore
from db.migrations import downgrade_to, upgrade
from liyi import cli
from liyi.fallback_import import FallbackImporter, watch
from liyi.settings import parse_settings
from tests.test_fallback_cel import agent_first_call

TRACE = Path(__file__).resolve().parent / "traces" / "16-fallback-cel.csv"
CFG = CallFlowConfig(agents=(AgentConfig(name="agent1", endpoint="PJSIP/agent1"),
                             AgentConfig(name="agent2", endpoint="PJSIP/agent2")))


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def started(db: Path) -> CallStore:
    store = CallStore(url(db))
    await store.start()
    return store


async def fallback_rows(db: Path) -> list[tuple[str, str, str | None]]:
    engine = create_async_engine(url(db))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text(
                "SELECT id, handled_by, asterisk_linkedid FROM calls ORDER BY id"))
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await engine.dispose()


class TestImport:
    async def test_trace_calls_land_whole_flagged_fallback(self, tmp_path: Path) -> None:
        """The four calls of the real trace are in the log: handled_by fallback, answer, agent, first hang-up, timeline, compliance."""
        store = await started(tmp_path / "log.db")
        try:
            report = await FallbackImporter(TRACE, store, CFG).run_once()
            assert (report.imported, report.already, report.pending, report.bad) == (4, 0, 0, ())
            [first] = [s for s in await store.list_calls() if s.caller_number == "13800138001"]
            [agent_first] = [s for s in await store.list_calls() if s.id == "fb-1796455619.0"]
            assert agent_first.first_hangup == "agent" and agent_first.handled_by == "fallback"
            assert first.handled_by == "fallback"
            call = await store.get_call(first.id)
            assert call is not None
            assert call.handled_by == "fallback"
            assert call.agent == "agent1" and call.first_hangup == "caller"
            assert call.answered_at is not None and call.ended_at is not None
            assert call.outcome == "completed" and call.state == "ended"
            assert call.summary is not None and call.summary["handled_by"] == "fallback"
            assert [t.seq for t in call.timeline] == list(range(1, len(call.timeline) + 1))
            assert call.timeline[-1].kind == "ended"
            assert call.compliance["R1"].status == "kept"
            assert call.compliance["R2"].status == "not_applicable"
        finally:
            await store.close()

    async def test_reading_the_file_twice_imports_once(self, tmp_path: Path) -> None:
        """A second pass, and a new importer reading from the top, find every call already there."""
        store = await started(tmp_path / "log.db")
        try:
            importer = FallbackImporter(TRACE, store, CFG)
            await importer.run_once()
            again = await importer.run_once()
            assert (again.imported, again.read_bytes) == (0, 0)
            fresh = await FallbackImporter(TRACE, store, CFG).run_once()
            assert (fresh.imported, fresh.already) == (0, 4)
            assert len(await fallback_rows(tmp_path / "log.db")) == 4
        finally:
            await store.close()

    async def test_concurrent_imports_write_each_call_once(self, tmp_path: Path) -> None:
        """Two processes' stores importing the same file at the same time, twice each: four calls, not sixteen."""
        db = tmp_path / "log.db"
        first, second = await started(db), await started(db)
        try:
            reports = await asyncio.gather(
                *(FallbackImporter(TRACE, s, CFG).run_once() for s in (first, second, first, second)))
            assert sum(r.imported for r in reports) == 4
            assert sum(r.already for r in reports) == 12
            rows = await fallback_rows(db)
            assert len(rows) == 4 and {r[1] for r in rows} == {"fallback"}
        finally:
            await first.close()
            await second.close()

    async def test_after_a_crash_mid_file_the_rest_is_imported_once(self, tmp_path: Path) -> None:
        """Half the file imported, the process gone, the whole file read by the next: each call once."""
        cel = tmp_path / "cel.csv"
        lines = TRACE.read_text(encoding="utf-8").splitlines(keepends=True)
        cel.write_text("".join(lines[:11]), encoding="utf-8")  # through the first call's LINKEDID_END
        db = tmp_path / "log.db"
        store = await started(db)
        assert (await FallbackImporter(cel, store, CFG).run_once()).imported == 1
        await store.close()  # the controller dies; Asterisk keeps writing
        cel.write_text("".join(lines), encoding="utf-8")
        store = await started(db)
        try:
            report = await FallbackImporter(cel, store, CFG).run_once()
            assert (report.imported, report.already) == (3, 1)
            assert len(await fallback_rows(db)) == 4
        finally:
            await store.close()

    async def test_a_call_split_across_reads_is_imported_when_it_ends(self, tmp_path: Path) -> None:
        """Lines of a call still going are kept; once its LINKEDID_END is written the call is imported whole."""
        cel = tmp_path / "cel.csv"
        lines = agent_first_call().splitlines(keepends=True)
        cel.write_text("".join(lines[:4]), encoding="utf-8")
        store = await started(tmp_path / "log.db")
        try:
            importer = FallbackImporter(cel, store, CFG)
            first = await importer.run_once()
            assert (first.imported, first.pending) == (0, 1)
            with cel.open("a", encoding="utf-8") as f:
                f.write("".join(lines[4:]))
            assert importer.has_unread()
            second = await importer.run_once()
            assert (second.imported, second.pending) == (1, 0)
            [summary] = await store.list_calls()
            assert summary.agent == "agent1" and summary.first_hangup == "agent"
        finally:
            await store.close()

    async def test_bad_lines_are_reported_and_the_calls_still_imported(self, tmp_path: Path) -> None:
        """Garbage between a call's lines: reported with its line number, the call imported."""
        cel = tmp_path / "cel.csv"
        lines = agent_first_call().splitlines(keepends=True)
        cel.write_bytes("".join(lines[:3]).encode() + b"\xff\xfe garbage,\x00\n" + "".join(lines[3:]).encode())
        store = await started(tmp_path / "log.db")
        try:
            report = await FallbackImporter(cel, store, CFG).run_once()
            assert report.imported == 1
            assert [b.line for b in report.bad] == [4]
            assert "1 bad lines skipped" in report.summary_line()
        finally:
            await store.close()

    async def test_a_missing_file_says_so(self, tmp_path: Path) -> None:
        """No CEL file yet (Asterisk never fell back): a clear line, nothing written."""
        store = await started(tmp_path / "log.db")
        try:
            report = await FallbackImporter(tmp_path / "none.csv", store, CFG).run_once()
            assert not report.found
            assert "no file at" in report.summary_line()
        finally:
            await store.close()

    async def test_database_down_keeps_the_file_to_read_again(self, tmp_path: Path) -> None:
        """An import whose database write fails reads the same lines again next time."""
        store = await started(tmp_path / "log.db")
        try:
            importer = FallbackImporter(TRACE, store, CFG)

            class Down:
                async def import_calls(self, records: object) -> None:
                    raise OSError("database down")

            importer.store = Down()
            try:
                await importer.run_once()
            except OSError:
                pass
            assert importer.has_unread()
            importer.store = store
            assert (await importer.run_once()).imported == 4
        finally:
            await store.close()

    async def test_watch_imports_when_woken(self, tmp_path: Path) -> None:
        """The watch loop imports at start and again when the controller says it reconnected."""
        cel = tmp_path / "cel.csv"
        store = await started(tmp_path / "log.db")
        stop, wake = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(watch(FallbackImporter(cel, store, CFG), stop, wake, every=3600))
        try:
            await asyncio.sleep(0.2)
            shutil.copy(TRACE, cel)
            wake.set()
            for _ in range(100):
                if len(await store.list_calls()) == 4:
                    break
                await asyncio.sleep(0.05)
            assert len(await store.list_calls()) == 4
        finally:
            stop.set()
            await task
            await store.close()


class TestMigration:
    async def test_calls_logged_before_0004_are_liyis(self, tmp_path: Path) -> None:
        """A database at 0003 with a call in it upgrades: that call is handled_by liyi, no linkedid."""
        engine = create_async_engine(url(tmp_path / "old.db"))
        try:
            await upgrade(engine)
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to, "0003")
                await conn.execute(sa.text(
                    "INSERT INTO calls (id, created_at) VALUES ('old', '2026-12-01 10:00:00')"))
            await upgrade(engine)
        finally:
            await engine.dispose()
        assert await fallback_rows(tmp_path / "old.db") == [("old", "liyi", None)]


class TestCommandLine:
    def test_import_fallback_prints_a_summary_and_imports_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi import-fallback --file F` says what it did; run again it imports nothing new."""
        db = tmp_path / "log.db"
        assert cli.main(["import-fallback", "--file", str(TRACE), "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "fallback calls: 4 imported, 0 already in the log, 0 still going, 0 bad lines" in out
        assert cli.main(["import-fallback", "--file", str(TRACE), "--db", str(db)]) == 0
        assert "0 imported, 4 already in the log" in capsys.readouterr().out
        assert cli.main(["calls", "--db", str(db)]) == 0
        listing = capsys.readouterr().out
        assert listing.count("fallback") == 4
        assert cli.main(["calls", "--json", "--db", str(db)]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert {r["handled_by"] for r in rows} == {"fallback"}

    def test_bad_lines_are_named_on_stderr(self, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """A garbled line is reported with file and line number; the good calls are imported."""
        cel = tmp_path / "cel.csv"
        cel.write_text("garbage\n" + TRACE.read_text(encoding="utf-8"), encoding="utf-8")
        assert cli.main(["import-fallback", "--file", str(cel), "--db", str(tmp_path / "l.db")]) == 0
        captured = capsys.readouterr()
        assert f"{cel}:1: skipped: 1 fields, expected 12" in captured.err
        assert "4 imported" in captured.out and "1 bad lines skipped" in captured.out

    def test_missing_file_and_no_setting_are_clear_errors(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No such file: exit 1 naming it; no --file and no asterisk section: exit 2 saying what to give."""
        missing = tmp_path / "none.csv"
        assert cli.main(["import-fallback", "--file", str(missing), "--db", str(tmp_path / "l.db")]) == 1
        assert f"no file at {missing}" in capsys.readouterr().out
        assert cli.main(["import-fallback", "--db", str(tmp_path / "l.db")]) == 2
        assert "asterisk.fallback_log" in capsys.readouterr().err


COMPANY = {"company": {"name": "礼仪科技"}}


class TestSettings:
    def test_default_is_asterisks_log_dir_when_local_else_none(self) -> None:
        """Asterisk on loopback: its log dir's file by default; on another host none; null switches it off."""
        local, _ = parse_settings({**COMPANY, "asterisk": {"ari_url": "http://127.0.0.1:8088"}}, {})
        remote, _ = parse_settings({**COMPANY, "asterisk": {"ari_url": "http://pbx.example:8088"}}, {})
        off, _ = parse_settings({**COMPANY, "asterisk": {"fallback_log": None}}, {})
        given_, _ = parse_settings({**COMPANY, "asterisk": {"fallback_log": "/srv/cel.csv"}}, {})
        assert local is not None and local.asterisk is not None
        assert local.asterisk.fallback_log == "/var/log/asterisk/cel-custom/liyi-fallback.csv"
        assert remote is not None and remote.asterisk is not None and remote.asterisk.fallback_log is None
        assert off is not None and off.asterisk is not None and off.asterisk.fallback_log is None
        assert given_ is not None and given_.asterisk is not None
        assert given_.asterisk.fallback_log == "/srv/cel.csv"

    def test_a_path_that_is_not_text_is_refused(self) -> None:
        """fallback_log: 5 is a config problem naming the key."""
        _, problems = parse_settings({**COMPANY, "asterisk": {"fallback_log": 5}}, {})
        assert any(p.path == "asterisk.fallback_log" for p in problems)


class TestWeb:
    async def test_pages_and_api_show_who_handled_the_call(self, tmp_path: Path) -> None:
        """The call list, a call's page and the JSON API say a fallback call was handled by the fallback."""
        from tests.web_signin import serve
        from web import create_app

        store = await started(tmp_path / "log.db")
        await FallbackImporter(TRACE, store, CFG).run_once()
        client = await serve(create_app(store), role="supervisor")
        try:
            listing = await (await client.get("/")).text()
            assert listing.count('<span class="code">fallback</span>') == 4
            data = await (await client.get("/api/calls")).json()
            assert {c["handled_by"] for c in data["calls"]} == {"fallback"}
            page = await (await client.get("/calls/fb-1796454799.0")).text()
            assert "接待 Handled by" in page and '<span class="code">fallback</span>' in page
            one = await (await client.get("/api/calls/fb-1796454799.0")).json()
            assert one["handled_by"] == "fallback" and one["agent"] == "agent1"
        finally:
            await client.close()
            await store.close()


class TestLiyiRun:
    async def test_the_service_imports_at_start_and_again_after_a_reconnect(self, tmp_path: Path) -> None:
        """liyi (against the simulator) imports the CEL file when it starts, and what was added when it reconnects; live calls' log untouched."""
        from tests.e2e_world import running_world

        cel = tmp_path / "cel.csv"
        shutil.copy(TRACE, cel)
        async with running_world(tmp_path, asterisk_options={"fallback_log": str(cel)}) as world:
            assert await wait_for_calls(world.store, 4)
            with cel.open("a", encoding="utf-8") as f:
                f.write(agent_first_call(linkedid="1796460000.9", t=1796460000.0))
            assert world.service.controller is not None
            await world.service.controller.on_connect()  # what a reconnect to Asterisk runs
            assert await wait_for_calls(world.store, 5)
            calls = await world.store.list_calls()
            assert {c.handled_by for c in calls} == {"fallback"}
            assert len({c.id for c in calls}) == 5


async def wait_for_calls(store: CallStore, count: int, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if len(await store.list_calls(limit=50)) >= count:
            return len(await store.list_calls(limit=50)) == count
        await asyncio.sleep(0.05)
    return False
