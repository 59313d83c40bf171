"""The call log store: R10 ("every call in the log") without ever holding up a call.

How this works:

- The controller calls the write methods (``call_started``, ``append``,
  ``call_updated``, ``call_ended``, ``agent_state``) from the event loop. Each
  one cleans its input into a JSON-safe snapshot (``db.sanitize``), puts it
  on an in-memory queue, hands it to the crash journal, and returns. They
  never block on the database or the disk, and never raise.
- The crash journal (``db.journal``) writes on its own thread and fsyncs in
  batches, at most one fsync per ``journal_sync_interval`` (0.1 s): a power
  cut loses at most the records queued since the last fsync began (the last
  batch), a crash of the process alone at most the lines its thread had not
  yet written. Everything else is replayed in order at the next start.
- A database outage of minutes does not grow memory without bound: past
  ``memory_limit`` records in memory (20 000), new records are *spilled* —
  kept only in the journal on disk — and read back in order once the writer
  has committed what was in memory. An earlier run's journal is read back the
  same way. (Without a journal there is nowhere to spill: memory grows.)
- One background writer task drains the queue in order, in batches, one
  transaction per batch. Records leave the queue only after their batch is
  committed. If a write fails — database down, locked, disk full — the batch
  stays queued and is retried with exponential backoff, with a warning that
  says how many records are pending.
- Group commit: a transaction's cost is mostly fixed, so while records keep
  coming the writer begins at most one transaction per ``linger`` seconds
  (0.2 s), gathering what arrives meanwhile. A full batch, ``flush()`` and
  ``close()`` don't wait; a record after a quiet spell goes at once.
- A batch is staged in order and written with a few bulk statements, one
  per kind of write (``db.batch``): a call's updates within a batch become
  one row change, an agent's states one row with the latest. Calls and
  agents this store has written are cached, so their records read nothing
  back; the caches are dropped after any failure.
- Every batch also advances a per-store mark in ``journal_marks`` in the same
  transaction. A record is written only if its number is past its store's
  mark, so neither a journal replayed after a crash nor a retry after a
  commit whose answer was lost (say, PostgreSQL stopped mid-commit) can
  write a record twice. A replayed journal's mark is dropped only once the
  emptied journal file is on disk, so no line can come back without it.
- A record the database refuses by itself (an integrity or data error, not
  an outage) is isolated by writing the batch one record at a time; after a
  few refusals it is logged in full and dropped, so one bad record cannot
  stop the log.
- Timeline ``seq`` numbers are given by the writer in queue order, from the
  highest ``seq`` already stored for the call, so they stay consecutive after
  a restart. A record for a call the log has not seen (say, its start was
  lost) creates a placeholder call row rather than failing.

One store (one controller process) writes to a database; readers (CLI, web)
may be many.

Follow-ups (R8) ride the same path where they are records of what happened:
``followup_added`` and ``callback_attempted`` are queued, journaled and
group-committed like the timeline, so a database outage loses none. Moving a
follow-up's state (``complete_followup``, ``flag_overdue``) is different: it
is a decision someone waits for, may come from another process (``liyi
followups`` runs beside the controller), and must happen once — so it is one
direct transaction with a conditional UPDATE, and raises if the database
cannot be reached. The timeline entry and R8 verdict of an overdue follow-up
are written in that same transaction, so a follow-up is never flagged without
its evidence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Select, and_, delete, event, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import Executable

from db.batch import (
    ADVANCE_MARK,
    INSERT_MARK,
    READ_MARK,
    TIME_FIELDS,
    BatchState,
    highest_seqs,
    stored_agents,
    stored_calls,
    utc,
    write_batch,
)
from db.journal import SYNC_INTERVAL, Journal, Record
from db.migrations import upgrade
from db.models import Agent, Call, ComplianceRow, FollowUpRow, JournalMark, TimelineRow
from db.records import (
    FOLLOWUP_KINDS,
    AgentRecord,
    AmbiguousCallId,
    AmbiguousFollowUpId,
    CallRecord,
    CallSummary,
    ComplianceMark,
    FollowUp,
    ImportResult,
    TimelineEntry,
)
from db.sanitize import (
    clean_dict,
    clean_epoch,
    clean_optional_text,
    clean_text,
)

logger = structlog.get_logger()

T = TypeVar("T")

SOURCES = frozenset({"event", "log"})
# "unknown": a call that ended while the controller was down (issue 9); nobody saw who left first.
HANGUP_SIDES = frozenset({"caller", "agent", "service", "unknown"})
COMPLIANCE_STATUSES = frozenset({"kept", "broken", "not_applicable"})

# Fields ``call_updated`` accepts, and how each is cleaned.
_TIME_FIELDS = TIME_FIELDS
_TEXT_FIELDS = frozenset(
    {"channel_id", "caller_number", "caller_name", "first_hangup", "agent", "outcome", "state"}
)
_JSON_FIELDS = frozenset({"summary"})

# Records per transaction at most. Bigger batches cost less per record under a burst;
# a batch the database refuses is retried one record per transaction, so not huge.
_BATCH_SIZE = 1000
# Records kept in memory at most; beyond, they wait in the journal on disk only. A
# record is about 1 KB in memory, so this bounds an outage's memory to some 20 MB.
_MEMORY_LIMIT = 20_000
# close() waits this long at most for the journal's disk (emptying, last fsync).
_DISK_TIMEOUT = 2.0
# A journal that has grown this much without emptying (a busy center's queue is
# never empty for long) is rewritten with only its uncommitted records.
_COMPACT_BYTES = 16 * 1024 * 1024
# Records that concern a call's row (and so its existence).
_CALL_OPS = frozenset({"start", "append", "update", "end", "followup"})
# How often one record may be refused on its own before it is dropped.
_REFUSALS_BEFORE_DROP = 3
# Caches of the writer are only hints; bound them in case calls never end.
_CACHE_LIMIT = 50_000
# A direct follow-up transaction that collides with another writer's timeline entry
# (same call, same seq) is tried again this many times in all.
_DIRECT_TRIES = 3
# callback_attempted looks up the follow-up's call for its timeline entry; a database
# that does not answer within this costs only that entry, never the caller's wait.
_LOOKUP_TIMEOUT = 2.0
# Fallback calls imported per transaction: a whole CEL file of a long outage in a few commits.
_IMPORT_CHUNK = 500


def _is_refusal(exc: BaseException) -> bool:
    """True when the record itself was refused, rather than the database being unavailable.

    Besides the database's integrity and data errors, a malformed record (say,
    a journal line from another version) fails in our own code with a
    KeyError/TypeError/ValueError; retrying it forever would stop the log.
    """
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    if isinstance(exc, KeyError | TypeError | ValueError | AttributeError):
        return True
    # asyncpg errors SQLAlchemy does not classify still carry their SQLSTATE:
    # class 22 is "data exception" (e.g. a NUL byte), 23 "integrity violation".
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in {"22", "23"}:
        return True
    # A value that could not even be bound (raised before reaching the driver).
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


class CallStore:
    """Call log of R10/R12: non-blocking writes, a retrying writer, a crash journal."""

    def __init__(
        self,
        url: str,
        *,
        journal_path: str | Path | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        batch_size: int = _BATCH_SIZE,
        linger: float = 0.2,
        memory_limit: int = _MEMORY_LIMIT,
        journal_sync_interval: float = SYNC_INTERVAL,
        journal_compact_bytes: int = _COMPACT_BYTES,
    ) -> None:
        self._url = url
        # Group commit: at most one transaction per ``linger`` seconds while records keep
        # coming, so a busy center writes a few large transactions a second instead of
        # one per record (see ``_linger_for_more``). Measured with
        # bench/call_log_writes.py (1000 calls over 60 s, SQLite): 0.05 s spent 8.7 ms
        # of CPU per call, 0.2 s 4.3 ms; the log is read by people, 0.2 s late is fine.
        self._linger = max(0.0, linger)
        self._last_write = float("-inf")
        # Set when a full batch is queued, or flush()/close() waits: stop lingering.
        self._batch_ready = asyncio.Event()
        # A flush()/close() is waiting: no lingering until the queue is empty.
        self._hurry = False
        self._journal = (
            Journal(Path(journal_path), sync_interval=journal_sync_interval)
            if journal_path is not None
            else None
        )
        self._retry_initial = retry_initial
        self._retry_max = max(retry_max, retry_initial)
        self._batch_size = max(1, batch_size)
        # Records kept in memory at most while the database is down; later ones are
        # spilled to the journal (disk only) and read back in order. Without a
        # journal there is nowhere to spill, and memory grows with the outage.
        self._memory_limit = max(self._batch_size, memory_limit)
        self._spilled = 0
        self._spill_warned = False
        self._compact_bytes = journal_compact_bytes
        # Follow-ups not yet committed -> their call (callback_attempted needs it, and
        # a spilled follow-up is not in the queue to be found).
        self._uncommitted_followups: dict[str, str] = {}
        # The journal's emptying in progress (close() waits for it before pruning marks).
        self._clearing: asyncio.Future[bool] | None = None
        # Records of this store are numbered (j, n); marks in the database say how far
        # each j has been written.
        self._journal_id = uuid.uuid4().hex
        self._counter = 0
        self._queue: deque[Record] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._engine: AsyncEngine | None = None
        self._writer: asyncio.Task[None] | None = None
        self._schema_ready = False
        self._closed = False
        # Writer caches (hints only; cleared after any failure).
        self._next_seq: dict[str, int] = {}
        self._known_calls: set[str] = set()
        # Calls this store inserted and has not ended: they have no compliance rows.
        self._verdictless_calls: set[str] = set()
        self._known_agents: set[str] = set()
        self._marks: dict[str, int] = {self._journal_id: 0}
        self._mark_rows: set[str] = set()
        # Journals of earlier runs replayed by this one: their marks can go once the
        # journal file no longer holds their records.
        self._replayed_journals: set[str] = set()
        self._marks_to_prune: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def pending(self) -> int:
        """Records queued and not yet committed to the database (in memory or spilled)."""
        return len(self._queue) + self._spilled

    async def start(self) -> None:
        """Connect, migrate to the newest schema, replay the journal, start the writer.

        A database that cannot be reached now is not fatal: the writer keeps
        retrying (migrations first) while calls are logged to the queue and
        journal. A malformed URL or a missing driver raises here.
        """
        if self._writer is not None:
            return
        options: dict[str, Any] = {"pool_pre_ping": True}
        if make_url(self._url).get_backend_name() == "sqlite":
            # Each of these is one more hop to aiosqlite's thread per transaction, for
            # nothing: a local file has no connection to go stale (ping), and every
            # SQLAlchemy Connection ends its own transaction before it goes back to the
            # pool (the pool's rollback on return).
            options = {"pool_reset_on_return": None}
        self._engine = create_async_engine(self._url, **options)
        if self._engine.dialect.name == "sqlite":
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            await self._migrate()
        except Exception as exc:  # noqa: BLE001 - any failure here is retried by the writer
            logger.warning("call_log.database_unavailable", url=self._safe_url(), error=repr(exc))
        if self._journal is not None:
            await self._replay_journal(self._journal)
        self._writer = asyncio.create_task(self._run_writer(), name="call-log-writer")

    async def _replay_journal(self, journal: Journal) -> None:
        """Queue an earlier run's records ahead of any queued before ``start``.

        The earlier records are only counted here; they stay on disk as spilled
        records and the writer reads them back in order, so a journal left by a
        long outage is never loaded whole into memory. Records queued before
        ``start`` follow them (spilled too, to keep the order).
        """
        scan = await journal.open()
        if scan is None:
            # Unusable (or another live store holds it): log to the database only.
            self._journal = None
            return
        before_start = list(self._queue)
        if not scan.records:
            for record in before_start:
                journal.append(record)
            return
        self._queue.clear()
        for record in before_start:
            journal.append(record, spilled=True)
        self._spilled = scan.records + len(before_start)
        self._replayed_journals = set(scan.journal_ids) - {self._journal_id}
        self._spill_warned = True  # the replay is logged below; spilling is part of it
        self._drained.clear()
        self._wakeup.set()
        logger.info("call_log.journal_replayed", records=scan.records, path=str(journal.path))

    async def close(self, timeout: float = 3.0) -> None:
        """Write what can be written within ``timeout`` seconds, then stop.

        Records still pending stay in the journal for the next start (without a
        journal they are lost, and an error says how many).
        """
        if self._closed:
            return
        self._closed = True
        drained = await self.flush(timeout) if self._writer is not None else not self.pending
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        journal_empty = True
        if drained and self._clearing is not None:
            # Marks may go only once no journal line can bring their records back.
            try:
                journal_empty = await asyncio.wait_for(
                    asyncio.shield(self._clearing), _DISK_TIMEOUT
                )
            except TimeoutError:
                journal_empty = False
        if drained and not journal_empty:
            pass  # committed, but the journal still holds lines: their marks stay
        elif drained and self._engine is not None and (self._counter or self._marks_to_prune):
            await self._prune_own_marks()
        elif not drained:
            if self._journal is not None:
                logger.warning(
                    "call_log.closed_with_pending",
                    pending=self.pending,
                    journal=str(self._journal.path),
                )
            else:
                logger.error("call_log.closed_records_lost", pending=self.pending)
        if self._journal is not None:
            try:
                await asyncio.wait_for(self._journal.close(), _DISK_TIMEOUT)
            except TimeoutError:
                # A disk that hangs must not hang the shutdown; the lines written so
                # far are in the file, the rest of the last batch is the loss bound.
                logger.warning("call_log.journal_close_timed_out", path=str(self._journal.path))
        if self._engine is not None:
            await self._engine.dispose()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is committed; True if it was within ``timeout``.

        The journal's emptying is waited for too, so that after a True the
        journal holds nothing already in the database.
        """
        if not self.pending:
            return True
        if self._writer is None:
            return False
        # Don't let the writer linger for more records: someone waits for these.
        self._hurry = True
        self._batch_ready.set()
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
                if self._clearing is not None and not self.pending:
                    await asyncio.shield(self._clearing)
        except TimeoutError:
            return False
        return not self.pending

    # ------------------------------------------------------------------ writes (never raise)

    def call_started(
        self,
        call_id: str,
        *,
        channel_id: str,
        caller_number: str,
        caller_name: str,
        created_at: float,
    ) -> None:
        """A call reached the service (first ring at ``created_at``, epoch seconds)."""
        self._guarded(
            "start",
            call_id,
            lambda: {
                "channel_id": clean_text(channel_id),
                "caller_number": clean_text(caller_number),
                "caller_name": clean_text(caller_name),
                "created_at": self._epoch(created_at, "created_at", call_id),
            },
        )

    def append(
        self, call_id: str, *, at: float, source: str, kind: str, detail: dict[str, Any]
    ) -> None:
        """Add one entry to the call's timeline; ``seq`` follows the order of calls to this."""

        def build() -> Record:
            clean_source = clean_text(source)
            if clean_source not in SOURCES:
                logger.warning("call_log.unknown_source", call_id=call_id, source=clean_source)
            return {
                "at": self._epoch(at, "at", call_id),
                "source": clean_source,
                "kind": clean_text(kind),
                "detail": clean_dict(detail),
            }

        self._guarded("append", call_id, build)

    def call_updated(self, call_id: str, **fields: Any) -> None:
        """Change some of the call's fields (``answered_at``, ``agent``, ``state``…)."""

        def build() -> Record:
            changes: dict[str, Any] = {}
            for name, value in fields.items():
                if name in _TIME_FIELDS:
                    changes[name] = None if value is None else self._epoch(value, name, call_id)
                elif name in _TEXT_FIELDS:
                    changes[name] = clean_optional_text(value)
                elif name in _JSON_FIELDS:
                    changes[name] = None if value is None else clean_dict(value)
                else:
                    logger.warning("call_log.unknown_field", call_id=call_id, field=name)
            return {"fields": changes}

        self._guarded("update", call_id, build)

    def call_ended(
        self,
        call_id: str,
        *,
        ended_at: float,
        first_hangup: str,
        outcome: str,
        compliance: dict[str, dict[str, Any]],
        summary: dict[str, Any] | None = None,
    ) -> None:
        """The call is over: who hung up first (R9), the outcome, the compliance record (R12)."""

        def build() -> Record:
            side = clean_text(first_hangup)
            if side not in HANGUP_SIDES:
                logger.warning("call_log.unknown_hangup_side", call_id=call_id, side=side)
            marks: dict[str, dict[str, Any]] = {}
            for rule, verdict in compliance.items():
                if isinstance(verdict, dict):
                    status = clean_text(verdict.get("status", ""))
                    evidence = clean_dict(verdict.get("evidence", {}))
                else:
                    status, evidence = clean_text(verdict), {}
                if status not in COMPLIANCE_STATUSES:
                    logger.warning(
                        "call_log.unknown_compliance_status",
                        call_id=call_id,
                        rule=rule,
                        status=status,
                    )
                marks[clean_text(rule)] = {"status": status, "evidence": evidence}
            return {
                "ended_at": self._epoch(ended_at, "ended_at", call_id),
                "first_hangup": side,
                "outcome": clean_text(outcome),
                "compliance": marks,
                "summary": None if summary is None else clean_dict(summary),
            }

        self._guarded("end", call_id, build)

    def agent_state(
        self, name: str, *, endpoint: str, registered: bool, device_state: str, at: float
    ) -> None:
        """The agent's phone registered, unregistered or changed device state."""
        self._guarded(
            "agent",
            None,
            lambda: {
                "name": clean_text(name),
                "endpoint": clean_text(endpoint),
                "registered": bool(registered),
                "device_state": clean_text(device_state),
                "at": self._epoch(at, "at", None),
            },
        )

    def followup_added(
        self,
        followup_id: str,
        *,
        call_id: str,
        kind: str,
        text: str,
        due: date | str,
        owner: str,
        number: str,
        queue: str,
        created_at: float,
    ) -> None:
        """A promise or callback request was made on ``call_id`` (R8); due on ``due``.

        ``kind`` is "promise" or "callback"; ``owner`` "" means any agent of
        ``queue`` may place the callback. Queued like every other record: it
        returns at once and survives a database outage (and, with a journal,
        a crash). A ``due`` that is not a date is refused here, with an error
        in the log, because a follow-up without a due day cannot be kept.
        """

        def build() -> Record:
            self._uncommitted_followups[clean_text(followup_id)] = clean_text(call_id)
            clean_kind = clean_text(kind)
            if clean_kind not in FOLLOWUP_KINDS:
                logger.warning("call_log.unknown_followup_kind", call_id=call_id, kind=clean_kind)
            return {
                "followup_id": clean_text(followup_id),
                "kind": clean_kind,
                "text": clean_text(text),
                "number": clean_text(number),
                "owner": clean_text(owner),
                "queue": clean_text(queue),
                "created_at": self._epoch(created_at, "created_at", call_id),
                "due": _iso_day(due),
            }

        self._guarded("followup", call_id, build)

    async def callback_attempted(
        self, followup_id: str, *, call_id: str, agent: str, at: float
    ) -> None:
        """A callback for ``followup_id`` was placed as call ``call_id`` by ``agent``.

        Counts the attempt on the follow-up and adds a "callback-attempted"
        entry to the originating call's timeline. Never blocks for long and
        never raises: both are queued like other records. Finding the
        originating call needs the follow-up (from the queue if it is still
        pending, else one read); if the database cannot say, only the
        timeline entry is missing — the attempt is still counted.
        """
        origin = self._pending_followup(followup_id)
        try:
            if origin is None:
                async with asyncio.timeout(_LOOKUP_TIMEOUT):
                    found = await self._followup_by_id(followup_id)
                origin = found.call_id if found is not None else None
        except Exception as exc:  # noqa: BLE001 - the entry is evidence, the attempt counts anyway
            logger.info("call_log.callback_origin_unknown", followup_id=followup_id,
                        call_id=call_id, error=repr(exc))
        self._guarded(
            "followup-attempt",
            None,
            lambda: {
                "followup_id": clean_text(followup_id),
                "attempt_call_id": clean_text(call_id),
                "agent": clean_text(agent),
                "at": self._epoch(at, "at", call_id),
            },
        )
        if origin is not None:
            self.append(
                origin,
                at=at,
                source="log",
                kind="callback-attempted",
                detail={
                    "followup_id": followup_id,
                    "callback_call_id": call_id,
                    "agent": agent,
                },
            )

    def _pending_followup(self, followup_id: str) -> str | None:
        """The call of a follow-up not yet committed (in memory or spilled), if it is one."""
        return self._uncommitted_followups.get(followup_id)

    def _guarded(self, op: str, call_id: str | None, build: Callable[[], Record]) -> None:
        """Build and queue one record; a bug here is logged, never raised into the call."""
        try:
            record = build()
            record["op"] = op
            if call_id is not None:
                record["call_id"] = clean_text(call_id)
            self._enqueue(record)
        except Exception:  # the call must go on whatever the log does
            logger.exception("call_log.record_not_queued", op=op, call_id=call_id)

    def _enqueue(self, record: Record) -> None:
        if self._closed:
            logger.error(
                "call_log.write_after_close", op=record["op"], call_id=record.get("call_id")
            )
            return
        self._counter += 1
        record["j"] = self._journal_id
        record["n"] = self._counter
        self._drained.clear()
        self._wakeup.set()
        journal = self._journal
        if journal is not None and journal.is_open and (
            self._spilled or len(self._queue) >= self._memory_limit
        ):
            # Memory is full (the database is behind): this record lives on disk only.
            self._spilled += 1
            journal.append(record, spilled=True)
            if not self._spill_warned:
                self._spill_warned = True
                logger.warning(
                    "call_log.spilling_to_journal",
                    in_memory=len(self._queue),
                    journal=str(journal.path),
                )
            return
        self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._batch_ready.set()
        if journal is not None:
            journal.append(record)

    @staticmethod
    def _epoch(value: Any, name: str, call_id: str | None) -> float:
        """A usable epoch time; a bad one is replaced by now, with a warning."""
        epoch = clean_epoch(value)
        if epoch is None:
            logger.warning("call_log.bad_time", call_id=call_id, field=name, value=repr(value))
            return datetime.now(UTC).timestamp()
        return epoch

    # ------------------------------------------------------------------ the writer

    async def _migrate(self) -> None:
        assert self._engine is not None
        await upgrade(self._engine)
        self._schema_ready = True

    async def _run_writer(self) -> None:
        """Drain the queue in order, forever; retry with backoff while the database fails."""
        delay = self._retry_initial
        failures = 0
        isolate = 0  # records still to be written one at a time
        refusals = 0  # consecutive refusals of the single record at the head
        while True:
            if not self._queue and self._spilled:
                await self._load_spilled()
                continue
            if not self._queue:
                self._all_committed()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not isolate and not failures:
                await self._linger_for_more()
            size = 1 if isolate else self._batch_size
            batch = list(itertools.islice(self._queue, size))
            self._last_write = asyncio.get_running_loop().time()
            try:
                if not self._schema_ready:
                    await self._migrate()
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried or isolated
                self._forget_caches()
                if self._schema_ready and _is_refusal(exc):
                    if len(batch) > 1:
                        isolate = len(batch)
                        logger.warning(
                            "call_log.batch_refused", records=len(batch), error=repr(exc)
                        )
                        continue
                    refusals += 1
                    if refusals >= _REFUSALS_BEFORE_DROP:
                        dropped = self._queue.popleft()
                        if dropped.get("op") == "followup":
                            self._uncommitted_followups.pop(dropped.get("followup_id", ""), None)
                        isolate = max(0, isolate - 1)
                        refusals = 0
                        logger.error(
                            "call_log.record_dropped",
                            call_id=dropped.get("call_id"),
                            record=dropped,
                            error=repr(exc),
                        )
                        continue
                failures += 1
                logger.warning(
                    "call_log.write_failed",
                    pending=self.pending,
                    attempt=failures,
                    retry_in=delay,
                    error=repr(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            for record in batch:
                self._queue.popleft()
                if record.get("op") == "followup":
                    self._uncommitted_followups.pop(record.get("followup_id", ""), None)
            journal = self._journal
            if (
                journal is not None
                and self._queue
                and not self._spilled
                and journal.grown > self._compact_bytes
            ):
                journal.compact(list(self._queue))
            isolate = max(0, isolate - len(batch))
            refusals = 0
            delay = self._retry_initial
            if failures:
                logger.info("call_log.write_recovered", pending=self.pending, failures=failures)
                failures = 0

    async def _linger_for_more(self) -> None:
        """Group commit: at most one transaction per ``linger`` seconds.

        A transaction's cost is mostly fixed, so under load the writer waits
        until ``linger`` has passed since the last one began, gathering what
        arrives meanwhile. It goes at once when the queue holds a full batch,
        when ``flush()`` or ``close()`` waits, and after a quiet spell (the
        last transaction was long ago), so a lone record is not held back.
        """
        if self._linger <= 0 or self._hurry or len(self._queue) >= self._batch_size:
            return
        wait = self._last_write + self._linger - asyncio.get_running_loop().time()
        if wait <= 0:
            return
        self._batch_ready.clear()
        try:
            async with asyncio.timeout(wait):
                await self._batch_ready.wait()
        except TimeoutError:
            pass

    async def _load_spilled(self) -> None:
        """Read the next spilled records back from the journal into the queue, in order."""
        assert self._journal is not None
        before = self._spilled
        records, left = await self._journal.load(self._memory_limit)
        # Records spilled while we read are not in ``left`` yet: keep counting them.
        self._spilled = left + (self._spilled - before)
        self._queue.extend(records)
        if not self._spilled:
            self._spill_warned = False
            logger.info("call_log.spill_read_back", in_memory=len(self._queue))
        if not records and self._spilled:
            await asyncio.sleep(self._retry_max)  # unreadable for now; try again later

    def _all_committed(self) -> None:
        """Everything queued is in the database: empty the journal, let flush() return."""
        if self._journal is not None:
            clearing = self._journal.clear()
            # Only once the emptied file is on disk may earlier runs' marks go: a
            # journal line that comes back after a power cut needs its mark.
            replayed, self._replayed_journals = self._replayed_journals, set()
            if replayed:
                clearing.add_done_callback(
                    lambda done: self._marks_to_prune.update(replayed)
                    if not done.cancelled() and done.exception() is None and done.result()
                    else None
                )
            self._clearing = clearing
        self._hurry = False
        self._drained.set()

    def _forget_caches(self) -> None:
        """After a failure nothing cached can be trusted (the commit may have happened)."""
        self._next_seq.clear()
        self._known_calls.clear()
        self._verdictless_calls.clear()
        self._known_agents.clear()
        self._marks.clear()
        self._mark_rows.clear()

    async def _write(self, batch: list[Record]) -> None:
        """Write one batch in one transaction, then trust what it learned."""
        assert self._engine is not None
        state = BatchState()
        async with self._engine.begin() as conn:
            await self._apply_batch(conn, batch, state)
        self._merge(state)

    def _merge(self, state: BatchState) -> None:
        if len(self._next_seq) > _CACHE_LIMIT or len(self._known_calls) > _CACHE_LIMIT:
            self._next_seq.clear()
            self._known_calls.clear()
            self._verdictless_calls.clear()
        if len(self._known_agents) > _CACHE_LIMIT:
            self._known_agents.clear()
        self._next_seq.update(state.next_seq)
        self._known_calls |= state.known_calls
        self._verdictless_calls |= state.created
        self._known_agents |= state.known_agents
        self._marks.update(state.marks)
        self._mark_rows |= state.mark_rows
        for call_id in state.ended:
            self._next_seq.pop(call_id, None)
            self._known_calls.discard(call_id)
            self._verdictless_calls.discard(call_id)
        for journal_id in state.pruned:
            self._marks_to_prune.discard(journal_id)
            self._marks.pop(journal_id, None)
            self._mark_rows.discard(journal_id)

    async def _apply_batch(
        self, conn: AsyncConnection, batch: list[Record], state: BatchState
    ) -> None:
        """Apply records in order inside the open transaction ``conn``.

        Records are staged in order (``db.batch``), then written with a few
        bulk statements; the reads staging needs come first, from the caches
        or one SELECT each for what they do not know.
        """
        todo = await self._unwritten(conn, batch, state)
        if todo:
            await self._learn_calls(conn, todo, state)
            for record in todo:
                op = record["op"]
                if op == "append":
                    state.stage_append(record)
                elif op == "update":
                    state.stage_update(record)
                elif op == "start":
                    state.stage_start(record)
                elif op == "end":
                    state.stage_end(record)
                elif op == "agent":
                    await self._write_agent(conn, record, state)
                elif op == "followup":
                    state.stage_followup(record)
                elif op == "followup-attempt":
                    state.stage_attempt(record)
                else:
                    logger.warning("call_log.unknown_record", op=op, call_id=record.get("call_id"))
            unknown_agents = state.agents.keys() - self._known_agents
            stored = (state.agents.keys() - unknown_agents) | (
                await stored_agents(conn, unknown_agents) if unknown_agents else set()
            )
            await write_batch(conn, state, stored)
        for journal_id, number in state.advanced.items():
            await self._save_mark(conn, journal_id, number, state)
        if self._marks_to_prune:
            prune = set(self._marks_to_prune)
            await conn.execute(delete(JournalMark).where(JournalMark.journal_id.in_(prune)))
            state.pruned = prune

    async def _unwritten(
        self, conn: AsyncConnection, batch: list[Record], state: BatchState
    ) -> list[Record]:
        """The batch's records not yet in the database, by their journals' marks."""
        todo: list[Record] = []
        marks = state.marks
        for record in batch:
            journal_id, number = record["j"], record["n"]
            mark = marks.get(journal_id)
            if mark is None:
                mark = await self._mark(conn, journal_id, state)
            if number <= mark:
                continue  # written before a crash or a lost commit reply
            marks[journal_id] = number
            state.advanced[journal_id] = number
            todo.append(record)
        return todo

    async def _learn_calls(
        self, conn: AsyncConnection, records: list[Record], state: BatchState
    ) -> None:
        """Which of the batch's calls have a row, and where their timelines stop.

        Calls this store created or has seen are cached; the others cost one
        SELECT per batch (two if some of them have timelines to continue).
        """
        call_ids: set[str] = set()
        appended: set[str] = set()
        for record in records:
            op = record["op"]
            if op in _CALL_OPS:
                call_id = record.get("call_id", "")
                call_ids.add(call_id)
                if op == "append":
                    appended.add(call_id)
        known = self._known_calls
        unknown = call_ids - known
        found = await stored_calls(conn, unknown) if unknown else set()
        state.known_calls |= found
        state.stored_calls = (call_ids & known) | found
        state.verdictless_calls = call_ids & self._verdictless_calls
        to_look_up: set[str] = set()
        for call_id in appended:
            seq = self._next_seq.get(call_id)
            if seq is not None:
                state.next_seq[call_id] = seq
            elif call_id in state.stored_calls:
                to_look_up.add(call_id)
        if to_look_up:
            highest = await highest_seqs(conn, to_look_up)
            for call_id in to_look_up:
                state.next_seq[call_id] = highest.get(call_id, 0) + 1

    async def _mark(self, conn: AsyncConnection, journal_id: str, state: BatchState) -> int:
        """How far ``journal_id``'s records are already in the database."""
        if journal_id in state.marks:
            return state.marks[journal_id]
        if journal_id in self._marks:
            state.marks[journal_id] = self._marks[journal_id]
            return state.marks[journal_id]
        found = await conn.scalar(READ_MARK, {"b_journal_id": journal_id})
        if found is not None:
            state.mark_rows.add(journal_id)
        state.marks[journal_id] = found or 0
        return state.marks[journal_id]

    async def _save_mark(
        self, conn: AsyncConnection, journal_id: str, number: int, state: BatchState
    ) -> None:
        """Advance the mark in the batch's transaction.

        Its row exists unless ``_mark`` found none: every journal's mark is read
        (or known) before it advances, so no SELECT is needed here.
        """
        if journal_id in self._mark_rows or journal_id in state.mark_rows:
            await conn.execute(ADVANCE_MARK, {"b_journal_id": journal_id, "b_number": number})
        else:
            await conn.execute(INSERT_MARK, {"journal_id": journal_id, "applied_through": number})
        state.mark_rows.add(journal_id)

    async def _write_agent(self, conn: AsyncConnection, record: Record, state: BatchState) -> None:
        """Stage an agent's new state; a batch writes only each agent's latest."""
        state.stage_agent(record)

    async def _prune_own_marks(self) -> None:
        """After a clean close no journal holds this store's records: drop its mark."""
        assert self._engine is not None
        prune = self._marks_to_prune | {self._journal_id}
        try:
            async with asyncio.timeout(2.0), self._engine.begin() as conn:
                await conn.execute(delete(JournalMark).where(JournalMark.journal_id.in_(prune)))
        except Exception as exc:  # noqa: BLE001 - a leftover mark row is harmless
            logger.info("call_log.mark_not_pruned", error=repr(exc))

    def _safe_url(self) -> str:
        """The URL without its password, for logs."""
        assert self._engine is not None
        return self._engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ queries (may raise)

    def _reader(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("CallStore.start() has not been called")
        return self._engine

    async def list_calls(self, limit: int = 20, offset: int = 0) -> list[CallSummary]:
        """Calls newest first (by first ring), each with its rules' statuses."""
        page = (
            select(Call.id)
            .order_by(Call.created_at.desc(), Call.id.desc())
            .limit(limit)
            .offset(offset)
        )
        query = (
            select(*_SUMMARY_COLUMNS, Call.summary)
            .order_by(Call.created_at.desc(), Call.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await self._summaries(query, page)

    async def open_calls(self) -> list[CallSummary]:
        """Calls without an end, oldest first: what a restarted controller must reconcile."""
        query = (
            select(*_SUMMARY_COLUMNS, Call.summary)
            .where(Call.ended_at.is_(None))
            .order_by(Call.created_at, Call.id)
        )
        return await self._summaries(query, select(Call.id).where(Call.ended_at.is_(None)))

    async def _summaries(self, query: Executable, ids: Select[str]) -> list[CallSummary]:
        """Rows of ``query`` with the statuses of the calls ``ids`` selects (same calls).

        The statuses come from a subquery, not a list of ids, so a page of
        100 000 calls does not exceed the database's limit on parameters.
        """
        verdicts: dict[str, dict[str, str]] = {}
        async with self._reader().connect() as conn:
            rows = (await conn.execute(query)).all()
            if rows:
                marks = await conn.execute(
                    select(ComplianceRow.call_id, ComplianceRow.rule, ComplianceRow.status).where(
                        ComplianceRow.call_id.in_(ids.scalar_subquery())
                    )
                )
                for call_id, rule, status in marks:
                    verdicts.setdefault(call_id, {})[rule] = status
        return [_summary(row, verdicts.get(row.id, {})) for row in rows]

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The whole call by id, or by a unique prefix of it; None if no call matches.

        Raises :class:`AmbiguousCallId` if a prefix matches several calls.
        """
        async with self._reader().connect() as conn:
            row = (
                await conn.execute(
                    select(*_SUMMARY_COLUMNS, Call.summary).where(Call.id == call_id)
                )
            ).first()
            if row is None and call_id:
                # substr() makes the match exact; LIKE alone ignores case on SQLite.
                candidates = (
                    await conn.execute(
                        select(*_SUMMARY_COLUMNS, Call.summary)
                        .where(
                            Call.id.startswith(call_id, autoescape=True),
                            func.substr(Call.id, 1, len(call_id)) == call_id,
                        )
                        .order_by(Call.id)
                        .limit(5)
                    )
                ).all()
                if len(candidates) > 1:
                    raise AmbiguousCallId(call_id, [c.id for c in candidates])
                row = candidates[0] if candidates else None
            if row is None:
                return None
            timeline = await self._timeline(conn, row.id, None)
            followups = await self._call_followups(conn, row.id)
            verdicts = (
                await conn.execute(
                    select(ComplianceRow.rule, ComplianceRow.status, ComplianceRow.evidence)
                    .where(ComplianceRow.call_id == row.id)
                    .order_by(ComplianceRow.rule)
                )
            ).all()
        summary = _summary(row)
        return CallRecord(
            id=summary.id,
            channel_id=summary.channel_id,
            caller_number=summary.caller_number,
            caller_name=summary.caller_name,
            created_at=summary.created_at,
            answered_at=summary.answered_at,
            ended_at=summary.ended_at,
            first_hangup=summary.first_hangup,
            agent=summary.agent,
            outcome=summary.outcome,
            state=summary.state,
            summary=row.summary,
            timeline=tuple(timeline),
            compliance={v.rule: ComplianceMark(v.status, v.evidence) for v in verdicts},
            followups=tuple(followups),
            handled_by=summary.handled_by,
        )

    async def timeline_events(self, call_id: str) -> list[TimelineEntry]:
        """The call's engine inputs (``source == "event"``) in order, for replay."""
        async with self._reader().connect() as conn:
            return await self._timeline(conn, call_id, "event")

    async def agents(self) -> list[AgentRecord]:
        """Last known state of every agent's phone, by name."""
        async with self._reader().connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        Agent.name,
                        Agent.endpoint,
                        Agent.registered,
                        Agent.device_state,
                        Agent.updated_at,
                    ).order_by(Agent.name)
                )
            ).all()
        return [
            AgentRecord(
                name=a.name,
                endpoint=a.endpoint,
                registered=a.registered,
                device_state=a.device_state,
                updated_at=a.updated_at,
            )
            for a in rows
        ]

    # ------------------------------------------------------------------ follow-ups (R8)

    async def list_followups(
        self, *, owner: str | None = None, include_done: bool = False, today: date
    ) -> list[FollowUp]:
        """Follow-ups to keep: overdue first, then open ones, then (if asked) done ones.

        Within each group by due day, then by when they were made. ``today``
        is the center's local date (the caller decides the time zone).
        ``owner`` given: that agent's follow-ups and the unowned callbacks any
        agent may place.
        """
        query = select(*_FOLLOWUP_COLUMNS)
        if not include_done:
            query = query.where(FollowUpRow.state == "open")
        if owner is not None:
            query = query.where(
                or_(
                    FollowUpRow.owner == owner,
                    and_(FollowUpRow.owner == "", FollowUpRow.kind == "callback"),
                )
            )
        async with self._reader().connect() as conn:
            rows = (await conn.execute(query)).all()
        followups = [_followup(row) for row in rows]
        rank = {"overdue": 0, "open": 1, "done": 2}
        followups.sort(key=lambda f: (rank[f.status(today)], f.due, f.created_at, f.id))
        return followups

    async def get_followup(self, id_or_prefix: str) -> FollowUp | None:
        """A follow-up by id or unique prefix; None if none matches.

        Raises :class:`AmbiguousFollowUpId` if a prefix matches several.
        """
        async with self._reader().connect() as conn:
            row = (
                await conn.execute(
                    select(*_FOLLOWUP_COLUMNS).where(FollowUpRow.id == id_or_prefix)
                )
            ).first()
            if row is None and id_or_prefix:
                # substr() makes the match exact; LIKE alone ignores case on SQLite.
                candidates = (
                    await conn.execute(
                        select(*_FOLLOWUP_COLUMNS)
                        .where(
                            FollowUpRow.id.startswith(id_or_prefix, autoescape=True),
                            func.substr(FollowUpRow.id, 1, len(id_or_prefix)) == id_or_prefix,
                        )
                        .order_by(FollowUpRow.id)
                        .limit(5)
                    )
                ).all()
                if len(candidates) > 1:
                    raise AmbiguousFollowUpId(id_or_prefix, [c.id for c in candidates])
                row = candidates[0] if candidates else None
        return None if row is None else _followup(row)

    async def _followup_by_id(self, followup_id: str) -> FollowUp | None:
        async with self._reader().connect() as conn:
            row = (
                await conn.execute(select(*_FOLLOWUP_COLUMNS).where(FollowUpRow.id == followup_id))
            ).first()
        return None if row is None else _followup(row)

    async def followups_for_call(self, call_id: str) -> list[FollowUp]:
        """The follow-ups made on one call, oldest first."""
        async with self._reader().connect() as conn:
            return await self._call_followups(conn, call_id)

    @staticmethod
    async def _call_followups(conn: AsyncConnection, call_id: str) -> list[FollowUp]:
        rows = (
            await conn.execute(
                select(*_FOLLOWUP_COLUMNS)
                .where(FollowUpRow.call_id == call_id)
                .order_by(FollowUpRow.created_at, FollowUpRow.id)
            )
        ).all()
        return [_followup(row) for row in rows]

    async def complete_followup(self, followup_id: str, *, by: str, at: float) -> FollowUp | None:
        """Mark a follow-up done by ``by`` at ``at``; None if there is no such follow-up.

        Done once: completing a follow-up already done changes nothing and
        returns it as it is. The originating call's timeline gets a
        "followup-done" entry in the same transaction. Raises if the database
        cannot be reached (someone is waiting for the answer).
        """
        done_by = clean_text(by)
        done_at = self._epoch(at, "done_at", None)

        async def body(conn: AsyncConnection) -> tuple[FollowUp | None, bool]:
            result = await conn.execute(
                update(FollowUpRow)
                .where(FollowUpRow.id == followup_id, FollowUpRow.state == "open")
                .values(state="done", done_at=utc(done_at), done_by=done_by)
            )
            row = (
                await conn.execute(select(*_FOLLOWUP_COLUMNS).where(FollowUpRow.id == followup_id))
            ).first()
            if row is None:
                return None, False
            followup = _followup(row)
            changed = result.rowcount == 1
            if changed:
                await self._append_now(
                    conn,
                    followup.call_id,
                    at=done_at,
                    kind="followup-done",
                    detail={
                        "followup_id": followup.id,
                        "kind": followup.kind,
                        "by": done_by,
                        "due": followup.due.isoformat(),
                        "done_at": done_at,
                    },
                )
            return followup, changed

        followup, changed = await self._direct(body)
        if followup is not None and changed:
            self._next_seq.pop(followup.call_id, None)
            logger.info("followup.done", call_id=followup.call_id, followup_id=followup.id,
                        by=done_by)
        return followup

    async def flag_overdue(self, *, today: date, at: float) -> list[FollowUp]:
        """Flag the open follow-ups newly past their due day (``today`` > due); return them.

        Each is flagged once (``overdue_flagged_at``), and in the same
        transaction its originating call gets a "followup-overdue" timeline
        entry and R8 "broken" in its compliance record, with the follow-up as
        evidence: a promise not kept is a broken closing (R8: 如果承诺了，就不要
        忘记给客户回电话). Safe to run from several processes at once: a
        follow-up is flagged by whichever gets there first. Raises if the
        database cannot be reached.
        """
        flagged_epoch = self._epoch(at, "at", None)

        async def body(conn: AsyncConnection) -> list[FollowUp]:
            rows = (
                await conn.execute(
                    select(*_FOLLOWUP_COLUMNS)
                    .where(
                        FollowUpRow.state == "open",
                        FollowUpRow.due < today,
                        FollowUpRow.overdue_flagged_at.is_(None),
                    )
                    .order_by(FollowUpRow.due, FollowUpRow.created_at, FollowUpRow.id)
                )
            ).all()
            flagged: list[FollowUp] = []
            for row in rows:
                result = await conn.execute(
                    update(FollowUpRow)
                    .where(
                        FollowUpRow.id == row.id,
                        FollowUpRow.state == "open",
                        FollowUpRow.overdue_flagged_at.is_(None),
                    )
                    .values(overdue_flagged_at=utc(flagged_epoch))
                )
                if result.rowcount != 1:
                    continue  # done or flagged meanwhile by someone else
                followup = dataclasses.replace(_followup(row), overdue_flagged_at=flagged_epoch)
                await self._record_overdue(conn, followup, today, flagged_epoch)
                flagged.append(followup)
            return flagged

        flagged = await self._direct(body)
        for followup in flagged:
            self._next_seq.pop(followup.call_id, None)
            logger.warning(
                "followup.overdue",
                call_id=followup.call_id,
                followup_id=followup.id,
                kind=followup.kind,
                owner=followup.owner,
                due=followup.due.isoformat(),
            )
        return flagged

    async def _record_overdue(
        self, conn: AsyncConnection, followup: FollowUp, today: date, at: float
    ) -> None:
        """The overdue follow-up's evidence on its call: a timeline entry and R8 broken."""
        item = {
            "followup_id": followup.id,
            "kind": followup.kind,
            "due": followup.due.isoformat(),
            "owner": followup.owner,
            "queue": followup.queue,
            "number": followup.number,
            "text": followup.text,
        }
        await self._append_now(
            conn, followup.call_id, at=at, kind="followup-overdue",
            detail={**item, "today": today.isoformat()},
        )
        previous = (
            await conn.execute(
                select(ComplianceRow.status, ComplianceRow.evidence).where(
                    ComplianceRow.call_id == followup.call_id, ComplianceRow.rule == "R8"
                )
            )
        ).first()
        earlier: list[Any] = []
        evidence: dict[str, Any] = {}
        if previous is not None:
            old = previous.evidence if isinstance(previous.evidence, dict) else {}
            if previous.status == "broken" and isinstance(old.get("overdue_followups"), list):
                earlier = list(old["overdue_followups"])
                evidence = {k: v for k, v in old.items() if k not in ("reason", "overdue_followups")}
            else:
                evidence = {"before_overdue": {"status": previous.status, "evidence": old}}
            await conn.execute(
                delete(ComplianceRow).where(
                    ComplianceRow.call_id == followup.call_id, ComplianceRow.rule == "R8"
                )
            )
        evidence.update(
            reason=f"跟进逾期 follow-up overdue: due {followup.due.isoformat()}, "
            f"still open on {today.isoformat()}",
            overdue_followups=[*earlier, item],
            flagged_at=at,
        )
        await conn.execute(
            insert(ComplianceRow).values(
                call_id=followup.call_id, rule="R8", status="broken", evidence=clean_dict(evidence)
            )
        )

    async def import_calls(self, records: Sequence[Any]) -> ImportResult:
        """Write calls the dialplan fallback served (``callflow.fallback.FallbackRecord``), each once.

        One transaction per chunk: the call row (``handled_by`` 'fallback', its
        Asterisk linkedid), its whole timeline and its compliance record
        together, so a crash leaves a call either whole or absent. A call whose
        linkedid the log already holds is skipped: reading the CEL file twice,
        after a crash, or from two processes at once writes it once (the unique
        index decides a race; the loser's chunk is retried and finds it there).
        Raises if the database cannot be reached: the file is read again later.
        """
        imported = already = 0
        for start in range(0, len(records), _IMPORT_CHUNK):
            chunk = list(records[start:start + _IMPORT_CHUNK])
            written = await self._direct(lambda conn, c=chunk: self._import_chunk(conn, c))
            imported += written
            already += len(chunk) - written
        return ImportResult(imported=imported, already=already)

    async def import_call(self, record: Any) -> bool:
        """Write one fallback call; False if the log already held it."""
        return (await self.import_calls([record])).imported == 1

    @staticmethod
    async def _import_chunk(conn: AsyncConnection, chunk: list[Any]) -> int:
        linkedids = {clean_text(r.linkedid) for r in chunk}
        held = set((await conn.execute(
            select(Call.asterisk_linkedid).where(Call.asterisk_linkedid.in_(linkedids))
        )).scalars())
        fresh: dict[str, Any] = {}
        for r in chunk:
            key = clean_text(r.linkedid)
            if key not in held and key not in fresh:
                fresh[key] = r
        if not fresh:
            return 0
        await conn.execute(insert(Call), [
            {"id": clean_text(r.call_id), "channel_id": clean_text(r.channel_id),
             "caller_number": clean_text(r.caller_number),
             "caller_name": clean_text(r.caller_name), "created_at": utc(r.created_at),
             "answered_at": None if r.answered_at is None else utc(r.answered_at),
             "ended_at": utc(r.ended_at), "first_hangup": clean_text(r.first_hangup),
             "agent": clean_optional_text(r.agent), "outcome": clean_text(r.outcome),
             "state": "ended", "summary": clean_dict(r.summary),
             "handled_by": "fallback", "asterisk_linkedid": key}
            for key, r in fresh.items()])
        timeline = [
            {"call_id": clean_text(r.call_id), "seq": seq, "at": utc(item.at), "source": "log",
             "kind": clean_text(item.kind), "detail": clean_dict(item.detail)}
            for r in fresh.values() for seq, item in enumerate(r.timeline, start=1)]
        if timeline:
            await conn.execute(insert(TimelineRow), timeline)
        verdicts = [
            {"call_id": clean_text(r.call_id), "rule": rule, "status": mark["status"],
             "evidence": clean_dict(mark.get("evidence", {}))}
            for r in fresh.values() for rule, mark in r.compliance.items()]
        if verdicts:
            await conn.execute(insert(ComplianceRow), verdicts)
        return len(fresh)

    @staticmethod
    async def _append_now(
        conn: AsyncConnection, call_id: str, *, at: float, kind: str, detail: dict[str, Any]
    ) -> None:
        """A timeline entry written in ``conn``'s transaction, after the call's last one."""
        highest = await conn.scalar(
            select(func.max(TimelineRow.seq)).where(TimelineRow.call_id == call_id)
        )
        await conn.execute(
            insert(TimelineRow).values(
                call_id=call_id,
                seq=(highest or 0) + 1,
                at=utc(at),
                source="log",
                kind=kind,
                detail=clean_dict(detail),
            )
        )

    async def _direct(self, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction now, again if a timeline ``seq`` collided.

        The background writer (here or in the controller) may append to the
        same call between our read of its last ``seq`` and our insert; the
        unique constraint refuses the second, and a new try reads afresh.
        """
        for attempt in range(1, _DIRECT_TRIES + 1):
            try:
                async with self._reader().begin() as conn:
                    return await body(conn)
            except sa_exc.IntegrityError:
                if attempt == _DIRECT_TRIES:
                    raise
                logger.info("call_log.direct_write_retried", attempt=attempt)
        raise AssertionError("unreachable")

    @staticmethod
    async def _timeline(
        conn: AsyncConnection, call_id: str, source: str | None
    ) -> list[TimelineEntry]:
        query = select(
            TimelineRow.seq,
            TimelineRow.at,
            TimelineRow.source,
            TimelineRow.kind,
            TimelineRow.detail,
        ).where(TimelineRow.call_id == call_id)
        if source is not None:
            query = query.where(TimelineRow.source == source)
        rows = (await conn.execute(query.order_by(TimelineRow.seq))).all()
        return [
            TimelineEntry(seq=r.seq, at=r.at, source=r.source, kind=r.kind, detail=r.detail)
            for r in rows
        ]


_SUMMARY_COLUMNS = (
    Call.id,
    Call.channel_id,
    Call.caller_number,
    Call.caller_name,
    Call.created_at,
    Call.answered_at,
    Call.ended_at,
    Call.first_hangup,
    Call.agent,
    Call.outcome,
    Call.state,
    Call.handled_by,
)


def _summary(row: Any, compliance: dict[str, str] | None = None) -> CallSummary:
    return CallSummary(
        compliance=compliance or {},
        id=row.id,
        channel_id=row.channel_id,
        caller_number=row.caller_number,
        caller_name=row.caller_name,
        created_at=row.created_at,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
        first_hangup=row.first_hangup,
        agent=row.agent,
        outcome=row.outcome,
        state=row.state,
        queue=_queue_of(getattr(row, "summary", None)),
        handled_by=row.handled_by,
    )


def _queue_of(summary: Any) -> str | None:
    """The queue a call waited in, from its summary ("" = the general queue; None: never queued)."""
    if isinstance(summary, dict) and isinstance(summary.get("queue"), str):
        return str(summary["queue"])
    return None


_FOLLOWUP_COLUMNS = (
    FollowUpRow.id,
    FollowUpRow.call_id,
    FollowUpRow.kind,
    FollowUpRow.text,
    FollowUpRow.number,
    FollowUpRow.owner,
    FollowUpRow.queue,
    FollowUpRow.created_at,
    FollowUpRow.due,
    FollowUpRow.state,
    FollowUpRow.done_at,
    FollowUpRow.done_by,
    FollowUpRow.overdue_flagged_at,
    FollowUpRow.attempts,
    FollowUpRow.last_attempt_call_id,
)


def _epoch_of(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _followup(row: Any) -> FollowUp:
    return FollowUp(
        id=row.id,
        call_id=row.call_id,
        kind=row.kind,
        text=row.text,
        number=row.number,
        owner=row.owner,
        queue=row.queue,
        created_at=row.created_at.timestamp(),
        due=row.due,
        state=row.state,
        done_at=_epoch_of(row.done_at),
        done_by=row.done_by,
        overdue_flagged_at=_epoch_of(row.overdue_flagged_at),
        attempts=row.attempts,
        last_attempt_call_id=row.last_attempt_call_id,
    )


def _iso_day(value: date | str) -> str:
    """A due day as ISO text for the record; anything that is not a day is refused."""
    if isinstance(value, datetime):
        raise TypeError(f"due must be a date, not a datetime: {value!r}")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return date.fromisoformat(value.strip()).isoformat()
    raise TypeError(f"due must be a date or an ISO date string, got {value!r}")


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """SQLite: enforce foreign keys; WAL so readers don't block the writer; wait on locks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()
