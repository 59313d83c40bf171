"""The admin web pages: call list, one call, JSON API, escaping of hostile caller ids, outages.

The pages are served over a real socket (127.0.0.1, ephemeral port) from a
real ``CallStore`` on a temporary SQLite file, filled through the store's own
write API the way the controller fills it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import exc as sa_exc

from db import CallRecord, CallStore, CallSummary, ComplianceMark
from tests.web_signin import serve as serve_signed_in
from web import create_app
from web.pages import badge, local_time, relative

# 2026-05-09 01:00:00.000 UTC = 09:00 in Shanghai.
T0 = datetime(2026, 5, 9, 1, 0, 0, tzinfo=UTC).timestamp()
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_NUMBER = "\"'><img src=x onerror=alert(2)>"
HOSTILE_REASON = 'x" onmouseover="alert(3)'
CHINESE_NAME = "张三 \"老王\" 's"
OLD, MID, LIVE = "c0ffee01-old", "c0ffee02-mid", "c0ffee03-live"


def kept(**evidence: Any) -> dict[str, Any]:
    return {"status": "kept", "evidence": evidence}


def log_completed_call(store: CallStore, call_id: str, start: float, *, name: str = CHINESE_NAME,
                       number: str = "13800138000") -> None:
    """The writes the controller makes for an answered call the caller ended."""
    store.call_started(call_id, channel_id=f"chan-{call_id}", caller_number=number,
                       caller_name=name, created_at=start)
    steps: list[tuple[float, str, str, dict[str, Any]]] = [
        (0.0, "event", "StasisStart", {"channel_id": f"chan-{call_id}", "caller_number": number}),
        (0.0, "log", "ringing", {"first_ring_at": start, "caller_number": number}),
        (4.5, "log", "answered", {"rings_elapsed": 1, "seconds": 4.5}),
        (4.6, "log", "greeting", {"prompt": "greeting-morning"}),
        (9.25, "event", "PlaybackFinished", {"playback_id": "pb-1", "state": "done"}),
        (9.25, "log", "greeted", {"result": "done"}),
        (10.0, "log", "agent-ringing", {"agent": "agent1", "rings": 3}),
        (12.0, "log", "connected", {"agent": "agent1"}),
        (75.125, "event", "ChannelHangupRequest", {"channel_id": f"chan-{call_id}"}),
        (75.125, "log", "caller-hung-up", {"while_state": "connected"}),
        (75.2, "log", "ended", {"outcome": "completed", "first_hangup": "caller"}),
    ]
    for offset, source, kind, detail in steps:
        store.append(call_id, at=start + offset, source=source, kind=kind, detail=detail)
    store.call_updated(call_id, answered_at=start + 4.5, agent="agent1", state="ended")
    store.call_ended(call_id, ended_at=start + 75.2, first_hangup="caller", outcome="completed",
                     compliance={
                         "R1": kept(first_ring_at=start, answer_seconds=4.5, rings_elapsed=1),
                         "R2": kept(greeting="greeting-morning", result="done"),
                         "R4": {"status": "not_applicable", "evidence": {"holds": 0}},
                         "R9": kept(first_hangup="caller"),
                         "R10": kept(logged_from=start),
                     })


def log_abandoned_call(store: CallStore, call_id: str, start: float) -> None:
    """A hostile caller id that hung up after ring 3 unanswered: R1 broken, R2 n/a."""
    store.call_started(call_id, channel_id=f"chan-{call_id}", caller_number=HOSTILE_NUMBER,
                       caller_name=HOSTILE_NAME, created_at=start)
    store.append(call_id, at=start, source="event", kind="StasisStart",
                 detail={"caller_name": HOSTILE_NAME})
    store.append(call_id, at=start, source="log", kind="ringing",
                 detail={"caller_name": HOSTILE_NAME, "caller_number": HOSTILE_NUMBER})
    store.append(call_id, at=start + 13.5, source="log", kind="caller-hung-up",
                 detail={"while_state": "ringing"})
    store.call_ended(call_id, ended_at=start + 13.5, first_hangup="caller",
                     outcome="abandoned-ringing", compliance={
                         "R1": {"status": "broken",
                                "evidence": {"reason": "not answered within three rings",
                                             "caller_left_after_seconds": 13.5}},
                         "R2": {"status": "not_applicable", "evidence": {"reason": "not answered"}},
                         "R9": {"status": "broken", "evidence": {"reason": HOSTILE_REASON}},
                         "R10": kept(),
                     })


def log_live_call(store: CallStore, call_id: str, start: float) -> None:
    """A call still in progress: no outcome and no compliance record yet."""
    store.call_started(call_id, channel_id=f"chan-{call_id}", caller_number="02088886666",
                       caller_name="李四", created_at=start)
    store.append(call_id, at=start, source="log", kind="ringing", detail={})
    store.call_updated(call_id, state="connected", agent="agent2", answered_at=start + 4.5)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    """A started store on an empty SQLite file."""
    s = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def seeded(store: CallStore) -> CallStore:
    """Three calls, ten minutes apart: completed, hostile abandoned, live."""
    log_completed_call(store, OLD, T0)
    log_abandoned_call(store, MID, T0 + 600)
    log_live_call(store, LIVE, T0 + 1200)
    assert await store.flush()
    return store


async def serve(app: web.Application) -> TestClient[Any, Any]:
    """The app on loopback, signed in as an admin (sign-in itself: tests/test_web_auth.py)."""
    return await serve_signed_in(app)


@pytest.fixture
async def client(seeded: CallStore) -> AsyncIterator[TestClient[Any, Any]]:
    """The app over the seeded store, without a live view."""
    c = await serve(create_app(seeded))
    yield c
    await c.close()


async def get_text(client: TestClient[Any, Any], path: str, status: int = 200) -> str:
    resp = await client.get(path)
    text = await resp.text()
    assert resp.status == status, text
    return text


class ScriptAndHandlerFinder(HTMLParser):
    """Collects what would run in a browser: script tags and on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []
        self.images: int = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "img":
            self.images += 1
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]


