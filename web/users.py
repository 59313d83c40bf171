"""The admin's pages for accounts (``/users``) and the audit trail (``/audit``).

Routes (who may use them is in ``web.auth.POLICY``)::

    GET  /users                   admin: every account and its role, forms to change them
    POST /users                   admin: add an account (name, role, password)
    POST /users/{name}/role       admin: change the role
    POST /users/{name}/password   admin: set a new password
    POST /users/{name}/remove     admin: remove the account
    GET  /audit                   admin, supervisor: who changed what, newest first
    GET  /api/audit               the same as JSON

Every change is checked by ``db.accounts`` (the same checks as ``liyi
users``), written to the audit trail with the admin's name and address, and
ends the changed account's sessions (admin and panel), so a removed or
demoted account is out at once. A refused change says why and changes
nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import structlog
from aiohttp import web

from db.accounts import ROLES, AccountError, AccountInfo
from db.audit import AuditEntry
from web.auth import AUTH_KEY, SESSION_KEY, AdminAccounts, address_of, render, see_other
from web.sessions import Session

logger = structlog.get_logger()

AUDIT_PAGE_SIZE = 50
MAX_AUDIT_OFFSET = 10_000_000


class UserAccounts(AdminAccounts, Protocol):
    """Sign-in plus the account changes the admin makes (``db.accounts.Accounts``)."""

    async def list_accounts(self) -> list[AccountInfo]: ...

    async def add(self, name: str, password: str, role: str, *, actor: str = "cli",
                  address: str | None = None) -> None: ...

    async def reset_password(self, name: str, password: str, *, actor: str = "cli",
                             address: str | None = None) -> None: ...

    async def set_role(self, name: str, role: str, *, actor: str = "cli",
                       address: str | None = None) -> None: ...

    async def remove(self, name: str, *, actor: str = "cli",
                     address: str | None = None) -> None: ...


def add_user_routes(app: web.Application) -> None:
    """Serve ``/users`` and ``/audit`` on ``app`` (after ``web.auth.setup_auth``)."""
    app.router.add_get("/users", users_page)
    app.router.add_post("/users", add_user)
    app.router.add_post("/users/{name}/role", change_role)
    app.router.add_post("/users/{name}/password", reset_password)
    app.router.add_post("/users/{name}/remove", remove_user)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/api/audit", api_audit)


def _accounts(request: web.Request) -> UserAccounts:
    accounts = request.app[AUTH_KEY].accounts
    if accounts is None:
        raise web.HTTPServiceUnavailable(text="no accounts store")
    return accounts  # type: ignore[return-value]


async def _users_response(request: web.Request, *, status: int = 200, error: str = "",
                          done: str = "", form: dict[str, str] | None = None) -> web.Response:
    try:
        users = await _accounts(request).list_accounts()
    except Exception as exc:  # noqa: BLE001 - an outage is a page that says so
        logger.warning("web.accounts_unavailable", error=repr(exc))
        return render(request, "refused.html", {
            "status": 503, "message": "账号库暂不可用。The accounts cannot be read right now."
        }, 503)
    return render(request, "users.html", {
        "users": users, "roles": ROLES, "error": error, "done": done, "form": form or {},
    }, status)


async def users_page(request: web.Request) -> web.StreamResponse:
    """``GET /users``: accounts with their roles; ``?done=`` says what the last change did."""
    return await _users_response(request, done=request.query.get("done", "")[:200])


async def _change(request: web.Request, what: str, change: Any,
                  form: dict[str, str] | None = None) -> web.StreamResponse:
    """Run one account change; a refused one re-shows the page with the reason (400)."""
    try:
        await change
    except AccountError as exc:
        return await _users_response(request, status=400, error=str(exc), form=form)
    except Exception as exc:  # noqa: BLE001 - the admin gets a calm answer, the log the details
        logger.warning("web.account_change_failed", what=what, error=repr(exc))
        return await _users_response(
            request, status=503, error="账号库暂不可用，未作更改。"
                                       "The accounts cannot be written right now; nothing changed.",
            form=form)
    return see_other("/users?done=" + _quote(what))


def _quote(text: str) -> str:
    return quote(text, safe="")


async def _end_sessions(request: web.Request, name: str) -> None:
    """Sign ``name`` out everywhere: admin pages and agent panel (its open panels close)."""
    request.app[AUTH_KEY].sessions.close_for(name)
    from web.panel import PANEL_KEY  # the panel is optional; imported late to keep it so
    panel = request.app.get(PANEL_KEY)
    if panel is not None:
        for session in panel.sessions.close_for(name):
            for ws in list(session.sockets):
                await ws.close(code=4001, message=b"account changed")


def _actor(request: web.Request) -> tuple[str, str]:
    session: Session = request[SESSION_KEY]
    return session.name, address_of(request)


async def add_user(request: web.Request) -> web.StreamResponse:
    """``POST /users``: a new account with name, role and password."""
    data = await request.post()
    name = str(data.get("name", "")).strip()
    role = str(data.get("role", ""))
    password = str(data.get("password", ""))
    actor, address = _actor(request)
    return await _change(request, f"added {name} ({role})",
                         _accounts(request).add(name, password, role, actor=actor,
                                                address=address),
                         form={"name": name, "role": role})


async def change_role(request: web.Request) -> web.StreamResponse:
    """``POST /users/{name}/role``: a new role; the account's sessions end."""
    name = request.match_info["name"]
    role = str((await request.post()).get("role", ""))
    actor, address = _actor(request)
    response = await _change(request, f"{name} is now {role}",
                             _accounts(request).set_role(name, role, actor=actor,
                                                         address=address))
    if response.status == 303:
        await _end_sessions(request, name)
    return response


