"""The agent panel in a real browser: Debian's Chromium driven by Playwright.

A scripted fake desk plays one call with shortened timers: it rings agent1,
is answered, goes on hold (a hold lasts 12 s here, so the 10-second alert
comes after 2 s), is resumed, and is warm-transferred to agent2 with the
caller's consent, agent2's acceptance and the handover. It also keeps
follow-ups (R8): promises made on a call get a working-day due date, and a
callback from the list rings the agent, then dials the customer. The panel is served
by the real admin app on 127.0.0.1 with real argon2 accounts on SQLite.

Set ``LIYI_PANEL_SCREENSHOTS=/some/dir`` to keep a screenshot of each state.

Never ``playwright install``: the browser is the distribution's
``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from argon2 import PasswordHasher

from callflow.calendar import WorkCalendar
from db.accounts import AgentAccounts
from db.records import CallRecord, CallSummary
from web import create_app

CHROMIUM = Path("/usr/bin/chromium")
try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("playwright is not installed (pip install playwright; never run "
                "'playwright install')", allow_module_level=True)
if not CHROMIUM.exists():  # pragma: no cover - depends on the environment
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)",
                allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PASSWORDS = {"agent1": "agent1-secret", "agent2": "agent2-secret"}
HOLD_SECONDS = 12.0  # how long a hold really lasts in the fake, whatever its limit
RING_SECONDS = 0.4  # until a phone is picked up
SHOTS = os.environ.get("LIYI_PANEL_SCREENSHOTS")
CENTER_TZ = ZoneInfo("Asia/Shanghai")
OPENING_LINE = "您好，我是礼仪客服中心的agent1，关于您反映的问题给您回电。"


def center_today() -> dt.date:
    return dt.datetime.now(CENTER_TZ).date()
HOSTILE = "<img src=x onerror=\"window.__pwned=1\">"


class ScriptedDesk:
    """A fake controller desk that plays calls with short timers and the handbook's lines."""

    def __init__(self) -> None:
        self.agents = {"agent1": "available", "agent2": "available"}
        self.agent_call: dict[str, str | None] = {"agent1": None, "agent2": None}
        self.calls: dict[str, dict[str, Any]] = {}
        self.notes: list[tuple[str, str]] = []
        self.subscribers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.acts: list[tuple[str, str, dict[str, str]]] = []
        self.followups: list[dict[str, Any]] = []
        self.heard: list[str] = []  # prompts the callers heard (R8 closing)
        self._n = 0

    # -- the Desk protocol

    def agent_names(self) -> list[str]:
        return list(self.agents)

    def subscribe(self, agent: str,
                  on_update: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self.subscribers.setdefault(agent, []).append(on_update)
        return lambda: self.subscribers[agent].remove(on_update)

    def view(self, agent: str) -> dict[str, Any]:
        call_id = self.agent_call[agent]
        call = self.calls.get(call_id) if call_id else None
        out: dict[str, Any] | None = None
        if call is not None:
            out = {k: call[k] for k in ("call_id", "caller_number", "caller_name", "purpose",
                                        "wanted", "since")}
            out["hold"] = copy.deepcopy(call["hold"]) if call["hold"] else None
            tr = call["transfer"]
            out["transfer"] = None if tr is None else {
                "role": "first" if agent == tr["from"] else "target", "target": tr["to"],
                "stage": tr["stage"], "consent": tr["consent"]}
            if out["transfer"] and out["transfer"]["role"] == "target":
                out["hold"] = None  # the hold is the first agent's business
            out["closing"] = copy.deepcopy(call.get("closing"))
            out["callback"] = copy.deepcopy(call.get("callback"))
        return {
            "agent": agent, "state": self.agents[agent], "call": out,
            "script": self._script(agent, call),
            "hold_limits": [30, 60, 90, 120, 150, 180], "default_hold_limit": 60,
            "departments": [{"name": "售后服务部", "number": "8001"}],
            "agents": [{"name": n, "state": s} for n, s in self.agents.items()],
            "promise_working_days": 3, "max_working_days": 30,
            "followups": [copy.deepcopy(f) for f in self.followups
                          if f["owner"] in (agent, "") and f["status"] != "done"],
        }

    async def act(self, agent: str, action: str, params: dict[str, str]) -> tuple[bool, str]:
        self.acts.append((agent, action, dict(params)))
        if action in ("followup-done", "place-callback"):
            found = [f for f in self.followups if f["id"] == params["followup_id"]]
            if not found or found[0]["owner"] not in (agent, ""):
                return False, "没有这个跟进事项 · no such follow-up"
            result = getattr(self, "_" + action.replace("-", "_"))(agent, found[0])
            self._push_all()
            return result  # type: ignore[no-any-return]
        call_id = self.agent_call[agent]
        call = self.calls.get(call_id) if call_id else None
        if call is None:
            return False, "当前没有通话 · no call"
        result = getattr(self, "_" + action.replace("-", "_"))(agent, call, params)
        self._push_all()
        return result  # type: ignore[no-any-return]

    # -- the script for the moment

    def _script(self, agent: str, call: dict[str, Any] | None) -> str:
        state = self.agents[agent]
        if call is None:
            return "等待来电 · waiting for a call"
        name = call["caller_name"] or "XX先生/小姐"
        if call.get("callback"):
            return "回电：请先报公司名称和您的姓名，不要先问对方姓名。"
        if call.get("closing"):
            return "请问您还有其他问题吗？"
        tr = call["transfer"]
        if tr is not None and agent == tr["to"]:
            if tr["stage"] == "done":
                return f"{name}，很抱歉让您久等了，就您所提到的{call['purpose'] or '问题'}……"
            return f"来电者：{name}；来电目的：{call['purpose'] or '—'}"
        if tr is not None and tr["stage"] == "consent":
            return (f"{name}，就您所提的这个问题我们会转至对此方面比较熟悉的同事那里，"
                    "由他给您做专业解释，您看可以吗？")
        if state == "ringing":
            return "请拿起话机接听 · pick up the phone"
        if state == "holding":
            return "客户等待中，请在时限内回到通话 · come back before the limit"
        if state == "wrap-up":
            return "请填写备注 · write your notes"
        if not call["caller_name"]:
            return "请问您贵姓？"
        if not call["purpose"]:
            return "请问有什么可以帮您？"
        return "请问您还有其他问题吗？"

    # -- scripted events

    def ring(self, agent: str, number: str, *, caller_name: str = "") -> str:
        """A call reaches ``agent``; their phone is picked up after RING_SECONDS."""
        self._n += 1
        call_id = f"call-{self._n}"
        self.calls[call_id] = {"call_id": call_id, "caller_number": number,
                               "caller_name": caller_name, "purpose": "", "wanted": "",
                               "since": time.time(), "hold": None, "transfer": None,
                               "closing": None, "callback": None}
        self.agent_call[agent] = call_id
        self.agents[agent] = "ringing"
        self._push_all()
        asyncio.get_running_loop().call_later(RING_SECONDS, self._answered, agent)
        return call_id

    def _answered(self, agent: str) -> None:
        if self.agents[agent] == "ringing":
            self.agents[agent] = "on-call"
            self._push_all()

    def _push_all(self) -> None:
        for agent, callbacks in self.subscribers.items():
            for callback in list(callbacks):
                callback(self.view(agent))

    def _notice(self, agent: str, text: str) -> None:
        for callback in list(self.subscribers.get(agent, [])):
            callback({"kind": "notice", "text": text, "level": "info"})

    # -- actions

    def _caller_info(self, agent: str, call: dict[str, Any],
                     params: dict[str, str]) -> tuple[bool, str]:
        call.update({k: v for k, v in params.items()})
        return True, "来电信息已保存 · caller details saved"

    def _hold(self, agent: str, call: dict[str, Any], params: dict[str, str]) -> tuple[bool, str]:
        if self.agents[agent] != "on-call":
            return False, "只有通话中才能等待 · not on a call"
        now = time.time()
        limit = int(params["limit_seconds"])
        call["hold"] = {"reason": params["reason"], "limit_seconds": limit, "started_at": now,
                        "ends_at": now + HOLD_SECONDS, "alert": False}
        self.agents[agent] = "holding"
        hold = call["hold"]

        def alert() -> None:
            if call["hold"] is hold:
                hold["alert"] = True
                self._push_all()

        asyncio.get_running_loop().call_later(HOLD_SECONDS - 10, alert)
        return True, f"客户已进入等待，时限 {limit} 秒 · caller on hold"

    def _resume(self, agent: str, call: dict[str, Any], params: dict[str, str]) -> tuple[bool, str]:
        if call.get("closing"):
            call["closing"] = None
            return True, "客户还有问题，继续通话 · the caller has more: go on"
        if self.agents[agent] != "holding":
            return False, "没有等待中的客户 · nobody on hold"
        call["hold"] = None
        self.agents[agent] = "on-call"
        return True, "已恢复通话 · back with the caller"

    def _transfer(self, agent: str, call: dict[str, Any],
                  params: dict[str, str]) -> tuple[bool, str]:
        call["transfer"] = {"from": agent, "to": params["target"], "stage": "consent",
                            "consent": False}
        self.agents[agent] = "transfer"
        return True, "请先征得客户同意 · ask the caller's consent"

    def _consent(self, agent: str, call: dict[str, Any],
                 params: dict[str, str]) -> tuple[bool, str]:
        tr = call["transfer"]
        tr["consent"], tr["stage"] = True, "ringing"
        now = time.time()
        call["hold"] = {"reason": "转接", "limit_seconds": 60, "started_at": now,
                        "ends_at": now + 60, "alert": False}
        target = tr["to"]
        self.agents[target] = "ringing"
        self.agent_call[target] = call["call_id"]

        def answered() -> None:
            if tr["stage"] == "ringing":
                tr["stage"] = "consult"
                self.agents[target] = "transfer"
                self._push_all()

        asyncio.get_running_loop().call_later(RING_SECONDS, answered)
        return True, "客户已同意，正在呼叫目标 · consent recorded, ringing the target"

    def _accept(self, agent: str, call: dict[str, Any], params: dict[str, str]) -> tuple[bool, str]:
        call["transfer"]["stage"] = "accepted"
        self._notice(call["transfer"]["from"], f"{agent} 已接受转接 · accepted")
        return True, "已接受 · accepted"

    def _decline(self, agent: str, call: dict[str, Any],
                 params: dict[str, str]) -> tuple[bool, str]:
        return self._cancel_transfer(call["transfer"]["from"], call, params)

    def _complete_transfer(self, agent: str, call: dict[str, Any],
                           params: dict[str, str]) -> tuple[bool, str]:
        tr = call["transfer"]
        tr["stage"] = "done"
        call["hold"] = None
        self.agents[agent] = "wrap-up"
        self.agents[tr["to"]] = "on-call"
        return True, "已转接 · transferred"

    def _cancel_transfer(self, agent: str, call: dict[str, Any],
                         params: dict[str, str]) -> tuple[bool, str]:
        tr = call["transfer"]
        tr["stage"] = "failed"
        call["hold"] = None
        self.agents[tr["to"]] = "available"
        self.agent_call[tr["to"]] = None
        self.agents[agent] = "on-call"
        return True, "转接已取消 · transfer called off"

    def _leave(self, agent: str, call: dict[str, Any], params: dict[str, str]) -> tuple[bool, str]:
        if self.agents[agent] == "wrap-up":
            self.agents[agent] = "available"
            self.agent_call[agent] = None
            return True, "整理完毕 · wrap-up done"
        self.agents[agent] = "wrap-up"
        return True, "已离开通话，客户听到结束语 · left; the caller hears the closing words"

    def _note(self, agent: str, call: dict[str, Any], params: dict[str, str]) -> tuple[bool, str]:
        self.notes.append((call["call_id"], params["text"]))
        return True, "备注已保存 · note saved"

    # -- R8: closing, promises, follow-ups, callbacks

    def _end_call(self, agent: str, call: dict[str, Any],
                  params: dict[str, str]) -> tuple[bool, str]:
        if params["ask_more"] == "1":
            call["closing"] = {"stage": "asked"}
            self.heard.append("closing-more")
            return True, "客户听到「请问您还有其他问题吗？」· the caller was asked"
        call["closing"] = None
        self.heard.append("closing-thanks")
        self.agents[agent] = "available"  # released; the caller's line stays open (R9)
        self.agent_call[agent] = None
        return True, "客户听到感谢语，您已离开通话 · the caller was thanked; you are free"

    def add_followup(self, *, owner: str, text: str, due: dt.date, number: str,
                     call_id: str = "", kind: str = "promise") -> dict[str, Any]:
        item = {"id": str(uuid.uuid4()), "kind": kind, "text": text, "number": number,
                "due": due.isoformat(), "owner": owner, "queue": "", "call_id": call_id,
                "status": "overdue" if due < center_today() else "open"}
        self.followups.append(item)
        return item

    def _promise(self, agent: str, call: dict[str, Any],
                 params: dict[str, str]) -> tuple[bool, str]:
        due = WorkCalendar().add_working_days(center_today(), int(params["working_days"]))
        self.add_followup(owner=agent, text=params["text"], due=due,
                          number=call["caller_number"], call_id=call["call_id"])
        return True, f"已记录承诺，答复期限 {due.isoformat()} · promise recorded, due {due.isoformat()}"

    def _followup_done(self, agent: str, item: dict[str, Any]) -> tuple[bool, str]:
        item["status"] = "done"
        return True, "已标记完成 · follow-up done"

    def _place_callback(self, agent: str, item: dict[str, Any]) -> tuple[bool, str]:
        """Agent first (their phone rings), then the customer is dialled, then connected."""
        if self.agent_call[agent] is not None:
            return False, "请先结束当前通话 · finish your current call first"
        self._n += 1
        call_id = f"call-{self._n}"
        callback = {"stage": "agent-ringing", "number": item["number"],
                    "opening_line": OPENING_LINE, "followup_id": item["id"]}
        self.calls[call_id] = {"call_id": call_id, "caller_number": item["number"],
                               "caller_name": "", "purpose": item["text"], "wanted": "",
                               "since": time.time(), "hold": None, "transfer": None,
                               "closing": None, "callback": callback}
        self.agent_call[agent] = call_id
        self.agents[agent] = "callback"

        def stage(name: str) -> None:
            callback["stage"] = name
            self._push_all()

        loop = asyncio.get_running_loop()
        loop.call_later(RING_SECONDS, stage, "dialing")
        loop.call_later(3 * RING_SECONDS, stage, "connected")
        return True, "正在呼叫您的话机 · ringing your phone"


class EmptyLog:
    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        return []

    async def get_call(self, call_id: str) -> CallRecord | None:
        return None


class BrowserWorld:
    def __init__(self, base: str, desk: ScriptedDesk, browser: Browser) -> None:
        self.base, self.desk, self.browser = base, desk, browser
        self.errors: list[str] = []

    async def page(self) -> Page:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 1000},
                                                 locale="zh-CN")
        page = await context.new_page()
        page.set_default_timeout(5000)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}")
                if msg.type == "error" else None)
        return page

    async def sign_in(self, page: Page, name: str, password: str) -> None:
        await page.goto(self.base + "/panel/login")
        await page.fill("#name", name)
        await page.fill("#password", password)
        await page.click("#login-submit")


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
async def bw(tmp_path: Path) -> AsyncIterator[BrowserWorld]:
    accounts = AgentAccounts(f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}",
                             hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    await accounts.start()
    for name, password in PASSWORDS.items():
        await accounts.set_password(name, password)
    desk = ScriptedDesk()
    app = create_app(EmptyLog(), desk=desk, accounts=accounts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield BrowserWorld(f"http://127.0.0.1:{port}", desk, browser)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
        await accounts.close()


class TestPanelInBrowser:
    async def test_a_call_from_ring_to_warm_transfer(self, bw: BrowserWorld) -> None:
        """Sign in, take a call, fill name and purpose, hold with a countdown and alert, resume,
        transfer with consent, and the target accepts and gets the caller with the cue."""
        desk = bw.desk
        p1 = await bw.page()
        await bw.sign_in(p1, "agent1", PASSWORDS["agent1"])
        await expect(p1).to_have_url(bw.base + "/panel")
        badge = p1.locator("#state-badge")
        await expect(badge).to_have_attribute("data-state", "available")
        await expect(p1.locator("#conn")).to_have_class("conn live")
        await expect(p1.locator("#btn-hold")).to_be_disabled()
        await shot(p1, "01-available")

        # The target agent signs in too, in another browser.
        p2 = await bw.page()
        await bw.sign_in(p2, "agent2", PASSWORDS["agent2"])
        await expect(p2.locator("#state-badge")).to_have_attribute("data-state", "available")

        # Ringing, then answered: the caller's number, the script asks the name.
        desk.ring("agent1", "13800138000")
        await expect(badge).to_have_attribute("data-state", "ringing")
        await expect(p1.locator("#caller-number")).to_have_text("13800138000")
        await shot(p1, "02-ringing")
        await expect(badge).to_have_attribute("data-state", "on-call")
        await expect(p1.locator("#script")).to_have_text("请问您贵姓？")
        await expect(p1.locator("#btn-hold")).to_be_enabled()
        await expect(p1.locator("#btn-resume")).to_be_disabled()
        await expect(p1.locator("#btn-complete-transfer")).to_be_disabled()
        await shot(p1, "03-on-call")

        # R3: caller details.
        await p1.fill("#caller-name", "张先生")
        await p1.fill("#purpose", "查询订单")
        await p1.fill("#wanted", "售后服务部")
        await p1.click("#btn-caller-info")
        await expect(p1.locator("#messages")).to_contain_text("来电信息已保存")
        await expect(p1.locator("#caller-name-shown")).to_have_text("张先生")
        await expect(p1.locator("#script")).to_have_text("请问您还有其他问题吗？")
        assert desk.calls["call-1"]["purpose"] == "查询订单"

        # R4: hold with a limit; the countdown runs and turns into an alert near the limit.
        await p1.check("#limit-60")
        await expect(p1.locator("#hold-ask")).to_contain_text("张先生，就您所提的这个问题"
                                                              "我需要查询相关信息，请您稍等一分钟好吗？")
        await p1.click("#btn-hold")
        await expect(badge).to_have_attribute("data-state", "holding")
        await expect(p1.locator("#hold-box")).to_be_visible()
        await expect(p1.locator("#hold-limit-shown")).to_contain_text("1 分钟")
        await expect(p1.locator("#hold-reason-shown")).to_have_text("查询相关信息")
        await expect(p1.locator("#hold-countdown")).to_have_text("0:12")
        await expect(p1.locator("#hold-alert")).to_be_hidden()
        await expect(p1.locator("#btn-resume")).to_be_enabled()
        await expect(p1.locator("#btn-hold")).to_be_disabled()
        await shot(p1, "04-holding")
        await expect(p1.locator("#hold-alert")).to_be_visible(timeout=4000)
        await expect(p1.locator("#hold-alert")).to_contain_text("秒到等待时限")
        await expect(p1.locator("#hold-box")).to_have_class("card hold-card alerting")
        countdown = await p1.locator("#hold-countdown").inner_text()
        assert countdown in ("0:10", "0:09", "0:08"), countdown
        await shot(p1, "05-hold-alert")
        assert desk.acts[-1] == ("agent1", "hold", {"reason": "查询相关信息",
                                                    "limit_seconds": "60"})

        await p1.click("#btn-resume")
        await expect(badge).to_have_attribute("data-state", "on-call")
        await expect(p1.locator("#hold-box")).to_be_hidden()

        # R6: warm transfer — consent, target answers and hears who and why, accepts.
        await p1.select_option("#transfer-target", "agent2")
        await p1.click("#btn-transfer")
        await expect(p1.locator("#transfer-box")).to_be_visible()
        await expect(p1.locator("#transfer-stage")).to_contain_text("等待客户同意")
        await expect(p1.locator("#script")).to_contain_text("您看可以吗？")
        await expect(p1.locator("#btn-consent")).to_be_enabled()
        await expect(p1.locator("#btn-complete-transfer")).to_be_disabled()
        await expect(p1.locator("#btn-cancel-transfer")).to_be_enabled()
        await shot(p1, "06-transfer-consent")
        await p1.click("#btn-consent")
        await expect(p1.locator("#transfer-consent")).to_contain_text("已同意")
        await expect(p2.locator("#consult-box")).to_be_visible()
        await expect(p2.locator("#consult-name")).to_have_text("张先生")
        await expect(p2.locator("#consult-purpose")).to_have_text("查询订单")
        await expect(p2.locator("#consult-stage")).to_contain_text("接受或拒绝")
        await expect(p2.locator("#btn-accept")).to_be_enabled()
        await expect(p1.locator("#transfer-stage")).to_contain_text("正在介绍来电")
        await shot(p1, "07-transfer-consult-first")
        await shot(p2, "08-transfer-consult-target")
        await p2.click("#btn-accept")
        await expect(p1.locator("#btn-complete-transfer")).to_be_enabled()
        await expect(p1.locator("#messages")).to_contain_text("agent2 已接受转接")
        await p1.click("#btn-complete-transfer")
        await expect(badge).to_have_attribute("data-state", "wrap-up")
        await expect(p2.locator("#state-badge")).to_have_attribute("data-state", "on-call")
        await expect(p2.locator("#script")).to_contain_text("张先生，很抱歉让您久等了")
        await expect(p2.locator("#script-card")).to_have_class("card script-card cue")
        await expect(p2.locator("#caller-number")).to_have_text("13800138000")
        await shot(p1, "09-wrap-up-first")
        await shot(p2, "10-handed-over-target")

        # A note, and the end of wrap-up.
        await p1.fill("#note-text", "客户查询订单，已转售后")
        await p1.click("#btn-note")
        await expect(p1.locator("#messages")).to_contain_text("备注已保存")
        await expect(p1.locator("#note-text")).to_have_value("")
        await p1.click("#btn-leave")
        await expect(badge).to_have_attribute("data-state", "available")
        assert desk.notes == [("call-1", "客户查询订单，已转售后")]
        assert bw.errors == []

    async def test_a_promise_on_the_call_then_the_callback_from_the_list(
        self, bw: BrowserWorld
    ) -> None:
        """The agent promises a reply during a call and sees it in the list with its working-day
        due date (an overdue one stays first and red), ends the call, then clicks 回电 and sees the
        opening line and the callback's stages; 已完成 takes a follow-up off the list."""
        desk = bw.desk
        old = desk.add_followup(owner="agent1", text="核实退款进度", number="13900139000",
                                due=center_today() - dt.timedelta(days=3))
        page = await bw.page()
        await bw.sign_in(page, "agent1", PASSWORDS["agent1"])
        await expect(page.locator("#conn")).to_have_class("conn live")
        items = page.locator("#followups > li")
        await expect(items).to_have_count(1)
        await expect(items.first).to_have_attribute("data-status", "overdue")
        await expect(items.first.locator(".fu-status")).to_contain_text("逾期")
        color = await items.first.locator(".fu-status").evaluate(
            "el => getComputedStyle(el).backgroundColor")
        assert color == "rgb(207, 34, 46)", color  # --bad: red
        await expect(page.locator(f"#fu-callback-{old['id']}")).to_be_enabled()
        await expect(page.locator("#btn-promise")).to_be_disabled()

        desk.ring("agent1", "13800138000", caller_name="张先生")
        await expect(page.locator("#state-badge")).to_have_attribute("data-state", "on-call")
        await expect(page.locator(f"#fu-callback-{old['id']}")).to_be_disabled()  # on a call
        await expect(page.locator("#promise-days")).to_have_value("3")
        await expect(page.locator("#promise-text")).to_have_value("三个工作日后给您答复")
        await page.fill("#promise-days", "5")  # the words follow the days until edited
        await expect(page.locator("#promise-text")).to_have_value("五个工作日后给您答复")
        await expect(page.locator("#promise-ask")).to_contain_text("五个工作日后我们会给您答复")
        await page.fill("#promise-days", "3")
        await expect(page.locator("#promise-text")).to_have_value("三个工作日后给您答复")
        await page.click("#btn-promise")
        due = WorkCalendar().add_working_days(center_today(), 3).isoformat()
        await expect(page.locator("#promise-result")).to_contain_text(f"答复期限 {due}")
        await expect(items).to_have_count(2)
        await expect(items.first).to_have_attribute("data-status", "overdue")  # still first
        promise = items.nth(1)
        await expect(promise).to_have_attribute("data-status", "open")
        await expect(promise.locator(".fu-due")).to_have_text(f"到期 {due}")
        await expect(promise.locator(".fu-text")).to_have_text("三个工作日后给您答复")
        assert desk.acts[-1] == ("agent1", "promise", {"text": "三个工作日后给您答复",
                                                       "working_days": "3"})
        new_id = await promise.get_attribute("data-id")
        await shot(page, "11-promise")

        # End without the question; the agent is free, then places the callback.
        await page.uncheck("#end-ask-more")
        await page.click("#btn-end-call")
        await expect(page.locator("#state-badge")).to_have_attribute("data-state", "available")
        assert desk.heard == ["closing-thanks"]
        await page.click(f"#fu-callback-{new_id}")
        await expect(page.locator("#state-badge")).to_have_attribute("data-state", "callback")
        await expect(page.locator("#callback-box")).to_be_visible()
        await expect(page.locator("#callback-box")).to_contain_text("请先报公司名称和您的姓名")
        await expect(page.locator("#callback-opening")).to_have_text(OPENING_LINE)
        await expect(page.locator("#callback-number")).to_have_text("13800138000")
        await expect(page.locator("#callback-stage")).to_contain_text("正在拨打客户")
        await expect(page.locator("#callback-stage")).to_contain_text("客户已接通")
        await expect(page.locator("#btn-end-call")).to_be_enabled()
        await shot(page, "12-callback")
        assert desk.acts[-1] == ("agent1", "place-callback", {"followup_id": new_id})

        await page.click(f"#fu-done-{old['id']}")
        await expect(items).to_have_count(1)
        await expect(items.first).to_have_attribute("data-id", str(new_id))
        assert bw.errors == []

    async def test_ending_with_the_question_then_nothing_more(self, bw: BrowserWorld) -> None:
        """结束通话 with the question ticked asks the caller, the agent stays on; 还有问题 goes back
        to the call; asked again, 没有了 — 结束 thanks the caller and frees the agent."""
        desk = bw.desk
        page = await bw.page()
        await bw.sign_in(page, "agent1", PASSWORDS["agent1"])
        await expect(page.locator("#conn")).to_have_class("conn live")
        desk.ring("agent1", "13800138000", caller_name="李女士")
        badge = page.locator("#state-badge")
        await expect(badge).to_have_attribute("data-state", "on-call")
        await expect(page.locator("#end-ask-more")).to_be_checked()
        await expect(page.locator("#closing-box")).to_be_hidden()
        await page.click("#btn-end-call")
        await expect(page.locator("#closing-box")).to_be_visible()
        await expect(page.locator("#closing-box")).to_contain_text("请问您还有其他问题吗？")
        await expect(page.locator("#script")).to_have_text("请问您还有其他问题吗？")
        await expect(badge).to_have_attribute("data-state", "on-call")  # still on the line
        await expect(page.locator("#btn-end-call")).to_be_disabled()
        await expect(page.locator("#btn-hold")).to_be_disabled()
        await shot(page, "13-closing-asked")
        await page.click("#btn-closing-resume")
        await expect(page.locator("#closing-box")).to_be_hidden()
        await expect(page.locator("#btn-end-call")).to_be_enabled()
        await page.click("#btn-end-call")
        await expect(page.locator("#closing-box")).to_be_visible()
        await page.click("#btn-end-call-confirm")
        await expect(badge).to_have_attribute("data-state", "available")
        await expect(page.locator("#closing-box")).to_be_hidden()
        assert desk.heard == ["closing-more", "closing-more", "closing-thanks"]
        assert [(a, p) for _, a, p in desk.acts] == [
            ("end-call", {"ask_more": "1"}), ("resume", {}), ("end-call", {"ask_more": "1"}),
            ("end-call", {"ask_more": "0"})]
        assert bw.errors == []

    async def test_wrong_password_refused_in_the_browser(self, bw: BrowserWorld) -> None:
        """A wrong password keeps the agent on the sign-in page with a clear message."""
        page = await bw.page()
        await bw.sign_in(page, "agent1", "not-the-password")
        await expect(page.locator("#login-error")).to_contain_text("坐席名或密码错误")
        await expect(page).to_have_url(bw.base + "/panel/login")
        await shot(page, "00-wrong-password")
        await page.goto(bw.base + "/panel")
        await expect(page).to_have_url(bw.base + "/panel/login")
        assert [e for e in bw.errors if "401" not in e] == []

    async def test_hostile_caller_text_is_shown_as_text(self, bw: BrowserWorld) -> None:
        """A caller name and number with markup appear literally and run nothing; sign-out works."""
        page = await bw.page()
        await bw.sign_in(page, "agent1", PASSWORDS["agent1"])
        await expect(page.locator("#conn")).to_have_class("conn live")
        bw.desk.ring("agent1", HOSTILE, caller_name=HOSTILE)
        await expect(page.locator("#caller-number")).to_have_text(HOSTILE)
        await expect(page.locator("#caller-name-shown")).to_have_text(HOSTILE)
        assert await page.locator("img").count() == 0
        assert await page.evaluate("window.__pwned === undefined")
        await page.click("#btn-logout")
        await expect(page).to_have_url(bw.base + "/panel/login")
        assert bw.errors == []