def runnable(html: str) -> ScriptAndHandlerFinder:
    finder = ScriptAndHandlerFinder()
    finder.feed(html)
    return finder


def badge_of(html: str, call_id: str, rule: str) -> str:
    """The badge HTML for ``rule`` in the row linking to ``call_id``."""
    row = re.search(rf'<tr>(?:(?!</tr>).)*href="/calls/{re.escape(call_id)}"(?:(?!</tr>).)*</tr>',
                    html, re.DOTALL)
    assert row, f"no row for {call_id}"
    found = re.search(rf'<span class="badge [^"]*" title="[^"]*">{rule} [^<]*</span>', row.group(0))
    assert found, f"no {rule} badge in row of {call_id}"
    return found.group(0)


class TestCallList:
    async def test_calls_are_listed_newest_first(self, client: TestClient[Any, Any]) -> None:
        """The list shows every call, the most recent first ring at the top."""
        html = await get_text(client, "/")
        positions = [html.index(f'href="/calls/{cid}"') for cid in (LIVE, MID, OLD)]
        assert positions == sorted(positions)

    async def test_times_are_shown_on_the_centers_clock(self, client: TestClient[Any, Any]) -> None:
        """A call that rang at 01:00 UTC is listed at 09:00 Asia/Shanghai."""
        html = await get_text(client, "/")
        assert "2026-05-09 09:00:00" in html
        assert "2026-05-09 09:10:00" in html

    async def test_badges_show_kept_broken_and_na_with_reasons(
        self, client: TestClient[Any, Any]
    ) -> None:
        """R1/R2/R9/R10 badges are green, red or grey, with the evidence reason as tooltip."""
        html = await get_text(client, "/")
        assert 'class="badge kept"' in badge_of(html, OLD, "R1")
        broken = badge_of(html, MID, "R1")
        assert 'class="badge broken"' in broken
        assert "not answered within three rings" in broken
        assert 'class="badge not_applicable"' in badge_of(html, MID, "R2")
        assert 'class="badge kept"' in badge_of(html, MID, "R10")

    async def test_live_call_is_marked_in_progress_and_unscored(
        self, client: TestClient[Any, Any]
    ) -> None:
        """A call without an end shows 进行中 and grey not-scored badges, not fake verdicts."""
        html = await get_text(client, "/")
        assert 'class="badge unscored"' in badge_of(html, LIVE, "R1")
        assert "进行中" in html

    async def test_outcome_and_first_hangup_are_labelled(
        self, client: TestClient[Any, Any]
    ) -> None:
        """Outcome and who hung up first are shown in Chinese with the English code."""
        html = await get_text(client, "/")
        assert "已完成" in html and "completed" in html
        assert "振铃中挂断" in html and "来电者" in html

    async def test_page_refreshes_itself(self, client: TestClient[Any, Any]) -> None:
        """The list page carries the 5-second refresh (script, and meta refresh without JS)."""
        html = await get_text(client, "/")
        assert '<script src="/static/refresh.js" defer></script>' in html
        assert '<meta http-equiv="refresh" content="5">' in html
        resp = await client.get("/static/refresh.js")
        assert resp.status == 200
        assert "5000" in await resp.text()

    async def test_stylesheet_is_served(self, client: TestClient[Any, Any]) -> None:
        """The page links a stylesheet that the app serves."""
        html = await get_text(client, "/")
        assert 'href="/static/style.css"' in html
        resp = await client.get("/static/style.css")
        assert resp.status == 200 and resp.content_type == "text/css"

    async def test_pages_of_twenty_with_newer_and_older_links(self, store: CallStore) -> None:
        """23 calls make a page of 20 with an older link, then a page of 3 with a newer link."""
        for i in range(23):
            log_live_call(store, f"call-{i:02d}", T0 + i)
        assert await store.flush()
        c = await serve(create_app(store))
        try:
            first = await get_text(c, "/")
            assert first.count('href="/calls/call-') == 2 * 20  # time and id link per row
            assert 'href="/calls/call-22"' in first and 'href="/calls/call-02"' not in first
            assert 'href="/?offset=20"' in first and "较新" not in first
            second = await get_text(c, "/?offset=20")
            assert second.count('href="/calls/call-') == 2 * 3
            assert 'href="/calls/call-00"' in second
            assert 'href="/?offset=0"' in second and "较早" not in second
        finally:
            await c.close()

    async def test_bad_offset_is_a_400_page(self, client: TestClient[Any, Any]) -> None:
        """A non-numeric or negative offset is answered with 400, not a crash."""
        assert "bad request" in await get_text(client, "/?offset=abc", 400)
        await get_text(client, "/?offset=-1", 400)

    async def test_empty_log_says_so(self, store: CallStore) -> None:
        """With no calls logged the page says so instead of showing an empty table."""
        c = await serve(create_app(store))
        try:
            assert "还没有通话记录" in await get_text(c, "/")
        finally:
            await c.close()


