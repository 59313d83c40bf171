"""The etiquette on a real Asterisk 22: SIPp callers, baresip agents, `liyi run`.

Each test starts a private Asterisk from the project's own ``asterisk-conf/``
(``tests/asterisk_rig.py``), registers the agents' softphones, starts the
controller as an operator would and places real SIP calls. What is asserted
is what people on the line got: SIP timings and who sent BYE (SIPp), whether
and when an agent's phone rang (baresip), the prompts, music and bridges
Asterisk itself logged, and the call log liyi wrote.

Run only this tier with ``pytest -m asterisk``; without an Asterisk build it
is skipped with one line saying how to get one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.asterisk_rig import (
    AMI_SECRET,
    ARI_PASSWORD,
    CARRIER_IP,
    HOW_TO_ENABLE,
    ROOT,
    CallerPlan,
    CallerResult,
    LiyiProcess,
    PrivateAsterisk,
    Softphone,
    caller_alone_spans,
    find_prefix,
    make_test_prompts,
    read_log,
    rig_config,
    run_caller,
    run_stranger,
    tools_missing,
)

PREFIX = find_prefix()
pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(PREFIX is None or bool(tools_missing()),
                       reason=HOW_TO_ENABLE if PREFIX is None
                       else f"real-Asterisk tier skipped: {', '.join(tools_missing())} missing "
                            "(bash .ci/asterisk installs them)"),
]

CALLER = "PJSIP/carrier-"


@pytest.fixture(scope="session")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped prompts cut to 1.2 s, but the department announcement kept whole (issue 8.4)."""
    dest = tmp_path_factory.mktemp("prompts")
    make_test_prompts(ROOT / "recordings" / "liyi", dest)
    shutil.copy(ROOT / "recordings" / "liyi" / "transfer-announce.wav", dest / "transfer-announce.wav")
    return dest


class Rig:
    """One private Asterisk with its phones and controller, torn down after the test."""

    def __init__(self, home: Path, prompts: Path) -> None:
        assert PREFIX is not None
        self.home = home
        self.ast = PrivateAsterisk(prefix=PREFIX, home=home / "asterisk")
        self.ast.configure(prompts)
        self.phones: dict[str, Softphone] = {}
        self.liyi: LiyiProcess | None = None
        self.db = home / "calls.db"
        self.started = time.time()

    async def phone(self, name: str, *, auto_answer: bool = False) -> Softphone:
        phone = Softphone(name, self.ast, self.home, auto_answer=auto_answer)
        self.phones[name] = phone
        await phone.start()
        return phone

    async def run_liyi(self, **overrides: Any) -> LiyiProcess:
        self.liyi = LiyiProcess(rig_config(self.ast, self.db, **overrides), self.home)
        await self.liyi.start()
        # AMI tells the controller which phones are registered: wait until it knows them all.
        for name in self.phones:
            await self.liyi.wait_log(lambda r, n=name: r.get("event") == "agent.phone"
                                     and r.get("agent") == n and r.get("registered"), 15)
        return self.liyi

    async def call(self, plan: CallerPlan, name: str = "caller", **kw: Any) -> CallerResult:
        return await run_caller(self.ast, plan, self.home / "sipp", name=name, **kw)

    async def settle(self, seconds: float = 1.0) -> None:
        """Let the last hang-ups and log writes land."""
        await asyncio.sleep(seconds)

    async def calls(self) -> list[Any]:
        """The call log as liyi wrote it (read after liyi stopped, so every write is flushed)."""
        if self.liyi is not None:
            await self.liyi.stop()
        from db import CallStore

        store = CallStore(f"sqlite+aiosqlite:///{self.db}")
        await store.start()
        try:
            summaries = await store.list_calls(limit=50)
            return [await store.get_call(s.id) for s in summaries]
        finally:
            await store.close()

    def channels_left(self) -> str:
        out = self.ast.rx("core show channels concise").strip()
        return out

    def log(self) -> list[Any]:
        return read_log(self.ast.log_text())

    def played_to_caller(self) -> list[str]:
        return [line.detail for line in self.log() if line.kind == "played"
                and line.channel.startswith(CALLER)]

    async def close(self) -> None:
        if self.liyi is not None:
            await self.liyi.stop()
        for phone in self.phones.values():
            await phone.stop()
        await asyncio.to_thread(self.ast.stop)


