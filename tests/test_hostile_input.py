"""Hostile input (issue 9): whatever Asterisk, a carrier or an admin hands us, nothing breaks.

Properties (hypothesis, small example counts so the suite stays fast) over
the three readers of outside input — the ARI event translator, the AMI
phone-state reader and the config loader — and hostile caller ids carried
through everything that shows or sends them: the call log, the structured
logs, the web pages and the AMI actions we write. The real event shapes come
from the recorded Asterisk traces in ``tests/traces/``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panoramisk.message import Message  # type: ignore[import-untyped]
from structlog.testing import capture_logs

from ari_handlers.ami_client import KNOWN_DEVICE_STATES, AgentPhones, PhoneState
from ari_handlers.translate import MAX_CALLER_TEXT, BadEvent, Routed, translate
from liyi.settings import ConfigError, Settings, load_settings

TRACES = Path(__file__).resolve().parent / "traces"
ROOT = Path(__file__).resolve().parent.parent
NOW = 1_795_348_900.0

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=40, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: Caller ids a carrier or an attacker can put in a SIP From header.
HOSTILE_IDS = [
    "'; DROP TABLE calls;--",
    "Robert'); DELETE FROM timeline WHERE ('1'='1",
    "<script>alert('x')</script>",
    "\"'><img src=x onerror=alert(2)>",
    "a;b|c `rm -rf /` $(id)",
    "line one\r\nAction: Hangup\r\nChannel: PJSIP/agent1\r\n\r\n",
    "nul\x00inside\x00",
    "esc \x1b[31mred\x1b[0m bell\x07",
    "rtl \u202eevil\u202c \u200f\u200e mark",
    "separators \u2028 and \u2029 and \x85 and \x0b\x0c",
    "📞☎️👩‍💻🇨🇳" * 300,
    "长" * 3000,
    "%s %n {0} {caller} \\x00 \\",
]

_SPECIAL = "'\";|<>&\\%_$`{}\r\n\t\x00\x1b\x7f\x85\u2028\u2029\u202e\u200f\ufeff\ud800"
HOSTILE_TEXT = st.one_of(
    st.sampled_from(HOSTILE_IDS),
    st.text(alphabet=st.sampled_from(_SPECIAL) | st.characters(), max_size=60),
    # Thousands of characters, cheaply: a short random run repeated.
    st.builds(lambda run, times: run * times, st.text(min_size=1, max_size=4),
              st.integers(min_value=300, max_value=1500)),
)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(), st.text(max_size=30), HOSTILE_TEXT,
)
JSON_LIKE = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _trace_lines(kind: str) -> list[dict[str, Any]]:
    """Every recorded message of one kind (``ari_event``, ``ami_event``…) in the copied traces."""
    out: list[dict[str, Any]] = []
    for path in sorted(TRACES.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("kind") == kind:
                out.append(row)
    return out


REAL_ARI_EVENTS = [row["event"] for row in _trace_lines("ari_event")]


@st.composite
def mutated(draw: st.DrawFn, real: list[dict[str, Any]], values: st.SearchStrategy[Any] = JSON_LIKE) -> Any:
    """A real message with a few fields, at any depth, replaced, deleted or added."""
    msg = json.loads(json.dumps(draw(st.sampled_from(real))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        node: Any = msg
        while isinstance(node, dict) and node and draw(st.booleans()):
            child = node[draw(st.sampled_from(sorted(node)))]
            if not isinstance(child, dict) or not child:
                break
            node = child
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not node:
            node[draw(st.text(max_size=10))] = draw(values)
        elif action == "delete":
            del node[draw(st.sampled_from(sorted(node)))]
        else:
            node[draw(st.sampled_from(sorted(node)))] = draw(values)
    return msg


def _is_clean_caller_text(text: str) -> bool:
    """What the engine, the log and a terminal may receive: printable and bounded."""
    return len(text) <= MAX_CALLER_TEXT and not any(
        ch in text for ch in "\x00\r\n\x1b\x7f\x85\u202e\ufeff") and not re.search(r"[\ud800-\udfff]", text)


class TestTranslateNeverCrashes:
    @FUZZ
    @given(msg=JSON_LIKE)
    def test_any_json_is_an_event_nothing_or_bad_event(self, msg: Any) -> None:
        """Any JSON from the event socket becomes an engine event, nothing, or a BadEvent — never a crash."""
        try:
            routed = translate(msg, now=NOW)
        except BadEvent:
            return
        assert routed is None or isinstance(routed, Routed)

    @FUZZ
    @given(msg=mutated(REAL_ARI_EVENTS))
    def test_real_events_with_mutated_fields(self, msg: Any) -> None:
        """Recorded Asterisk events with fields replaced, deleted or added never crash the translator."""
        try:
            routed = translate(msg, now=NOW)
        except BadEvent:
            return
        if routed is None:
            return
        assert isinstance(routed, Routed)
        for name in ("at", "created_at", "duration_seconds"):
            value = getattr(routed.event, name, None)
            assert value is None or (isinstance(value, float) and math.isfinite(value)), (name, value)

    @pytest.mark.parametrize("duration", [10**400, float("inf"), float("-inf"), float("nan"), -3, True, "5"])
    def test_an_impossible_recording_duration_is_zero_seconds(self, duration: Any) -> None:
        """A RecordingFinished whose duration is huge, infinite, negative or not a number still reaches
        the call, as a recording of 0 s (a 400-digit duration used to crash the translator)."""
        msg = {"type": "RecordingFinished", "recording": {
            "name": "c0ffee-name", "target_uri": "channel:1795348947.19", "state": "done", "duration": duration}}
        routed = translate(msg, now=NOW)
        assert routed is not None and routed.caller_channel == "1795348947.19"
        assert getattr(routed.event, "duration_seconds", None) == 0.0

    @FUZZ
    @given(name=HOSTILE_TEXT, number=HOSTILE_TEXT)
    def test_hostile_caller_id_reaches_the_engine_clean(self, name: str, number: str) -> None:
        """A caller id full of control characters, markup or 3000 emoji reaches the call printable and bounded."""
        msg = {"type": "StasisStart", "args": ["inbound"], "channel": {
            "id": "1795348817.3", "name": "PJSIP/trunk-00000003", "state": "Ring",
            "caller": {"name": name, "number": number}, "creationtime": "2026-11-22T12:00:17.082+0000"}}
        routed = translate(msg, now=NOW)
        assert routed is not None and routed.role == "caller"
        event: Any = routed.event
        assert _is_clean_caller_text(event.caller_name) and _is_clean_caller_text(event.caller_number)


# -- AMI: headers → phone states ------------------------------------------------------------

TRACKED = ["agent1", "agent2"]
REAL_AMI_EVENTS = [row["event"] for row in _trace_lines("ami_event")]
AMI_KEYS = ["Event", "Device", "State", "Peer", "PeerStatus", "EndpointName", "AOR", "URI",
            "ContactStatus", "Endpoint", "Status", "Uri", "ObjectName"]
AMI_VALUES = st.one_of(
    st.sampled_from(["PJSIP/agent1", "PJSIP/agent2", "pjsip/agent1", "PJSIP/", "agent1", "agent2",
                     "NOT_INUSE", "INUSE", "RINGING", "UNAVAILABLE", "UNKNOWN", "Reachable",
                     "Unreachable", "Removed", "NonQualified", "Created", "sip:agent1@127.0.0.1"]),
    HOSTILE_TEXT,
)
# A header Asterisk repeats comes out of panoramisk as a list of strings.
AMI_HEADER_VALUE = AMI_VALUES | st.lists(AMI_VALUES, min_size=2, max_size=3)
AMI_HEADERS = st.dictionaries(st.sampled_from(AMI_KEYS) | st.text(max_size=8), AMI_HEADER_VALUE,
                              max_size=6)


def _phones(changes: list[PhoneState]) -> AgentPhones:
    """An AgentPhones that is never connected: its handlers are called directly."""
    return AgentPhones(host="127.0.0.1", port=1, username="liyi", secret="x",
                       endpoints=TRACKED, on_change=changes.append)


def _assert_sane(phones: AgentPhones, changes: list[PhoneState]) -> None:
    """Every state known or reported is a tracked phone, a real bool and one of Asterisk's device states."""
    for state in [phones.state(e) for e in TRACKED] + changes:
        assert state.endpoint in TRACKED
        assert type(state.registered) is bool
        assert state.device_state in KNOWN_DEVICE_STATES, state


