"""The queue (R5), wrap-up and follow-up (R8) settings of the config.

``queue:`` sets how a waiting caller is kept informed and when a callback is
offered, each department may override it key by key, agents may pause after
each call, and ``followups:`` sets reply times and how a callback is dialled.
Values that would break a rule are refused at their dotted path and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callflow.config import AgentConfig, FollowUpConfig, QueueConfig, parse_callflow
from liyi import cli


def config(**sections: Any) -> dict[str, Any]:
    """A small valid config with two agents and two departments, plus the given sections."""
    data: dict[str, Any] = {
        "company": {"name": "礼仪客服中心"},
        "agents": [{"name": "agent1"}, {"name": "agent2"}],
        "departments": [{"name": "咨询", "number": "1", "agents": ["agent1", "agent2"]},
                        {"name": "报修", "number": "2", "agents": ["agent2"]}],
    }
    data.update(sections)
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    cfg, problems = parse_callflow(data)
    assert cfg is None, "a bad config must not give a config"
    return [str(p) for p in problems]


class TestQueue:
    def test_queue_settings_are_read(self) -> None:
        """Every queue key is read into QueueConfig."""
        cfg, problems = parse_callflow(config(queue={
            "announce": "both", "announce_every_seconds": 30, "max_wait_seconds": 240,
            "callback_offer": True, "expected_handle_seconds": 120,
            "offer_timeout_seconds": 5, "number_timeout_seconds": 12}))
        assert problems == [] and cfg is not None
        assert cfg.queue == QueueConfig(announce="both", announce_every_seconds=30.0,
                                        max_wait_seconds=240.0, callback_offer=True,
                                        expected_handle_seconds=120.0, offer_timeout_seconds=5.0,
                                        number_timeout_seconds=12.0)

    def test_without_a_queue_section_the_defaults_apply(self) -> None:
        """No queue section: the rulebook defaults, and no department has its own."""
        cfg, problems = parse_callflow(config())
        assert problems == [] and cfg is not None
        assert cfg.queue == QueueConfig()
        assert all(d.queue is None for d in cfg.departments)
        assert cfg.queue_for("报修") == cfg.queue_for("") == QueueConfig()

    def test_a_department_overrides_the_general_queue_key_by_key(self) -> None:
        """departments[i].queue replaces only the keys it names; the rest come from queue:."""
        data = config(queue={"announce": "wait", "max_wait_seconds": 300})
        data["departments"][1]["queue"] = {"max_wait_seconds": 120, "callback_offer": True}
        cfg, problems = parse_callflow(data)
        assert problems == [] and cfg is not None
        assert cfg.queue_for("报修") == QueueConfig(announce="wait", max_wait_seconds=120.0)
        assert cfg.queue_for("2") == cfg.queue_for("报修")  # by dial number too
        assert cfg.queue_for("咨询") == QueueConfig(announce="wait", max_wait_seconds=300.0)

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("announce", "music", "'music' — must be one of position, wait, both (R5)"),
        ("announce", "none", ("none — a waiting caller must hear their position or the expected "
                              "wait (R5); use position, wait or both")),
        ("callback_offer", False, ("false — after the maximum wait the caller must be offered a "
                                   "callback or to keep waiting (R5)")),
        ("announce_every_seconds", 10, "10 — must be 15..300 (R5: a waiting caller hears where they are)"),
        ("max_wait_seconds", 3600, "3600 — must be 30..1800 (R5: no long waits in the queue)"),
        ("max_wait_seconds", 20, "20 — must be 30..1800 (R5: no long waits in the queue)"),
        ("callback_offer", "yes", "'yes' — must be true or false (R5)"),
        ("expected_handle_seconds", 10, "10 — must be 30..3600"),
        ("offer_timeout_seconds", 60, "60 — must be 3..30"),
        ("number_timeout_seconds", 2, "2 — must be 3..30"),
        ("wrap_up_seconds", 601, "601 — must be 0..600"),
        ("max_wait", 300, ("unknown key (known: announce, announce_every_seconds, max_wait_seconds, "
                           "callback_offer, expected_handle_seconds, offer_timeout_seconds, number_timeout_seconds, "
                           "wrap_up_seconds)")),
    ])
    def test_bad_queue_settings_are_refused(self, key: str, value: Any, message: str) -> None:
        """Each queue setting outside its bounds (or misspelt) is refused at queue.<key>."""
        assert problems_of(config(queue={key: value})) == [f"queue.{key}: {message}"]

    def test_a_bad_department_queue_is_refused_at_its_own_path(self) -> None:
        """A department's queue is checked like the general one, at departments[i].queue.<key>."""
        data = config()
        data["departments"][0]["queue"] = {"max_wait_seconds": 5, "wrap_up_seconds": 10}
        assert problems_of(data) == [
            ("departments[0].queue.wrap_up_seconds: unknown key (known: announce, "
             "announce_every_seconds, max_wait_seconds, callback_offer, expected_handle_seconds, "
             "offer_timeout_seconds, number_timeout_seconds)"),
            ("departments[0].queue.max_wait_seconds: 5 — must be 30..1800 (R5: no long waits in "
             "the queue)")]

    def test_a_queue_that_is_not_a_mapping_is_refused(self) -> None:
        """queue: given as a number is refused at its path."""
        assert problems_of(config(queue=180)) == ["queue: 180 — must be a mapping"]


