"""The agent panel's window on the controller: what each agent should see, and their requests.

An agent's panel shows one thing at a time — their state, the caller they
are with, and the script line for the moment — and every button is turned
into an engine event for the call that agent is on. Which call that is, and
in what role (talking, holding, consulting as a transfer target), is read
from the live engines; nothing here decides etiquette.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
    "offline": "您的话机未注册：请检查软电话。",
}

NOTICE_TEXT = {
    "hold-countdown": "等待时限还剩 {seconds_left} 秒 · hold limit in {seconds_left} s",
    "transfer-offer": "转接来电：{caller_number} {caller_name}，目的：{purpose} · transfer offered",
    "script": "{line}",
    "connected": "已接通 · connected",
}


def _fmt(data: dict[str, Any]) -> dict[str, Any]:
    """Missing keys read as empty, numbers rounded, so a notice never fails to format."""
    out: dict[str, Any] = {k: (round(v) if isinstance(v, float) else v) for k, v in data.items()}
    for key in ("seconds_left", "caller_number", "caller_name", "purpose", "line"):
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
}


def _seconds(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0  # the engine refuses it with a clear message


class AgentDesk:
    """Implements the panel's ``Desk`` protocol on top of the live controller."""

    def __init__(self, controller: Controller, config: CallFlowConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.controller = controller
        self.config = config
        self.clock = clock
        self._listeners: dict[str, list[Listener]] = {}
        self._notices: dict[str, dict[str, Any]] = {}
        self._involved: dict[str, set[str]] = {}  # call id -> agents whose panels show it

    # -- Desk protocol ------------------------------------------------------

    def agent_names(self) -> list[str]:
        return [a.name for a in self.controller.roster]

    def view(self, agent: str) -> dict[str, Any]:
        status = self.controller.roster.get(agent)
        found = self.controller.call_of_agent(agent)
        state = "offline" if status is None or not status.registered else "available"
        call_view: dict[str, Any] | None = None
        script_key = state
        if found is not None:
            call, role = found
            engine = call.engine
            facts = engine.facts
            state = _state_for(engine.state.value, role)
            script_key = "target" if role == "target" and state != "on-call" else state
            call_view = {
                "call_id": call.call_id,
                "caller_number": facts.caller_number,
                "caller_name": facts.stated_name or facts.caller_name,
                "purpose": facts.purpose,
                "wanted": facts.wanted,
                "since": facts.connected_at or facts.created_at,
                "hold": engine.hold_view(),
                "transfer": engine.transfer_view(agent),
            }
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
        }

    def subscribe(self, agent: str, on_update: Listener) -> Callable[[], None]:
        self._listeners.setdefault(agent, []).append(on_update)

        def unsubscribe() -> None:
            listeners = self._listeners.get(agent, [])
            if on_update in listeners:
                listeners.remove(on_update)

        return unsubscribe

    async def act(self, agent: str, action: str, params: dict[str, str]) -> tuple[bool, str]:
        build = ACTIONS.get(action)
        if build is None:
            return False, f"未知操作 unknown action {action!r}"
        event = build(agent, self.clock(), params)
        if not self.controller.agent_request(event):
            return False, "您当前没有通话 · you are not on a call"
        log.info("desk.action", agent=agent, action=action)
        return True, "已提交 · sent"

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
        now = {agent for agent in self._listeners
               if call.engine.agent_role(agent) is not None or call.engine.facts.agent == agent}
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
            level = "warn" if kind in ("error", "hold-countdown") else "info"
            listeners = list(self._listeners.get(agent, []))
            message = {"kind": "notice", "text": text.format(**_fmt(data)), "level": level}
            for listener in listeners:
                try:
                    listener(message)
                except Exception:
                    log.exception("desk.push_failed", agent=agent)
        self.push(agent)

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

    def push_all(self) -> None:
        for agent in list(self._listeners):
            self.push(agent)

    def _short_state(self, agent: str) -> str:
        status = self.controller.roster.get(agent)
        if status is None or not status.registered:
            return "offline"
        return "busy" if status.engaged_by else "available"


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
