"""Follow-ups in the call log (R8): added, listed overdue first, completed, flagged overdue.

A follow-up is a promise ("三个工作日后给您答复") or a callback a caller left in
the queue. The store must keep it like every other record (never blocking,
surviving an outage and a crash), list it the way an agent works through
them, and, once it is overdue, say so in the originating call's timeline and
mark that call's R8 broken.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from db import AmbiguousFollowUpId, CallStore, FollowUp
from tests.test_store import (
    T0,
    count,
    crash,
    fail_writes,
    log_whole_call,
    make_store,
    postgres_url,  # noqa: F401 - a fixture, used by TestPostgres
    sqlite_url,
    with_store,
)

D = date
TODAY = D(2026, 10, 12)  # a Monday
DEFAULT_DUE = D(2026, 10, 14)


def add(
    store: CallStore,
    followup_id: str,
    *,
    call_id: str = "call-1",
    due: D = DEFAULT_DUE,
    kind: str = "promise",
    owner: str = "王芳",
    created: float = 0.0,
    queue: str = "",
    text: str = "三个工作日后给您答复",
) -> None:
    """What the controller does when the engine says RecordFollowUp."""
    store.followup_added(
        followup_id,
        call_id=call_id,
        kind=kind,
        text=text,
        due=due,
        owner=owner,
        number="13800138000",
        queue=queue,
        created_at=T0 + created,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = make_store(sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl")
    await s.start()
    log_whole_call(s, "call-1")
    log_whole_call(s, "call-2", offset=60)
    yield s
    await s.close()


def ids(followups: list[FollowUp]) -> list[str]:
    return [f.id for f in followups]


class TestAddAndRead:
    async def test_added_followup_comes_back_with_every_field(self, store: CallStore) -> None:
        """A follow-up's fields round-trip: due as a date, times as epoch seconds, state open."""
        add(store, "fu-1", queue="售后", created=12.5)
        assert await store.flush()
        found = await store.get_followup("fu-1")
        assert found is not None
        assert found == FollowUp(
            id="fu-1", call_id="call-1", kind="promise", text="三个工作日后给您答复",
            number="13800138000", owner="王芳", queue="售后", created_at=found.created_at,
            due=D(2026, 10, 14), state="open",
        )
        assert abs(found.created_at - (T0 + 12.5)) < 0.001
        assert (found.done_at, found.overdue_flagged_at, found.attempts) == (None, None, 0)

    async def test_due_may_be_given_as_iso_text(self, store: CallStore) -> None:
        """The engine's RecordFollowUp carries the due day as ISO text; it is stored as a date."""
        store.followup_added("fu-iso", call_id="call-1", kind="callback", text="", due="2026-10-09",
                             owner="", number="1", queue="", created_at=T0)
        assert await store.flush()
        found = await store.get_followup("fu-iso")
        assert found is not None and found.due == D(2026, 10, 9)

    async def test_a_due_that_is_no_day_is_refused_not_raised(self, store: CallStore) -> None:
        """A due that is not a date never raises into the call; it is logged and not queued."""
        assert await store.flush()
        with capture_logs() as logs:
            store.followup_added("bad", call_id="call-1", kind="promise", text="x",
                                 due="next week", owner="a", number="1", queue="",
                                 created_at=T0)
        assert store.pending == 0
        assert await store.get_followup("bad") is None
        assert any(e["event"] == "call_log.record_not_queued" for e in logs)

    async def test_followup_for_an_unknown_call_gets_a_placeholder_call(
        self, store: CallStore
    ) -> None:
        """A follow-up whose call's start was lost still lands, with a placeholder call row."""
        add(store, "fu-orphan", call_id="never-started")
        assert await store.flush()
        call = await store.get_call("never-started")
        assert call is not None and call.state == "unknown"
        assert ids(list(call.followups)) == ["fu-orphan"]

    async def test_the_call_record_lists_its_followups(self, store: CallStore) -> None:
        """get_call gives the call's follow-ups, oldest first, and no one else's."""
        add(store, "fu-b", created=20)
        add(store, "fu-a", created=10)
        add(store, "fu-other", call_id="call-2")
        assert await store.flush()
        call = await store.get_call("call-1")
        assert call is not None and ids(list(call.followups)) == ["fu-a", "fu-b"]
        assert ids(await store.followups_for_call("call-2")) == ["fu-other"]

    async def test_same_id_twice_is_skipped_without_holding_up_the_log(
        self, store: CallStore
    ) -> None:
        """A follow-up id added twice keeps the first; records after it still land."""
        add(store, "dup", text="first")
        assert await store.flush()
        with capture_logs() as logs:
            add(store, "dup", text="second")
            add(store, "after")
            assert await store.flush()
        first = await store.get_followup("dup")
        assert first is not None and first.text == "first"
        assert await store.get_followup("after") is not None
        assert any(e["event"] == "call_log.followup_duplicate" for e in logs)


