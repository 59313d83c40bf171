"""Who may see and change what in the web admin: roles, sign-in, sessions, CSRF.

Roles (``db.accounts.ROLES``): an ``admin`` reads and changes everything, a
``supervisor`` reads every admin page and changes nothing, an ``agent`` uses
the agent panel only (``web.panel``, which has its own sign-in on the same
accounts).

How it holds:

- :data:`POLICY` names, per route (method and path as registered), who may
  use it. A route it does not name is **admin only**, so a route added later
  without a thought is closed, not open; a test walks the router to prove
  that no admin route answers without a session.
- :func:`auth_middleware` runs before every handler: no session → a 303 to
  ``/login`` for a page, a 401 JSON for ``/api/``; the wrong role → 403;
  a change (any method but GET/HEAD) without the session's CSRF token (form
  field ``csrf`` or header ``X-CSRF-Token``) → 403. Only then the handler.
- Sign-in checks a CSRF token bound to a pre-session cookie (as the panel
  does), the lock-out (``web.sessions.LoginThrottle``: per name and address,
  and per address), then the argon2 hash (``db.accounts``). A good sign-in
  gets a fresh session id; sessions end when idle and at a maximum age.
- Sign-ins, sign-outs and lock-outs go to the audit trail with the changes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from db.audit import AuditEntry
from web.sessions import LoginThrottle, Session, Sessions

logger = structlog.get_logger()

TEMPLATES_DIR = Path(__file__).parent / "templates"
SESSION_COOKIE = "liyi_session"
PRE_SESSION_COOKIE = "liyi_pre"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PUBLIC = "public"  # anyone, no session (the sign-in form, health, static files)
PANEL = "panel"  # the agent panel's routes: web.panel checks its own sessions
ADMINS = frozenset({"admin"})
READERS = frozenset({"admin", "supervisor"})
ADMIN_APP_ROLES = READERS  # who may sign in at /login
Access = frozenset[str] | str

# (method, route path) → who may use it. Anything not listed: admin only.
POLICY: Mapping[tuple[str, str], Access] = {
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/static"): PUBLIC,
    ("GET", "/logout"): READERS,
    ("POST", "/logout"): READERS,
    ("GET", "/"): READERS,
    ("GET", "/calls/{call_id}"): READERS,
    ("GET", "/api/calls"): READERS,
    ("GET", "/api/calls/{call_id}"): READERS,
    ("GET", "/followups"): READERS,
    ("GET", "/api/followups"): READERS,
    ("GET", "/report"): READERS,
    ("GET", "/api/report"): READERS,
    ("GET", "/audit"): READERS,
    ("GET", "/api/audit"): READERS,
    ("GET", "/users"): ADMINS,
    ("POST", "/users"): ADMINS,
    ("POST", "/users/{name}/role"): ADMINS,
    ("POST", "/users/{name}/password"): ADMINS,
    ("POST", "/users/{name}/remove"): ADMINS,
    ("GET", "/panel/login"): PANEL,
    ("POST", "/panel/login"): PANEL,
    ("POST", "/panel/logout"): PANEL,
    ("GET", "/panel"): PANEL,
    ("POST", "/panel/action"): PANEL,
    ("GET", "/panel/ws"): PANEL,
}

CSRF_MESSAGE = (
    "安全校验失败：页面已过期或请求来源不明，请刷新页面后重试。"
    "Missing or wrong CSRF token — reload the page and try again."
)
WRONG_PASSWORD_MESSAGE = "用户名或密码错误。Wrong name or password."
AGENT_MESSAGE = ("坐席账号请登录坐席面板 /panel/login。"
                 "Agent accounts sign in to the agent panel at /panel/login.")
NO_ACCOUNTS_MESSAGE = ("尚无账号：请用命令 liyi users add 名字 --role admin 创建第一个管理员。"
                       "No accounts yet: make the first admin with "
                       "`liyi users add NAME --role admin`.")


class AdminAccounts(Protocol):
    """What the admin needs from the accounts (``db.accounts.Accounts`` provides it)."""

    async def authenticate(self, name: str, password: str) -> str | None: ...

    async def record(self, *, actor: str, action: str, detail: str,
                     address: str | None = None) -> None: ...

    async def audit_entries(self, limit: int = 50, offset: int = 0) -> list[AuditEntry]: ...


@dataclass(frozen=True, slots=True)
class AuthOptions:
    """Session and lock-out policy for the admin pages."""

    idle_timeout: float = 30 * 60.0  # no request for this long: signed out
    max_age: float = 12 * 3600.0  # then sign in again, whatever
    max_failures: int = 5  # wrong passwords for one name from one address …
    lockout_seconds: float = 60.0  # … lock that pair out this long
    address_max_failures: int = 20  # any names from one address: guessing names
    # Secure cookies: None follows the request (https → Secure); True behind a TLS proxy.
    cookie_secure: bool | None = None
    clock: Callable[[], float] = time.monotonic


class Auth:
    """Everything sign-in shares; kept on the app under :data:`AUTH_KEY`."""

    def __init__(self, accounts: AdminAccounts | None, options: AuthOptions, title: str,
                 timezone: tzinfo | None = None) -> None:
        self.accounts = accounts
        self.timezone = timezone
        self.options = options
        self.sessions = Sessions(options)
        self.throttle = LoginThrottle(options)
        self.title = title
        # Signs pre-session (sign-in) CSRF tokens; never leaves this process.
        self._key = secrets.token_bytes(32)

    def login_token(self, nonce: str) -> str:
        """The sign-in form's CSRF token for the pre-session cookie ``nonce``."""
        return hmac.new(self._key, b"admin-login:" + nonce.encode(), hashlib.sha256).hexdigest()

    def current(self, request: web.Request) -> Session | None:
        """The request's live session, if its cookie names one."""
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    async def audit(self, request: web.Request, actor: str, action: str, detail: str) -> None:
        """Write one audit line; a failed write is logged, never turned into a failed page."""
        if self.accounts is None:
            return
        try:
            await self.accounts.record(actor=actor, action=action, detail=detail,
                                       address=address_of(request))
        except Exception as exc:  # noqa: BLE001 - the sign-in itself succeeded
            logger.warning("auth.audit_failed", action=action, actor=actor, error=repr(exc))


