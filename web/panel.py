"""The agent panel: where an agent signs in and handles their calls live (R3, R4, R6, R7, R8).

Routes (all under ``/panel``)::

    GET  /panel/login    sign-in form (sets a pre-session cookie for its CSRF token)
    POST /panel/login    name + password + csrf → session cookie, 303 to /panel
    POST /panel/logout   csrf → session ended, 303 to /panel/login
    GET  /panel          the page (static/panel.js fills it from the WebSocket)
    POST /panel/action   JSON {"action", "params", "csrf"} or a form; → {"ok", "message"}
    GET  /panel/ws       WebSocket: the agent's view, pushed on every change

How it stays safe:

- The controller's :class:`Desk` owns the calls; the panel only shows
  ``desk.view(agent)`` and forwards the agent's buttons to ``desk.act``. The
  agent is always the one of the session, never a request field, so an agent
  cannot act for another.
- Agents sign in with the same accounts as the admin (``db.accounts``):
  role ``agent``, or ``admin`` for an admin who also takes calls, and the
  name must be an agent of the desk; a supervisor is refused (403).
- Sessions (``web.sessions``) are random ids in an ``HttpOnly``, ``SameSite=Strict`` cookie
  (``Secure`` over https), kept server-side in memory with an idle expiry and
  a maximum age. Memory is enough: a controller restart signs agents out,
  which they notice at once because the WebSocket drops.
- Every POST needs a CSRF token: the session's (embedded in the page), or for
  sign-in a token bound to a random pre-session cookie by an HMAC with a key
  that lives only in this process. A missing or wrong token is a 403 with a
  message saying to reload the page.
- The WebSocket needs the session cookie and an ``Origin`` equal to the
  page's own origin (browsers always send it; a foreign page cannot forge it).
- Repeated wrong passwords lock the agent name out from that address (and
  the address as a whole, for name-guessing) for a while; verifying a
  password for an unknown agent costs an argon2 hash too (``db.accounts``).
- Hostile text (caller names come from the phone network) is escaped in
  the two server-rendered pages and only ever set with ``textContent`` by
  ``panel.js``; the admin app's CSP forbids inline scripts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web

from web.pages import attr, esc
from web.sessions import LoginThrottle, Session, Sessions

# The panel's sessions are the shared kind (``web.sessions``); the name is kept for callers.
PanelSession = Session

logger = structlog.get_logger()

SESSION_COOKIE = "liyi_panel"
PRE_SESSION_COOKIE = "liyi_panel_pre"
COOKIE_PATH = "/panel"
CSRF_HEADER = "X-CSRF-Token"
HOLD_STEP = 30  # hold limits are whole half-minutes
MAX_TEXT = 200  # caller name, purpose, wanted, hold reason, target, promise
MAX_NOTE = 4000
MAX_FOLLOWUP_ID = 64
DEFAULT_PROMISE_DAYS = 3  # "三个工作日后给您答复" when the desk does not say
DEFAULT_MAX_WORKING_DAYS = 30

# Which params each action takes, and which of them must be non-empty.
ACTIONS: dict[str, tuple[str, ...]] = {
    "hold": ("reason", "limit_seconds"),
    "resume": (),
    "transfer": ("target",),
    "consent": (),
    "complete-transfer": (),
    "cancel-transfer": (),
    "accept": (),
    "decline": (),
    "leave": (),
    "note": ("text",),
    "caller-info": ("caller_name", "purpose", "wanted"),
    "end-call": ("ask_more",),
    "promise": ("text", "working_days"),
    "followup-done": ("followup_id",),
    "place-callback": ("followup_id",),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "hold": ("reason", "limit_seconds"),
    "transfer": ("target",),
    "note": ("text",),
    "promise": ("text", "working_days"),
    "followup-done": ("followup_id",),
    "place-callback": ("followup_id",),
}
FIELD_LABELS = {
    "reason": "等待原因 hold reason",
    "limit_seconds": "等待时限 hold limit",
    "target": "转接目标 transfer target",
    "text": "备注 note",
    "caller_name": "来电者姓名 caller name",
    "purpose": "来电目的 purpose",
    "wanted": "要找的人或部门 person or department wanted",
    "ask_more": "先询问 ask first",
    "working_days": "工作日数 working days",
    "followup_id": "跟进编号 follow-up id",
}
# A param whose meaning depends on the action: (action, key) → label.
ACTION_FIELD_LABELS = {("promise", "text"): "承诺内容 promise"}

CSRF_MESSAGE = (
    "安全校验失败：页面已过期或请求来源不明，请刷新页面后重试。"
    "Missing or wrong CSRF token — reload the page and try again."
)
SIGNED_OUT_MESSAGE = "未登录或会话已过期，请重新登录。Not signed in, or the session expired."
WRONG_PASSWORD_MESSAGE = "坐席名或密码错误。Wrong agent name or password."
WRONG_ROLE_MESSAGE = ("此账号不能登录坐席面板，请在 /login 登录管理页面。"
                      "This account cannot use the agent panel; sign in to the admin at /login.")


class Desk(Protocol):
    """What the controller gives the panel: each agent's view, updates, and actions.

    ``view(agent)`` returns::

        {"agent": str,
         "state": "available"|"ringing"|"on-call"|"holding"|"transfer"|"wrap-up"|
                  "callback"|"offline",
         "call": None | {"call_id", "caller_number", "caller_name", "purpose", "wanted",
                         "since" (epoch),
                         "hold": None | {"reason", "limit_seconds", "started_at",
                                         "ends_at" (epoch), "alert": bool},
                         "transfer": None | {"role": "first"|"target", "target",
                                             "stage": "consent"|"ringing"|"consult"|
                                                      "accepted"|"done"|"failed",
                                             "consent": bool},
                         # R8: "asked": the caller heard "请问您还有其他问题吗？" and the
                         # agent is on the line (the panel offers 没有了/还有问题);
                         # other stages (e.g. "thanked") are for information only
                         "closing": None | {"stage": "asked"|"thanked", ...},
                         # R8: a callback this agent places (state "callback")
                         "callback": None | {"stage": "agent-ringing"|"dialing"|"connected"|
                                                      "closing"|"no-answer"|"failed",
                                             "number", "opening_line", "followup_id"}},
         "script": str,                      # the line for the moment
         "hold_limits": [30, 60, ...], "default_hold_limit": 60,
         "departments": [{"name", "number"}], "agents": [{"name", "state"}],
         # R8 follow-ups: the promise form's default and bound, and the agent's list
         # (their own and unowned callbacks; overdue first, then by due date)
         "promise_working_days": 3, "max_working_days": 30,
         "followups": [{"id", "kind": "promise"|"callback", "text", "number",
                        "due" (ISO date), "status": "open"|"overdue"|"done",
                        "owner" ("" = any agent), "queue", "call_id"}]}

    Keys added later are optional: a desk without them gives an empty list
    and the panel's defaults (3 working days, at most 30).

    ``subscribe(agent, on_update)`` calls ``on_update`` (on the event loop's
    thread) with each new view of that agent, or with ``{"kind": "notice",
    "text": ..., "level": "info"|"warn"}`` messages; it returns the function
    that unsubscribes.

    ``act(agent, action, params)`` → ``(ok, message shown to the agent)``;
    actions and their params: ``hold(reason, limit_seconds)``, ``resume``
    (also "the caller has more to ask" after ``end-call`` asked),
    ``transfer(target: agent name or "dept:<name>")``, ``consent``,
    ``complete-transfer``, ``cancel-transfer``, ``accept``, ``decline``,
    ``leave``, ``note(text)``, ``caller-info(caller_name, purpose, wanted)``,
    ``end-call(ask_more: "1"|"0")`` (R8: "1" asks "请问您还有其他问题吗？" first,
    "0" thanks the caller and releases the agent), ``promise(text,
    working_days: "1".."max_working_days")`` (R8: a reply promised during the
    call; the message should name the due date), ``followup-done(followup_id)``
    and ``place-callback(followup_id)`` (ids are ``[0-9a-f-]``; the desk checks
    the follow-up is the agent's or an unowned callback).
    Params arrive as stripped strings already checked by the panel.
    """

    def agent_names(self) -> list[str]: ...

    def view(self, agent: str) -> dict[str, Any]: ...

    def subscribe(
        self, agent: str, on_update: Callable[[dict[str, Any]], None]
    ) -> Callable[[], None]: ...

    async def act(self, agent: str, action: str, params: dict[str, str]) -> tuple[bool, str]: ...


class PanelAccounts(Protocol):
    """The password check the panel needs (``db.accounts.Accounts`` provides it)."""

    async def authenticate(self, name: str, password: str) -> str | None:
        """The account's role if the password is right, else None."""
        ...


# Who may sign in to the panel: agents, and an admin who also takes calls.
PANEL_ROLES = frozenset({"agent", "admin"})


@dataclass(frozen=True, slots=True)
class PanelOptions:
    """Session, lockout and origin policy; the defaults suit a call center's shifts."""

    idle_timeout: float = 30 * 60.0  # no request and no open panel for this long: signed out
    max_age: float = 12 * 3600.0  # a shift; then sign in again
    max_failures: int = 5  # wrong passwords for one name from one address …
    lockout_seconds: float = 30.0  # … lock that pair out this long
    address_max_failures: int = 20  # any names from one address: guessing names
    # Extra origins allowed to open the WebSocket (a reverse proxy's public origin).
    allowed_origins: frozenset[str] = frozenset()
    # Secure cookies: None follows the request (https → Secure); True behind a TLS proxy.
    cookie_secure: bool | None = None
    clock: Callable[[], float] = time.monotonic
    # How often an open WebSocket checks that its session is still alive.
    session_check_interval: float = 5.0


# ------------------------------------------------------------------ the panel's state


class Panel:
    """Everything the panel's handlers share; kept on the app under :data:`PANEL_KEY`."""

    def __init__(self, desk: Desk, accounts: PanelAccounts, *, options: PanelOptions,
                 tz_name: str, title: str) -> None:
        self.desk = desk
        self.accounts = accounts
        self.options = options
        self.sessions = Sessions(options)
        self.throttle = LoginThrottle(options)
        self.tz_name = tz_name
        self.title = title
        # Signs pre-session (sign-in) CSRF tokens; never leaves this process.
        self._key = secrets.token_bytes(32)

    def login_token(self, nonce: str) -> str:
        """The sign-in form's CSRF token for the pre-session cookie ``nonce``."""
        return hmac.new(self._key, b"panel-login:" + nonce.encode(), hashlib.sha256).hexdigest()

    def current(self, request: web.Request, *, touch: bool = True) -> PanelSession | None:
        """The request's live session, if its cookie names one."""
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), touch=touch)


