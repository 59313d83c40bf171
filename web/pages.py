"""HTML of the admin pages, built as strings from the call log's frozen records.

Why plain string building: the pages are few and small, and every value that
reaches them — caller number and name above all — is hostile input from the
phone network. One rule keeps that safe: every dynamic value goes through
:func:`esc` (``html.escape`` with quotes) at the place it is inserted, and
these functions return finished HTML. No template engine, no dependency.

The functions are pure (time zone and "now" are passed in) so tests can call
them without a server.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from html import escape
from typing import Any
from urllib.parse import quote

from db.records import CallRecord, CallSummary, ComplianceMark, FollowUp, TimelineEntry

# Rules shown as badges in the list of calls: the ones scored on every call.
LIST_RULES = ("R1", "R2", "R3", "R4", "R6", "R7", "R9", "R10")

RULE_NAMES = {
    "R1": "三声内接听 answer within three rings",
    "R2": "问候并报公司名 greeting",
    "R3": "记录来电信息 who and why",
    "R4": "等待需说明 hold",
    "R5": "排队不久等 queue wait",
    "R6": "热转接 warm transfer",
    "R7": "离开需许可 leaving the line",
    "R8": "礼貌结束 closing",
    "R9": "客户先挂机 caller hangs up first",
    "R10": "完整记录 every call logged",
    "R11": "从容应对 calm under pressure",
    "R12": "合规可度量 compliance measured",
}

STATUS_LABELS = {
    "kept": ("✓", "遵守 kept"),
    "broken": ("✗", "违反 broken"),
    "not_applicable": ("–", "不适用 n/a"),
}
UNSCORED = ("·", "未评分 not scored")

OUTCOME_LABELS = {
    "completed": "已完成",
    "abandoned-ringing": "振铃中挂断",
    "abandoned-greeting": "问候中挂断",
    "abandoned-waiting": "等待中挂断",
    "abandoned-connecting": "接通前挂断",
    "after-hours": "非工作时间",
    "idle-released": "闲置释放",
    "ended-while-down": "控制程序重启期间结束",  # issue 9: closed by the restarted controller
}

HANGUP_LABELS = {
    "caller": "来电者",
    "agent": "坐席",
    "service": "系统",
    "unknown": "未知",  # the call ended while the controller was down (issue 9)
}

DASH = "—"
# Evidence and details carry instants as epoch seconds under names like these
# (``first_ring_at``, ``logged_from``); between 2001 and 2286 they are shown as local time.
_TIME_KEY_SUFFIXES = ("_at", "_from", "_since", "_until")
_EPOCH_RANGE = (1e9, 1e10)


def esc(value: object) -> str:
    """``value`` as HTML text, safe inside elements and quoted attributes; None is a dash."""
    if value is None or value == "":
        return DASH
    return escape(str(value), quote=True)


def attr(value: object) -> str:
    """``value`` escaped for a quoted attribute (empty stays empty)."""
    return "" if value is None else escape(str(value), quote=True)


def call_href(call_id: str, **query: str) -> str:
    """URL path of a call's page; the id is percent-encoded (it may hold anything)."""
    path = "/calls/" + quote(call_id, safe="")
    if query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return path


# ------------------------------------------------------------------ time


def local_time(at: datetime | None, tz: tzinfo, *, ms: bool = False) -> str:
    """Wall-clock time at the center, e.g. ``2026-05-09 14:03:21``."""
    if at is None:
        return DASH
    if at.tzinfo is None:  # the log gives aware UTC; be lenient with anything else
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(tz)
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if ms:
        text += f".{local.microsecond // 1000:03d}"
    return text


def relative(seconds: float) -> str:
    """Offset from the first ring with milliseconds: ``+2.150 s`` or ``+1:05.000``."""
    sign = "-" if seconds < 0 else "+"
    millis = round(abs(seconds) * 1000)
    whole, frac = divmod(millis, 1000)
    if whole < 60:
        return f"{sign}{whole}.{frac:03d} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{sign}{minutes}:{secs:02d}.{frac:03d}"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}.{frac:03d}"


def duration(seconds: float) -> str:
    """A human duration for the live panel: ``45 s``, ``3 min 05 s``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _as_datetime(value: object) -> datetime | None:
    """A live-view ``since`` (epoch seconds, datetime or ISO text) as aware UTC, if it is one."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# ------------------------------------------------------------------ small pieces


