"""The admin web pages: read-only views of the call log, served by the controller.

Every route needs a signed-in session of a role ``web.auth.POLICY`` allows
(admin and supervisor read these pages; accounts and the audit trail are
``web.users``; sign-in is ``web.auth``).

Routes::

    GET /                  live calls and agents (if a LiveView is given), recent calls
    GET /calls/{id}        one call (id or unique prefix); ``?events=1`` shows raw events
    GET /followups         follow-ups (R8), overdue first; ``?all=1`` with done, ``?owner=``
    GET /api/followups     the same as JSON (each with its ``status`` today)
    GET /report            compliance rates (R12) ``?by=agent|queue|day`` over ``?days=N``
    GET /api/report        the same as JSON
    GET /api/calls         JSON list, ``?limit=&offset=``
    GET /api/calls/{id}    JSON record with timeline and compliance
    GET /healthz           ``{"ok": true}``
    GET /static/...        style.css, refresh.js, panel.css, panel.js
    /panel...              the agent panel (``web.panel``), when a desk and accounts are given

Why read-only: the call log is R10 evidence; a page that could edit it would
make it worthless. Why a 503 page instead of an exception: the pages run in
the controller's process, and a database outage (which the store rides out
by queueing) must neither crash it nor show a stack trace to an admin.

Every value from the call log is escaped where it is put into HTML
(``web.pages``), and a Content-Security-Policy that forbids inline scripts
backs that up: a caller name is input from the phone network.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from callflow.compliance import rates
from db.records import (
    AmbiguousCallId,
    CallRecord,
    CallSummary,
    ComplianceMark,
    FollowUp,
    TimelineEntry,
)
from web import pages
from web.auth import AuthOptions, auth_middleware, setup_auth
from web.panel import Desk, PanelOptions, add_panel_routes
from web.users import UserAccounts, add_user_routes

logger = structlog.get_logger()

STATIC_DIR = Path(__file__).parent / "static"
PAGE_SIZE = 20
API_DEFAULT_LIMIT = 20
API_MAX_LIMIT = 200
# Offsets past this are surely a typo or a probe; refuse them rather than scan.
MAX_OFFSET = 10_000_000
# The compliance report (R12): its groupings, as ``liyi report --by`` takes them.
REPORT_GROUPINGS = ("agent", "queue", "day")
REPORT_DEFAULT_DAYS = 30
REPORT_MAX_DAYS = 3660
# The report reads at most this many recent calls (like ``liyi report --limit``), so that
# a page view cannot turn into a scan of years of calls; the page says when it stopped.
REPORT_MAX_CALLS = 10_000
REPORT_CHUNK = 1000

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

T = TypeVar("T")


class CallLog(Protocol):
    """The reads the pages need from the call log (``db.CallStore`` provides them)."""

    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]: ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...


class FollowUpLog(Protocol):
    """The read the follow-ups page needs (``db.CallStore`` provides it)."""

    async def list_followups(
        self, *, owner: str | None = None, include_done: bool = False, today: date
    ) -> list[FollowUp]: ...


class LiveView(Protocol):
    """The controller's live state, for the "now" panel.

    ``live_calls``: ``[{"call_id", "caller_number", "state", "agent", "since"}]``
    (``since``: epoch seconds of the first ring, or a datetime).
    ``agents``: ``[{"name", "endpoint", "registered", "device_state", "engaged"}]``.
    """

    def live_calls(self) -> list[dict[str, Any]]: ...

    def agents(self) -> list[dict[str, Any]]: ...


class _Config:
    """What the handlers share; kept on the app under one key."""

    def __init__(self, store: CallLog, live: LiveView | None, title: str, tz: tzinfo,
                 now: Callable[[], datetime], report_max_calls: int = REPORT_MAX_CALLS) -> None:
        self.store = store
        self.live = live
        self.title = title
        self.tz = tz
        self.now = now
        self.report_max_calls = report_max_calls


CONFIG_KEY = web.AppKey("liyi_web_config", _Config)


class _StoreUnavailable(Exception):
    """The call log could not answer; shown as 503."""


class _NotFound(Exception):
    """No such call; shown as 404."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id)
        self.call_id = call_id