@pytest.fixture
async def rig(tmp_path: Path, prompts: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, prompts)
    await asyncio.to_thread(r.ast.start)
    try:
        yield r
    finally:
        await r.close()


def incoming(phone: Softphone) -> int:
    """How many calls reached this agent's phone (auto-answered ones included)."""
    return sum(1 for ev in phone.events if ev.type in ("CALL_INCOMING",)) or sum(
        1 for ev in phone.events if ev.type == "CALL_ESTABLISHED")


def departments(**agents: list[str]) -> list[dict[str, Any]]:
    """The shipped departments (咨询 1, 报修 2, 投诉 3) with other agents."""
    numbers = {"咨询": "1", "报修": "2", "投诉": "3"}
    return [{"name": name, "number": number, "agents": agents.get(name, ["agent1"])}
            for name, number in numbers.items()]


def menu_key(digit: str, after: float = 2.6) -> tuple[tuple[float, str], ...]:
    """A menu choice pressed while the (shortened) menu prompt plays, after the greeting."""
    return ((after, digit),)


class TestAnswerAndGreeting:
    async def test_answer_after_ring_one_tone_then_greeting_then_menu(self, rig: Rig) -> None:
        """180 at once, 200 OK no earlier than the end of ring 1's tone (1.5 s by default), greeting then menu."""
        await rig.run_liyi()
        result = await rig.call(CallerPlan(hang_up_after=4.0))
        assert result.ok, result.errors
        ringing = result.response_at("180")
        answered = result.response_at("200")
        assert ringing is not None and answered is not None
        assert ringing - result.invite_at < 0.3
        assert 1.0 <= answered - result.invite_at <= 1.8, answered - result.invite_at
        played = rig.played_to_caller()
        assert played[0].startswith("liyi/greeting-"), played
        assert played[1] == "liyi/menu-main", played
        await rig.settle()
        [call] = await rig.calls()
        assert call.first_hangup == "caller"
        assert call.compliance["R1"].status == "kept"
        assert call.compliance["R2"].status == "kept"


class TestAgents:
    async def test_agent_who_lets_it_ring_three_times_hands_over_to_the_next(self, rig: Rig) -> None:
        """The first agent's phone rings three rings (≈11 s), then the next agent's rings and answers."""
        a1 = await rig.phone("agent1")
        a2 = await rig.phone("agent2")
        await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=26.0)))
        first = await asyncio.wait_for(_first_ringing(a1, a2), 15)
        other = a2 if first is a1 else a1
        rung = await other.wait_for("CALL_INCOMING", 16)
        closed = await first.wait_for("CALL_CLOSED", 1)
        start = next(ev for ev in first.events if ev.type == "CALL_INCOMING")
        assert 10.0 <= closed.at - start.at <= 12.5, closed.at - start.at
        assert rung.at - closed.at < 1.5
        await other.accept()
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await rig.settle()
        [record] = await rig.calls()
        assert record.agent == ("agent2" if other is a2 else "agent1")
        assert record.first_hangup == "caller"

    async def test_agent_hangs_up_first_caller_hears_closing_and_keeps_the_line(self, rig: Rig) -> None:
        """The agent leaves first: the caller hears the thanks, no BYE comes, the caller hangs up first."""
        a1 = await rig.phone("agent1", auto_answer=True)
        await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=14.0)))
        await a1.wait_for("CALL_ESTABLISHED", 12)
        await asyncio.sleep(2.0)
        await a1.hangup()
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        assert "liyi/closing-thanks" in rig.played_to_caller()
        await rig.settle()
        [record] = await rig.calls()
        assert record.first_hangup == "agent"
        assert record.compliance["R9"].status == "kept"
        assert not rig.channels_left()


async def _first_ringing(*phones: Softphone) -> Softphone:
    while True:
        for phone in phones:
            if phone.count("CALL_INCOMING"):
                return phone
        await asyncio.sleep(0.05)


