"""Reading Asterisk's CEL file of the fallback's calls, and the records made from it (issue 9).

The trace is the file Asterisk 22.10.1 wrote on the real rig
(tests/traces/16-fallback-cel.csv); hostile and garbled lines are written
here by hand.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from callflow.config import AgentConfig, CallFlowConfig
from callflow.fallback import HANDLED_BY, record
from callflow.fallback_cel import FIELDS, calls, endpoint_of, read_lines

TRACE = Path(__file__).resolve().parent / "traces" / "16-fallback-cel.csv"
CFG = CallFlowConfig(agents=(AgentConfig(name="agent1", endpoint="PJSIP/agent1"),
                             AgentConfig(name="agent2", endpoint="PJSIP/agent2")))


def line(event: str, at: float, uniqueid: str, linkedid: str, channel: str, *,
         userfield: str = "liyi-fallback", extra: dict[str, object] | None = None,
         num: str = "13800138000", name: str = "caller") -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(
        [event, f"{at:.6f}", uniqueid, linkedid, channel, num, name, "s", "liyi-fallback",
         userfield, "", json.dumps(extra) if extra is not None else ""])
    return out.getvalue()


def agent_first_call(linkedid: str = "100.7", t: float = 100.0) -> str:
    """The caller answered, agent1 picks up, hangs up first; the caller hangs up after the closing."""
    caller, leg = "PJSIP/carrier-00000007", "PJSIP/agent1-00000008"
    return "".join([
        line("CHAN_START", t, linkedid, linkedid, caller, userfield=""),
        line("ANSWER", t + 1.5, linkedid, linkedid, caller),
        line("CHAN_START", t + 3.0, "103.8", linkedid, leg, userfield=""),
        line("ANSWER", t + 6.0, "103.8", linkedid, leg, userfield=""),
        line("BRIDGE_ENTER", t + 6.01, "103.8", linkedid, leg, userfield=""),
        line("BRIDGE_ENTER", t + 6.02, linkedid, linkedid, caller),
        line("HANGUP", t + 30.0, "103.8", linkedid, leg, userfield="",
             extra={"hangupcause": 16, "hangupsource": leg, "dialstatus": ""}),
        line("HANGUP", t + 35.0, linkedid, linkedid, caller,
             extra={"hangupcause": 16, "hangupsource": caller, "dialstatus": "ANSWER"}),
        line("LINKEDID_END", t + 35.0, linkedid, linkedid, caller),
    ])


class TestRealTrace:
    def test_four_calls_with_callers_times_and_agents(self) -> None:
        """Asterisk's own file gives four fallback calls: three connected to agent1, one cancelled while ringing."""
        read = read_lines(TRACE.read_text(encoding="utf-8"))
        assert read.bad == ()
        finished, pending = calls(read.lines)
        assert pending == {}
        assert [c.caller_number for c in finished] == [
            "13800138001", "13800138002", "13800138003", "13800138002"]
        first, second, third, fourth = finished
        # agent1 hung up first; the caller left 8 s later, and Asterisk names the agent on both lines.
        assert fourth.first_hangup == "agent" and fourth.agent_endpoint == "PJSIP/agent1"
        assert fourth.ended_at - fourth.connected_at > 9  # type: ignore[operator]
        assert first.agent_endpoint == "PJSIP/agent1"
        assert first.answered_at is not None and 1.4 < first.answered_at - first.started_at < 1.6
        assert [leg.endpoint for leg in first.legs] == ["PJSIP/agent1", "PJSIP/agent2"]
        assert first.first_hangup == "caller"
        # The agent's HANGUP is written before the caller's, and still names the caller.
        assert second.first_hangup == "caller"
        assert third.answered_at is None and third.agent_endpoint is None
        assert third.first_hangup == "caller" and third.hangup_cause == 127

    def test_records_are_flagged_fallback_with_answer_time_agent_and_first_hangup(self) -> None:
        """The record of a connected fallback call names the agent, the answer, who left first, R1 kept."""
        finished, _ = calls(read_lines(TRACE.read_text(encoding="utf-8")).lines)
        rec = record(finished[0], CFG)
        assert rec.summary["handled_by"] == HANDLED_BY
        assert rec.call_id == "fb-1796454799.0" and rec.linkedid == "1796454799.0"
        assert rec.agent == "agent1" and rec.outcome == "completed"
        assert rec.answered_at == finished[0].answered_at
        assert rec.first_hangup == "caller"
        assert rec.compliance["R1"]["status"] == "kept"
        assert rec.compliance["R9"]["status"] == "kept"
        assert rec.compliance["R10"]["status"] == "kept"
        for rule in ("R2", "R3", "R4", "R5", "R6", "R7", "R8"):
            assert rec.compliance[rule]["status"] == "not_applicable", rule
        offers = rec.summary["agent_offers"]
        assert [(o["agent"], o["outcome"]) for o in offers] == [
            ("agent1", "answered"), ("agent2", "answered-elsewhere")]
        kinds = [t.kind for t in rec.timeline]
        assert kinds[0] == "fallback-arrived" and kinds[-1] == "ended"
        assert "connected" in kinds and kinds.index("answered") < kinds.index("connected")

    def test_cancelled_call_is_abandoned_while_ringing(self) -> None:
        """A caller who cancelled before the answer: abandoned-ringing, R1 not applicable, no agent."""
        finished, _ = calls(read_lines(TRACE.read_text(encoding="utf-8")).lines)
        rec = record(finished[2], CFG)
        assert rec.outcome == "abandoned-ringing" and rec.agent is None
        assert rec.compliance["R1"]["status"] == "not_applicable"


