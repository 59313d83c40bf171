"""Call-flow config validation (``callflow.config.parse_callflow``).

A config that would break a rule is refused before any call is taken, with
every problem and its dotted path, so an admin can fix them all in one go.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from callflow.config import (
    CALLBACK_PROMPTS,
    DEFAULT_BANDS,
    QUEUE_PROMPTS,
    AgentConfig,
    CallFlowConfig,
    ConfigProblem,
    Department,
    HoldConfig,
    KeyCodeConfig,
    RingCadence,
    TimeBand,
    TransferConfig,
    parse_callflow,
)

HOLD_AND_TRANSFER_PROMPTS = {f"hold-announce-{s}" for s in range(30, 301, 30)} | {
    "hold-reassure", "hold-limit-ask", "hold-return", "requeue-apology",
    "transfer-consent", "transfer-announce", "transfer-failed"}
KNOWN_PROMPTS = {"greeting-morning", "greeting-noon", "greeting-afternoon", "greeting-evening",
                 "greeting-closed", "ring-wait", "closing-thanks", "closing-more",
                 *HOLD_AND_TRANSFER_PROMPTS, *QUEUE_PROMPTS, *CALLBACK_PROMPTS}


def good() -> dict[str, Any]:
    """A complete, valid config, as liyi.yaml would load it."""
    return {
        "company": {"name": "礼仪客服中心", "timezone": "Asia/Shanghai"},
        "ring": {"cadence": {"on_seconds": 2.0, "off_seconds": 4.0},
                 "answer_after_rings": 2, "agent_rings": 3, "answer_delay_seconds": 0.5},
        "greeting": {"bands": [
            {"from": "05:00", "to": "11:00", "prompt": "greeting-morning"},
            {"from": "11:00", "to": "13:00", "prompt": "greeting-noon"},
            {"from": "13:00", "to": "18:00", "prompt": "greeting-afternoon"},
            {"from": "18:00", "to": "05:00", "prompt": "greeting-evening"},
        ]},
        "hours": {"open": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"},
                           {"days": ["saturday"], "from": 600, "to": "24:00"}],
                  "holidays": ["2026-10-01", dt.date(2026, 10, 2)],
                  "closed_prompt": "greeting-closed"},
        "waiting": {"prompt": "ring-wait", "music_class": "calm", "agent_retry_seconds": 3},
        "closing": {"after_agent_hangup": ["closing-more", "closing-thanks"],
                    "idle_release_minutes": 15, "prompt_timeout_seconds": 20},
        "agents": [{"name": "agent1", "endpoint": "PJSIP/agent1"}, {"name": "agent2"}],
        "hold": {"default_limit_seconds": 60, "max_limit_seconds": 300, "reassure_every_seconds": 30,
                 "agent_alert_before_seconds": 10, "limit_grace_seconds": 15},
        "transfer": {"consent_timeout_seconds": 15, "accept_timeout_seconds": 20},
        "keycodes": {"hold": "*1", "resume": "*0", "transfer_agent": "*2", "transfer_department": "*3",
                     "leave": "*9", "end": "#", "inter_digit_seconds": 3},
        "departments": [{"name": "售后", "number": "1", "agents": ["agent1", "agent2"]},
                        {"name": "技术", "number": 2, "agents": ["agent2"]}],
    }


def no_departments(data: dict[str, Any]) -> dict[str, Any]:
    """The config without departments, for tests that change the agents list itself."""
    data.pop("departments", None)
    return data


def problems_of(data: Any, **kwargs: Any) -> list[str]:
    cfg, problems = parse_callflow(data, **kwargs)
    assert cfg is None, "a bad config must not give a config"
    assert problems
    return [str(p) for p in problems]


def with_(path: str, value: Any) -> dict[str, Any]:
    """The good config with one dotted key replaced (a missing section is created)."""
    data = good()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


class TestGoodConfig:
    def test_good_config_is_read_into_frozen_settings(self) -> None:
        """A valid config parses with no problems into the values it states."""
        cfg, problems = parse_callflow(good(), known_prompts=KNOWN_PROMPTS)
        assert problems == []
        assert cfg is not None
        assert cfg.company == "礼仪客服中心"
        assert cfg.cadence == RingCadence(on=2.0, off=4.0)
        assert (cfg.answer_after_rings, cfg.agent_rings, cfg.answer_delay_seconds) == (2, 3, 0.5)
        assert cfg.answer_seconds() == 8.5  # US-like cadence: ring 2's tone ends at 8 s
        assert cfg.bands == DEFAULT_BANDS
        assert cfg.open_hours[0].days == frozenset(range(5))
        assert cfg.open_hours[1].days == frozenset({5})
        assert cfg.open_hours[1].start == dt.time(10) and cfg.open_hours[1].end == dt.time.max
        assert cfg.holidays == frozenset({dt.date(2026, 10, 1), dt.date(2026, 10, 2)})
        assert (cfg.wait_prompt, cfg.moh_class, cfg.agent_retry_seconds) == ("ring-wait", "calm", 3)
        assert cfg.closing_prompts == ("closing-more", "closing-thanks")
        assert cfg.idle_release_seconds == 15 * 60
        assert cfg.prompt_timeout_seconds == 20
        assert cfg.agents == (AgentConfig("agent1", "PJSIP/agent1"), AgentConfig("agent2", "PJSIP/agent2"))
        assert cfg.hold == HoldConfig()
        assert cfg.transfer == TransferConfig()
        assert cfg.keycodes == KeyCodeConfig()
        assert cfg.departments == (Department("售后", "1", ("agent1", "agent2")),
                                   Department("技术", "2", ("agent2",)))
        with pytest.raises(AttributeError):
            cfg.company = "other"  # type: ignore[misc]

    def test_minimal_config_takes_the_etiquette_defaults(self) -> None:
        """Only the company name is required; the rest defaults to the rulebook's values."""
        cfg, problems = parse_callflow({"company": {"name": "礼仪客服中心"}})
        assert problems == [] and cfg is not None
        assert cfg == CallFlowConfig(company="礼仪客服中心")
        assert cfg.cadence.ring_end(3) == 11.0
        assert cfg.answer_seconds() == 1.5  # R1: after ring 1's tone, like the dialplan fallback
        assert cfg.idle_release_seconds == 600.0

    def test_answer_after_ring_3_defaults_to_the_end_of_its_tone(self) -> None:
        """answer_after_rings 3 with no delay written answers as ring 3's tone ends (11 s), not later."""
        cfg, problems = parse_callflow({"company": {"name": "x"}, "ring": {"answer_after_rings": 3}})
        assert problems == [] and cfg is not None
        assert cfg.answer_delay_seconds == 0.0 and cfg.answer_seconds() == 11.0

    def test_delay_default_shrinks_to_a_short_silence(self) -> None:
        """With 0.3 s of silence between rings the default delay shrinks so the answer comes before the next ring."""
        cfg, problems = parse_callflow({"company": {"name": "x"},
                                        "ring": {"cadence": {"on_seconds": 0.1, "off_seconds": 0.3}}})
        assert problems == [] and cfg is not None
        assert cfg.answer_delay_seconds == pytest.approx(0.3)

    @pytest.mark.parametrize("off", ["", None, False])
    def test_wait_prompt_can_be_turned_off(self, off: Any) -> None:
        """An empty, null or false waiting.prompt means no wait notice (music at once), not an error."""
        cfg, problems = parse_callflow(with_("waiting.prompt", off), known_prompts=KNOWN_PROMPTS)
        assert problems == [] and cfg is not None
        assert cfg.wait_prompt is None

    def test_yaml_sexagesimal_times_are_read_as_clock_times(self) -> None:
        """YAML 1.1 reads an unquoted 09:00 as 540; that is still nine o'clock."""
        data = with_("hours.open", [{"days": ["mon"], "from": 540, "to": 1080}])
        cfg, problems = parse_callflow(data)
        assert problems == [] and cfg is not None
        assert (cfg.open_hours[0].start, cfg.open_hours[0].end) == (dt.time(9), dt.time(18))

    def test_bands_reaching_midnight_with_24_00(self) -> None:
        """A band may end at "24:00" and the next start at "00:00" without a gap."""
        data = with_("greeting.bands", [
            {"from": "00:00", "to": "12:00", "prompt": "greeting-morning"},
            {"from": "12:00", "to": "24:00", "prompt": "greeting-evening"},
        ])
        cfg, problems = parse_callflow(data)
        assert problems == [] and cfg is not None
        assert cfg.bands[1] == TimeBand(dt.time(12), dt.time.max, "greeting-evening")