class TestCallerHangsUp:
    @pytest.mark.parametrize("moment", ["greeting", "menu", "wait-notice", "queued", "agent-ringing"])
    async def test_no_agent_rung_after_the_caller_left(self, rig: Rig, moment: str) -> None:
        """A caller gone in the greeting, the menu, the wait notice, the queue or while an agent rings: nobody rung after, every leg released, one record."""
        a1 = await rig.phone("agent1")
        if moment == "queued":
            # The only agent is busy on another call, so the caller waits in the queue.
            await rig.run_liyi(departments=departments(咨询=["agent1"]),
                               agents=[{"name": "agent1", "endpoint": "PJSIP/agent1"}])
        else:
            await rig.run_liyi()
        plans = {
            "greeting": CallerPlan(hang_up_after=0.6),
            "menu": CallerPlan(hang_up_after=2.0),
            "wait-notice": CallerPlan(keys=menu_key("1"), hang_up_after=3.2),
            "queued": CallerPlan(keys=menu_key("1"), hang_up_after=4.5),
            "agent-ringing": CallerPlan(keys=menu_key("1"), hang_up_after=6.0),
        }
        if moment == "queued":
            busy = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=16.0),
                                                name="busy", ))
            await a1.wait_for("CALL_INCOMING", 12)
            await a1.accept()
            await asyncio.sleep(0.5)
        rung_before = a1.count("CALL_INCOMING")
        result = await rig.call(plans[moment])
        assert result.ok, result.errors
        bye = result.first(True, "BYE")
        assert bye is not None
        left_at = bye.at
        await asyncio.sleep(12.0)  # longer than a wait notice, a menu timeout and a ring
        rung_after = [ev for ev in a1.events if ev.type == "CALL_INCOMING" and ev.at > left_at]
        assert rung_after == [], "an agent was rung for a caller who had hung up"
        if moment == "agent-ringing":
            assert a1.count("CALL_INCOMING") == rung_before + 1
            assert a1.count("CALL_CLOSED") >= 1, "the ringing agent leg was not released"
        if moment == "queued":
            await busy
        await rig.settle()
        records = await rig.calls()
        mine = [r for r in records if r.caller_number == "13800138000" and r.created_at.timestamp() >= left_at - 30]
        assert len(mine) == (2 if moment == "queued" else 1)
        gone = [r for r in mine if r.agent is None or moment != "queued"][-1]
        assert gone.ended_at is not None
        assert gone.first_hangup == "caller"
        assert gone.outcome != "completed"
        assert not rig.channels_left(), rig.channels_left()


class TestMenu:
    @pytest.mark.parametrize(("key", "agent"), [("2", "agent2"), ("3", "agent1")])
    async def test_key_routes_to_the_department_agent(self, rig: Rig, key: str, agent: str) -> None:
        """Key 2 (报修, after the name) reaches 报修's agent, key 3 (投诉) reaches 投诉's agent."""
        a1 = await rig.phone("agent1", auto_answer=True)
        a2 = await rig.phone("agent2", auto_answer=True)
        await rig.run_liyi()
        result = await rig.call(CallerPlan(keys=menu_key(key), hang_up_after=16.0))
        assert result.ok, result.errors
        target, other = (a2, a1) if agent == "agent2" else (a1, a2)
        assert target.count("CALL_ESTABLISHED") == 1
        assert other.count("CALL_ESTABLISHED") == 0
        await rig.settle()
        [record] = await rig.calls()
        assert record.agent == agent
        if key == "2":
            assert "liyi/name-ask" in rig.played_to_caller()


