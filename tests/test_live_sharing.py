"""How many waiting readers cost little: shared reads across cursors, a watch kept for
a stream's life, one wake-up per loop, reading turns, and entries rendered once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from diffs import async_connection, live, managers
from diffs.contrib.events import PageMemo, _Stream, page_memo
from diffs.cursors import decode_cursor
from diffs.feed import FeedPage, narrow_page, position_of
from tests.test_long_poll import LONG_WAIT, save_later, until_all_sleep, wait_until_listening
from tests.testapp.models import Question
from tests.testapp.views import QuestionViewSet

pytestmark = pytest.mark.django_db(transaction=True)


def count_async_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    made: list[float] = []
    real_arun = managers.arun

    async def counting_arun(client: Any, read_steps: Any) -> Any:
        made.append(time.monotonic())
        return await real_arun(client, read_steps)

    monkeypatch.setattr(managers, "arun", counting_arun)
    return made


# --- narrow_page -------------------------------------------------------------------


def page_of(*scores: float, cursor: float, has_more: bool = False) -> FeedPage:
    class Stub:
        def __init__(self, score: float) -> None:
            self.cursor = repr(score)

    return FeedPage([Stub(s) for s in scores], repr(cursor), has_more)  # type: ignore[misc]


def test_a_page_with_nothing_at_or_before_the_cursor_serves_as_it_is():
    page = page_of(20.0, 30.0, cursor=40.0)
    assert narrow_page(page, "10.0") is page
    assert narrow_page(page_of(cursor=40.0), "15.5").diffs == []


def test_a_page_is_narrowed_to_what_follows_a_later_cursor():
    narrowed = narrow_page(page_of(20.0, 30.0, 35.0, cursor=40.0), "30.0")
    assert narrowed is not None
    assert [d.cursor for d in narrowed.diffs] == ["35.0"]
    assert narrowed.cursor == "40.0"
    assert not narrowed.has_more


def test_a_page_that_cannot_tell_serves_no_later_cursor():
    # It ends before the cursor.
    assert narrow_page(page_of(20.0, cursor=25.0), "30.0") is None
    # It has more, and keeps nothing after the cursor: what follows is unknown.
    assert narrow_page(page_of(20.0, 30.0, cursor=30.0, has_more=True), "30.0") is None
    # Nothing in it at all, but more: served as it is, a reader at its cursor would
    # be given it again and again.
    assert narrow_page(page_of(cursor=30.0, has_more=True), "30.0") is None
    # Not cursors.
    assert narrow_page(page_of(20.0, cursor=25.0), "abc") is None
    assert narrow_page(page_of(20.0, cursor=25.0), None) is None
    assert position_of("1.5e3") is None


def test_a_narrowed_page_with_more_keeps_its_cursor():
    narrowed = narrow_page(page_of(20.0, 30.0, cursor=30.0, has_more=True), "25.0")
    assert narrowed is not None
    assert [d.cursor for d in narrowed.diffs] == ["30.0"]
    assert narrowed.has_more


# --- Readers holding different cursors ----------------------------------------------


def test_readers_holding_different_cursors_share_the_read_a_write_wakes(monkeypatch):
    """Each stream of a quiet feed holds its own moment as cursor; the write that
    wakes them all is read once, earliest cursor first, and narrowed for the rest."""
    Question.diffs.since(wait=0.01)  # the listener
    wait_until_listening()
    cursors = []
    for _ in range(12):
        cursors.append(Question.diffs.since().cursor)
        time.sleep(0.002)
    assert len(set(cursors)) == 12
    reads = count_async_reads(monkeypatch)

    async def many():
        # Latest cursor first: the order they wait in does not decide who reads.
        readers = [
            asyncio.ensure_future(Question.diffs.asince(c, wait=LONG_WAIT))
            for c in reversed(cursors)
        ]
        await until_all_sleep(12)
        before = len(reads)
        writer = save_later(0.0, "for every moment")
        pages = await asyncio.gather(*readers)
        await asyncio.to_thread(writer.join)
        return pages, len(reads) - before

    pages, woken_reads = asyncio.run(many())
    assert all(
        [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["for every moment"]
        for page in pages
    )
    assert woken_reads == 1
    assert len({id(page) for page in pages}) == 1, "one page: rendered once by streams"


def test_a_reader_behind_the_shared_read_gets_the_diffs_it_missed(monkeypatch):
    """A reader whose cursor is older than the woken read's gets its own read: the
    diffs between its cursor and the other's are not skipped."""
    Question.diffs.since(wait=0.01)
    wait_until_listening()
    old_cursor = Question.diffs.since().cursor
    Question.objects.create(question_text="only the old cursor misses this")
    newer = Question.diffs.since(old_cursor)
    assert len(newer.diffs) == 1

    async def both():
        late = asyncio.ensure_future(Question.diffs.asince(newer.cursor, wait=LONG_WAIT))
        await until_all_sleep(1)
        writer = save_later(0.05, "both see this")
        early = asyncio.ensure_future(Question.diffs.asince(old_cursor, wait=LONG_WAIT))
        pages = await asyncio.gather(late, early)
        await asyncio.to_thread(writer.join)
        return pages

    late_page, early_page = asyncio.run(both())
    assert [d.data[0]["fields"]["question_text"] for d in late_page.diffs] == ["both see this"]
    texts = [d.data[0]["fields"]["question_text"] for d in early_page.diffs]
    assert texts[0] == "only the old cursor misses this"