PANEL_KEY = web.AppKey("liyi_panel", Panel)


def add_panel_routes(
    app: web.Application,
    desk: Desk,
    accounts: PanelAccounts,
    *,
    timezone: str | tzinfo = "Asia/Shanghai",
    options: PanelOptions | None = None,
    title: str = "礼仪 liyi",
) -> Panel:
    """Serve the agent panel under ``/panel`` on ``app``; returns the shared state.

    ``app`` should already add the admin app's security headers (its CSP
    forbids inline scripts, which the panel never uses); panel responses
    are never cached.
    """
    tz_name = timezone if isinstance(timezone, str) else str(getattr(timezone, "key", "") or "")
    panel = Panel(desk, accounts, options=options or PanelOptions(), tz_name=tz_name,
                  title=title)
    app[PANEL_KEY] = panel
    app.router.add_get("/panel/login", login_form)
    app.router.add_post("/panel/login", login)
    app.router.add_post("/panel/logout", logout)
    app.router.add_get("/panel", panel_page)
    app.router.add_post("/panel/action", action)
    app.router.add_get("/panel/ws", panel_ws)
    app.on_response_prepare.append(_no_store)
    app.on_shutdown.append(_close_sockets)
    return panel


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == COOKIE_PATH or request.path.startswith(COOKIE_PATH + "/"):
        response.headers["Cache-Control"] = "no-store"