class TestR1Limits:
    def test_answer_after_four_rings_is_refused(self) -> None:
        """answer_after_rings 4 is refused with the R1 reason."""
        assert problems_of(with_("ring.answer_after_rings", 4)) == [
            "ring.answer_after_rings: 4 — must be 1..3 (R1)"]

    def test_agent_rings_five_is_refused(self) -> None:
        """agent_rings 5 is refused with the R1 reason."""
        assert problems_of(with_("ring.agent_rings", 5)) == ["ring.agent_rings: 5 — must be 1..3 (R1)"]

    @pytest.mark.parametrize(("value", "message"), [
        (0, "0 — must be 1..3 (R1)"),
        (2.5, "2.5 — must be a whole number (R1)"),
        (True, "True — must be a whole number (R1)"),
        ("two", "'two' — must be a whole number (R1)"),
    ])
    def test_answer_after_rings_must_be_a_whole_number_1_to_3(self, value: Any, message: str) -> None:
        """answer_after_rings must be a whole number 1..3, not 0, a fraction, a boolean or text."""
        assert problems_of(with_("ring.answer_after_rings", value)) == [
            f"ring.answer_after_rings: {message}"]

    def test_delay_past_the_next_ring_is_refused(self) -> None:
        """A delay longer than the silence after ring N would answer inside ring N+1, so it is refused."""
        assert problems_of(with_("ring.answer_delay_seconds", 5)) == [
            "ring.answer_delay_seconds: 5 — must be 0..4: the answer comes in the silence after "
            "ring 2's tone, before ring 3 starts (R1)"]

    def test_delay_after_ring_3_is_refused(self) -> None:
        """With answer_after_rings 3 any delay would answer after ring 3 ended, so it is refused, naming the last moment."""
        data = with_("ring.answer_after_rings", 3)
        data["ring"]["answer_delay_seconds"] = 0.5
        assert problems_of(data) == [
            "ring.answer_delay_seconds: 0.5 — with answer_after_rings 3 the answer must come as "
            "ring 3's tone ends, 14 s after arrival — the last moment R1 allows; use 0"]

    def test_negative_delay_is_refused(self) -> None:
        """A negative delay would answer inside ring N's tone, so it is refused."""
        (problem,) = problems_of(with_("ring.answer_delay_seconds", -0.3))
        assert problem.startswith("ring.answer_delay_seconds: -0.3 — must be 0..10")

    def test_the_old_answer_guard_is_refused_with_the_fix(self) -> None:
        """A config still setting answer_guard_seconds is told the key is gone and what replaced it."""
        (problem,) = problems_of(with_("ring.answer_guard_seconds", 0.3))
        assert problem.startswith("ring.answer_guard_seconds: no longer used")
        assert "answer_delay_seconds" in problem