#: The headers panoramisk routes and frames by (ami_client.ROUTING_HEADERS), as Asterisk spells them.
ROUTING_KEYS = ["Event", "ActionID", "Response", "Message", "EventList", "CommandID"]
PENDING_ID = "pending-1"
ONE_LINE = AMI_VALUES.map(lambda v: v.replace("\r", "").replace("\n", ""))


@st.composite
def ami_wire_message(draw: st.DrawFn) -> list[tuple[str, str]]:
    """One AMI message as header lines, from the traces' events or an answer to the pending action,
    with a few of its routing headers written again (in any letter case, with any value, the
    pending action's id among them)."""
    if draw(st.booleans()):
        lines = [(k, str(v)) for k, v in draw(st.sampled_from(REAL_AMI_EVENTS)).items()]
    else:
        lines = [("Response", draw(st.sampled_from(["Success", "Error"]))), ("ActionID", PENDING_ID),
                 ("Message", draw(ONE_LINE))]
    present = [k for k, _ in lines if k in ROUTING_KEYS]
    for key in draw(st.lists(st.sampled_from(present), max_size=2)):
        spelt = draw(st.sampled_from([key, key.lower(), key.upper()]))
        value = draw(st.sampled_from([dict(lines)[key], PENDING_ID]) | ONE_LINE)
        lines.insert(draw(st.integers(min_value=0, max_value=len(lines))), (spelt, value))
    return lines