class TestHold:
    async def test_agent_key_code_hold_announces_plays_music_and_reassures(self, rig: Rig) -> None:
        """*1 on the agent's phone: the caller hears the 30 s limit, music, a reassurance; *0 brings the agent back."""
        a1 = await rig.phone("agent1", auto_answer=True)
        await rig.run_liyi(hold={"default_limit_seconds": 30, "max_limit_seconds": 300,
                                 "reassure_every_seconds": 8, "agent_alert_before_seconds": 5,
                                 "limit_grace_seconds": 10})
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=30.0)))
        await a1.wait_for("CALL_ESTABLISHED", 12)
        await asyncio.sleep(1.0)
        await a1.send_keys("*1")
        await asyncio.sleep(12.0)
        await a1.send_keys("*0")
        result = await call
        assert result.ok, result.errors
        played = rig.played_to_caller()
        assert "liyi/hold-announce-30" in played, played
        assert "liyi/hold-reassure" in played, played
        lines = rig.log()
        announced = next(x.at for x in lines if x.detail == "liyi/hold-announce-30")
        assert any(x.kind == "moh-start" and x.channel.startswith(CALLER) and x.at > announced
                   for x in lines)
        assert "*" not in "".join(x.detail for x in lines if x.kind == "dtmf")
        await rig.settle()
        [record] = await rig.calls()
        assert record.compliance["R4"].status == "kept"


class TestTransfers:
    async def _on_call_with_agent1(self, rig: Rig, *, hang_up_after: float,
                                   keys: tuple[tuple[float, str], ...] = ()
                                   ) -> tuple[asyncio.Task[CallerResult], Softphone, Softphone]:
        a1 = await rig.phone("agent1", auto_answer=True)
        a2 = await rig.phone("agent2")
        await rig.run_liyi(departments=departments(咨询=["agent1"], 报修=["agent2"], 投诉=["agent1"]))
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1") + keys,
                                                       hang_up_after=hang_up_after)))
        await a1.wait_for("CALL_ESTABLISHED", 12)
        return call, a1, a2

    def _never_alone(self, rig: Rig, result: CallerResult) -> None:
        lines = rig.log()
        callers = {x.channel for x in lines if x.channel.startswith(CALLER)}
        for caller in callers:
            spans = caller_alone_spans(lines, caller, end=time.time())
            long = [(round(a - result.invite_at, 1), round(b - a, 1)) for a, b in spans if b - a > 1.0]
            assert not long, f"the caller sat alone in silence (start s, length s): {long}"

    async def _transfer(self, rig: Rig, keys: str, target_says: str, *, consult_seconds: float,
                        first_agent_completes: bool) -> None:
        """agent1 keys a transfer, the caller agrees with 1, agent2 answers, then says yes or no."""
        # The caller presses 1 while the consent question plays (agent1 keys at ~7 s).
        call, a1, a2 = await self._on_call_with_agent1(rig, hang_up_after=40.0, keys=((9.0, "1"),))
        await asyncio.sleep(2.0)
        await a1.send_keys(keys)
        await a2.wait_for("CALL_INCOMING", 20)
        await a2.accept()
        await a2.wait_for("CALL_ESTABLISHED", 5)
        await asyncio.sleep(consult_seconds)
        await a2.send_keys("1" if target_says == "accept" else "2")
        if target_says == "accept" and first_agent_completes:
            await asyncio.sleep(1.0)
            await a1.hangup()  # an agent target's transfer completes when the first agent leaves
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        played = rig.played_to_caller()
        assert "liyi/transfer-consent" in played, played
        await rig.settle()
        [record] = await rig.calls()
        if target_says == "accept":
            assert record.agent == "agent2"
            assert a1.count("CALL_CLOSED") == 1, "the first agent was not released after the handoff"
        else:
            assert record.agent == "agent1"
            assert "liyi/transfer-failed" in played, played
            assert a2.count("CALL_CLOSED") == 1
        assert record.compliance["R6"].status == "kept"
        self._never_alone(rig, result)

    @pytest.mark.parametrize("target_says", ["accept", "decline"])
    async def test_warm_transfer_to_an_agent(self, rig: Rig, target_says: str) -> None:
        """*2 2 #: consent, the target rung while the caller holds; accepted (agent1 hangs up) → caller with agent2, declined → back to agent1."""
        await self._transfer(rig, "*22#", target_says, consult_seconds=1.5, first_agent_completes=True)

    @pytest.mark.parametrize("target_says", ["accept", "decline"])
    async def test_department_target_answering_during_the_announcement(self, rig: Rig,
                                                                        target_says: str) -> None:
        """*3 2 #: 报修's agent presses 1 (or 2) while the 10 s transfer-announce plays; the caller is never left alone in silence."""
        await self._transfer(rig, "*32#", target_says, consult_seconds=2.0, first_agent_completes=False)


