"""The agent panel over HTTP: sign-in, lockout, CSRF, actions, the WebSocket, expiry, escaping.

The panel is served by the real admin app (``web.create_app`` with a desk and
accounts) on 127.0.0.1; the desk is a fake that records the actions it gets
and pushes views when told, and the clock is a fake so expiry and lockouts
take no time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from db.records import CallRecord, CallSummary
from web import create_app
from web.panel import (
    SESSION_COOKIE,
    LoginThrottle,
    PanelOptions,
    Sessions,
)

PASSWORDS = {"agent1": "agent1-secret", "agent2": "agent2-secret", "ghost": "ghost-secret",
             "sue": "sue-secret-1"}
# Accounts not listed are agents; a supervisor's password is right but the panel is not theirs.
ROLES = {"sue": "supervisor", "agent2": "admin"}  # agent2: an admin who also takes calls
AnyClient = TestClient[Any, Any] | aiohttp.ClientSession
HOSTILE = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def base_view(agent: str) -> dict[str, Any]:
    return {
        "agent": agent, "state": "available", "call": None, "script": "",
        "hold_limits": [30, 60, 90, 120, 150, 180], "default_hold_limit": 60,
        "departments": [{"name": "售后", "number": "8001"}],
        "agents": [{"name": "agent1", "state": "available"},
                   {"name": "agent2", "state": "available"}],
        "promise_working_days": 3, "max_working_days": 30, "followups": [],
    }


class FakeDesk:
    """Records actions; pushes views to subscribers when the test says so."""

    def __init__(self, agents: tuple[str, ...] = ("agent1", "agent2")) -> None:
        self.views = {a: base_view(a) for a in agents}
        self.subscribers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.acts: list[tuple[str, str, dict[str, str]]] = []
        self.reply: tuple[bool, str] = (True, "好的 done")
        self.fail = False

    def agent_names(self) -> list[str]:
        return list(self.views)

    def view(self, agent: str) -> dict[str, Any]:
        return copy.deepcopy(self.views[agent])

    def subscribe(self, agent: str,
                  on_update: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self.subscribers.setdefault(agent, []).append(on_update)
        return lambda: self.subscribers[agent].remove(on_update)

    async def act(self, agent: str, action: str, params: dict[str, str]) -> tuple[bool, str]:
        if self.fail:
            raise RuntimeError("controller exploded")
        self.acts.append((agent, action, dict(params)))
        return self.reply

    def push(self, agent: str, message: dict[str, Any] | None = None) -> None:
        for callback in list(self.subscribers.get(agent, [])):
            callback(message if message is not None else self.view(agent))


class FakeAccounts:
    """Plain-text passwords in a dict: enough to drive the web layer."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def authenticate(self, name: str, password: str) -> str | None:
        self.checked.append(name)
        return ROLES.get(name, "agent") if PASSWORDS.get(name) == password else None


class EmptyLog:
    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        return []

    async def get_call(self, call_id: str) -> CallRecord | None:
        return None


class World:
    def __init__(self, client: TestClient[Any, Any], desk: FakeDesk, accounts: FakeAccounts,
                 clock: FakeClock, options: PanelOptions) -> None:
        self.client, self.desk, self.accounts, self.clock = client, desk, accounts, clock
        self.options = options

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def login_token(self, client: AnyClient | None = None) -> str:
        resp = await (client or self.client).get("/panel/login")
        assert resp.status == 200
        match = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
        assert match
        return match.group(1)

    async def sign_in(self, name: str = "agent1", password: str | None = None,
                      client: AnyClient | None = None) -> aiohttp.ClientResponse:
        c = client or self.client
        token = await self.login_token(c)
        return await c.post("/panel/login", allow_redirects=False, data={
            "name": name, "password": PASSWORDS.get(name, "x") if password is None else password,
            "csrf": token})

    async def page_csrf(self, client: AnyClient | None = None) -> str:
        resp = await (client or self.client).get("/panel", allow_redirects=False)
        assert resp.status == 200
        match = re.search(r'data-csrf="([^"]+)"', await resp.text())
        assert match
        return match.group(1)

    async def act(self, action: str, params: dict[str, Any] | None = None, *,
                  csrf: str | None, client: AnyClient | None = None,
                  **extra: Any) -> aiohttp.ClientResponse:
        body: dict[str, Any] = {"action": action, "params": params or {}, **extra}
        headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
        return await (client or self.client).post("/panel/action", json=body, headers=headers)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    desk, accounts, clock = FakeDesk(), FakeAccounts(), FakeClock()
    options = PanelOptions(clock=clock, idle_timeout=600.0, max_age=3600.0,
                           session_check_interval=0.05)
    app = create_app(EmptyLog(), desk=desk, accounts=accounts, panel_options=options)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield World(client, desk, accounts, clock, options)
    finally:
        await client.close()


