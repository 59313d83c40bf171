"""Properties of holds and warm transfers over random calls (hypothesis; R4, R6, R7, R9).

Each example is a random call from ``test_engine_properties`` (config, phones,
prompt lengths and failures, a caller who hangs up any time or never) plus
random agent behaviour on top: hold scripts (limits allowed or not, resumed
or not), transfer scripts (any target, consent by key, panel or never,
acceptance by panel or key, declines, completion, cancel), and loose actions
and keys from whoever is the call's agent or the transfer's target at that
moment, and caller keys (1, 2 at any time). Whatever happens:

- the caller is never bridged with a transfer target that has not answered
  and accepted (the world tracks acceptance itself);
- from the answer until closing the caller always hears something: a prompt,
  music or an agent — never silence, on hold or during a transfer;
- no hold period outlives its limit + the limit question + the grace, and a
  hold goes on past its limit only when the caller pressed 1;
- a transfer never ends with the caller dropped: back with the first agent,
  in the queue, or with the target, hearing someone or something;
- the generic properties of ``test_engine_properties`` still hold, and the
  engine's own record never scores R4, R6 or R7 broken.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from callflow import commands as c
from callflow import events as e
from callflow.config import AgentConfig, CallFlowConfig, Department, HoldConfig, TransferConfig
from tests.engine_driver import CURRENT, T0, TARGET, AgentBehaviour, World
from tests.test_engine_properties import (
    EPS,
    PROMPTS,
    Scenario,
    agent_behaviours,
    check_agent_never_rings_past_agent_rings,
    check_answer_within_three_rings,
    check_ends_once_with_the_true_first_hangup,
    check_service_never_hangs_up_the_caller,
    configs,
    prompt_behaviours,
    tenths,
)

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
AGENT_NAMES = ("agent1", "agent2", "agent3")
HELD_PROMPTS = (*PROMPTS, *(f"hold-announce-{s}" for s in range(30, 301, 30)), "hold-reassure",
                "hold-limit-ask", "hold-return", "requeue-apology", "transfer-consent",
                "transfer-announce", "transfer-failed")
SILENCE_ENDERS = ("sound:liyi/closing-thanks",)  # after the closing prompt, an open line may be quiet


@dataclass(frozen=True)
class Act:
    """One scripted happening, ``after`` seconds after the call reached us."""

    after: float
    kind: str  # panel | keys | caller-key | hang-up (an agent's phone)
    event: e.AgentEvent | None = None
    who: str = CURRENT
    keys: str = ""


@dataclass(frozen=True)
class HeldScenario:
    base: Scenario
    acts: tuple[Act, ...]


def panel(after: float, event: e.AgentEvent) -> Act:
    return Act(after, "panel", event)


def starts() -> st.SearchStrategy[float]:
    """When an agent acts: mostly once the call is likely connected, sometimes any time."""
    return st.one_of(tenths(30.0, 90.0), tenths(3.0, 200.0))


@st.composite
def hold_scripts(draw: st.DrawFn) -> list[Act]:
    t = draw(starts())
    limit = draw(st.sampled_from([0.0, 30.0, 60.0, 90.0, 45.0, 600.0]))
    acts = [panel(t, e.HoldRequested(at=0, agent=CURRENT, reason=draw(st.sampled_from(["", "查询"])),
                                     limit_seconds=limit))]
    if draw(st.booleans()):
        acts[0] = Act(t, "keys", who=CURRENT, keys="*1")
    if draw(st.booleans()):  # the caller answers the limit question, about when it comes
        expected = limit if limit in (30.0, 60.0, 90.0) else draw(st.sampled_from([30.0, 60.0]))
        acts.append(Act(t + 0.3 + expected + draw(tenths(0.5, 8.0)), "caller-key",
                        keys=draw(st.sampled_from(["1", "1", "2"]))))
    end = draw(st.sampled_from(["resume", "none", "keys-resume", "hang-up", "leave"]))
    later = t + draw(st.one_of(tenths(0.0, 50.0), tenths(0.0, 200.0)))
    if end == "resume":
        acts.append(panel(later, e.ResumeRequested(at=0, agent=CURRENT)))
    elif end == "keys-resume":
        acts.append(Act(later, "keys", who=CURRENT, keys="*0"))
    elif end == "leave":
        acts.append(panel(later, e.LeaveRequested(at=0, agent=CURRENT)))
    elif end == "hang-up":
        acts.append(Act(later, "hang-up", who=CURRENT))
    return acts


@st.composite
def transfer_scripts(draw: st.DrawFn) -> list[Act]:
    t = draw(starts())
    target = draw(st.sampled_from(["agent2", "agent3", "dept:售后", "agent2", "dept:售后", "agent1", "nobody"]))
    acts = [panel(t, e.TransferRequested(at=0, agent=CURRENT, target=target, reason="退货"))]
    if draw(st.booleans()):
        acts[0] = Act(t, "keys", who=CURRENT, keys=draw(st.sampled_from(["*22#", "*23#", "*31#"])))
    if draw(st.integers(0, 3)) == 0:  # the first agent puts the phone down at some stage
        acts.append(Act(t + draw(tenths(0.0, 40.0)), "hang-up", who=CURRENT))
    t += draw(st.one_of(tenths(0.5, 5.0), tenths(0.0, 25.0)))  # mostly prompt, quick answer
    consent = draw(st.sampled_from(["key-1", "key-1", "panel", "key-1", "panel", "key-2", "none"]))
    if consent.startswith("key"):
        acts.append(Act(t, "caller-key", keys=consent[-1]))
    elif consent == "panel":
        acts.append(panel(t, e.ConsentGiven(at=0, agent=CURRENT)))
    t += draw(st.one_of(tenths(1.0, 15.0), tenths(0.0, 35.0)))
    accept = draw(st.sampled_from(["panel-yes", "panel-yes", "panel-no", "key-1", "key-2", "none"]))
    if accept.startswith("panel"):
        acts.append(panel(t, e.TargetAnswered(at=0, agent=TARGET, accepted=accept == "panel-yes")))
    elif accept.startswith("key"):
        acts.append(Act(t, "keys", who=TARGET, keys=accept[-1]))
    t += draw(st.one_of(tenths(0.5, 8.0), tenths(0.0, 30.0)))
    finish = draw(st.sampled_from(["complete", "complete", "cancel", "keys-cancel", "none"]))
    if finish == "complete":  # the first agent tries until the target has accepted
        acts += [panel(t + wait, e.TransferCompleteRequested(at=0, agent=CURRENT)) for wait in (0, 8, 20)]
    elif finish == "cancel":
        acts.append(panel(t, e.TransferCancelRequested(at=0, agent=CURRENT)))
    elif finish == "keys-cancel":
        acts.append(Act(t, "keys", who=CURRENT, keys="*0"))
    return acts


@st.composite
def loose_acts(draw: st.DrawFn) -> list[Act]:
    """A single action at a random time, by whoever — the engine must cope with anything."""
    t = draw(tenths(0.0, 300.0))
    who = draw(st.sampled_from([CURRENT, TARGET, *AGENT_NAMES]))
    kind = draw(st.sampled_from(["keys", "caller-key", "panel"]))
    if kind == "keys":
        return [Act(t, "keys", who=who, keys=draw(st.sampled_from(
            ["*1", "*0", "*9", "*22#", "*31#", "*", "1", "2", "*7", "*2#"])))]
    if kind == "caller-key":
        return [Act(t, "caller-key", keys=draw(st.sampled_from(["1", "2", "*", "5"])))]
    event = draw(st.sampled_from([
        e.HoldRequested(at=0, agent=who), e.ResumeRequested(at=0, agent=who),
        e.LeaveRequested(at=0, agent=who), e.ConsentGiven(at=0, agent=who),
        e.TransferCompleteRequested(at=0, agent=who), e.TransferCancelRequested(at=0, agent=who),
        e.TargetAnswered(at=0, agent=who), e.TargetAnswered(at=0, agent=who, accepted=False),
        e.TransferRequested(at=0, agent=who, target="dept:售后"),
        e.NoteAdded(at=0, agent=who, text="记录"),
        e.CallerInfoUpdated(at=0, agent=who, caller_name="张三", purpose="退货"),
    ]))
    return [panel(t, event)]


@st.composite
def held_scenarios(draw: st.DrawFn) -> HeldScenario:
    config: CallFlowConfig = draw(configs())
    config = replace(
        config, holidays=frozenset(),
        agents=tuple(AgentConfig(n, f"PJSIP/{n}") for n in AGENT_NAMES),
        departments=(Department("售后", "1", ("agent2", "agent3")),),
        hold=HoldConfig(default_limit_seconds=draw(st.sampled_from([30, 60])),
                        max_limit_seconds=draw(st.sampled_from([60, 90, 300])),
                        reassure_every_seconds=draw(tenths(5.0, 40.0)),
                        agent_alert_before_seconds=draw(tenths(0.0, 20.0)),
                        limit_grace_seconds=draw(tenths(3.0, 20.0))),
        transfer=TransferConfig(consent_timeout_seconds=draw(tenths(3.0, 20.0)),
                                accept_timeout_seconds=draw(tenths(3.0, 30.0))),
    )
    answering = st.builds(AgentBehaviour, action=st.just("answer"), after=tenths(0.0, 12.0),
                          hangs_up_after=st.one_of(st.none(), st.none(), tenths(0.0, 200.0)),
                          verdict_after=st.one_of(tenths(0.0, 10.0), st.none(), tenths(0.0, 30.0)),
                          verdict=st.sampled_from(["key-1", "panel-yes", "key-1", "panel-yes", "key-2",
                                                   "panel-no"]))
    # agent1 usually takes the call; the others are mostly there to be transfer targets
    agents = {name: [draw(answering), *draw(st.lists(st.one_of(answering, agent_behaviours), max_size=2))]
              for name in AGENT_NAMES}
    base = Scenario(
        config=config, agents=agents, registered=None,
        prompts={p: draw(prompt_behaviours) for p in HELD_PROMPTS},
        created_at=T0 + draw(st.integers(0, 24 * 3600 - 1)),
        stasis_delay=draw(tenths(0.0, 2.0)),
        hangs_up_after=draw(st.one_of(st.none(), tenths(0.0, 400.0))),
        presses=[], strays=[], echo_hangups=draw(st.booleans()), stale_timers=draw(st.booleans()),
    )
    scripts = draw(st.lists(st.one_of(transfer_scripts(), hold_scripts(), transfer_scripts(), loose_acts()),
                            min_size=1, max_size=4))
    return HeldScenario(base, tuple(act for script in scripts for act in script))


def play(hs: HeldScenario) -> World:
    s = hs.base
    world = World(s.config, agents=s.agents, prompts=s.prompts, start=s.created_at - 1,
                  echo_hangups=s.echo_hangups, deliver_stale_timers=s.stale_timers)
    hangs_up_at = None if s.hangs_up_after is None else s.arrival + s.hangs_up_after
    world.add_call("c1", created_at=s.created_at, stasis_delay=s.stasis_delay, hangs_up_at=hangs_up_at)
    for act in hs.acts:
        at = s.arrival + act.after
        if act.kind == "panel":
            assert act.event is not None
            world.agent_does("c1", at, act.event)
        elif act.kind == "keys":
            world.agent_keys("c1", act.who, at, act.keys)
        elif act.kind == "hang-up":
            world.agent_hangs_up("c1", act.who, at)
        else:
            world.press("c1", at, act.keys)
    world.run(s.until)
    return world


def gone_at(world: World) -> float | None:
    return next((t for t, heard in world.timeline("c1") if heard == "gone"), None)


def hearing_at(world: World, at: float) -> str:
    """What the caller heard just after ``at`` (the last change at or before it)."""
    heard = "nothing"
    for t, what in world.timeline("c1"):
        if t > at + EPS:
            break
        heard = what
    return heard


# -- the properties ------------------------------------------------------------


@SETTINGS
@given(held_scenarios())
def test_never_bridged_with_a_target_that_had_not_accepted(hs: HeldScenario) -> None:
    """The caller only ever shares a bridge with the current offer or a target who answered and accepted."""
    world = play(hs)
    assert world.bridge_checks == []
    for t in world.engines["c1"].facts.transfers:
        if t.handoff_at is not None:
            assert t.accepted and t.accepted_at is not None and t.accepted_at <= t.handoff_at
            assert t.consent in ("caller-key", "agent-confirmed")


@SETTINGS
@given(held_scenarios())
def test_caller_never_in_silence_from_answer_to_closing(hs: HeldScenario) -> None:
    """From the answer until the closing prompt (or the caller leaving) there is always a prompt, music or an agent."""
    world = play(hs)
    answered = world.first_time("c1", c.Answer)
    if answered is None:
        return
    closing = [at for at, p in world.issued_of("c1", c.Play) if p.media[0] in SILENCE_ENDERS]
    ends = [t for t in (gone_at(world), min(closing, default=None), world.now) if t is not None]
    assert world.silent_spans("c1", answered, min(ends)) == []
    for hold in world.engines["c1"].facts.holds:
        assert hold.silent_seconds == 0.0


@SETTINGS
@given(held_scenarios())
def test_no_hold_outlives_its_limit_and_grace(hs: HeldScenario) -> None:
    """Each hold period ends by limit + limit question + grace; a hold goes on past a limit only after the caller's key 1."""
    world = play(hs)
    cfg = hs.base.config
    ask = hs.base.prompts["hold-limit-ask"]
    timeout = cfg.prompt_timeout_seconds
    allowance = {"done": min(ask.seconds, timeout), "never": timeout, "failed": 0.0}[ask.result]
    caller_ones = {t for t, ev in world.delivered_of("c1", e.ChannelDtmfReceived)
                   if ev.channel_id == "chan-c1" and ev.digit == "1"}
    periods: list[tuple[float, float]] = []
    for entry in world.logs("c1"):
        if entry.kind == "hold-started":
            periods.append((entry.at, float(entry.detail["limit_seconds"])))
        elif entry.kind == "hold-extended":
            assert entry.at in caller_ones, "a hold was extended without the caller's key 1"
            periods.append((entry.at, float(entry.detail["limit_seconds"])))
    back = [t for t, heard in world.timeline("c1") if heard in ("agent", "gone")]
    moved_on = [at for at, p in world.issued_of("c1", c.Play)
                if p.media[0] in ("sound:liyi/closing-thanks", "sound:liyi/requeue-apology")]
    for i, (start, limit) in enumerate(periods):
        later = [t for t in (*back, *moved_on) if t >= start]
        if i + 1 < len(periods):
            later.append(periods[i + 1][0])
        end = min(later, default=world.now)
        assert end - start <= limit + allowance + cfg.hold.limit_grace_seconds + EPS, (
            f"a hold period from {start - T0:.1f} lasted {end - start:.1f} s")