def _names_pending(lines: list[tuple[str, str]]) -> bool:
    return any(k.lower() == "actionid" and v == PENDING_ID for k, v in lines)


def _repeats_routing(lines: list[tuple[str, str]]) -> bool:
    keys = [k.lower() for k, _ in lines]
    return any(keys.count(k.lower()) > 1 for k in ROUTING_KEYS)


class _Transport:
    """A transport that keeps what is written and notes an abort or a close."""

    def __init__(self) -> None:
        self.sent = b""
        self.ended = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def abort(self) -> None:
        self.ended = True

    close = abort


class TestAmiReaderNeverCrashes:
    @FUZZ
    @given(messages=st.lists(ami_wire_message(), max_size=6),
           cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=8))
    def test_repeated_routing_headers_are_skipped_and_the_connection_stays(
            self, messages: list[list[tuple[str, str]]], cuts: list[int]) -> None:
        """A byte stream (cut anywhere, even inside a character) of real events and answers, some with
        Event, ActionID, Response... written twice: every such message is skipped with one warning,
        the connection is never ended, the rest is read, and the pending action is answered or fails
        with AmiGarbledAnswer by whichever message naming it came first — it never hangs."""
        from ari_handlers.ami_client import AmiGarbledAnswer, _Protocol

        final = [("Response", "Success"), ("ActionID", PENDING_ID), ("Message", "late")]
        closing = [("Event", "DeviceStateChange"), ("Device", "PJSIP/agent2"), ("State", "RINGING")]
        stream = [*messages, final, closing]
        data = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(
            ("".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n").encode("utf-8", "surrogatepass")
            for lines in stream)
        first_answer = next(lines for lines in stream if _names_pending(lines))
        changes: list[PhoneState] = []

        async def run() -> tuple[_Transport, Any]:
            phones = _phones(changes)
            manager = phones._new_manager(asyncio.get_running_loop())
            protocol, transport = _Protocol(), _Transport()
            protocol.connection_made(transport)
            protocol.factory, protocol.encoding = manager, "utf8"
            manager.protocol, manager.responses = protocol, protocol.responses
            pending = protocol.send({"Action": "PJSIPShowEndpoints", "ActionID": PENDING_ID})
            edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
            for a, b in zip(edges, edges[1:], strict=False):
                protocol.data_received(data[a:b])
            await asyncio.sleep(0)  # the FullyBooted handler's task
            assert not transport.ended and not protocol.closed
            assert phones.state("agent2").device_state == "RINGING"  # read to the end
            _assert_sane(phones, changes)
            return transport, pending

        with capture_logs() as logs:
            _, pending = asyncio.run(run())
        skipped = [e for e in logs if e["event"] == "ami.garbled_message"]
        assert len(skipped) == sum(_repeats_routing(lines) for lines in stream)
        assert all("\n" not in e["excerpt"] and len(e["excerpt"]) < 1000 for e in skipped)
        assert pending.done()
        if _repeats_routing(first_answer):
            assert isinstance(pending.exception(), AmiGarbledAnswer)
        else:
            assert pending.result()["ActionID"] == PENDING_ID

    @FUZZ
    @given(events=st.lists(st.tuples(st.sampled_from(["device", "peer", "contact"]), AMI_HEADERS),
                           max_size=6))
    def test_any_headers_leave_sane_phone_states(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Live AMI events with any headers, repeated headers or hostile values never raise and never
        give an agent a phone state Asterisk does not have."""
        changes: list[PhoneState] = []
        phones = _phones(changes)
        handler: dict[str, Callable[[Any, Message], None]] = {
            "device": phones._on_device_state, "peer": phones._on_peer_status,
            "contact": phones._on_contact_status}
        with capture_logs():
            for kind, headers in events:
                handler[kind](None, Message(headers))
        _assert_sane(phones, changes)

    @FUZZ
    @given(msg=mutated(REAL_AMI_EVENTS, AMI_HEADER_VALUE))
    def test_recorded_events_with_mutated_headers(self, msg: dict[str, Any]) -> None:
        """Trace 09's AMI events with headers replaced, deleted or added are handled or ignored, never raised."""
        changes: list[PhoneState] = []
        phones = _phones(changes)
        with capture_logs():
            for handle in (phones._on_device_state, phones._on_peer_status, phones._on_contact_status):
                handle(None, Message(msg))
        _assert_sane(phones, changes)

    @FEW
    @given(contacts=st.lists(AMI_HEADERS, max_size=4), devices=st.lists(AMI_HEADERS, max_size=4),
           failed=st.booleans())
    def test_any_snapshot_leaves_sane_phone_states(self, contacts: list[dict[str, Any]],
                                                  devices: list[dict[str, Any]], failed: bool) -> None:
        """PJSIPShowContacts/DeviceStateList answers with any items still give every agent a sane state."""
        changes: list[PhoneState] = []
        phones = _phones(changes)

        class FakeManager:
            async def send_action(self, action: dict[str, str]) -> Any:
                if failed:
                    return Message({"Response": "Error", "Message": "Permission denied"})
                event = "ContactList" if action["Action"] == "PJSIPShowContacts" else "DeviceStateChange"
                return [Message({"Event": event, **h}) for h in (contacts if event == "ContactList" else devices)]

        phones._manager = FakeManager()  # type: ignore[assignment]
        with capture_logs():
            asyncio.run(phones._read_snapshot())
        _assert_sane(phones, changes)


# -- the config loader ----------------------------------------------------------------------

SHIPPED = (ROOT / "liyi.yaml").read_text(encoding="utf-8")
YAML_BITS = st.sampled_from([
    ":", ": ", "- ", "  ", "\n", "\t", "#", "&a ", "*a", "<<: *a", "!!python/object:os.system ", "!!binary ",
    "{", "}", "[", "]", "'", '"', "|", ">", "? ", "---\n", "...\n", "%YAML 1.1\n", "~", "null", "yes",
    "2026-13-45", "1e400", "0x1F", ".inf", "company", "name", "agents", "flows", "queues", "asterisk",
    "ami_port", "steps", "greeting", "\x00", "\ufeff", "\u2028", "长",
])
ODD_VALUES = ["", "-1", "0", "99999999", "1.5", "yes", "[]", "{}", "x", "~", '"长"', "[1, [2]]",
              "2026-02-30", '"<script>"', ".nan", "1e400", "&x 1", "*nope"]
YAMLISH = st.lists(YAML_BITS | st.text(max_size=6), max_size=40).map("".join)


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    """The shipped liyi.yaml with a few lines deleted, duplicated, re-indented or given other values."""
    lines = SHIPPED.splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        how = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "value", "insert"]))
        if how == "delete":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "indent":
            lines[i] = "  " + lines[i]
        elif how == "dedent":
            lines[i] = lines[i][2:]
        elif how == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(st.sampled_from(ODD_VALUES))}"
        else:
            lines.insert(i, draw(YAMLISH))
    return "\n".join(lines) + "\n"


