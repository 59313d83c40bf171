"""Structured logs: one event per state change, every line carrying its call id."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (tests and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: Line breaks for ``str.splitlines`` (and many log readers) that JSON leaves unescaped
#: (``json.dumps`` escapes only characters below U+0020): NEL, LINE and PARAGRAPH SEPARATOR.
_UNESCAPED_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` whose output is one line for every reader.

    Why: a caller id can hold U+2028 or NEL; written raw, a reader that splits
    on Unicode line breaks would see half a record. They only occur inside
    JSON strings, where their ``\\uXXXX`` escape reads back as the same text.
    """
    return json.dumps(value, **kwargs).translate(_UNESCAPED_BREAKS)


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Console lines for a person at a terminal, JSON lines for a log collector."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(one_line_json, ensure_ascii=False) if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