async def reset_password(request: web.Request) -> web.StreamResponse:
    """``POST /users/{name}/password``: a new password; the account's sessions end."""
    name = request.match_info["name"]
    password = str((await request.post()).get("password", ""))
    actor, address = _actor(request)
    response = await _change(request, f"new password for {name}",
                             _accounts(request).reset_password(name, password, actor=actor,
                                                               address=address))
    if response.status == 303:
        await _end_sessions(request, name)
    return response


async def remove_user(request: web.Request) -> web.StreamResponse:
    """``POST /users/{name}/remove``: the account is gone, and so are its sessions."""
    name = request.match_info["name"]
    actor, address = _actor(request)
    response = await _change(request, f"removed {name}",
                             _accounts(request).remove(name, actor=actor, address=address))
    if response.status == 303:
        await _end_sessions(request, name)
    return response


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "") or "0"
    if not raw.isdigit() or int(raw) > MAX_AUDIT_OFFSET:
        raise web.HTTPBadRequest(text=f"offset must be a whole number up to {MAX_AUDIT_OFFSET}")
    return int(raw)


async def _entries(request: web.Request, offset: int) -> list[AuditEntry] | None:
    try:
        return await _accounts(request).audit_entries(AUDIT_PAGE_SIZE + 1, offset)
    except Exception as exc:  # noqa: BLE001 - an outage is a page that says so
        logger.warning("web.audit_unavailable", error=repr(exc))
        return None


async def audit_page(request: web.Request) -> web.StreamResponse:
    """``GET /audit``: the audit trail, newest first, a page at a time."""
    offset = _offset(request)
    found = await _entries(request, offset)
    if found is None:
        return render(request, "refused.html", {
            "status": 503, "message": "审计记录暂不可用。The audit trail cannot be read right now."
        }, 503)
    tz = request.app[AUTH_KEY].timezone
    return render(request, "audit.html", {
        "entries": [(e, _local(e.at, tz)) for e in found[:AUDIT_PAGE_SIZE]],
        "offset": offset, "page_size": AUDIT_PAGE_SIZE,
        "has_more": len(found) > AUDIT_PAGE_SIZE,
    })


def _local(at: datetime, tz: Any) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if tz is not None else at.isoformat()


async def api_audit(request: web.Request) -> web.StreamResponse:
    """``GET /api/audit``: the same page of the trail as JSON (times ISO 8601 UTC)."""
    offset = _offset(request)
    found = await _entries(request, offset)
    if found is None:
        return web.json_response({"error": "audit trail unavailable"}, status=503)
    return web.json_response({
        "entries": [{"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
                     "detail": e.detail, "address": e.address}
                    for e in found[:AUDIT_PAGE_SIZE]],
        "offset": offset,
        "next_offset": offset + AUDIT_PAGE_SIZE if len(found) > AUDIT_PAGE_SIZE else None,
    })
