"""Properties of the etiquette engine over random calls (hypothesis).

Each example builds a random but valid config (cadence, answer_after_rings,
agent_rings, timers), random phones (agents who answer after x s, never,
decline or are unreachable; a caller who hangs up at a random time or never),
random prompt lengths and failures, and stray or duplicated events (unknown
playback ids, StasisEnd twice, ChannelDestroyed after StasisEnd, stale
timers). It runs in ``tests/engine_driver.World`` and checks what must hold
on every call, whatever happens (ETIQUETTE.md R1, R9, R10 and "never
silence").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callflow import commands as c
from callflow import events as e
from callflow.config import CallFlowConfig, RingCadence
from tests.engine_driver import T0, AgentBehaviour, PromptBehaviour, World

PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EPS = 1e-6
PROMPTS = ("greeting-morning", "greeting-noon", "greeting-afternoon", "greeting-evening",
           "greeting-closed", "ring-wait", "closing-thanks")


def tenths(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Times in tenths of a second: varied, but readable in a failing example."""
    return st.integers(round(lo * 10), round(hi * 10)).map(lambda n: n / 10)


@dataclass(frozen=True)
class Scenario:
    config: CallFlowConfig
    agents: dict[str, list[AgentBehaviour]]
    registered: list[str] | None
    prompts: dict[str, PromptBehaviour]
    created_at: float
    stasis_delay: float
    hangs_up_after: float | None  # seconds after StasisStart; None: never
    presses: list[float]
    strays: list[tuple[float, str]]
    echo_hangups: bool
    stale_timers: bool

    @property
    def arrival(self) -> float:
        return self.created_at + self.stasis_delay

    @property
    def until(self) -> float:
        return self.arrival + 3 * self.config.idle_release_seconds + 200


@st.composite
def configs(draw: st.DrawFn) -> CallFlowConfig:
    on = draw(tenths(0.2, 3.0))
    off = draw(tenths(0.0, 6.0))
    closed = draw(st.integers(0, 4)) == 0  # one call in five on a holiday: the closed flow
    cadence = RingCadence(on=on, off=off)
    rings = draw(st.integers(1, 3))
    room = min(off, cadence.ring_end(3) - cadence.ring_end(rings))  # what the parser allows
    return CallFlowConfig(
        cadence=cadence,
        answer_after_rings=rings,
        answer_delay_seconds=draw(st.one_of(tenths(0.0, room), tenths(0.0, 6.0))),
        agent_rings=draw(st.integers(1, 3)),
        wait_prompt=draw(st.sampled_from(["ring-wait", None])),
        agent_retry_seconds=draw(tenths(1.0, 10.0)),
        idle_release_seconds=draw(st.sampled_from([60.0, 120.0, 300.0])),
        prompt_timeout_seconds=draw(tenths(1.0, 20.0)),
        closing_prompts=draw(st.sampled_from([("closing-thanks",), ("closing-thanks", "closing-thanks")])),
        holidays=frozenset({dt.date(2026, 3, 4)}) if closed else frozenset(),
    )


agent_behaviours = st.builds(
    AgentBehaviour,
    action=st.sampled_from(["answer", "answer", "never", "decline", "ring-out", "unreachable"]),
    after=st.one_of(tenths(0.0, 3.0), tenths(0.0, 25.0)),
    hangs_up_after=st.one_of(st.none(), tenths(0.0, 120.0)),
)
prompt_behaviours = st.builds(
    PromptBehaviour,
    seconds=tenths(0.0, 25.0),
    result=st.sampled_from(["done"] * 6 + ["failed", "never"]),
)
STRAY_KINDS = ("unknown-playback", "caller-stasis-end-again", "caller-destroyed-again",
               "unknown-channel-end", "unknown-dtmf", "stale-timer", "caller-stasis-start-again",
               "unknown-dial-failed", "unknown-agent-answer")


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    config = draw(configs())
    names = [f"agent{i}" for i in range(1, draw(st.sampled_from([0, 1, 2, 2, 3, 3])) + 1)]
    agents = {name: draw(st.lists(agent_behaviours, min_size=1, max_size=3)) for name in names}
    registered: list[str] | None = None  # None: every agent's phone registered
    some_logged_out: bool = draw(st.booleans())
    if names and some_logged_out:
        registered = draw(st.lists(st.sampled_from(names), unique=True))
    prompts = {p: draw(prompt_behaviours) for p in PROMPTS}
    return Scenario(
        config=config,
        agents=agents,
        registered=registered,
        prompts=prompts,
        created_at=T0 + draw(st.integers(0, 24 * 3600 - 1)),  # any time of day: every band
        stasis_delay=draw(st.one_of(tenths(0.0, 2.0), tenths(0.0, 20.0), tenths(5.0, 30.0))),
        hangs_up_after=draw(st.one_of(st.none(), tenths(0.0, 400.0))),
        presses=draw(st.lists(tenths(0.0, 800.0), max_size=3)),
        strays=draw(st.lists(st.tuples(tenths(0.0, 300.0), st.sampled_from(STRAY_KINDS)), max_size=4)),
        echo_hangups=draw(st.booleans()),
        stale_timers=draw(st.booleans()),
    )


