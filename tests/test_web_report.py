"""The admin compliance report (R12): rates per agent, per queue and per day, page and JSON.

Served over a real socket (127.0.0.1, ephemeral port) from a real ``CallStore``
on a temporary SQLite file, filled through the store's write API the way the
controller fills it, with "now" fixed so the window of days does not depend
on the day the tests run.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from db import CallStore
from tests.test_web import BrokenStore, get_text, runnable, serve
from web import app as web_app
from web import create_app
from web.pages import percent, rate_cell

# 2026-05-20 04:00 UTC = 12:00 in Shanghai.
NOW = datetime(2026, 5, 20, 4, 0, tzinfo=UTC)


def at(text: str) -> float:
    """Epoch seconds of an ISO instant given with its offset."""
    return datetime.fromisoformat(text).timestamp()


# (id, first ring, agent, queue, {rule: status}); queue None = never queued, "" = general.
CALLS: list[tuple[str, float, str | None, str | None, dict[str, str]]] = [
    ("c1", at("2026-05-20T09:00:00+08:00"), "agent1", "报修", {"R1": "kept", "R5": "kept"}),
    ("c2", at("2026-05-19T15:00:00+08:00"), "agent1", "报修", {"R1": "broken", "R5": "broken"}),
    ("c3", at("2026-05-19T10:00:00+08:00"), "agent2", "", {"R1": "kept", "R5": "kept"}),
    # 16:30 UTC on the 18th is already 00:30 on the 19th at the center.
    ("c4", at("2026-05-18T16:30:00+00:00"), None, None,
     {"R1": "broken", "R5": "not_applicable"}),
    # Seven weeks ago: outside the default 30 days.
    ("c5", at("2026-04-01T10:00:00+08:00"), "agent1", None, {"R1": "kept"}),
]


def log_ended(store: CallStore, call_id: str, start: float, agent: str | None,
              queue: str | None, statuses: dict[str, str]) -> None:
    """The writes the controller makes for a call that ended with this compliance record."""
    store.call_started(call_id, channel_id=f"ch-{call_id}", caller_number="13800138000",
                       caller_name="", created_at=start)
    if agent is not None:
        store.call_updated(call_id, agent=agent, answered_at=start + 4.0)
    store.call_ended(call_id, ended_at=start + 60.0, first_hangup="caller",
                     outcome="completed", summary={"queue": queue},
                     compliance={rule: {"status": s, "evidence": {}}
                                 for rule, s in statuses.items()})


def log_live(store: CallStore, call_id: str, start: float) -> None:
    """A call still going on: no compliance record, so not in the report."""
    store.call_started(call_id, channel_id=f"ch-{call_id}", caller_number="1",
                       caller_name="", created_at=start)
    store.call_updated(call_id, agent="agent2", state="connected")


async def open_store(path: Path) -> CallStore:
    s = CallStore(f"sqlite+aiosqlite:///{path}")
    await s.start()
    return s


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    """Five ended calls over seven weeks and one live call, the newest."""
    s = await open_store(tmp_path / "calls.db")
    for call in CALLS:
        log_ended(s, *call)
    log_live(s, "c6-live", at("2026-05-20T10:00:00+08:00"))
    assert await s.flush()
    yield s
    await s.close()


@pytest.fixture
async def client(store: CallStore) -> AsyncIterator[TestClient[Any, Any]]:
    c = await serve(create_app(store, now=lambda: NOW))
    yield c
    await c.close()


class ReportTable(HTMLParser):
    """Reads ``table.report`` into the rule columns and, per row, each cell's class and text."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[str] = []
        self.rows: dict[str, dict[str, tuple[str, str]]] = {}
        self._in_table = False
        self._section = ""
        self._row: list[tuple[str, str]] = []
        self._cell: list[str] | None = None
        self._cls = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "report" in (a.get("class") or ""):
            self._in_table = True
        elif self._in_table and tag in ("thead", "tbody", "tfoot"):
            self._section = tag
        elif self._in_table and tag == "tr":
            self._row = []
        elif self._in_table and tag in ("td", "th"):
            self._cell, self._cls = [], a.get("class") or ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self._in_table:
            return
        if tag in ("td", "th") and self._cell is not None:
            self._row.append((self._cls, " ".join("".join(self._cell).split())))
            self._cell = None
        elif tag == "tr":
            if self._section == "thead":
                self.head = [text for _, text in self._row]
            else:
                group = self._row[0][1].split(" ")[0] if self._section == "tbody" else "TOTAL"
                self.rows[group] = dict(zip(self.head[1:], self._row[1:], strict=True))
        elif tag == "table":
            self._in_table = False