# --- A watch kept for a stream's life ------------------------------------------------


def test_a_stream_waits_without_reading_after_a_page_that_left_nothing(monkeypatch):
    """Inside live.watching(), the call after a complete page waits for the next
    write at once; it reads only at the end of its wait, for a fresh cursor."""
    Question.diffs.since(wait=0.01)
    wait_until_listening()
    Question.objects.create(question_text="seen")
    # Its message heard before the stream starts: one heard later, the stream cannot
    # tell from a new write's, and reads again (as it should).
    time.sleep(1.0)
    reads = count_async_reads(monkeypatch)

    async def stream(kept: bool) -> tuple[int, FeedPage]:
        async def calls() -> FeedPage:
            page = await Question.diffs.asince(None, wait=LONG_WAIT)
            assert page.diffs
            reads.clear()
            return await Question.diffs.asince(page.diffs[-1].cursor, wait=0.3)

        if kept:
            async with live.watching():
                last = await calls()
        else:
            last = await calls()
        return len(reads), last

    kept_reads, kept_page = asyncio.run(stream(kept=True))
    plain_reads, _ = asyncio.run(stream(kept=False))
    assert kept_reads == 1  # the last one, after the wait
    assert plain_reads == 2  # one before waiting, one after
    assert kept_page.diffs == []
    assert decode_cursor(kept_page.cursor) > 0
    assert live.waiting_readers() == 0, "the watch was let go with its block"


def test_a_stream_reads_at_once_when_a_write_came_between_its_calls(monkeypatch):
    """A write made while the stream was busy (sending its page) is not waited past:
    the watch heard it, so the next call reads first."""
    Question.diffs.since(wait=0.01)
    wait_until_listening()
    Question.objects.create(question_text="first")

    async def stream() -> tuple[FeedPage, float]:
        async with live.watching():
            page = await Question.diffs.asince(None, wait=LONG_WAIT)
            await asyncio.to_thread(Question.objects.create, question_text="while busy")
            await asyncio.sleep(0.2)  # the message arrives
            started = time.monotonic()
            second = await Question.diffs.asince(page.diffs[-1].cursor, wait=LONG_WAIT)
            return second, time.monotonic() - started

    page, took = asyncio.run(stream())
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["while busy"]
    assert took < LONG_WAIT / 4


@pytest.mark.parametrize("backlog", [3, 0])
def test_streams_opening_together_share_their_first_read(monkeypatch, backlog):
    for n in range(backlog):
        Question.objects.create(question_text=f"backlog {n}")
    reads = count_async_reads(monkeypatch)

    async def opening() -> FeedPage:
        async with live.watching():
            return await Question.diffs.asince(None, wait=0)

    async def many() -> list[FeedPage]:
        return await asyncio.gather(*(opening() for _ in range(10)))

    pages = asyncio.run(many())
    assert all(len(page.diffs) == backlog for page in pages)
    assert len(reads) == 1