def play(s: Scenario) -> World:
    """Run one scenario to its end (or far past any timer) and return the world."""
    world = World(s.config, agents=s.agents, prompts=s.prompts, registered=s.registered,
                  start=s.created_at - 1, echo_hangups=s.echo_hangups,
                  deliver_stale_timers=s.stale_timers)
    hangs_up_at = None if s.hangs_up_after is None else s.arrival + s.hangs_up_after
    world.add_call("c1", created_at=s.created_at, stasis_delay=s.stasis_delay, hangs_up_at=hangs_up_at)
    caller = "chan-c1"
    for offset in s.presses:
        world.press("c1", s.arrival + offset, "1")
    for offset, kind in s.strays:
        if kind.startswith("caller-") and hangs_up_at is None:
            continue  # duplicates of a hang-up only make sense after one
        at = (hangs_up_at if kind.startswith("caller-") else s.arrival) + offset  # type: ignore[operator]
        stray: e.Event = {
            "unknown-playback": e.PlaybackFinished(at=0, playback_id="no-such-playback"),
            "caller-stasis-end-again": e.StasisEnd(at=0, channel_id=caller),
            "caller-destroyed-again": e.ChannelDestroyed(at=0, channel_id=caller, cause=16),
            "caller-stasis-start-again": e.StasisStart(at=0, channel_id=caller, created_at=s.created_at),
            "unknown-channel-end": e.StasisEnd(at=0, channel_id="someone-else"),
            "unknown-dtmf": e.ChannelDtmfReceived(at=0, channel_id="someone-else", digit="9"),
            "stale-timer": e.TimerFired(at=0, name="idle", token=10_000),
            "unknown-dial-failed": e.DialFailed(at=0, channel_id="c1-a99"),
            "unknown-agent-answer": e.StasisStart(at=0, channel_id="c1-a99"),
        }[kind]
        world.inject("c1", at, stray)
    world.run(s.until)
    return world


# -- the properties ------------------------------------------------------------
# The generic checks (``check_*``, at the end of the file) are reused by
# ``test_engine_hold_transfer_properties.py`` on calls with holds and transfers.


@PROPERTY_SETTINGS
@given(scenarios())
def test_service_never_hangs_up_the_caller(s: Scenario) -> None:
    """No Hangup ever names the caller's channel; ReleaseIdleLine comes only after a full idle period of closing."""
    check_service_never_hangs_up_the_caller(s, play(s))


@PROPERTY_SETTINGS
@given(scenarios())
def test_answer_within_three_rings_of_creation(s: Scenario) -> None:
    """Answer is issued no later than the end of ring 3 after creation whenever StasisStart came before that."""
    check_answer_within_three_rings(s, play(s))


@PROPERTY_SETTINGS
@given(scenarios())
def test_every_call_ends_once_with_the_true_first_hangup(s: Scenario) -> None:
    """Once the caller's line is gone the call has exactly one CallEnded, an ``ended`` log and the true first_hangup."""
    check_ends_once_with_the_true_first_hangup(s, play(s))


@PROPERTY_SETTINGS
@given(scenarios())
def test_agent_never_rings_past_agent_rings(s: Scenario) -> None:
    """Each agent leg is answered, gone or hung up by the end of ring agent_rings after its Dial."""
    check_agent_never_rings_past_agent_rings(s, play(s))


