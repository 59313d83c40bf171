"""Asterisk's objects as the simulator keeps them, and their ARI JSON.

Each class holds only what the simulator needs to behave like Asterisk 22 in
the recorded traces (``tests/traces/``) and renders itself in the exact JSON
shape of the ARI spec's models (``Channel``, ``Bridge``, ``Playback``,
``Endpoint``), so a client cannot tell the simulator's objects from real
ones by their fields.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ASTERISK_ID = "02:fc:00:00:00:01"

# Q.850 causes as Asterisk names them in ChannelDestroyed.cause_txt.
CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    28: "Invalid number format (incomplete number)",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}

# DELETE /channels/{id}?reason=... -> hangup cause (res/ari/resource_channels.c).
HANGUP_REASONS = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}

BRIDGE_TYPE_FLAGS = frozenset(
    {"mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single", "sdp_label"}
)

# Media schemes Asterisk knows; any other scheme starts and never finishes (trace 08).
KNOWN_MEDIA_SCHEMES = frozenset({"sound", "recording", "number", "digits", "characters", "tone"})


def ari_time(at: float) -> str:
    """Asterisk's timestamp format: ``2026-11-22T12:03:25.031+0000`` (UTC, milliseconds)."""
    seconds = int(at)
    millis = round((at - seconds) * 1000)
    if millis == 1000:
        seconds, millis = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}+0000"


class IdSource:
    """Channel ids and names numbered the way Asterisk numbers them.

    Asterisk's uniqueid is ``<epoch seconds>.<global counter>`` and a PJSIP
    channel name ends in the same counter as 8 hex digits; one counter serves
    every channel, inbound or originated.
    """

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self, now: float) -> tuple[str, int]:
        n = next(self._counter)
        return f"{int(now)}.{n}", n