class TestFlowsCheck:
    def test_the_limit_is_read_and_defaults_to_30_s(self) -> None:
        """flows_check.max_seconds_to_agent is read as written, and is 30 s when left out."""
        cfg, problems = parse_callflow(with_("flows_check.max_seconds_to_agent", 45))
        assert problems == [] and cfg is not None and cfg.max_seconds_to_agent == 45.0
        default, _ = parse_callflow(good())
        assert default is not None and default.max_seconds_to_agent == 30.0

    def test_a_limit_out_of_range_is_refused(self) -> None:
        """A limit of 2 s (no flow could meet it) is refused with the range and its purpose."""
        (problem,) = problems_of(with_("flows_check.max_seconds_to_agent", 2))
        assert problem.startswith("flows_check.max_seconds_to_agent: 2 — must be 5..600 (a caller "
                                  "who presses nothing")


class TestR2Bands:
    def test_gap_between_bands_is_refused(self) -> None:
        """Bands that leave an hour with no greeting are refused, naming the first uncovered minute."""
        data = good()
        data["greeting"]["bands"][3]["from"] = "19:00"
        assert problems_of(data) == [
            "greeting.bands: no band covers 18:00 — every hour needs a greeting (R2)"]

    def test_overlapping_bands_are_refused(self) -> None:
        """Bands that give one minute two greetings are refused, naming both bands."""
        data = good()
        data["greeting"]["bands"][3]["from"] = "17:00"
        assert problems_of(data) == ["greeting.bands: bands [2], [3] overlap at 17:00"]

    def test_band_without_prompt_or_with_equal_ends_is_refused(self) -> None:
        """A band needs a prompt and a non-empty span."""
        data = good()
        data["greeting"]["bands"][0] = {"from": "05:00", "to": "11:00"}
        data["greeting"]["bands"][1] = {"from": "11:00", "to": "11:00", "prompt": "greeting-noon"}
        assert problems_of(data) == [
            "greeting.bands[0].prompt: missing — each band needs its greeting prompt (R2)",
            "greeting.bands[1]: from and to are equal — an empty band",
        ]

    def test_bands_must_be_a_list(self) -> None:
        """greeting.bands given as text is refused."""
        assert problems_of(with_("greeting.bands", "morning")) == [
            "greeting.bands: must be a list of {from, to, prompt} (R2)"]

    def test_missing_company_name_is_refused(self) -> None:
        """Without a company name the greeting could not name the company (R2)."""
        data = good()
        del data["company"]["name"]
        assert problems_of(data) == ["company.name: missing — the greeting must name the company (R2)"]

    def test_blank_company_name_is_refused(self) -> None:
        """A blank company name is as bad as a missing one."""
        assert any(p.startswith("company.name: ") for p in problems_of(with_("company.name", "  ")))

    @pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd"])
    def test_unknown_time_zone_is_refused(self, zone: str) -> None:
        """A time zone that does not exist is refused with an example of a good one."""
        assert problems_of(with_("company.timezone", zone)) == [
            f"company.timezone: {zone!r} — unknown time zone (e.g. Asia/Shanghai)"]

    @pytest.mark.parametrize("bad", ["25:00", "9am", "12:60", "10:30:00", "", None, 1440, -5])
    def test_bad_time_strings_are_refused(self, bad: Any) -> None:
        """A band time that is not a clock time is refused at its own path."""
        data = good()
        data["greeting"]["bands"][0]["from"] = bad
        assert problems_of(data) == [
            f"greeting.bands[0].from: {bad!r} — must be a time like \"09:00\""]