class FakeLive:
    """A controller's live state, as ``liyi.app.LiveState`` reports it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail

    def live_calls(self) -> list[dict[str, Any]]:
        if self.fail:
            raise RuntimeError("controller busy")
        return [{"call_id": LIVE, "caller_number": "<b>02088886666</b>", "state": "connected",
                 "agent": "agent2", "since": T0 + 1200}]

    def agents(self) -> list[dict[str, Any]]:
        return [
            {"name": "agent1", "endpoint": "PJSIP/agent1", "registered": True,
             "device_state": "NOT_INUSE", "engaged": False},
            {"name": "agent2", "endpoint": "PJSIP/agent2", "registered": True,
             "device_state": "INUSE", "engaged": True},
        ]


class TestLivePanel:
    async def test_live_calls_and_agents_are_shown(self, seeded: CallStore) -> None:
        """With a live view, the page lists live calls (with duration) and agents' states."""
        now = datetime.fromtimestamp(T0 + 1200 + 125, UTC)
        c = await serve(create_app(seeded, live=FakeLive(), now=lambda: now))
        try:
            html = await get_text(c, "/")
        finally:
            await c.close()
        now_panel = html[html.index("实时 · Now"):html.index("最近通话")]
        assert "PJSIP/agent1" in now_panel and "NOT_INUSE" in now_panel
        assert "通话中 engaged" in now_panel and "空闲 free" in now_panel
        assert "2 min 05 s" in now_panel
        assert f'href="/calls/{LIVE}"' in now_panel
        assert "&lt;b&gt;02088886666&lt;/b&gt;" in now_panel

    async def test_failing_live_view_costs_only_the_panel(self, seeded: CallStore) -> None:
        """If the controller's live state raises, the call list is still served."""
        c = await serve(create_app(seeded, live=FakeLive(fail=True)))
        try:
            html = await get_text(c, "/")
        finally:
            await c.close()
        assert "实时状态暂不可用" in html
        assert f'href="/calls/{OLD}"' in html

    async def test_no_live_view_no_panel(self, client: TestClient[Any, Any]) -> None:
        """Without a live view the page has no "now" panel."""
        assert "实时 · Now" not in await get_text(client, "/")