class TestQueueCallback:
    async def test_long_wait_offers_a_callback_and_keeps_the_line(self, rig: Rig) -> None:
        """No agent free for max wait: the caller is offered a callback, presses 1 then 1, hears the thanks, hangs up first."""
        await rig.run_liyi(queue={"announce": "position", "announce_every_seconds": 15,
                                  "max_wait_seconds": 30, "callback_offer": True,
                                  "expected_handle_seconds": 180, "offer_timeout_seconds": 8,
                                  "number_timeout_seconds": 5, "wrap_up_seconds": 0})
        # The offer comes ~30 s after queueing (~4 s in); 1 = leave a number, then 1 = confirm.
        plan = CallerPlan(keys=menu_key("1") + ((36.5, "1"), (54.0, "1")), hang_up_after=62.0)
        result = await rig.call(plan)
        assert result.ok, result.errors
        assert not result.service_sent_bye
        played = rig.played_to_caller()
        assert "liyi/callback-offer" in played, played
        assert "liyi/callback-recorded" in played, played
        await rig.settle()
        [record] = await rig.calls()
        assert record.first_hangup == "caller"
        assert [f.kind for f in record.followups] == ["callback"]
        assert record.compliance["R5"].status == "kept"


class TestRestart:
    async def test_controller_killed_mid_call_takes_the_call_back(self, rig: Rig) -> None:
        """liyi run SIGKILLed while a caller talks with an agent: the caller stays on, a new liyi run takes the call back, and the caller's hang-up frees the agent and ends the record once, marked recovered."""
        a1 = await rig.phone("agent1", auto_answer=True)
        first = await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=16.0)))
        await a1.wait_for("CALL_ESTABLISHED", 12)
        await asyncio.sleep(1.0)
        assert first.proc is not None
        first.proc.kill()
        await first.proc.wait()
        await rig.run_liyi()
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await a1.wait_for("CALL_CLOSED", 5)
        await rig.settle()
        [record] = await rig.calls()
        assert record.ended_at is not None
        assert record.first_hangup == "caller"
        assert (record.summary or {}).get("recovered") is True
        assert not rig.channels_left(), rig.channels_left()


    async def test_killed_while_an_agent_rings_the_same_ring_goes_on_and_connects(self, rig: Rig) -> None:
        """liyi run SIGKILLed while agent1's phone rings: the new liyi run keeps that same ring (no
        second call to the phone) and, when agent1 picks up, the caller is connected to them."""
        a1 = await rig.phone("agent1")  # rings until picked up by hand
        first = await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=18.0)))
        await a1.wait_for("CALL_INCOMING", 12)
        await kill(first)
        second = await rig.run_liyi()
        await second.wait_log(lambda r: r.get("event") == "recovery.adopted", 5)
        await a1.accept()
        await a1.wait_for("CALL_ESTABLISHED", 5)
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await a1.wait_for("CALL_CLOSED", 5)
        await rig.settle()
        [record] = await rig.calls()
        assert record.agent == "agent1" and a1.count("CALL_INCOMING") == 1
        assert "agent-ringing-resumed" in [t.kind for t in record.timeline]
        assert record.first_hangup == "caller"
        assert not rig.channels_left(), rig.channels_left()

    async def test_killed_during_a_hold_the_hold_goes_on_to_its_deadline_and_the_agent_resumes(
            self, rig: Rig) -> None:
        """liyi run SIGKILLed while the caller is on hold (*1): after the restart the hold goes on
        with the deadline the caller was told, music plays again, and *0 puts the caller back."""
        a1 = await rig.phone("agent1", auto_answer=True)
        first = await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=24.0)))
        await a1.wait_for("CALL_ESTABLISHED", 12)
        await asyncio.sleep(1.0)
        await a1.send_keys("*1")
        await first.wait_log(lambda r: r.get("event") == "call.hold-started", 5)
        await asyncio.sleep(1.0)
        await kill(first)
        second = await rig.run_liyi()
        await second.wait_log(lambda r: r.get("event") == "call.hold-resumed", 5)
        await asyncio.sleep(1.0)
        await a1.send_keys("*0")
        await second.wait_log(lambda r: r.get("event") == "call.back-with-agent", 5)
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await rig.settle()
        [record] = await rig.calls()
        started = next(t for t in record.timeline if t.kind == "hold-started")
        resumed = next(t for t in record.timeline if t.kind == "hold-resumed")
        deadline = started.at.timestamp() + started.detail["limit_seconds"]
        assert resumed.detail["deadline"] == pytest.approx(deadline, abs=0.01)
        assert rig.ast.music_started(CALLER) >= 2  # the music was started again after the restart
        assert record.first_hangup == "caller" and record.agent == "agent1"

    async def test_killed_while_queued_the_caller_keeps_their_place_and_reaches_the_agent(
            self, rig: Rig) -> None:
        """liyi run SIGKILLed while the caller waits with no agent registered: after the restart
        they wait on (same queued_at, music) and reach agent1 once agent1's phone registers."""
        first = await rig.run_liyi()
        call = asyncio.create_task(rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=26.0)))
        await first.wait_log(lambda r: r.get("event") == "call.queued", 12)
        await asyncio.sleep(1.0)
        await kill(first)
        second = await rig.run_liyi()
        await second.wait_log(lambda r: r.get("event") == "call.queue-resumed", 5)
        a1 = await rig.phone("agent1", auto_answer=True)
        await a1.wait_for("CALL_ESTABLISHED", 15)
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await rig.settle()
        [record] = await rig.calls()
        queued = next(t for t in record.timeline if t.kind == "queued")
        resumed = next(t for t in record.timeline if t.kind == "queue-resumed")
        assert resumed.detail["queued_at"] == pytest.approx(queued.at.timestamp(), abs=0.01)
        assert record.agent == "agent1" and record.first_hangup == "caller"

    async def test_killed_in_the_menu_the_menu_is_played_again_and_the_key_counts(self, rig: Rig) -> None:
        """liyi run SIGKILLed while the menu plays: the new liyi run plays the menu again (timeline
        ``flow-resumed``) and the key the caller presses afterwards takes them to agent1."""
        a1 = await rig.phone("agent1", auto_answer=True)
        first = await rig.run_liyi()
        # the key again every 1.5 s: one lands after the restart, while the menu replays or waits
        presses = tuple((4.5 + 1.5 * i, "1") for i in range(5))
        call = asyncio.create_task(rig.call(CallerPlan(keys=presses, hang_up_after=20.0)))
        await first.wait_log(lambda r: r.get("event") == "call.flow-step" and r.get("step") == "main", 12)
        await kill(first)
        await rig.run_liyi()
        await a1.wait_for("CALL_ESTABLISHED", 15)
        result = await call
        assert result.ok, result.errors
        assert not result.service_sent_bye
        await rig.settle()
        [record] = await rig.calls()
        kinds = [t.kind for t in record.timeline]
        assert "flow-resumed" in kinds and "menu-choice" in kinds[kinds.index("flow-resumed"):]
        assert record.agent == "agent1" and record.first_hangup == "caller"