async def _close_sockets(app: web.Application) -> None:
    """On shutdown, close open panels so the server does not wait for them."""
    panel = app[PANEL_KEY]
    for ws in panel.sessions.sockets():
        await ws.close(code=1001, message=b"server shutdown")


# ------------------------------------------------------------------ helpers


def _same(given: object, expected: str) -> bool:
    """Constant-time comparison of a submitted token with the expected one."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    secure = request.app[PANEL_KEY].options.cookie_secure
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure if secure is None else secure)


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(
        dict(data), status=status,
        dumps=partial(json.dumps, ensure_ascii=False, default=str),
    )


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def _redirect(location: str) -> web.Response:
    """A 303 as a response object, so cookies can be set on it."""
    return web.Response(status=303, headers={"Location": location})


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _address(request: web.Request) -> str:
    """The peer address (not X-Forwarded-For: a client could forge it to dodge the lockout)."""
    return request.remote or "unknown"


def _wants_json(request: web.Request) -> bool:
    return (request.content_type == "application/json"
            or "application/json" in request.headers.get("Accept", ""))


def _own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def _origin_ok(request: web.Request, panel: Panel) -> bool:
    """The WebSocket's Origin is this server's own (or one configured as ours)."""
    origin = request.headers.get("Origin", "").strip().lower()
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    allowed = {_own_origin(request)} | {o.lower().rstrip("/") for o in
                                        panel.options.allowed_origins}
    return origin.rstrip("/") in allowed


# ------------------------------------------------------------------ sign-in / sign-out


async def login_form(request: web.Request) -> web.StreamResponse:
    """``GET /panel/login``: the form, with a token bound to a pre-session cookie."""
    panel = request.app[PANEL_KEY]
    if panel.current(request) is not None:
        raise web.HTTPSeeOther("/panel")
    return _login_response(request, panel)


def _login_response(request: web.Request, panel: Panel, *, status: int = 200,
                    message: str = "", name: str = "") -> web.Response:
    nonce = request.cookies.get(PRE_SESSION_COOKIE, "")
    if not (20 <= len(nonce) <= 100 and nonce.replace("-", "").replace("_", "").isalnum()):
        nonce = secrets.token_urlsafe(24)
    response = _html(login_html(title=panel.title, csrf=panel.login_token(nonce),
                                message=message, name=name), status)
    _set_cookie(request, response, PRE_SESSION_COOKIE, nonce)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /panel/login``: check CSRF, lockout and password; open a session."""
    panel = request.app[PANEL_KEY]
    form = await request.post()
    name = str(form.get("name", "")).strip()[:200]
    password = str(form.get("password", ""))
    address = _address(request)
    nonce = request.cookies.get(PRE_SESSION_COOKIE, "")
    if not nonce or not _same(form.get("csrf"), panel.login_token(nonce)):
        logger.warning("panel.csrf_refused", path=request.path, address=address)
        return _login_response(request, panel, status=403, message=CSRF_MESSAGE, name=name)
    wait = panel.throttle.locked_for(name, address)
    if wait > 0:
        logger.warning("panel.login_locked", agent=name, address=address, seconds=wait)
        return _login_response(request, panel, status=429, message=_lockout_message(wait),
                               name=name)
    try:
        role = await panel.accounts.authenticate(name, password)
    except Exception as exc:  # noqa: BLE001 - an outage is not a wrong password
        logger.warning("panel.accounts_unavailable", agent=name, error=repr(exc))
        return _login_response(
            request, panel, status=503, name=name,
            message="暂时无法验证密码，请稍后再试。Passwords cannot be checked right now; "
                    "try again shortly.",
        )
    known = name in panel.desk.agent_names()
    if role is not None and role not in PANEL_ROLES:
        # The password was right: no lock-out, but a supervisor has no calls to take.
        logger.warning("panel.login_refused", agent=name, address=address, role=role)
        return _login_response(request, panel, status=403, name=name,
                               message=WRONG_ROLE_MESSAGE)
    if not (role is not None and known):
        locked = panel.throttle.failed(name, address)
        logger.warning("panel.login_failed", agent=name, address=address,
                       reason="wrong password" if known else "unknown agent", locked=locked)
        message = WRONG_PASSWORD_MESSAGE
        if locked:
            message += " " + _lockout_message(locked)
        return _login_response(request, panel, status=401, message=message, name=name)
    panel.throttle.succeeded(name, address)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await _end_session(panel, old)
    session = panel.sessions.open(name, role)
    logger.info("panel.login", agent=name, address=address, role=role)
    await _audit_sign_in(panel, name, role, address)
    response = _redirect("/panel")
    _set_cookie(request, response, SESSION_COOKIE, session.sid)
    response.del_cookie(PRE_SESSION_COOKIE, path=COOKIE_PATH)
    return response


