"""Sign-in per role in a real browser: Debian's Chromium driven by Playwright.

The real admin app on 127.0.0.1 with real argon2 accounts on SQLite: an
admin signs in, adds an account on /users and finds it in /audit; a
supervisor reads the pages but is refused /users; an agent gets the panel;
a wrong password and an agent at the admin's /login are refused.

Set ``LIYI_PANEL_SCREENSHOTS=/some/dir`` to keep a screenshot of each page
(``admin-*.png``), as the panel's browser tests do. Never ``playwright
install``: the browser is the distribution's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from argon2 import PasswordHasher

from db.accounts import Accounts
from tests.test_panel_browser import CHROMIUM, CHROMIUM_ARGS, EmptyLog, ScriptedDesk
from web import create_app

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - test_panel_browser skips the module first
    pytest.skip("playwright is not installed", allow_module_level=True)

SHOTS = os.environ.get("LIYI_PANEL_SCREENSHOTS")
ACCOUNTS = {"boss": ("admin", "boss-secret-1"), "sue": ("supervisor", "sue-secret-1"),
            "agent1": ("agent", "agent1-secret")}


class AdminWorld:
    def __init__(self, base: str, browser: Browser, accounts: Accounts) -> None:
        self.base, self.browser, self.accounts = base, browser, accounts
        self.errors: list[str] = []

    async def page(self) -> Page:
        """A page in a fresh browser context (its own cookies: one person)."""
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900},
                                                 locale="zh-CN")
        page = await context.new_page()
        page.set_default_timeout(5000)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        return page

    async def sign_in(self, page: Page, name: str, password: str | None = None,
                      start: str = "/") -> None:
        """Open ``start`` (which sends the browser to /login) and fill the form."""
        await page.goto(self.base + start)
        await expect(page.locator("#signin")).to_be_visible()
        await page.fill("#name", name)
        await page.fill("#password", ACCOUNTS[name][1] if password is None else password)
        await page.click("#signin")


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"admin-{name}.png"), full_page=True)


@pytest.fixture
async def aw(tmp_path: Path) -> AsyncIterator[AdminWorld]:
    accounts = Accounts(f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}",
                        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    await accounts.start()
    for name, (role, password) in ACCOUNTS.items():
        await accounts.add(name, password, role)
    app = create_app(EmptyLog(), desk=ScriptedDesk(), accounts=accounts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield AdminWorld(f"http://127.0.0.1:{port}", browser, accounts)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
        await accounts.close()


class TestSignInPerRole:
    async def test_admin_supervisor_agent_and_refusals(self, aw: AdminWorld) -> None:
        """Each role lands where it may go; a wrong password and a wrong door are refused."""
        # Refused: a wrong password stays on /login with the reason, and no page opens.
        stranger = await aw.page()
        await aw.sign_in(stranger, "boss", "not-the-password", start="/report")
        await expect(stranger.locator("#message")).to_contain_text("Wrong name or password")
        await expect(stranger).to_have_url(aw.base + "/login")
        await shot(stranger, "01-refused-wrong-password")
        await stranger.goto(aw.base + "/report")
        await expect(stranger.locator("#signin")).to_be_visible()  # sent back to sign in

        # An agent's account is refused at the admin's door and pointed to the panel.
        agent_at_admin = await aw.page()
        await aw.sign_in(agent_at_admin, "agent1")
        await expect(agent_at_admin.locator("#message")).to_contain_text("/panel/login")
        await shot(agent_at_admin, "02-refused-agent-at-admin")

        # Admin: lands on the page asked for, adds an account, finds it in the audit trail.
        admin = await aw.page()
        await aw.sign_in(admin, "boss", start="/report")
        await expect(admin).to_have_url(aw.base + "/report")
        await admin.goto(aw.base + "/")
        await expect(admin.locator("nav.sub")).to_contain_text("Sign out")
        await shot(admin, "03-admin-call-log")
        await admin.goto(aw.base + "/users")
        form = admin.locator("#add-user")
        await form.locator("input[name=name]").fill("newbie")
        await form.locator("select[name=role]").select_option("supervisor")
        await form.locator("input[name=password]").fill("newbie-secret")
        await form.locator("button").click()
        await expect(admin.locator("#done")).to_contain_text("added newbie (supervisor)")
        await expect(admin.locator("tr[data-user=newbie] td.role")).to_have_text("supervisor")
        await shot(admin, "04-admin-users")
        assert await aw.accounts.authenticate("newbie", "newbie-secret") == "supervisor"
        await admin.goto(aw.base + "/audit")
        await expect(admin.locator("table.audit")).to_contain_text("newbie (supervisor)")
        await expect(admin.locator("table.audit")).to_contain_text("user-add")
        await shot(admin, "05-admin-audit")

        # Supervisor: reads the report and the audit trail; /users is refused.
        supervisor = await aw.page()
        await aw.sign_in(supervisor, "sue")
        await expect(supervisor).to_have_url(aw.base + "/")
        await supervisor.goto(aw.base + "/audit")
        await expect(supervisor.locator("table.audit")).to_contain_text("sign-in")
        response = await supervisor.goto(aw.base + "/users")
        assert response is not None and response.status == 403
        await expect(supervisor.locator("#message")).to_contain_text("supervisor")
        await shot(supervisor, "06-supervisor-refused-users")

        # Agent: the panel's own sign-in, on the same accounts.
        agent = await aw.page()
        await agent.goto(aw.base + "/panel/login")
        await agent.fill("#name", "agent1")
        await agent.fill("#password", ACCOUNTS["agent1"][1])
        await agent.click("#login-submit")
        await expect(agent).to_have_url(aw.base + "/panel")
        await expect(agent.locator("#agent-name")).to_have_text("agent1")
        await shot(agent, "07-agent-panel")

        # Sign-out: the admin's session ends, the pages ask for sign-in again.
        await admin.goto(aw.base + "/logout")
        await admin.click("#signout")
        await expect(admin).to_have_url(aw.base + "/login")
        await admin.goto(aw.base + "/users")
        await expect(admin.locator("#signin")).to_be_visible()
        assert aw.errors == []