def badge(rule: str, mark: ComplianceMark | None, *, with_rule: bool = True) -> str:
    """One rule's verdict as a coloured badge; the evidence's reason is the tooltip."""
    if mark is None:
        status, (symbol, label), reason = "unscored", UNSCORED, ""
    else:
        status = mark.status if mark.status in STATUS_LABELS else "unknown"
        symbol, label = STATUS_LABELS.get(mark.status, ("?", mark.status))
        reason = evidence_reason(mark.evidence)
    tip = f"{rule} {label}" + (f": {reason}" if reason else "")
    text = f"{esc(rule)} {symbol}" if with_rule else f"{symbol} {esc(label)}"
    return f'<span class="badge {attr(status)}" title="{attr(tip)}">{text}</span>'


def evidence_reason(evidence: Mapping[str, Any] | None) -> str:
    """The one-line why of a verdict: its ``reason``, ``note`` or ``exception``, if any."""
    if not isinstance(evidence, Mapping):
        return ""
    parts = [str(evidence[k]) for k in ("reason", "note", "exception") if evidence.get(k)]
    return "; ".join(parts)


def _value_text(key: str, value: Any, tz: tzinfo) -> str:
    """A detail/evidence value as plain text (not yet escaped)."""
    if (
        key.endswith(_TIME_KEY_SUFFIXES)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and _EPOCH_RANGE[0] < value < _EPOCH_RANGE[1]
    ):
        return local_time(datetime.fromtimestamp(value, UTC), tz, ms=True)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def key_values(values: Mapping[str, Any] | None, tz: tzinfo, *, skip: Iterable[str] = ()) -> str:
    """A dict as ``key value`` chips, every key and value escaped."""
    if not isinstance(values, Mapping) or not values:
        return ""
    skipped = set(skip)
    chips = [
        f'<span class="kv"><span class="k">{esc(k)}</span> '
        f'<span class="v">{esc(_value_text(str(k), v, tz))}</span></span>'
        for k, v in values.items()
        if k not in skipped
    ]
    return " ".join(chips)


def outcome_cell(call: CallSummary | CallRecord) -> str:
    """The call's outcome in Chinese with the code in English; a live call shows its state."""
    if call.outcome:
        zh = OUTCOME_LABELS.get(call.outcome)
        if zh:
            return f'{esc(zh)} <span class="code">{esc(call.outcome)}</span>'
        return f'<span class="code">{esc(call.outcome)}</span>'
    if call.ended_at is None:
        return f'<span class="live-dot"></span>进行中 <span class="code">{esc(call.state)}</span>'
    return DASH


def handled_by_cell(call: CallSummary | CallRecord) -> str:
    """Who served the call: liyi, or the dialplan fallback while liyi was down (issue 9)."""
    by = getattr(call, "handled_by", "liyi")
    if by == "fallback":
        return f'应急接听 <span class="code">{esc(by)}</span>'
    return f'礼仪 <span class="code">{esc(by)}</span>'


def hangup_cell(side: str | None) -> str:
    """Who hung up first (R9) in Chinese with the code in English."""
    if not side:
        return DASH
    zh = HANGUP_LABELS.get(side)
    cls = ' class="warn"' if side == "service" else ""
    if zh:
        return f'<span{cls}>{esc(zh)}</span> <span class="code">{esc(side)}</span>'
    return f'<span class="code">{esc(side)}</span>'


def _rule_order(rule: str) -> tuple[int, str]:
    match = re.fullmatch(r"R(\d+)", rule)
    return (int(match.group(1)), rule) if match else (10_000, rule)


