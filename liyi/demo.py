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
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from ari_handlers.simulator import AgentScript, AsteriskSimulator, CallerScript
from callflow import commands as c
from callflow.config import AgentConfig, RingCadence
from liyi.app import Service
from liyi.settings import AsteriskSettings, Settings

RECORDINGS = Path(__file__).resolve().parent.parent / "recordings" / "liyi"

RULE_NAMES = {"R1": "三声内接听", "R2": "问候语", "R9": "客户先挂机", "R10": "记录"}


@dataclass(frozen=True)
class Scenario:
    title: str
    caller_number: str
    caller_name: str
    caller: CallerScript
    agents: Callable[[list[str]], dict[str, AgentScript]]  # by agent order (longest idle first)


def scenarios(fast: bool) -> list[Scenario]:
    k = 0.2 if fast else 1.0  # how long people take to do things
    answers = AgentScript(answer_after=1.5 * k)
    return [
        Scenario("普通来电 ordinary call", "13800138000", "张先生",
                 CallerScript(hang_up_after_connected=3.0 * k),
                 lambda order: {name: answers for name in order}),
        Scenario("振铃中挂机 caller hangs up while ringing", "13911112222", "",
                 CallerScript(hang_up_while_ringing_after=0.4 * k if not fast else 0.05),
                 lambda order: {name: answers for name in order}),
        Scenario("三声未接转下一位 agent lets it ring 3 times, next agent", "02188886666", "李女士",
                 CallerScript(hang_up_after_connected=2.0 * k),
                 lambda order: {order[0]: AgentScript(answer_after=None),
                                **{name: answers for name in order[1:]}}),
        Scenario("坐席先挂机 agent hangs up first", "075566667777", "王先生",
                 CallerScript(hang_up_after_prompt=("closing-thanks", 1.5 * k)),
                 lambda order: {name: AgentScript(answer_after=1.5 * k, hang_up_after=2.0 * k)
                                for name in order}),
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
        cfg = replace(cfg, cadence=RingCadence(on=0.1, off=0.4), answer_guard_seconds=0.03,
                      agent_retry_seconds=0.2)
    return replace(base, callflow=replace(cfg, agents=agents, open_hours=(), holidays=frozenset()))


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
        for scenario in scenarios(fast):
            order = _agents_in_offer_order(service)
            for name, script in scenario.agents(order).items():
                sim.set_agent_script(name, script)
            print(f"\n── {scenario.title}", file=out, flush=True)
            call = await sim.place_call(scenario.caller_number, caller_name=scenario.caller_name,
                                        script=scenario.caller)
            await asyncio.wait_for(call.ended.wait(), timeout=120)
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