class TestHoursAndClosing:
    def test_opening_hours_ending_before_they_start_are_refused(self) -> None:
        """An opening span whose end is not after its start is refused."""
        data = with_("hours.open", [{"days": ["mon"], "from": "18:00", "to": "09:00"},
                                    {"days": ["tue"], "from": "09:00", "to": "09:00"}])
        assert problems_of(data) == ["hours.open[0]: to must be later than from",
                                     "hours.open[1]: to must be later than from"]

    def test_unknown_weekday_and_bad_holiday_are_refused(self) -> None:
        """Weekday names and holiday dates are checked one by one."""
        data = with_("hours.open", [{"days": ["mon", "funday"], "from": "09:00", "to": "18:00"}])
        data["hours"]["holidays"] = ["2026-10-01", "National Day"]
        assert problems_of(data) == [
            "hours.open[0].days: 'funday' — must be one of mon, tue, wed, thu, fri, sat, sun",
            "hours.holidays[1]: 'National Day' — must be a date like 2026-10-01",
        ]

    def test_idle_release_of_zero_minutes_is_refused(self) -> None:
        """Releasing a silent line at once would hang up on callers (R9), so 0 minutes is refused."""
        assert problems_of(with_("closing.idle_release_minutes", 0)) == [(
            "closing.idle_release_minutes: 0 — must be 1..1440 "
            "(R9: a silent line may be released only after a long idle time)")]

    def test_no_closing_prompt_is_refused(self) -> None:
        """A caller left by the agent must hear a closing prompt, so an empty list is refused."""
        assert problems_of(with_("closing.after_agent_hangup", [])) == [(
            "closing.after_agent_hangup: empty — a caller left by the agent must hear "
            "the closing prompt (R9)")]

    def test_unknown_prompt_is_refused_when_prompts_are_known(self) -> None:
        """With the list of recorded prompts, a config naming a prompt that does not exist is refused."""
        data = good()
        data["greeting"]["bands"][2]["prompt"] = "greeting-teatime"
        data["closing"]["after_agent_hangup"] = ["closing-bye"]
        assert problems_of(data, known_prompts=KNOWN_PROMPTS) == [
            "closing.after_agent_hangup: prompt 'closing-bye' does not exist in scripts_zh/",
            "greeting.bands[2].prompt: prompt 'greeting-teatime' does not exist in scripts_zh/",
        ]

    def test_prompts_are_not_checked_without_a_list(self) -> None:
        """Without known_prompts any prompt name is accepted (the CLI checks them when it can)."""
        cfg, problems = parse_callflow(with_("waiting.prompt", "not-recorded-yet"))
        assert problems == [] and cfg is not None and cfg.wait_prompt == "not-recorded-yet"