@PROPERTY_SETTINGS
@given(scenarios())
def test_caller_has_music_from_queueing_until_bridged(s: Scenario) -> None:
    """From queueing until the agent is bridged the caller always has music, never silence."""
    world = play(s)
    queued = world.first_time("c1", c.StartMusic)
    if queued is None:
        return
    bridged = world.first_time("c1", c.Bridge)
    gone = next((t for t, heard in world.timeline("c1") if heard == "gone"), None)
    end = min(t for t in (bridged, gone, world.now) if t is not None)
    issued = world.issued_for("c1")
    stops = [i.at for i in issued if isinstance(i.command, c.StopMusic)]
    plays = {i.at for i in issued if isinstance(i.command, c.Play)}
    # music stops only for the bridge, or for an announcement (R5) said in its place
    assert all((bridged is not None and t == bridged) or t in plays for t in stops), \
        "music stopped before the bridge with nothing said instead"
    assert world.silent_spans("c1", queued, end) == []
    answered = world.first_time("c1", c.Answer)
    assert answered is not None
    assert world.silent_spans("c1", answered, end) == []  # nor between the greeting and the music


@PROPERTY_SETTINGS
@given(scenarios())
def test_caller_bridged_only_with_the_answered_current_offer(s: Scenario) -> None:
    """A Bridge only ever joins the caller with the current offer's leg after that leg answered."""
    world = play(s)
    assert world.bridge_checks == []
    bridges = world.commands("c1", c.Bridge)
    assert len(bridges) <= 1
    for bridge in bridges:
        assert bridge.channel_ids[0] == "chan-c1" and len(bridge.channel_ids) == 2


@PROPERTY_SETTINGS
@given(scenarios())
def test_connected_only_once_caller_and_agent_are_both_in_the_bridge(s: Scenario) -> None:
    """"connected" (and the call's agent) comes only after ChannelEnteredBridge of the caller and of that agent's leg, with the caller still there."""
    world = play(s)
    entered = world.delivered_of("c1", e.ChannelEnteredBridge)
    gone = next((t for t, heard in world.timeline("c1") if heard == "gone"), None)
    connected = world.logs("c1", "connected")
    for entry in connected:
        legs = {d.channel_id for d in world.commands("c1", c.Dial)
                if d.endpoint == f"PJSIP/{entry.detail['agent']}"}
        seen = {ev.channel_id for at, ev in entered if at <= entry.at}
        assert "chan-c1" in seen and seen & legs, "connected before both were in the bridge"
        assert gone is None or entry.at <= gone
    engine = world.engines["c1"]
    assert (engine.facts.agent is None) == (not connected)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(scenarios(), tenths(0.0, 30.0), st.one_of(st.none(), tenths(0.0, 300.0)))
def test_two_calls_never_share_an_agent_and_give_everyone_back(
    s: Scenario, second_after: float, second_hangs_up_after: float | None
) -> None:
    """Two overlapping calls never ring or bridge the same agent at once, and all agents are free after both end."""
    world = World(s.config, agents=s.agents, prompts=s.prompts, registered=s.registered,
                  start=s.created_at - 1, echo_hangups=s.echo_hangups)
    for call_id, start, hang in (("c1", s.created_at, s.hangs_up_after),
                                 ("c2", s.created_at + second_after, second_hangs_up_after)):
        world.add_call(call_id, created_at=start, stasis_delay=s.stasis_delay,
                       hangs_up_at=None if hang is None else start + s.stasis_delay + hang)
    world.run(s.until + second_after)
    busy: dict[str, str] = {}  # agent -> leg, from Dial until its ReleaseAgent
    for issued in world.issued:
        cmd = issued.command
        if isinstance(cmd, c.Dial):
            agent = cmd.endpoint.split("/", 1)[1]
            assert agent not in busy, f"{agent} offered a second call while on {busy[agent]}"
            busy[agent] = cmd.channel_id
        elif isinstance(cmd, c.ReleaseAgent):
            assert world.legs[busy.pop(cmd.agent)].call_id == issued.call_id
    assert world.bridge_checks == []
    if all(not line.alive for line in world.lines.values()):
        assert busy == {}
        assert all(agent.engaged_by is None for agent in world.roster)