class TestStatus:
    def test_status_depends_on_the_day_asked(self) -> None:
        """Open on and before its due day, overdue after it, done once done whatever the day."""
        followup = FollowUp(id="x", call_id="c", kind="promise", text="", number="", owner="a",
                            queue="", created_at=T0, due=D(2026, 10, 9), state="open")
        assert followup.status(D(2026, 10, 9)) == "open"
        assert followup.status(D(2026, 10, 10)) == "overdue"
        assert replace(followup, state="done").status(D(2027, 1, 1)) == "done"


class TestList:
    async def test_overdue_first_then_by_due_then_by_creation(self, store: CallStore) -> None:
        """Overdue follow-ups lead the list; the rest follow by due day, then by when made."""
        add(store, "later", due=D(2026, 10, 20), created=1)
        add(store, "soon-2", due=D(2026, 10, 13), created=3)
        add(store, "soon-1", due=D(2026, 10, 13), created=2)
        add(store, "overdue-new", due=D(2026, 10, 9), created=5)
        add(store, "overdue-old", due=D(2026, 10, 1), created=9)
        add(store, "due-today", due=TODAY, created=4)
        assert await store.flush()
        listed = await store.list_followups(today=TODAY)
        assert ids(listed) == ["overdue-old", "overdue-new", "due-today", "soon-1", "soon-2",
                               "later"]
        assert [f.status(TODAY) for f in listed[:3]] == ["overdue", "overdue", "open"]

    async def test_done_ones_only_when_asked_and_last(self, store: CallStore) -> None:
        """Done follow-ups are left out unless include_done, and then come after the open ones."""
        add(store, "done-early", due=D(2026, 10, 1))
        add(store, "open-late", due=D(2026, 11, 1))
        assert await store.flush()
        assert await store.complete_followup("done-early", by="王芳", at=T0 + 100) is not None
        assert ids(await store.list_followups(today=TODAY)) == ["open-late"]
        assert ids(await store.list_followups(today=TODAY, include_done=True)) == [
            "open-late", "done-early"]

    async def test_owner_sees_their_own_and_unowned_callbacks(self, store: CallStore) -> None:
        """An agent's list has their promises and the callbacks nobody owns, not a colleague's."""
        add(store, "mine", owner="王芳")
        add(store, "theirs", owner="李强")
        add(store, "queue-callback", owner="", kind="callback", queue="售后")
        add(store, "their-callback", owner="李强", kind="callback")
        assert await store.flush()
        assert set(ids(await store.list_followups(owner="王芳", today=TODAY))) == {
            "mine", "queue-callback"}
        assert len(await store.list_followups(today=TODAY)) == 4