class TestWrapUp:
    def test_agents_take_the_general_wrap_up_unless_they_have_their_own(self) -> None:
        """queue.wrap_up_seconds is every agent's pause; agents[i].wrap_up_seconds overrides it."""
        data = config(queue={"wrap_up_seconds": 20})
        data["agents"][1]["wrap_up_seconds"] = 0
        cfg, problems = parse_callflow(data)
        assert problems == [] and cfg is not None
        assert cfg.agents == (AgentConfig("agent1", "PJSIP/agent1", 20.0),
                              AgentConfig("agent2", "PJSIP/agent2", 0.0))
        assert (cfg.wrap_up_for("agent1"), cfg.wrap_up_for("agent2")) == (20.0, 0.0)

    def test_no_wrap_up_by_default(self) -> None:
        """Without any wrap-up setting an agent is offered the next call at once."""
        cfg, _ = parse_callflow(config())
        assert cfg is not None and cfg.wrap_up_for("agent1") == 0.0

    @pytest.mark.parametrize(("value", "message"), [(-1, "-1 — must be 0..600"),
                                                    (900, "900 — must be 0..600"),
                                                    ("1m", "'1m' — must be a number")])
    def test_a_bad_agent_wrap_up_is_refused(self, value: Any, message: str) -> None:
        """An agent's wrap-up is 0..600 seconds."""
        data = config()
        data["agents"][0]["wrap_up_seconds"] = value
        assert problems_of(data) == [f"agents[0].wrap_up_seconds: {message}"]


class TestFollowUps:
    def test_followup_settings_are_read(self) -> None:
        """Every followups key is read into FollowUpConfig; a numeric caller id becomes text."""
        cfg, problems = parse_callflow(config(followups={
            "promise_working_days": 5, "callback_working_days": 0, "max_working_days": 10,
            "customer_dial": "PJSIP/{number}@carrier", "caller_id": 4008001234,
            "customer_ring_seconds": 45}))
        assert problems == [] and cfg is not None
        assert cfg.followups == FollowUpConfig(
            promise_working_days=5, callback_working_days=0, max_working_days=10,
            customer_dial="PJSIP/{number}@carrier", caller_id="4008001234",
            customer_ring_seconds=45.0)

    def test_without_a_followups_section_the_defaults_apply(self) -> None:
        """No followups section: three working days for a promise, one for a callback."""
        cfg, _ = parse_callflow(config())
        assert cfg is not None and cfg.followups == FollowUpConfig()

    @pytest.mark.parametrize(("section", "message"), [
        ({"promise_working_days": 0},
         ("followups.promise_working_days: 0 — must be 1..30 (R8: a promise has a due date, "
          "at most max_working_days)")),
        ({"max_working_days": 10, "promise_working_days": 15},
         ("followups.promise_working_days: 15 — must be 1..10 (R8: a promise has a due date, "
          "at most max_working_days)")),
        ({"callback_working_days": 31},
         "followups.callback_working_days: 31 — must be 0..30 (at most max_working_days)"),
        ({"max_working_days": 90}, "followups.max_working_days: 90 — must be 1..60"),
        ({"promise_working_days": 2.5},
         ("followups.promise_working_days: 2.5 — must be a whole number (R8: a promise has a due "
          "date, at most max_working_days)")),
        ({"customer_dial": "PJSIP/carrier"},
         ("followups.customer_dial: 'PJSIP/carrier' — must be a dial string with {number}, like "
          "PJSIP/{number}@trunk")),
        ({"customer_dial": "{number}"},
         ("followups.customer_dial: '{number}' — must be a dial string with {number}, like "
          "PJSIP/{number}@trunk")),
        ({"customer_dial": "PJSIP/{number}@{trunk}"},
         ("followups.customer_dial: 'PJSIP/{number}@{trunk}' — must be a dial string with "
          "{number}, like PJSIP/{number}@trunk")),
        ({"caller_id": ["x"]},
         "followups.caller_id: ['x'] — must be text like \"礼仪客服中心 <4008001234>\""),
        ({"customer_ring_seconds": 5}, "followups.customer_ring_seconds: 5 — must be 10..120"),
        ({"promise_days": 3}, ("followups.promise_days: unknown key (known: promise_working_days, "
                               "callback_working_days, max_working_days, customer_dial, caller_id, "
                               "customer_ring_seconds)")),
    ])
    def test_bad_followup_settings_are_refused(self, section: dict[str, Any], message: str) -> None:
        """Reply times within the maximum, a dial string with {number}, a bounded ring time."""
        assert problems_of(config(followups=section)) == [message]


class TestLines:
    def test_new_sections_are_reported_with_their_yaml_lines(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config names the line of a bad queue, department queue, agent wrap-up and follow-up key."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "company:\n  name: 礼仪客服中心\n"               # 1-2
            "queue:\n  max_wait_seconds: 5000\n"              # 3-4
            "agents:\n  - name: agent1\n    wrap_up_seconds: 900\n"   # 5-7
            "departments:\n  - name: 咨询\n    number: '1'\n    agents: [agent1]\n"  # 8-11
            "    queue:\n      announce: loud\n"               # 12-13
            "followups:\n  customer_dial: SIP/trunk\n",       # 14-15
            encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        err = capsys.readouterr().err
        assert "line 4: queue.max_wait_seconds: 5000 — must be 30..1800" in err
        assert "line 7: agents[0].wrap_up_seconds: 900 — must be 0..600" in err
        assert "line 13: departments[0].queue.announce: 'loud'" in err
        assert "line 15: followups.customer_dial: 'SIP/trunk'" in err