class TestWhoHungUpFirst:
    def test_agent_who_leaves_first_is_named(self) -> None:
        """The agent's own HANGUP naming themself, before the caller's: the agent hung up first."""
        [call], _ = calls(read_lines(agent_first_call()).lines)
        assert call.first_hangup == "agent"
        assert record(call, CFG).compliance["R9"]["status"] == "kept"

    def test_idle_line_released_by_the_fallback_is_the_service(self) -> None:
        """The fallback's idle release (userfield liyi-fallback-released) is the service, the R9 exception."""
        text = agent_first_call().replace(
            '"HANGUP","135.000000","100.7","100.7","PJSIP/carrier-00000007","13800138000","caller",'
            '"s","liyi-fallback","liyi-fallback"',
            '"HANGUP","135.000000","100.7","100.7","PJSIP/carrier-00000007","13800138000","caller",'
            '"s","liyi-fallback","liyi-fallback-released"')
        [call], _ = calls(read_lines(text).lines)
        assert call.first_hangup == "service"
        rec = record(call, CFG)
        assert rec.outcome == "idle-released"
        assert rec.compliance["R9"]["evidence"]["exception"] == "idle line released"

    def test_no_hangup_source_with_an_agent_is_unknown(self) -> None:
        """Asterisk named nobody on a connected call: who left first is unknown, R9 not applicable."""
        text = agent_first_call().replace('"hangupsource": "PJSIP/agent1-00000008"', '"hangupsource": ""')
        text = text.replace('"hangupsource": "PJSIP/carrier-00000007"', '"hangupsource": ""')
        text = text.replace('""hangupsource"": ""PJSIP/agent1-00000008""', '""hangupsource"": """"')
        text = text.replace('""hangupsource"": ""PJSIP/carrier-00000007""', '""hangupsource"": """"')
        [call], _ = calls(read_lines(text).lines)
        assert call.first_hangup == "unknown"
        assert record(call, CFG).compliance["R9"]["status"] == "not_applicable"


