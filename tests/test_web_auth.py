"""Sign-in and roles on the admin (issue 11): sessions, CSRF, lock-out, expiry, /users, /audit.

Over real loopback sockets against the real app and the real accounts
(SQLite, argon2 with cheap parameters). The router walk makes sure a route
added later cannot answer without a session.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from db.accounts import Accounts
from db.records import CallRecord, CallSummary, FollowUp
from liyi.settings import Settings, parse_settings
from tests.test_panel import FakeDesk
from tests.web_signin import sign_in
from web import create_app
from web.auth import (
    ADMINS,
    PANEL,
    POLICY,
    PUBLIC,
    READERS,
    SESSION_COOKIE,
    AuthOptions,
    safe_next,
)

PASSWORDS = {"boss": "boss-secret-1", "sue": "sue-secret-1", "agent1": "agent1-secret"}
ROLES = {"boss": "admin", "sue": "supervisor", "agent1": "agent"}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class EmptyLog:
    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        return []

    async def get_call(self, call_id: str) -> CallRecord | None:
        return None

    async def list_followups(self, *, owner: str | None = None, include_done: bool = False,
                             today: date) -> list[FollowUp]:
        return []


class Site:
    """The app on loopback, its accounts and clock, and one browser-like client per use."""

    def __init__(self, app: web.Application, accounts: Accounts, clock: FakeClock,
                 options: AuthOptions) -> None:
        self.app, self.accounts, self.clock, self.options = app, accounts, clock, options
        self.clients: list[TestClient[Any, Any]] = []

    async def client(self, name: str | None = None) -> TestClient[Any, Any]:
        """A new client (its own cookies); signed in as ``name`` if given."""
        c: TestClient[Any, Any] = TestClient(TestServer(self.app, host="127.0.0.1", port=0)
                                             if not self.clients else self.clients[0].server)
        if not self.clients:
            await c.start_server()
        self.clients.append(c)
        if name is not None:
            resp = await sign_in(c, name, PASSWORDS[name])
            assert resp.status == 303, await resp.text()
        return c

    async def close(self) -> None:
        for c in reversed(self.clients):
            await c.session.close()
        if self.clients:
            await self.clients[0].close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    accounts = Accounts(f"sqlite+aiosqlite:///{tmp_path / 'acc.db'}",
                        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    await accounts.start()
    for name, role in ROLES.items():
        await accounts.add(name, PASSWORDS[name], role)
    clock = FakeClock()
    options = AuthOptions(clock=clock)
    app = create_app(EmptyLog(), accounts=accounts, auth_options=options, desk=FakeDesk())
    app.router.add_get("/late-addition", _late_route)  # declared nowhere: must be admin only
    app.router.add_post("/late-addition", _late_route)
    s = Site(app, accounts, clock, options)
    yield s
    await s.close()
    await accounts.close()


async def _late_route(request: web.Request) -> web.Response:
    return web.Response(text="secret")


def concrete(path: str) -> str:
    """A request path for a route path: every ``{var}`` filled in."""
    if path == "/static":
        return "/static/style.css"
    return re.sub(r"\{[^}]+\}", "boss", path)


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, route path) of every route the app serves, HEAD left out (it is GET's)."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        found.append((route.method, resource.canonical))
    return found


async def csrf_of(client: TestClient[Any, Any], path: str = "/users") -> str:
    resp = await client.get(path)
    match = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert match, f"{path} carries the session's CSRF token"
    return match.group(1)


async def names(site: Site) -> dict[str, str]:
    return {a.name: a.role for a in await site.accounts.list_accounts()}


# Changes an admin makes, with a body that would succeed with a session and a token.
CHANGES = [
    ("/users", {"name": "newbie", "role": "agent", "password": "newbie-secret"}),
    ("/users/agent1/role", {"role": "supervisor"}),
    ("/users/agent1/password", {"password": "another-secret"}),
    ("/users/agent1/remove", {}),
    ("/late-addition", {}),
]


class TestNoSession:
    async def test_every_admin_route_refuses_without_a_session(self, site: Site) -> None:
        """Walking the router: no page or API but the public ones answers without a session."""
        c = await site.client()
        walked = routes(site.app)
        assert ("GET", "/late-addition") in walked and ("POST", "/users") in walked
        for method, path in walked:
            access = POLICY.get((method, path), ADMINS)
            if access == PUBLIC or (method, path) == ("GET", "/panel/login"):
                continue  # the panel's sign-in form is public as /login is
            resp = await c.request(method, concrete(path), allow_redirects=False,
                                   data={"name": "x", "password": "y", "role": "admin"})
            body = await resp.text()
            where = f"{method} {path}"
            if access == PANEL:  # the panel's own sign-in: never the panel itself
                assert resp.status in (303, 401, 403), where
                if resp.status == 303:
                    assert resp.headers["Location"] == "/panel/login", where
                continue
            if path.startswith("/api/"):
                assert resp.status == 401, where
                assert (await resp.json())["login"] == "/login", where
            else:
                assert resp.status == 303, where
                assert resp.headers["Location"].startswith("/login"), where
            assert "secret" not in body, where
        assert await names(site) == ROLES  # nothing changed

    async def test_public_routes_are_only_sign_in_health_and_static(self) -> None:
        """The routes that answer without a session are the sign-in form, /healthz, /static."""
        public = {key for key, access in POLICY.items() if access == PUBLIC}
        assert public == {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"),
                          ("GET", "/static")}

    async def test_policy_names_only_routes_that_exist(self, site: Site) -> None:
        """Every entry of the policy is a route the app serves (no stale, misspelt entries)."""
        served = set(routes(site.app))
        assert set(POLICY) <= served | {("GET", "/static")}

    async def test_page_redirect_keeps_where_the_admin_was_going(self, site: Site) -> None:
        """/report without a session → /login?next=/report; signing in lands on /report."""
        c = await site.client()
        resp = await c.get("/report?days=7", allow_redirects=False)
        location = urlsplit(resp.headers["Location"])
        assert location.path == "/login"
        assert parse_qs(location.query)["next"] == ["/report?days=7"]
        form = await c.get(resp.headers["Location"])
        text = await form.text()
        token = re.search(r'name="csrf" value="([^"]+)"', text)
        next_field = re.search(r'name="next" value="([^"]+)"', text)
        assert token and next_field and next_field.group(1) == "/report?days=7"
        done = await c.post("/login", allow_redirects=False, data={
            "name": "sue", "password": PASSWORDS["sue"], "csrf": token.group(1),
            "next": next_field.group(1)})
        assert done.status == 303 and done.headers["Location"] == "/report?days=7"

    async def test_next_cannot_leave_the_site(self, site: Site) -> None:
        """A ``next`` to another host (//evil, https://evil) signs in to / instead."""
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            c = await site.client()
            form = await c.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
            assert token
            resp = await c.post("/login", allow_redirects=False, data={
                "name": "boss", "password": PASSWORDS["boss"], "csrf": token.group(1),
                "next": target})
            assert resp.headers["Location"] == "/", target


class TestRoles:
    async def test_admin_reads_and_changes(self, site: Site) -> None:
        """An admin gets every page, /users included, and an undeclared route."""
        c = await site.client("boss")
        for path in ("/", "/followups", "/report", "/audit", "/users", "/api/calls",
                     "/api/audit", "/late-addition"):
            assert (await c.get(path)).status == 200, path

    async def test_supervisor_reads_everything_and_changes_nothing(self, site: Site) -> None:
        """A supervisor gets every read page; every change, /users and undeclared routes: 403."""
        c = await site.client("sue")
        for (method, path), access in POLICY.items():
            if method == "GET" and access == READERS:
                resp = await c.get(concrete(path), allow_redirects=False)
                assert resp.status in (200, 404), path  # 404: /calls/boss is no call
        token = await csrf_of(c, "/logout")
        for path, body in CHANGES:
            resp = await c.post(path, data={**body, "csrf": token}, allow_redirects=False)
            assert resp.status == 403, path
        assert (await c.get("/users")).status == 403
        assert (await c.get("/late-addition")).status == 403
        assert (await c.get("/api/audit")).status == 200
        assert await names(site) == ROLES

    async def test_agent_account_cannot_sign_in_to_the_admin(self, site: Site) -> None:
        """An agent's right password at /login is a 403 pointing to the panel, and no session."""
        c = await site.client()
        resp = await sign_in(c, "agent1", PASSWORDS["agent1"])
        assert resp.status == 403
        assert "/panel/login" in await resp.text()
        assert SESSION_COOKIE not in {m.key for m in c.session.cookie_jar}
        assert (await c.get("/", allow_redirects=False)).status == 303

    async def test_wrong_password_is_refused(self, site: Site) -> None:
        """A wrong password is a 401 with the reason, and no session."""
        c = await site.client()
        resp = await sign_in(c, "boss", "not-the-password")
        assert resp.status == 401 and "Wrong name or password" in await resp.text()
        assert (await c.get("/api/calls")).status == 401

    async def test_sign_out_ends_the_session(self, site: Site) -> None:
        """POST /logout with the token ends the session; the old cookie opens nothing."""
        c = await site.client("boss")
        token = await csrf_of(c, "/logout")
        resp = await c.post("/logout", data={"csrf": token}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
        assert (await c.get("/api/calls")).status == 401


class TestCsrf:
    @pytest.mark.parametrize(("path", "body"), CHANGES)
    async def test_change_without_token_is_refused(self, site: Site, path: str,
                                                   body: dict[str, str]) -> None:
        """A signed-in admin's change without the CSRF token, or with a wrong one: 403."""
        c = await site.client("boss")
        assert (await c.post(path, data=body, allow_redirects=False)).status == 403
        wrong = await c.post(path, data={**body, "csrf": "forged"}, allow_redirects=False)
        assert wrong.status == 403 and "CSRF" in await wrong.text()
        header = await c.post(path, data=body, headers={"X-CSRF-Token": "forged"},
                              allow_redirects=False)
        assert header.status == 403
        assert await names(site) == ROLES

    async def test_token_in_header_works(self, site: Site) -> None:
        """The token may come as the X-CSRF-Token header (for scripts) instead of a field."""
        c = await site.client("boss")
        token = await csrf_of(c)
        resp = await c.post("/users/agent1/role", data={"role": "supervisor"},
                            headers={"X-CSRF-Token": token}, allow_redirects=False)
        assert resp.status == 303
        assert (await names(site))["agent1"] == "supervisor"

    async def test_another_sessions_token_is_refused(self, site: Site) -> None:
        """A token from another admin's session does not work in this one."""
        first, second = await site.client("boss"), await site.client("boss")
        theirs = await csrf_of(first)
        resp = await second.post("/users/agent1/remove", data={"csrf": theirs},
                                 allow_redirects=False)
        assert resp.status == 403
        assert "agent1" in await names(site)

    async def test_sign_in_form_needs_its_token(self, site: Site) -> None:
        """POST /login without the form's token (a forged cross-site sign-in) is a 403."""
        c = await site.client()
        resp = await c.post("/login", data={"name": "boss", "password": PASSWORDS["boss"]},
                            allow_redirects=False)
        assert resp.status == 403
        assert SESSION_COOKIE not in {m.key for m in c.session.cookie_jar}


class TestUsersPage:
    async def test_add_change_reset_remove_each_audited(self, site: Site) -> None:
        """Each change shows on /users and in /audit with the admin's name."""
        c = await site.client("boss")
        token = await csrf_of(c)
        steps = [
            ("/users", {"name": "newbie", "role": "agent", "password": "newbie-secret"}),
            ("/users/newbie/role", {"role": "supervisor"}),
            ("/users/newbie/password", {"password": "fresh-secret-2"}),
        ]
        for path, body in steps:
            resp = await c.post(path, data={**body, "csrf": token}, allow_redirects=False)
            assert resp.status == 303, path
        assert (await names(site))["newbie"] == "supervisor"
        assert await site.accounts.authenticate("newbie", "fresh-secret-2") == "supervisor"
        resp = await c.post("/users/newbie/remove", data={"csrf": token}, allow_redirects=False)
        assert resp.status == 303
        assert "newbie" not in await names(site)
        trail = (await (await c.get("/api/audit")).json())["entries"]
        mine = [(e["actor"], e["action"]) for e in trail if "newbie" in e["detail"]]
        assert mine == [("boss", "user-remove"), ("boss", "passwd"), ("boss", "role"),
                        ("boss", "user-add")]
        assert all(e["address"] == "127.0.0.1" for e in trail if e["actor"] == "boss")
        html = await (await c.get("/audit")).text()
        assert "user-remove" in html and "newbie (supervisor)" in html

    async def test_bad_input_says_why_and_changes_nothing(self, site: Site) -> None:
        """A short password, an unknown role, a taken name: 400 with the reason, nothing stored."""
        c = await site.client("boss")
        token = await csrf_of(c)
        for body, reason in (
            ({"name": "x1", "role": "agent", "password": "short"}, "at least 8"),
            ({"name": "x2", "role": "root", "password": "long-enough"}, "role must be one of"),
            ({"name": "sue", "role": "agent", "password": "long-enough"}, "already exists"),
        ):
            resp = await c.post("/users", data={**body, "csrf": token})
            assert resp.status == 400 and reason in await resp.text(), body
        assert await names(site) == ROLES

    async def test_last_admin_cannot_be_removed_or_demoted(self, site: Site) -> None:
        """Removing or demoting the only admin is refused, so the admin stays reachable."""
        c = await site.client("boss")
        token = await csrf_of(c)
        removed = await c.post("/users/boss/remove", data={"csrf": token})
        assert removed.status == 400 and "last admin" in await removed.text()
        demoted = await c.post("/users/boss/role", data={"role": "agent", "csrf": token})
        assert demoted.status == 400
        assert (await names(site))["boss"] == "admin"

    async def test_role_change_signs_the_account_out(self, site: Site) -> None:
        """Demoting a signed-in supervisor to agent ends their session at once."""
        sue = await site.client("sue")
        assert (await sue.get("/")).status == 200
        boss = await site.client("boss")
        token = await csrf_of(boss)
        await boss.post("/users/sue/role", data={"role": "agent", "csrf": token})
        assert (await sue.get("/", allow_redirects=False)).status == 303

    async def test_removing_an_agent_ends_their_panel_session(self, site: Site) -> None:
        """An agent signed in to the panel is signed out there when the admin removes them."""
        agent = await site.client()
        form = await agent.get("/panel/login")
        token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
        assert token
        signed = await agent.post("/panel/login", allow_redirects=False, data={
            "name": "agent1", "password": PASSWORDS["agent1"], "csrf": token.group(1)})
        assert signed.status == 303 and signed.headers["Location"] == "/panel"
        assert (await agent.get("/panel", allow_redirects=False)).status == 200
        latest = (await site.accounts.audit_entries(1))[0]
        assert (latest.actor, latest.action) == ("agent1", "panel-sign-in")
        boss = await site.client("boss")
        done = await boss.post("/users/agent1/remove", data={"csrf": await csrf_of(boss)},
                               allow_redirects=False)
        assert done.status == 303
        page = await agent.get("/panel", allow_redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/panel/login"

    async def test_hostile_account_name_is_escaped(self, site: Site) -> None:
        """A name with markup shows as text on /users and /audit (templates autoescape)."""
        hostile = "<script>alert(1)</script>"
        await site.accounts.add(hostile, "hostile-secret", "agent")
        c = await site.client("boss")
        for path in ("/users", "/audit"):
            html = await (await c.get(path)).text()
            assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


class TestLockout:
    async def test_five_failures_lock_the_name_out_then_it_expires(self, site: Site) -> None:
        """Five wrong passwords: even the right one is refused (429) until the lock-out ends."""
        c = await site.client()
        for i in range(5):
            assert (await sign_in(c, "boss", f"wrong-{i}")).status == 401
        locked = await sign_in(c, "boss", PASSWORDS["boss"])
        assert locked.status == 429 and "Too many failed sign-ins" in await locked.text()
        site.clock.t += site.options.lockout_seconds + 1
        assert (await sign_in(c, "boss", PASSWORDS["boss"])).status == 303
        trail = await site.accounts.audit_entries()
        assert [e.action for e in trail][:2] == ["sign-in", "lockout"]

    async def test_one_address_guessing_many_names_is_locked_out(self, site: Site) -> None:
        """Twenty failures from one address over many names lock that address for any name."""
        c = await site.client()
        for i in range(site.options.address_max_failures):
            assert (await sign_in(c, f"guess{i}", "nope-nope")).status == 401
        assert (await sign_in(c, "sue", PASSWORDS["sue"])).status == 429


class TestExpiry:
    async def test_idle_session_expires(self, site: Site) -> None:
        """No request for the idle timeout: signed out (page → /login, API → 401)."""
        c = await site.client("sue")
        site.clock.t += site.options.idle_timeout - 1
        assert (await c.get("/api/calls")).status == 200  # use resets the idle time
        site.clock.t += site.options.idle_timeout - 1
        assert (await c.get("/api/calls")).status == 200
        site.clock.t += site.options.idle_timeout + 1
        assert (await c.get("/api/calls")).status == 401
        assert (await c.get("/", allow_redirects=False)).headers["Location"].startswith("/login")

    async def test_session_ends_at_its_maximum_age_however_busy(self, site: Site) -> None:
        """A session in use still ends at max_age."""
        c = await site.client("boss")
        step = site.options.idle_timeout / 2
        while site.clock.t + step < 1000.0 + site.options.max_age:
            site.clock.t += step
            assert (await c.get("/api/calls")).status == 200
        site.clock.t += step + 1
        assert (await c.get("/api/calls")).status == 401


class TestBindAddress:
    def test_web_binds_loopback_unless_configured(self) -> None:
        """With no ``web.host`` in the config the admin listens on 127.0.0.1 only."""
        data = yaml.safe_load((Path(__file__).parent.parent / "liyi.yaml").read_text("utf-8"))
        data.pop("web", None)
        settings, problems = parse_settings(data, {})
        assert settings is not None, problems
        assert settings.web_host == "127.0.0.1"
        assert Settings.__dataclass_fields__["web_host"].default == "127.0.0.1"


class TestSafeNext:
    @given(st.text(max_size=60))
    def test_never_leaves_the_site(self, target: str) -> None:
        """Whatever ``next`` holds, sign-in goes to a path on this site, never another host."""
        where = safe_next(target)
        assert where.startswith("/") and not where.startswith("//")
        assert "\\" not in where and not any(ord(ch) <= 0x20 for ch in where)
        assert urlsplit(where).netloc == "" and urlsplit(where).scheme == ""

    @given(st.sampled_from(["/", "//", "/\\", "/\t/", "/\n/", "https://", "http:"]),
           st.text(max_size=20))
    def test_tricks_give_the_home_page(self, prefix: str, rest: str) -> None:
        """Two slashes, a backslash, a tab or a scheme before a host: the home page instead."""
        where = safe_next(prefix + "evil.example" + rest)
        assert where == "/" or (prefix == "/" and where == "/evil.example" + rest)
