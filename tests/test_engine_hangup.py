"""Hang-ups as Asterisk 22 tells them, and prompts that fail (issue 8; traces 13 and 15).

A caller's hang-up reaches the app as ChannelHangupRequest first, then the
``failed`` end of a prompt that was playing, then StasisEnd (trace 13). The
engine must take the first sign as the hang-up — for the caller, an agent
leg or a transfer target — count it once, and never take the failed prompt
as "heard in full": no music, no agent rung, for a caller who has left. A
prompt that fails while the caller is still there (a missing sound file)
goes on, logged and scored as failed, after Asterisk has said the channel
is still there (``GetChannel`` → ``ChannelChecked``).

The tests script calls in ``tests/engine_driver.World`` (which sends the
hang-up events in the traces' order) or feed one engine event by event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from callflow import commands as c
from callflow import events as e
from callflow.callback import CallbackEngine
from callflow.config import AgentConfig, CallFlowConfig, Department
from callflow.core import ANSWER, PROMPT
from callflow.engine import CallEngine, CallState
from callflow.flow import GREETING, MENU, QUEUE, Flow, Step
from tests.engine_driver import T0, AgentBehaviour, PromptBehaviour, World

CALLER = "1796398541.8"  # trace 13's caller
NEVER = AgentBehaviour("never")
QUICK = AgentBehaviour("answer", after=3.0)
AGENTS = (AgentConfig("a1", "PJSIP/a1"), AgentConfig("a2", "PJSIP/a2"))
PLAIN = CallFlowConfig(agents=AGENTS, wait_prompt=None)  # the greeting, then the queue
MENU_FLOW = Flow("open", "greeting", (
    Step("greeting", GREETING, next="main"),
    Step("main", MENU, prompt="menu-main", keys=(("1", "consult"),), default="consult",
         repeat=1, timeout_seconds=5.0),
    Step("consult", QUEUE, department="咨询"),
))
MENU_CFG = CallFlowConfig(agents=AGENTS, departments=(Department("咨询", "1", ("a1", "a2")),),
                          open_flow=MENU_FLOW)
LONG_GREETING = {"greeting-morning": PromptBehaviour(seconds=16.0)}  # trace 13 plays 16.2 s
# what moving the flow on looks like: a prompt, music, an agent rung or asked for, a bridge
MOVING_ON = (c.Dial, c.Play, c.StartMusic, c.RequestAgent, c.Bridge, c.Answer)


def only_ended(world: World, call_id: str = "c1") -> c.CallEnded:
    ended = world.ended(call_id)
    assert len(ended) == 1, f"expected exactly one CallEnded, got {len(ended)}"
    return ended[0]


def greeted_engine(config: CallFlowConfig = PLAIN) -> tuple[CallEngine, c.Play]:
    """An engine whose caller (trace 13's channel id) was answered and hears the greeting."""
    engine = CallEngine(config, "c1")
    out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0))
    timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == ANSWER)
    out = engine.handle(e.TimerFired(at=timer.at, name=ANSWER, token=timer.token))
    play = next(cmd for cmd in out if isinstance(cmd, c.Play))
    assert engine.state is CallState.GREETING
    return engine, play


def kinds(commands: list[c.Command], *wanted: type[c.Command]) -> list[c.Command]:
    return [cmd for cmd in commands if isinstance(cmd, wanted)]


def logs(commands: list[c.Command], kind: str) -> list[c.Log]:
    return [cmd for cmd in commands if isinstance(cmd, c.Log) and cmd.kind == kind]


