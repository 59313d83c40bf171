"""``liyi demo``: the whole product on one machine, no phone line needed.

Starts the Asterisk simulator, the controller with its web admin and a SQLite
call log, then rings in a handful of calls that show the rules at work — an
ordinary call, a caller who gives up while it rings, an agent who lets it
ring three times so the call rolls over, an agent who hangs up first — and
prints each call's timeline as it happens, then its compliance line.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript
from callflow import commands as c
from callflow.calendar import WorkCalendar
from callflow.config import AgentConfig, QueueConfig, RingCadence
from callflow.flow import GREETING, MENU, QUEUE, RECORD_NAME, Flow, Step
from liyi.app import Service
from liyi.settings import AsteriskSettings, Settings

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings" / "liyi"

RULE_NAMES = {"R1": "三声内接听", "R2": "问候语", "R3": "来电信息", "R4": "等待", "R5": "排队",
              "R6": "转接", "R7": "离开需许可", "R8": "结束与承诺", "R9": "客户先挂机",
              "R10": "记录"}

#: The demo's open flow: the key menu of the example config, every branch to any agent.
DEMO_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"), ("2", "repair"), ("3", "consult")),
         default="consult", repeat=2, timeout_seconds=4.0),
    Step("consult", QUEUE),
    Step("repair", RECORD_NAME, prompt="name-ask", max_seconds=4.0, next="consult"),
))
MENU_1 = {"menu-main": "1"}  # most demo callers know what they want


@dataclass(frozen=True)
class Scenario:
    title: str
    caller_number: str
    caller_name: str
    caller: CallerScript
    agents: Callable[[list[str]], dict[str, AgentScript]]  # by agent order (longest idle first)
    # What the agents (through the panel's desk, or their phone keys) and the caller do
    # once the call is connected; None: nothing beyond the scripts.
    drive: Callable[[DemoCall], Awaitable[None]] | None = None


@dataclass
class DemoCall:
    """A scenario's handle on its call: the simulator, the agents' desk, the caller."""

    sim: AsteriskSimulator
    desk: Any
    call: Any
    k: float  # how long people take, scaled for --fast

    async def until(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline or self.call.ended.is_set():
                raise TimeoutError("the scenario's call did not get there")
            await asyncio.sleep(0.05)

    def heard(self, what: str) -> int:
        return sum(1 for h in self.call.heard if h.what == what)

    def heard_prompt(self, name: str) -> bool:
        return any(h.what == "prompt" and h.detail.endswith("/" + name) for h in self.call.heard)

    async def agent(self, agent: str, action: str, **params: str) -> None:
        ok, message = await self.desk.act(agent, action, params)
        if not ok:
            raise RuntimeError(f"{agent} {action}: {message}")

    def first_agent(self) -> str:
        return str(next(h.detail for h in self.call.heard if h.what == "connected"))

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.k)


async def _note_caller(d: DemoCall) -> None:
    """What every agent does first (R3): take the caller's name and purpose in the panel."""
    await d.until(lambda: d.heard("connected") >= 1)
    await d.agent(d.first_agent(), "caller-info", caller_name=d.call.caller_name or "—",
                  purpose="咨询")


async def _hold_kept(d: DemoCall) -> None:
    await d.until(lambda: d.heard("connected") >= 1)
    agent = d.first_agent()
    await d.agent(agent, "caller-info", caller_name="赵女士", purpose="查询订单")
    await d.pause(1.0)
    await d.agent(agent, "hold", reason="查询订单信息", limit_seconds="60")
    await d.until(lambda: d.heard_prompt("hold-announce-60"))
    await d.pause(4.0)
    await d.agent(agent, "resume")
    await d.until(lambda: d.heard("connected") >= 2)
    await d.pause(1.5)
    d.sim.caller_hangs_up(d.call)