class TestWhatIsImported:
    def test_calls_the_controller_served_are_not_imported(self) -> None:
        """A call never marked liyi-fallback (liyi had it in Stasis) is not a fallback call."""
        text = agent_first_call().replace('"liyi-fallback","liyi-fallback"', '"liyi-fallback",""')
        finished, pending = calls(read_lines(text).lines)
        assert finished == [] and pending == {}

    def test_a_call_still_going_waits_for_its_linkedid_end(self) -> None:
        """Without LINKEDID_END the call is not over: kept pending, not imported half."""
        text = "".join(agent_first_call().splitlines(keepends=True)[:-1])
        finished, pending = calls(read_lines(text).lines)
        assert finished == [] and list(pending) == ["100.7"]

    def test_late_answer_breaks_r1(self) -> None:
        """Answered 15 s after arrival (past ring 3's end at 11 s): R1 broken, as the controller scores it."""
        text = agent_first_call().replace('"ANSWER","101.500000","100.7"', '"ANSWER","115.000000","100.7"')
        [call], _ = calls(read_lines(text).lines)
        assert record(call, CFG).compliance["R1"]["status"] == "broken"

    def test_unknown_agent_phone_keeps_its_endpoint(self) -> None:
        """An agent phone the config does not name is logged by its endpoint, not dropped."""
        [call], _ = calls(read_lines(agent_first_call()).lines)
        assert record(call, replace(CFG, agents=())).agent == "PJSIP/agent1"

    def test_endpoint_of_channel_names(self) -> None:
        """Asterisk's channel names lose their sequence suffix; odd names are kept whole."""
        assert endpoint_of("PJSIP/agent1-0000001a") == "PJSIP/agent1"
        assert endpoint_of("PJSIP/agent-x") == "PJSIP/agent-x"
        assert endpoint_of("") == ""


class TestHostileLines:
    def test_garbled_lines_are_reported_and_skipped_the_rest_imported(self) -> None:
        """Wrong field counts, a bad time, an unknown event, NUL bytes, broken JSON: each reported, the call still read."""
        good = agent_first_call().splitlines(keepends=True)
        garbage = [
            "this is not a CEL line\n",
            '"HANGUP","yesterday","1.1","1.1","x","","","","","","",""\n',
            '"PARTY","100.0","1.1","1.1","x","","","","","","",""\n',
            '"ANSWER","nan","1.1","1.1","x","","","","","","",""\n',
            '"ANSWER","100.0","","","x","","","","","","",""\n',
            '"ANSWER","100.0","1.1","1.1","x","","","","","","","",""\n',
            '"unterminated,"quote\n',
        ]
        text = good[0] + "".join(garbage) + good[1].replace("caller", "ca\0ller") + "".join(good[2:])
        text = text.replace('"dialstatus": "ANSWER"}', '"dialstatus": "ANSWER"')  # broken extra JSON
        read = read_lines(text)
        assert len(read.bad) >= 6
        assert all(b.line > 1 and b.reason for b in read.bad)
        [call], _ = calls(read.lines)
        assert call.caller_number == "13800138000"
        assert call.agent_endpoint == "PJSIP/agent1"

    def test_caller_names_with_quotes_commas_newlines_and_unicode_survive(self) -> None:
        """A caller ID name with quotes, commas, CR/LF, ';' and Chinese reads back whole (CSV quoting)."""
        nasty = 'Zhang "Wei", 张伟;\r\nDROP TABLE calls;--'
        text = agent_first_call().replace('"caller"', '"' + nasty.replace('"', '""') + '"')
        [call], _ = calls(read_lines(text).lines)
        assert call.caller_name == nasty

    def test_a_record_still_being_written_is_left_for_the_next_read(self) -> None:
        """A last line without its newline, or with a quote still open, is not consumed."""
        text = agent_first_call()
        half = text + '"CHAN_START","200.0","200.1","200.1","PJSIP/carrier-9","1","a\nb'
        read = read_lines(half)
        assert read.consumed == len(text)
        assert read.bad == ()

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=400))
    def test_any_text_never_raises(self, text: str) -> None:
        """Whatever bytes the file holds, reading it gives lines and reports, never an exception."""
        read = read_lines(text)
        assert 0 <= read.consumed <= len(text)
        calls(read.lines)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.sampled_from(agent_first_call().splitlines(keepends=True)), max_size=12))
    def test_any_subset_of_a_calls_lines_never_raises(self, lines: list[str]) -> None:
        """Lines lost or repeated (a garbled file) still give calls or nothing, never an error."""
        finished, _ = calls(read_lines("".join(lines)).lines)
        for call in finished:
            rec = record(call, CFG)
            assert rec.first_hangup in {"caller", "agent", "service", "unknown"}
            assert len(FIELDS) == 12