@SETTINGS
@given(held_scenarios())
def test_a_transfer_never_ends_with_the_caller_dropped(hs: HeldScenario) -> None:
    """Every ended transfer leaves the caller with the target, the first agent or the queue, hearing something."""
    world = play(hs)
    gone = gone_at(world)
    for t in world.engines["c1"].facts.transfers:
        if t.ended_at is None or t.outcome == "caller-hung-up":
            continue
        assert t.caller_returned_to in ("target", "first-agent", "queue"), t.outcome
        if gone is None or gone > t.ended_at + EPS:
            assert hearing_at(world, t.ended_at) in ("agent", "prompt", "music"), t.outcome
        if t.outcome not in ("consent-refused", "completed", "cancelled") or t.caller_returned_to == "queue":
            assert t.apology, f"{t.outcome}: the caller came back without an apology"
    line = world.lines["c1"]
    assert line.first_hangup != "service" or world.commands("c1", c.ReleaseIdleLine)


@SETTINGS
@given(held_scenarios())
def test_generic_properties_still_hold_with_holds_and_transfers(hs: HeldScenario) -> None:
    """Never hanging up the caller, R1 timing, one true end with agents free, agent rings: all unchanged."""
    world = play(hs)
    check_service_never_hangs_up_the_caller(hs.base, world)
    check_answer_within_three_rings(hs.base, world)
    check_ends_once_with_the_true_first_hangup(hs.base, world)
    check_agent_never_rings_past_agent_rings(hs.base, world)