async def _hold_limit(d: DemoCall) -> None:
    await d.until(lambda: d.heard("connected") >= 1)
    agent = d.first_agent()
    await d.agent(agent, "caller-info", caller_name="钱先生", purpose="账户问题")
    leg = d.sim.legs_of(agent)[-1].channel_id
    for digit in "*1":  # the softphone key code: hold with the default limit... then 30 s below
        d.sim.agent_sends_dtmf(leg, digit)
    await d.until(lambda: d.heard_prompt("hold-announce-60"))
    await d.agent(agent, "resume")
    await d.until(lambda: d.heard("connected") >= 2)
    await d.agent(agent, "hold", reason="核对账户", limit_seconds="30")
    await d.until(lambda: d.heard_prompt("hold-limit-ask"), timeout=90)
    d.sim.caller_sends_dtmf(d.call, "2")  # "back to the call, please"
    await d.until(lambda: d.heard("connected") >= 3)
    await d.pause(1.0)
    d.sim.caller_hangs_up(d.call)


def _transfer(outcome: str) -> Callable[[DemoCall], Awaitable[None]]:
    async def drive(d: DemoCall) -> None:
        await d.until(lambda: d.heard("connected") >= 1)
        first = d.first_agent()
        target = "agent2" if first != "agent2" else "agent1"
        await d.agent(first, "caller-info", caller_name="孙先生", purpose="售后维修", wanted="售后")
        await d.agent(first, "transfer", target=target, reason="售后维修")
        await d.until(lambda: d.heard_prompt("transfer-consent"))
        if outcome == "refused":
            d.sim.caller_sends_dtmf(d.call, "2")
            await d.until(lambda: d.heard("connected") >= 2)
        else:
            d.sim.caller_sends_dtmf(d.call, "1")
            if outcome == "no-answer":
                await d.until(lambda: d.heard_prompt("transfer-failed"), timeout=60)
            else:
                await d.until(lambda: bool(d.sim.legs_of(target))
                              and d.sim.legs_of(target)[-1].answered_at is not None, timeout=60)
                await d.pause(1.5)  # the two agents talk: who is calling and why
                await d.agent(target, "accept" if outcome == "accepted" else "decline")
                if outcome == "accepted":
                    await d.pause(0.5)
                    await d.agent(first, "complete-transfer")
                    await d.until(lambda: [h.detail for h in d.call.heard
                                           if h.what == "connected"][-1] == target)
                else:
                    await d.until(lambda: d.heard_prompt("transfer-failed"))
        await d.pause(1.5)
        d.sim.caller_hangs_up(d.call)

    return drive


async def _close_and_call_back(d: DemoCall) -> None:
    """R8: a promise with its due date, the closing question, thanks; then the callback."""
    await d.until(lambda: d.heard("connected") >= 1)
    agent = d.first_agent()
    await d.agent(agent, "caller-info", caller_name="郑先生", purpose="发票问题")
    await d.pause(1.0)
    await d.agent(agent, "promise", text="三个工作日后给您答复", working_days="3")
    await d.agent(agent, "end-call", ask_more="1")
    await d.until(lambda: d.heard_prompt("closing-more"))
    await d.pause(1.5)  # "没有了，谢谢"
    await d.agent(agent, "end-call", ask_more="0")
    await asyncio.wait_for(d.call.ended.wait(), 60)
    # The follow-up is kept: the agent calls back from the panel, their own phone rings first.
    await asyncio.sleep(0.5)
    store = d.desk.store if hasattr(d.desk, "store") else None
    if store is None:
        return
    await store.flush()
    promised = [f for f in await store.list_followups(owner=agent, today=d.desk.today())
                if f.number == d.call.caller_number and f.kind == "promise"]
    if not promised:
        raise RuntimeError("the promise is not in the follow-ups")
    d.sim.customer(d.call.caller_number, answer_after=1.5 * d.k, hang_up_after=3.0 * d.k)
    await d.agent(agent, "place-callback", followup_id=promised[0].id)
    deadline = time.monotonic() + 60
    while not any(c.ended.is_set() for c in d.sim.calls_to(d.call.caller_number)):
        if time.monotonic() > deadline:
            raise TimeoutError("the callback did not reach the customer")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the callback's record reaches the log


