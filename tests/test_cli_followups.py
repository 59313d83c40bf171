"""`liyi followups` as an admin meets it: overdue first, flagged in the log, `done ID`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from db import CallStore
from liyi import cli

# 2026-10-11 17:00 UTC is 01:00 on Monday 2026-10-12 in Shanghai (the default company.timezone)
# but still Sunday the 11th in UTC and in New York.
NOW = dt.datetime(2026, 10, 11, 17, 0, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 9, 30, 2, 0, tzinfo=dt.UTC).timestamp()


def fill(db: Path) -> None:
    """Two calls with follow-ups: overdue at the center, due later, done, an unowned callback."""

    async def go() -> None:
        store = CallStore(f"sqlite+aiosqlite:///{db}")
        await store.start()
        for i, call_id in enumerate(("c0ffee01-first", "c0ffee02-second")):
            store.call_started(call_id, channel_id=f"ch{i}", caller_number="13800138000",
                               caller_name="张三", created_at=T0 + i)
            store.call_ended(call_id, ended_at=T0 + i + 60, first_hangup="caller",
                             outcome="completed",
                             compliance={"R8": {"status": "kept", "evidence": {"promised": True}}})

        def add(fid: str, call_id: str, due: dt.date, owner: str, kind: str = "promise",
                queue: str = "", text: str = "三个工作日后给您答复") -> None:
            store.followup_added(fid, call_id=call_id, kind=kind, text=text, due=due,
                                 owner=owner, number="13800138000", queue=queue, created_at=T0)

        add("aa11-later", "c0ffee01-first", dt.date(2026, 10, 14), "王芳")
        add("bb22-late", "c0ffee01-first", dt.date(2026, 10, 11), "王芳", text="退款进度")
        add("aa33-done", "c0ffee01-first", dt.date(2026, 10, 9), "李强")
        add("dd44-callback", "c0ffee02-second", dt.date(2026, 10, 13), "", kind="callback",
            queue="售后", text="")
        assert await store.flush()
        assert await store.complete_followup("aa33-done", by="李强", at=T0 + 100) is not None
        await store.close()

    asyncio.run(go())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "log.db"
    fill(path)
    monkeypatch.setattr(cli, "_now", lambda: NOW)
    return path


def table_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[2:]]


class TestList:
    def test_overdue_first_flagged_then_open_by_due(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The follow-up overdue by the center's date leads, marked 逾期 OVERDUE; done ones hidden."""
        assert cli.main(["followups", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].startswith("today 2026-10-12 (Asia/Shanghai): 3 follow-ups")
        assert table_ids(out) == ["bb22-lat", "dd44-cal", "aa11-lat"]
        lines = out.splitlines()[2:]
        assert "逾期 OVERDUE" in lines[0] and "2026-10-11" in lines[0] and "退款进度" in lines[0]
        assert "callback queue 售后" in lines[1] and "c0ffee02-sec" in lines[1]
        assert "OVERDUE" not in lines[1] + lines[2]

    def test_today_is_the_centers_date(
        self, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the center in New York it is still the 11th, so nothing is overdue yet."""
        config = tmp_path / "ny.yaml"
        config.write_text("company:\n  name: 测试\n  timezone: America/New_York\n",
                          encoding="utf-8")
        assert cli.main(["followups", "--config", str(config), "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "today 2026-10-11 (America/New_York)" in out and "OVERDUE" not in out

    def test_all_adds_the_done_ones_last(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--all` lists the done follow-up too, after the open ones."""
        assert cli.main(["followups", "--all", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert table_ids(out)[-1] == "aa33-don" and " done " in out.splitlines()[-1]

    def test_owner_sees_own_and_unowned_callbacks(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--owner` shows that agent's follow-ups and the callbacks nobody owns."""
        assert cli.main(["followups", "--owner", "李强", "--all", "--db", str(db)]) == 0
        assert table_ids(capsys.readouterr().out) == ["dd44-cal", "aa33-don"]

    def test_json_lines_with_status(self, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--json` prints one object per follow-up with its status today and an ISO due date."""
        assert cli.main(["followups", "--json", "--db", str(db)]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["id"], r["status"], r["due"]) for r in rows] == [
            ("bb22-late", "overdue", "2026-10-11"),
            ("dd44-callback", "open", "2026-10-13"),
            ("aa11-later", "open", "2026-10-14"),
        ]

    def test_listing_flags_newly_overdue_once_in_the_log(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The first run flags the overdue follow-up (timeline entry, R8 broken); the next does not."""
        assert cli.main(["followups", "--db", str(db)]) == 0
        assert "flagged 1 newly overdue follow-up" in capsys.readouterr().err
        assert cli.main(["followups", "--db", str(db)]) == 0
        assert "flagged" not in capsys.readouterr().err
        assert cli.main(["calls", "show", "c0ffee01", "--db", str(db)]) == 0
        shown = capsys.readouterr().out
        assert shown.count("followup-overdue") == 1
        assert "R8   broken" in shown
        assert "follow-ups" in shown and "逾期 OVERDUE" in shown

    def test_empty_log_says_so(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No follow-ups is a clear message, not an empty table."""
        assert cli.main(["followups", "--db", str(tmp_path / "empty.db")]) == 0
        assert "no open follow-ups" in capsys.readouterr().out

    def test_unreachable_database_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A call log that cannot be opened is one clear line and exit status 1, no traceback."""
        assert cli.main(["followups", "--db", str(tmp_path / "no" / "such" / "dir.db")]) == 1
        err = capsys.readouterr().err
        assert "call log unavailable" in err and "Traceback" not in err


class TestDone:
    def test_done_by_prefix_marks_it_done_by_admin(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`followups done PREFIX` closes that follow-up as done by admin; it leaves the list."""
        assert cli.main(["followups", "done", "bb22", "--db", str(db)]) == 0
        assert "bb22-late done by admin" in capsys.readouterr().out
        assert cli.main(["followups", "--db", str(db)]) == 0
        assert table_ids(capsys.readouterr().out) == ["dd44-cal", "aa11-lat"]
        assert cli.main(["followups", "done", "bb22-late", "--db", str(db)]) == 0
        assert "already done (by admin" in capsys.readouterr().out

    def test_unknown_ambiguous_and_missing_ids(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown id, an ambiguous prefix and no id at all are errors that say so."""
        assert cli.main(["followups", "done", "zz", "--db", str(db)]) == 1
        assert "no follow-up 'zz'" in capsys.readouterr().err
        assert cli.main(["followups", "done", "", "--db", str(db)]) == 2
        assert "usage" in capsys.readouterr().err
        assert cli.main(["followups", "done", "aa", "--db", str(db)]) == 1
        assert "matches several follow-ups: aa11-later, aa33-done" in capsys.readouterr().err