AUTH_KEY = web.AppKey("liyi_auth", Auth)
# The signed-in session, put on the request by auth_middleware (aiohttp < 3.12: a plain key).
SESSION_KEY: Any = (web.RequestKey("liyi_session", Session) if hasattr(web, "RequestKey")
                    else "liyi_session")


def access_for(method: str, path: str) -> Access:
    """Who may use the route registered as ``path`` with ``method``; unlisted: admins only."""
    method = "GET" if method == "HEAD" else method
    return POLICY.get((method, path), ADMINS)


def setup_auth(app: web.Application, accounts: AdminAccounts | None, *,
               options: AuthOptions | None = None, title: str,
               timezone: tzinfo | None = None) -> Auth:
    """Put sign-in on ``app``: templates, the shared state, /login and /logout.

    ``app`` must have :func:`auth_middleware` among its middlewares.
    """
    auth = Auth(accounts, options or AuthOptions(), title, timezone)
    app[AUTH_KEY] = auth
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                         autoescape=jinja2.select_autoescape(default=True))
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_get("/logout", logout_form)
    app.router.add_post("/logout", logout)
    return auth


# ------------------------------------------------------------------ helpers


def address_of(request: web.Request) -> str:
    """The peer address (not X-Forwarded-For: a client could forge it to dodge the lockout)."""
    return request.remote or "unknown"


def same_token(given: object, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               path: str = "/") -> None:
    """An ``HttpOnly``, ``SameSite=Strict`` cookie, ``Secure`` over https (or if configured)."""
    secure = request.app[AUTH_KEY].options.cookie_secure
    response.set_cookie(name, value, path=path, httponly=True, samesite="Strict",
                        secure=request.secure if secure is None else secure)


def render(request: web.Request, template: str, context: dict[str, Any],
           status: int = 200) -> web.Response:
    """A page from ``web/templates`` (autoescaped), never cached."""
    auth = request.app[AUTH_KEY]
    session = request.get(SESSION_KEY)
    base = {"site_title": auth.title, "session": session,
            "csrf": session.csrf if isinstance(session, Session) else ""}
    response = aiohttp_jinja2.render_template(template, request, {**base, **context},
                                              status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def see_other(location: str) -> web.Response:
    """A 303 as a response object, so cookies can be set on it."""
    return web.Response(status=303, headers={"Location": location})


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request):
        body: dict[str, Any] = {"error": message}
        if status == 401:
            body["login"] = "/login"
        return web.json_response(body, status=status)
    return render(request, "refused.html", {"status": status, "message": message}, status)


def safe_next(target: str | None) -> str:
    r"""Where to go after sign-in: a path on this site only (no open redirect).

    Browsers drop tabs and newlines inside a URL and read ``\`` as ``/``, so
    ``/<tab>/evil`` or ``/\evil`` would leave the site: any such character, or
    a second leading slash, means "/" instead.
    """
    if not target or len(target) > 2000 or not target.startswith("/"):
        return "/"
    if target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


