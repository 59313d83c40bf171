"""Follow-ups (R8) in a real browser on the real controller, simulator and SQLite call log.

Unlike ``test_panel_browser.py`` (a scripted fake desk), here the panel is
served by ``liyi.app.Service`` with its ``AgentDesk``: the caller and the
agent's phone are the simulator's, the promise goes through the call's
engine into the SQLite call log, the callback is placed by the controller
(agent first, then the customer) and the overdue check is the service's own.
The browser is Debian's ``/usr/bin/chromium``, launched as the other browser
tests launch it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import liyi.app
from ari_handlers.simulator import AgentScript, CallerScript
from callflow.callback import opening_line
from tests.e2e_world import World, running_world
from tests.test_panel_browser import CHROMIUM, CHROMIUM_ARGS

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("playwright is not installed", allow_module_level=True)

PASSWORD = "agent1-password"
NUMBER = "13800138000"
PROMISE = "三个工作日后给您答复"


def prompts(call: Any) -> list[str]:
    return [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]


def kinds(call: Any) -> list[str]:
    return [h.what for h in call.heard]


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def center_today(world: World) -> dt.date:
    """The center's local date, the day due dates are counted from."""
    return world.service.settings.callflow.local_time(time.time()).date()


class Panel:
    """One signed-in agent's panel page, and the browser errors seen on it."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.set_default_timeout(5000)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}")
                if msg.type == "error" else None)


@asynccontextmanager
async def panel_for(world: World, agent: str = "agent1") -> AsyncIterator[Panel]:
    """Chromium signed in as ``agent`` on the service's panel (the account set up here)."""
    service = world.service
    await service.accounts.set_password(agent, PASSWORD)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1000},
                                                locale="zh-CN")
            panel = Panel(await context.new_page())
            page = panel.page
            await page.goto(f"{service.web_url}panel/login")
            await page.fill("#name", agent)
            await page.fill("#password", PASSWORD)
            await page.click("#login-submit")
            await expect(page.locator("#state-badge")).to_have_attribute("data-state", "available")
            await expect(page.locator("#conn")).to_have_class("conn live")
            yield panel
        finally:
            await browser.close()


async def one_short_call(world: World) -> Any:
    """A caller talks to agent1 briefly and hangs up; returns the call's record in the log."""
    call = await world.sim.place_call(NUMBER, script=CallerScript(hang_up_after_connected=0.2,
                                                                  max_seconds=20))
    return await world.call_ended_in_log(call.channel_id)