class TestCallPage:
    async def test_header_fields_are_shown(self, client: TestClient[Any, Any]) -> None:
        """The call page shows number, name, agent, local times and who hung up first."""
        html = await get_text(client, f"/calls/{OLD}")
        assert "13800138000" in html and "张三" in html and "agent1" in html
        assert "2026-05-09 09:00:00.000" in html  # first ring, ms, Shanghai time
        assert "2026-05-09 09:01:15.200" in html  # ended
        assert "+4.500 s" in html  # answered after the first ring

    async def test_timeline_shows_log_entries_in_order_with_relative_times(
        self, client: TestClient[Any, Any]
    ) -> None:
        """By default the timeline lists log entries in seq order, timed from the first ring."""
        html = await get_text(client, f"/calls/{OLD}")
        timeline = html[html.index("时间线 · Timeline"):]
        kinds = re.findall(r'<td class="kind">([^<]*)</td>', timeline)
        assert kinds == ["ringing", "answered", "greeting", "greeted", "agent-ringing",
                         "connected", "caller-hung-up", "ended"]
        for stamp in ("+0.000 s", "+4.500 s", "+9.250 s", "+1:15.125", "+1:15.200"):
            assert stamp in timeline
        assert "PlaybackFinished" not in timeline
        assert f'href="/calls/{OLD}?events=1"' in timeline

    async def test_raw_events_behind_the_toggle(self, client: TestClient[Any, Any]) -> None:
        """``?events=1`` interleaves the raw engine events by seq, marked as events."""
        html = await get_text(client, f"/calls/{OLD}?events=1")
        timeline = html[html.index("时间线 · Timeline"):]
        kinds = re.findall(r'<td class="kind">([^<]*)</td>', timeline)
        assert kinds[:6] == ["StasisStart", "ringing", "answered", "greeting",
                             "PlaybackFinished", "greeted"]
        assert kinds[-3:] == ["ChannelHangupRequest", "caller-hung-up", "ended"]
        assert timeline.count('<tr class="src-event">') == 3
        assert f'href="/calls/{OLD}"' in timeline  # the way back

    async def test_compliance_table_lists_rules_status_and_evidence(
        self, client: TestClient[Any, Any]
    ) -> None:
        """The compliance table shows each rule in rule order with its status and evidence."""
        html = await get_text(client, f"/calls/{MID}")
        table = html[html.index("合规 · Compliance"):html.index("时间线 · Timeline")]
        rules = re.findall(r"<strong>(R\d+)</strong>", table)
        assert rules == ["R1", "R2", "R9", "R10"]
        assert "违反 broken" in table and "不适用 n/a" in table and "遵守 kept" in table
        assert "not answered within three rings" in table
        assert "caller_left_after_seconds" in table and "13.5" in table

    async def test_evidence_times_are_local(self, client: TestClient[Any, Any]) -> None:
        """Epoch times in evidence (``first_ring_at``, ``logged_from``) show on the center's clock."""
        html = await get_text(client, f"/calls/{OLD}")
        table = html[html.index("合规 · Compliance"):html.index("时间线 · Timeline")]
        assert table.count("2026-05-09 09:00:00.000") == 2
        assert str(T0) not in table

    async def test_unique_prefix_opens_the_call(self, client: TestClient[Any, Any]) -> None:
        """A unique prefix of the id opens that call."""
        assert OLD in await get_text(client, "/calls/c0ffee01")

    async def test_ambiguous_prefix_lists_the_matches(self, client: TestClient[Any, Any]) -> None:
        """A prefix matching several calls answers 409 with links to each match."""
        html = await get_text(client, "/calls/c0ffee", 409)
        for cid in (OLD, MID, LIVE):
            assert f'href="/calls/{cid}"' in html

    async def test_unknown_id_is_a_404_page(self, client: TestClient[Any, Any]) -> None:
        """An unknown id gets a 404 page saying no such call, with the id escaped."""
        html = await get_text(client, "/calls/%3Cb%3Enope%3C%2Fb%3E", 404)
        assert "找不到该通话" in html and "call not found" in html
        assert "&lt;b&gt;nope&lt;/b&gt;" in html and "<b>nope" not in html

    async def test_unknown_path_is_a_404_page(self, client: TestClient[Any, Any]) -> None:
        """A path the app doesn't serve gets the app's 404 page."""
        assert "page not found" in await get_text(client, "/nothing/here", 404)

    async def test_only_a_live_call_refreshes(self, client: TestClient[Any, Any]) -> None:
        """The page of a call in progress auto-refreshes; an ended call's page doesn't."""
        assert "refresh.js" in await get_text(client, f"/calls/{LIVE}")
        assert "refresh.js" not in await get_text(client, f"/calls/{OLD}")
        assert "尚未评分" in await get_text(client, f"/calls/{LIVE}")