# ------------------------------------------------------------------ layout


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page: HTML and the HTTP status to send it with."""

    html: str
    status: int = 200


def layout(site_title: str, page_title: str, body: str, *, refresh: bool) -> str:
    """The page shell: header, ``<main id="main">`` and, if asked, 5-second auto-refresh.

    Refresh replaces only ``<main>`` (static/refresh.js) so the page doesn't
    flash or lose its scroll position; without JavaScript a meta refresh does it.
    """
    full_title = f"{page_title} · {site_title}" if page_title else site_title
    refresh_head = (
        '<noscript><meta http-equiv="refresh" content="5"></noscript>\n'
        '<script src="/static/refresh.js" defer></script>\n'
        if refresh
        else ""
    )
    return (
        "<!doctype html>\n"
        '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(full_title)}</title>\n"
        '<link rel="stylesheet" href="/static/style.css">\n'
        f"{refresh_head}"
        "</head>\n<body>\n"
        f'<header class="top"><a class="brand" href="/">{esc(site_title)}</a>'
        '<nav class="sub"><a class="sub" href="/">通话记录 · Call log</a> · '
        '<a class="sub" href="/followups">跟进 · Follow-ups</a> · '
        '<a class="sub" href="/report">合规 · Report</a> · '
        '<a class="sub" href="/audit">审计 · Audit</a> · '
        '<a class="sub" href="/users">账号 · Users</a> · '
        '<a class="sub" href="/logout">退出 · Sign out</a></nav>'
        '<span id="stale" class="stale" hidden>连接中断，数据可能已过时 · connection lost</span>'
        "</header>\n"
        f'<main id="main">\n{body}\n</main>\n'
        "</body>\n</html>\n"
    )


def _table(head: Sequence[str], rows: Sequence[str], *, cls: str = "") -> str:
    ths = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<div class="table-wrap"><table class="{attr(cls)}">'
        f"<thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# ------------------------------------------------------------------ index


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """What the controller said about now, or that it could not say."""

    calls: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    error: bool = False


def _live_section(live: LiveSnapshot, tz: tzinfo, now: datetime) -> str:
    if live.error:
        return (
            '<section class="panel"><h2>实时 · Now</h2>'
            '<p class="notice">实时状态暂不可用 · live state unavailable</p></section>'
        )
    call_rows = []
    for c in live.calls:
        call_id = str(c.get("call_id") or "")
        since = _as_datetime(c.get("since"))
        if since is not None:
            elapsed = duration((now - since).total_seconds())
            since_cell = f'<span title="{attr(local_time(since, tz))}">{esc(elapsed)}</span>'
        else:
            since_cell = esc(c.get("since"))
        link = (
            f'<a href="{attr(call_href(call_id))}" class="mono">{esc(call_id[:8])}</a>'
            if call_id
            else DASH
        )
        call_rows.append(
            f"<tr><td>{link}</td><td>{esc(c.get('caller_number'))}</td>"
            f"<td><span class=\"code\">{esc(c.get('state'))}</span></td>"
            f"<td>{esc(c.get('agent'))}</td><td>{since_cell}</td></tr>"
        )
    calls_html = (
        _table(
            ["通话 Call", "来电号码 Number", "状态 State", "坐席 Agent", "时长 Since"], call_rows
        )
        if call_rows
        else '<p class="empty">当前没有通话 · no calls right now</p>'
    )
    agent_rows = []
    for a in live.agents:
        registered = bool(a.get("registered"))
        engaged = bool(a.get("engaged"))
        reg = (
            '<span class="pill ok">已注册 registered</span>'
            if registered
            else '<span class="pill off">未注册 offline</span>'
        )
        busy = (
            '<span class="pill busy">通话中 engaged</span>'
            if engaged
            else '<span class="pill idle">空闲 free</span>'
        )
        agent_rows.append(
            f"<tr><td>{esc(a.get('name'))}</td><td class=\"mono\">{esc(a.get('endpoint'))}</td>"
            f"<td>{reg}</td><td><span class=\"code\">{esc(a.get('device_state'))}</span></td>"
            f"<td>{busy}</td></tr>"
        )
    agents_html = (
        _table(
            ["坐席 Agent", "话机 Endpoint", "注册 Registered", "设备 Device", "占用 Engaged"],
            agent_rows,
        )
        if agent_rows
        else '<p class="empty">没有配置坐席 · no agents configured</p>'
    )
    return (
        '<section class="panel live"><h2>实时 · Now</h2>'
        f'<div class="cols"><div><h3>通话 Calls ({len(live.calls)})</h3>{calls_html}</div>'
        f"<div><h3>坐席 Agents ({len(live.agents)})</h3>{agents_html}</div></div></section>"
    )


def index_page(
    *,
    site_title: str,
    calls: Sequence[tuple[CallSummary, Mapping[str, ComplianceMark] | None]],
    offset: int,
    page_size: int,
    has_more: bool,
    live: LiveSnapshot | None,
    tz: tzinfo,
    now: datetime,
) -> Page:
    """``/``: the live panel (if any), then one page of recent calls with compliance badges."""
    parts = []
    if live is not None:
        parts.append(_live_section(live, tz, now))
    rows = []
    for call, compliance in calls:
        badges = " ".join(badge(rule, (compliance or {}).get(rule)) for rule in LIST_RULES)
        href = attr(call_href(call.id))
        rows.append(
            "<tr>"
            f'<td class="nowrap"><a href="{href}">{esc(local_time(call.created_at, tz))}</a></td>'
            f'<td class="mono">{esc(call.caller_number)}</td>'
            f'<td class="name">{esc(call.caller_name)}</td>'
            f"<td>{esc(call.agent)}</td>"
            f"<td>{outcome_cell(call)}</td>"
            f"<td>{hangup_cell(call.first_hangup)}</td>"
            f"<td>{handled_by_cell(call)}</td>"
            f'<td class="badges">{badges}</td>'
            f'<td><a class="mono" href="{href}">{esc(call.id[:8])}</a></td>'
            "</tr>"
        )
    first = offset + 1
    last = offset + len(calls)
    if rows:
        table = _table(
            [
                "时间 Time",
                "来电号码 Number",
                "来电者 Caller",
                "坐席 Agent",
                "结果 Outcome",
                "先挂机 First hang-up",
                "接待 Handled by",
                "合规 Compliance",
                "编号 ID",
            ],
            rows,
            cls="calls",
        )
        counter = f"第 {first}–{last} 条 · calls {first}–{last}"
    else:
        table = (
            '<p class="empty">还没有通话记录 · no calls logged yet</p>'
            if offset == 0
            else '<p class="empty">这一页没有通话 · no calls on this page</p>'
        )
        counter = ""
    nav = []
    if offset > 0:
        newer = max(0, offset - page_size)
        nav.append(f'<a class="btn" href="/?offset={newer}">← 较新 newer</a>')
    if has_more:
        nav.append(f'<a class="btn" href="/?offset={offset + page_size}">较早 older →</a>')
    parts.append(
        '<section class="panel"><div class="heading-row"><h2>最近通话 · Recent calls</h2>'
        f'<span class="muted">{esc(counter) if counter else ""}'
        f" · 更新于 {esc(local_time(now, tz)[11:])}</span></div>"
        f'{table}<nav class="pager">{"".join(nav)}</nav>'
        '<p class="legend">'
        f"{badge('✓', ComplianceMark('kept', {}), with_rule=False)} "
        f"{badge('✗', ComplianceMark('broken', {}), with_rule=False)} "
        f"{badge('–', ComplianceMark('not_applicable', {}), with_rule=False)} "
        f"{badge('·', None, with_rule=False)} "
        "悬停查看原因 · hover a badge for the reason</p></section>"
    )
    return Page(layout(site_title, "", "\n".join(parts), refresh=True))


# ------------------------------------------------------------------ one call


def _field(label: str, value_html: str) -> str:
    return f"<div><dt>{label}</dt><dd>{value_html}</dd></div>"


def _timeline_rows(
    entries: Sequence[TimelineEntry], origin: datetime, tz: tzinfo, show_source: bool
) -> list[str]:
    rows = []
    for entry in entries:
        offset = relative((entry.at - origin).total_seconds())
        absolute = local_time(entry.at, tz, ms=True)
        cells = [
            f'<td class="num">{entry.seq}</td>',
            f'<td class="mono nowrap" title="{attr(absolute)}">{esc(offset)}</td>',
        ]
        if show_source:
            source = f'<span class="src {attr(entry.source)}">{esc(entry.source)}</span>'
            cells.append(f"<td>{source}</td>")
        cells.append(f'<td class="kind">{esc(entry.kind)}</td>')
        cells.append(f'<td class="detail">{key_values(entry.detail, tz)}</td>')
        rows.append(f'<tr class="src-{attr(entry.source)}">{"".join(cells)}</tr>')
    return rows


def call_page(
    *,
    site_title: str,
    call: CallRecord,
    show_events: bool,
    tz: tzinfo,
    now: datetime | None = None,
) -> Page:
    """``/calls/{id}``: the call's fields, compliance record, follow-ups and timeline.

    ``now`` decides which follow-ups are overdue (the center's date at that instant).
    """
    answered = call.answered_at
    answered_after = ""
    if answered is not None:
        after = relative((answered - call.created_at).total_seconds())
        answered_after = f' <span class="muted">({esc(after)})</span>'
    header = (
        '<section class="panel"><div class="heading-row">'
        f'<h2>通话 · Call <span class="mono">{esc(call.id)}</span></h2>'
        '<a class="btn" href="/">← 返回列表 back</a></div>'
        '<dl class="fields">'
        + _field("来电号码 Number", f'<span class="mono">{esc(call.caller_number)}</span>')
        + _field("来电者 Caller", f'<span class="name">{esc(call.caller_name)}</span>')
        + _field("坐席 Agent", esc(call.agent))
        + _field("首次振铃 First ring", esc(local_time(call.created_at, tz, ms=True)))
        + _field(
            "接听 Answered",
            esc(local_time(answered, tz, ms=True)) + answered_after,
        )
        + _field("结束 Ended", esc(local_time(call.ended_at, tz, ms=True)))
        + _field("结果 Outcome", outcome_cell(call))
        + _field("先挂机 First hang-up", hangup_cell(call.first_hangup))
        + _field("接待 Handled by", handled_by_cell(call))
        + _field("状态 State", f'<span class="code">{esc(call.state)}</span>')
        + _field("通道 Channel", f'<span class="mono">{esc(call.channel_id)}</span>')
        + "</dl>"
        + (
            f'<p class="summary">{key_values(call.summary, tz)}</p>'
            if call.summary
            else ""
        )
        + "</section>"
    )

    comp_rows = []
    for rule in sorted(call.compliance, key=_rule_order):
        mark = call.compliance[rule]
        reason = evidence_reason(mark.evidence)
        comp_rows.append(
            f'<tr><td class="nowrap"><strong>{esc(rule)}</strong> '
            f'<span class="muted">{esc(RULE_NAMES.get(rule, ""))}</span></td>'
            f"<td>{badge(rule, mark, with_rule=False)}</td>"
            f'<td>{f"<strong>{esc(reason)}</strong> " if reason else ""}'
            f'{key_values(mark.evidence, tz, skip=("reason", "note", "exception"))}</td></tr>'
        )
    compliance = (
        _table(["规则 Rule", "结果 Status", "依据 Evidence"], comp_rows, cls="compliance")
        if comp_rows
        else (
            '<p class="empty">通话进行中，尚未评分 · not scored until the call ends</p>'
            if call.ended_at is None
            else '<p class="empty">没有合规记录 · no compliance record</p>'
        )
    )

    followups_html = ""
    if call.followups:
        today = (now or datetime.now(UTC)).astimezone(tz).date()
        followups_html = (
            '<section class="panel"><h2>跟进 · Follow-ups</h2>'
            + _followups_table(call.followups, today, tz, with_call=False)
            + "</section>"
        )

    n_events = sum(1 for e in call.timeline if e.source == "event")
    entries = [e for e in call.timeline if show_events or e.source != "event"]
    toggle = (
        f'<a class="btn" href="{attr(call_href(call.id))}">隐藏原始事件 hide raw events</a>'
        if show_events
        else f'<a class="btn" href="{attr(call_href(call.id, events="1"))}">'
        f"显示原始事件 show raw events ({n_events})</a>"
    )
    timeline = (
        _table(
            ["#", "时间 Time", *(["来源 Source"] if show_events else []),
             "类型 Kind", "详情 Details"],
            _timeline_rows(entries, call.created_at, tz, show_events),
            cls="timeline",
        )
        if entries
        else '<p class="empty">时间线为空 · no timeline entries</p>'
    )
    body = (
        header
        + f'<section class="panel"><h2>合规 · Compliance</h2>{compliance}</section>'
        + followups_html
        + '<section class="panel"><div class="heading-row"><h2>时间线 · Timeline</h2>'
        + f'<span class="muted">相对首次振铃 · relative to the first ring</span>{toggle}</div>'
        + timeline
        + "</section>"
    )
    title = f"通话 {call.caller_number or call.id[:8]}"
    return Page(layout(site_title, title, body, refresh=call.ended_at is None))


# ------------------------------------------------------------------ follow-ups (R8)

FOLLOWUP_STATUS = {
    "overdue": '<span class="badge broken">逾期 OVERDUE</span>',
    "open": '<span class="pill busy">待办 open</span>',
    "done": '<span class="badge kept">已完成 done</span>',
}
FOLLOWUP_KINDS = {"promise": "承诺 promise", "callback": "回拨 callback"}


def owner_cell(followup: FollowUp) -> str:
    """Who keeps it: the agent, or the queue an unowned callback waits in."""
    if followup.owner:
        return esc(followup.owner)
    return f'<span class="muted">回拨队列 callback queue</span> {esc(followup.queue or "general")}'


def _epoch_time(epoch: float | None, tz: tzinfo) -> str:
    return DASH if epoch is None else local_time(datetime.fromtimestamp(epoch, UTC), tz)


def _followups_table(
    followups: Sequence[FollowUp], today: date, tz: tzinfo, *, with_call: bool
) -> str:
    rows = []
    for f in followups:
        status = f.status(today)
        due = esc(f.due.isoformat())
        if status == "overdue":
            due = f'<span class="warn">{due}</span>'
        done = (
            f'<span class="muted">{esc(f.done_by)} {esc(_epoch_time(f.done_at, tz))}</span>'
            if f.state == "done"
            else (f'<span class="muted">回拨 {f.attempts} 次 attempts</span>' if f.attempts else "")
        )
        cells = [
            f'<td class="nowrap">{FOLLOWUP_STATUS.get(status, esc(status))} {done}</td>',
            f'<td class="nowrap">{due}</td>',
            f"<td>{owner_cell(f)}</td>",
            f'<td class="mono nowrap">{esc(f.number)}</td>',
            f'<td class="nowrap">{esc(FOLLOWUP_KINDS.get(f.kind, f.kind))}</td>',
            f'<td class="detail">{esc(f.text)}</td>',
            f'<td class="nowrap">{esc(_epoch_time(f.created_at, tz))}</td>',
        ]
        if with_call:
            cells.append(
                f'<td><a class="mono" href="{attr(call_href(f.call_id))}">'
                f"{esc(f.call_id[:8])}</a></td>"
            )
        cells.append(f'<td class="mono" title="{attr(f.id)}">{esc(f.id[:8])}</td>')
        rows.append(f'<tr class="followup {attr(status)}">{"".join(cells)}</tr>')
    head = ["状态 State", "到期 Due", "负责人 Owner", "号码 Number", "类型 Kind",
            "承诺 Promise", "创建 Made"]
    if with_call:
        head.append("通话 Call")
    head.append("编号 ID")
    return _table(head, rows, cls="followups")


def followups_page(
    *,
    site_title: str,
    followups: Sequence[FollowUp],
    today: date,
    include_done: bool,
    owner: str | None,
    tz: tzinfo,
    now: datetime,
) -> Page:
    """``/followups``: promises and callbacks to keep, overdue first (highlighted).

    Read-only, like every admin page: an admin marks one done with ``liyi
    followups done ID`` (or an agent from the panel).
    """
    overdue = sum(1 for f in followups if f.status(today) == "overdue")
    whose = f" · {owner}" if owner else ""
    if followups:
        table = _followups_table(followups, today, tz, with_call=True)
    else:
        table = (
            '<p class="empty">没有待办的跟进 · no open follow-ups</p>'
            if not include_done
            else '<p class="empty">没有跟进记录 · no follow-ups</p>'
        )
    notice = (
        f'<p class="notice">{overdue} 项跟进已逾期 · {overdue} follow-up'
        f'{"s" if overdue != 1 else ""} overdue</p>'
        if overdue
        else ""
    )
    toggle = (
        '<a class="btn" href="/followups">只看待办 open only</a>'
        if include_done
        else '<a class="btn" href="/followups?all=1">包括已完成 include done</a>'
    )
    body = (
        '<section class="panel"><div class="heading-row">'
        f"<h2>跟进 · Follow-ups{esc(whose) if whose else ''}</h2>"
        f'<span class="muted">今天 today {esc(today.isoformat())} · 逾期优先 overdue first'
        f" · 更新于 {esc(local_time(now, tz)[11:])}</span>{toggle}</div>"
        f"{notice}{table}"
        '<p class="legend">标记完成：<span class="mono">liyi followups done ID</span>'
        " · mark one done with the command line, or from the agent panel</p></section>"
    )
    return Page(layout(site_title, "跟进 Follow-ups", body, refresh=True))


# ------------------------------------------------------------------ compliance report (R12)

# The rules a call's compliance record scores (R11 has no machine evidence, R12 is this page).
REPORT_RULES = ("R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10")
# A rate below these is marked: red ("bad") and amber ("warn"); an admin scans for colour.
REPORT_BAD_BELOW = 0.80
REPORT_WARN_BELOW = 0.95
REPORT_GROUP_LABELS = {
    "agent": ("坐席", "Agent"),
    "queue": ("队列", "Queue"),
    "day": ("日期", "Day"),
}
RateCell = Mapping[str, float | int]


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """Compliance rates of the ended calls in a window, grouped one way.

    ``rates`` and ``totals`` are ``callflow.compliance.rates`` cells
    (``kept``, ``broken``, ``rate``; -1 when never judged); ``counts`` is
    ended calls per group. ``capped``: the read stopped at ``max_calls``
    before the window's start, so older days are missing.
    ``older_calls``: the log has calls before the window.
    """

    by: str
    days: int
    first_day: date
    today: date
    calls: int
    rates: Mapping[str, Mapping[str, RateCell]]
    counts: Mapping[str, int]
    totals: Mapping[str, RateCell]
    capped: bool
    max_calls: int
    older_calls: bool


def report_href(by: str, days: int) -> str:
    """URL of the report grouped ``by`` over ``days`` days."""
    return f"/report?by={quote(by, safe='')}&days={days}"


def percent(kept: int, judged: int) -> str:
    """``kept / judged`` to a tenth of a percent; a breach never shows as 100 %, a keep never as 0 %."""
    if kept == judged:
        return "100%"
    if kept == 0:
        return "0%"
    tenths = min(999, max(1, round(1000 * kept / judged)))
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths / 10:.1f}%"


def rate_cell(rule: str, cell: RateCell | None) -> str:
    """One rule's rate in a group: percentage and kept/judged, marked by how bad it is.

    A rule that never applied shows "–" (no rate, not 100 %).
    """
    kept = int(cell["kept"]) if cell else 0
    broken = int(cell["broken"]) if cell else 0
    judged = kept + broken
    name = RULE_NAMES.get(rule, "")
    if not judged:
        tip = f"{rule} {name}: 从未适用 never applied"
        return f'<td class="rate na" title="{attr(tip)}">–</td>'
    ratio = kept / judged
    level = "bad" if ratio < REPORT_BAD_BELOW else "warn" if ratio < REPORT_WARN_BELOW else "ok"
    tip = f"{rule} {name}: {kept} kept, {broken} broken"
    return (
        f'<td class="rate {level}" title="{attr(tip)}">{esc(percent(kept, judged))}'
        f' <span class="frac">{kept}/{judged}</span></td>'
    )


def _group_cell(by: str, key: str) -> str:
    """A group's name, with a hint for the keys that are not names ("all", "—")."""
    if by == "queue" and key == "all":
        return f'{esc(key)} <span class="muted">通用队列 general queue</span>'
    if by == "queue" and key == "—":
        return f'{DASH} <span class="muted">未排队 never queued</span>'
    if by == "agent" and key == "—":
        return f'{DASH} <span class="muted">无坐席 no agent</span>'
    return f'<span class="{"mono" if by == "day" else "name"}">{esc(key)}</span>'


def _report_rules(report: ComplianceReport) -> list[str]:
    """R1…R10 always (so tables line up), then any other rule the log holds."""
    extra = {rule for cells in report.rates.values() for rule in cells} - set(REPORT_RULES)
    return [*REPORT_RULES, *sorted(extra, key=_rule_order)]


def _report_order(by: str, keys: Iterable[str]) -> list[str]:
    """Days newest first; names alphabetically with the "—" group last."""
    if by == "day":
        return sorted(keys, reverse=True)
    return sorted(keys, key=lambda k: (k == "—", k))


def _report_table(report: ComplianceReport) -> str:
    rules = _report_rules(report)
    zh, en = REPORT_GROUP_LABELS[report.by]
    head = (
        f'<th>{zh} {en}</th><th class="count">通话 Calls</th>'
        + "".join(f'<th class="rate" title="{attr(RULE_NAMES.get(r, ""))}">{esc(r)}</th>'
                  for r in rules)
    )
    rows = []
    for key in _report_order(report.by, report.rates):
        cells = "".join(rate_cell(rule, report.rates[key].get(rule)) for rule in rules)
        rows.append(
            f'<tr class="report-row"><td class="group">{_group_cell(report.by, key)}</td>'
            f'<td class="count">{report.counts.get(key, 0)}</td>{cells}</tr>'
        )
    total = "".join(rate_cell(rule, report.totals.get(rule)) for rule in rules)
    foot = (
        f'<tr class="report-total"><th>合计 Total</th><td class="count">{report.calls}</td>'
        f"{total}</tr>"
    )
    return (
        '<div class="table-wrap"><table class="report">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f"<tfoot>{foot}</tfoot></table></div>"
    )


def _report_tab(by: str, report: ComplianceReport) -> str:
    """One tab: the same window grouped ``by``; the shown grouping is marked current."""
    href = attr(report_href(by, report.days))
    label = f"按{REPORT_GROUP_LABELS[by][0]} · by {by}"
    if by == report.by:
        return f'<a class="tab active" aria-current="page" href="{href}">{label}</a>'
    return f'<a class="tab" href="{href}">{label}</a>'


def report_page(*, site_title: str, report: ComplianceReport, tz: tzinfo, now: datetime) -> Page:
    """``/report``: kept / judged per rule for each agent, queue or day (R12).

    One grouping at a time, chosen by tabs; a form sets how many days back.
    Not auto-refreshed: it reads up to thousands of calls.
    """
    tabs = "".join(_report_tab(by, report) for by in REPORT_GROUP_LABELS)
    form = (
        '<form class="report-days" method="get" action="/report">'
        f'<input type="hidden" name="by" value="{attr(report.by)}">'
        '<label>最近 last <input type="number" name="days" min="1" '
        f'value="{report.days}" required> 天 days</label> '
        '<button class="btn" type="submit">更新 update</button></form>'
    )
    window = (
        f"{esc(report.first_day.isoformat())} – {esc(report.today.isoformat())}"
        f" · {report.calls} 通已结束 ended call{'s' if report.calls != 1 else ''}"
        f" · 更新于 {esc(local_time(now, tz)[11:])}"
    )
    notice = (
        f'<p class="notice">只读取了最近 {report.max_calls} 通电话，更早的未计入 · only the most '
        f"recent {report.max_calls} calls were read; older ones in this window are not counted. "
        "Choose fewer days for a complete count.</p>"
        if report.capped
        else ""
    )
    if report.calls:
        table = _report_table(report)
    elif report.older_calls:
        table = (
            f'<p class="empty">最近 {report.days} 天没有已结束的通话 · no ended calls in the last '
            f"{report.days} day{'s' if report.days != 1 else ''}</p>"
        )
    else:
        table = '<p class="empty">还没有已结束的通话 · no ended calls yet</p>'
    body = (
        '<section class="panel"><div class="heading-row">'
        "<h2>合规率 · Compliance report</h2>"
        f'<span class="muted">{window}</span>{form}</div>'
        f'<nav class="tabs">{tabs}</nav>{notice}{table}'
        '<p class="legend">比率 = 遵守 ÷ 判定（遵守 + 违反）· rate = kept ÷ judged (kept + broken);'
        " – 从未适用 never applied · "
        f'<span class="rate-key bad">&lt; {REPORT_BAD_BELOW:.0%}</span> '
        f'<span class="rate-key warn">&lt; {REPORT_WARN_BELOW:.0%}</span> '
        "悬停查看规则 · hover a cell for the rule · 命令行 "
        '<span class="mono">liyi report --by agent|queue|day</span></p></section>'
    )
    return Page(layout(site_title, "合规 Report", body, refresh=False))


# ------------------------------------------------------------------ errors


def error_page(
    *,
    site_title: str,
    status: int,
    heading: str,
    message: str,
    links: Sequence[tuple[str, str]] = (),
    refresh: bool = False,
) -> Page:
    """A plain error page; ``message`` and ``links`` are text, escaped here."""
    items = "".join(
        f'<li><a class="mono" href="{attr(href)}">{esc(text)}</a></li>' for href, text in links
    )
    body = (
        f'<section class="panel error"><h2>{esc(status)} · {esc(heading)}</h2>'
        f"<p>{esc(message)}</p>"
        f"{f'<ul>{items}</ul>' if items else ''}"
        '<p><a class="btn" href="/">← 返回列表 back to the call log</a></p></section>'
    )
    return Page(layout(site_title, heading, body, refresh=refresh), status)
