"""The agent panel's window on the controller: what each agent should see, and their requests.

An agent's panel shows one thing at a time — their state, the caller they
are with, and the script line for the moment — and every button is turned
into an engine event for the call that agent is on. Which call that is, and
in what role (talking, holding, consulting as a transfer target, placing a
callback), is read from the live engines; nothing here decides etiquette.

Follow-ups (R8) live in the call log, which is asynchronous while a view is
not: each agent's list is cached here and refreshed when their panel
connects, after each follow-up action, when the controller records one
(``followups_changed``) and every ``refresh_seconds`` (so a follow-up turns
overdue on the panel the morning after its due date).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from ari_handlers.controller import Controller
from ari_handlers.translate import clean_text
from callflow import commands as c
from callflow import events as e
from callflow.config import CallFlowConfig

log = structlog.get_logger("liyi.desk")

Listener = Callable[[dict[str, Any]], None]

#: The script line an agent sees for each moment (the handbooks' words).
SCRIPT_LINES = {
    "available": "等待来电。接听后请先问候并报公司名称。",
    "ringing": "来电振铃中，请在三声内接听。",
    "on-call": "您好，{company}，请问有什么可以帮您？ — 请问您贵姓？（记下姓名、来电目的，并向客户复述号码）",
    "holding": "客户正在等待（已告知等待时限）。请在时限内回到通话。",
    "transfer": "就您所提的这个问题我们会转至对此方面比较熟悉的同事那里，由他给您做专业解释，您看可以吗？",
    "target": "有转接来电：请查看来电者姓名与目的，接听请按「接受」。",
    "handed-over": "很抱歉让您久等了，就您所提到的……",
    "closing": "请问您还有其他问题吗？ — 感谢您的来电，欢迎您随时来电。",
    "closing-asked": "请问您还有其他问题吗？ — 客户没有了请点「没有了 — 结束」，还有问题请点「还有问题 — 继续」。",
    "callback": "回电：请先报公司名称和您的姓名，不要先问对方姓名。",
    "wrap-up": "整理时间：补全来电记录、备注和承诺的跟进事项；结束后再接新来电。",
    "offline": "您的话机未注册：请检查软电话。",
}

NOTICE_TEXT = {
    "hold-countdown": "等待时限还剩 {seconds_left} 秒 · hold limit in {seconds_left} s",
    "transfer-offer": "转接来电：{caller_number} {caller_name}，目的：{purpose} · transfer offered",
    "script": "{line}",
    "connected": "已接通 · connected",
    "followup": "已记录承诺，答复期限 {due} · promise recorded, due {due}",
}


def _fmt(data: dict[str, Any]) -> dict[str, Any]:
    """Missing keys read as empty, numbers rounded, so a notice never fails to format."""
    out: dict[str, Any] = {k: (round(v) if isinstance(v, float) else v) for k, v in data.items()}
    for key in ("seconds_left", "caller_number", "caller_name", "purpose", "line", "due", "text"):
        out.setdefault(key, "")
    return out


ACTIONS: dict[str, Callable[[str, float, dict[str, str]], e.AgentEvent]] = {
    "hold": lambda a, t, p: e.HoldRequested(
        at=t, agent=a, reason=clean_text(p.get("reason", ""), 200),
        limit_seconds=_seconds(p.get("limit_seconds", "0"))),
    "resume": lambda a, t, p: e.ResumeRequested(at=t, agent=a),
    "transfer": lambda a, t, p: e.TransferRequested(
        at=t, agent=a, target=clean_text(p.get("target", ""), 80),
        reason=clean_text(p.get("reason", ""), 200)),
    "consent": lambda a, t, p: e.ConsentGiven(at=t, agent=a),
    "complete-transfer": lambda a, t, p: e.TransferCompleteRequested(at=t, agent=a),
    "cancel-transfer": lambda a, t, p: e.TransferCancelRequested(at=t, agent=a),
    "accept": lambda a, t, p: e.TargetAnswered(at=t, agent=a, accepted=True),
    "decline": lambda a, t, p: e.TargetAnswered(at=t, agent=a, accepted=False),
    "leave": lambda a, t, p: e.LeaveRequested(at=t, agent=a),
    "note": lambda a, t, p: e.NoteAdded(at=t, agent=a, text=clean_text(p.get("text", ""), 2000)),
    "caller-info": lambda a, t, p: e.CallerInfoUpdated(
        at=t, agent=a, caller_name=clean_text(p.get("caller_name", ""), 80),
        purpose=clean_text(p.get("purpose", ""), 500), wanted=clean_text(p.get("wanted", ""), 200)),
    "end-call": lambda a, t, p: e.EndCallRequested(at=t, agent=a, ask_more=p.get("ask_more") == "1"),
    "promise": lambda a, t, p: e.FollowUpPromised(
        at=t, agent=a, text=clean_text(p.get("text", ""), 200),
        working_days=_whole(p.get("working_days", "0"))),
}
#: Follow-up actions go to the call log and the controller, not to a call's engine.
FOLLOWUP_ACTIONS = ("followup-done", "place-callback")
REFRESH_SECONDS = 60.0
FLUSH_WAIT_SECONDS = 2.0  # how long a follow-up write may take before the lists reload


class FollowUpLike(Protocol):
    """What the desk reads of a ``db.records.FollowUp`` (see the issue 4 contract)."""

    id: str
    call_id: str
    kind: str
    text: str
    number: str
    owner: str
    queue: str
    due: dt.date
    state: str

    def status(self, today: dt.date) -> str: ...


class FollowUpStore(Protocol):
    """The part of ``db.CallStore`` the desk uses for follow-ups."""

    async def list_followups(self, *, owner: str | None = None, include_done: bool = False,
                             today: dt.date) -> list[Any]: ...

    async def get_followup(self, id_or_prefix: str) -> Any | None: ...

    async def complete_followup(self, followup_id: str, *, by: str, at: float) -> Any | None: ...


def _whole(value: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _seconds(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0  # the engine refuses it with a clear message


class AgentDesk:
    """Implements the panel's ``Desk`` protocol on top of the live controller."""

    def __init__(self, controller: Controller, config: CallFlowConfig, *,
                 store: FollowUpStore | None = None, clock: Callable[[], float] = time.time,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.controller = controller
        self.config = config
        self.clock = clock
        # The call log holds the follow-ups; by default it is the controller's own.
        self.store: Any = store if store is not None else getattr(controller, "store", None)
        self.refresh_seconds = refresh_seconds
        self._listeners: dict[str, list[Listener]] = {}
        self._notices: dict[str, dict[str, Any]] = {}
        self._involved: dict[str, set[str]] = {}  # call id -> agents whose panels show it
        self._followups: dict[str, list[dict[str, Any]]] = {}  # agent -> their list, cached
        self._refreshes: dict[str, int] = {}  # agent -> number of the latest refresh started
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wrap_up_pushes: dict[str, float] = {}
        self._ticker: asyncio.Task[None] | None = None

    # -- Desk protocol ------------------------------------------------------

    def agent_names(self) -> list[str]:
        return [a.name for a in self.controller.roster]

    def view(self, agent: str) -> dict[str, Any]:
        status = self.controller.roster.get(agent)
        found = self.controller.call_of_agent(agent)
        state = "offline" if status is None or not status.registered else "available"
        if state == "available" and status is not None and status.in_wrap_up(self.clock()):
            state = "wrap-up"  # R5: the agent's wrap-up time after a call; no call offered
            self._push_when_wrap_up_ends(agent, status.wrap_up_until)
        call_view: dict[str, Any] | None = None
        script_key = state
        if found is not None:
            call, role = found
            engine = call.engine
            closing = _engine_view(engine, "closing_view")
            if role == "callback":
                state = script_key = "callback"
                call_view = _callback_call_view(call, closing)
            else:
                facts = engine.facts
                state = _state_for(engine.state.value, role)
                script_key = "target" if role == "target" and state != "on-call" else state
                if closing is not None and closing.get("stage") == "asked":
                    state, script_key = "on-call", "closing-asked"  # the agent is still talking
                call_view = {
                    "call_id": call.call_id,
                    "caller_number": facts.caller_number,
                    "caller_name": facts.stated_name or facts.caller_name,
                    "purpose": facts.purpose,
                    "wanted": facts.wanted,
                    "since": facts.connected_at or facts.created_at,
                    "hold": engine.hold_view(),
                    "transfer": engine.transfer_view(agent),
                    "closing": closing,
                    "callback": None,
                }
        followups = self.config.followups
        return {
            "agent": agent,
            "state": state,
            "call": call_view,
            "script": SCRIPT_LINES.get(script_key, "").format(company=self.config.company),
            "notice": self._notices.pop(agent, None),
            "hold_limits": list(self.config.hold.allowed_limits()),
            "default_hold_limit": self.config.hold.default_limit_seconds,
            "departments": [{"name": d.name, "number": d.number}
                            for d in self.config.departments],
            "agents": [{"name": a.name, "state": self._short_state(a.name)}
                       for a in self.controller.roster if a.name != agent],
            "promise_working_days": followups.promise_working_days,
            "max_working_days": followups.max_working_days,
            "followups": [dict(item) for item in self._followups.get(agent, [])],
        }

    def subscribe(self, agent: str, on_update: Listener) -> Callable[[], None]:
        self._listeners.setdefault(agent, []).append(on_update)
        self._schedule(self.refresh_followups(agent))  # the panel opened: its list, fresh
        self._start_ticker()

        def unsubscribe() -> None:
            listeners = self._listeners.get(agent, [])
            if on_update in listeners:
                listeners.remove(on_update)

        return unsubscribe

    async def act(self, agent: str, action: str, params: dict[str, str]) -> tuple[bool, str]:
        if action in FOLLOWUP_ACTIONS:
            return await self._followup_action(agent, action, params.get("followup_id", ""))
        build = ACTIONS.get(action)
        if build is None:
            return False, f"未知操作 unknown action {action!r}"
        due: dt.date | None = None
        if action == "promise":
            days = _whole(params.get("working_days", ""))
            if not 1 <= days <= self.config.followups.max_working_days:
                return False, (f"工作日数须为 1 到 {self.config.followups.max_working_days} · "
                               "working days out of range")
            if not clean_text(params.get("text", ""), 200):
                return False, "请填写承诺内容 · the promise needs words"
            due = self.config.due_date(self.clock(), days)
        event = build(agent, self.clock(), params)
        if not self.controller.agent_request(event):
            return False, "您当前没有通话 · you are not on a call"
        log.info("desk.action", agent=agent, action=action)
        if due is not None:
            return True, (f"已提交承诺，答复期限 {due.isoformat()}（{params['working_days']} 个工作日）"
                          f" · promise sent, due {due.isoformat()}")
        return True, "已提交 · sent"

    # -- follow-ups (R8) -------------------------------------------------------

    def today(self) -> dt.date:
        """The center's local date: due dates and "overdue" are counted on it."""
        return self.config.local_time(self.clock()).date()

    async def _followup_action(self, agent: str, action: str,
                               followup_id: str) -> tuple[bool, str]:
        store = self.store
        if store is None or not hasattr(store, "get_followup"):
            return False, "跟进记录暂不可用 · follow-ups are not available"
        try:
            followup = await store.get_followup(followup_id) if followup_id else None
        except LookupError:  # a prefix that matches several
            return False, "跟进编号不唯一，请用完整编号 · ambiguous follow-up id"
        if followup is None:
            return False, "没有这个跟进事项 · no such follow-up"
        if not _may_handle(followup, agent):
            log.warning("desk.followup_refused", agent=agent, followup_id=followup.id,
                        owner=followup.owner, action=action)
            return False, "这是其他坐席的跟进事项 · this follow-up is another agent's"
        if followup.state == "done":
            await self.refresh_followups()
            return False, "该跟进事项已完成 · already done"
        if action == "followup-done":
            ok, message = await self._complete(agent, followup)
        else:
            ok, message = await self._place_callback(agent, followup)
        log.info("desk.followup_action", agent=agent, action=action, followup_id=followup.id,
                 ok=ok)
        await self.refresh_followups()  # unowned callbacks are on every agent's list
        return ok, message

    async def _complete(self, agent: str, followup: Any) -> tuple[bool, str]:
        done = await self.store.complete_followup(followup.id, by=agent, at=self.clock())
        if done is None:
            return False, "没有这个跟进事项 · no such follow-up"
        return True, "已标记完成 · follow-up done"

    async def _place_callback(self, agent: str, followup: Any) -> tuple[bool, str]:
        """R8: agent first, then the customer — the controller dials; we only check and ask."""
        if not followup.number:
            return False, "该跟进事项没有电话号码 · no number to call"
        if self.controller.call_of_agent(agent) is not None:
            return False, "请先结束当前通话 · finish your current call first"
        place = getattr(self.controller, "place_callback", None)
        if place is None:
            return False, "暂不能回电：控制器尚不支持 · callbacks are not available yet"
        ok, message = await place(followup, agent)
        self.push(agent)
        return bool(ok), str(message or ("正在回电 · calling" if ok else "未能回电 · not placed"))

    async def refresh_followups(self, agent: str | None = None) -> None:
        """Reload ``agent``'s follow-ups (default: every agent with an open panel) and push."""
        agents = [agent] if agent is not None else [a for a, ls in self._listeners.items() if ls]
        for name in agents:
            await self._refresh_one(name)

    async def _refresh_one(self, agent: str) -> None:
        store = self.store
        if store is None or not hasattr(store, "list_followups"):
            return
        number = self._refreshes[agent] = self._refreshes.get(agent, 0) + 1
        today = self.today()
        try:
            items = await store.list_followups(owner=agent, today=today)
        except Exception as exc:  # noqa: BLE001 - the call log may be briefly down; keep the list
            log.warning("desk.followups_unavailable", agent=agent, error=repr(exc))
            return
        if self._refreshes.get(agent) != number:
            return  # a later refresh started meanwhile: its answer is the newer one
        fresh = [_followup_view(item, today) for item in items]
        if fresh != self._followups.get(agent):
            self._followups[agent] = fresh
            self.push(agent)

    def followups_changed(self, followup: object = None) -> None:
        """The controller recorded (or changed) a follow-up: every open panel's list is reloaded.

        Every panel, not only the owner's: an unowned callback is on every
        agent's list. (The promise's owner is told its due date by the engine's
        "followup" notice.) ``followup`` is accepted and not needed.
        """
        self._schedule(self._refresh_after_write())

    async def _refresh_after_write(self) -> None:
        """Let the controller's queued write reach the database, then reload the lists.

        The call log group-commits: ``followup_added`` only queues the row, so
        reading at once would miss the follow-up just promised and the panel
        would show it only at the next periodic refresh. A log that cannot
        commit (database down) is waited for at most ``FLUSH_WAIT_SECONDS``;
        the lists are reloaded anyway (and again at the next refresh).
        """
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            try:
                await flush(timeout=FLUSH_WAIT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - the refresh still runs
                log.warning("desk.followups_flush_failed", error=repr(exc))
        await self.refresh_followups()

    def _schedule(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the event loop, kept referenced until done; without a loop, skip it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_ticker(self) -> None:
        if self._ticker is not None and not self._ticker.done():
            return
        try:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="desk-followups")
        except RuntimeError:
            self._ticker = None

    async def _tick(self) -> None:
        """Every ``refresh_seconds`` while a panel is open: due dates pass, others change lists."""
        while any(self._listeners.values()):
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh_followups()
            except Exception:  # the next tick tries again
                log.exception("desk.followups_refresh_failed")

    async def close(self) -> None:
        """Stop the periodic refresh and any refresh under way (at shutdown)."""
        pending = [t for t in (self._ticker, *self._tasks) if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._ticker = None

    # -- controller observer hooks --------------------------------------------

    def on_log(self, call_id: str, caller_number: str, entry: c.Log) -> None:
        self._push_involved(call_id)

    def on_end(self, call_id: str, caller_number: str, ended: c.CallEnded) -> None:
        self._involved.pop(call_id, None)
        self.push_all()  # the agents are free again: everyone's list of colleagues changes

    def _push_involved(self, call_id: str) -> None:
        """Only the panels of agents on this call need a new view (a busy center logs a lot)."""
        call = self.controller.calls.get(call_id)
        if call is None:
            self.push_all()
            return
        facts = getattr(call.engine, "facts", None)
        now = {agent for agent in self._listeners
               if call.engine.agent_role(agent) is not None
               or getattr(facts, "agent", None) == agent}
        before = self._involved.get(call_id, set())
        self._involved[call_id] = now
        for agent in now | before:  # also those the call just let go (rolled over, transferred)
            self.push(agent)

    def on_agent_notice(self, agent: str, kind: str, data: dict[str, Any]) -> None:
        """Engine notices: errors and hold alerts become a message on the agent's panel."""
        text = NOTICE_TEXT.get(kind)
        if kind == "error":
            text = str(data.get("message") or "操作未执行 · request refused")
        if text:
            self._tell(agent, kind, data, text=text)
        self.push(agent)

    def _tell(self, agent: str, kind: str, data: dict[str, Any], *, text: str = "") -> None:
        """A notice (a line in the panel's messages) for ``agent``'s open panels."""
        text = text or NOTICE_TEXT.get(kind, "")
        level = "warn" if kind in ("error", "hold-countdown") else "info"
        message = {"kind": "notice", "text": text.format(**_fmt(data)), "level": level}
        for listener in list(self._listeners.get(agent, [])):
            try:
                listener(message)
            except Exception:
                log.exception("desk.push_failed", agent=agent)

    def push(self, agent: str) -> None:
        listeners = list(self._listeners.get(agent, []))
        if not listeners:
            return
        view = self.view(agent)
        for listener in listeners:
            try:
                listener(view)
            except Exception:  # a broken panel connection must not break a call
                log.exception("desk.push_failed", agent=agent)

    def _push_when_wrap_up_ends(self, agent: str, until: float) -> None:
        """Show "available" again the moment the wrap-up time is over."""
        if self._wrap_up_pushes.get(agent) == until:
            return
        self._wrap_up_pushes[agent] = until
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(max(0.0, until - self.clock()) + 0.05, self.push, agent)

    def push_all(self) -> None:
        for agent in list(self._listeners):
            self.push(agent)

    def _short_state(self, agent: str) -> str:
        status = self.controller.roster.get(agent)
        if status is None or not status.registered:
            return "offline"
        return "busy" if status.engaged_by else "available"


def _engine_view(engine: Any, name: str) -> dict[str, Any] | None:
    """An optional engine view (``closing_view``, ``callback_view``); None if absent."""
    read = getattr(engine, name, None)
    if read is None:
        return None
    value = read()
    return dict(value) if isinstance(value, dict) else None


def _callback_call_view(call: Any, closing: dict[str, Any] | None) -> dict[str, Any]:
    """A callback placed by this agent (R8): the customer's number, the stage, the opening line."""
    engine = call.engine
    callback = _engine_view(engine, "callback_view") or {}
    facts = getattr(engine, "facts", None)
    return {
        "call_id": getattr(call, "call_id", ""),
        "caller_number": str(callback.get("number") or getattr(facts, "caller_number", "") or ""),
        "caller_name": str(getattr(facts, "stated_name", "") or getattr(facts, "caller_name", "")
                           or ""),
        "purpose": str(getattr(facts, "purpose", "") or ""),
        "wanted": "",
        "since": getattr(facts, "connected_at", None) or getattr(facts, "created_at", None),
        "hold": None,
        "transfer": None,
        "closing": closing,
        "callback": {**dict.fromkeys(("stage", "number", "opening_line", "followup_id"), ""),
                     **callback},
    }


def _may_handle(followup: Any, agent: str) -> bool:
    """An agent works on their own follow-ups, and on callbacks nobody owns yet (R8)."""
    owner = str(getattr(followup, "owner", "") or "")
    return owner == agent or (not owner and getattr(followup, "kind", "") == "callback")


def _followup_view(followup: Any, today: dt.date) -> dict[str, Any]:
    """One line of the panel's follow-up list; the status is the one for ``today``."""
    due = getattr(followup, "due", None)
    status_of = getattr(followup, "status", None)
    status = status_of(today) if callable(status_of) else str(getattr(followup, "state", "open"))
    return {
        "id": str(followup.id),
        "kind": str(getattr(followup, "kind", "")),
        "text": str(getattr(followup, "text", "")),
        "number": str(getattr(followup, "number", "") or ""),
        "due": due.isoformat() if isinstance(due, dt.date) else str(due or ""),
        "status": status,
        "owner": str(getattr(followup, "owner", "") or ""),
        "queue": str(getattr(followup, "queue", "") or ""),
        "call_id": str(getattr(followup, "call_id", "") or ""),
    }


def _state_for(engine_state: str, role: str) -> str:
    if role == "ringing":
        return "ringing"
    if role == "target":
        return "transfer" if engine_state.startswith("transfer") else "on-call"
    if engine_state.startswith("hold"):
        return "holding"
    if engine_state.startswith("transfer"):
        return "transfer"
    if engine_state in ("closing", "releasing", "ended"):
        return "wrap-up"
    return "on-call"


__all__ = ["AgentDesk"]