def second_client(world: World) -> aiohttp.ClientSession:
    """Another browser on the same server (its own cookie jar)."""
    return aiohttp.ClientSession(base_url=world.origin, cookie_jar=aiohttp.CookieJar(unsafe=True))


class TestSignIn:
    async def test_right_password_opens_a_session(self, world: World) -> None:
        """A right password gives a 303 to /panel and an HttpOnly SameSite=Strict session cookie."""
        resp = await world.sign_in("agent1")
        assert resp.status == 303 and resp.headers["Location"] == "/panel"
        cookie = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(SESSION_COOKIE))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/panel" in cookie
        assert "Secure" not in cookie  # plain http here
        page = await world.client.get("/panel", allow_redirects=False)
        assert page.status == 200
        text = await page.text()
        assert 'id="agent-name">agent1<' in text and "/static/panel.js" in text

    async def test_wrong_password_refused(self, world: World) -> None:
        """A wrong password is a 401 with a clear message and no session."""
        resp = await world.sign_in("agent1", "agent2-secret")
        assert resp.status == 401
        assert "坐席名或密码错误" in await resp.text()
        assert SESSION_COOKIE not in {c.key for c in world.client.session.cookie_jar}
        page = await world.client.get("/panel", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/panel/login"

    async def test_unknown_agent_refused(self, world: World) -> None:
        """A name with no account, or an account that is not an agent of the desk, is refused."""
        assert (await world.sign_in("nobody", "whatever-pass")).status == 401
        assert (await world.sign_in("ghost")).status == 401  # has a password, not on the desk
        assert "nobody" in world.accounts.checked  # the password was still checked (timing)

    async def test_supervisor_account_cannot_use_the_panel(self, world: World) -> None:
        """A supervisor's right password at /panel/login is a 403 pointing to /login, no session."""
        resp = await world.sign_in("sue")
        assert resp.status == 403
        assert "/login" in await resp.text()
        page = await world.client.get("/panel", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/panel/login"

    async def test_admin_on_the_desk_may_use_the_panel(self, world: World) -> None:
        """An admin account that is an agent of the desk signs in to the panel like an agent."""
        resp = await world.sign_in("agent2")
        assert resp.status == 303 and resp.headers["Location"] == "/panel"
        assert (await world.client.get("/panel", allow_redirects=False)).status == 200

    async def test_lockout_after_five_failures(self, world: World) -> None:
        """Five wrong passwords lock the agent out for 30 s, even with the right one; then not."""
        for i in range(4):
            assert (await world.sign_in("agent1", f"wrong-{i}")).status == 401
        fifth = await world.sign_in("agent1", "wrong-5")
        assert fifth.status == 401 and "30 秒后再试" in await fifth.text()
        locked = await world.sign_in("agent1")
        assert locked.status == 429
        locked_text = await locked.text()
        assert "登录失败次数过多" in locked_text and "try again in 30 s" in locked_text
        world.clock.t += 29
        assert (await world.sign_in("agent1")).status == 429
        world.clock.t += 2
        assert (await world.sign_in("agent1")).status == 303

    async def test_signed_in_agent_skips_the_form(self, world: World) -> None:
        """GET /panel/login with a live session goes straight to the panel."""
        await world.sign_in("agent1")
        resp = await world.client.get("/panel/login", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/panel"

    async def test_new_sign_in_gets_a_new_session_id(self, world: World) -> None:
        """Signing in again replaces the session id (no fixation) and ends the old session."""
        await world.sign_in("agent1")
        first = world.client.session.cookie_jar.filter_cookies(world.client.make_url("/panel"))
        old = first[SESSION_COOKIE].value
        world.client.session.cookie_jar.clear()
        token = await world.login_token()
        world.client.session.cookie_jar.update_cookies(
            {SESSION_COOKIE: old}, response_url=world.client.make_url("/panel/"))
        resp = await world.client.post("/panel/login", allow_redirects=False, data={
            "name": "agent1", "password": PASSWORDS["agent1"], "csrf": token})
        assert resp.status == 303
        new = resp.cookies[SESSION_COOKIE].value
        assert new != old
        panel = world.client.app[__import__("web.panel").panel.PANEL_KEY]
        assert panel.sessions.get(old) is None and panel.sessions.get(new) is not None


class TestLoginThrottleUnit:
    def test_pair_and_address_limits(self) -> None:
        """Failures lock the (name, address) pair at 5 and the whole address at its own limit."""
        clock = FakeClock()
        throttle = LoginThrottle(PanelOptions(clock=clock, address_max_failures=8))
        for _ in range(5):
            throttle.failed("agent1", "10.0.0.1")
        assert throttle.locked_for("agent1", "10.0.0.1") == 30.0
        assert throttle.locked_for("agent1", "10.0.0.2") == 0.0  # a colleague elsewhere is fine
        assert throttle.locked_for("agent2", "10.0.0.1") == 0.0
        for _ in range(3):
            throttle.failed("agent2", "10.0.0.1")
        assert throttle.locked_for("agent3", "10.0.0.1") == 30.0  # the address guessed 8 times
        clock.t += 31
        assert throttle.locked_for("agent1", "10.0.0.1") == 0.0

    def test_success_clears_the_pair(self) -> None:
        """A good sign-in forgets the pair's earlier failures."""
        throttle = LoginThrottle(PanelOptions(clock=FakeClock()))
        for _ in range(4):
            throttle.failed("agent1", "a")
        throttle.succeeded("agent1", "a")
        assert throttle.failed("agent1", "a") == 0.0


class TestCsrf:
    async def test_login_without_or_with_wrong_token(self, world: World) -> None:
        """Sign-in without a token, with a wrong one, or with another browser's is a 403."""
        await world.login_token()
        data = {"name": "agent1", "password": PASSWORDS["agent1"]}
        missing = await world.client.post("/panel/login", data=data, allow_redirects=False)
        assert missing.status == 403 and "CSRF" in await missing.text()
        wrong = await world.client.post("/panel/login", data={**data, "csrf": "0" * 64},
                                        allow_redirects=False)
        assert wrong.status == 403
        other = second_client(world)
        try:
            foreign_token = await world.login_token(other)  # bound to the other cookie
        finally:
            await other.close()
        stolen = await world.client.post("/panel/login", data={**data, "csrf": foreign_token},
                                         allow_redirects=False)
        assert stolen.status == 403
        assert SESSION_COOKIE not in {c.key for c in world.client.session.cookie_jar}

    async def test_login_without_pre_session_cookie(self, world: World) -> None:
        """A token whose pre-session cookie is gone (say, a cross-site post) is refused."""
        token = await world.login_token()
        world.client.session.cookie_jar.clear()
        resp = await world.client.post("/panel/login", allow_redirects=False, data={
            "name": "agent1", "password": PASSWORDS["agent1"], "csrf": token})
        assert resp.status == 403

    async def test_action_without_or_with_wrong_token(self, world: World) -> None:
        """An action without the session's token, or with a wrong one, is a 403 and not acted on."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        missing = await world.act("resume", csrf=None)
        assert missing.status == 403
        assert "CSRF" in (await missing.json())["message"]
        wrong = await world.act("resume", csrf=csrf[:-2] + "xx")
        assert wrong.status == 403
        assert world.desk.acts == []
        ok = await world.act("resume", csrf=csrf)
        assert ok.status == 200 and await ok.json() == {"ok": True, "message": "好的 done"}

    async def test_token_in_body_or_form(self, world: World) -> None:
        """The token is also taken from the JSON body or the form; a form post redirects back."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        body = await world.client.post("/panel/action",
                                       json={"action": "consent", "params": {}, "csrf": csrf})
        assert body.status == 200
        form = await world.client.post("/panel/action", allow_redirects=False, data={
            "action": "hold", "reason": "查询", "limit_choice": "custom", "limit_custom": "90",
            "csrf": csrf})
        assert form.status == 303 and form.headers["Location"] == "/panel"
        assert world.desk.acts == [("agent1", "consent", {}),
                                   ("agent1", "hold", {"reason": "查询", "limit_seconds": "90"})]
        page = await world.client.get("/panel")
        assert "好的 done" in await page.text()  # the form's result is shown once

    async def test_form_action_without_token(self, world: World) -> None:
        """A form post without the token is a 403 page, not a redirect."""
        await world.sign_in("agent1")
        resp = await world.client.post("/panel/action", allow_redirects=False,
                                       data={"action": "leave"})
        assert resp.status == 403 and "CSRF" in await resp.text()
        assert world.desk.acts == []

    async def test_logout_needs_the_token(self, world: World) -> None:
        """Sign-out without or with a wrong token is a 403, the session lives; with it, it ends."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        assert (await world.client.post("/panel/logout", allow_redirects=False)).status == 403
        wrong = await world.client.post("/panel/logout", data={"csrf": "nope"},
                                        allow_redirects=False)
        assert wrong.status == 403
        assert (await world.client.get("/panel", allow_redirects=False)).status == 200
        out = await world.client.post("/panel/logout", data={"csrf": csrf}, allow_redirects=False)
        assert out.status == 303 and out.headers["Location"] == "/panel/login"
        assert (await world.client.get("/panel", allow_redirects=False)).status == 303
        assert (await world.act("resume", csrf=csrf)).status == 401


class TestActions:
    async def test_action_reaches_the_desk_for_the_signed_in_agent(self, world: World) -> None:
        """desk.act gets the session's agent and only the action's own params, nothing else."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        resp = await world.act("hold", {"reason": " 查询相关信息 ", "limit_seconds": 60,
                                        "agent": "agent2", "junk": "x"},
                               csrf=csrf, agent="agent2")
        assert resp.status == 200
        assert world.desk.acts == [("agent1", "hold",
                                    {"reason": "查询相关信息", "limit_seconds": "60"})]

    async def test_each_agent_acts_as_themself(self, world: World) -> None:
        """Two agents signed in from two browsers each act only as themselves."""
        other = second_client(world)
        try:
            await world.sign_in("agent1")
            await world.sign_in("agent2", client=other)
            csrf1, csrf2 = await world.page_csrf(), await world.page_csrf(other)
            assert (await world.act("accept", csrf=csrf2, client=other)).status == 200
            # agent1's session with agent2's token: refused, tokens are per session.
            assert (await world.act("decline", csrf=csrf2)).status == 403
            assert (await world.act("note", {"text": "客户要求回电"}, csrf=csrf1)).status == 200
        finally:
            await other.close()
        assert world.desk.acts == [("agent2", "accept", {}),
                                   ("agent1", "note", {"text": "客户要求回电"})]

    @pytest.mark.parametrize(("action", "params", "fragment"), [
        ("explode", {}, "unknown action"),
        ("hold", {"reason": "查询", "limit_seconds": "45"}, "multiple of 30"),
        ("hold", {"reason": "查询", "limit_seconds": "210"}, "at most 180"),
        ("hold", {"reason": "查询", "limit_seconds": "sixty"}, "multiple of 30"),
        ("hold", {"reason": "", "limit_seconds": "60"}, "reason is required"),
        ("hold", {"reason": "查询"}, "limit_seconds is required"),
        ("transfer", {"target": "agent1"}, "yourself"),
        ("transfer", {"target": "dept:财务"}, "no department"),
        ("transfer", {"target": "agent9"}, "no agent"),
        ("note", {"text": "   "}, "text is required"),
        ("note", {"text": "x" * 5000}, "too long"),
        ("caller-info", {"caller_name": ["a"]}, "must be text"),
    ])
    async def test_bad_params_refused_before_the_desk(
        self, world: World, action: str, params: dict[str, Any], fragment: str
    ) -> None:
        """Unknown actions and invalid params are a 400 with a reason, and never reach the desk."""
        await world.sign_in("agent1")
        resp = await world.act(action, params, csrf=await world.page_csrf())
        assert resp.status == 400
        assert fragment in (await resp.json())["message"]
        assert world.desk.acts == []

    async def test_good_transfer_targets(self, world: World) -> None:
        """A department (dept:<name>) or another agent is a valid transfer target."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        assert (await world.act("transfer", {"target": "dept:售后"}, csrf=csrf)).status == 200
        assert (await world.act("transfer", {"target": "agent2"}, csrf=csrf)).status == 200
        assert [a[2] for a in world.desk.acts] == [{"target": "dept:售后"}, {"target": "agent2"}]

    async def test_desk_refusal_and_failure(self, world: World) -> None:
        """A desk refusal is a 409 with its message; a desk exception is a 500 with a calm one."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        world.desk.reply = (False, "当前没有通话 · no call to hold")
        refused = await world.act("resume", csrf=csrf)
        assert refused.status == 409
        assert await refused.json() == {"ok": False, "message": "当前没有通话 · no call to hold"}
        world.desk.fail = True
        failed = await world.act("resume", csrf=csrf)
        assert failed.status == 500 and "try again" in (await failed.json())["message"]

    async def test_not_signed_in(self, world: World) -> None:
        """An action without a session is a 401 pointing at the sign-in page."""
        resp = await world.act("resume", csrf="anything")
        assert resp.status == 401 and (await resp.json())["login"] == "/panel/login"

    async def test_malformed_json(self, world: World) -> None:
        """A body that is not a JSON object is a 400."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        resp = await world.client.post("/panel/action", data="[1, 2",
                                       headers={"Content-Type": "application/json",
                                                "X-CSRF-Token": csrf})
        assert resp.status == 400


class TestClosingAndFollowUpActions:
    """R8 from the panel: ending with or without the question, promises, follow-ups."""

    async def test_end_call_with_and_without_the_question(self, world: World) -> None:
        """end-call passes ask_more 1 or 0; the forms send 1 for a ticked box, 0 for the closing box."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        assert (await world.act("end-call", {"ask_more": "1"}, csrf=csrf)).status == 200
        assert (await world.act("end-call", {"ask_more": 0}, csrf=csrf)).status == 200
        assert (await world.act("end-call", {}, csrf=csrf)).status == 200  # unticked: no question
        ticked = await world.client.post("/panel/action", allow_redirects=False, data={
            "action": "end-call", "ask_more": "1", "csrf": csrf})
        closing_box = await world.client.post("/panel/action", allow_redirects=False, data={
            "action": "end-call", "ask_more": "0", "csrf": csrf, "agent": "agent2"})
        more = await world.client.post("/panel/action", allow_redirects=False, data={
            "action": "resume", "ask_more": "0", "csrf": csrf})
        assert ticked.status == closing_box.status == more.status == 303
        assert world.desk.acts == [
            ("agent1", "end-call", {"ask_more": "1"}), ("agent1", "end-call", {"ask_more": "0"}),
            ("agent1", "end-call", {"ask_more": "0"}), ("agent1", "end-call", {"ask_more": "1"}),
            ("agent1", "end-call", {"ask_more": "0"}), ("agent1", "resume", {})]

    async def test_promise_reaches_the_desk(self, world: World) -> None:
        """A promise passes its stripped text and working days for the signed-in agent only."""
        await world.sign_in("agent1")
        resp = await world.act("promise", {"text": " 三个工作日后给您答复 ", "working_days": 3,
                                           "owner": "agent2"},
                               csrf=await world.page_csrf(), agent="agent2")
        assert resp.status == 200
        assert world.desk.acts == [("agent1", "promise",
                                    {"text": "三个工作日后给您答复", "working_days": "3"})]

    async def test_followup_actions_reach_the_desk(self, world: World) -> None:
        """已完成 and 回电 pass the follow-up id (a uuid, or call id + "-f1") for the session's agent."""
        other = second_client(world)
        try:
            await world.sign_in("agent1")
            await world.sign_in("agent2", client=other)
            csrf1, csrf2 = await world.page_csrf(), await world.page_csrf(other)
            fid = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
            assert (await world.act("followup-done", {"followup_id": fid}, csrf=csrf1)).status == 200
            assert (await world.act("place-callback", {"followup_id": "c0ffee000001-f1"},
                                    csrf=csrf2, client=other)).status == 200
            # agent1's session with agent2's token: refused like every other action.
            assert (await world.act("place-callback", {"followup_id": fid}, csrf=csrf2)).status == 403
        finally:
            await other.close()
        assert world.desk.acts == [("agent1", "followup-done", {"followup_id": fid}),
                                   ("agent2", "place-callback", {"followup_id": "c0ffee000001-f1"})]

    @pytest.mark.parametrize("action", ["end-call", "promise", "followup-done", "place-callback"])
    async def test_new_actions_need_the_csrf_token(self, world: World, action: str) -> None:
        """Without the session's token each R8 action is a 403 and never reaches the desk."""
        await world.sign_in("agent1")
        params = {"ask_more": "1", "text": "答复", "working_days": "3", "followup_id": "abc"}
        resp = await world.act(action, params, csrf=None)
        assert resp.status == 403 and "CSRF" in (await resp.json())["message"]
        form = await world.client.post("/panel/action", allow_redirects=False,
                                       data={"action": action, **params})
        assert form.status == 403
        assert world.desk.acts == []

    @pytest.mark.parametrize(("action", "params", "fragment"), [
        ("end-call", {"ask_more": "yes"}, "ask_more must be 0 or 1"),
        ("end-call", {"ask_more": True}, "must be text"),
        ("promise", {"text": "答复", "working_days": "0"}, "from 1 to 30"),
        ("promise", {"text": "答复", "working_days": "31"}, "from 1 to 30"),
        ("promise", {"text": "答复", "working_days": "2.5"}, "from 1 to 30"),
        ("promise", {"text": "答复", "working_days": "-1"}, "from 1 to 30"),
        ("promise", {"text": "答复", "working_days": "３"}, "from 1 to 30"),  # full-width digit
        ("promise", {"text": "答复"}, "working_days is required"),
        ("promise", {"text": "  ", "working_days": "3"}, "text is required"),
        ("promise", {"text": "答" * 201, "working_days": "3"}, "承诺内容 promise 太长"),
        ("followup-done", {}, "followup_id is required"),
        ("followup-done", {"followup_id": "../etc/passwd"}, "[0-9a-f-]"),
        ("followup-done", {"followup_id": "ABCDEF"}, "[0-9a-f-]"),
        ("place-callback", {"followup_id": "abc' OR 1=1"}, "[0-9a-f-]"),
        ("place-callback", {"followup_id": "a" * 65}, "[0-9a-f-]"),
        ("place-callback", {"followup_id": ["abc"]}, "must be text"),
    ])
    async def test_bad_params_refused_before_the_desk(
        self, world: World, action: str, params: dict[str, Any], fragment: str
    ) -> None:
        """Invalid R8 params are a 400 with a reason and never reach the desk."""
        await world.sign_in("agent1")
        resp = await world.act(action, params, csrf=await world.page_csrf())
        assert resp.status == 400
        assert fragment in (await resp.json())["message"]
        assert world.desk.acts == []

    async def test_working_days_bound_comes_from_the_desk(self, world: World) -> None:
        """The promise's upper bound is the view's max_working_days (config followups.max_working_days)."""
        world.desk.views["agent1"]["max_working_days"] = 5
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        refused = await world.act("promise", {"text": "答复", "working_days": "6"}, csrf=csrf)
        assert refused.status == 400 and "from 1 to 5" in (await refused.json())["message"]
        assert (await world.act("promise", {"text": "答复", "working_days": "5"},
                                csrf=csrf)).status == 200

    async def test_the_page_has_the_r8_controls(self, world: World) -> None:
        """The page offers 结束通话 with the question ticked, the closing buttons, the promise form."""
        await world.sign_in("agent1")
        text = await (await world.client.get("/panel")).text()
        assert re.search(r'<input type="checkbox" name="ask_more" id="end-ask-more" value="1"\s+'
                         r"checked>", text)
        assert "先询问「请问您还有其他问题吗？」" in text
        for needle in ('id="btn-end-call"', 'id="btn-end-call-confirm"', "没有了 — 结束",
                       'id="btn-closing-resume"', "还有问题 — 继续", 'id="btn-promise"',
                       'value="三个工作日后给您答复"', 'id="followups"', 'id="callback-opening"',
                       "请先报公司名称和您的姓名"):
            assert needle in text, needle

    async def test_followups_reach_the_panel_in_the_view(self, world: World) -> None:
        """The view's follow-ups and callback parts travel over the socket unchanged."""
        await world.sign_in("agent1")
        ws = await world.client.ws_connect("/panel/ws", headers={"Origin": world.origin})
        await receive(ws)
        item = {"id": "c0ffee000001-f1", "kind": "promise", "text": HOSTILE, "number": "138",
                "due": "2026-01-14", "status": "overdue", "owner": "agent1", "queue": "",
                "call_id": "c0ffee000001"}
        world.desk.views["agent1"]["followups"] = [item]
        world.desk.push("agent1")
        pushed = await receive(ws)
        assert pushed["view"]["followups"] == [item]
        await ws.close()


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 2.0)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