class TestCallerHangUpRequest:
    def test_hang_up_in_the_greeting_ends_the_call_on_the_request(self) -> None:
        """Trace 13's order (request, failed greeting, StasisEnd) ends the call on the request: no music, no agent."""
        world = World(PLAIN, agents={"a1": QUICK}, prompts=LONG_GREETING)
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 3.5)
        world.run(T0 + 60)
        delivered = [type(ev).__name__ for ev in world.events("c1")][-3:]
        assert delivered == ["ChannelHangupRequest", "PlaybackFinished", "StasisEnd"]
        ended = only_ended(world)
        assert ended.first_hangup == "caller" and ended.at == T0 + 3.5
        assert not world.commands("c1", c.StartMusic) and not world.commands("c1", c.Dial)
        assert not world.commands("c1", c.RequestAgent) and not world.channel_checks
        r2 = ended.compliance["R2"]
        assert r2["status"] == "kept" and r2["evidence"]["result"] == "caller-hung-up"

    def test_failed_greeting_after_the_request_is_not_taken_as_heard(self) -> None:
        """Fed one by one, trace 13's events give one end on the request and nothing at all afterwards."""
        engine, play = greeted_engine()
        out = engine.handle(e.ChannelHangupRequest(at=T0 + 3.4, channel_id=CALLER))
        assert len(kinds(out, c.CallEnded)) == 1 and engine.ended
        assert engine.facts.first_hangup == "caller"
        later = [e.PlaybackFinished(at=T0 + 3.41, playback_id=play.playback_id, state="failed"),
                 e.StasisEnd(at=T0 + 3.42, channel_id=CALLER),
                 e.ChannelDestroyed(at=T0 + 3.43, channel_id=CALLER, cause=0, cause_txt="Unknown")]
        for ev in later:
            assert engine.handle(ev) == []

    def test_stasis_end_and_destroyed_after_the_request_do_not_count_twice(self) -> None:
        """Every sign of one hang-up, even repeated, gives one ``caller-hung-up`` and one CallEnded."""
        world = World(PLAIN, agents={"a1": NEVER}, echo_hangups=True)
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 12)
        world.inject("c1", T0 + 12.5, e.ChannelDestroyed(at=0, channel_id="chan-c1", cause=16))
        world.inject("c1", T0 + 13, e.ChannelHangupRequest(at=0, channel_id="chan-c1", cause=16, soft=True))
        world.run(T0 + 60)
        assert len(world.logs("c1", "caller-hung-up")) == 1
        assert only_ended(world).first_hangup == "caller"

    def test_caller_hang_up_while_an_agent_rings_releases_the_leg_at_once(self) -> None:
        """Trace 15: on the caller's hang-up request the ringing leg is hung up and the agent freed; the leg's
        own hang-up events that follow (cause 32 soft, ChannelDestroyed 16) and StasisEnd change nothing."""
        engine, play = greeted_engine()
        engine.handle(e.PlaybackFinished(at=T0 + 5, playback_id=play.playback_id))
        assert engine.state is CallState.OFFERING
        out = engine.handle(e.AgentPicked(at=T0 + 5, agent="a1", endpoint="PJSIP/a1"))
        (dial,) = kinds(out, c.Dial)
        out = engine.handle(e.ChannelHangupRequest(at=T0 + 8, channel_id=CALLER))
        assert kinds(out, c.Hangup) == [c.Hangup(channel_id=dial.channel_id)]
        assert kinds(out, c.ReleaseAgent) == [c.ReleaseAgent(agent="a1", outcome="caller-hung-up")]
        assert not kinds(out, c.RequestAgent, c.Dial)
        assert [cmd.first_hangup for cmd in kinds(out, c.CallEnded)] == ["caller"]  # type: ignore[attr-defined]
        tail = [e.StasisEnd(at=T0 + 8.002, channel_id=CALLER),
                e.ChannelHangupRequest(at=T0 + 8.003, channel_id=dial.channel_id, cause=32, soft=True),
                e.ChannelDestroyed(at=T0 + 8.004, channel_id=dial.channel_id, cause=16,
                                   cause_txt="Normal Clearing")]
        for ev in tail:
            assert engine.handle(ev) == []

    def test_hang_up_in_the_menu_rings_nobody(self) -> None:
        """A caller who hangs up while the menu plays is never queued: no music, no agent rung, one end."""
        world = World(MENU_CFG, agents={"a1": QUICK, "a2": QUICK},
                      prompts={"menu-main": PromptBehaviour(seconds=10.0)})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 6)
        world.run(T0 + 60)
        assert [p.media[0].split("/")[-1] for p in world.commands("c1", c.Play)] == [
            "greeting-morning", "menu-main"]
        assert not world.commands("c1", c.StartMusic) and not world.commands("c1", c.Dial)
        assert only_ended(world).first_hangup == "caller"
        assert world.logs("c1", "ended")[0].detail["outcome"] == "abandoned-menu"