def table(html: str) -> ReportTable:
    parsed = ReportTable()
    parsed.feed(html)
    return parsed


def cell(html: str, group: str, rule: str) -> tuple[str, str]:
    """(class, text) of ``rule``'s cell in ``group``'s row."""
    rows = table(html).rows
    assert group in rows, f"no row {group!r} in {list(rows)}"
    return rows[group][rule]


class TestReportByAgent:
    async def test_rates_per_agent(self, client: TestClient[Any, Any]) -> None:
        """Each agent's cell shows kept/judged and the percentage; no agent is the "—" row."""
        html = await get_text(client, "/report")
        assert cell(html, "agent1", "R1")[1] == "50% 1/2"
        assert cell(html, "agent2", "R1")[1] == "100% 1/1"
        assert cell(html, "—", "R1")[1] == "0% 0/1"
        assert cell(html, "agent1", "通话 Calls")[1] == "2"

    async def test_agent_is_the_default_grouping(self, client: TestClient[Any, Any]) -> None:
        """Without ?by the page groups by agent and marks that tab current."""
        html = await get_text(client, "/report")
        assert table(html).head[0] == "坐席 Agent"
        assert re.search(r'class="tab active" aria-current="page" href="/report\?by=agent', html)

    async def test_broken_heavy_cells_are_marked(self, client: TestClient[Any, Any]) -> None:
        """A low rate is class "bad", a clean one "ok", a never-applied rule "na" with "–"."""
        html = await get_text(client, "/report")
        assert cell(html, "agent1", "R1")[0] == "rate bad"
        assert cell(html, "agent2", "R1")[0] == "rate ok"
        assert cell(html, "agent2", "R4") == ("rate na", "–")

    async def test_rules_r1_to_r10_are_columns_and_totals_add_up(
        self, client: TestClient[Any, Any]
    ) -> None:
        """The table has a column for every scored rule and a total row over all groups."""
        parsed = table(await get_text(client, "/report"))
        assert parsed.head[2:] == [f"R{i}" for i in range(1, 11)]
        assert parsed.rows["TOTAL"]["R1"][1] == "50% 2/4"
        assert parsed.rows["TOTAL"]["通话 Calls"][1] == "4"

    async def test_live_and_old_calls_are_not_counted(self, client: TestClient[Any, Any]) -> None:
        """The live call (no record yet) and the call seven weeks back stay out of 30 days."""
        html = await get_text(client, "/report")
        assert "4 通已结束 ended calls" in html
        assert "2026-04-21 – 2026-05-20" in html


class TestReportByQueue:
    async def test_rates_per_queue_with_cli_keys(self, client: TestClient[Any, Any]) -> None:
        """Queues keep ``liyi report``'s keys: "all" is the general queue, "—" never queued."""
        html = await get_text(client, "/report?by=queue")
        assert table(html).head[0] == "队列 Queue"
        assert cell(html, "报修", "R5")[1] == "50% 1/2"
        assert cell(html, "all", "R5")[1] == "100% 1/1"
        assert cell(html, "—", "R5") == ("rate na", "–")
        assert cell(html, "—", "R1")[1] == "0% 0/1"
        assert "通用队列 general queue" in html and "未排队 never queued" in html


class TestReportByDay:
    async def test_rates_per_day_on_the_centers_calendar(
        self, client: TestClient[Any, Any]
    ) -> None:
        """Days are the center's dates, newest first: 16:30 UTC on the 18th counts on the 19th."""
        html = await get_text(client, "/report?by=day")
        rows = table(html).rows
        assert [k for k in rows if k != "TOTAL"] == ["2026-05-20", "2026-05-19"]
        assert rows["2026-05-19"]["R1"][1] == "33.3% 1/3"
        assert rows["2026-05-20"]["R1"][1] == "100% 1/1"

    async def test_days_widens_and_narrows_the_window(self, client: TestClient[Any, Any]) -> None:
        """?days=60 brings in the call from April; ?days=1 keeps today only."""
        wide = table(await get_text(client, "/report?by=day&days=60")).rows
        assert "2026-04-01" in wide and wide["2026-04-01"]["R1"][1] == "100% 1/1"
        narrow = table(await get_text(client, "/report?by=day&days=1")).rows
        assert [k for k in narrow if k != "TOTAL"] == ["2026-05-20"]

    async def test_tabs_keep_the_window(self, client: TestClient[Any, Any]) -> None:
        """Switching grouping keeps ?days, and the days form keeps ?by."""
        html = await get_text(client, "/report?by=day&days=7")
        assert 'href="/report?by=agent&amp;days=7"' in html
        assert 'href="/report?by=queue&amp;days=7"' in html
        assert '<input type="hidden" name="by" value="day">' in html
        assert 'name="days" min="1" value="7"' in html


