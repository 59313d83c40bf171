"""The store's crash journal: pending call-log records as JSON lines on disk.

Why: the store writes to the database from a background task, so records
wait in memory for a moment — longer while the database is down. Each record
is also appended here as it is queued; if the process dies, the next store on
the same journal replays the lines it finds. The file is emptied whenever
everything queued has been committed. Lines are flushed to the OS at once
(safe against a crash of the process), not fsynced (a power cut may lose the
last moments).

The journal never raises: a full disk costs the crash safety of the records
that could not be written (logged once per outage), never the call.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import IO, Any

import structlog

Record = dict[str, Any]

logger = structlog.get_logger()

# One encoder for every line: json.dumps() with options builds a new one per call,
# and the journal writes a line for every record the controller logs.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Journal:
    """Append-only JSONL file of queued records, emptied once they are committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._failing = False
        # After a failed (maybe partial) write the next line must start on a fresh line.
        self._needs_newline = False

    def read(self) -> list[Record]:
        """Records left by an earlier run, in order; torn or foreign lines are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("call_log.journal_unreadable", path=str(self.path), error=repr(exc))
            return []
        records: list[Record] = []
        skipped = 0
        # Split on "\n" only: splitlines() would also cut at U+2028, U+0085 and the
        # like, which json.dumps(ensure_ascii=False) leaves unescaped inside strings.
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if (
                isinstance(record, dict)
                and isinstance(record.get("op"), str)
                and isinstance(record.get("j"), str)
                and isinstance(record.get("n"), int)
            ):
                records.append(record)
            else:
                skipped += 1
        if skipped:
            logger.warning("call_log.journal_lines_skipped", path=str(self.path), skipped=skipped)
        return records

    def open(self) -> bool:
        """Open for appending, after any records an earlier run left; False if unusable.

        The file is locked (``flock``) for as long as it is open: two live stores
        on one journal would replay and empty each other's records.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a", encoding="utf-8", newline="\n")
        except OSError as exc:
            logger.warning("call_log.journal_unavailable", path=str(self.path), error=repr(exc))
            return False
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            file.close()
            logger.error("call_log.journal_in_use", path=str(self.path), error=repr(exc))
            return False
        self._file = file
        # A crash mid-line leaves a torn last line; don't glue the next record to it.
        try:
            self._needs_newline = file.tell() > 0 and not self._ends_with_newline()
        except OSError:
            self._needs_newline = True
        return True

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"

    def append(self, records: list[Record]) -> None:
        """Append records and hand them to the OS; on failure, log once and carry on."""
        if self._file is None:
            return
        try:
            lines = "".join(_ENCODER.encode(r) + "\n" for r in records)
            if self._needs_newline:
                lines = "\n" + lines
            self._file.write(lines)
            self._file.flush()
        except (OSError, ValueError) as exc:
            self._needs_newline = True
            if not self._failing:
                self._failing = True
                logger.warning(
                    "call_log.journal_write_failed", path=str(self.path), error=repr(exc)
                )
            return
        self._needs_newline = False
        if self._failing:
            self._failing = False
            logger.info("call_log.journal_write_recovered", path=str(self.path))

    def clear(self) -> None:
        """Empty the journal: everything in it has been committed."""
        if self._file is None:
            return
        try:
            self._file.flush()
            self._file.seek(0)
            self._file.truncate(0)
            self._needs_newline = False
        except OSError as exc:
            logger.warning("call_log.journal_clear_failed", path=str(self.path), error=repr(exc))

    def close(self) -> None:
        """Close the file (its contents stay for the next run)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                logger.warning(
                    "call_log.journal_close_failed", path=str(self.path), error=repr(exc)
                )
            self._file = None
