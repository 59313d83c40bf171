"""The agent panel on the real controller: a browser drives a simulated call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_handlers.simulator import AgentScript, CallerScript
from tests.e2e_world import running_world
from tests.test_panel_browser import CHROMIUM, CHROMIUM_ARGS

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover
    pytest.skip("playwright is not installed", allow_module_level=True)


class TestPanelOnTheController:
    async def test_agent_takes_a_call_holds_and_resumes_from_the_browser(self, tmp_path: Path) -> None:
        """Signed-in agent sees the live call, records the caller, holds with a limit the caller
        hears announced, and resumes — all through the real controller and simulator."""
        async with running_world(tmp_path, web=True, agents=("agent1",)) as world:
            service = world.service
            await service.accounts.set_password("agent1", "agent1-password")
            world.sim.set_agent_script("agent1", AgentScript(answer_after=0.3))
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(f"{service.web_url}panel/login")
                    await page.fill("#name", "agent1")
                    await page.fill("#password", "agent1-password")
                    await page.click("#login-submit")
                    badge = page.locator("#state-badge")
                    await expect(badge).to_have_attribute("data-state", "available")

                    call = await world.sim.place_call("13800138000",
                                                      script=CallerScript(max_seconds=60))
                    await expect(badge).to_have_attribute("data-state", "on-call", timeout=10000)
                    await expect(page.locator("#caller-number")).to_have_text("13800138000")

                    await page.fill("#caller-name", "张先生")
                    await page.fill("#purpose", "查询订单")
                    await page.click("#btn-caller-info")
                    await page.check("#limit-60")
                    await page.click("#btn-hold")
                    await expect(badge).to_have_attribute("data-state", "holding", timeout=5000)
                    await expect(page.locator("#hold-box")).to_be_visible()
                    for _ in range(100):
                        if any(h.detail.endswith("hold-announce-60") for h in call.heard):
                            break
                        await asyncio.sleep(0.05)
                    await page.click("#btn-resume")
                    await expect(badge).to_have_attribute("data-state", "on-call", timeout=5000)
                finally:
                    await browser.close()
            world.sim.caller_hangs_up(call)
            record = await world.call_ended_in_log(call.channel_id)
        heard = [h.detail.rsplit("/", 1)[-1] for h in call.heard if h.what == "prompt"]
        assert "hold-announce-60" in heard
        assert [h.what for h in call.heard].count("connected") == 2
        statuses = {rule: s for rule, (s, _e) in record.compliance.items()}
        assert (statuses["R3"], statuses["R4"]) == ("kept", "kept")