class TestEscaping:
    @pytest.mark.parametrize("path", ["/", f"/calls/{MID}", f"/calls/{MID}?events=1"])
    async def test_hostile_caller_id_cannot_run(self, client: TestClient[Any, Any],
                                               path: str) -> None:
        """Markup in caller name, number, details and evidence is shown as text, never run."""
        html = await get_text(client, path)
        found = runnable(html)
        assert all(s.get("src") == "/static/refresh.js" for s in found.scripts), found.scripts
        assert found.handlers == []
        assert found.images == 0
        assert HOSTILE_NAME not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&quot;&#x27;&gt;&lt;img src=x onerror=alert(2)&gt;" in html

    async def test_hostile_reason_stays_inside_its_tooltip(
        self, client: TestClient[Any, Any]
    ) -> None:
        """A quote in an evidence reason cannot close the title attribute it is shown in."""
        html = await get_text(client, "/")
        assert "x&quot; onmouseover=&quot;alert(3)" in badge_of(html, MID, "R9")
        assert 'onmouseover="' not in html

    async def test_chinese_and_quotes_survive(self, client: TestClient[Any, Any]) -> None:
        """Chinese text and quotes in a caller name are shown as written (escaped, not mangled)."""
        html = await get_text(client, f"/calls/{OLD}")
        assert "张三 &quot;老王&quot; &#x27;s" in html

    async def test_pages_forbid_inline_scripts(self, client: TestClient[Any, Any]) -> None:
        """Every page carries a CSP that allows only the app's own scripts, and nosniff."""
        resp = await client.get("/")
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.content_type == "text/html" and resp.charset == "utf-8"


class TestApi:
    async def test_list_shape_and_order(self, client: TestClient[Any, Any]) -> None:
        """``/api/calls`` returns summaries newest first with ISO UTC times and paging info."""
        resp = await client.get("/api/calls")
        assert resp.status == 200 and resp.content_type == "application/json"
        data = await resp.json()
        assert data["limit"] == 20 and data["offset"] == 0 and data["next_offset"] is None
        assert [c["id"] for c in data["calls"]] == [LIVE, MID, OLD]
        old = data["calls"][2]
        assert set(old) == {"id", "channel_id", "caller_number", "caller_name", "created_at",
                            "answered_at", "ended_at", "first_hangup", "agent", "outcome",
                            "state", "handled_by"}
        assert old["handled_by"] == "liyi"
        assert old["created_at"] == "2026-05-09T01:00:00+00:00"
        assert old["caller_name"] == CHINESE_NAME
        assert data["calls"][1]["caller_name"] == HOSTILE_NAME  # JSON carries the raw text

    async def test_list_paging(self, client: TestClient[Any, Any]) -> None:
        """``limit`` and ``offset`` page through the calls and ``next_offset`` says where next."""
        first = await (await client.get("/api/calls?limit=2")).json()
        assert [c["id"] for c in first["calls"]] == [LIVE, MID] and first["next_offset"] == 2
        rest = await (await client.get("/api/calls?limit=2&offset=2")).json()
        assert [c["id"] for c in rest["calls"]] == [OLD] and rest["next_offset"] is None

    @pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=201", "offset=-5"])
    async def test_bad_paging_is_400(self, client: TestClient[Any, Any], query: str) -> None:
        """Out-of-range or non-numeric paging parameters get a 400 JSON error."""
        resp = await client.get(f"/api/calls?{query}")
        assert resp.status == 400
        assert "error" in await resp.json()

    async def test_one_call_shape(self, client: TestClient[Any, Any]) -> None:
        """``/api/calls/{id}`` returns fields, ordered timeline and compliance by rule."""
        resp = await client.get(f"/api/calls/{MID}")
        assert resp.status == 200
        data = await resp.json()
        assert data["id"] == MID and data["outcome"] == "abandoned-ringing"
        assert [e["seq"] for e in data["timeline"]] == sorted(e["seq"] for e in data["timeline"])
        assert [(e["source"], e["kind"]) for e in data["timeline"]] == [
            ("event", "StasisStart"), ("log", "ringing"), ("log", "caller-hung-up")]
        assert data["timeline"][1]["detail"]["caller_name"] == HOSTILE_NAME
        assert data["timeline"][2]["at"] == "2026-05-09T01:10:13.500000+00:00"
        assert data["compliance"]["R1"] == {
            "status": "broken",
            "evidence": {"reason": "not answered within three rings",
                         "caller_left_after_seconds": 13.5}}

    async def test_unknown_call_is_404_json(self, client: TestClient[Any, Any]) -> None:
        """An unknown id gets a 404 JSON error naming the id."""
        resp = await client.get("/api/calls/nope")
        assert resp.status == 404
        assert await resp.json() == {"error": "no such call", "call_id": "nope"}

    async def test_ambiguous_call_is_409_json(self, client: TestClient[Any, Any]) -> None:
        """An ambiguous prefix gets a 409 JSON error listing the matches."""
        resp = await client.get("/api/calls/c0ffee")
        assert resp.status == 409
        assert set((await resp.json())["matches"]) == {OLD, MID, LIVE}

    async def test_healthz(self, client: TestClient[Any, Any]) -> None:
        """``/healthz`` answers ``{"ok": true}``."""
        resp = await client.get("/healthz")
        assert resp.status == 200 and await resp.json() == {"ok": True}