def _load(tmp_path: Path, text: str) -> Settings | ConfigError:
    """What ``liyi check-config`` sees: the settings, or the ConfigError listing the problems."""
    path = tmp_path / "liyi.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return load_settings(path, env={})
    except ConfigError as exc:
        return exc


def _assert_clear(result: Settings | ConfigError, text: str) -> None:
    """A config error lists at least one problem, each a readable one-line sentence with a line when
    the YAML node it is about exists."""
    if isinstance(result, Settings):
        return
    assert result.problems
    for problem in result.problems:
        said = str(problem)
        assert said.strip() and problem.message
        assert problem.line is None or 1 <= problem.line <= len(re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text))


class TestConfigNeverCrashes:
    def test_the_shipped_config_is_valid(self, tmp_path: Path) -> None:
        """The unmutated liyi.yaml loads: the mutations below start from a good config."""
        assert isinstance(_load(tmp_path, SHIPPED), Settings)

    @FEW
    @given(text=YAMLISH)
    def test_any_yamlish_text_is_a_config_or_a_config_error(self, tmp_path: Path, text: str) -> None:
        """Any YAML-ish text gives settings or a ConfigError listing its problems, never a traceback."""
        _assert_clear(_load(tmp_path, text), text)

    @settings(FUZZ, max_examples=100)  # each loads a whole config: ~15 ms
    @given(text=mutated_config())
    def test_a_mutated_config_is_a_config_or_a_located_config_error(self, tmp_path: Path, text: str) -> None:
        """A good config with lines deleted, duplicated, shifted or given odd values gives settings or
        problems that name their line."""
        result = _load(tmp_path, text)
        _assert_clear(result, text)
        if isinstance(result, ConfigError):
            assert any(p.line for p in result.problems), [str(p) for p in result.problems]

    @pytest.mark.parametrize("text", [
        "[" * 5000, "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)),
        "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
            f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
            for i in range(8)) + "agents: *i\ndepartments: *i\nhours: {holidays: *i}\n",
        "\ufeffcompany:\n  name: \x00\n", "company: !!python/object/apply:os.system ['true']\n",
        "--- a\n--- b\n",
    ], ids=["deep-brackets", "deep-mapping", "alias-bomb", "bom-and-nul", "python-tag", "two-documents"])
    def test_pathological_yaml_is_refused_quickly(self, tmp_path: Path, text: str) -> None:
        """Deep nesting, alias bombs, NUL, python tags and several documents are config problems, never a
        traceback or a hang."""
        _assert_clear(_load(tmp_path, text), text)