class TestFailedPrompt:
    def test_a_failed_greeting_first_asks_whether_the_caller_is_there(self) -> None:
        """A failed greeting with no hang-up sign yet gives only a log and GetChannel: no music, no agent."""
        engine, play = greeted_engine()
        out = engine.handle(e.PlaybackFinished(at=T0 + 3, playback_id=play.playback_id, state="failed"))
        assert kinds(out, c.GetChannel) == [c.GetChannel(channel_id=CALLER)]
        assert not kinds(out, *MOVING_ON)
        assert logs(out, "prompt-failed")[0].detail["purpose"] == "greeting"
        assert engine.state is CallState.GREETING

    def test_a_gone_caller_found_by_the_check_ends_the_call_as_the_callers_hang_up(self) -> None:
        """ChannelChecked "gone" after a failed greeting ends the call, caller first, ringing nobody."""
        engine, play = greeted_engine()
        engine.handle(e.PlaybackFinished(at=T0 + 3, playback_id=play.playback_id, state="failed"))
        out = engine.handle(e.ChannelChecked(at=T0 + 3.01, channel_id=CALLER, exists=False))
        assert not kinds(out, *MOVING_ON)
        (ended,) = kinds(out, c.CallEnded)
        assert ended.first_hangup == "caller"  # type: ignore[attr-defined]
        assert logs(out, "caller-checked")[0].detail["present"] is False
        assert engine.handle(e.StasisEnd(at=T0 + 3.02, channel_id=CALLER)) == []

    def test_a_missing_greeting_with_the_caller_there_goes_on_and_breaks_r2(self) -> None:
        """A greeting that fails while the caller listens: the check says present, the caller gets music and an
        agent (never silence), and R2 is broken with "greeting failed"."""
        world = World(PLAIN, agents={"a1": QUICK},
                      prompts={"greeting-morning": PromptBehaviour(result="failed")})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 60)
        world.run(T0 + 100)
        answered = world.first_time("c1", c.Answer)
        assert answered is not None
        assert [(at, ch) for at, _, ch in world.channel_checks] == [(answered, "chan-c1")]
        assert world.logs("c1", "caller-checked")[0].detail["present"] is True
        assert world.first_time("c1", c.StartMusic) == answered
        assert world.commands("c1", c.Bridge)
        r2 = only_ended(world).compliance["R2"]
        assert r2["status"] == "broken" and r2["evidence"]["reason"] == "greeting failed"

    def test_a_failed_menu_with_the_caller_there_waits_for_a_key_then_takes_the_default(self) -> None:
        """A menu prompt that cannot play still waits for a key, repeats, and takes the default route: the
        caller reaches the queue, not a dead end."""
        world = World(MENU_CFG, agents={"a1": QUICK},
                      prompts={"menu-main": PromptBehaviour(result="failed")})
        world.add_call("c1", created_at=T0)
        world.run(T0 + 60)
        assert [ch for _, _, ch in world.channel_checks] == ["chan-c1", "chan-c1"]  # the menu, its repeat
        assert world.logs("c1", "menu-default")
        assert [d.endpoint for d in world.commands("c1", c.Dial)] == ["PJSIP/a1"]

    def test_the_prompt_timer_still_moves_on_if_no_check_answer_comes(self) -> None:
        """Without an answer to GetChannel the prompt's own timer moves the caller on (never stuck)."""
        engine = CallEngine(PLAIN, "c1")
        out = engine.handle(e.StasisStart(at=T0, channel_id=CALLER, created_at=T0))
        answer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == ANSWER)
        out = engine.handle(e.TimerFired(at=answer.at, name=ANSWER, token=answer.token))
        play = next(cmd for cmd in out if isinstance(cmd, c.Play))
        timer = next(cmd for cmd in out if isinstance(cmd, c.StartTimer) and cmd.name == PROMPT)
        out = engine.handle(e.PlaybackFinished(at=T0 + 3, playback_id=play.playback_id, state="failed"))
        assert kinds(out, c.GetChannel)
        out = engine.handle(e.TimerFired(at=timer.at, name=PROMPT, token=timer.token))
        assert kinds(out, c.StartMusic) and kinds(out, c.RequestAgent)
        late = engine.handle(e.ChannelChecked(at=T0 + 31, channel_id=CALLER, exists=True))
        assert not kinds(late, *MOVING_ON)  # an answer about a prompt the flow left behind


