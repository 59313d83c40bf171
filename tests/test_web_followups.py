"""The admin follow-ups page (R8): overdue first and highlighted, linked to their calls.

Served over a real socket (127.0.0.1, ephemeral port) from a real ``CallStore``
on a temporary SQLite file, with "now" fixed so which follow-up is overdue
does not depend on the day the tests run.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from db import CallStore
from tests.test_web import (
    HOSTILE_NAME,
    OLD,
    T0,
    BrokenStore,
    get_text,
    log_completed_call,
    runnable,
    serve,
)
from web import create_app

# 2026-10-11 17:00 UTC is already 01:00 on Monday 2026-10-12 in Shanghai: a promise due on
# the 11th is overdue at the center though it would not be by the UTC date.
NOW = datetime(2026, 10, 11, 17, 0, tzinfo=UTC)
OTHER = "c0ffee09-other"


def add(store: CallStore, followup_id: str, *, due: date, call_id: str = OLD,
        owner: str = "agent1", kind: str = "promise", text: str = "三个工作日后给您答复",
        queue: str = "") -> None:
    store.followup_added(followup_id, call_id=call_id, kind=kind, text=text, due=due,
                         owner=owner, number="13800138000", queue=queue, created_at=T0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    """Two calls with an overdue promise, one due later, a done one and an unowned callback."""
    s = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await s.start()
    log_completed_call(s, OLD, T0)
    log_completed_call(s, OTHER, T0 + 600)
    add(s, "fu-later-0001", due=date(2026, 10, 14))
    add(s, "fu-late-00002", due=date(2026, 10, 11), text=HOSTILE_NAME)
    add(s, "fu-done-00003", due=date(2026, 10, 1))
    add(s, "fu-queue-0004", due=date(2026, 10, 13), call_id=OTHER, owner="", kind="callback",
        queue="售后", text="")
    assert await s.flush()
    assert await s.complete_followup("fu-done-00003", by="agent1", at=T0 + 60) is not None
    yield s
    await s.close()


@pytest.fixture
async def client(store: CallStore) -> AsyncIterator[TestClient[Any, Any]]:
    c = await serve(create_app(store, now=lambda: NOW))
    yield c
    await c.close()


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="followup [^"]*">.*?</tr>', html, re.DOTALL)


class TestFollowUpsPage:
    async def test_overdue_first_and_highlighted_then_by_due(
        self, client: TestClient[Any, Any]
    ) -> None:
        """The promise overdue by the center's date leads, marked 逾期 OVERDUE; open ones follow
        by due day; the done one is hidden."""
        html = await get_text(client, "/followups")
        found = rows(html)
        assert [re.search(r'title="([^"]+)"', r).group(1) for r in found] == [  # type: ignore[union-attr]
            "fu-late-00002", "fu-queue-0004", "fu-later-0001"]
        assert 'class="followup overdue"' in found[0] and "逾期 OVERDUE" in found[0]
        assert '<span class="warn">2026-10-11</span>' in found[0]
        assert "逾期 OVERDUE" not in found[1] + found[2]
        assert "1 follow-up overdue" in html and "2026-10-12" in html

    async def test_each_row_links_to_its_call_and_names_its_owner(
        self, client: TestClient[Any, Any]
    ) -> None:
        """Rows link to the originating call; an unowned callback shows its queue."""
        found = rows(await get_text(client, "/followups"))
        assert f'href="/calls/{OLD}"' in found[0]
        assert f'href="/calls/{OTHER}"' in found[1]
        assert "callback queue" in found[1] and "售后" in found[1]
        assert "agent1" in found[2] and "13800138000" in found[2]

    async def test_done_ones_with_all(self, client: TestClient[Any, Any]) -> None:
        """``?all=1`` adds the done follow-up, last, with who closed it."""
        found = rows(await get_text(client, "/followups?all=1"))
        assert len(found) == 4
        assert "fu-done-00003" in found[-1] and "已完成 done" in found[-1] and "agent1" in found[-1]

    async def test_owner_filter(self, client: TestClient[Any, Any]) -> None:
        """``?owner=`` shows that agent's follow-ups and the unowned callbacks only."""
        found = rows(await get_text(client, "/followups?owner=someone-else"))
        assert len(found) == 1 and "fu-queue-0004" in found[0]

    async def test_promise_text_is_escaped(self, client: TestClient[Any, Any]) -> None:
        """A promise text with markup is shown as text, never run."""
        html = await get_text(client, "/followups")
        assert HOSTILE_NAME not in html
        assert runnable(html).scripts == [{"src": "/static/refresh.js", "defer": None}]

    async def test_navigation_links_to_the_page(self, client: TestClient[Any, Any]) -> None:
        """Every admin page's header links to the call log and the follow-ups page."""
        html = await get_text(client, "/")
        assert 'href="/followups"' in html and 'href="/"' in html

    async def test_empty_list_says_so(self, tmp_path: Path) -> None:
        """With no follow-ups the page says so rather than showing an empty table."""
        s = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        await s.start()
        c = await serve(create_app(s, now=lambda: NOW))
        try:
            assert "no open follow-ups" in await get_text(c, "/followups")
        finally:
            await c.close()
            await s.close()

    async def test_store_without_followups_is_503(self) -> None:
        """A call log that cannot list follow-ups gives the 503 page, not a crash."""
        c = await serve(create_app(BrokenStore()))
        try:
            assert "call log unavailable" in await get_text(c, "/followups", 503)
            resp = await c.get("/api/followups")
            assert resp.status == 503
        finally:
            await c.close()


class TestCallPageAndApi:
    async def test_call_page_lists_its_followups(self, client: TestClient[Any, Any]) -> None:
        """A call's page shows the follow-ups made on it, and not other calls' ones."""
        html = await get_text(client, f"/calls/{OLD}")
        assert "跟进 · Follow-ups" in html
        found = rows(html)
        assert len(found) == 3 and not any("fu-queue-0004" in r for r in found)
        assert any("逾期 OVERDUE" in r for r in found)
        other = rows(await get_text(client, f"/calls/{OTHER}"))
        assert len(other) == 1 and "callback queue" in other[0]

    async def test_api_lists_with_status(self, client: TestClient[Any, Any]) -> None:
        """``/api/followups`` gives today and each follow-up with its status and ISO due date."""
        resp = await client.get("/api/followups?all=1")
        data = await resp.json()
        assert data["today"] == "2026-10-12"
        assert [(f["id"], f["status"]) for f in data["followups"]] == [
            ("fu-late-00002", "overdue"), ("fu-queue-0004", "open"),
            ("fu-later-0001", "open"), ("fu-done-00003", "done")]
        assert data["followups"][0]["due"] == "2026-10-11"

    async def test_api_call_includes_followups(self, client: TestClient[Any, Any]) -> None:
        """``/api/calls/{id}`` carries the call's follow-ups."""
        resp = await client.get(f"/api/calls/{OTHER}")
        data = await resp.json()
        assert [f["id"] for f in data["followups"]] == ["fu-queue-0004"]
        assert data["followups"][0]["due"] == "2026-10-13"