class TestWebSocket:
    async def test_view_on_subscribe_and_on_updates(self, world: World) -> None:
        """The socket sends the view at once, then every pushed view and notice."""
        await world.sign_in("agent1")
        ws = await world.client.ws_connect("/panel/ws", headers={"Origin": world.origin})
        first = await receive(ws)
        assert first["kind"] == "view" and first["view"]["agent"] == "agent1"
        assert isinstance(first["server_time"], float)
        world.desk.views["agent1"]["state"] = "ringing"
        world.desk.views["agent1"]["call"] = {"call_id": "c1", "caller_number": "13800138000"}
        world.desk.push("agent1")
        second = await receive(ws)
        assert second["view"]["state"] == "ringing"
        assert second["view"]["call"]["caller_number"] == "13800138000"
        world.desk.push("agent1", {"kind": "notice", "text": "转接被拒绝", "level": "warn"})
        notice = await receive(ws)
        assert notice["kind"] == "notice" and notice["text"] == "转接被拒绝"
        world.desk.push("agent2")  # another agent's update is not sent here
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.2)
        await ws.close()
        await asyncio.sleep(0.05)
        assert world.desk.subscribers["agent1"] == []  # unsubscribed on close

    async def test_refused_without_session(self, world: World) -> None:
        """Without a session cookie the upgrade is refused (401)."""
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await world.client.ws_connect("/panel/ws", headers={"Origin": world.origin})
        assert err.value.status == 401

    @pytest.mark.parametrize("origin", ["http://evil.example", "null", "", None,
                                        "http://127.0.0.1:1"])
    async def test_refused_with_foreign_origin(self, world: World, origin: str | None) -> None:
        """A missing, null or foreign Origin is refused (403) even with a session."""
        await world.sign_in("agent1")
        headers = {"Origin": origin} if origin is not None else {}
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await world.client.ws_connect("/panel/ws", headers=headers)
        assert err.value.status == 403
        assert world.desk.subscribers.get("agent1", []) == []

    async def test_logout_closes_the_socket(self, world: World) -> None:
        """Signing out closes the panel's socket with code 4001."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        ws = await world.client.ws_connect("/panel/ws", headers={"Origin": world.origin})
        await receive(ws)
        await world.client.post("/panel/logout", data={"csrf": csrf}, allow_redirects=False)
        msg = await asyncio.wait_for(ws.receive(), 2.0)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001


class TestSessionExpiry:
    async def test_idle_session_expires(self, world: World) -> None:
        """A session unused past the idle timeout is gone: the page redirects, actions get 401."""
        await world.sign_in("agent1")
        csrf = await world.page_csrf()
        world.clock.t += world.options.idle_timeout - 1
        assert (await world.client.get("/panel", allow_redirects=False)).status == 200
        world.clock.t += world.options.idle_timeout - 1  # activity above reset the idle time
        assert (await world.client.get("/panel", allow_redirects=False)).status == 200
        world.clock.t += world.options.idle_timeout + 1
        assert (await world.client.get("/panel", allow_redirects=False)).status == 303
        assert (await world.act("resume", csrf=csrf)).status == 401
        assert world.desk.acts == []

    async def test_open_panel_keeps_the_session_until_max_age(self, world: World) -> None:
        """An open panel is activity; the maximum age still ends it and closes the socket."""
        await world.sign_in("agent1")
        ws = await world.client.ws_connect("/panel/ws", headers={"Origin": world.origin})
        await receive(ws)
        world.clock.t += world.options.idle_timeout + 1
        await asyncio.sleep(0.15)
        assert not ws.closed
        world.clock.t += world.options.max_age
        msg = await asyncio.wait_for(ws.receive(), 2.0)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001

    def test_sessions_unit(self) -> None:
        """Session ids and tokens are random and distinct; a closed session is gone."""
        clock = FakeClock()
        sessions = Sessions(PanelOptions(clock=clock))
        a, b = sessions.open("agent1"), sessions.open("agent1")
        assert a.sid != b.sid and a.csrf != b.csrf and len(a.sid) >= 40
        assert sessions.close(a.sid) is a
        assert sessions.get(a.sid) is None and sessions.get(b.sid) is b
        assert sessions.get(None) is None and sessions.get("") is None


class TestEscapingAndHeaders:
    async def test_hostile_name_on_the_sign_in_form_is_escaped(self, world: World) -> None:
        """A hostile name typed into the form comes back escaped, not as markup."""
        token = await world.login_token()
        resp = await world.client.post("/panel/login", data={
            "name": HOSTILE, "password": "whatever-x", "csrf": token})
        text = await resp.text()
        assert resp.status == 401
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;" in text

    async def test_hostile_agent_name_on_the_page_is_escaped(self) -> None:
        """An agent name with markup is escaped in the panel page."""
        desk, accounts = FakeDesk(agents=(HOSTILE,)), FakeAccounts()
        PASSWORDS[HOSTILE] = "hostile-secret"
        app = create_app(EmptyLog(), desk=desk, accounts=accounts)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            world = World(client, desk, accounts, FakeClock(), PanelOptions())
            assert (await world.sign_in(HOSTILE)).status == 303
            text = await (await client.get("/panel")).text()
        finally:
            await client.close()
            del PASSWORDS[HOSTILE]
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text

    async def test_security_headers_and_no_cache(self, world: World) -> None:
        """Panel pages carry the CSP without inline scripts and are never cached."""
        resp = await world.client.get("/panel/login")
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
        assert resp.headers["Cache-Control"] == "no-store"
        assert "<script>" not in await resp.text()

    async def test_secure_cookie_behind_tls_proxy(self) -> None:
        """With cookie_secure=True (TLS ends at a proxy) the session cookie is marked Secure."""
        desk, accounts = FakeDesk(), FakeAccounts()
        app = create_app(EmptyLog(), desk=desk, accounts=accounts,
                         panel_options=PanelOptions(cookie_secure=True))
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        try:
            world = World(client, desk, accounts, FakeClock(), PanelOptions())
            resp = await world.sign_in("agent1")
        finally:
            await client.close()
        cookie = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith(SESSION_COOKIE))
        assert "Secure" in cookie

    async def test_panel_assets_served(self, world: World) -> None:
        """panel.js and panel.css are served from /static."""
        for path in ("/static/panel.js", "/static/panel.css"):
            assert (await world.client.get(path)).status == 200

    async def test_panel_absent_without_desk(self) -> None:
        """create_app without a desk and accounts serves no panel (the admin app as before)."""
        client = TestClient(TestServer(create_app(EmptyLog()), host="127.0.0.1", port=0))
        await client.start_server()
        try:
            assert (await client.get("/panel/login")).status == 404
            assert (await client.get("/healthz")).status == 200
        finally:
            await client.close()
