"""translate(): ARI messages → engine events, and how each is routed to its call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ari_handlers.translate import BadEvent, Routed, translate
from callflow import events as e

NOW = 1_795_348_900.0


def _stasis_start(args: list[str], channel_id: str = "1795348817.3") -> dict[str, Any]:
    """A StasisStart shaped like trace 03's agent leg."""
    return {
        "type": "StasisStart",
        "timestamp": "2026-11-22T12:00:17.310+0000",
        "args": args,
        "channel": {
            "id": channel_id,
            "name": "PJSIP/agent1-00000003",
            "state": "Up",
            "caller": {"name": "liyi", "number": "4000"},
            "creationtime": "2026-11-22T12:00:17.082+0000",
        },
        "asterisk_id": "02:fc:00:00:00:01",
        "application": "liyi",
    }


def _recording_event(kind: str, **recording: Any) -> dict[str, Any]:
    body = {"name": "c0ffee-name", "format": "wav", "target_uri": "channel:1795348947.19", "state": "done"}
    body.update(recording)
    return {"type": kind, "timestamp": "2026-11-22T12:00:20.000+0000", "recording": body,
            "asterisk_id": "02:fc:00:00:00:01", "application": "liyi"}


def _routed(msg: dict[str, Any]) -> Routed:
    routed = translate(msg, now=NOW)
    assert routed is not None
    return routed


class TestStasisStartRoles:
    def test_inbound_is_a_new_caller(self) -> None:
        """args ["inbound"] (trace 01) start a new call."""
        routed = _routed(_stasis_start(["inbound"]))
        assert routed.role == "caller"
        assert isinstance(routed.event, e.StasisStart) and routed.event.caller_number == "4000"

    def test_agent_leg_names_its_caller(self) -> None:
        """args ["agent", <caller channel>] (trace 03) route to the caller's call."""
        routed = _routed(_stasis_start(["agent", "1795348810.1"]))
        assert (routed.role, routed.caller_channel) == ("agent", "1795348810.1")

    @pytest.mark.parametrize("args", [["callback", "c0ffee"], ["callback"]])
    def test_callback_leg_is_never_a_new_caller(self, args: list[str]) -> None:
        """args ["callback", <call id>] are an originated leg of that call, not an inbound caller."""
        routed = _routed(_stasis_start(args))
        assert routed.role == "leg"
        assert routed.call_id == (args[1] if len(args) > 1 else "")
        assert isinstance(routed.event, e.StasisStart) and routed.event.channel_id == "1795348817.3"


class TestRecordings:
    def test_finished_carries_name_duration_and_channel(self) -> None:
        """RecordingFinished gives the name, the duration in seconds, and the recorded channel for routing."""
        routed = _routed(_recording_event("RecordingFinished", duration=3))
        assert routed.event == e.RecordingFinished(at=NOW, recording_name="c0ffee-name", duration_seconds=3.0)
        assert (routed.caller_channel, routed.recording_name, routed.role) == ("1795348947.19", "c0ffee-name", "any")

    def test_finished_without_duration_is_zero_seconds(self) -> None:
        """A recording that captured nothing (hang-up during the beep) has no duration: 0.0."""
        routed = _routed(_recording_event("RecordingFinished"))
        assert isinstance(routed.event, e.RecordingFinished) and routed.event.duration_seconds == 0.0

    def test_failed_carries_the_cause(self) -> None:
        """RecordingFailed becomes the engine's RecordingFailed with Asterisk's cause."""
        routed = _routed(_recording_event("RecordingFailed", state="failed", cause="Failed to answer channel"))
        assert routed.event == e.RecordingFailed(at=NOW, recording_name="c0ffee-name",
                                                 cause="Failed to answer channel")
        assert routed.caller_channel == "1795348947.19"

    def test_canceled_is_a_failure(self) -> None:
        """A RecordingFinished in state canceled left no file, so the engine hears RecordingFailed."""
        routed = _routed(_recording_event("RecordingFinished", state="canceled", duration=1))
        assert routed.event == e.RecordingFailed(at=NOW, recording_name="c0ffee-name", cause="canceled")

    def test_started_is_ignored(self) -> None:
        """No call needs RecordingStarted."""
        assert translate(_recording_event("RecordingStarted", state="recording"), now=NOW) is None

    @pytest.mark.parametrize("recording", [None, {"format": "wav"}, {"name": ""}, {"name": 7}])
    def test_recording_without_a_name_is_rejected(self, recording: Any) -> None:
        """A recording event without a usable name raises BadEvent."""
        with pytest.raises(BadEvent):
            translate({"type": "RecordingFinished", "recording": recording}, now=NOW)