class _BadRequest(Exception):
    """A query parameter that is not what the route takes; shown as 400."""


def create_app(
    store: CallLog,
    *,
    live: LiveView | None = None,
    title: str = "礼仪 liyi",
    timezone: str | tzinfo = "Asia/Shanghai",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    desk: Desk | None = None,
    accounts: UserAccounts | None = None,
    panel_options: PanelOptions | None = None,
    report_max_calls: int = REPORT_MAX_CALLS,
    auth_options: AuthOptions | None = None,
) -> web.Application:
    """The admin web app over ``store``; times are shown in ``timezone`` (the center's clock).

    ``report_max_calls`` caps how many recent calls one view of ``/report`` reads.
    ``accounts`` (``db.accounts.Accounts``) is who may sign in: every page
    and API but ``/login``, ``/healthz`` and ``/static`` needs a session of
    a role ``web.auth.POLICY`` allows (without accounts nobody can sign in,
    so every admin page refuses). With a ``desk`` too (the controller's live
    calls per agent) the agent panel is served under ``/panel``, on the same
    accounts.
    """
    tz = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    app = web.Application(middlewares=[_errors_middleware, auth_middleware])
    if report_max_calls < 1:
        raise ValueError(f"report_max_calls must be at least 1, got {report_max_calls}")
    app[CONFIG_KEY] = _Config(store, live, title, tz, now, report_max_calls)
    app.router.add_get("/", index)
    app.router.add_get("/calls/{call_id}", call_detail)
    app.router.add_get("/api/calls", api_calls)
    app.router.add_get("/api/calls/{call_id}", api_call)
    app.router.add_get("/followups", followups)
    app.router.add_get("/api/followups", api_followups)
    app.router.add_get("/report", report)
    app.router.add_get("/api/report", api_report)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    setup_auth(app, accounts, options=auth_options, title=title, timezone=tz)
    add_user_routes(app)
    app.on_response_prepare.append(_security_headers)
    if desk is not None and accounts is not None:
        add_panel_routes(app, desk, accounts, timezone=timezone, options=panel_options,
                         title=title)
    return app