async def kill(liyi: Any) -> None:
    """SIGKILL, as a crash or the OOM killer would: nothing is said goodbye to."""
    assert liyi.proc is not None
    liyi.proc.kill()
    await liyi.proc.wait()


class TestFallback:
    async def test_without_the_controller_the_dialplan_answers_and_rings_agents(self, rig: Rig) -> None:
        """liyi not running: the fallback answers within ring 1 and rings the agents, never hanging up on the caller; once liyi starts, the call is in its log from Asterisk's CEL file, handled_by fallback, once."""
        a1 = await rig.phone("agent1", auto_answer=True)
        result = await rig.call(CallerPlan(hang_up_after=10.0))
        assert result.ok, result.errors
        answered = result.response_at("200")
        assert answered is not None and 1.0 <= answered - result.invite_at <= 2.0
        assert "liyi/fallback-apology" in rig.played_to_caller()
        assert a1.count("CALL_ESTABLISHED") == 1
        assert not result.service_sent_bye
        # R10 (issue 9): liyi starts, imports what Asterisk wrote; started again, imports nothing twice.
        await rig.settle()
        for _ in range(2):
            liyi = await rig.run_liyi()
            await liyi.wait_log(lambda r: r.get("event") == "fallback_import.done", 15)
            await liyi.stop()
        [record] = await rig.calls()
        assert record.handled_by == "fallback"
        assert record.caller_number == CallerPlan().number
        assert record.agent == "agent1" and record.outcome == "completed"
        assert record.first_hangup == "caller"
        assert record.answered_at is not None
        assert 1.0 <= (record.answered_at - record.created_at).total_seconds() <= 2.0
        assert record.compliance["R1"].status == "kept"
        assert record.compliance["R10"].status == "kept"


