"""The center's working-day calendar (``callflow.calendar``) and its config section.

A follow-up promise ("三个工作日后给您答复", R8) is kept only if its due date is
counted on the PRC calendar: public holidays off, 调休 weekend days worked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from callflow.calendar import WorkCalendar
from callflow.config import CallFlowConfig, OpenHours, parse_callflow

D = dt.date
LIYI_YAML = Path(__file__).resolve().parent.parent / "liyi.yaml"

# The 2026 calendar as 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04) published it;
# text quoted in TestShippedCalendar. Built here by hand so the unit tests do not depend on liyi.yaml.
NATIONAL_DAY_2026 = frozenset(D(2026, 10, d) for d in range(1, 8))
SPRING_2026 = frozenset(D(2026, 2, d) for d in range(15, 24))
PRC_2026 = WorkCalendar(
    holidays=NATIONAL_DAY_2026 | SPRING_2026 | {D(2026, 1, 1), D(2026, 1, 2), D(2026, 1, 3)},
    workdays=frozenset({D(2026, 1, 4), D(2026, 2, 14), D(2026, 2, 28), D(2026, 9, 20), D(2026, 10, 10)}),
)


class TestWorkingDays:
    def test_weekend_is_skipped(self) -> None:
        """One working day after a Friday is the Monday."""
        assert WorkCalendar().add_working_days(D(2026, 3, 6), 1) == D(2026, 3, 9)

    def test_start_day_never_counts(self) -> None:
        """One working day after a Monday is the Tuesday, not the Monday itself."""
        assert WorkCalendar().add_working_days(D(2026, 3, 2), 1) == D(2026, 3, 3)

    def test_holiday_is_skipped(self) -> None:
        """A weekday holiday is not a working day and is stepped over."""
        cal = WorkCalendar(holidays=frozenset({D(2026, 3, 4)}))
        assert not cal.is_working_day(D(2026, 3, 4))
        assert cal.add_working_days(D(2026, 3, 3), 1) == D(2026, 3, 5)

    def test_moved_working_day_counts(self) -> None:
        """A 调休 Saturday is a working day: one working day after Friday 2026-02-13 is Saturday the 14th."""
        assert PRC_2026.is_working_day(D(2026, 2, 14))
        assert PRC_2026.add_working_days(D(2026, 2, 13), 1) == D(2026, 2, 14)
        assert WorkCalendar().add_working_days(D(2026, 2, 13), 1) == D(2026, 2, 16)

    def test_national_day_spanning_a_weekend(self) -> None:
        """A promise of 3 working days on 2026-09-30 skips 国庆 (Oct 1–7) and counts Saturday Oct 10."""
        # Oct 8 (Thu), Oct 9 (Fri), Oct 10 (Sat, 调休 working day)
        assert PRC_2026.add_working_days(D(2026, 9, 30), 3) == D(2026, 10, 10)
        assert PRC_2026.add_working_days(D(2026, 9, 30), 4) == D(2026, 10, 12)

    def test_spring_festival(self) -> None:
        """Nine days of 春节 (Feb 15–23) are skipped and the first working day after is Feb 24."""
        assert PRC_2026.add_working_days(D(2026, 2, 14), 1) == D(2026, 2, 24)

    def test_year_boundary(self) -> None:
        """From New Year's Eve 2025, 元旦 (Jan 1–3) is skipped and Sunday Jan 4, a 调休 day, is the first."""
        assert PRC_2026.add_working_days(D(2025, 12, 31), 1) == D(2026, 1, 4)
        assert PRC_2026.add_working_days(D(2025, 12, 31), 2) == D(2026, 1, 5)
        assert WorkCalendar().add_working_days(D(2026, 12, 31), 1) == D(2027, 1, 1)

    def test_between_counts_after_start_up_to_end(self) -> None:
        """Working days between two dates count the end day, not the start, and flip sign when reversed."""
        cal = WorkCalendar()
        assert cal.working_days_between(D(2026, 3, 6), D(2026, 3, 9)) == 1
        assert cal.working_days_between(D(2026, 3, 2), D(2026, 3, 2)) == 0
        assert cal.working_days_between(D(2026, 3, 9), D(2026, 3, 2)) == -5
        assert PRC_2026.working_days_between(D(2026, 9, 30), D(2026, 10, 8)) == 1

    def test_zero_or_negative_n_is_refused(self) -> None:
        """A promise of zero working days has no due date: asking for one is an error."""
        with pytest.raises(ValueError):
            WorkCalendar().add_working_days(D(2026, 3, 2), 0)

    def test_inconsistent_calendar_is_refused(self) -> None:
        """A day both off and worked, or a 'moved working day' on a weekday, cannot be built."""
        with pytest.raises(ValueError, match="both"):
            WorkCalendar(holidays=frozenset({D(2026, 2, 14)}), workdays=frozenset({D(2026, 2, 14)}))
        with pytest.raises(ValueError, match="weekend"):
            WorkCalendar(workdays=frozenset({D(2026, 2, 16)}))