# ------------------------------------------------------------------ the gate


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Let a request reach its handler only with a session of a role the route allows."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:  # no such route: the 404 says nothing about the admin
        return await handler(request)
    access = access_for(request.method, resource.canonical)
    if access in (PUBLIC, PANEL):
        return await handler(request)
    auth = request.app[AUTH_KEY]
    session = auth.current(request)
    if session is None or session.role not in ADMIN_APP_ROLES:
        if _is_api(request):
            return _refuse(request, 401, "sign in first")
        target = request.path_qs if request.method in SAFE_METHODS else "/"
        raise web.HTTPSeeOther("/login?next=" + quote(target, safe=""))
    request[SESSION_KEY] = session
    if isinstance(access, frozenset) and session.role not in access:
        logger.warning("auth.forbidden", account=session.name, role=session.role,
                       method=request.method, path=request.path)
        return _refuse(request, 403, f"“{session.role}” 角色无权执行此操作。"
                                     f"The {session.role} role may not do this.")
    if request.method not in SAFE_METHODS:
        token: object = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in (
                "application/x-www-form-urlencoded", "multipart/form-data"):
            token = (await request.post()).get(CSRF_FIELD)
        if not same_token(token, session.csrf):
            logger.warning("auth.csrf_refused", account=session.name, path=request.path)
            return _refuse(request, 403, CSRF_MESSAGE)
    return await handler(request)


# ------------------------------------------------------------------ sign-in / sign-out


def _login_page(request: web.Request, *, status: int = 200, message: str = "",
                name: str = "") -> web.Response:
    auth = request.app[AUTH_KEY]
    nonce = request.cookies.get(PRE_SESSION_COOKIE, "")
    if not (20 <= len(nonce) <= 100 and nonce.replace("-", "").replace("_", "").isalnum()):
        nonce = secrets.token_urlsafe(24)
    if not message and auth.accounts is None:
        message = NO_ACCOUNTS_MESSAGE
    response = render(request, "login.html", {
        "login_csrf": auth.login_token(nonce), "message": message, "name": name,
        "next": safe_next(request.query.get("next")),
    }, status)
    set_cookie(request, response, PRE_SESSION_COOKIE, nonce, path="/login")
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """``GET /login``: the form (signed in already: straight on)."""
    session = request.app[AUTH_KEY].current(request)
    if session is not None and session.role in ADMIN_APP_ROLES:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return _login_page(request)


def _lockout_message(seconds: float) -> str:
    n = max(1, math.ceil(seconds))
    return f"登录失败次数过多，请 {n} 秒后再试。Too many failed sign-ins: try again in {n} s."


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /login``: CSRF, lock-out, password, role; then a fresh session."""
    auth = request.app[AUTH_KEY]
    form = await request.post()
    name = str(form.get("name", "")).strip()[:200]
    password = str(form.get("password", ""))
    address = address_of(request)
    nonce = request.cookies.get(PRE_SESSION_COOKIE, "")
    if not nonce or not same_token(form.get(CSRF_FIELD), auth.login_token(nonce)):
        logger.warning("auth.csrf_refused", path=request.path, address=address)
        return _login_page(request, status=403, message=CSRF_MESSAGE, name=name)
    if auth.accounts is None:
        return _login_page(request, status=503, message=NO_ACCOUNTS_MESSAGE, name=name)
    wait = auth.throttle.locked_for(name, address)
    if wait > 0:
        logger.warning("auth.login_locked", account=name, address=address, seconds=wait)
        return _login_page(request, status=429, message=_lockout_message(wait), name=name)
    try:
        role = await auth.accounts.authenticate(name, password)
    except Exception as exc:  # noqa: BLE001 - an outage is not a wrong password
        logger.warning("auth.accounts_unavailable", account=name, error=repr(exc))
        return _login_page(request, status=503, name=name,
                           message="暂时无法验证密码，请稍后再试。Passwords cannot be checked "
                                   "right now; try again shortly.")
    if role is None:
        locked = auth.throttle.failed(name, address)
        logger.warning("auth.login_failed", account=name, address=address, locked=locked)
        message = WRONG_PASSWORD_MESSAGE
        if locked:
            message += " " + _lockout_message(locked)
            await auth.audit(request, name, "lockout", f"{name} locked out for {locked:.0f} s")
        return _login_page(request, status=401, message=message, name=name)
    auth.throttle.succeeded(name, address)
    if role not in ADMIN_APP_ROLES:
        logger.warning("auth.login_refused", account=name, role=role, address=address)
        return _login_page(request, status=403, message=AGENT_MESSAGE, name=name)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        auth.sessions.close(old)
    session = auth.sessions.open(name, role)
    logger.info("auth.login", account=name, role=role, address=address)
    await auth.audit(request, name, "sign-in", f"{name} ({role})")
    response = see_other(safe_next(str(form.get("next", "")) or None))
    set_cookie(request, response, SESSION_COOKIE, session.sid)
    response.del_cookie(PRE_SESSION_COOKIE, path="/login")
    return response


async def logout_form(request: web.Request) -> web.StreamResponse:
    """``GET /logout``: a button that signs out (a change needs a POST with the CSRF token)."""
    return render(request, "logout.html", {})


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout``: end the session (the middleware checked its CSRF token)."""
    auth = request.app[AUTH_KEY]
    session: Session = request[SESSION_KEY]
    auth.sessions.close(session.sid)
    logger.info("auth.logout", account=session.name)
    await auth.audit(request, session.name, "sign-out", session.name)
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