def test_outside_a_stream_a_reader_does_not_take_an_older_read(monkeypatch):
    """A plain asince() must see the write its own caller just made: an older read
    of the same cursor, though it found diffs, does not serve it."""
    cursor = Question.diffs.since().cursor
    Question.objects.create(question_text="before")

    async def read_write_read() -> FeedPage:
        first = await Question.diffs.asince(cursor, wait=LONG_WAIT)
        assert len(first.diffs) == 1
        await asyncio.to_thread(Question.objects.create, question_text="mine")
        return await Question.diffs.asince(cursor, wait=LONG_WAIT)

    page = asyncio.run(read_write_read())
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["before", "mine"]


# --- One wake-up per loop -------------------------------------------------------------


def test_many_readers_of_one_loop_are_woken_with_one_call_into_it():
    async def waiting() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        waiters = [live._Waiter(frozenset({"feed"}), loop) for _ in range(50)]
        sleeping = [asyncio.ensure_future(w.sleep(LONG_WAIT)) for w in waiters]
        await asyncio.sleep(0.01)
        calls = []
        real = loop.call_soon_threadsafe

        def counting(*args: Any) -> Any:
            calls.append(args)
            return real(*args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        thread = threading.Thread(target=live._wake, args=(waiters, time.monotonic()))
        thread.start()
        started = time.monotonic()
        await asyncio.gather(*sleeping)
        thread.join()
        assert time.monotonic() - started < LONG_WAIT / 4
        return len(calls), sum(w.message_at > 0 for w in waiters)

    calls, told = asyncio.run(waiting())
    assert calls == 1
    assert told == 50


# --- Reading turns ----------------------------------------------------------------------


def test_a_burst_of_async_reads_runs_a_few_at_a_time(monkeypatch):
    monkeypatch.setattr(async_connection, "READS_AT_ONCE", 3)
    async_connection.reset_async_connections()
    running = 0
    most = 0
    real_arun = managers.arun

    async def slow_arun(client: Any, read_steps: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01)
            return await real_arun(client, read_steps)
        finally:
            running -= 1

    monkeypatch.setattr(managers, "arun", slow_arun)

    async def burst() -> list[FeedPage]:
        return await asyncio.gather(*(Question.diffs.asince(None) for _ in range(20)))

    try:
        pages = asyncio.run(burst())
    finally:
        async_connection.reset_async_connections()
    assert len(pages) == 20
    assert most == 3


def test_reading_turns_are_no_more_than_the_pool_has_connections():
    class Pool:
        max_connections = 5

    class Client:
        connection_pool = Pool()

    class ClusterClient:  # redis.asyncio.RedisCluster: a cap per node, no pool
        connection_kwargs = {"max_connections": 8}

    async def turns(client: Any) -> int:
        return async_connection._LoopClient(client).turns_at_once

    assert asyncio.run(turns(Client())) == 5
    assert asyncio.run(turns(ClusterClient())) == 8


# --- Entries rendered once for the streams of a page -------------------------------------


def stream_for(view_class: type) -> _Stream:
    request = Request(APIRequestFactory().get("/questions/diffs/stream/"))
    view = view_class(
        request=request, action="diffs_stream", format_kwarg=None, args=(), kwargs={}
    )
    return _Stream(view, None, 100)


def render_together(streams: list[_Stream], page: FeedPage) -> tuple[list[bytes], PageMemo]:
    memo = PageMemo(page)
    token = page_memo.set(memo)
    try:
        return [stream._render(page) for stream in streams], memo
    finally:
        page_memo.reset(token)


def test_streams_of_one_page_share_entries_made_by_the_default_methods():
    Question.objects.create(question_text="shared")
    page = Question.diffs.since(None)
    streams = [stream_for(QuestionViewSet) for _ in range(3)]
    render_together(streams, page)  # each stream learns its columns
    outputs, memo = render_together(streams, page)
    assert len(set(outputs)) == 1
    assert b'"shared"' in outputs[0]
    assert len(memo.entries) == 1
    assert len(memo.encoded) == 1


def test_an_overridden_representation_is_made_for_every_stream():
    made = []

    class PerUser(QuestionViewSet):
        def diff_representation(self, diff: Any) -> dict[str, Any]:
            made.append(self)
            return {**super().diff_representation(diff), "for": id(self)}

    Question.objects.create(question_text="personal")
    page = Question.diffs.since(None)
    streams = [stream_for(PerUser) for _ in range(3)]
    outputs, memo = render_together(streams, page)
    outputs, memo = render_together(streams, page)
    assert len(set(outputs)) == 3
    assert len(made) == 6
    assert memo.entries == {}


def test_streams_shown_different_columns_do_not_share_an_entry():
    Question.objects.create(question_text="hidden from one")
    page = Question.diffs.since(None)
    one, other = stream_for(QuestionViewSet), stream_for(QuestionViewSet)
    render_together([one, other], page)
    assert other.view._diffs_columns is not None
    other.view._diffs_columns["testapp.question"] = frozenset({"votes"})
    outputs, memo = render_together([one, other], page)
    assert b"hidden from one" in outputs[0]
    assert b"hidden from one" not in outputs[1]
    assert len(memo.entries) == 2


def test_a_stream_closed_from_another_task_lets_its_watch_go():
    """The loop closes an abandoned stream's generator in a task of its own, whose
    context is not the one the watch was kept in: the watch is let go all the same."""

    async def stream():
        async with live.watching():
            await Question.diffs.asince(None, wait=0.05)
            yield "first page"
            yield "never sent"

    async def abandon() -> int:
        events = stream()
        await events.__anext__()
        kept = live.waiting_readers()
        await asyncio.ensure_future(events.aclose())
        return kept

    assert asyncio.run(abandon()) == 1
    assert live.waiting_readers() == 0


def test_entries_of_copies_a_hook_made_are_not_shared():
    """A visible_diffs() that hands back copies: a copy freed after one stream renders
    may give its id to the next stream's copy, of a row that user may not see."""
    import copy

    class Copying(QuestionViewSet):
        def visible_diffs(self, diffs: list[Any]) -> list[Any]:
            return [copy.copy(d) for d in super().visible_diffs(diffs)]

    Question.objects.create(question_text="copied")
    page = Question.diffs.since(None)
    streams = [stream_for(Copying) for _ in range(3)]
    render_together(streams, page)
    outputs, memo = render_together(streams, page)
    assert memo.entries == {}
    assert all(b'"copied"' in output for output in outputs)


def test_an_overridden_diffs_entries_renders_for_every_stream():
    class Stamped(QuestionViewSet):
        def diffs_entries(self, diffs: list[Any]) -> list[dict[str, Any]]:
            entries = super().diffs_entries(diffs)
            for entry in entries:
                entry["for"] = id(self)  # would change a shared entry for everyone
            return entries

    Question.objects.create(question_text="stamped")
    page = Question.diffs.since(None)
    streams = [stream_for(Stamped) for _ in range(2)]
    render_together(streams, page)
    outputs, memo = render_together(streams, page)
    assert memo.entries == {}
    for stream, output in zip(streams, outputs, strict=True):
        assert f'"for": {id(stream.view)}'.encode() in output


def test_a_batch_whose_database_fails_settles_every_stream(monkeypatch):
    from django.db import OperationalError

    from diffs.contrib import events

    def failing() -> None:
        raise OperationalError("the database went away")

    monkeypatch.setattr(events, "close_old_connections", failing)
    Question.objects.create(question_text="never rendered")
    page = Question.diffs.since(None)

    async def render() -> list[Any]:
        loop = asyncio.get_running_loop()
        batch = events._Batch(page)
        futures = [loop.create_future() for _ in range(3)]
        batch.jobs = [(stream_for(QuestionViewSet), f) for f in futures]
        await loop.run_in_executor(None, events._run_batch, loop, batch)
        return await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), LONG_WAIT / 4
        )

    results = asyncio.run(render())
    assert all(isinstance(result, OperationalError) for result in results)


def test_a_stream_of_an_object_and_of_its_model_keep_watches_of_their_own():
    """Both wait on the model's feed, but what a read of one covered says nothing of
    the other: each keeps its own watch."""
    question = Question.objects.create(question_text="one")

    async def both() -> tuple[Any, int]:
        async with live.watching():
            await Question.diffs.asince(None, wait=0.05)
            page = await Question.diffs.aobject_since(question.pk, None, wait=0.05)
            return page, live.waiting_readers()

    page, watching = asyncio.run(both())
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["one"]
    assert watching == 2
    assert live.waiting_readers() == 0
