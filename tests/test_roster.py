"""The agent roster (``callflow.roster``): who gets the next call.

Longest-idle first, only agents whose phone is registered and free, and an
agent who let a call ring out goes to the back of the line (R1: the next
agent is rung at once, fairly).
"""

from __future__ import annotations

from callflow.roster import Roster

AGENTS = [("agent1", "PJSIP/agent1"), ("agent2", "PJSIP/agent2"), ("agent3", "PJSIP/agent3")]


def roster_with_idle_times(**idle_since: float) -> Roster:
    """A registered roster whose agents became idle at the given times."""
    roster = Roster(AGENTS, assume_registered=True, now=0.0)
    for name, since in idle_since.items():
        assert roster.pick("setup", skip=tuple(n for n, _ in AGENTS if n != name), now=since)
        roster.release(name, call_id="setup", now=since)
    return roster


class TestPick:
    def test_longest_idle_agent_is_picked_first(self) -> None:
        """The agent idle the longest gets the call, whatever the order of the list."""
        roster = roster_with_idle_times(agent1=300.0, agent2=100.0, agent3=200.0)
        order = [roster.pick(f"call{i}", now=400.0) for i in range(3)]
        assert [a.name for a in order if a] == ["agent2", "agent3", "agent1"]
        assert roster.pick("call4", now=400.0) is None

    def test_equal_idle_times_are_broken_by_name(self) -> None:
        """Agents idle since the same moment are picked in name order, so the choice is deterministic."""
        roster = Roster(list(reversed(AGENTS)), assume_registered=True)
        picked = roster.pick("c1", now=1.0)
        assert picked is not None and picked.name == "agent1"

    def test_pick_engages_the_agent_for_that_call(self) -> None:
        """A picked agent is engaged by the call and no longer free."""
        roster = Roster(AGENTS, assume_registered=True)
        picked = roster.pick("c1", now=1.0)
        assert picked is not None and picked.engaged_by == "c1" and not picked.free
        assert roster.get("agent1") == picked
        assert roster.free_count() == 2

    def test_skip_list_is_honoured(self) -> None:
        """Agents in the skip list (already tried for this call) are not picked."""
        roster = Roster(AGENTS, assume_registered=True)
        picked = roster.pick("c1", skip=("agent1", "agent2"), now=1.0)
        assert picked is not None and picked.name == "agent3"
        assert roster.pick("c2", skip=("agent1", "agent2"), now=1.0) is None
        assert roster.get("agent1").engaged_by is None  # type: ignore[union-attr]

    def test_only_limits_the_choice_to_the_transfer_targets(self) -> None:
        """With ``only`` (a transfer's target or a department) no other agent is picked, however idle."""
        roster = roster_with_idle_times(agent1=100.0, agent2=300.0, agent3=200.0)
        picked = roster.pick("c1", only=("agent2", "agent3"), now=400.0)
        assert picked is not None and picked.name == "agent3"
        assert roster.pick("c2", only=("agent3",), now=400.0) is None  # agent3 is now engaged
        assert roster.pick("c2", skip=("agent2",), only=("agent2",), now=400.0) is None

    def test_unregistered_agents_are_never_picked(self) -> None:
        """An agent whose phone is not registered is never offered a call."""
        roster = Roster(AGENTS)  # nobody registered yet
        assert roster.pick("c1", now=1.0) is None
        roster.phone_state("agent2", registered=True)  # AMI says plain "agent2"
        picked = roster.pick("c1", now=1.0)
        assert picked is not None and picked.name == "agent2"
        roster.phone_state("PJSIP/agent2", registered=False)
        roster.release("agent2", call_id="c1", now=2.0)
        assert roster.pick("c2", now=3.0) is None

    def test_busy_phones_are_never_picked(self) -> None:
        """An agent whose device is INUSE, RINGING or UNAVAILABLE is not offered a call."""
        roster = Roster(AGENTS, assume_registered=True)
        for endpoint, state in (("PJSIP/agent1", "INUSE"), ("PJSIP/agent2", "RINGING"),
                                ("PJSIP/agent3", "UNAVAILABLE")):
            roster.phone_state(endpoint, device_state=state)
        assert roster.pick("c1", now=1.0) is None
        roster.phone_state("PJSIP/agent3", device_state="NOT_INUSE")
        picked = roster.pick("c1", now=1.0)
        assert picked is not None and picked.name == "agent3"

    def test_unknown_endpoint_state_is_ignored(self) -> None:
        """A device-state change for a phone that is not an agent changes nothing."""
        roster = Roster(AGENTS, assume_registered=True)
        assert roster.phone_state("PJSIP/caller", device_state="INUSE") is None
        assert roster.free_count() == 3


class TestRelease:
    def test_released_agent_goes_to_the_back_of_the_line(self) -> None:
        """An agent released now is idle the shortest, so others are picked before them."""
        roster = Roster(AGENTS, assume_registered=True, now=0.0)
        first = roster.pick("c1", now=10.0)
        assert first is not None and first.name == "agent1"
        roster.release("agent1", call_id="c1", now=20.0)  # rang out, or the call ended
        picks = [roster.pick(f"c{i}", now=30.0) for i in range(2, 5)]
        assert [a.name for a in picks if a] == ["agent2", "agent3", "agent1"]

    def test_agent_who_served_nobody_keeps_their_place_in_line(self) -> None:
        """An agent released unserved (the caller left before the bridge) is still the longest idle, with no wrap-up."""
        roster = Roster(AGENTS, assume_registered=True, now=0.0)
        first = roster.pick("c1", now=10.0)
        assert first is not None and first.name == "agent1"
        roster.release("agent1", call_id="c1", now=20.0, wrap_up_seconds=30.0, served=False)
        agent = roster.get("agent1")
        assert agent is not None and (agent.engaged_by, agent.idle_since, agent.wrap_up_until) == (None, 0.0, 0.0)
        picked = roster.pick("c2", now=21.0)
        assert picked is not None and picked.name == "agent1"

    def test_release_by_another_call_is_ignored(self) -> None:
        """A release from a call that does not hold the agent leaves the agent engaged."""
        roster = Roster(AGENTS, assume_registered=True)
        assert roster.pick("c1", now=1.0)
        roster.release("agent1", call_id="c2", now=2.0)
        assert roster.get("agent1").engaged_by == "c1"  # type: ignore[union-attr]
        roster.release("agent1", call_id="c1", now=3.0)
        agent = roster.get("agent1")
        assert agent is not None and agent.engaged_by is None and agent.idle_since == 3.0

    def test_release_of_an_unknown_agent_is_ignored(self) -> None:
        """Releasing a name the roster does not know does nothing and raises nothing."""
        roster = Roster(AGENTS, assume_registered=True)
        roster.release("nobody", call_id="c1", now=1.0)
        assert roster.free_count() == 3

    def test_iteration_lists_every_agent(self) -> None:
        """Iterating the roster gives every agent, free or not."""
        roster = Roster(AGENTS, assume_registered=True)
        roster.pick("c1", now=1.0)
        assert sorted(a.name for a in roster) == ["agent1", "agent2", "agent3"]