def scenarios(fast: bool) -> list[Scenario]:
    k = 0.2 if fast else 1.0  # how long people take to do things
    answers = AgentScript(answer_after=1.5 * k)
    return [
        Scenario("普通来电 ordinary call", "13800138000", "张先生",
                 CallerScript(hang_up_after_connected=3.0 * k, keys_on=MENU_1),
                 lambda order: {name: answers for name in order}, drive=_note_caller),
        Scenario("振铃中挂机 caller hangs up while ringing", "13911112222", "",
                 CallerScript(hang_up_while_ringing_after=0.4 * k if not fast else 0.05),
                 lambda order: {name: answers for name in order}),
        Scenario("三声未接转下一位 agent lets it ring 3 times, next agent", "02188886666", "李女士",
                 CallerScript(hang_up_after_connected=2.0 * k, keys_on=MENU_1),
                 lambda order: {order[0]: AgentScript(answer_after=None),
                                **{name: answers for name in order[1:]}}, drive=_note_caller),
        Scenario("坐席先挂机 agent hangs up first", "075566667777", "王先生",
                 CallerScript(hang_up_after_prompt=("closing-thanks", 1.5 * k), keys_on=MENU_1),
                 lambda order: {name: AgentScript(answer_after=1.5 * k, hang_up_after=2.0 * k)
                                for name in order}, drive=_note_caller),
        Scenario("等待在时限内 hold kept within its limit", "13612345678", "赵女士",
                 CallerScript(max_seconds=300, keys_on=MENU_1), lambda order: {n: answers for n in order},
                 drive=_hold_kept),
        Scenario("等待到时限 hold reaches its limit (*1 key code, then a 30 s hold)",
                 "13787654321", "钱先生", CallerScript(max_seconds=300, keys_on=MENU_1),
                 lambda order: {n: answers for n in order}, drive=_hold_limit),
        Scenario("热转接：接受 warm transfer accepted", "13511112222", "孙先生",
                 CallerScript(max_seconds=300, keys_on=MENU_1), lambda order: {n: answers for n in order},
                 drive=_transfer("accepted")),
        Scenario("热转接：无人接听 warm transfer, target does not answer", "13533334444", "孙先生",
                 CallerScript(max_seconds=300, keys_on=MENU_1),
                 lambda order: {order[0]: answers, **{n: AgentScript(answer_after=None)
                                                      for n in order[1:]}},
                 drive=_transfer("no-answer")),
        Scenario("热转接：对方拒接 warm transfer declined", "13555556666", "孙先生",
                 CallerScript(max_seconds=300, keys_on=MENU_1), lambda order: {n: answers for n in order},
                 drive=_transfer("declined")),
        Scenario("热转接：客户不同意 caller refuses the transfer", "13577778888", "孙先生",
                 CallerScript(max_seconds=300, keys_on=MENU_1), lambda order: {n: answers for n in order},
                 drive=_transfer("refused")),
        Scenario("菜单：报修并录下姓名 menu key 2, the caller's name recorded (R3)", "13688889999",
                 "周先生", CallerScript(hang_up_after_connected=3.0 * k, keys_on={"menu-main": "2"}),
                 lambda order: {name: answers for name in order}, drive=_note_caller),
        Scenario("排队过长：登记回电 long wait, the caller leaves a callback number (R5)",
                 "13722223333", "吴女士",
                 CallerScript(max_seconds=300, keys_on={**MENU_1, "callback-offer": "1",
                                                         "callback-confirm": "1"},
                              hang_up_after_prompt=("callback-recorded", 1.0 * k)),
                 lambda order: {name: AgentScript(answer_after=None) for name in order}),
        Scenario("结束通话并承诺答复 agent closes with the question, promises a reply (R8)",
                 "13844445555", "郑先生",
                 CallerScript(max_seconds=300, keys_on=MENU_1,
                              hang_up_after_prompt=("closing-thanks", 1.5 * k)),
                 lambda order: {name: answers for name in order}, drive=_close_and_call_back),
    ]