class TestAgents:
    def test_duplicate_agent_names_are_refused(self) -> None:
        """The same agent listed twice is refused at the second entry."""
        data = no_departments(with_("agents", [{"name": "agent1"}, {"name": "agent1", "endpoint": "PJSIP/x"}]))
        assert problems_of(data) == ["agents[1].name: 'agent1' — listed twice"]

    @pytest.mark.parametrize(("entry", "message"), [
        ({"endpoint": "PJSIP/a"}, "agents[0].name: missing"),
        ({"name": "张 三"}, "agents[0].name: '张 三' — letters, digits, - _ . only"),
        ({"name": "a1", "endpoint": "a1"}, "agents[0].endpoint: 'a1' — must look like PJSIP/a1"),
        ("agent1", "agents[0]: 'agent1' — must be a mapping with name and endpoint"),
    ])
    def test_bad_agent_entries_are_refused(self, entry: Any, message: str) -> None:
        """Each agent needs a plain name and an endpoint like PJSIP/name."""
        assert problems_of(no_departments(with_("agents", [entry]))) == [message]

    def test_agents_as_a_mapping_are_refused(self) -> None:
        """agents must be a list, not a mapping of names."""
        assert problems_of(no_departments(with_("agents", {"agent1": "PJSIP/agent1"}))) == [
            "agents: must be a list of {name, endpoint}"]


class TestHoldTransferKeycodes:
    def test_hold_limits_are_30_second_steps_each_with_its_prompt(self) -> None:
        """The allowed hold limits run from 30 s to the maximum in 30 s steps; each names its announcement."""
        cfg, _ = parse_callflow(with_("hold.max_limit_seconds", 120))
        assert cfg is not None
        assert cfg.hold.allowed_limits() == (30, 60, 90, 120)
        assert not cfg.hold.is_allowed(45) and not cfg.hold.is_allowed(150) and cfg.hold.is_allowed(90)
        assert {"hold-announce-30", "hold-announce-120"} <= cfg.prompts_used()
        assert "hold-announce-150" not in cfg.prompts_used()

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("default_limit_seconds", 45, "hold.default_limit_seconds: 45 — must be a multiple of 30"),
        ("default_limit_seconds", 600, "hold.default_limit_seconds: 600 — must be 30..300"),
        ("max_limit_seconds", 100, "hold.max_limit_seconds: 100 — must be a multiple of 30"),
        ("max_limit_seconds", 20, "hold.max_limit_seconds: 20 — must be 30..1800"),
        ("limit_grace_seconds", 0, "hold.limit_grace_seconds: 0 — must be 3..60"),
        ("reassure_every_seconds", 600, "hold.reassure_every_seconds: 600 — must be 5..120"),
        ("agent_alert_before_seconds", 30, "hold.agent_alert_before_seconds: 30 — must be 0..29"),
    ])
    def test_bad_hold_settings_are_refused(self, key: str, value: Any, message: str) -> None:
        """Hold limits off the 30 s steps, a limit over the maximum, no grace or rare reassurance are refused (R4)."""
        problems = problems_of(with_(f"hold.{key}", value))
        assert len(problems) == 1 and problems[0].startswith(message)

    def test_a_maximum_without_recorded_announcements_is_caught(self) -> None:
        """A maximum hold of 6 minutes needs hold-announce-330 and -360; check-config names them."""
        problems = problems_of(with_("hold.max_limit_seconds", 360), known_prompts=KNOWN_PROMPTS)
        assert problems == [
            "hold.max_limit_seconds: prompt 'hold-announce-330' does not exist in scripts_zh/",
            "hold.max_limit_seconds: prompt 'hold-announce-360' does not exist in scripts_zh/"]

    def test_transfer_timeouts_are_bounded(self) -> None:
        """A consent timeout of 0 s (no time to answer) is refused."""
        assert problems_of(with_("transfer.consent_timeout_seconds", 0))[0].startswith(
            "transfer.consent_timeout_seconds: 0 — must be 3..120")

    @pytest.mark.parametrize(("keycodes", "message"), [
        ({"hold": "*1", "resume": "*12"}, "keycodes.hold: '*1' is the start of keycodes.resume '*12'"),
        ({"leave": "x9"}, "keycodes.leave: 'x9' — must be DTMF keys"),
        ({"end": "##"}, "keycodes.end: '##' — must be one DTMF key"),
        ({"end": "9"}, "keycodes.leave: '*9' contains the end key '9'"),
        ({"inter_digit_seconds": 0}, "keycodes.inter_digit_seconds: 0 — must be 0.5..15"),
    ])
    def test_bad_key_codes_are_refused(self, keycodes: dict[str, Any], message: str) -> None:
        """Key codes must be DTMF, none the start of another, and not contain the end key."""
        problems = problems_of(with_("keycodes", keycodes))
        assert any(p.startswith(message) for p in problems), problems

    @pytest.mark.parametrize(("departments", "message"), [
        ([{"name": "售后", "number": "1", "agents": ["agent9"]}],
         "departments[0].agents[0]: 'agent9' — not an agent in agents"),
        ([{"name": "售后", "number": "1", "agents": ["agent1"]},
          {"name": "技术", "number": "1", "agents": ["agent2"]}],
         "departments[1].number: '1' — already used by departments[0]"),
        ([{"name": "售后", "number": "一", "agents": ["agent1"]}],
         "departments[0].number: '一' — must be digits, dialled after *3"),
        ([{"name": "售后", "number": "1", "agents": []}],
         "departments[0].agents: must list at least one agent name"),
        ([{"name": "售后", "number": "1", "agents": ["agent1"]},
          {"name": "售后", "number": "2", "agents": ["agent2"]}],
         "departments[1].name: '售后' — listed twice"),
        ({"售后": ["agent1"]}, "departments: must be a list of {name, number, agents}"),
    ])
    def test_bad_departments_are_refused(self, departments: Any, message: str) -> None:
        """Departments need known agents and their own dial number."""
        assert problems_of(with_("departments", departments)) == [message]

    def test_department_by_name_or_number(self) -> None:
        """A department is found by its name (dept:售后) or by the number typed after *3."""
        cfg, _ = parse_callflow(good())
        assert cfg is not None
        assert cfg.department("售后") == cfg.department("1") == cfg.departments[0]
        assert cfg.department("9") is None