async def _audit_sign_in(panel: Panel, name: str, role: str, address: str) -> None:
    """Put the sign-in in the audit trail (``/audit``), if the accounts keep one.

    A failed write is logged and costs nothing else: the agent is signed in.
    """
    record = getattr(panel.accounts, "record", None)
    if record is None:
        return
    try:
        await record(actor=name, action="panel-sign-in", detail=f"{name} ({role})",
                     address=address)
    except Exception as exc:  # noqa: BLE001 - the trail must not cost the agent the panel
        logger.warning("panel.audit_failed", agent=name, error=repr(exc))


def _lockout_message(seconds: float) -> str:
    n = max(1, math.ceil(seconds))
    return (f"登录失败次数过多，请 {n} 秒后再试。"
            f"Too many failed sign-ins: try again in {n} s.")


async def _end_session(panel: Panel, sid: str) -> None:
    session = panel.sessions.close(sid)
    if session is None:
        return
    for ws in list(session.sockets):
        await ws.close(code=4001, message=b"signed out")


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /panel/logout``: end the session (CSRF-checked) and go to the sign-in form."""
    panel = request.app[PANEL_KEY]
    session = panel.current(request)
    if session is None:
        raise web.HTTPSeeOther("/panel/login")
    form = await request.post()
    token = request.headers.get(CSRF_HEADER) or form.get("csrf")
    if not _same(token, session.csrf):
        logger.warning("panel.csrf_refused", path=request.path, agent=session.agent)
        return _html(message_html(title=panel.title, heading="403 · 安全校验失败 CSRF check failed",
                                  message=CSRF_MESSAGE), 403)
    await _end_session(panel, session.sid)
    logger.info("panel.logout", agent=session.agent)
    response = _redirect("/panel/login")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# ------------------------------------------------------------------ the page


async def panel_page(request: web.Request) -> web.StreamResponse:
    """``GET /panel``: the page shell with the session's CSRF token; the view comes by WS."""
    panel = request.app[PANEL_KEY]
    session = panel.current(request)
    if session is None:
        raise web.HTTPSeeOther("/panel/login")
    flash, session.flash = session.flash, None
    return _html(panel_html(title=panel.title, agent=session.agent, csrf=session.csrf,
                            tz_name=panel.tz_name, flash=flash or ""))


# ------------------------------------------------------------------ actions


class _Refused(Exception):
    """A request the panel refuses before it reaches the desk; the message is for the agent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def action(request: web.Request) -> web.StreamResponse:
    """``POST /panel/action``: check session and CSRF, check params, call ``desk.act``."""
    panel = request.app[PANEL_KEY]
    as_json = _wants_json(request)
    session = panel.current(request)
    if session is None:
        if as_json:
            return _json({"ok": False, "message": SIGNED_OUT_MESSAGE, "login": "/panel/login"},
                         401)
        raise web.HTTPSeeOther("/panel/login")
    try:
        name, raw, token = await _read_action(request)
        if not _same(request.headers.get(CSRF_HEADER) or token, session.csrf):
            logger.warning("panel.csrf_refused", path=request.path, agent=session.agent)
            raise _Refused(CSRF_MESSAGE, 403)
        params = _check_params(name, raw, session.agent, panel.desk)
    except _Refused as refused:
        return _action_reply(request, session, as_json, False, refused.message, refused.status)
    try:
        ok, message = await panel.desk.act(session.agent, name, params)
    except Exception as exc:  # the agent gets a calm answer, the log the details
        logger.exception("panel.action_failed", agent=session.agent, action=name,
                         error=repr(exc))
        return _action_reply(request, session, as_json, False,
                             "操作失败，请重试。The action failed; please try again.", 500)
    logger.info("panel.action", agent=session.agent, action=name, ok=ok,
                params=sorted(params))
    return _action_reply(request, session, as_json, bool(ok), str(message or ""),
                         200 if ok else 409)


def _action_reply(request: web.Request, session: PanelSession, as_json: bool, ok: bool,
                  message: str, status: int) -> web.StreamResponse:
    if as_json:
        return _json({"ok": ok, "message": message}, status)
    if status == 403:
        return _html(message_html(title=request.app[PANEL_KEY].title,
                                  heading="403 · 安全校验失败 CSRF check failed",
                                  message=message), 403)
    session.flash = message
    raise web.HTTPSeeOther("/panel")


async def _read_action(request: web.Request) -> tuple[str, dict[str, Any], object]:
    """(action, raw params, csrf token) from a JSON body or a form."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise _Refused("请求格式有误 · the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refused("请求格式有误 · the request body must be a JSON object")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise _Refused("请求格式有误 · params must be an object")
        return str(body.get("action") or ""), params, body.get("csrf")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    name = fields.pop("action", "")
    token = fields.pop("csrf", None)
    if name == "hold" and not fields.get("limit_seconds"):
        choice = fields.get("limit_choice", "")
        fields["limit_seconds"] = fields.get("limit_custom", "") if choice == "custom" else choice
    return name, fields, token