class TestGetByPrefix:
    async def test_unique_prefix_finds_it(self, store: CallStore) -> None:
        """A follow-up is found by a unique prefix of its id, as call ids are."""
        add(store, "a1b2c3d4-aaaa")
        add(store, "a1ffffff-bbbb")
        assert await store.flush()
        found = await store.get_followup("a1b2")
        assert found is not None and found.id == "a1b2c3d4-aaaa"

    async def test_ambiguous_prefix_raises_and_unknown_is_none(self, store: CallStore) -> None:
        """A prefix matching several raises with the matches; one matching none gives None."""
        add(store, "a1b2c3d4-aaaa")
        add(store, "a1ffffff-bbbb")
        assert await store.flush()
        with pytest.raises(AmbiguousFollowUpId) as raised:
            await store.get_followup("a1")
        assert raised.value.matches == ["a1b2c3d4-aaaa", "a1ffffff-bbbb"]
        assert await store.get_followup("zz") is None

    async def test_prefix_is_literal_and_case_sensitive(self, store: CallStore) -> None:
        """LIKE wildcards in a prefix match only themselves, and case matters."""
        add(store, "50%_off")
        add(store, "abc")
        assert await store.flush()
        assert await store.get_followup("_") is None
        assert await store.get_followup("ABC") is None
        found = await store.get_followup("50%")
        assert found is not None and found.id == "50%_off"


class TestComplete:
    async def test_done_sets_state_by_and_time_and_logs_it_once(self, store: CallStore) -> None:
        """Completing marks it done by whom and when, adds one "followup-done" timeline entry."""
        add(store, "fu-1")
        assert await store.flush()
        done = await store.complete_followup("fu-1", by="admin", at=T0 + 3600)
        assert done is not None and done.state == "done" and done.done_by == "admin"
        assert done.done_at is not None and abs(done.done_at - (T0 + 3600)) < 0.001
        again = await store.complete_followup("fu-1", by="someone-else", at=T0 + 7200)
        assert again == done
        call = await store.get_call("call-1")
        assert call is not None
        entries = [e for e in call.timeline if e.kind == "followup-done"]
        assert len(entries) == 1 and entries[0].detail["by"] == "admin"
        assert entries[0].seq == call.timeline[-2].seq + 1  # follows the call's own entries

    async def test_unknown_id_is_none(self, store: CallStore) -> None:
        """Completing a follow-up that does not exist changes nothing and says None."""
        assert await store.complete_followup("nope", by="admin", at=T0) is None


class TestFlagOverdue:
    async def test_newly_overdue_are_flagged_with_timeline_and_r8_broken(
        self, store: CallStore
    ) -> None:
        """flag_overdue returns the newly overdue, writes "followup-overdue" and R8 broken."""
        add(store, "late", due=D(2026, 10, 9))
        add(store, "due-today", due=TODAY)
        add(store, "done-late", due=D(2026, 10, 1))
        assert await store.flush()
        await store.complete_followup("done-late", by="王芳", at=T0 + 10)
        flagged = await store.flag_overdue(today=TODAY, at=T0 + 86_400)
        assert ids(flagged) == ["late"]
        assert flagged[0].overdue_flagged_at is not None
        stored = await store.get_followup("late")
        assert stored is not None and stored.overdue_flagged_at == pytest.approx(T0 + 86_400)

        call = await store.get_call("call-1")
        assert call is not None
        overdue = [e for e in call.timeline if e.kind == "followup-overdue"]
        assert len(overdue) == 1
        assert overdue[0].detail["followup_id"] == "late"
        assert overdue[0].detail["due"] == "2026-10-09" and overdue[0].source == "log"
        status, evidence = call.compliance["R8"]
        assert status == "broken"
        assert "overdue" in evidence["reason"]
        assert [f["followup_id"] for f in evidence["overdue_followups"]] == ["late"]
        summaries = {c.id: c for c in await store.list_calls()}
        assert summaries["call-1"].compliance["R8"] == "broken"
        assert summaries["call-2"].compliance["R8"] == "kept"  # untouched

    async def test_flagged_only_once(self, store: CallStore) -> None:
        """A second run finds nothing new and adds no second timeline entry."""
        add(store, "late", due=D(2026, 10, 9))
        assert await store.flush()
        assert len(await store.flag_overdue(today=TODAY, at=T0 + 1)) == 1
        assert await store.flag_overdue(today=D(2026, 10, 20), at=T0 + 2) == []
        call = await store.get_call("call-1")
        assert call is not None
        assert sum(e.kind == "followup-overdue" for e in call.timeline) == 1

    async def test_earlier_verdict_is_kept_as_evidence_and_overdues_accumulate(
        self, store: CallStore
    ) -> None:
        """R8 kept before becomes broken with the earlier verdict in its evidence; a second
        overdue follow-up on the same call is added to the list, not put in its place."""
        add(store, "first", due=D(2026, 10, 8))
        add(store, "second", due=D(2026, 10, 12))
        assert await store.flush()
        before = await store.get_call("call-1")
        assert before is not None and before.compliance["R8"].status == "kept"
        await store.flag_overdue(today=TODAY, at=T0 + 1)
        await store.flag_overdue(today=D(2026, 10, 13), at=T0 + 2)
        call = await store.get_call("call-1")
        assert call is not None
        status, evidence = call.compliance["R8"]
        assert status == "broken"
        assert evidence["before_overdue"] == {"status": "kept", "evidence": {"rule": "R8"}}
        assert [f["followup_id"] for f in evidence["overdue_followups"]] == ["first", "second"]
        assert len(call.compliance) == 10

    async def test_a_call_still_live_keeps_consecutive_seq(self, store: CallStore) -> None:
        """An entry written directly and the writer's queued ones share one gap-free seq."""
        store.call_started("live", channel_id="c", caller_number="1", caller_name="",
                           created_at=T0)
        store.append("live", at=T0, source="log", kind="ringing", detail={})
        add(store, "late", call_id="live", due=D(2026, 10, 1))
        assert await store.flush()
        await store.flag_overdue(today=TODAY, at=T0 + 5)
        store.append("live", at=T0 + 6, source="log", kind="still-talking", detail={})
        assert await store.flush()
        call = await store.get_call("live")
        assert call is not None
        assert [(e.seq, e.kind) for e in call.timeline] == [
            (1, "ringing"), (2, "followup-overdue"), (3, "still-talking")]

    async def test_two_processes_flag_each_followup_once(self, tmp_path: Path) -> None:
        """Two stores (controller and `liyi followups`) flagging at once flag each only once."""
        await two_stores_flag_each_once(sqlite_url(tmp_path / "shared.db"))