@dataclass
class Channel:
    """One Asterisk channel: an inbound caller, an originated agent leg, or a dialplan-only call."""

    id: str
    name: str
    role: str  # "caller" | "agent" | "customer" (dialled through the trunk) | "dialplan"
    created: float
    state: str = "Ring"
    protocol_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    caller_name: str = ""
    caller_number: str = ""
    connected_name: str = ""
    connected_number: str = ""
    context: str = "inbound"
    exten: str = "s"
    priority: int = 1
    app_name: str = ""
    app_data: str = ""
    language: str = "en"
    endpoint: str = ""  # "PJSIP/agent1" for agent legs, "PJSIP/trunk" for customer legs
    dialstring: str = ""  # what Dial events report: "agent1", "13800138000@trunk"
    app: str = ""  # the Stasis app that gets this channel's events
    in_stasis: bool = False
    subscribed: bool = False  # the app gets this channel's events
    explicit_subscription: bool = False  # POST /applications/{app}/subscription or originate with app
    variables: dict[str, str] = field(default_factory=dict)
    reported_variables: set[str] = field(default_factory=set)
    bridge_id: str | None = None
    bridge_role: str = ""  # addChannel's ``role``; in a holding bridge only "announcer" is heard by the others
    absorb_dtmf: bool = False  # addChannel's ``absorbDTMF``: this channel's keys do not reach the bridge
    moh_class: str | None = None  # music on hold playing to this channel (moh or hold)
    on_hold: bool = False
    ringing_indicated: bool = False
    playback_queue: list[str] = field(default_factory=list)  # playback ids, first = current
    gone: bool = False
    hanging_up: bool = False  # between ChannelHangupRequest and StasisEnd (trace 14's race window)

    def to_json(self) -> dict[str, Any]:
        """The ARI ``Channel`` model."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": self.protocol_id,
            "caller": {"name": self.caller_name, "number": self.caller_number},
            "connected": {"name": self.connected_name, "number": self.connected_number},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": ari_time(self.created),
            "language": self.language,
        }
        if self.reported_variables:
            out["channelvars"] = {k: self.variables.get(k, "") for k in sorted(self.reported_variables)}
        return out


@dataclass
class Bridge:
    """A Stasis bridge; it outlives its channels until the app deletes it (trace 03)."""

    id: str
    name: str
    flags: frozenset[str]
    created: float
    channels: list[str] = field(default_factory=list)
    technology: str = ""
    moh_class: str | None = None
    playback_queue: list[str] = field(default_factory=list)
    apps: set[str] = field(default_factory=set)  # apps whose channels were in it get its events

    def __post_init__(self) -> None:
        if not self.technology:
            self.technology = "holding_bridge" if self.is_holding else "simple_bridge"

    @property
    def is_holding(self) -> bool:
        return "holding" in self.flags

    @property
    def dtmf_events(self) -> bool:
        return "dtmf_events" in self.flags

    def retune(self) -> None:
        """Asterisk moves two-party mixing bridges to native RTP, except with dtmf_events (trace 06)."""
        if self.is_holding:
            return
        native = len(self.channels) == 2 and not self.dtmf_events
        self.technology = "native_rtp" if native else "simple_bridge"

    def to_json(self) -> dict[str, Any]:
        """The ARI ``Bridge`` model."""
        return {
            "id": self.id,
            "technology": self.technology,
            "bridge_type": "holding" if self.is_holding else "mixing",
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            # Asterisk keeps a bridge snapshot's channel ids in a sorted string
            # container: every multi-channel list in the traces is in strcmp order.
            "channels": sorted(self.channels),
            "creationtime": ari_time(self.created),
            "video_mode": "talker",
        }


@dataclass
class Playback:
    """One ``play`` request: a list of media played in order on a channel or a bridge."""

    id: str
    media: list[str]
    target_kind: str  # "channel" | "bridge"
    target_id: str
    language: str = "en"
    state: str = "queued"
    index: int = 0
    timer: asyncio.TimerHandle | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    early: bool = False  # started before the channel was answered (SIP 183)

    @property
    def target_uri(self) -> str:
        return f"{self.target_kind}:{self.target_id}"

    @property
    def current_media(self) -> str:
        return self.media[min(self.index, len(self.media) - 1)]

    def to_json(self) -> dict[str, Any]:
        """The ARI ``Playback`` model."""
        out: dict[str, Any] = {
            "id": self.id,
            "media_uri": self.current_media,
            "target_uri": self.target_uri,
            "language": self.language,
            "state": self.state,
        }
        if self.state in ("playing", "continuing") and self.index + 1 < len(self.media):
            out["next_media_uri"] = self.media[self.index + 1]
        return out


# Formats ``record`` accepts (Asterisk's file formats with a ``format_*`` module
# loaded by default); any other is 422 "specified format is unknown on this system".
RECORDING_FORMATS = frozenset(
    {"wav", "WAV", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "g722", "g729", "siren7", "siren14", "ogg"}
)
RECORDING_TERMINATE_ON = frozenset({"none", "any", "*", "#"})
RECORDING_IF_EXISTS = frozenset({"fail", "overwrite", "append"})
_RECORDING_QUEUE_TAG = "\x1frecording:"


def recording_queue_id(name: str) -> str:
    """How a live recording waits in its channel's ``playback_queue``.

    Asterisk runs a channel's ``play`` and ``record`` one after another on the
    channel's Stasis command queue, so both share the one queue here; the tag
    (a control character no client puts in a playback id) tells them apart.
    """
    return _RECORDING_QUEUE_TAG + name


def queued_recording_name(queue_id: str) -> str | None:
    """The recording name behind a ``playback_queue`` entry, ``None`` for a playback."""
    return queue_id.removeprefix(_RECORDING_QUEUE_TAG) if queue_id.startswith(_RECORDING_QUEUE_TAG) else None


@dataclass
class LiveRecording:
    """One ``POST /channels/{id}/record``: queued, then recording, then done/failed/canceled.

    ``capture_started`` is when audio capture began (after the beep); the
    durations Asterisk reports are whole seconds of capture.
    """

    name: str
    format: str
    channel_id: str
    max_duration: int = 0
    max_silence: int = 0
    beep: bool = False
    terminate_on: str = "none"
    if_exists: str = "fail"
    state: str = "queued"
    capture_started: float | None = None
    duration: int | None = None
    talking_duration: int | None = None
    silence_duration: int | None = None
    cause: str = ""
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def target_uri(self) -> str:
        return f"channel:{self.channel_id}"

    def to_json(self) -> dict[str, Any]:
        """The ARI ``LiveRecording`` model (durations only once known, as stasis_app_recording.c does)."""
        out: dict[str, Any] = {
            "name": self.name,
            "format": self.format,
            "state": self.state,
            "target_uri": self.target_uri,
        }
        if self.duration is not None:
            out["duration"] = self.duration
        if self.talking_duration is not None:
            out["talking_duration"] = self.talking_duration
            out["silence_duration"] = self.silence_duration or 0
        if self.cause:
            out["cause"] = self.cause
        return out

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass
class StoredRecording:
    """A finished recording on disk; ``seconds`` is how long it plays as ``recording:<name>``."""

    name: str
    format: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The ARI ``StoredRecording`` model."""
        return {"name": self.name, "format": self.format}


def media_outcome(media: str) -> str:
    """How Asterisk treats a media URI: ``ok``, ``missing`` (fails at once) or ``unknown`` (hangs).

    Names containing ``missing`` or ``no-such`` stand for sound files that do
    not exist (trace 08: ``sound:no-such-sound-file`` → PlaybackFinished
    ``failed``); an unknown scheme (``bogus:thing``) starts and never finishes.
    """
    scheme, _, name = media.partition(":")
    if scheme not in KNOWN_MEDIA_SCHEMES:
        return "unknown"
    if "missing" in name or "no-such" in name:
        return "missing"
    return "ok"


@dataclass
class AgentPhone:
    """A PJSIP endpoint for an agent, with the baresip-like script its phone follows."""

    name: str
    registered: bool
    script: Any  # scripts.AgentScript (kept Any to avoid an import cycle)

    @property
    def endpoint(self) -> str:
        return f"PJSIP/{self.name}"


def endpoint_json(technology: str, resource: str, online: bool | None, channel_ids: list[str]) -> dict[str, Any]:
    """The ARI ``Endpoint`` model (``state`` is online/offline for PJSIP, unknown otherwise)."""
    state = "unknown" if online is None else ("online" if online else "offline")
    return {"technology": technology, "resource": resource, "state": state, "channel_ids": channel_ids}
