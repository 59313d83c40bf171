"""Raw ARI WebSocket messages → engine events.

Asterisk's JSON is outside input: a caller id can hold anything a carrier or
an attacker put in the SIP From header, and a message can be malformed. Here
it is checked and narrowed to the few fields the engine reads; anything that
does not fit raises ``BadEvent`` with a clear reason and never reaches a call.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from callflow import events as e

MAX_CALLER_TEXT = 80


class BadEvent(ValueError):
    """An ARI message we cannot use; the reason says why."""


@dataclass(frozen=True, slots=True)
class Routed:
    """An engine event and how to find its call.

    ``role`` is "caller" for a new inbound call, "agent" for an agent leg we
    originated for a caller (app args ``agent,<caller channel>``: the
    ``caller_channel``), "leg" for any other leg we originated, such as the
    agent and customer legs of a callback (app args ``callback,<call id>``:
    the ``call_id``), else "any". Only "caller" starts a call; a "leg" is
    never taken for a new inbound caller, and one no live call knows should
    be hung up like an orphan agent leg.

    Recording events carry no channel or playback id of their own: their
    ``caller_channel`` is the recorded channel (from the recording's
    ``target_uri``), so the controller finds the call the way it finds an
    agent leg's; ``recording_name`` is the recording's name (ours are
    ``<call_id>-name``).
    """

    event: e.Event
    role: str = "any"
    caller_channel: str = ""
    playback_id: str = ""
    call_id: str = ""
    recording_name: str = ""


def parse_time(value: Any) -> float:
    """ARI timestamps look like ``2026-11-22T12:03:25.031+0000``."""
    if not isinstance(value, str):
        raise BadEvent(f"timestamp {value!r} is not a string")
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError as exc:
            raise BadEvent(f"timestamp {value!r} is not an ARI date") from exc


def clean_text(value: Any, limit: int = MAX_CALLER_TEXT) -> str:
    """Printable text only, bounded: safe for logs, the database and a terminal."""
    if not isinstance(value, str):
        return ""
    kept = "".join(
        ch for ch in value
        if unicodedata.category(ch)[0] not in ("C",) or ch == " "
    )
    return kept.strip()[:limit]


def _channel(msg: dict[str, Any]) -> dict[str, Any]:
    ch = msg.get("channel")
    if not isinstance(ch, dict) or not isinstance(ch.get("id"), str) or not ch["id"]:
        raise BadEvent(f"{msg.get('type')}: no channel id")
    return ch


def translate(msg: Any, *, now: float) -> Routed | None:
    """The engine event for an ARI message, ``None`` for messages no call needs."""
    if not isinstance(msg, dict):
        raise BadEvent("an ARI message must be a JSON object")
    kind = msg.get("type")
    if kind == "StasisStart":
        ch = _channel(msg)
        args = msg.get("args") or []
        if not isinstance(args, list):
            raise BadEvent("StasisStart: args is not a list")
        raw_caller = ch.get("caller")
        caller: dict[str, Any] = raw_caller if isinstance(raw_caller, dict) else {}
        created = None
        if ch.get("creationtime") is not None:
            created = parse_time(ch["creationtime"])
        event = e.StasisStart(
            at=now, channel_id=ch["id"],
            caller_number=clean_text(caller.get("number")),
            caller_name=clean_text(caller.get("name")),
            created_at=created,
        )
        if args and args[0] == "agent":
            return Routed(event, role="agent",
                          caller_channel=str(args[1]) if len(args) > 1 else "")
        if args and args[0] == "callback":
            return Routed(event, role="leg", call_id=str(args[1]) if len(args) > 1 else "")
        return Routed(event, role="caller")
    if kind == "ChannelHangupRequest":
        # The first sign of a hang-up (traces 13, 15): a BYE carries no cause, a CANCEL 127,
        # our own DELETE 32 with soft. Routed like StasisEnd, to the caller's or the leg's call.
        cause = msg.get("cause", 0)
        return Routed(e.ChannelHangupRequest(
            at=now, channel_id=_channel(msg)["id"],
            cause=cause if isinstance(cause, int) and not isinstance(cause, bool) else 0,
            soft=msg.get("soft") is True,
        ))
    if kind == "StasisEnd":
        return Routed(e.StasisEnd(at=now, channel_id=_channel(msg)["id"]))
    if kind == "ChannelDestroyed":
        cause = msg.get("cause", 0)
        return Routed(e.ChannelDestroyed(
            at=now, channel_id=_channel(msg)["id"],
            cause=cause if isinstance(cause, int) else 0,
            cause_txt=clean_text(msg.get("cause_txt")),
        ))
    if kind == "ChannelDtmfReceived":
        digit = msg.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise BadEvent(f"ChannelDtmfReceived: bad digit {digit!r}")
        return Routed(e.ChannelDtmfReceived(at=now, channel_id=_channel(msg)["id"], digit=digit))
    if kind in ("ChannelEnteredBridge", "ChannelLeftBridge"):
        # Both reach an app on the default subscription for its channels in Stasis
        # (traces 11, 14; ARI spec events.json): "connected" is decided on them.
        bridge = msg.get("bridge")
        if not isinstance(bridge, dict) or not isinstance(bridge.get("id"), str) or not bridge["id"]:
            raise BadEvent(f"{kind}: no bridge id")
        cls = e.ChannelEnteredBridge if kind == "ChannelEnteredBridge" else e.ChannelLeftBridge
        return Routed(cls(at=now, channel_id=_channel(msg)["id"], bridge_id=bridge["id"]))
    if kind == "PlaybackFinished":
        pb = msg.get("playback")
        if not isinstance(pb, dict) or not isinstance(pb.get("id"), str):
            raise BadEvent("PlaybackFinished: no playback id")
        raw_state = pb.get("state")
        state = raw_state if isinstance(raw_state, str) else "done"
        return Routed(e.PlaybackFinished(at=now, playback_id=pb["id"], state=state),
                      playback_id=pb["id"])
    if kind in ("RecordingFinished", "RecordingFailed"):
        return _recording(msg, kind, now)
    if not isinstance(kind, str):
        raise BadEvent("an ARI message needs a type")
    return None


def _recording(msg: dict[str, Any], kind: str, now: float) -> Routed:
    """RecordingFinished/RecordingFailed → the engine's, routed by the recorded channel.

    A RecordingFinished in state ``canceled`` (``DELETE /recordings/live``)
    left no file, so the engine hears a RecordingFailed with cause
    "canceled". ``duration`` is whole seconds and absent when nothing was
    captured (e.g. a hang-up during the beep): 0.0 then.
    """
    rec = msg.get("recording")
    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) or not rec["name"]:
        raise BadEvent(f"{kind}: no recording name")
    name = rec["name"]
    target = rec.get("target_uri")
    channel = ""
    if isinstance(target, str) and target.startswith("channel:"):
        channel = target.removeprefix("channel:")
    state = rec.get("state")
    if kind == "RecordingFailed" or state == "canceled":
        cause = clean_text(rec.get("cause")) or ("canceled" if state == "canceled" else "failed")
        event: e.Event = e.RecordingFailed(at=now, recording_name=name, cause=cause)
    else:
        duration = rec.get("duration")
        event = e.RecordingFinished(at=now, recording_name=name, duration_seconds=_seconds(duration))
    return Routed(event, caller_channel=channel, recording_name=name)


def _seconds(value: Any) -> float:
    """A duration as finite, non-negative seconds; 0.0 for anything else.

    Why: JSON numbers are unbounded (``1e999`` is read as infinity, a 400-digit
    integer cannot become a float) and the engine does arithmetic with this.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