@SETTINGS
@given(held_scenarios())
def test_the_engine_never_scores_its_own_holds_or_transfers_broken(hs: HeldScenario) -> None:
    """By the engine's own evidence, R4, R6 and R7 are kept or not applicable on every call."""
    world = play(hs)
    for ended in world.ended("c1"):
        for rule in ("R4", "R6", "R7"):
            assert ended.compliance[rule]["status"] in ("kept", "not_applicable"), ended.compliance[rule]
        assert ended.compliance["R3"]["status"] in ("kept", "broken", "not_applicable")


def outcomes(hs: HeldScenario) -> set[str]:
    facts = play(hs).engines["c1"].facts
    seen = {f"hold:{h.outcome}" for h in facts.holds} | {f"transfer:{t.outcome}" for t in facts.transfers}
    return seen | {"hold:extended" for h in facts.holds if h.extended_at}


@pytest.mark.parametrize("outcome", [
    "hold:resumed", "hold:extended", "hold:returned-no-answer", "hold:agent-left", "hold:caller-hung-up",
    "transfer:completed", "transfer:consent-refused", "transfer:declined", "transfer:no-answer",
    "transfer:first-agent-left",
])
def test_the_random_calls_reach_each_outcome(outcome: str) -> None:
    """The generator does produce calls with this hold or transfer outcome, so the properties are about them."""
    found = find(held_scenarios(), lambda hs: outcome in outcomes(hs),
                 settings=settings(max_examples=3000, deadline=None, database=None, derandomize=True,
                                   phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    assert outcome in outcomes(found)
