"""Make whatever the controller logs safe to queue, journal and store.

Why: writes are deferred, so a record must be a snapshot (the caller may
mutate its dict afterwards) and must never become a "poison" record that
the database rejects on every retry. PostgreSQL rejects NUL characters in
text and JSON and both backends reject strings that are not valid UTF-8
(lone surrogates); JSON cannot hold NaN. Everything else — quotes, SQL-ish
text, newlines, Chinese, long strings — is kept exactly as given.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any, cast

# NUL is shown as U+FFFD REPLACEMENT CHARACTER: visible, and never mistaken for text.
NUL_REPLACEMENT = "\ufffd"
_MAX_DEPTH = 40
# Years 1…9999: what a Python datetime (and so the database column) can hold.
_EPOCH_MIN = -62135596800.0
_EPOCH_MAX = 253402300799.0

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def clean_text(value: object) -> str:
    """``value`` as a string every backend accepts (NUL and lone surrogates replaced)."""
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", NUL_REPLACEMENT)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_optional_text(value: object) -> str | None:
    """Like :func:`clean_text`, keeping ``None`` as ``None``."""
    return None if value is None else clean_text(value)


def _clean_key(key: object) -> str:
    # Same spelling json.dumps would give non-string keys.
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return clean_text(key)


def clean_json(value: Any, _depth: int = 0) -> JSONValue:
    """A JSON-safe deep copy of ``value``; what JSON cannot hold becomes a string."""
    if _depth > _MAX_DEPTH:
        return "<too deep>"
    # Fast path for what the controller logs: plain dicts, lists, strings and numbers
    # (exact types only; subclasses such as enums take the general path below).
    kind = type(value)
    if kind is str:
        return clean_text(value)
    if kind is int or kind is bool or value is None:
        return cast("int | None", value)
    if kind is dict:
        return {
            (clean_text(k) if type(k) is str else _clean_key(k)): clean_json(v, _depth + 1)
            for k, v in value.items()
        }
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if kind is list:
        return [clean_json(v, _depth + 1) for v in value]
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, enum.Enum) else clean_json(value.value, _depth + 1)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, enum.Enum):
        return clean_json(value.value, _depth + 1)
    if isinstance(value, Mapping):
        return {_clean_key(k): clean_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(v, _depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return clean_json(fields, _depth + 1)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return clean_text(bytes(value).decode("utf-8", "replace"))
    return clean_text(value)


def clean_dict(value: Any) -> dict[str, JSONValue]:
    """Like :func:`clean_json` for a value that must be a JSON object."""
    cleaned = clean_json(value)
    if isinstance(cleaned, dict):
        return cleaned
    return {"value": cleaned}


def clean_epoch(value: Any) -> float | None:
    """An epoch time as a finite float, or ``None`` if it cannot be one."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return None
        return value.timestamp()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or not _EPOCH_MIN <= number <= _EPOCH_MAX:
        return None
    return number
