"""The store's crash journal: call-log records not yet committed, as JSON lines on disk.

Why: the store writes to the database from a background task, so records
wait for a moment — for minutes while the database is down. Each record is
appended here as it is queued; if the process dies, the next store on the
same journal replays the lines it finds, in order (the database's journal
marks keep a line that was committed before the crash from being applied
twice). The file is emptied once everything queued has been committed.

What a crash can lose — the documented bound:

- Lines are handed to a journal thread at the end of the event-loop step
  that queued them and written (``write(2)``) at once; they are fsync'd in
  batches, at most one fsync per ``sync_interval`` (0.1 s by default), never
  one per record and never not at all.
- A power cut (or a kernel crash) loses at most the last batch: the records
  queued since the last completed fsync began — those of the last
  ``sync_interval`` (0.1 s), longer only while the disk takes longer than
  that to fsync (the next batch waits for it).
- A crash of the process alone loses at most the lines not yet written by the
  journal thread: the same batch at worst, usually nothing.
- Every other record queued before the crash is replayed, in queue order, and
  written to the database exactly once.

Memory stays bounded during a long outage: once the store holds its limit of
records in memory, newer records are *spilled* — they live only here, on disk,
and are read back in order (:meth:`Journal.load`) when the database has taken
what was in memory. The earlier run's lines are read back the same way, so a
journal left by minutes of outage is never read whole into memory.

All file work happens on one journal thread, in the order it was asked for
(write, fsync, read back, empty), so the event loop never waits for the disk.

The journal never raises into the store: a full disk costs the crash safety
of the records that could not be written (logged once per outage), never the
call. Spilled records that cannot be written stay in memory instead.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

Record = dict[str, Any]

logger = structlog.get_logger()

# One encoder for every line: json.dumps() with options builds a new one per call,
# and the journal writes a line for every record the controller logs.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# Default time between two fsyncs of the journal while records keep coming: the
# most a power cut can lose (see the module docstring).
SYNC_INTERVAL = 0.1


def _parse(line: bytes) -> Record | None:
    """A journal line as a record; None for a torn or foreign line."""
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if (
        isinstance(record, dict)
        and isinstance(record.get("op"), str)
        and isinstance(record.get("j"), str)
        and isinstance(record.get("n"), int)
    ):
        return record
    return None


@dataclass(frozen=True, slots=True)
class JournalScan:
    """What an earlier run left in the journal (counted, not loaded)."""

    records: int
    journal_ids: frozenset[str] = field(default_factory=frozenset)


class Journal:
    """Append-only JSONL file of queued records, fsync'd in batches, emptied once committed."""

    def __init__(self, path: Path, *, sync_interval: float = SYNC_INTERVAL) -> None:
        self.path = path
        self.sync_interval = max(0.0, sync_interval)
        # Event-loop side.
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[bytes, bool]] = []
        self._handoff_scheduled = False
        self._sync_timer: asyncio.TimerHandle | None = None
        self._last_sync = float("-inf")
        # Bytes appended since the file was last emptied or rewritten (see compact()).
        self.grown = 0
        # Journal-thread side (touched only by jobs running on the journal thread).
        self._fd: int | None = None
        self._size = 0
        self._synced_size = 0
        self._failing = False
        # After a failed (maybe partial) write the next line must start on a fresh line.
        self._needs_newline = False
        # Spilled records still on disk: where the next one starts, and how many.
        self._read_pos: int | None = None
        self._file_unread = 0
        # Spilled records the disk refused, kept in memory in order after those on disk.
        self._overflow: deque[bytes] = deque()

    # ------------------------------------------------------------------ event-loop side

    @property
    def is_open(self) -> bool:
        """True while the journal takes records."""
        return self._executor is not None

    @property
    def synced_size(self) -> int:
        """Bytes of the file known to be on disk (at the last completed fsync).

        What a power cut would leave at worst; tests cut the file here.
        """
        return self._synced_size

    async def open(self) -> JournalScan | None:
        """Open and lock the journal, counting what an earlier run left; None if unusable.

        The file is locked (``flock``) for as long as it is open: two live stores
        on one journal would replay and empty each other's records. What the
        earlier run left becomes the first spilled records, read back by
        :meth:`load`.
        """
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="call-log-journal")
        scan = await asyncio.wrap_future(self._executor.submit(self._open_sync))
        if scan is None:
            self._executor.shutdown(wait=False)
            self._executor = None
        return scan

    def append(self, record: Record, *, spilled: bool = False) -> None:
        """Queue one record's line for the journal thread; never blocks on the disk.

        ``spilled``: the record is not kept in memory, :meth:`load` gives it back.
        """
        if self._executor is None:
            return
        line = (_ENCODER.encode(record) + "\n").encode("utf-8")
        self.grown += len(line)
        self._outbox.append((line, spilled))
        if not self._handoff_scheduled:
            self._handoff_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._handoff)

    async def load(self, limit: int) -> tuple[list[Record], int]:
        """Up to ``limit`` spilled records, oldest first, and how many are left after them."""
        if self._executor is None:
            return [], 0
        self._handoff()
        return await asyncio.wrap_future(self._executor.submit(self._load_sync, limit))

    def clear(self) -> asyncio.Future[bool]:
        """Empty the journal (everything in it has been committed); True once durable."""
        self._outbox.clear()
        self.grown = 0
        if self._executor is None:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            done.set_result(False)
            return done
        return asyncio.wrap_future(self._executor.submit(self._truncate_sync))

    def compact(self, uncommitted: list[Record]) -> None:
        """Rewrite the file with only ``uncommitted`` (every record not yet committed).

        Why: the journal is emptied when nothing is pending, which a busy
        center may not see for hours; without this the file would grow with
        every record of the day. The new file is written and fsync'd beside
        the old one and renamed over it, so a power cut leaves one or the
        other, whole. Only while nothing is spilled: then ``uncommitted`` is
        the store's queue.
        """
        if self._executor is None:
            return
        self._handoff()  # lines of this step go to the old file first, not twice
        self.grown = 0
        # Encoded on the journal thread: queued records are never changed once queued.
        self._executor.submit(self._rewrite_sync, list(uncommitted))

    async def sync(self) -> None:
        """Write and fsync everything appended so far (close() and tests wait on it)."""
        if self._executor is None:
            return
        self._handoff()
        await asyncio.wrap_future(self._executor.submit(self._fsync_sync))

    async def close(self) -> None:
        """Write, fsync and close the file (its contents stay for the next run)."""
        if self._executor is None:
            return
        await self.sync()
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        executor, self._executor = self._executor, None
        await asyncio.wrap_future(executor.submit(self._close_sync))
        executor.shutdown(wait=False)

    def abandon(self) -> None:
        """Stop as a killed process stops: lines not yet written are lost, the lock freed.

        For tests of what a crash leaves behind; the file is not fsync'd.
        """
        self._outbox.clear()
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True, cancel_futures=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _handoff(self) -> None:
        """Give the lines of this loop step to the journal thread; plan the batch's fsync."""
        self._handoff_scheduled = False
        if not self._outbox or self._executor is None:
            return
        entries, self._outbox = self._outbox, []
        self._executor.submit(self._write_sync, entries)
        if self._sync_timer is None:
            assert self._loop is not None
            delay = max(0.0, self._last_sync + self.sync_interval - self._loop.time())
            self._sync_timer = self._loop.call_later(delay, self._start_sync)

    def _start_sync(self) -> None:
        """One fsync for every line handed over since the last one (group fsync)."""
        self._sync_timer = None
        if self._executor is None:
            return
        assert self._loop is not None
        self._last_sync = self._loop.time()
        self._executor.submit(self._fsync_sync)

    # ------------------------------------------------------------------ journal thread

    def _open_sync(self) -> JournalScan | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            logger.warning("call_log.journal_unavailable", path=str(self.path), error=repr(exc))
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            logger.error("call_log.journal_in_use", path=str(self.path), error=repr(exc))
            return None
        self._fd = fd
        count, skipped, ids, last = 0, 0, set(), b""
        try:
            with self.path.open("rb") as f:
                # Binary lines split on b"\n" only: U+2028 and the like, which
                # json.dumps(ensure_ascii=False) leaves unescaped, stay inside their line.
                for line in f:
                    last = line
                    if not line.strip():
                        continue
                    record = _parse(line)
                    if record is None:
                        skipped += 1
                        continue
                    count += 1
                    ids.add(record["j"])
            self._size = os.fstat(fd).st_size
        except OSError as exc:
            logger.warning("call_log.journal_unreadable", path=str(self.path), error=repr(exc))
            count, ids, self._size = 0, set(), os.lseek(fd, 0, os.SEEK_END)
        if skipped:
            logger.warning("call_log.journal_lines_skipped", path=str(self.path), skipped=skipped)
        # A crash mid-line leaves a torn last line; don't glue the next record to it.
        self._needs_newline = self._size > 0 and not last.endswith(b"\n")
        self._synced_size = self._size
        self._read_pos = 0 if count else None
        self._file_unread = count
        return JournalScan(records=count, journal_ids=frozenset(ids))

    def _write_sync(self, entries: list[tuple[bytes, bool]]) -> None:
        """Write lines in order; a spilled line the disk refuses is kept in memory."""
        if self._fd is None:
            return
        to_file: list[tuple[bytes, bool]] = []
        for line, spilled in entries:
            # Once a spilled line is in memory, later ones follow it there (order).
            if spilled and self._overflow:
                self._overflow.append(line)
            else:
                to_file.append((line, spilled))
        if not to_file:
            return
        prefix = b"\n" if self._needs_newline else b""
        data = prefix + b"".join(line for line, _ in to_file)
        start = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)  # take back a partial line
                self._needs_newline = prefix != b""
            except OSError:
                self._needs_newline = True
                start = os.fstat(self._fd).st_size
            self._size = start
            self._overflow.extend(line for line, spilled in to_file if spilled)
            if not self._failing:
                self._failing = True
                logger.warning(
                    "call_log.journal_write_failed", path=str(self.path), error=repr(exc)
                )
            return
        pos = start + len(prefix)
        for line, spilled in to_file:
            if spilled:
                if self._read_pos is None:
                    self._read_pos = pos
                self._file_unread += 1
            pos += len(line)
        self._size = pos
        self._needs_newline = False
        if self._failing:
            self._failing = False
            logger.info("call_log.journal_write_recovered", path=str(self.path))

    def _fsync_sync(self) -> None:
        if self._fd is None:
            return
        size = self._size
        try:
            os.fsync(self._fd)
        except OSError as exc:
            logger.warning("call_log.journal_fsync_failed", path=str(self.path), error=repr(exc))
            return
        self._synced_size = size

    def _load_sync(self, limit: int) -> tuple[list[Record], int]:
        """Read back spilled records: those on disk first, then those kept in memory."""
        records: list[Record] = []
        if self._file_unread and self._read_pos is not None:
            try:
                with self.path.open("rb") as f:
                    f.seek(self._read_pos)
                    while len(records) < limit and self._file_unread:
                        line = f.readline()
                        if not line:
                            logger.error(
                                "call_log.journal_shorter_than_expected",
                                path=str(self.path),
                                missing=self._file_unread,
                            )
                            self._file_unread = 0
                            break
                        self._read_pos += len(line)
                        record = _parse(line) if line.strip() else None
                        if record is not None:
                            records.append(record)
                            self._file_unread -= 1
            except OSError as exc:
                # Left where it was: the writer asks again after its backoff.
                logger.warning("call_log.journal_unreadable", path=str(self.path), error=repr(exc))
                return records, self._file_unread + len(self._overflow)
        if not self._file_unread:
            self._read_pos = None
        while len(records) < limit and self._overflow:
            record = _parse(self._overflow.popleft())
            if record is not None:
                records.append(record)
        return records, self._file_unread + len(self._overflow)

    def _truncate_sync(self) -> bool:
        self._overflow.clear()
        self._read_pos = None
        self._file_unread = 0
        if self._fd is None:
            return False
        if self._size == 0 and self._synced_size == 0:
            return True  # already empty on disk: the common case between batches
        try:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        except OSError as exc:
            logger.warning("call_log.journal_clear_failed", path=str(self.path), error=repr(exc))
            self._size = os.fstat(self._fd).st_size
            return False
        self._size = self._synced_size = 0
        self._needs_newline = False
        return True

    def _rewrite_sync(self, records: list[Record]) -> None:
        if self._fd is None:
            return
        lines = [(_ENCODER.encode(r) + "\n").encode("utf-8") for r in records]
        fresh = self.path.with_name(self.path.name + ".new")
        fd = -1
        try:
            fd = os.open(
                fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666
            )
            # Locked before it takes the journal's name: a second store must not get in.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = memoryview(b"".join(lines))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
            os.replace(fresh, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            logger.warning("call_log.journal_compact_failed", path=str(self.path), error=repr(exc))
            if fd >= 0:
                os.close(fd)
            return
        os.close(self._fd)
        self._fd = fd
        self._size = self._synced_size = sum(len(line) for line in lines)
        self._needs_newline = False
        self._read_pos = None
        self._file_unread = 0

    def _close_sync(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as exc:
                logger.warning(
                    "call_log.journal_close_failed", path=str(self.path), error=repr(exc)
                )
            self._fd = None