class TestLegsHangUpRequest:
    def test_a_declining_agent_counts_once_on_the_request(self) -> None:
        """Cause 17 on the hang-up request is a decline: logged once, the next agent rung once (trace 04 C)."""
        world = World(PLAIN, agents={"a1": AgentBehaviour("decline", after=2.0), "a2": NEVER})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 10)
        world.run(T0 + 60)
        declined = world.logs("c1", "agent-declined")
        assert [log.detail for log in declined] == [{"agent": "a1", "reason": "User busy"}]
        assert [d.endpoint for d in world.commands("c1", c.Dial)] == ["PJSIP/a1", "PJSIP/a2"]
        assert [r.agent for r in world.commands("c1", c.ReleaseAgent)] == ["a1", "a2"]
        firsts = [ev for ev in world.events("c1") if isinstance(ev, e.ChannelHangupRequest)]
        assert firsts[0].cause == 17 and firsts[0].channel_id == world.commands("c1", c.Dial)[0].channel_id

    def test_an_agent_hanging_up_first_stays_first_whatever_follows(self) -> None:
        """The agent's hang-up request starts the closing once; its StasisEnd and ChannelDestroyed, and the
        caller's later hang-up, leave "agent" as the first hang-up."""
        world = World(PLAIN, agents={"a1": AgentBehaviour("answer", after=3.0, hangs_up_after=10.0)},
                      echo_hangups=True)
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 40)
        world.run(T0 + 60)
        assert len(world.logs("c1", "agent-hung-up-first")) == 1
        assert len(world.logs("c1", "closing")) == 1
        assert only_ended(world).first_hangup == "agent"

    def test_a_transfer_target_hanging_up_is_one_failed_transfer(self) -> None:
        """A target who declines on the hang-up request (cause 17) fails the transfer once: one apology."""
        agents = (*AGENTS, AgentConfig("a3", "PJSIP/a3"))
        world = World(replace(PLAIN, agents=agents),
                      agents={"a1": QUICK, "a2": AgentBehaviour("decline", after=2.0)})
        world.add_call("c1", created_at=T0, hangs_up_at=T0 + 80)
        world.run(T0 + 15)
        assert world.engines["c1"].state is CallState.CONNECTED
        world.agent_does("c1", T0 + 16, e.TransferRequested(at=0, agent="a1", target="a2"))
        world.press("c1", T0 + 19, "1")
        world.run(T0 + 60)
        assert [log.detail["outcome"] for log in world.logs("c1", "transfer-ended")] == ["declined"]
        assert len(world.logs("c1", "back-with-agent")) == 1


class TestCallbackHangUpRequest:
    def test_a_busy_customer_on_the_request_is_busy_once(self) -> None:
        """A customer's line busy (cause 17 on the hang-up request, then ChannelDestroyed 17) is one busy end."""
        engine = CallbackEngine(PLAIN, "cb1", followup_id="fu-1", number="13800138000", agent="a1",
                                endpoint="PJSIP/a1")
        engine.start(T0)
        engine.handle(e.StasisStart(at=T0 + 4, channel_id="cb1-a1"))
        out = engine.handle(e.ChannelHangupRequest(at=T0 + 5, channel_id="cb1-c1", cause=17))
        out += engine.handle(e.ChannelDestroyed(at=T0 + 5.01, channel_id="cb1-c1", cause=17,
                                                cause_txt="User busy"))
        assert len(kinds(out, c.CallEnded)) == 1
        assert engine.record.reason == "busy"


# -- the property: nothing is rung or played for a caller who hung up -------------------------

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])
SIGNS = ("request", "playback-failed", "stasis-end", "destroyed")
EXTRAS = ("agent-answers", "leg-declines", "leg-destroyed", "timers", "agent-picked", "no-agent-free",
          "agent-key", "checked-present", "caller-key")
FORBIDDEN = (c.Dial, c.Play, c.StartMusic, c.RequestAgent, c.Bridge, c.Answer, c.Ring, c.Record)