async def two_stores_flag_each_once(url: str) -> None:
    """Flag five overdue follow-ups of one call from two stores at once."""
    first, second = make_store(url), make_store(url)
    await first.start()
    await second.start()
    try:
        log_whole_call(first, "call-1")
        for i in range(5):
            add(first, f"late-{i}", due=D(2026, 10, 1), created=i)
        assert await first.flush()
        a, b = await asyncio.gather(first.flag_overdue(today=TODAY, at=T0),
                                    second.flag_overdue(today=TODAY, at=T0))
        assert sorted(ids(a) + ids(b)) == [f"late-{i}" for i in range(5)]
        call = await first.get_call("call-1")
        assert call is not None
        assert sum(e.kind == "followup-overdue" for e in call.timeline) == 5
        assert [e.seq for e in call.timeline] == list(range(1, len(call.timeline) + 1))
    finally:
        await first.close()
        await second.close()


class TestCallbackAttempts:
    async def test_attempts_are_counted_and_logged_on_the_originating_call(
        self, store: CallStore
    ) -> None:
        """Each attempt counts, remembers its call, and adds an entry to the first call."""
        add(store, "cb", kind="callback", owner="", queue="售后")
        await store.callback_attempted("cb", call_id="out-1", agent="王芳", at=T0 + 10)
        assert await store.flush()
        await store.callback_attempted("cb", call_id="out-2", agent="李强", at=T0 + 20)
        assert await store.flush()
        found = await store.get_followup("cb")
        assert found is not None and found.attempts == 2 and found.last_attempt_call_id == "out-2"
        call = await store.get_call("call-1")
        assert call is not None
        attempts = [e.detail for e in call.timeline if e.kind == "callback-attempted"]
        assert [(d["callback_call_id"], d["agent"]) for d in attempts] == [
            ("out-1", "王芳"), ("out-2", "李强")]

    async def test_attempt_during_an_outage_is_queued_not_raised(self, store: CallStore) -> None:
        """With the database failing, callback_attempted returns and the attempt lands later."""
        add(store, "cb", kind="callback", owner="")
        assert await store.flush()
        fail_writes(store, times=3)
        await store.callback_attempted("cb", call_id="out-1", agent="王芳", at=T0)
        assert await store.flush()
        found = await store.get_followup("cb")
        assert found is not None and found.attempts == 1