def prompt_seconds(default: float) -> Callable[[str], float]:
    """How long the simulator 'plays' a prompt: the real recording's length when we have it."""
    cache: dict[str, float] = {}

    def length(media: str) -> float:
        if media not in cache:
            name = media.rsplit("/", 1)[-1]
            try:
                with wave.open(str(RECORDINGS / f"{name}.wav")) as w:
                    cache[media] = w.getnframes() / float(w.getframerate())
            except (OSError, wave.Error, EOFError):
                cache[media] = default
        return cache[media]

    return length


class TerminalTimeline:
    """Prints each call's timeline live, then its compliance line."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.color = out.isatty()
        self.numbers: dict[str, int] = {}
        self.first_ring: dict[str, float] = {}
        self.done: dict[str, c.CallEnded] = {}

    def _tag(self, call_id: str, caller: str) -> str:
        n = self.numbers.setdefault(call_id, len(self.numbers) + 1)
        return f"[通话{n} {caller or '?'}]"

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def on_log(self, call_id: str, caller_number: str, entry: c.Log) -> None:
        start = self.first_ring.setdefault(
            call_id, float(entry.detail.get("first_ring_at") or entry.at))
        detail = " ".join(
            f"{k}=+{v - start:.2f}s" if k.endswith("_at") and isinstance(v, float) else f"{k}={_short(v)}"
            for k, v in entry.detail.items()
            if k not in ("first_ring_at", "caller_number") and v not in ("", None))
        print(f"{self._tag(call_id, caller_number)} +{entry.at - start:6.2f}s "
              f"{self._paint(entry.kind, '1')}  {detail}", file=self.out, flush=True)

    def on_end(self, call_id: str, caller_number: str, ended: c.CallEnded) -> None:
        self.done[call_id] = ended
        parts = []
        for rule, record in ended.compliance.items():
            status = record["status"]
            if rule not in RULE_NAMES:
                continue
            mark = {"kept": self._paint("kept", "32"), "broken": self._paint("BROKEN", "31")}.get(
                status, self._paint("n/a", "90"))
            parts.append(f"{rule} {mark}")
        print(f"{self._tag(call_id, caller_number)} compliance: {' · '.join(parts)}"
              f"  (first hang-up: {ended.first_hangup})", file=self.out, flush=True)


def _short(value: Any) -> str:
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def demo_settings(base: Settings, *, fast: bool) -> Settings:
    cfg = base.callflow
    agents = cfg.agents or (AgentConfig("agent1", "PJSIP/agent1"), AgentConfig("agent2", "PJSIP/agent2"))
    if fast:
        cfg = replace(cfg, cadence=RingCadence(on=0.1, off=0.4), answer_delay_seconds=0.1,
                      agent_retry_seconds=0.2)
    # The demo always shows the open flow, whatever today is on the center's calendar.
    k = 0.2 if fast else 1.0
    queue = QueueConfig(announce="position", announce_every_seconds=10.0 * k,
                        max_wait_seconds=25.0 * k, offer_timeout_seconds=6.0,
                        number_timeout_seconds=8.0)
    return replace(base, callflow=replace(cfg, agents=agents, open_hours=(), holidays=frozenset(),
                                          calendar=WorkCalendar(), open_flow=DEMO_FLOW,
                                          departments=(), queue=queue))


async def run_demo(settings: Settings, *, once: bool, fast: bool, out: TextIO = sys.stdout,
                   stop: asyncio.Event | None = None) -> dict[str, c.CallEnded]:
    settings = demo_settings(settings, fast=fast)
    sim = AsteriskSimulator(prompt_seconds=prompt_seconds(0.3 if fast else 1.5)
                            if not fast else 0.15)
    await sim.start()
    for agent in settings.callflow.agents:
        sim.add_agent(agent.endpoint.split("/", 1)[-1])
    asterisk = AsteriskSettings(ari_url=sim.ari_url, ari_user="liyi", ari_password="liyi-sim",
                                ami_host="127.0.0.1", ami_port=sim.ami_port, ami_user="liyi",
                                ami_secret="liyi-sim")
    timeline = TerminalTimeline(out)
    service = Service(settings, asterisk, observers=[timeline])
    try:
        try:
            await service.start()
        except OSError as exc:  # the web port is taken: take any free one
            print(f"web port {settings.web_port} unavailable ({exc.strerror}); using a free port",
                  file=out)
            await service.stop()
            service = Service(replace(settings, web_port=0), asterisk, observers=[timeline])
            await service.start()
        await service.wait_connected()
        print(f"liyi demo — simulator at {sim.ari_url}, call log {settings.database_url}", file=out)
        if service.web_url:
            print(f"web admin: {service.web_url}", file=out)
            await _demo_panel_accounts(service, out)
        for scenario in scenarios(fast):
            order = _agents_in_offer_order(service)
            for name, script in scenario.agents(order).items():
                sim.set_agent_script(name, script)
            print(f"\n── {scenario.title}", file=out, flush=True)
            call = await sim.place_call(scenario.caller_number, caller_name=scenario.caller_name,
                                        script=scenario.caller)
            if scenario.drive is not None:
                try:
                    await scenario.drive(DemoCall(sim, service.desk, call, 0.3 if fast else 1.0))
                except (TimeoutError, RuntimeError) as exc:
                    print(f"   (scenario did not go as planned: {exc})", file=out, flush=True)
                    sim.caller_hangs_up(call)
            await asyncio.wait_for(call.ended.wait(), timeout=180)
            await _settle(service, len(timeline.done) + 1)
        await service.store.flush()
        print(f"\n{len(timeline.done)} calls logged. See them: liyi calls   "
              f"(one call: liyi calls show ID)", file=out, flush=True)
        if not once:
            print("demo running; Ctrl-C to stop", file=out, flush=True)
            await (stop or asyncio.Event()).wait()
    finally:
        await service.stop()
        await sim.stop()
    return timeline.done


DEMO_ADMIN = "demo-admin"


async def _demo_panel_accounts(service: Service, out: TextIO) -> None:
    """Give the demo a signed-in way in, with passwords made up now and printed once.

    No default password: the demo admin (``demo-admin``) gets a fresh random
    password every run, and demo agents without a password of their own get
    one random password for this run.
    """
    accounts = service.accounts
    if accounts is None:
        return
    admin_password = secrets.token_urlsafe(12)
    if await accounts.role_of(DEMO_ADMIN) is None:
        await accounts.add(DEMO_ADMIN, admin_password, "admin", actor="demo")
    else:
        await accounts.reset_password(DEMO_ADMIN, admin_password, actor="demo")
    print(f"web admin sign-in: {service.web_url}login  {DEMO_ADMIN} / {admin_password}",
          file=out)
    have = set(await accounts.names())
    agent_password = secrets.token_urlsafe(9)
    fresh = [a.name for a in service.settings.callflow.agents if a.name not in have]
    for name in fresh:
        await accounts.set_password(name, agent_password, actor="demo")
    if fresh:
        print(f"agent panel: {service.web_url}panel  (demo sign-in: {fresh[0]} / "
              f"{agent_password}; the same for {', '.join(fresh)})", file=out)
    else:
        print(f"agent panel: {service.web_url}panel  (agents sign in with their own passwords)",
              file=out)


def _agents_in_offer_order(service: Service) -> list[str]:
    assert service.controller is not None
    agents = sorted(service.controller.roster, key=lambda a: (a.idle_since, a.name))
    return [a.name for a in agents]


async def _settle(service: Service, ended: int, timeout: float = 10.0) -> None:
    """Wait until the controller has closed the call the simulator just ended."""
    assert service.controller is not None
    deadline = time.monotonic() + timeout
    while service.controller.calls_ended < ended and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # agents' phones settle back to idle


def main(settings: Settings, *, once: bool, fast: bool) -> int:
    stop = asyncio.Event()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        import signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        demo = asyncio.create_task(run_demo(settings, once=once, fast=fast, stop=stop))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({demo, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if demo in done:
            stopper.cancel()
            demo.result()
        else:  # Ctrl-C in the middle of the calls: stop everything cleanly
            demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo

    asyncio.run(go())
    print("demo stopped.")
    return 0