def tenths(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.integers(round(lo * 10), round(hi * 10)).map(lambda n: n / 10)


@dataclass(frozen=True)
class HangUp:
    config: CallFlowConfig
    agents: dict[str, AgentBehaviour]
    prompts: dict[str, PromptBehaviour]
    hang_up_after: float
    signs: tuple[str, ...]  # the hang-up's events in the order they arrive
    extras: tuple[tuple[int, str], ...]  # (after which sign, what) — anything that may still come


@st.composite
def hang_ups(draw: st.DrawFn) -> HangUp:
    config = draw(st.sampled_from([PLAIN, MENU_CFG, replace(PLAIN, wait_prompt="ring-wait"),
                                   replace(MENU_CFG, closing_prompts=("closing-thanks",))]))
    behaviour = st.sampled_from([QUICK, NEVER, AgentBehaviour("decline", after=2.0),
                                 AgentBehaviour("answer", after=8.0, hangs_up_after=6.0),
                                 AgentBehaviour("ring-out", after=5.0), AgentBehaviour("unreachable")])
    agents = {name: draw(behaviour) for name in draw(st.sampled_from([(), ("a1",), ("a1", "a2")]))}
    prompt = st.builds(PromptBehaviour, seconds=tenths(0.5, 12.0),
                       result=st.sampled_from(["done"] * 5 + ["failed"]))
    prompts = {name: draw(prompt) for name in ("greeting-morning", "menu-main", "ring-wait", "queue-continue",
                                               "closing-thanks")}
    order = draw(st.permutations(SIGNS))
    keep = draw(st.sets(st.sampled_from(SIGNS[1:])))
    signs = tuple(s for s in order if s == "request" or s in keep)
    extras = draw(st.lists(st.tuples(st.integers(0, len(signs) - 1), st.sampled_from(EXTRAS)), max_size=6))
    return HangUp(config, agents, prompts, draw(tenths(0.1, 90.0)), signs, tuple(extras))


def hang_up_events(engine: CallEngine, world: World, at: float, what: str) -> list[e.Event]:
    """The engine events one sign or extra stands for, given where the call is now."""
    caller = engine.caller_channel
    legs = [d.channel_id for d in world.commands("c1", c.Dial)]
    leg = legs[-1] if legs else "c1-a9"
    timers = [(name, token) for (call, name), token in world._timers.items() if call == "c1"]
    return {
        "request": [e.ChannelHangupRequest(at=at, channel_id=caller)],
        "playback-failed": [e.PlaybackFinished(at=at, playback_id=engine._playback or "c1-p99",
                                               state="failed")],
        "stasis-end": [e.StasisEnd(at=at, channel_id=caller)],
        "destroyed": [e.ChannelDestroyed(at=at, channel_id=caller, cause=16)],
        "agent-answers": [e.StasisStart(at=at, channel_id=leg)],
        "leg-declines": [e.ChannelHangupRequest(at=at, channel_id=leg, cause=17)],
        "leg-destroyed": [e.ChannelDestroyed(at=at, channel_id=leg, cause=19)],
        "timers": [e.TimerFired(at=at, name=name, token=token) for name, token in timers],
        "agent-picked": [e.AgentPicked(at=at, agent="a2", endpoint="PJSIP/a2")],
        "no-agent-free": [e.NoAgentFree(at=at, ahead=0, expected_wait_seconds=60.0)],
        "agent-key": [e.ChannelDtmfReceived(at=at, channel_id=leg, digit="1")],
        "checked-present": [e.ChannelChecked(at=at, channel_id=caller, exists=True)],
        "caller-key": [e.ChannelDtmfReceived(at=at, channel_id=caller, digit="1")],
    }[what]


@PROPERTY_SETTINGS
@given(hang_ups())
def test_after_the_callers_hang_up_nothing_is_rung_or_played_for_them(h: HangUp) -> None:
    """Whatever state the call is in and whatever follows the caller's hang-up, in whatever order (the other
    signs of it, timers, agents answering or declining, stale answers), the engine never again dials, plays,
    starts music, asks for an agent or bridges; the call ends once; a ringing agent's leg is hung up; and the
    caller is the first hang-up unless an agent had left before."""
    world = World(h.config, agents=h.agents, prompts=h.prompts, start=T0 - 1)
    world.add_call("c1", created_at=T0)
    hang_at = T0 + h.hang_up_after
    world.run(hang_at)
    engine = world.engines["c1"]
    assume(engine.state not in (CallState.NEW, CallState.ENDED))
    if "playback-failed" in h.signs and not engine.speaking:
        assume(False)  # no prompt of ours to fail
    first_before = engine.facts.first_hangup
    ringing = engine._offer.leg if engine.being_offered and engine._offer is not None else None
    out: list[c.Command] = []
    pending: list[e.Event] = []
    for i, sign in enumerate(h.signs):
        pending += hang_up_events(engine, world, hang_at + i * 0.001, sign)
        for after_sign, what in h.extras:
            if after_sign == i:
                pending += hang_up_events(engine, world, hang_at + i * 0.001, what)
    while pending:
        ev = pending.pop(0)
        commands = engine.handle(ev)
        out += commands
        for cmd in commands:  # the controller answers a check at once: Asterisk says 404
            if isinstance(cmd, c.GetChannel):
                pending.insert(0, e.ChannelChecked(at=ev.at, channel_id=cmd.channel_id, exists=False))
    assert [cmd for cmd in out if isinstance(cmd, FORBIDDEN)] == []
    ended = [cmd for cmd in out if isinstance(cmd, c.CallEnded)]
    assert len(ended) == 1 and engine.ended
    assert ended[0].first_hangup == (first_before or "caller")
    if ringing is not None:
        assert c.Hangup(channel_id=ringing) in out
    assert all(cmd.channel_id != engine.caller_channel for cmd in out if isinstance(cmd, c.Hangup))