class TestOutageAndCrash:
    async def test_followup_added_returns_at_once_and_lands_after_failures(
        self, store: CallStore
    ) -> None:
        """While writes fail, followup_added still returns; the follow-up is written once it can."""
        assert await store.flush()
        attempts = fail_writes(store, times=3)
        add(store, "fu-1")
        assert store.pending == 1
        assert await store.flush()
        assert attempts() == 4
        assert ids(await store.list_followups(today=TODAY)) == ["fu-1"]

    async def test_pending_followup_is_replayed_from_the_journal_once(
        self, tmp_path: Path
    ) -> None:
        """A follow-up queued when the process died is written by the next start, exactly once."""
        url, journal = sqlite_url(tmp_path / "calls.db"), tmp_path / "calls.jsonl"
        first = make_store(url, journal)
        await first.start()
        log_whole_call(first, "call-1")
        add(first, "committed")
        assert await first.flush()
        fail_writes(first, times=10_000)
        add(first, "in-flight", due=D(2026, 10, 20))
        await first.callback_attempted("committed", call_id="out-1", agent="王芳", at=T0)
        await asyncio.sleep(0.05)
        await crash(first)

        second = make_store(url, journal)
        await second.start()
        try:
            assert await second.flush()
            assert ids(await second.list_followups(today=TODAY)) == ["committed", "in-flight"]
            committed = await second.get_followup("committed")
            assert committed is not None and committed.attempts == 1
            assert await count(second, "followups") == 2
        finally:
            await second.close()

    async def test_refused_followup_is_dropped_alone(self, store: CallStore) -> None:
        """A follow-up the database keeps refusing is dropped; records around it land."""
        real = store._apply_batch

        async def refuse_bad(conn: AsyncConnection, batch: list[dict[str, Any]], state: Any) -> None:
            if any(r.get("followup_id") == "bad" for r in batch):
                raise sa_exc.IntegrityError("INSERT", {}, Exception("refused"))
            await real(conn, batch, state)

        store._apply_batch = refuse_bad  # type: ignore[method-assign]
        add(store, "before", created=1)
        add(store, "bad", created=2)
        add(store, "after", created=3)
        assert await store.flush()
        assert ids(await store.list_followups(today=TODAY)) == ["before", "after"]


class TestPostgres:
    async def test_followups_round_trip_and_flag(self, postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
        """On PostgreSQL follow-ups are listed, completed and flagged as on SQLite."""

        async def body(store: CallStore) -> None:
            log_whole_call(store, "pg-call")
            add(store, "pg-late", call_id="pg-call", due=D(2026, 10, 9))
            add(store, "pg-open", call_id="pg-call", due=D(2026, 10, 20))
            add(store, "pg-done", call_id="pg-call", due=D(2026, 10, 1))
            assert await store.flush()
            assert await store.complete_followup("pg-done", by="admin", at=T0 + 5) is not None
            assert ids(await store.list_followups(today=TODAY, include_done=True)) == [
                "pg-late", "pg-open", "pg-done"]
            assert ids(await store.flag_overdue(today=TODAY, at=T0 + 9)) == ["pg-late"]
            call = await store.get_call("pg-call")
            assert call is not None and call.compliance["R8"].status == "broken"
            assert [e.kind for e in call.timeline][-2:] == ["followup-done", "followup-overdue"]
            assert (await store.get_followup("pg-l")) is not None
            assert [f.id for f in call.followups] == ["pg-done", "pg-late", "pg-open"]

        await with_store(postgres_url, tmp_path, body)

    async def test_two_processes_flag_each_once(self, postgres_url: str) -> None:  # noqa: F811
        """On PostgreSQL two stores flagging at once flag each follow-up once, seq gap-free."""
        await two_stores_flag_each_once(postgres_url)
