"""Bringing the calls the dialplan fallback served into the call log (R10, issue 9).

How this works: Asterisk appends one CSV line per channel event to the file
``asterisk-conf/cel_custom.conf`` names (``asterisk.fallback_log``). The
importer reads what was added since its last read (it remembers the byte
offset while it runs, and the lines of calls not over yet), turns the calls
the fallback marked into records (``callflow.fallback_cel``,
``callflow.fallback``) and writes them with ``CallStore.import_calls``,
which writes each Asterisk call at most once. After a restart it reads the
file from the start again: the log's unique linkedid skips what is already
there, so nothing is imported twice and nothing lost in a crash is missed.

``liyi run`` imports after every (re)connect to Asterisk — the moment the
fallback stops taking calls — and every 30 s while the file has grown;
``liyi import-fallback`` does the same once, by hand. A bad line is
reported (``fallback_import.bad_line``) and skipped; a database that cannot
be written leaves the offset where it was, to be read again next time.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from callflow.config import CallFlowConfig
from callflow.fallback import FallbackRecord, record
from callflow.fallback_cel import BadLine, CelLine, CelRead, FallbackCall, calls, read_lines

log = structlog.get_logger("liyi.fallback_import")

#: How often ``liyi run`` looks at the file between reconnects.
CHECK_SECONDS = 30.0
# Bytes read per pass at most: a year-long file is imported over a few passes, not in one bite.
_READ_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """One pass over the file: what was written, what was there already, what was refused."""

    path: str
    found: bool
    imported: int = 0
    already: int = 0
    pending: int = 0  # calls whose LINKEDID_END is not in the file yet
    bad: tuple[BadLine, ...] = field(default=())
    read_bytes: int = 0

    def summary_line(self) -> str:
        """The line `liyi import-fallback` prints."""
        if not self.found:
            return f"fallback calls: no file at {self.path} (nothing to import)"
        return (f"fallback calls: {self.imported} imported, {self.already} already in the log, "
                f"{self.pending} still going, {len(self.bad)} bad lines skipped "
                f"({self.read_bytes} bytes read from {self.path})")


class FallbackImporter:
    """Reads one CEL file incrementally and imports its finished fallback calls."""

    def __init__(self, path: str | Path, store: Any, config: CallFlowConfig) -> None:
        self.path = Path(path)
        self.store = store
        self.config = config
        self._offset = 0
        self._line = 1
        self._pending: dict[str, list[CelLine]] = {}
        self._lock = asyncio.Lock()

    def has_unread(self) -> bool:
        """True when the file is longer (or shorter: rotated) than what was read."""
        try:
            return os.stat(self.path).st_size != self._offset
        except OSError:
            return False

    async def run_once(self) -> ImportReport:
        """Import what the file gained since the last pass. Raises if the database cannot be written."""
        async with self._lock:  # a reconnect and the timer never read the same bytes twice
            chunk = await asyncio.to_thread(self._read)
            if chunk is None:
                return ImportReport(path=str(self.path), found=False)
            text, start = chunk
            # Parsing a long outage's file takes seconds of CPU: off the event loop, so live
            # calls never wait on it (pure functions, safe on another thread).
            read, finished, pending, records = await asyncio.to_thread(self._parse, text)
            for bad in read.bad:
                log.warning("fallback_import.bad_line", path=str(self.path), line=bad.line,
                            reason=bad.reason, text=bad.text)
            result = await self.store.import_calls(records)
            # Only now, with the calls committed, is the read kept.
            consumed = text[:read.consumed]
            self._offset = start + len(consumed.encode("utf-8", errors="surrogateescape"))
            self._line += consumed.count("\n")
            self._pending = pending
            report = ImportReport(path=str(self.path), found=True, imported=result.imported,
                                  already=result.already, pending=len(pending), bad=read.bad,
                                  read_bytes=len(consumed.encode("utf-8", errors="surrogateescape")))
            if finished or read.bad:
                log.info("fallback_import.done", path=str(self.path), imported=report.imported,
                         already=report.already, pending=report.pending, bad_lines=len(read.bad))
            return report

    def _parse(self, text: str) -> tuple[CelRead, list[FallbackCall], dict[str, list[CelLine]],
                                          list[FallbackRecord]]:
        read = read_lines(text, first_line=self._line)
        lines = [x for group in self._pending.values() for x in group] + list(read.lines)
        finished, pending = calls(lines)
        return read, finished, pending, [record(c, self.config) for c in finished]

    def _read(self) -> tuple[str, int] | None:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:  # rotated or truncated: start again from its top
                    log.info("fallback_import.file_restarted", path=str(self.path))
                    self._offset, self._line, self._pending = 0, 1, {}
                f.seek(self._offset)
                data = f.read(_READ_LIMIT)
        except FileNotFoundError:
            return None
        # surrogateescape: a byte that is not UTF-8 stays one character, so offsets stay exact.
        return data.decode("utf-8", errors="surrogateescape"), self._offset


async def watch(importer: FallbackImporter, stop: asyncio.Event, wake: asyncio.Event,
                every: float = CHECK_SECONDS) -> None:
    """Import when woken (the controller reconnected) and every ``every`` s while the file grew.

    Never raises: a database outage or an unreadable file is logged and tried
    again at the next turn; live calls never wait on this.
    """
    first = True
    while not stop.is_set():
        if first or wake.is_set() or importer.has_unread():
            wake.clear()
            try:
                await importer.run_once()
            except Exception as exc:  # noqa: BLE001 - tried again at the next turn
                log.warning("fallback_import.failed", path=str(importer.path), error=str(exc))
        first = False
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
