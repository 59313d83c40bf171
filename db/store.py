"""The call log store: R10 ("every call in the log") without ever holding up a call.

How this works:

- The controller calls the write methods (``call_started``, ``append``,
  ``call_updated``, ``call_ended``, ``agent_state``) from the event loop. Each
  one cleans its input into a JSON-safe snapshot (``db.sanitize``), puts it
  on an in-memory queue, appends it to the crash journal, and returns. They
  never block on the database and never raise.
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
  commit whose answer was lost can write a record twice.
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
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Select, delete, event, func, select
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
    write_batch,
)
from db.journal import Journal, Record
from db.migrations import upgrade
from db.models import Agent, Call, ComplianceRow, JournalMark, TimelineRow
from db.records import (
    AgentRecord,
    AmbiguousCallId,
    CallRecord,
    CallSummary,
    ComplianceMark,
    TimelineEntry,
)
from db.sanitize import (
    clean_dict,
    clean_epoch,
    clean_optional_text,
    clean_text,
)

logger = structlog.get_logger()

SOURCES = frozenset({"event", "log"})
HANGUP_SIDES = frozenset({"caller", "agent", "service"})
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
# Records that concern a call's row (and so its existence).
_CALL_OPS = frozenset({"start", "append", "update", "end"})
# How often one record may be refused on its own before it is dropped.
_REFUSALS_BEFORE_DROP = 3
# Caches of the writer are only hints; bound them in case calls never end.
_CACHE_LIMIT = 50_000


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
        self._journal = Journal(Path(journal_path)) if journal_path is not None else None
        self._retry_initial = retry_initial
        self._retry_max = max(retry_max, retry_initial)
        self._batch_size = max(1, batch_size)
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
        """Records queued and not yet committed to the database."""
        return len(self._queue)

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
            self._replay_journal(self._journal)
        self._writer = asyncio.create_task(self._run_writer(), name="call-log-writer")

    def _replay_journal(self, journal: Journal) -> None:
        """Queue an earlier run's records ahead of any queued before ``start``."""
        if not journal.open():
            # Unusable (or another live store holds it): log to the database only.
            self._journal = None
            return
        earlier = journal.read()
        before_start = list(self._queue)
        journal.append(before_start)
        if earlier:
            self._replayed_journals = {r["j"] for r in earlier} - {self._journal_id}
            self._queue.extendleft(reversed(earlier))
            self._drained.clear()
            logger.info("call_log.journal_replayed", records=len(earlier), path=str(journal.path))

    async def close(self, timeout: float = 3.0) -> None:
        """Write what can be written within ``timeout`` seconds, then stop.

        Records still pending stay in the journal for the next start (without a
        journal they are lost, and an error says how many).
        """
        if self._closed:
            return
        self._closed = True
        drained = await self.flush(timeout) if self._writer is not None else not self._queue
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        if drained and self._engine is not None and (self._counter or self._marks_to_prune):
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
            self._journal.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is committed; True if it was within ``timeout``."""
        if not self._queue:
            return True
        if self._writer is None:
            return False
        # Don't let the writer linger for more records: someone waits for these.
        self._hurry = True
        self._batch_ready.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return not self._queue

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
        self._queue.append(record)
        self._drained.clear()
        self._wakeup.set()
        if len(self._queue) >= self._batch_size:
            self._batch_ready.set()
        if self._journal is not None:
            self._journal.append([record])

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
            for _ in batch:
                self._queue.popleft()
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

    def _all_committed(self) -> None:
        """Everything queued is in the database: empty the journal, let flush() return."""
        if self._journal is not None:
            self._journal.clear()
            # Only now may earlier runs' marks go: their records left the journal file.
            self._marks_to_prune |= self._replayed_journals
            self._replayed_journals = set()
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
            select(*_SUMMARY_COLUMNS)
            .order_by(Call.created_at.desc(), Call.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await self._summaries(query, page)

    async def open_calls(self) -> list[CallSummary]:
        """Calls without an end, oldest first: what a restarted controller must reconcile."""
        query = (
            select(*_SUMMARY_COLUMNS)
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
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """SQLite: enforce foreign keys; WAL so readers don't block the writer; wait on locks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()