class TestShapeAndReporting:
    @pytest.mark.parametrize("section", ["company", "ring", "greeting", "hours", "waiting", "closing"])
    def test_a_section_that_is_not_a_mapping_is_refused(self, section: str) -> None:
        """A section given as a scalar is reported at the section's path."""
        data = good()
        data[section] = 3
        assert f"{section}: 3 — must be a mapping" in problems_of(data)

    def test_nested_section_that_is_not_a_mapping_is_refused(self) -> None:
        """ring.cadence given as a list is reported at ring.cadence."""
        assert problems_of(with_("ring.cadence", [1, 4])) == ["ring.cadence: [1, 4] — must be a mapping"]

    def test_top_level_must_be_a_mapping(self) -> None:
        """A config file that is a list is refused as a whole."""
        assert problems_of(["company"]) == ["(top): the config must be a mapping of sections"]

    def test_several_problems_are_reported_together(self) -> None:
        """Every problem in the config is reported at once, each at its own path."""
        data = good()
        data["ring"]["answer_after_rings"] = 4
        data["company"]["timezone"] = "Nowhere/Land"
        data["closing"]["idle_release_minutes"] = 0
        data["greeting"]["bands"][3]["from"] = "17:00"
        data["agents"].append({"name": "agent2"})
        paths = [p.split(":")[0] for p in problems_of(data)]
        assert sorted(paths) == sorted(["company.timezone", "ring.answer_after_rings", "greeting.bands",
                                        "closing.idle_release_minutes", "agents[2].name"])

    def test_problem_text_names_the_line_when_known(self) -> None:
        """A problem with a line number says so first, so an admin finds it in the file."""
        assert str(ConfigProblem("ring.agent_rings", "5 — must be 1..3 (R1)", line=14)) == \
            "line 14: ring.agent_rings: 5 — must be 1..3 (R1)"