def _check_params(name: str, raw: Mapping[str, Any], agent: str, desk: Desk) -> dict[str, str]:
    """The params ``desk.act`` gets: only the action's own, stripped, length-checked, valid.

    Fields an action does not take are dropped (a form sends all its inputs);
    an ``agent`` field in particular never reaches the desk — the session says
    who is acting.
    """
    if name not in ACTIONS:
        raise _Refused(f"未知操作 · unknown action {name[:40]!r}")
    params: dict[str, str] = {}
    for key in ACTIONS[name]:
        value = raw.get(key)
        if value is None:
            continue
        label = _label(name, key)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Refused(f"{label} 格式有误 · must be text")
        text = str(value).strip()
        limit = MAX_NOTE if (name, key) == ("note", "text") else MAX_TEXT
        if len(text) > limit:
            raise _Refused(f"{label} 太长（最多 {limit} 字）· too long (at most {limit})")
        params[key] = text
    for key in REQUIRED.get(name, ()):
        if not params.get(key):
            raise _Refused(f"请填写{_label(name, key)} · {key} is required")
    if name == "hold":
        params["limit_seconds"] = str(_check_hold_limit(params["limit_seconds"],
                                                        _hold_maximum(desk, agent)))
    if name == "transfer":
        _check_target(params["target"], agent, desk)
    if name == "end-call":
        params["ask_more"] = _check_ask_more(params.get("ask_more", ""))
    if name == "promise":
        params["working_days"] = str(_check_working_days(params["working_days"],
                                                         _working_days_maximum(desk, agent)))
    if "followup_id" in params:
        _check_followup_id(params["followup_id"])
    return params


def _label(action_name: str, key: str) -> str:
    return ACTION_FIELD_LABELS.get((action_name, key), FIELD_LABELS[key])


def _check_ask_more(text: str) -> str:
    """R8: "1" asks "请问您还有其他问题吗？" first; "0" (or a form's unticked box) closes."""
    if text in ("", "0"):
        return "0"
    if text in ("1", "on"):  # "on": a checkbox without a value attribute
        return "1"
    raise _Refused("先询问 须为 0 或 1 · ask_more must be 0 or 1")


def _working_days_maximum(desk: Desk, agent: str) -> int:
    try:
        return int(desk.view(agent).get("max_working_days") or DEFAULT_MAX_WORKING_DAYS)
    except Exception:  # noqa: BLE001 - the desk will judge the days itself
        return DEFAULT_MAX_WORKING_DAYS


def _check_working_days(text: str, maximum: int) -> int:
    """R8: a promise falls due a whole number of working days on, within the configured bound."""
    days = int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else -1
    if not 1 <= days <= maximum:
        raise _Refused(f"工作日数须为 1 到 {maximum} 的整数。"
                       f"Working days must be a whole number from 1 to {maximum}.")
    return days


def _check_followup_id(text: str) -> None:
    """Follow-up ids are hex with dashes (a uuid or its prefix): nothing else reaches the store."""
    if len(text) > MAX_FOLLOWUP_ID or not all(ch in "0123456789abcdef-" for ch in text):
        raise _Refused("跟进编号格式有误 · the follow-up id must be [0-9a-f-]")


def _hold_maximum(desk: Desk, agent: str) -> int:
    try:
        limits = [int(x) for x in desk.view(agent).get("hold_limits") or []]
    except Exception:  # noqa: BLE001 - the desk will judge the limit itself
        limits = []
    return max(limits, default=600)


def _check_hold_limit(text: str, maximum: int) -> int:
    """R4: a hold has a limit, a whole number of half-minutes up to the configured maximum."""
    seconds = int(text) if text.isascii() and text.isdigit() else -1
    if seconds <= 0 or seconds % HOLD_STEP or seconds > maximum:
        raise _Refused(f"等待时限须为 {HOLD_STEP} 秒的整数倍，且不超过 {maximum} 秒。"
                       f"The hold limit must be a multiple of {HOLD_STEP} s, at most {maximum} s.")
    return seconds


def _check_target(target: str, agent: str, desk: Desk) -> None:
    """A transfer goes to another agent or a department the panel offered."""
    if target == agent:
        raise _Refused("不能转接给自己 · you cannot transfer to yourself")
    try:
        view = desk.view(agent)
    except Exception:  # noqa: BLE001 - the desk will judge the target itself
        return
    if target.startswith("dept:"):
        names = {str(d.get("name")) for d in view.get("departments") or []}
        if target[5:] not in names:
            raise _Refused(f"没有这个部门 · no department {target[5:]!r}")
    else:
        names = {str(a.get("name")) for a in view.get("agents") or []}
        if target not in names:
            raise _Refused(f"没有这个坐席 · no agent {target!r}")