class BrokenStore:
    """A call log whose database is down; optionally the listing still works."""

    def __init__(self, *, list_works: bool = False) -> None:
        self.list_works = list_works

    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        if self.list_works:
            return [CallSummary(id=OLD, channel_id=None, caller_number="1", caller_name="a",
                                created_at=datetime.fromtimestamp(T0, UTC), answered_at=None,
                                ended_at=datetime.fromtimestamp(T0 + 5, UTC), first_hangup="caller",
                                agent=None, outcome="completed", state="ended")]
        raise sa_exc.OperationalError("SELECT", {}, Exception("database is locked"))

    async def get_call(self, call_id: str) -> CallRecord | None:
        raise sa_exc.OperationalError("SELECT", {}, Exception("unable to open database file"))


class TestStoreOutage:
    @pytest.mark.parametrize("path", ["/", f"/calls/{OLD}"])
    @pytest.mark.parametrize("list_works", [False, True])
    async def test_database_error_is_a_503_page(self, path: str, list_works: bool) -> None:
        """A failing call log gives a 503 "call log unavailable" page that retries, not a crash."""
        c = await serve(create_app(BrokenStore(list_works=list_works)))
        try:
            html = await get_text(c, path, 503)
            assert "call log unavailable" in html and "refresh.js" in html
            assert "OperationalError" not in html and "locked" not in html
            assert (await c.get("/healthz")).status == 200  # the server is still up
        finally:
            await c.close()

    @pytest.mark.parametrize("path", ["/api/calls", f"/api/calls/{OLD}"])
    async def test_database_error_is_a_503_json(self, path: str) -> None:
        """The JSON API answers a failing call log with 503 and an error object."""
        c = await serve(create_app(BrokenStore()))
        try:
            resp = await c.get(path)
            assert resp.status == 503
            assert await resp.json() == {"error": "call log unavailable"}
        finally:
            await c.close()

    async def test_store_not_started_is_503(self, tmp_path: Path) -> None:
        """A real store whose database was never opened gives 503, not a crash."""
        never_started = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        c = await serve(create_app(never_started))
        try:
            assert "call log unavailable" in await get_text(c, "/", 503)
        finally:
            await c.close()


class TestFormatting:
    def test_relative_times_have_milliseconds(self) -> None:
        """Offsets from the first ring show ms, with minutes and hours when long."""
        assert relative(0) == "+0.000 s"
        assert relative(4.5) == "+4.500 s"
        assert relative(59.9996) == "+1:00.000"
        assert relative(3725.25) == "+1:02:05.250"
        assert relative(-0.1) == "-0.100 s"

    def test_local_time_uses_the_given_zone(self) -> None:
        """UTC instants are shown in the center's time zone."""
        from zoneinfo import ZoneInfo

        instant = datetime(2026, 12, 31, 20, 30, tzinfo=UTC)
        assert local_time(instant, ZoneInfo("Asia/Shanghai")) == "2027-01-01 04:30:00"
        assert local_time(None, ZoneInfo("Asia/Shanghai")) == "—"

    def test_unknown_status_is_grey_not_green(self) -> None:
        """A status the page does not know is shown grey with its raw text, never as kept."""
        html = badge("R1", ComplianceMark("weird<status>", {}))
        assert 'class="badge unknown"' in html and "&lt;status&gt;" in html