# -- AMI: what we send ----------------------------------------------------------------------


class _Wire:
    """A transport that keeps what panoramisk writes."""

    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data


def _protocol() -> tuple[Any, _Wire]:
    """The protocol our AMI manager uses, on a fake wire."""
    from ari_handlers.ami_client import _Protocol

    wire = _Wire()
    protocol = _Protocol()
    protocol.connection_made(wire)
    protocol.encoding = "utf8"  # what Manager.connection_made sets
    return protocol, wire


class TestAmiActionsCannotInject:
    @FUZZ
    @given(headers=st.dictionaries(st.text(min_size=1, max_size=10) | st.sampled_from(HOSTILE_IDS),
                                   HOSTILE_TEXT | st.lists(HOSTILE_TEXT, min_size=1, max_size=3),
                                   min_size=1, max_size=5))
    def test_every_value_stays_on_its_own_header_line(self, headers: dict[str, Any]) -> None:
        """An action whose keys or values hold CR, LF or NUL (a caller id, a username) is written as
        exactly its own header lines and one blank line: nothing can add a header or end it early."""
        protocol, wire = _protocol()

        async def send() -> None:
            protocol.send({"Action": "Originate", **headers})

        asyncio.run(send())
        text = wire.sent.decode("utf-8")
        assert text.endswith("\r\n\r\n") and text.count("\r\n\r\n") == 1
        lines = text[:-4].split("\r\n")
        assert not any(ch in line for line in lines for ch in "\r\n\x00")
        values = sum(len(v) if isinstance(v, list) else 1 for k, v in headers.items()
                     if k.lower() not in ("action", "actionid"))
        assert len(lines) == values + 2  # Action and ActionID

    def test_a_resent_action_keeps_the_future_its_sender_awaits(self) -> None:
        """An action panoramisk resends after a reconnect is cleaned in place, so whoever awaits it still hears the answer."""
        from panoramisk.actions import Action  # type: ignore[import-untyped]

        async def send() -> tuple[Any, Any, _Wire]:
            protocol, wire = _protocol()
            action = Action({"Action": "Originate", "CallerID": "evil\r\nAction: Hangup"})
            return action, protocol.send(action), wire

        action, future, wire = asyncio.run(send())
        assert future is action.future
        assert b"CallerID: evilAction: Hangup\r\n" in wire.sent

    async def test_an_injected_login_header_is_refused(self) -> None:
        """A username carrying a line break and a second Secret cannot log in with that secret: the
        break is removed before the action is written, so Asterisk sees one wrong username."""
        from ari_handlers.ami_client import AmiLoginError
        from ari_handlers.simulator.ami_server import AmiServer

        server = AmiServer(username="liyi", secret="s3cret", endpoints=["agent1"])
        await server.start()
        phones = AgentPhones(host="127.0.0.1", port=server.port, username="liyi\r\nSecret: s3cret",
                             secret="wrong", endpoints=["agent1"], on_change=lambda _: None,
                             reconnect_delay=0.2, login_timeout=2.0)
        try:
            with capture_logs(), pytest.raises(AmiLoginError):
                await phones.start()
        finally:
            await phones.stop()
            await server.stop()


