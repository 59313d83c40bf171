"""Raw ARI WebSocket messages → engine events.

Asterisk's JSON is outside input: a caller id can hold anything a carrier or
an attacker put in the SIP From header, and a message can be malformed. Here
it is checked and narrowed to the few fields the engine reads; anything that
does not fit raises ``BadEvent`` with a clear reason and never reaches a call.
"""

from __future__ import annotations

import datetime as dt
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
    originated (``caller_channel`` from the app args), else "any".
    """

    event: e.Event
    role: str = "any"
    caller_channel: str = ""
    playback_id: str = ""


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
        return Routed(event, role="caller")
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
    if kind == "PlaybackFinished":
        pb = msg.get("playback")
        if not isinstance(pb, dict) or not isinstance(pb.get("id"), str):
            raise BadEvent("PlaybackFinished: no playback id")
        raw_state = pb.get("state")
        state = raw_state if isinstance(raw_state, str) else "done"
        return Routed(e.PlaybackFinished(at=now, playback_id=pb["id"], state=state),
                      playback_id=pb["id"])
    if not isinstance(kind, str):
        raise BadEvent("an ARI message needs a type")
    return None