def check_service_never_hangs_up_the_caller(s: Scenario, world: World) -> None:
    """No Hangup names the caller; an idle release only after a full quiet closing period."""
    caller = world.lines["c1"].channel_id
    assert all(h.channel_id != caller for h in world.commands("c1", c.Hangup))
    closings = [log.at for log in world.logs("c1", "closing")]
    presses = [t for t, ev in world.delivered_of("c1", e.ChannelDtmfReceived) if ev.channel_id == caller]
    for issued in world.issued_for("c1"):
        if isinstance(issued.command, c.ReleaseIdleLine):
            assert closings, "released a line that never went to closing"
            quiet_since = max([closings[-1], *[t for t in presses if t >= closings[-1]]])
            assert issued.at >= quiet_since + s.config.idle_release_seconds - EPS
            assert world.lines["c1"].first_hangup in ("agent", "service")


def check_answer_within_three_rings(s: Scenario, world: World) -> None:
    """Answered after ring N had rung in full and by the end of ring 3 whenever the caller was
    there (even with a delay the parser would refuse); R1 scored as it happened."""
    deadline = s.created_at + s.config.cadence.ring_end(3)
    earliest = s.created_at + s.config.cadence.ring_end(s.config.answer_after_rings)
    answers = [i.at for i in world.issued_for("c1") if isinstance(i.command, c.Answer)]
    assert len(answers) <= 1
    hung_up_at = None if s.hangs_up_after is None else s.arrival + s.hangs_up_after
    if s.arrival < deadline and (hung_up_at is None or hung_up_at > deadline):
        assert answers, "the caller was still there and never answered"
    for at in answers:
        assert at >= s.created_at - EPS
        assert at >= s.arrival - EPS
        assert at >= earliest - EPS, "answered inside ring N's tone"
        if s.arrival < deadline:
            assert at <= deadline + EPS
        else:
            assert at == s.arrival  # late arrival: answered at once
    for ended in world.ended("c1"):
        if answers:  # R1 is broken exactly when the answer really came after ring 3 (to the ms)
            late = round(answers[0] - s.created_at, 3) > round(s.config.cadence.ring_end(3), 3)
            assert ended.compliance["R1"]["status"] == ("broken" if late else "kept")


def check_ends_once_with_the_true_first_hangup(s: Scenario, world: World) -> None:
    """One CallEnded once the caller is gone, with the true first hang-up, nothing after, agents free."""
    line = world.lines["c1"]
    ended = world.ended("c1")
    if not line.started:
        assert world.issued_for("c1") == []
        return
    if line.alive:
        assert ended == [], "a call ended while the caller was still on the line"
        assert not world.engines["c1"].ended
        return
    assert len(ended) == 1
    assert world.logs("c1", "ended")
    assert ended[0].first_hangup in ("caller", "agent", "service")
    assert ended[0].first_hangup == line.first_hangup
    assert {"R1", "R2", "R9", "R10"} <= set(ended[0].compliance)
    assert ended[0].compliance["R9"]["status"] == "kept"
    issued = [i.command for i in world.issued_for("c1")]
    after_end = issued[issued.index(ended[0]) + 1:]  # in issue order: times can tie
    assert not [cmd for cmd in after_end if isinstance(cmd, (c.Play, c.Dial, c.Bridge, c.StartMusic,
                                                             c.Answer, c.RequestAgent))]
    for agent in world.roster:
        assert agent.engaged_by is None, f"{agent.name} left engaged after the call ended"


def check_agent_never_rings_past_agent_rings(s: Scenario, world: World) -> None:
    """Every agent leg is answered, gone or hung up by the end of ring agent_rings."""
    limit = s.config.cadence.ring_end(s.config.agent_rings)
    for issued in world.issued_for("c1"):
        if not isinstance(issued.command, c.Dial):
            continue
        leg, deadline = issued.command.channel_id, issued.at + limit + EPS
        if deadline > world.now:
            continue
        stopped = [i.at for i in world.issued_for("c1")
                   if isinstance(i.command, c.Hangup) and i.command.channel_id == leg]
        settled = [d.at for d in world.delivered if d.call_id == "c1"
                   and isinstance(d.event, (e.StasisStart, e.ChannelDestroyed, e.DialFailed))
                   and d.event.channel_id == leg]
        assert min(stopped + settled, default=float("inf")) <= deadline, f"{leg} rang too long"