# -- hostile caller ids: call log, structured logs, web pages, a whole call ------------------


class TestStructuredLogsStayOneLine:
    @pytest.mark.parametrize("text", HOSTILE_IDS)
    def test_a_hostile_value_is_one_json_line(self, text: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A log record carrying a hostile caller id is one JSON line (even for readers that split on
        U+2028 or NEL) and reads back as the same text."""
        import structlog

        from liyi.logging_setup import configure

        configure("info", json=True)
        structlog.get_logger("test").info("call.ringing", caller_name=text, caller_number=text[:20])
        err = capsys.readouterr().err
        assert err.endswith("\n") and len(err.splitlines()) == 1, err[:200]
        record = json.loads(err)
        assert record["caller_name"] == text


def _hostile_call(store: Any, i: int, text: str) -> str:
    """The writes the controller makes for an abandoned call whose caller id is ``text``."""
    call_id = f"c0ffee{i:06d}"
    store.call_started(call_id, channel_id=f"chan-{i}", caller_number=text, caller_name=text, created_at=NOW + i)
    store.append(call_id, at=NOW + i, source="log", kind="ringing",
                 detail={"caller_name": text, "caller_number": text})
    store.call_ended(call_id, ended_at=NOW + i + 5, first_hangup="caller", outcome="abandoned-ringing",
                     compliance={"R1": {"status": "broken", "evidence": {"reason": text}}})
    return call_id


class TestHostileCallerIdsOnTheWebPages:
    async def test_call_list_and_call_pages_show_them_as_text(self, tmp_path: Path) -> None:
        """Every hostile caller id written to the call log reads back as written (NUL shown as �) and is
        shown escaped on the call list and on its call page, where nothing of it can run."""
        from html import escape

        from aiohttp.test_utils import TestClient

        from db import CallStore
        from db.sanitize import clean_text
        from tests.test_web import runnable
        from tests.web_signin import serve
        from web import create_app

        store = CallStore(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
        await store.start()
        client: TestClient[Any, Any] | None = None
        try:
            ids = [_hostile_call(store, i, text) for i, text in enumerate(HOSTILE_IDS)]
            assert await store.flush()
            client = await serve(create_app(store))  # signed in as an admin
            listing = await (await client.get("/?limit=100")).text()
            for call_id, text in zip(ids, HOSTILE_IDS, strict=True):
                record = await store.get_call(call_id)
                assert record is not None and record.caller_name == clean_text(text)
                page = await (await client.get(f"/calls/{call_id}?events=1")).text()
                for html in (page, listing):
                    found = runnable(html)
                    assert found.handlers == [] and found.images == 0
                    assert all(s.get("src") == "/static/refresh.js" for s in found.scripts)
                assert escape(clean_text(text), quote=True) in page
        finally:
            if client is not None:
                await client.close()
            await store.close()


class TestHostileCallEndToEnd:
    async def test_a_hostile_caller_id_call_is_logged_and_shown_escaped(self, tmp_path: Path) -> None:
        """A call through the simulator from a caller id of SQL, markup, CR/LF, NUL and RTL marks ends
        in the call log, and its page shows the cleaned name as text."""
        from aiohttp.test_utils import TestClient

        from ari_handlers.simulator import CallerScript
        from tests.e2e_world import running_world
        from tests.test_web import runnable
        from tests.web_signin import serve
        from web import create_app

        name = "'; DROP TABLE calls;--<script>alert(1)</script>\r\nAction: Hangup\x00\u202e📞"
        async with running_world(tmp_path) as world:
            call = await world.sim.place_call("1380013\r\n8000|;", caller_name=name,
                                              script=CallerScript(hang_up_after_connected=0.1))
            await asyncio.wait_for(call.ended.wait(), 10)
            record = await world.call_ended_in_log(call.channel_id)
            client: TestClient[Any, Any] = await serve(create_app(world.store))  # as an admin
            try:
                page = await (await client.get(f"/calls/{record.id}")).text()
            finally:
                await client.close()
        assert record.first_hangup == "caller" and record.outcome
        assert _is_clean_caller_text(record.caller_name) and "DROP TABLE" in record.caller_name
        assert "\r" not in record.caller_number and "\n" not in record.caller_number
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert runnable(page).handlers == []
