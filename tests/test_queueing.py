"""The waiting line (R5): who is served first, how many are ahead, the expected wait."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callflow.queueing import WaitingLine


def test_first_come_first_served_within_a_queue() -> None:
    """Callers are counted ahead in arrival order, per queue; other queues do not count."""
    line = WaitingLine()
    line.set("a", "报修", since=1.0)
    line.set("b", "报修", since=2.0)
    line.set("c", "咨询", since=0.5)
    assert [line.ahead(x) for x in "abc"] == [0, 1, 0]
    assert line.waiting_before("b") and not line.waiting_before("a")


def test_a_requeued_caller_stands_first() -> None:
    """A caller sent back to the queue (first) is served before those who queued earlier."""
    line = WaitingLine()
    line.set("a", "", since=1.0)
    line.set("b", "", since=5.0, first=True)
    assert line.ahead("b") == 0 and line.ahead("a") == 1


def test_a_caller_whose_agent_is_ringing_does_not_hold_back_the_next() -> None:
    """With an agent ringing for the first caller, the second may take another free agent."""
    line = WaitingLine()
    line.set("a", "", since=1.0, ringing=True)
    line.set("b", "", since=2.0)
    assert not line.waiting_before("b") and line.ahead("b") == 1


def test_leaving_the_line_moves_everyone_up() -> None:
    """A caller connected or gone leaves the line; the ones behind move up."""
    line = WaitingLine()
    for i, x in enumerate("abc"):
        line.set(x, "", since=float(i))
    line.set("a", None)
    assert line.ahead("c") == 1 and line.place("a") is None and len(line) == 2


def test_expected_wait_shares_the_line_among_agents() -> None:
    """Three ahead (fourth in line) with two agents at 180 s each: two rounds, 360 s."""
    line = WaitingLine()
    for i, x in enumerate("abcd"):
        line.set(x, "", since=float(i))
    assert line.expected_wait("d", agents=2, handle_seconds=180.0) == 360.0
    assert line.expected_wait("a", agents=0, handle_seconds=180.0) == 180.0  # nobody signed in: 1


CALLS = [f"c{i}" for i in range(6)]
changes = st.lists(st.tuples(
    st.sampled_from(CALLS), st.sampled_from([None, "", "报修"]),
    st.integers(0, 5), st.booleans(), st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None)
@given(changes)
def test_matches_the_plain_definition(steps: list[tuple[str, str | None, int, bool, bool]]) -> None:
    """After any changes, ahead/waiting_before equal a plain count over every caller's place."""
    line = WaitingLine()
    places: dict[str, tuple[str, float, bool, bool]] = {}
    for call, queue, since, first, ringing in steps:
        line.set(call, queue, since=float(since), first=first, ringing=ringing)
        if queue is None:
            places.pop(call, None)
        else:
            places[call] = (queue, float(since), first, ringing)
    for call, (queue, since, first, _) in places.items():
        mine = ((not first, since), call)
        earlier = [(o, p) for o, p in places.items() if o != call and p[0] == queue
                   and ((not p[2], p[1]), o) < mine]
        assert line.ahead(call) == len(earlier)
        assert line.waiting_before(call) == any(not p[3] for _, p in earlier)