class TestFollowUpsOnTheController:
    async def test_promise_closing_and_callback_from_the_panel(self, tmp_path: Path) -> None:
        """A promise made in the panel gets its working-day due date, the call closes with the
        question then thanks, and 回电 rings the agent before the customer, shows the opening
        line, counts the attempt, and 已完成 takes the follow-up off the list."""
        async with running_world(tmp_path, web=True, agents=("agent1",)) as world:
            world.sim.set_agent_script("agent1", AgentScript(answer_after=0.3))
            async with panel_for(world) as panel:
                page = panel.page
                badge = page.locator("#state-badge")
                items = page.locator("#followups > li")
                await expect(page.locator("#followups-empty")).to_be_visible()

                call = await world.sim.place_call(NUMBER, script=CallerScript(
                    hang_up_after_prompt=("closing-thanks", 0.3), max_seconds=30))
                await expect(badge).to_have_attribute("data-state", "on-call", timeout=8000)
                await expect(page.locator("#caller-number")).to_have_text(NUMBER)
                await page.fill("#caller-name", "张先生")
                await page.fill("#purpose", "查询退款")
                await page.click("#btn-caller-info")
                await expect(page.locator("#caller-name-shown")).to_have_text("张先生")

                # R8: the promise, with the due date counted on the center's calendar.
                await expect(page.locator("#promise-days")).to_have_value("3")
                await expect(page.locator("#promise-text")).to_have_value(PROMISE)
                await page.click("#btn-promise")
                cfg = world.service.settings.callflow
                due = cfg.calendar.add_working_days(center_today(world), 3).isoformat()
                await expect(page.locator("#promise-result")).to_contain_text(f"答复期限 {due}")
                await expect(items).to_have_count(1)
                item = items.first
                await expect(item).to_have_attribute("data-status", "open")
                await expect(item.locator(".fu-due")).to_have_text(f"到期 {due}")
                await expect(item.locator(".fu-text")).to_have_text(PROMISE)
                await expect(item.locator(".fu-meta")).to_contain_text(NUMBER)
                followup_id = await item.get_attribute("data-id")
                assert followup_id
                await expect(page.locator(f"#fu-callback-{followup_id}")).to_be_disabled()

                # R8: "还有其他问题吗" first; the caller has nothing more; thanks; they hang up.
                await expect(page.locator("#end-ask-more")).to_be_checked()
                await page.click("#btn-end-call")
                await expect(page.locator("#closing-box")).to_be_visible()
                await expect(badge).to_have_attribute("data-state", "on-call")
                await until(lambda: "closing-more" in prompts(call))
                await page.click("#btn-end-call-confirm")
                await expect(badge).to_have_attribute("data-state", "available")
                await expect(page.locator("#closing-box")).to_be_hidden()
                record = await world.call_ended_in_log(call.channel_id)
                assert prompts(call)[-2:] == ["closing-more", "closing-thanks"]
                assert record.first_hangup == "caller"

                stored = await world.store.get_followup(followup_id)
                assert stored is not None
                assert (stored.kind, stored.owner, stored.number, stored.call_id) == (
                    "promise", "agent1", NUMBER, record.id)
                assert stored.due.isoformat() == due

                await expect(items).to_have_count(1)  # still to do once the call is over
                await expect(item).to_have_attribute("data-id", followup_id)

                # The callback: the agent's phone first, then the customer's.
                world.sim.customer(NUMBER, answer_after=1.5, hang_up_after=1.5)
                callback_button = page.locator(f"#fu-callback-{followup_id}")
                await expect(callback_button).to_be_enabled()
                await callback_button.click()
                await expect(badge).to_have_attribute("data-state", "callback")
                await expect(page.locator("#callback-box")).to_be_visible()
                called_on = cfg.local_time(stored.created_at).date()
                line = opening_line(cfg.company, "agent1", called_on)
                assert "礼仪客服中心" in line and "agent1" in line
                await expect(page.locator("#callback-opening")).to_have_text(line)
                await expect(page.locator("#callback-number")).to_have_text(NUMBER)
                await expect(page.locator("#callback-stage")).to_contain_text("正在拨打客户")
                await expect(page.locator("#callback-stage")).to_contain_text("客户已接通")
                await until(lambda: bool(world.sim.calls_to(NUMBER)))
                customer = world.sim.calls_to(NUMBER)[0]
                await until(lambda: customer.ended.is_set())
                await expect(badge).to_have_attribute("data-state", "available", timeout=8000)
                await expect(page.locator("#callback-box")).to_be_hidden()

                await world.store.flush()
                again = await world.store.get_followup(followup_id)
                assert again is not None and again.attempts == 1 and again.state == "open"
                await expect(items).to_have_count(1)  # a callback alone does not close it

                await page.click(f"#fu-done-{followup_id}")
                await expect(items).to_have_count(0)
                await expect(page.locator("#followups-empty")).to_be_visible()
                done = await world.store.get_followup(followup_id)
                assert done is not None and (done.state, done.done_by) == ("done", "agent1")
                assert panel.errors == []

        legs = world.sim.legs_of("agent1")
        assert len(legs) == 2, "the agent's phone was not rung for the callback"
        assert legs[1].answered_at is not None
        assert legs[1].answered_at < customer.started_at, "the customer was rung before the agent"
        assert "connected" in kinds(customer)
        assert customer.hung_up_by is not None

    async def test_an_overdue_follow_up_is_flagged_first_on_the_panel(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A promise due yesterday is flagged by the service's check: first in the panel's list,
        marked 逾期, with a "followup-overdue" entry and R8 broken on its call."""
        monkeypatch.setattr(liyi.app, "FOLLOWUP_CHECK_SECONDS", 0.3)
        async with running_world(tmp_path, web=True, agents=("agent1",)) as world:
            world.sim.set_agent_script("agent1", AgentScript(answer_after=0.2))
            record = await one_short_call(world)
            async with panel_for(world) as panel:
                page = panel.page
                items = page.locator("#followups > li")
                await expect(page.locator("#followups-empty")).to_be_visible()
                today = center_today(world)
                later_id, overdue_id = str(uuid.uuid4()), str(uuid.uuid4())
                # The later one is made first, so only the overdue rule can put the other first.
                world.store.followup_added(
                    later_id, call_id=record.id, kind="promise", text="五个工作日后给您答复",
                    due=today + dt.timedelta(days=7), owner="agent1", number=NUMBER, queue="",
                    created_at=time.time() - 3600)
                world.store.followup_added(
                    overdue_id, call_id=record.id, kind="promise", text="核实退款进度",
                    due=today - dt.timedelta(days=1), owner="agent1", number=NUMBER, queue="",
                    created_at=time.time() - 60)
                await world.store.flush()

                await expect(items).to_have_count(2, timeout=8000)
                first = items.first
                await expect(first).to_have_attribute("data-id", overdue_id)
                await expect(first).to_have_attribute("data-status", "overdue")
                await expect(first.locator(".fu-status")).to_contain_text("逾期")
                await expect(first.locator(".fu-text")).to_have_text("核实退款进度")
                await expect(items.nth(1)).to_have_attribute("data-status", "open")
                await expect(page.locator("#followups-count")).to_contain_text("1 逾期")

                flagged = None
                for _ in range(100):
                    flagged = await world.store.get_followup(overdue_id)
                    if flagged is not None and flagged.overdue_flagged_at is not None:
                        break
                    await asyncio.sleep(0.05)
                assert flagged is not None and flagged.overdue_flagged_at is not None
                later = await world.store.get_followup(later_id)
                assert later is not None and later.overdue_flagged_at is None
                assert panel.errors == []
            call = await world.store.get_call(record.id)
        entries = [t for t in call.timeline if t.kind == "followup-overdue"]
        assert len(entries) == 1, [t.kind for t in call.timeline]
        assert entries[0].detail["followup_id"] == overdue_id
        assert call.compliance["R8"][0] == "broken"
