"""The command line as a user meets it: check-config, the demo, and the call log."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from liyi import cli
from liyi.demo import run_demo
from liyi.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


class TestCheckConfig:
    def test_the_shipped_example_config_is_valid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi check-config liyi.yaml` on the example accepts it with exit status 0."""
        assert cli.main(["check-config", str(ROOT / "liyi.yaml")]) == 0
        assert "OK" in capsys.readouterr().out

    def test_every_problem_is_listed_with_its_line(self, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        """A broken config lists each problem with line and location, and exits non-zero."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "company:\n  name: 测试公司\n  timezone: Mars/Base\n"
            "ring:\n  answer_after_rings: 4\n"
            "greeting:\n  bands:\n    - {from: '05:00', to: '12:00', prompt: greeting-morning}\n"
            "asterisk:\n  ari_password: hunter2\n"
            "closing:\n  after_agent_hangup: [no-such-prompt]\n",
            encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        err = capsys.readouterr().err
        assert "line 5: ring.answer_after_rings: 4 — must be 1..3 (R1)" in err
        assert "line 3: company.timezone" in err
        assert "greeting.bands: no band covers 00:00" in err
        assert "asterisk.ari_password" in err and "LIYI_ARI_PASSWORD" in err
        assert "no-such-prompt" in err

    def test_a_bad_answer_delay_is_listed_with_its_line(self, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
        """A delay that would answer after ring 3 is refused with its line, path and the R1 reason."""
        bad = tmp_path / "late.yaml"
        bad.write_text("company:\n  name: 测试公司\n"
                       "ring:\n  answer_after_rings: 3\n  answer_delay_seconds: 0.5\n",
                       encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        assert ("line 5: ring.answer_delay_seconds: 0.5 — with answer_after_rings 3 the answer "
                "must come as ring 3's tone ends, 11 s after arrival") in capsys.readouterr().err

    def test_a_slow_flow_is_a_warning_with_its_line_not_a_failure(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A flow keeping a silent caller 40+ s from an agent is printed as a warning with its line; exit status stays 0."""
        data = yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8"))
        data["flows"]["open"]["steps"]["main"]["repeat"] = 2
        slow = tmp_path / "slow.yaml"
        slow.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        lines = slow.read_text(encoding="utf-8").splitlines()
        flows = lines.index("flows:")
        line = next(i for i, text in enumerate(lines[flows:], flows + 1) if text.strip() == "open:")
        assert cli.main(["check-config", str(slow)]) == 0
        captured = capsys.readouterr()
        assert f"{slow}: OK (1 warning)" in captured.out
        assert f"warning: line {line}: flows.open: a caller who presses nothing waits " in captured.err
        assert "more than flows_check.max_seconds_to_agent (30 s)" in captured.err

    def test_the_warning_limit_is_the_configs(self, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """Raising flows_check.max_seconds_to_agent to 120 s accepts the same slow flow without a warning."""
        data = yaml.safe_load((ROOT / "liyi.yaml").read_text(encoding="utf-8"))
        data["flows"]["open"]["steps"]["main"]["repeat"] = 2
        data["flows_check"] = {"max_seconds_to_agent": 120}
        slow = tmp_path / "slow.yaml"
        slow.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        assert cli.main(["check-config", str(slow)]) == 0
        captured = capsys.readouterr()
        assert "warning" not in captured.err and captured.out.strip().endswith(": OK")

    def test_a_misspelt_flows_check_key_is_refused(self, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        """A misspelt flows_check key is refused by name rather than silently keeping the 30 s default."""
        bad = tmp_path / "typo.yaml"
        bad.write_text("company:\n  name: 测试公司\nflows_check:\n  max_second_to_agent: 20\n",
                       encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        assert "line 4: flows_check.max_second_to_agent: unknown key" in capsys.readouterr().err

    def test_a_file_that_is_not_yaml_is_reported_not_crashed(self, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        """Invalid YAML gives one clear line with its position."""
        bad = tmp_path / "broken.yaml"
        bad.write_text("company: [unclosed\n", encoding="utf-8")
        assert cli.main(["check-config", str(bad)]) == 1
        assert "not valid YAML" in capsys.readouterr().err

    def test_a_missing_file_is_reported(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A path that does not exist is named in the error."""
        assert cli.main(["check-config", str(tmp_path / "nope.yaml")]) == 1
        assert "no such file" in capsys.readouterr().err


async def _role_of_password(db: Path, name: str, password: str) -> str | None:
    from db.accounts import Accounts

    accounts = Accounts(f"sqlite+aiosqlite:///{db}")
    await accounts.start()
    try:
        return await accounts.authenticate(name, password)
    finally:
        await accounts.close()


class TestDemoAndCallLog:
    def test_demo_calls_end_in_the_log_and_the_cli_lists_them(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi demo --once --fast` rings every scenario, prints each compliance line and logs
        them; `liyi calls --json` prints one object per call and `calls show` a timeline."""
        import asyncio

        db = tmp_path / "demo.db"
        settings = load_settings(ROOT / "liyi.yaml", env={})
        settings = replace(settings, database_url=f"sqlite+aiosqlite:///{db}", web_port=0,
                           journal_path=None)
        out = io.StringIO()
        ended = asyncio.run(run_demo(settings, once=True, fast=True, out=out))
        text = out.getvalue()
        assert len(ended) == 14  # 13 inbound calls and one callback
        assert text.count("compliance: R1") == 14
        assert "did not go as planned" not in text
        for step in ("agent-no-answer", "agent-hung-up-first", "hold-started", "hold-limit-reached",
                     "transfer-completed", "outcome=no-answer", "outcome=declined",
                     "outcome=consent-refused", "menu-choice", "name-recorded",
                     "queue-announced", "callback-recorded", "closing-question",
                     "followup-promised", "callback-connected"):
            assert step in text, step
        assert "BROKEN" not in text
        # The demo admin's password is made up for this run, printed once, and signs in.
        match = re.search(r"web admin sign-in: \S+/login  demo-admin / (\S+)", text)
        assert match, text[:500]
        assert asyncio.run(_role_of_password(db, "demo-admin", match.group(1))) == "admin"
        firsts = sorted(e.first_hangup for e in ended.values())
        assert firsts.count("agent") == 1 and firsts.count("caller") == 13

        capsys.readouterr()
        assert cli.main(["calls", "--json", "--limit", "50", "--db", str(db)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        calls = [json.loads(line) for line in lines]
        assert len(calls) == 14
        assert {c["outcome"] for c in calls} == {"completed", "abandoned-ringing"}
        assert all(c["compliance"]["R10"] == "kept" for c in calls)
        assert any(c["compliance"].get("R6") == "kept" for c in calls)
        first = calls[-1]["id"]
        assert cli.main(["calls", "show", first[:8], "--db", str(db)]) == 0
        shown = capsys.readouterr().out
        assert "timeline" in shown and "ringing" in shown and "compliance" in shown
        assert cli.main(["calls", "show", "zzzz", "--db", str(db)]) == 1
        assert cli.main(["calls", "--db", str(db)]) == 0
        assert "13800138000" in capsys.readouterr().out

    def test_calls_on_an_empty_log_says_so(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty call log is a clear message, not an empty screen."""
        assert cli.main(["calls", "--db", str(tmp_path / "empty.db")]) == 0
        assert "no calls yet" in capsys.readouterr().out


class TestReport:
    def test_rates_count_kept_over_judged_and_skip_not_applicable(self) -> None:
        """A rule's rate is kept / (kept + broken); not-applicable marks are no evidence."""
        from callflow.compliance import rates

        table = rates([("agent1", {"R1": "kept", "R4": "not_applicable"}),
                       ("agent1", {"R1": "broken", "R4": "not_applicable"}),
                       ("agent2", {"R1": "kept"})])
        assert table["agent1"]["R1"] == {"kept": 1, "broken": 1, "rate": 0.5}
        assert table["agent1"]["R4"]["rate"] == -1.0
        assert table["agent2"]["R1"]["rate"] == 1.0

    def test_report_by_agent_from_the_call_log(self, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi report --json` gives each agent's rate per rule from the logged calls."""
        import asyncio

        from db import CallStore

        db = tmp_path / "log.db"

        async def fill() -> None:
            store = CallStore(f"sqlite+aiosqlite:///{db}")
            await store.start()
            for i, (agent, r1) in enumerate([("agent1", "kept"), ("agent1", "broken"),
                                             ("agent2", "kept")]):
                store.call_started(f"c{i}", channel_id=f"ch{i}", caller_number="1",
                                   caller_name="", created_at=1795400000.0 + i)
                store.call_updated(f"c{i}", agent=agent)
                store.call_ended(f"c{i}", ended_at=1795400010.0 + i, first_hangup="caller",
                                 outcome="completed",
                                 compliance={"R1": {"status": r1, "evidence": {}}})
            await store.flush()
            await store.close()

        asyncio.run(fill())
        capsys.readouterr()
        assert cli.main(["report", "--json", "--db", str(db)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["calls"] == 3
        assert report["rates"]["agent1"]["R1"]["rate"] == 0.5
        assert report["rates"]["agent2"]["R1"]["rate"] == 1.0
        assert cli.main(["report", "--by", "day", "--db", str(db)]) == 0
        assert "2026-" in capsys.readouterr().out

    def test_report_by_queue(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`liyi report --by queue` gives each queue's R5 rate; calls that never queued are "—"."""
        import asyncio

        from db import CallStore

        db = tmp_path / "log.db"

        async def fill() -> None:
            store = CallStore(f"sqlite+aiosqlite:///{db}")
            await store.start()
            for i, (queue, r5) in enumerate([("报修", "kept"), ("报修", "broken"), ("", "kept"),
                                             (None, "not_applicable")]):
                store.call_started(f"c{i}", channel_id=f"ch{i}", caller_number="1",
                                   caller_name="", created_at=1795400000.0 + i)
                store.call_ended(f"c{i}", ended_at=1795400010.0 + i, first_hangup="caller",
                                 outcome="completed", summary={"queue": queue},
                                 compliance={"R5": {"status": r5, "evidence": {}}})
            await store.flush()
            await store.close()

        asyncio.run(fill())
        capsys.readouterr()
        assert cli.main(["report", "--by", "queue", "--json", "--db", str(db)]) == 0
        rates = json.loads(capsys.readouterr().out)["rates"]
        assert rates["报修"]["R5"]["rate"] == 0.5
        assert rates["all"]["R5"]["rate"] == 1.0
        assert rates["—"]["R5"]["rate"] == -1.0