def _trace_events(name: str, kind: str) -> list[dict[str, Any]]:
    """Every ARI event of one type in a copied real trace (``tests/traces/``)."""
    path = next((Path(__file__).parent / "traces").glob(f"{name}-*.jsonl"))
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [ln["event"] for ln in lines if ln["kind"] == "ari_event" and ln["event"]["type"] == kind]


class TestHangupRequest:
    def test_a_callers_bye_is_a_hang_up_request_without_cause(self) -> None:
        """Trace 13's ChannelHangupRequest (a BYE: no cause, no soft) reaches the caller's call as the hang-up."""
        (msg,) = _trace_events("13", "ChannelHangupRequest")
        routed = _routed(msg)
        assert routed.event == e.ChannelHangupRequest(at=NOW, channel_id="1796398541.8", cause=0, soft=False)
        assert routed.role == "any"  # found by its channel, like StasisEnd

    def test_our_own_hang_up_of_an_agent_leg_is_cause_32_soft(self) -> None:
        """Trace 15's agent leg, DELETEd by the app while ringing, reports cause 32 with soft set."""
        agent = [m for m in _trace_events("15", "ChannelHangupRequest") if "agent" in m["channel"]["name"]]
        routed = _routed(agent[0])
        assert isinstance(routed.event, e.ChannelHangupRequest)
        assert (routed.event.channel_id, routed.event.cause, routed.event.soft) == (
            "trace13-agent-C1-1796398584", 32, True)

    def test_a_failed_playback_keeps_its_state(self) -> None:
        """Trace 13's PlaybackFinished after the hang-up says "failed", and the engine hears "failed", not "done"."""
        (msg,) = _trace_events("13", "PlaybackFinished")
        routed = _routed(msg)
        assert routed.event == e.PlaybackFinished(at=NOW, playback_id="trace13-pb-A1-1796398541", state="failed")

    @pytest.mark.parametrize("cause", ["16", None, True, 1.5])
    def test_a_cause_that_is_not_a_number_is_zero(self, cause: Any) -> None:
        """A malformed cause does not stop the hang-up from reaching the call."""
        msg = {"type": "ChannelHangupRequest", "timestamp": "2026-12-04T15:35:45.000+0000",
               "channel": {"id": "1796398541.8"}, "cause": cause, "soft": "yes"}
        event = _routed(msg).event
        assert event == e.ChannelHangupRequest(at=NOW, channel_id="1796398541.8", cause=0, soft=False)

    def test_a_hang_up_request_without_a_channel_is_rejected(self) -> None:
        """A ChannelHangupRequest that names no channel never reaches a call."""
        with pytest.raises(BadEvent):
            translate({"type": "ChannelHangupRequest", "cause": 16}, now=NOW)


class TestBridgeEvents:
    """Trace 14's ChannelEnteredBridge / ChannelLeftBridge, as an app on the default subscription gets them."""

    @staticmethod
    def _from_trace(kind: str) -> dict[str, Any]:
        path = Path(__file__).parent / "traces" / "14-caller-hangs-up-during-moh-in-bridge.jsonl"
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] == "ari_event" and row["event"]["type"] == kind:
                return dict(row["event"])
        raise LookupError(kind)

    @pytest.mark.parametrize(("kind", "cls"), [("ChannelEnteredBridge", e.ChannelEnteredBridge),
                                               ("ChannelLeftBridge", e.ChannelLeftBridge)])
    def test_recorded_bridge_events_name_channel_and_bridge(self, kind: str, cls: type[e.Event]) -> None:
        """A recorded ChannelEnteredBridge/ChannelLeftBridge reaches the engine with the caller's channel and bridge ids."""
        routed = translate(self._from_trace(kind), now=NOW)
        assert routed is not None
        assert routed.event == cls(at=NOW, channel_id="1796398564.11",  # type: ignore[call-arg]
                                   bridge_id="c8a047d8-b297-42b6-884d-8c81b31f326d")

    def test_bridge_event_without_a_bridge_is_rejected(self) -> None:
        """A ChannelEnteredBridge with no bridge id is a BadEvent, never a guess."""
        msg = self._from_trace("ChannelEnteredBridge")
        del msg["bridge"]
        with pytest.raises(BadEvent, match="no bridge id"):
            translate(msg, now=NOW)