class TestReportApi:
    async def test_json_twin(self, client: TestClient[Any, Any]) -> None:
        """/api/report gives the rates as ``callflow.compliance.rates`` cells, per group."""
        resp = await client.get("/api/report?by=queue")
        assert resp.status == 200
        data = await resp.json()
        assert data["by"] == "queue" and data["calls"] == 4 and data["days"] == 30
        assert data["from"] == "2026-04-21" and data["to"] == "2026-05-20"
        assert data["timezone"] == "Asia/Shanghai"
        assert data["rates"]["报修"]["R5"] == {"kept": 1, "broken": 1, "rate": 0.5}
        assert data["rates"]["all"]["R5"]["rate"] == 1.0
        assert data["rates"]["—"]["R5"]["rate"] == -1.0
        assert data["calls_per_group"] == {"报修": 2, "all": 1, "—": 1}
        assert data["totals"]["R1"] == {"kept": 2, "broken": 2, "rate": 0.5}
        assert data["capped"] is False

    async def test_json_by_day(self, client: TestClient[Any, Any]) -> None:
        """By day over 60 days, the JSON has one key per center date with ended calls."""
        data = await (await client.get("/api/report?by=day&days=60")).json()
        assert sorted(data["rates"]) == ["2026-04-01", "2026-05-19", "2026-05-20"]
        assert data["rates"]["2026-05-19"]["R1"]["kept"] == 1
        assert data["rates"]["2026-05-19"]["R1"]["broken"] == 2

    async def test_reading_in_chunks_gives_the_same_numbers(
        self, client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reading the log two calls at a time gives the same report as one read."""
        whole = await (await client.get("/api/report?by=agent&days=60")).json()
        monkeypatch.setattr(web_app, "REPORT_CHUNK", 2)
        chunked = await (await client.get("/api/report?by=agent&days=60")).json()
        assert chunked == whole and whole["calls"] == 5


class TestBadRequests:
    @pytest.mark.parametrize("path", ["/report?by=caller", "/report?by=AGENT"])
    async def test_unknown_grouping_is_a_400_page(
        self, client: TestClient[Any, Any], path: str
    ) -> None:
        """An unknown ?by= is answered 400 naming the groupings that exist."""
        html = await get_text(client, path, 400)
        assert "by must be one of agent, queue, day" in html

    async def test_unknown_grouping_is_a_400_json(self, client: TestClient[Any, Any]) -> None:
        """The JSON twin answers an unknown ?by= with 400 and the same message."""
        resp = await client.get("/api/report?by=week")
        assert resp.status == 400
        assert (await resp.json())["error"] == "by must be one of agent, queue, day, got 'week'"

    @pytest.mark.parametrize("days", ["0", "-3", "abc", "99999"])
    async def test_bad_days_is_a_400(self, client: TestClient[Any, Any], days: str) -> None:
        """?days must be a whole number of days in range."""
        resp = await client.get(f"/api/report?days={days}")
        assert resp.status == 400
        assert "days must be" in (await resp.json())["error"]


class TestEmptyAndCapped:
    async def test_empty_log_says_no_ended_calls_yet(self, tmp_path: Path) -> None:
        """With nothing ended in the log the page says so instead of an empty table."""
        s = await open_store(tmp_path / "empty.db")
        log_live(s, "live", at("2026-05-20T10:00:00+08:00"))
        assert await s.flush()
        c = await serve(create_app(s, now=lambda: NOW))
        try:
            html = await get_text(c, "/report?by=queue")
            assert "no ended calls yet" in html and "<table" not in html
            data = await (await c.get("/api/report")).json()
            assert data["calls"] == 0 and data["rates"] == {}
        finally:
            await c.close()
            await s.close()

    async def test_only_old_calls_names_the_window(self, tmp_path: Path) -> None:
        """If every ended call is older than the window, the message says "in the last N days"."""
        s = await open_store(tmp_path / "old.db")
        log_ended(s, *CALLS[-1])
        assert await s.flush()
        c = await serve(create_app(s, now=lambda: NOW))
        try:
            assert "no ended calls in the last 7 days" in await get_text(c, "/report?days=7")
        finally:
            await c.close()
            await s.close()

    async def test_cap_on_calls_read_is_shown(self, store: CallStore) -> None:
        """With a cap of 2 calls only the two newest are read and the page says it stopped."""
        c = await serve(create_app(store, now=lambda: NOW, report_max_calls=2))
        try:
            data = await (await c.get("/api/report")).json()
            assert data["capped"] is True and data["max_calls"] == 2
            assert data["calls"] == 1  # the live call and c1
            assert "only the most recent 2 calls were read" in await get_text(c, "/report")
            # Today holds exactly two calls: the cap reaches the window's start, nothing is cut.
            today = await (await c.get("/api/report?days=1")).json()
            assert today["capped"] is False and today["calls"] == 1
        finally:
            await c.close()

    async def test_unavailable_log_is_503(self) -> None:
        """A call log that cannot be read gives the 503 page and JSON, not a crash."""
        c = await serve(create_app(BrokenStore()))
        try:
            assert "call log unavailable" in await get_text(c, "/report", 503)
            assert (await c.get("/api/report")).status == 503
        finally:
            await c.close()


class TestReportPage:
    async def test_header_links_to_the_report(self, client: TestClient[Any, Any]) -> None:
        """Every admin page's navigation has a Report link next to the others."""
        for path in ("/", "/followups", "/report"):
            html = await get_text(client, path)
            nav = re.search(r'<nav class="sub">.*?</nav>', html, re.DOTALL)
            assert nav and 'href="/report"' in nav.group(0) and 'href="/followups"' in nav.group(0)

    async def test_group_names_are_escaped(self, tmp_path: Path) -> None:
        """A queue name with markup is shown as text and nothing on the page runs."""
        s = await open_store(tmp_path / "hostile.db")
        log_ended(s, "h1", at("2026-05-20T09:00:00+08:00"), "<i>a</i>",
                  "<script>alert(1)</script>", {"R1": "kept"})
        assert await s.flush()
        c = await serve(create_app(s, now=lambda: NOW))
        try:
            for by in ("agent", "queue"):
                html = await get_text(c, f"/report?by={by}")
                assert "<script>alert" not in html and "<i>a</i>" not in html
                assert runnable(html).scripts == []
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        finally:
            await c.close()
            await s.close()

    def test_cell_levels_and_percentages(self) -> None:
        """90 % is amber, 79 % red; a breach never rounds up to 100 % nor a keep down to 0 %."""
        assert 'class="rate warn"' in rate_cell("R1", {"kept": 9, "broken": 1, "rate": 0.9})
        assert 'class="rate bad"' in rate_cell("R1", {"kept": 79, "broken": 21, "rate": 0.79})
        assert 'class="rate ok"' in rate_cell("R1", {"kept": 19, "broken": 1, "rate": 0.95})
        assert percent(9999, 10000) == "99.9%"
        assert percent(1, 10000) == "0.1%"
        assert percent(199, 200) == "99.5%"
        assert percent(1, 3) == "33.3%" and percent(2, 3) == "66.7%"
        assert percent(1, 2) == "50%"


class TestStylesheet:
    async def test_overdue_followup_rows_are_highlighted(
        self, client: TestClient[Any, Any]
    ) -> None:
        """The stylesheet gives an overdue follow-up's whole row the warning background."""
        css = await get_text(client, "/static/style.css")
        assert re.search(r"tr\.followup\.overdue td\s*\{[^}]*background:\s*var\(--warn-bg\)", css)

    async def test_report_cells_have_their_colours(self, client: TestClient[Any, Any]) -> None:
        """The report's "bad" and "warn" cells have a coloured background in the stylesheet."""
        css = await get_text(client, "/static/style.css")
        assert re.search(r"td\.rate\.bad\s*\{[^}]*background:\s*var\(--bad-bg\)", css)
        assert re.search(r"td\.rate\.warn\s*\{[^}]*background:\s*var\(--warn-bg\)", css)