DAYS = st.dates(min_value=D(2025, 1, 1), max_value=D(2028, 12, 31))


@st.composite
def calendars(draw: st.DrawFn) -> WorkCalendar:
    """Any consistent calendar: random holidays, random weekend days worked."""
    days = draw(st.sets(DAYS, max_size=120))
    workdays = frozenset(d for d in days if d.weekday() >= 5 and draw(st.booleans()))
    return WorkCalendar(holidays=frozenset(days - workdays), workdays=workdays)


class TestWorkingDayProperties:
    @given(cal=calendars(), start=DAYS, n=st.integers(1, 40))
    def test_due_date_is_a_working_day_exactly_n_after(self, cal: WorkCalendar, start: D, n: int) -> None:
        """The due date is always a working day, after the start, exactly N working days later."""
        due = cal.add_working_days(start, n)
        assert cal.is_working_day(due)
        assert due > start
        assert cal.working_days_between(start, due) == n
        # and no earlier day would do: the day before has only N-1 working days
        assert cal.working_days_between(start, due - dt.timedelta(days=1)) == n - 1

    @given(cal=calendars(), start=DAYS, n=st.integers(1, 40))
    def test_due_date_grows_with_n(self, cal: WorkCalendar, start: D, n: int) -> None:
        """One more working day promised is always a strictly later due date."""
        assert cal.add_working_days(start, n + 1) > cal.add_working_days(start, n)

    @given(cal=calendars(), a=DAYS, b=DAYS)
    def test_between_is_antisymmetric(self, cal: WorkCalendar, a: D, b: D) -> None:
        """Counting from b to a is the negative of counting from a to b."""
        assert cal.working_days_between(a, b) == -cal.working_days_between(b, a)


def parse(calendar: Any, **hours: Any) -> tuple[CallFlowConfig | None, list[str]]:
    data: dict[str, Any] = {"company": {"name": "礼仪客服中心"}, "calendar": calendar}
    if hours:
        data["hours"] = hours
    cfg, problems = parse_callflow(data)
    return cfg, [str(p) for p in problems]


