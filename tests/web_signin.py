"""Signing a test client in to the admin pages, for the tests of those pages.

``serve`` starts an app on loopback and signs in as an admin (or the role
asked), so the page tests keep testing the pages; what sign-in itself
refuses is tested in ``tests/test_web_auth.py`` with the real accounts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from db.audit import AuditEntry
from web.auth import AUTH_KEY

PASSWORDS = {"boss": ("admin", "boss-secret-1"), "sue": ("supervisor", "sue-secret-1"),
             "agent1": ("agent", "agent1-secret")}
ROLE_USERS = {role: name for name, (role, _) in PASSWORDS.items()}


class MemoryAccounts:
    """Plain-text passwords and an audit list in memory: enough to sign in to the pages."""

    def __init__(self) -> None:
        self.trail: list[AuditEntry] = []

    async def authenticate(self, name: str, password: str) -> str | None:
        role, right = PASSWORDS.get(name, ("", None))
        return role if password == right else None

    async def record(self, *, actor: str, action: str, detail: str,
                     address: str | None = None) -> None:
        self.trail.append(AuditEntry(id=len(self.trail) + 1, at=datetime.now(UTC), actor=actor,
                                     action=action, detail=detail, address=address))

    async def audit_entries(self, limit: int = 50, offset: int = 0) -> list[AuditEntry]:
        return list(reversed(self.trail))[offset:offset + limit]


async def sign_in(client: TestClient[Any, Any], name: str, password: str) -> Any:
    """Fill the /login form as a browser would; returns the POST's response (no redirect)."""
    form = await client.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert match, "the sign-in form has a CSRF token"
    return await client.post("/login", allow_redirects=False, data={
        "name": name, "password": password, "csrf": match.group(1)})


async def serve(app: web.Application, role: str | None = "admin") -> TestClient[Any, Any]:
    """The app on loopback; signed in with ``role`` (None: not signed in).

    An app made without accounts gets :class:`MemoryAccounts`.
    """
    auth = app[AUTH_KEY]
    if auth.accounts is None:
        auth.accounts = MemoryAccounts()
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    if role is not None:
        name = ROLE_USERS[role]
        resp = await sign_in(client, name, PASSWORDS[name][1])
        assert resp.status == 303, await resp.text()
    return client