class AmiListener:
    """A second AMI login on the controller's account: it gets the events liyi's own connection
    gets (filters are per account, copied at login), and counts them by name."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        await reader.readline()  # the banner
        self._writer.write(b"Action: Login\r\nActionID: listen-1\r\nUsername: liyi\r\n"
                           b"Secret: " + AMI_SECRET.encode() + b"\r\nEvents: on\r\n\r\n")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Success" in answer, answer
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            block = await reader.readuntil(b"\r\n\r\n")
            headers = dict(line.partition(": ")[::2] for line in block.decode(errors="replace").split("\r\n") if line)
            if "Event" in headers and "ActionID" not in headers:  # an event, not an action's answer
                self.events.append(headers)

    def count(self, since: int = 0) -> Counter[str]:
        """Events by name, from the ``since``-th on."""
        return Counter(e["Event"] for e in self.events[since:])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


class TestAmiEventFilter:
    async def test_only_the_events_the_roster_reads_reach_the_controller(self, rig: Rig) -> None:
        """One call, watched on the liyi account with the shipped filter and without it: filtered,
        the phones' DeviceStateChange, PeerStatus and ContactStatus still arrive (and liyi's roster
        follows them) while Newchannel, Newstate or Hangup never do. Prints both counts."""
        a1 = await rig.phone("agent1", auto_answer=True)
        liyi = await rig.run_liyi()
        filtered = AmiListener(rig.ast.ami_port)
        await filtered.start()
        # The same account without its eventfilter lines, for the "before" figure. A session keeps
        # the filters it logged in with, so liyi's and `filtered` are unchanged by the reload.
        conf = rig.ast.etc / "manager.conf"
        shipped = conf.read_text(encoding="utf-8")
        conf.write_text("\n".join(line for line in shipped.splitlines()
                                  if not line.startswith("eventfilter")) + "\n", encoding="utf-8")
        rig.ast.rx("manager reload")
        unfiltered = AmiListener(rig.ast.ami_port)
        await unfiltered.start()
        try:
            a2 = await rig.phone("agent2")  # registers now: PeerStatus, ContactStatus
            await liyi.wait_log(lambda r: r.get("event") == "agent.phone" and r.get("agent") == "agent2"
                                and r.get("registered"), 15)
            await asyncio.sleep(1.0)  # the registration's last events
            marks = len(unfiltered.events), len(filtered.events)
            result = await rig.call(CallerPlan(keys=menu_key("1"), hang_up_after=10.0))
            assert result.ok, result.errors
            await a1.wait_for("CALL_CLOSED", 5)
            await rig.settle(2.0)
        finally:
            await filtered.stop()
            await unfiltered.stop()
        phases = {
            "one phone registering (and the login)": [
                listener.count() - listener.count(mark)
                for listener, mark in ((unfiltered, marks[0]), (filtered, marks[1]))],
            "one call (greeting, menu, agent, bridge)": [
                unfiltered.count(marks[0]), filtered.count(marks[1])],
        }
        for what, (b, a) in phases.items():
            print(f"\nAMI events on the liyi account, {what}: without the filter {sum(b.values())} "
                  f"{dict(b.most_common())}, with it {sum(a.values())} {dict(a.most_common())}")
        before, after = unfiltered.count(), filtered.count()
        assert set(after) <= {"DeviceStateChange", "PeerStatus", "ContactStatus", "FullyBooted", "Shutdown"}
        assert {"DeviceStateChange", "PeerStatus", "ContactStatus"} <= set(after), after
        assert {"Newchannel", "Newstate", "Hangup"} <= set(before), before  # the call made them
        assert not {"Newchannel", "Newstate", "Hangup", "Newexten", "VarSet"} & set(after)
        busy = [e["State"] for e in filtered.events if e.get("Device") == "PJSIP/agent1"
                and e.get("State") in ("INUSE", "BUSY", "RINGING")]
        assert busy, "agent1's phone going busy never reached the account"
        assert any(r.get("event") == "agent.phone" and r.get("agent") == "agent1"
                   and r.get("device_state") == busy[0] for r in liyi.lines), "liyi's roster missed it"
        assert a2.count("CALL_INCOMING") == 0


#: fail2ban 1.0's stock `asterisk` filter, the failregex that reads res_security_log's lines
#: (filter.d/asterisk.conf; <HOST> spelt out as an IPv4 address).
FAIL2BAN_SECURITY_EVENT = re.compile(
    r'SECURITY\[\d+\][^:]*: SecurityEvent="(?:FailedACL|InvalidAccountID|ChallengeResponseFailed|'
    r'InvalidPassword)"(?:(?:,(?!RemoteAddress=)\w+="[^"]*")*|.*?),'
    r'RemoteAddress="IPV[46]/[^/"]+/(?P<host>[\d.]+)/\d+"')


class TestStrangers:
    async def test_a_stranger_naming_the_carrier_is_refused_and_logged_for_fail2ban(self, rig: Rig) -> None:
        """An INVITE from another address with `From: carrier` is refused, reaches nobody, and the security log names its address."""
        a1 = await rig.phone("agent1", auto_answer=True)
        liyi = await rig.run_liyi()
        result = await run_stranger(rig.ast, rig.home / "stranger", from_user="carrier",
                                    source_ip="127.0.0.3")
        assert result.ok, f"the stranger's call was not refused: {result.errors}"
        assert result.first(False, "SIP/2.0 180") is None and result.first(False, "SIP/2.0 200") is None
        await rig.settle()
        calls = [r for r in liyi.lines if str(r.get("event", "")).startswith("call.")]
        assert calls == [], "the stranger's call reached the controller"
        assert a1.count("CALL_INCOMING") == 0
        hosts = [m.group("host") for m in FAIL2BAN_SECURITY_EVENT.finditer(
            rig.ast.security_log.read_text(encoding="utf-8", errors="replace"))]
        assert "127.0.0.3" in hosts, "no security event fail2ban would count against the stranger"
        assert CARRIER_IP not in hosts and "127.0.0.1" not in hosts, hosts


    async def test_ari_takes_the_password_its_crypt_hash_was_made_from_and_no_other(self, rig: Rig) -> None:
        """ARI, holding only the hash in ari.conf, lets the right password in and turns a wrong one away (401)."""
        assert ARI_PASSWORD not in (rig.ast.etc / "ari.conf").read_text(encoding="utf-8")
        for password, status in ((ARI_PASSWORD, 200), (ARI_PASSWORD + "x", 401)):
            basic = base64.b64encode(f"liyi:{password}".encode()).decode()
            async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as session:
                async with session.get(f"{rig.ast.ari_url}/ari/asterisk/info") as resp:
                    assert resp.status == status, (password, resp.status)
                    assert "Server" not in resp.headers, "ARI names the Asterisk version it runs"


async def ari_get(rig: Rig, path: str) -> Any:
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("liyi", ARI_PASSWORD)) as session:
        async with session.get(f"{rig.ast.ari_url}/ari{path}") as resp:
            return await resp.json()


def _local(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