class TestCalendarConfig:
    def test_dates_are_read_from_yaml_and_text(self) -> None:
        """Dates come as YAML dates or ISO text, and hours.holidays join the calendar's holidays."""
        cfg, problems = parse({"holidays": [D(2026, 10, 1), "2026-10-02"], "workdays": ["2026-10-10"]},
                              holidays=["2026-03-04"])
        assert problems == [] and cfg is not None
        assert cfg.calendar == WorkCalendar(
            holidays=frozenset({D(2026, 10, 1), D(2026, 10, 2), D(2026, 3, 4)}),
            workdays=frozenset({D(2026, 10, 10)}))
        assert cfg.holidays == frozenset({D(2026, 3, 4)})

    def test_no_calendar_section_is_a_plain_week(self) -> None:
        """Without a calendar section every weekday works and every weekend day is off."""
        cfg, problems = parse(None)
        assert problems == [] and cfg is not None
        assert cfg.calendar == WorkCalendar()

    def test_bad_dates_are_refused_with_their_path(self) -> None:
        """Each entry that is not a date is reported at its own index."""
        _, problems = parse({"holidays": ["2026-10-01", "国庆", "2026-02-30"],
                             "workdays": [dt.datetime(2026, 10, 10, 9, 0)]})
        assert problems == [
            "calendar.holidays[1]: '国庆' — must be a date like 2026-10-01",
            "calendar.holidays[2]: '2026-02-30' — must be a date like 2026-10-01",
            "calendar.workdays[0]: datetime.datetime(2026, 10, 10, 9, 0) — must be a date like 2026-10-01",
        ]

    def test_not_a_list_is_refused(self) -> None:
        """A single date or a mapping where a list belongs is refused at the key."""
        _, problems = parse({"holidays": "2026-10-01"})
        assert problems == ["calendar.holidays: '2026-10-01' — must be a list of dates like 2026-10-01"]
        _, problems = parse(["2026-10-01"])
        assert problems == ["calendar: ['2026-10-01'] — must be a mapping"]

    def test_day_both_off_and_worked_is_refused(self) -> None:
        """A workday that is also a holiday (in calendar or hours) is a problem at the workday entry."""
        _, problems = parse({"holidays": ["2026-10-10"], "workdays": ["2026-09-20", "2026-10-10"]})
        assert problems == [
            "calendar.workdays[1]: 2026-10-10 — also listed as a holiday; a day is either off or worked"]
        _, problems = parse({"workdays": ["2026-10-10"]}, holidays=["2026-10-10"])
        assert problems == [
            "calendar.workdays[0]: 2026-10-10 — also listed as a holiday; a day is either off or worked"]

    def test_workday_on_a_weekday_is_refused(self) -> None:
        """A moved working day must be a Saturday or Sunday; a Monday is already worked."""
        _, problems = parse({"workdays": ["2026-02-16"]})
        assert problems == [("calendar.workdays[0]: 2026-02-16 is a Monday — "
                             "a moved working day (调休) must be a Saturday or Sunday")]


def at(y: int, m: int, d: int, h: int = 10) -> dt.datetime:
    return dt.datetime(y, m, d, h, 0)


