"""The center's working-day calendar: which days are worked, and counting in working days.

A promise like "三个工作日后给您答复" (R8) is only kept if its due date is
counted the way the caller counts: on the PRC calendar, where public holidays
are days off and some weekend days are worked instead (调休). Weekdays are
working days unless listed as holidays; weekend days are days off unless
listed as moved working days. The calendar is data (from the config, taken
from the State Council's yearly notice), so this module does no I/O and never
reads the clock: every date comes in as an argument.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

SATURDAY = 5  # date.weekday(): 0 = Monday … 5 = Saturday, 6 = Sunday
ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """Days off and moved working days, on top of the Monday–Friday week.

    ``holidays`` are days off (usually weekdays; a weekend day listed here is
    simply off anyway). ``workdays`` are weekend days that are worked (调休).
    A day cannot be both, and a "moved working day" on Monday–Friday would
    mean nothing, so both are refused here as in the config.
    """

    holidays: frozenset[dt.date] = frozenset()
    workdays: frozenset[dt.date] = frozenset()  # moved working days (调休: weekend days worked)

    def __post_init__(self) -> None:
        both = self.holidays & self.workdays
        if both:
            raise ValueError(f"dates both holiday and moved working day: {_dates(both)}")
        weekdays = {d for d in self.workdays if d.weekday() < SATURDAY}
        if weekdays:
            raise ValueError(f"moved working days must be weekend days: {_dates(weekdays)}")

    def is_working_day(self, d: dt.date) -> bool:
        """A weekday that is not a holiday, or a weekend day moved into a working day."""
        if d in self.workdays:
            return True
        return d.weekday() < SATURDAY and d not in self.holidays

    def add_working_days(self, start: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``start`` (``start`` itself never counts).

        A promise made on any day — a holiday or a Sunday too — falls due on a
        working day, exactly ``n`` working days later.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        day = start
        remaining = n
        while remaining:
            day += ONE_DAY
            if self.is_working_day(day):
                remaining -= 1
        return day

    def working_days_between(self, a: dt.date, b: dt.date) -> int:
        """Working days after ``a`` up to and including ``b`` (negative when ``b`` is before ``a``).

        Counted like ``add_working_days``, so that
        ``working_days_between(s, add_working_days(s, n)) == n``.
        """
        if b < a:
            return -self.working_days_between(b, a)
        return sum(1 for i in range(1, (b - a).days + 1) if self.is_working_day(a + i * ONE_DAY))


def _dates(ds: set[dt.date] | frozenset[dt.date]) -> str:
    return ", ".join(d.isoformat() for d in sorted(ds))