# ------------------------------------------------------------------ plumbing


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=partial(json.dumps, ensure_ascii=False, default=_json_default)
    )


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _html(page: pages.Page) -> web.Response:
    response = web.Response(text=page.html, status=page.status, content_type="text/html",
                            charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn the handlers' typed failures (and unknown routes) into 4xx/503 pages or JSON."""
    cfg = request.app[CONFIG_KEY]
    api = _is_api(request)
    try:
        return await handler(request)
    except _StoreUnavailable:
        if api:
            return _json({"error": "call log unavailable"}, 503)
        return _html(pages.error_page(
            site_title=cfg.title, status=503, heading="通话记录暂不可用 · call log unavailable",
            message="数据库暂时无法访问，页面会自动重试。The call log database cannot be read "
                    "right now; this page retries every 5 seconds.",
            refresh=True,
        ))
    except _NotFound as exc:
        if api:
            return _json({"error": "no such call", "call_id": exc.call_id}, 404)
        return _html(pages.error_page(
            site_title=cfg.title, status=404, heading="找不到该通话 · call not found",
            message=f"没有编号为 “{exc.call_id}” 的通话。No call has the id {exc.call_id!r}.",
        ))
    except AmbiguousCallId as exc:
        if api:
            return _json({"error": "ambiguous call id", "call_id": exc.prefix,
                          "matches": exc.matches}, 409)
        return _html(pages.error_page(
            site_title=cfg.title, status=409, heading="编号不唯一 · ambiguous call id",
            message=f"“{exc.prefix}” 对应多个通话，请输入更长的编号。"
                    f"The prefix {exc.prefix!r} matches several calls:",
            links=[(pages.call_href(m), m) for m in exc.matches],
        ))
    except _BadRequest as exc:
        if api:
            return _json({"error": str(exc)}, 400)
        return _html(pages.error_page(
            site_title=cfg.title, status=400, heading="请求有误 · bad request", message=str(exc),
        ))
    except web.HTTPNotFound:
        if api:
            return _json({"error": "not found"}, 404)
        return _html(pages.error_page(
            site_title=cfg.title, status=404, heading="页面不存在 · page not found",
            message=f"没有这个页面。There is no page at {request.path!r}.",
        ))


async def _read(request: web.Request, what: str, query: Awaitable[T]) -> T:
    """Await a store query; any failure but an ambiguous prefix means the log is unavailable."""
    try:
        return await query
    except AmbiguousCallId:
        raise
    except Exception as exc:  # any store failure is an outage to the page
        logger.warning("web.call_log_unavailable", path=request.path, query=what, error=repr(exc))
        raise _StoreUnavailable from exc


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _BadRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


# ------------------------------------------------------------------ pages


async def index(request: web.Request) -> web.Response:
    """``/``: live panel and one page of recent calls with their compliance badges."""
    cfg = request.app[CONFIG_KEY]
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    # One more than a page tells whether there is an older page.
    summaries = await _read(request, "list_calls", cfg.store.list_calls(PAGE_SIZE + 1, offset))
    has_more = len(summaries) > PAGE_SIZE
    rows: list[tuple[CallSummary, Mapping[str, ComplianceMark] | None]] = []
    for summary in summaries[:PAGE_SIZE]:
        compliance: Mapping[str, ComplianceMark] | None = None
        if summary.ended_at is not None:  # a live call has no compliance record yet
            record = await _read(request, "get_call", cfg.store.get_call(summary.id))
            compliance = record.compliance if record is not None else None
        rows.append((summary, compliance))
    page = pages.index_page(
        site_title=cfg.title, calls=rows, offset=offset, page_size=PAGE_SIZE, has_more=has_more,
        live=_live_snapshot(cfg.live), tz=cfg.tz, now=cfg.now(),
    )
    return _html(page)


def _live_snapshot(live: LiveView | None) -> pages.LiveSnapshot | None:
    """Ask the controller about now; a failure there costs the panel, not the page."""
    if live is None:
        return None
    try:
        return pages.LiveSnapshot(calls=list(live.live_calls()), agents=list(live.agents()))
    except Exception as exc:  # noqa: BLE001 - the call list is still worth showing
        logger.warning("web.live_view_failed", error=repr(exc))
        return pages.LiveSnapshot(calls=[], agents=[], error=True)


async def call_detail(request: web.Request) -> web.Response:
    """``/calls/{id}``: one call; raw ARI events only with ``?events=1``."""
    cfg = request.app[CONFIG_KEY]
    call_id = request.match_info["call_id"]
    record = await _read(request, "get_call", cfg.store.get_call(call_id))
    if record is None:
        raise _NotFound(call_id)
    show_events = request.query.get("events", "") not in ("", "0", "false", "no")
    return _html(pages.call_page(site_title=cfg.title, call=record, show_events=show_events,
                                 tz=cfg.tz, now=cfg.now()))


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") not in ("", "0", "false", "no")


async def _followups(request: web.Request, today: date) -> list[FollowUp]:
    """The follow-ups the query asks for; a store without follow-ups counts as unavailable."""
    cfg = request.app[CONFIG_KEY]
    owner = request.query.get("owner") or None
    lister = getattr(cfg.store, "list_followups", None)

    async def query() -> list[FollowUp]:
        if lister is None:
            raise RuntimeError("this call log keeps no follow-ups")
        found: list[FollowUp] = await lister(owner=owner, include_done=_flag(request, "all"),
                                             today=today)
        return found

    return await _read(request, "list_followups", query())


def _today(cfg: _Config) -> tuple[datetime, date]:
    """Now, and the center's date now: what decides that a follow-up is overdue."""
    now = cfg.now()
    return now, now.astimezone(cfg.tz).date()


async def followups(request: web.Request) -> web.Response:
    """``/followups``: promises and callbacks to keep, overdue first and highlighted (R8).

    Read-only, like the rest of the admin pages: it shows what is overdue
    (by the center's date) but does not flag it in the log; the controller
    and ``liyi followups`` do that.
    """
    cfg = request.app[CONFIG_KEY]
    now, today = _today(cfg)
    found = await _followups(request, today)
    return _html(pages.followups_page(
        site_title=cfg.title, followups=found, today=today,
        include_done=_flag(request, "all"), owner=request.query.get("owner") or None,
        tz=cfg.tz, now=now,
    ))


async def api_followups(request: web.Request) -> web.Response:
    """``/api/followups``: the same list as JSON, each with its status on the center's today."""
    cfg = request.app[CONFIG_KEY]
    _, today = _today(cfg)
    found = await _followups(request, today)
    return _json({"today": today.isoformat(),
                  "followups": [followup_json(f, today) for f in found]})


def followup_json(followup: FollowUp, today: date) -> dict[str, Any]:
    """A follow-up as JSON-ready values: due as an ISO date, times as epoch seconds."""
    out = {name: getattr(followup, name) for name in followup.__dataclass_fields__}
    out["due"] = followup.due.isoformat()
    out["status"] = followup.status(today)
    return out


# ------------------------------------------------------------------ compliance report (R12)


def report_key(call: CallSummary, by: str, tz: tzinfo) -> str:
    """The group a call counts in, with ``liyi report``'s keys.

    agent: the agent's name, "—" if none; queue: the queue waited in, "all"
    for the general queue, "—" if the caller never queued; day: the date of
    the first ring on the center's clock.
    """
    if by == "agent":
        return call.agent or "—"
    if by == "queue":
        return "—" if call.queue is None else (call.queue or "all")
    return _aware(call.created_at).astimezone(tz).strftime("%Y-%m-%d")


def _aware(at: datetime) -> datetime:
    """The log gives aware UTC; a naive value from another ``CallLog`` is taken as UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _report_by(request: web.Request) -> str:
    by = request.query.get("by") or "agent"
    if by not in REPORT_GROUPINGS:
        raise _BadRequest(
            f"by must be one of {', '.join(REPORT_GROUPINGS)}, got {by!r}"
        )
    return by


async def _recent_calls(
    request: web.Request, since: datetime, cap: int
) -> tuple[list[CallSummary], bool, bool]:
    """Calls that first rang at or after ``since``, newest first, reading at most ``cap`` calls.

    Reads in chunks and stops at the first call older than ``since`` (the
    log is ordered by first ring), so a short window costs a short read.
    Returns the calls, whether the cap cut the window short, and whether
    older calls exist (for the empty message).
    """
    cfg = request.app[CONFIG_KEY]
    read: list[CallSummary] = []
    while len(read) <= cap:  # one call past the cap tells whether the cap cut anything
        want = min(REPORT_CHUNK, cap + 1 - len(read))
        chunk = await _read(request, "list_calls", cfg.store.list_calls(want, len(read)))
        read.extend(chunk)
        if len(chunk) < want or (chunk and _aware(chunk[-1].created_at) < since):
            break
    capped = len(read) > cap and _aware(read[cap].created_at) >= since
    older = any(_aware(c.created_at) < since for c in read)
    seen: set[str] = set()  # a call logged between two chunks shifts the offsets by one
    window = []
    for call in read[:cap]:
        if _aware(call.created_at) >= since and call.id not in seen:
            seen.add(call.id)
            window.append(call)
    return window, capped, older


async def _report(request: web.Request) -> pages.ComplianceReport:
    """Rates per group over the ended calls of the last ``days`` days on the center's calendar.

    "Last N days" is today and the N-1 days before it, counted by the
    center's date, so ``?by=day&days=7`` has at most seven rows.
    """
    cfg = request.app[CONFIG_KEY]
    by = _report_by(request)
    days = _int_param(request, "days", REPORT_DEFAULT_DAYS, 1, REPORT_MAX_DAYS)
    today = cfg.now().astimezone(cfg.tz).date()
    first_day = today - timedelta(days=days - 1)
    since = datetime.combine(first_day, time.min, tzinfo=cfg.tz)
    calls, capped, older = await _recent_calls(request, since, cfg.report_max_calls)
    ended = [c for c in calls if c.ended_at is not None]  # a live call is not scored yet
    keyed = [(report_key(c, by, cfg.tz), dict(c.compliance)) for c in ended]
    counts: dict[str, int] = {}
    for key, _ in keyed:
        counts[key] = counts.get(key, 0) + 1
    totals = rates([("", statuses) for _, statuses in keyed]).get("", {})
    return pages.ComplianceReport(
        by=by, days=days, first_day=first_day, today=today, calls=len(ended),
        rates=rates(keyed), counts=counts, totals=totals, capped=capped,
        max_calls=cfg.report_max_calls, older_calls=older,
    )


async def report(request: web.Request) -> web.Response:
    """``/report``: compliance rates (kept / judged per rule) per agent, queue or day (R12)."""
    cfg = request.app[CONFIG_KEY]
    data = await _report(request)
    return _html(pages.report_page(site_title=cfg.title, report=data, tz=cfg.tz, now=cfg.now()))


async def api_report(request: web.Request) -> web.Response:
    """``/api/report``: the same numbers as JSON, shaped like ``liyi report --json`` plus more.

    ``rates[group][rule]`` is ``{"kept", "broken", "rate"}``; ``rate`` is -1
    when the rule never applied (as in ``callflow.compliance.rates``).
    """
    cfg = request.app[CONFIG_KEY]
    data = await _report(request)
    return _json({
        "by": data.by,
        "days": data.days,
        "from": data.first_day.isoformat(),
        "to": data.today.isoformat(),
        "timezone": str(cfg.tz),
        "calls": data.calls,
        "rates": data.rates,
        "calls_per_group": data.counts,
        "totals": data.totals,
        "capped": data.capped,
        "max_calls": data.max_calls,
    })


# ------------------------------------------------------------------ JSON


async def api_calls(request: web.Request) -> web.Response:
    """``/api/calls``: summaries newest first, with the next page's offset (or null)."""
    cfg = request.app[CONFIG_KEY]
    limit = _int_param(request, "limit", API_DEFAULT_LIMIT, 1, API_MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    summaries = await _read(request, "list_calls", cfg.store.list_calls(limit + 1, offset))
    page = summaries[:limit]
    return _json({
        "calls": [summary_json(s) for s in page],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(summaries) > limit else None,
    })


async def api_call(request: web.Request) -> web.Response:
    """``/api/calls/{id}``: the whole call, timeline and compliance record."""
    cfg = request.app[CONFIG_KEY]
    call_id = request.match_info["call_id"]
    record = await _read(request, "get_call", cfg.store.get_call(call_id))
    if record is None:
        raise _NotFound(call_id)
    return _json(record_json(record))


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the web server answers (says nothing about the database)."""
    return _json({"ok": True})


_SUMMARY_FIELDS = ("id", "channel_id", "caller_number", "caller_name", "created_at",
                   "answered_at", "ended_at", "first_hangup", "agent", "outcome", "state",
                   "handled_by")


def summary_json(call: CallSummary | CallRecord) -> dict[str, Any]:
    """A call's own fields as JSON-ready values (times as ISO 8601 UTC)."""
    out: dict[str, Any] = {}
    for name in _SUMMARY_FIELDS:
        value = getattr(call, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _entry_json(entry: TimelineEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "at": entry.at.isoformat(), "source": entry.source,
            "kind": entry.kind, "detail": entry.detail}


def record_json(call: CallRecord) -> dict[str, Any]:
    """A whole call as JSON-ready values: fields, summary, timeline, compliance."""
    return {
        **summary_json(call),
        "summary": call.summary,
        "timeline": [_entry_json(e) for e in call.timeline],
        "compliance": {
            rule: {"status": mark.status, "evidence": mark.evidence}
            for rule, mark in call.compliance.items()
        },
        "followups": [
            {**{name: getattr(f, name) for name in f.__dataclass_fields__},
             "due": f.due.isoformat()}
            for f in call.followups
        ],
    }