class TestIsOpen:
    WEEKDAY_HOURS = CallFlowConfig(
        open_hours=(OpenHours(frozenset(range(5)), dt.time(9), dt.time(18)),), calendar=PRC_2026)

    def test_calendar_holiday_is_closed(self) -> None:
        """On a calendar holiday the center is closed, even within weekday hours or around the clock."""
        assert not self.WEEKDAY_HOURS.is_open(at(2026, 10, 1))  # Thursday, 国庆
        assert self.WEEKDAY_HOURS.is_open(at(2026, 10, 8))
        assert not CallFlowConfig(calendar=PRC_2026).is_open(at(2026, 10, 1))

    def test_moved_working_saturday_keeps_weekday_hours(self) -> None:
        """On a 调休 Saturday the weekday opening hours apply; a plain Saturday stays closed."""
        assert self.WEEKDAY_HOURS.is_open(at(2026, 10, 10))
        assert not self.WEEKDAY_HOURS.is_open(at(2026, 10, 10, 19))
        assert not self.WEEKDAY_HOURS.is_open(at(2026, 10, 17))

    def test_hours_holidays_still_close(self) -> None:
        """The older hours.holidays list keeps closing the center as before."""
        cfg = replace(CallFlowConfig(), holidays=frozenset({D(2026, 3, 4)}))
        assert not cfg.is_open(at(2026, 3, 4)) and cfg.is_open(at(2026, 3, 5))

    def test_parsed_config_closes_on_holiday_and_opens_on_moved_workday(self) -> None:
        """Through the config: closed on a calendar holiday, greeted as open on a 调休 Sunday."""
        cfg, problems = parse({"holidays": ["2026-10-01"], "workdays": ["2026-09-20"]},
                              open=[{"days": ["mon", "tue", "wed", "thu", "fri"],
                                     "from": "09:00", "to": "18:00"}])
        assert problems == [] and cfg is not None
        assert not cfg.is_open(at(2026, 10, 1))
        assert cfg.is_open(at(2026, 9, 20))
        assert not cfg.is_open(at(2026, 9, 27))


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    """liyi.yaml as the CLI would load it."""
    data = yaml.safe_load(LIYI_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


class TestShippedCalendar:
    """liyi.yaml ships 2026 from 国务院办公厅关于2026年部分节假日安排的通知 (国务院办公厅, 2025-11-04),
    https://www.gov.cn/zhengce/content/202511/content_7047090.htm, text as carried by Xinhua
    (https://politics.gmw.cn/2025-11/04/content_38391083.htm):

      一、元旦：1月1日（周四）至3日（周六）放假调休，共3天。1月4日（周日）上班。
      二、春节：2月15日（农历腊月二十八、周日）至23日（农历正月初七、周一）放假调休，共9天。
          2月14日（周六）、2月28日（周六）上班。
      三、清明节：4月4日（周六）至6日（周一）放假，共3天。
      四、劳动节：5月1日（周五）至5日（周二）放假调休，共5天。5月9日（周六）上班。
      五、端午节：6月19日（周五）至21日（周日）放假，共3天。
      六、中秋节：9月25日（周五）至27日（周日）放假，共3天。
      七、国庆节：10月1日（周四）至7日（周三）放假调休，共7天。9月20日（周日）、10月10日（周六）上班。
    """

    def test_every_date_parses_and_none_overlap(self, shipped: dict[str, Any]) -> None:
        """The shipped calendar is accepted: every entry a date, no day both off and worked."""
        section = shipped["calendar"]
        cfg, problems = parse_callflow({"company": {"name": "x"}, "calendar": section})
        assert problems == [] and cfg is not None
        assert len(cfg.calendar.holidays) == len(section["holidays"])
        assert len(cfg.calendar.workdays) == len(section["workdays"])
        assert not cfg.calendar.holidays & cfg.calendar.workdays

    def test_matches_the_notice(self, shipped: dict[str, Any]) -> None:
        """The shipped 2026 days are exactly the notice's: 3+9+3+5+3+3+7 days off, 6 weekend days worked."""
        cfg, _ = parse_callflow({"company": {"name": "x"}, "calendar": shipped["calendar"]})
        assert cfg is not None
        spans = [(1, 1, 3), (2, 15, 9), (4, 4, 3), (5, 1, 5), (6, 19, 3), (9, 25, 3), (10, 1, 7)]
        expected = {D(2026, m, d) + dt.timedelta(days=i) for m, d, n in spans for i in range(n)}
        assert cfg.calendar.holidays == expected
        assert cfg.calendar.workdays == {D(2026, 1, 4), D(2026, 2, 14), D(2026, 2, 28),
                                         D(2026, 5, 9), D(2026, 9, 20), D(2026, 10, 10)}

    def test_weekdays_named_in_the_notice(self, shipped: dict[str, Any]) -> None:
        """Spot check: the weekdays the notice names (1月4日周日, 2月14日周六, 10月1日周四…) agree with the dates."""
        named = {D(2026, 1, 1): "Thu", D(2026, 1, 4): "Sun", D(2026, 2, 14): "Sat",
                 D(2026, 2, 23): "Mon", D(2026, 5, 5): "Tue", D(2026, 9, 20): "Sun",
                 D(2026, 10, 1): "Thu", D(2026, 10, 7): "Wed", D(2026, 10, 10): "Sat"}
        assert {d: f"{d:%a}" for d in named} == named
        cfg, _ = parse_callflow({"company": {"name": "x"}, "calendar": shipped["calendar"]})
        assert cfg is not None
        assert cfg.calendar.is_working_day(D(2026, 1, 4)) and not cfg.calendar.is_working_day(D(2026, 1, 1))

    def test_whole_example_config_still_parses(self, shipped: dict[str, Any]) -> None:
        """liyi.yaml as a whole stays valid with the calendar section in it."""
        cfg, problems = parse_callflow(shipped)
        assert problems == [] and cfg is not None
        assert not cfg.is_open(at(2026, 10, 1))
