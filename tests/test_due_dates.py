"""Follow-up due dates (R8): N working days after the promise, on the center's calendar.

"三个工作日后给您答复" is kept only if the due date lands where the caller
expects it: weekends and the PRC public holidays skipped, the 调休 weekend days
worked. Checked against an independent count (walk the days, keep the working
ones, take the N-th) on the 2026 calendar shipped in liyi.yaml and on random
calendars, plus the cases a person would check by hand.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from callflow.calendar import WorkCalendar
from callflow.config import parse_callflow

D = dt.date
LIYI_YAML = Path(__file__).resolve().parent.parent / "liyi.yaml"
YEAR_2026 = st.dates(min_value=D(2025, 12, 1), max_value=D(2026, 12, 31))
ANY_DAY = st.dates(min_value=D(2025, 1, 1), max_value=D(2028, 12, 31))


@cache
def shipped_2026() -> WorkCalendar:
    """The calendar section of the example config, read the way the service reads it."""
    data = yaml.safe_load(LIYI_YAML.read_text(encoding="utf-8"))
    cfg, problems = parse_callflow({"company": {"name": "x"}, "calendar": data["calendar"]})
    assert problems == [] and cfg is not None
    return cfg.calendar


def nth_working_day_after(cal: WorkCalendar, start: D, n: int) -> D:
    """Reference count, written independently: list the next days by the rule, take the N-th.

    A day is worked if it is a 调休 day, or a Monday–Friday that is not a holiday.
    """
    worked = [
        day
        for day in (start + dt.timedelta(days=i) for i in range(1, 10 * n + 60))
        if day in cal.workdays or (day.isoweekday() <= 5 and day not in cal.holidays)
    ]
    return worked[n - 1]


@st.composite
def calendars(draw: st.DrawFn) -> WorkCalendar:
    """A consistent calendar: random holidays (long runs too), random weekend days worked."""
    starts = draw(st.lists(ANY_DAY, max_size=12))
    lengths = draw(st.lists(st.integers(1, 10), min_size=len(starts), max_size=len(starts)))
    off = {s + dt.timedelta(days=i) for s, n in zip(starts, lengths, strict=True) for i in range(n)}
    off |= draw(st.sets(ANY_DAY, max_size=40))
    worked = frozenset(d for d in draw(st.sets(ANY_DAY, max_size=30)) if d.weekday() >= 5)
    return WorkCalendar(holidays=frozenset(off - worked), workdays=worked)


def assert_due_is_right(cal: WorkCalendar, promised: D, n: int) -> None:
    due = cal.add_working_days(promised, n)
    assert cal.is_working_day(due), f"{due} is a day off"
    assert due == nth_working_day_after(cal, promised, n)
    assert cal.working_days_between(promised, due) == n
    between = [promised + dt.timedelta(days=i) for i in range(1, (due - promised).days)]
    assert sum(cal.is_working_day(d) for d in between) == n - 1


class TestProperties:
    @given(promised=YEAR_2026, n=st.integers(1, 30))
    def test_shipped_2026_calendar(self, promised: D, n: int) -> None:
        """On the shipped 2026 calendar the due date is a working day exactly N working days on."""
        assert_due_is_right(shipped_2026(), promised, n)

    @given(cal=calendars(), promised=ANY_DAY, n=st.integers(1, 30))
    def test_random_calendars(self, cal: WorkCalendar, promised: D, n: int) -> None:
        """On any consistent calendar the due date is a working day exactly N working days on."""
        assert_due_is_right(cal, promised, n)


class TestExamples:
    @pytest.mark.parametrize(
        ("promised", "n", "due", "why"),
        [
            (D(2026, 3, 6), 1, D(2026, 3, 9), "Friday + 1: the weekend is skipped"),
            (D(2026, 3, 5), 3, D(2026, 3, 10), "Thursday + 3: Fri, Mon, Tue"),
            (D(2026, 3, 7), 1, D(2026, 3, 9), "promised on a Saturday: Monday is the first"),
            (D(2026, 9, 30), 3, D(2026, 10, 10),
             "国庆 Oct 1–7 off; Thu 8, Fri 9, then Saturday 10 is a 调休 working day"),
            (D(2026, 9, 30), 4, D(2026, 10, 12), "after the 调休 Saturday, Sunday is off again"),
            (D(2026, 10, 3), 1, D(2026, 10, 8), "promised during 国庆: the first day back"),
            (D(2026, 9, 18), 1, D(2026, 9, 20), "Sunday Sept 20 is worked for 国庆 (调休)"),
            (D(2026, 5, 8), 1, D(2026, 5, 9), "Saturday May 9 is worked for 劳动节 (调休)"),
            (D(2026, 4, 30), 3, D(2026, 5, 8), "劳动节 May 1–5 off: Wed 6, Thu 7, Fri 8"),
            (D(2026, 4, 30), 4, D(2026, 5, 9), "…and the 4th is the 调休 Saturday"),
            (D(2026, 2, 13), 1, D(2026, 2, 14), "Saturday Feb 14 is worked before 春节"),
            (D(2026, 2, 14), 1, D(2026, 2, 24), "春节 Feb 15–23 off"),
            (D(2026, 12, 31), 1, D(2027, 1, 1),
             "2027's notice is not in the config yet: Jan 1 2027 counts as a plain Friday"),
        ],
    )
    def test_by_hand(self, promised: D, n: int, due: D, why: str) -> None:
        """Due dates a person would work out from the State Council's 2026 notice."""
        assert shipped_2026().add_working_days(promised, n) == due, why

    def test_overdue_starts_the_day_after_the_due_date(self) -> None:
        """A promise of 3 working days on 2026-09-30 is still open on Oct 10, overdue on Oct 11."""
        from db import FollowUp

        due = shipped_2026().add_working_days(D(2026, 9, 30), 3)
        followup = FollowUp(id="f", call_id="c", kind="promise", text="三个工作日后给您答复",
                            number="1", owner="王芳", queue="", created_at=0.0, due=due,
                            state="open")
        assert followup.status(D(2026, 10, 10)) == "open"
        assert followup.status(D(2026, 10, 11)) == "overdue"