# ------------------------------------------------------------------ WebSocket


class _Outbox:
    """What is waiting to be sent to one panel: the newest view and any notices.

    Views replace each other (only the latest matters, so a slow browser
    cannot make the queue grow); notices are kept, up to a bound.
    """

    def __init__(self) -> None:
        self.view: dict[str, Any] | None = None
        self.notices: deque[dict[str, Any]] = deque(maxlen=50)
        self.ready = asyncio.Event()

    def put(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "notice":
            self.notices.append(message)
        else:
            self.view = message
        self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.view is not None:
            out.append({"kind": "view", "view": self.view})
        out.extend(self.notices)
        self.view = None
        self.notices.clear()
        self.ready.clear()
        return out


async def panel_ws(request: web.Request) -> web.StreamResponse:
    """``GET /panel/ws``: push the agent's view now and on every change."""
    panel = request.app[PANEL_KEY]
    if not _origin_ok(request, panel):
        logger.warning("panel.ws_refused", reason="origin", origin=request.headers.get("Origin"))
        return _json({"ok": False, "message": "foreign origin"}, 403)
    session = panel.current(request)
    if session is None:
        logger.info("panel.ws_refused", reason="no session")
        return _json({"ok": False, "message": SIGNED_OUT_MESSAGE}, 401)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
    await ws.prepare(request)
    session.sockets.add(ws)
    outbox = _Outbox()
    unsubscribe = panel.desk.subscribe(session.agent, outbox.put)
    log = logger.bind(agent=session.agent)
    log.info("panel.connected")
    try:
        try:
            outbox.put(panel.desk.view(session.agent))
        except Exception as exc:  # noqa: BLE001 - the next update will bring a view
            log.warning("panel.view_failed", error=repr(exc))
        pump = asyncio.create_task(_pump(ws, outbox, panel, session))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await ws.send_str(_dumps({"kind": "pong", "server_time": time.time()}))
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
    finally:
        unsubscribe()
        session.sockets.discard(ws)
        panel.sessions.get(session.sid)  # leaving the page counts as activity
        log.info("panel.disconnected")
    return ws


async def _pump(ws: web.WebSocketResponse, outbox: _Outbox, panel: Panel,
                session: PanelSession) -> None:
    """Send what the outbox holds; close the socket when the session ends."""
    while not ws.closed:
        try:
            await asyncio.wait_for(outbox.ready.wait(), panel.options.session_check_interval)
        except TimeoutError:
            pass
        if not panel.sessions.alive(session):
            await ws.close(code=4001, message=b"session expired")
            return
        for message in outbox.take():
            await ws.send_str(_dumps({**message, "server_time": time.time()}))


# ------------------------------------------------------------------ HTML


def _shell(title: str, page_title: str, body: str, *, scripts: bool, body_class: str) -> str:
    script = '<script src="/static/panel.js" defer></script>\n' if scripts else ""
    return (
        "<!doctype html>\n"
        '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(page_title)} · {esc(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request (a 404 in the console)
        '<link rel="stylesheet" href="/static/style.css">\n'
        '<link rel="stylesheet" href="/static/panel.css">\n'
        f"{script}"
        f'</head>\n<body class="{attr(body_class)}">\n{body}\n</body>\n</html>\n'
    )


def login_html(*, title: str, csrf: str, message: str = "", name: str = "") -> str:
    """The sign-in form; ``message`` (an error) and ``name`` are escaped here."""
    error = f'<p class="login-error" role="alert" id="login-error">{esc(message)}</p>' \
        if message else ""
    body = (
        '<main class="login-wrap"><form class="login card" method="post" action="/panel/login">'
        f'<h1>{esc(title)}</h1><h2>坐席登录 <span class="en">Agent sign-in</span></h2>'
        f"{error}"
        f'<input type="hidden" name="csrf" value="{attr(csrf)}">'
        '<label>坐席名 <span class="en">Agent name</span>'
        f'<input name="name" id="name" value="{attr(name)}" autocomplete="username" '
        'maxlength="200" required autofocus></label>'
        '<label>密码 <span class="en">Password</span>'
        '<input name="password" id="password" type="password" '
        'autocomplete="current-password" maxlength="1024" required></label>'
        '<button type="submit" class="primary" id="login-submit">登录 Sign in</button>'
        "</form></main>"
    )
    return _shell(title, "坐席登录", body, scripts=False, body_class="panel-login")


def message_html(*, title: str, heading: str, message: str) -> str:
    """A plain message page (e.g. a refused sign-out), escaped here."""
    body = (
        f'<main class="login-wrap"><section class="login card"><h2>{esc(heading)}</h2>'
        f'<p class="login-error" role="alert">{esc(message)}</p>'
        '<p><a class="btn" href="/panel">返回坐席面板 back to the panel</a></p></section></main>'
    )
    return _shell(title, heading, body, scripts=False, body_class="panel-login")


def _button(action_name: str, label: str, hint: str, *, cls: str = "",
            form: str = "", button_id: str = "") -> str:
    """A submit button for one action; its id is ``btn-<action>`` unless two share an action."""
    form_attr = f' form="{attr(form)}"' if form else ""
    return (
        f'<button type="submit" name="action" value="{attr(action_name)}" '
        f'id="{attr(button_id or "btn-" + action_name)}" class="{attr(cls)}" disabled{form_attr}>'
        f'{esc(label)}<span class="en">{esc(hint)}</span></button>'
    )


def panel_html(*, title: str, agent: str, csrf: str, tz_name: str, flash: str = "") -> str:
    """The panel page: a skeleton that ``panel.js`` fills from the WebSocket.

    Each form posts to ``/panel/action`` with the CSRF token, so the markup
    says exactly what each button does; the script sends the same fields as JSON.
    """
    token = f'<input type="hidden" name="csrf" value="{attr(csrf)}">'
    flash_html = f'<li class="msg">{esc(flash)}</li>' if flash else ""
    body = f"""<header class="top panel-top">
<span class="brand">{esc(title)}</span><span class="sub">坐席面板 · Agent panel</span>
<span class="who">坐席 Agent: <strong id="agent-name">{esc(agent)}</strong></span>
<span id="conn" class="conn connecting" role="status">连接中 connecting…</span>
<form method="post" action="/panel/logout" class="logout">{token}
<button type="submit" id="btn-logout">退出 Sign out</button></form>
</header>
<noscript><p class="notice">坐席面板需要启用 JavaScript · the panel needs JavaScript</p></noscript>
<main id="panel" class="panel-main" data-tz="{attr(tz_name)}" data-agent="{attr(agent)}"
  data-csrf="{attr(csrf)}">
<div class="col-left">
<section class="card status-card">
  <div id="state-badge" class="state-badge" data-state="offline">连接中
    <span class="en">connecting</span></div>
  <div class="caller">
    <div class="label">来电号码 <span class="en">Caller number</span></div>
    <div id="caller-number" class="caller-number">—</div>
    <div class="caller-meta"><span id="caller-name-shown"></span>
      <span id="call-since" class="muted"></span></div>
  </div>
</section>
<section class="card script-card" id="script-card" aria-live="polite">
  <h2>话术 <span class="en">Say this</span></h2>
  <p id="script" class="script-line">—</p>
  <p id="script-hint" class="script-hint" hidden></p>
</section>
<section class="card closing-card" id="closing-box" hidden aria-live="polite">
  <h2>结束通话 <span class="en">Closing</span> <span class="rule">R8</span></h2>
  <p class="closing-question">“请问您还有其他问题吗？”</p>
  <p class="hint">客户已听到询问，您仍在通话中 <span class="en">— the caller heard the
    question; you are still on the line</span></p>
  <form method="post" action="/panel/action" class="actions" id="closing-form">{token}
    <input type="hidden" name="ask_more" value="0">
    {_button("end-call", "没有了 — 结束", "Nothing more: thank and end", cls="primary",
             button_id="btn-end-call-confirm")}
    {_button("resume", "还有问题 — 继续", "More questions: go on", button_id="btn-closing-resume")}
  </form>
</section>
<section class="card callback-card" id="callback-box" hidden aria-live="polite">
  <h2>回电 <span class="en">Callback</span> <span class="rule">R8</span></h2>
  <p class="callback-lead">请先报公司名称和您的姓名 <span class="en">— say the company and
    your name first; do not ask theirs first</span></p>
  <p id="callback-opening" class="callback-opening">—</p>
  <p>客户号码 <span class="en">number</span>: <strong id="callback-number">—</strong></p>
  <p id="callback-stage" class="stage"></p>
</section>
<section class="card hold-card" id="hold-box" hidden>
  <h2>等待中 <span class="en">Caller on hold</span></h2>
  <div class="hold-row"><div id="hold-countdown" class="countdown">0:00</div>
  <div class="hold-facts">
    <div>时限 <span class="en">limit</span>: <strong id="hold-limit-shown"></strong></div>
    <div>原因 <span class="en">reason</span>: <strong id="hold-reason-shown"></strong></div>
  </div></div>
  <p id="hold-alert" class="alert" role="alert" hidden></p>
</section>
<section class="card consult-card" id="consult-box" hidden>
  <h2>转接来电 <span class="en">A transfer for you</span></h2>
  <dl class="consult">
    <dt>来电者 <span class="en">Caller</span></dt><dd id="consult-name"></dd>
    <dt>来电目的 <span class="en">Purpose</span></dt><dd id="consult-purpose"></dd>
    <dt>要找 <span class="en">Wanted</span></dt><dd id="consult-wanted"></dd>
  </dl>
  <p id="consult-stage" class="stage"></p>
  <form method="post" action="/panel/action" class="actions" id="consult-form">{token}
    {_button("accept", "接受", "Accept", cls="primary")}
    {_button("decline", "拒绝", "Decline", cls="danger")}
  </form>
</section>
<section class="card transfer-card" id="transfer-box" hidden>
  <h2>转接进度 <span class="en">Transfer</span></h2>
  <p>目标 <span class="en">target</span>: <strong id="transfer-target-shown"></strong></p>
  <p id="transfer-stage" class="stage"></p>
  <p>客户同意 <span class="en">caller consent</span>: <strong id="transfer-consent"></strong></p>
</section>
<section class="card followups-card" id="followups-box">
  <h2>跟进事项 <span class="en">Follow-ups</span> <span class="rule">R8</span>
    <span id="followups-count" class="count"></span></h2>
  <p id="followups-empty" class="muted">暂无待办跟进 <span class="en">— nothing to follow up</span></p>
  <ul id="followups" class="followups"></ul>
</section>
<section class="card">
  <h2>消息 <span class="en">Messages</span></h2>
  <ul id="messages" class="messages" aria-live="polite">{flash_html}</ul>
</section>
</div>
<div class="col-right">
<form method="post" action="/panel/action" class="card" id="info-form">{token}
  <h2>来电信息 <span class="en">Caller details</span> <span class="rule">R3</span></h2>
  <label>来电者姓名 <span class="en">Caller name</span>
    <input name="caller_name" id="caller-name" maxlength="200" autocomplete="off"></label>
  <label>来电目的 <span class="en">Purpose</span>
    <input name="purpose" id="purpose" maxlength="200" autocomplete="off"></label>
  <label>要找的人或部门 <span class="en">Person or department wanted</span>
    <input name="wanted" id="wanted" maxlength="200" autocomplete="off" list="wanted-list"></label>
  <datalist id="wanted-list"></datalist>
  <div class="actions">{_button("caller-info", "保存", "Save", cls="primary")}</div>
</form>
<form method="post" action="/panel/action" class="card" id="hold-form">{token}
  <h2>等待 <span class="en">Hold</span> <span class="rule">R4 · R7</span></h2>
  <p class="hint">先说明原因并征得客户同意 <span class="en">— say why and ask first:</span>
    <span id="hold-ask" class="ask"></span></p>
  <label>等待原因 <span class="en">Reason</span>
    <input name="reason" id="hold-reason" maxlength="200" list="hold-reasons"
      value="查询相关信息" autocomplete="off"></label>
  <datalist id="hold-reasons"><option value="查询相关信息"><option value="请示主管">
    <option value="核对资料"></datalist>
  <fieldset class="limits"><legend>等待时限 <span class="en">Limit</span></legend>
    <span id="hold-limits"></span>
    <label class="custom"><input type="radio" name="limit_choice" value="custom"
      id="limit-custom-choice">
      自定义 <span class="en">custom</span>
      <input type="number" name="limit_custom" id="limit-custom" min="30" step="30" value="90">
      秒 <span id="limit-max" class="muted"></span></label>
  </fieldset>
  <div class="actions">{_button("hold", "保持等待", "Hold", cls="primary")}
    {_button("resume", "恢复通话", "Resume")}</div>
</form>
<form method="post" action="/panel/action" class="card" id="transfer-form">{token}
  <h2>转接 <span class="en">Transfer</span> <span class="rule">R6</span></h2>
  <label>转接到 <span class="en">Transfer to</span>
    <select name="target" id="transfer-target"></select></label>
  <div class="actions">
    {_button("transfer", "转接", "Transfer", cls="primary")}
    {_button("consent", "客户已同意", "Caller agreed")}
    {_button("complete-transfer", "完成转接", "Complete", cls="primary")}
    {_button("cancel-transfer", "取消转接", "Cancel", cls="danger")}
  </div>
</form>
<form method="post" action="/panel/action" class="card" id="note-form">{token}
  <h2>备注 <span class="en">Note</span> <span class="rule">R10</span></h2>
  <textarea name="text" id="note-text" rows="3" maxlength="4000"
    placeholder="客户所说及要求 · what the caller said and asked for"></textarea>
  <div class="actions">{_button("note", "添加备注", "Add note")}</div>
</form>
<form method="post" action="/panel/action" class="card" id="promise-form">{token}
  <h2>承诺回复 <span class="en">Promise a reply</span> <span class="rule">R8</span></h2>
  <p class="hint">先致歉并告知答复时间 <span class="en">— apologise and give a reply time:</span>
    <span id="promise-ask" class="ask">“不好意思，麻烦您耐心等待一下，三个工作日后我们会给您答复。”</span></p>
  <label>承诺内容 <span class="en">Promise</span>
    <input name="text" id="promise-text" maxlength="200" autocomplete="off"
      value="三个工作日后给您答复"></label>
  <label>工作日 <span class="en">Working days</span>
    <input type="number" name="working_days" id="promise-days" min="1" max="30" step="1"
      value="3"></label>
  <div class="actions">{_button("promise", "承诺回复", "Record promise", cls="primary")}</div>
  <p id="promise-result" class="promise-result" role="status" hidden></p>
</form>
<form method="post" action="/panel/action" class="card" id="end-form">{token}
  <h2>结束通话 <span class="en">End the call</span> <span class="rule">R8 · R9</span></h2>
  <label class="check"><input type="checkbox" name="ask_more" id="end-ask-more" value="1"
    checked> 先询问「请问您还有其他问题吗？」 <span class="en">ask first</span></label>
  <div class="actions">{_button("end-call", "结束通话", "End call", cls="danger")}</div>
  <p class="hint">客户听到「感谢您的来电，欢迎您随时来电。」，线路保持到客户挂机
    <span class="en">— the caller hears the thanks; the line stays open until they hang up</span></p>
</form>
<form method="post" action="/panel/action" class="card" id="leave-form">{token}
  <div class="actions">{_button("leave", "离开通话", "Leave call", cls="danger")}</div>
  <p class="hint">客户会听到结束语，线路保持到客户挂机 <span class="en">— the caller hears the
    closing words; the line stays open until they hang up (R8, R9)</span></p>
</form>
</div>
</main>"""
    return _shell(title, f"坐席面板 {agent}", body, scripts=True, body_class="panel-page")
