"""``liyi simulate``: what a caller would hear at a given time, with the shipped liyi.yaml.

The example config opens Monday–Friday 08:30–20:00 and Saturday 09:00–17:00,
closes on the State Council's 2026 holidays, and works the moved Saturdays
and Sundays (调休) with weekday hours.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from liyi import cli

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "liyi.yaml")


def simulate(capsys: pytest.CaptureFixture[str], at: str, keys: str = "") -> str:
    assert cli.main(["simulate", "--config", CONFIG, "--at", at, "--keys", keys]) == 0
    return capsys.readouterr().out


def prompts(out: str) -> list[str]:
    """The prompt names in the order the caller hears them."""
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "「" in line:
            names.append(parts[1])
    return names


@pytest.mark.parametrize(("at", "greeting"), [
    ("2026-12-01 08:45", "greeting-morning"),
    ("2026-12-01 12:10", "greeting-noon"),
    ("2026-12-01 15:00", "greeting-afternoon"),
    ("2026-12-01 19:30", "greeting-evening"),
])
def test_each_time_band_gets_its_greeting_then_the_menu(
        capsys: pytest.CaptureFixture[str], at: str, greeting: str) -> None:
    """Inside opening hours the caller hears the band's greeting, then the menu."""
    out = simulate(capsys, at, "1")
    assert prompts(out)[:2] == [greeting, "menu-main"]
    assert "工作日 working day · open" in out


def test_key_2_goes_through_the_name_step_to_the_repair_queue(capsys: pytest.CaptureFixture[str]) -> None:
    """Key 2: "请在提示音后说出您的姓名", the recording, the wait notice, then the 报修 queue."""
    out = simulate(capsys, "2026-12-01 10:00", "2")
    assert prompts(out) == ["greeting-morning", "menu-main", "name-ask", "ring-wait"]
    assert "caller presses 2" in out and "● 录音" in out
    assert "→ 排队 queue 报修" in out
    assert "the caller waits in the queue" in out


def test_no_key_takes_the_default_after_the_menu_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A caller who presses nothing hears the menu once (the shipped repeat: 0), then goes to the default (咨询)."""
    out = simulate(capsys, "2026-12-01 10:00")
    assert prompts(out) == ["greeting-morning", "menu-main", "ring-wait"]
    assert "default route → consult" in out
    assert "→ 排队 queue 咨询" in out


def seconds_to_agent(out: str) -> float:
    """The figure simulate prints for when the first agent's phone rings."""
    line = next(line for line in out.splitlines() if "first agent rings" in line)
    return float(line.split("first agent rings ")[1].split(" s ")[0])


def test_a_silent_caller_reaches_an_agents_phone_within_30_s(capsys: pytest.CaptureFixture[str]) -> None:
    """With the shipped config a caller who presses nothing is at an agent's phone within 30 s of arrival, and simulate says when."""
    out = simulate(capsys, "2026-12-01 19:30")
    assert 15.0 < seconds_to_agent(out) <= 30.0
    assert "later than flows_check" not in out


def test_the_first_ring_time_follows_the_path_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """Key 2 goes through the name step, so the first agent rings later than for key 1, and the printed times say so."""
    key_1 = seconds_to_agent(simulate(capsys, "2026-12-01 10:00", "1"))
    key_2 = seconds_to_agent(simulate(capsys, "2026-12-01 10:00", "2"))
    assert key_1 < key_2
    assert key_1 < 20.0  # answered at 1.5 s, the greeting, the menu, the key, the wait notice


def test_a_slow_first_ring_is_flagged_against_the_limit(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With flows_check.max_seconds_to_agent lowered to 10 s, simulate flags the first ring as later than the limit."""
    data = yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8"))
    data["flows_check"] = {"max_seconds_to_agent": 10}
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert cli.main(["simulate", "--config", str(tight), "--at", "2026-12-01 10:00"]) == 0
    assert "later than flows_check.max_seconds_to_agent (10 s)" in capsys.readouterr().out


def test_a_path_with_no_agent_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """After hours the caller who declines the callback reaches no agent, and simulate says no agent's phone rings."""
    out = simulate(capsys, "2026-12-01 21:00", "2")
    assert "no agent's phone rings on this path" in out


def test_after_hours_the_closed_flow_offers_a_callback(capsys: pytest.CaptureFixture[str]) -> None:
    """At 21:00 on a weekday: the closed greeting, the callback offer, then the closing."""
    out = simulate(capsys, "2026-12-01 21:00", "2")
    assert "· closed" in out and "flow: closed" in out
    assert prompts(out) == ["greeting-closed", "callback-offer-closed", "closing-thanks"]
    assert "the line stays open until the caller hangs up" in out


def test_a_public_holiday_is_closed_all_day(capsys: pytest.CaptureFixture[str]) -> None:
    """国庆 2026-10-01 at 10:00 is a holiday: closed flow, no queue."""
    out = simulate(capsys, "2026-10-01 10:00", "1")
    assert "节假日 holiday · closed" in out
    assert prompts(out)[0] == "greeting-closed"
    assert "排队" not in out


def test_a_moved_working_day_keeps_weekday_hours(capsys: pytest.CaptureFixture[str]) -> None:
    """Saturday 2026-10-10 is a 调休 working day: open at 18:30 (weekday hours), unlike other Saturdays."""
    out = simulate(capsys, "2026-10-10 18:30", "1")
    assert "调休上班 moved working day · open" in out
    assert prompts(out)[:2] == ["greeting-evening", "menu-main"]
    other = simulate(capsys, "2026-10-17 18:30", "1")
    assert "周末 weekend · closed" in other


def test_a_callback_left_after_hours_is_read_back(capsys: pytest.CaptureFixture[str]) -> None:
    """Key 1 at the closed flow's offer, 1 to confirm: the number read back, a callback recorded."""
    out = simulate(capsys, "2026-12-01 21:00", "11")
    assert "digits 13800138000" in out
    assert "callback recorded for 13800138000, due 2026-12-02" in out


def test_a_bad_time_is_refused_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """--at that is not a local time gets exit 2 and an example of the format."""
    assert cli.main(["simulate", "--config", CONFIG, "--at", "tomorrow"]) == 2
    assert '"2026-12-01 19:30"' in capsys.readouterr().err
