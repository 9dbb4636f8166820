"""Async reads: the same pages and errors as the sync reads, on the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from diffs import availability, reads
from diffs.exceptions import CursorExpired, InvalidCursor, RedisUnavailable
from tests.conftest import diffs_settings, unreachable_url
from tests.support.writing import open_horizon, write_at
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)


def summary(page):
    return [(d.id, d.cursor, d.data, d.created) for d in page.diffs], page.has_more


def make_history():
    question = Question.objects.create(question_text="a")
    for text in "bcdef":
        question.question_text = text
        question.save()
    Question.objects.create(question_text="other")
    return question


def test_async_reads_return_what_the_sync_reads_return():
    question = make_history()
    first = Question.diffs.since(limit=3)

    async def read_all():
        return (
            await Question.diffs.aget_by_object_id(question.pk),
            await Question.diffs.aget_by_object_id(question.pk, since=first.diffs[0].cursor),
            await Question.diffs.asince(limit=3),
            await Question.diffs.asince(first.cursor, limit=100),
            await Question.diffs.aobject_since(question.pk, limit=2),
            await Question.diffs.aobject_since(question.pk, first.diffs[1].cursor, limit=100),
        )

    (whole, later, page1, page2, object1, object2) = asyncio.run(read_all())
    assert [d.id for d in whole] == [d.id for d in question.diffs]
    assert [d.data for d in whole] == [d.data for d in question.diffs]
    assert [d.id for d in later] == [
        d.id for d in Question.diffs.get_by_object_id(question.pk, since=first.diffs[0].cursor)
    ]
    assert summary(page1) == summary(first)
    assert page1.cursor == first.cursor
    assert summary(page2) == summary(Question.diffs.since(first.cursor, limit=100))
    assert summary(object1) == summary(Question.diffs.object_since(question.pk, limit=2))
    assert summary(object2) == summary(
        Question.diffs.object_since(question.pk, first.diffs[1].cursor, limit=100)
    )
    assert len(whole) == 6
    assert page2.diffs[-1].data[0]["fields"]["question_text"] == "other"


def test_async_reads_raise_what_the_sync_reads_raise():
    question = Question.objects.create(question_text="a")

    async def expect(error, call):
        with pytest.raises(error) as async_error:
            await call()
        return async_error.value

    async def check():
        await expect(InvalidCursor, lambda: Question.diffs.asince("not a cursor"))
        await expect(InvalidCursor, lambda: Question.diffs.aobject_since(question.pk, "-1"))
        await expect(InvalidCursor, lambda: Question.diffs.aget_by_object_id(question.pk, "x"))
        await expect(ValueError, lambda: Question.diffs.asince(limit=0))
        await expect(ValueError, lambda: Question.diffs.aobject_since(question.pk, limit=1001))
        return await expect(CursorExpired, lambda: Question.diffs.asince("1000.5"))

    expired = asyncio.run(check())
    with pytest.raises(CursorExpired) as sync_expired:
        Question.diffs.since("1000.5")
    assert str(expired) == str(sync_expired.value)
    assert float(expired.restart_cursor) > 1000.5


def test_async_reads_refuse_while_redis_is_paused_and_trip_the_pause_on_an_outage():
    Question.objects.create(question_text="a")
    availability.trip()
    with pytest.raises(RedisUnavailable):
        asyncio.run(Question.diffs.asince())
    availability.reset()
    with diffs_settings(url=unreachable_url(), test_mode=False, socket_timeout=0.5):
        with pytest.raises(RedisUnavailable) as error:
            asyncio.run(Question.diffs.asince())
        assert "the feed of testapp.question" in str(error.value)
        assert availability.remaining() > 0


def test_async_reads_use_the_async_client_on_the_loops_thread(monkeypatch):
    """No sync client and no thread: the Redis I/O is awaited on the event loop."""
    question = Question.objects.create(question_text="a")
    open_horizon(Question)
    write_at(Question, question.pk, [{"note": "fixed"}], 1.0e12)

    def no_sync_client():
        raise AssertionError("an async read used the sync client")

    def no_thread(*args, **kwargs):
        raise AssertionError("an async read hopped to a thread")

    monkeypatch.setattr("diffs.managers.get_connection", no_sync_client)
    monkeypatch.setattr(reads, "sync_to_async", no_thread)
    threads = []

    async def read():
        threads.append(threading.get_ident())
        page = await Question.diffs.aobject_since(question.pk)
        diffs = await Question.diffs.aget_by_object_id(question.pk)
        return page, diffs

    page, diffs = asyncio.run(read())
    assert len(page.diffs) == 1 and len(diffs) == 1
    assert threads and threads[0] == threading.get_ident()  # asyncio.run's loop, this thread


def test_each_event_loop_gets_its_own_client():
    from diffs.async_connection import get_async_connection

    async def client():
        return await get_async_connection()

    async def twice():
        return await get_async_connection() is await get_async_connection()

    assert asyncio.run(twice())
    first, second = asyncio.run(client()), asyncio.run(client())
    assert first is not second


def test_an_async_read_writes_the_processs_waiting_diffs_first_in_a_thread():
    with diffs_settings(delivery="write_behind"):
        question = Question.objects.create(question_text="a")
        # Whether the thread wrote it already or not, the read sees it.
        diffs = asyncio.run(Question.diffs.aget_by_object_id(question.pk))
    assert [d.data[0]["fields"]["question_text"] for d in diffs] == ["a"]


def test_the_clients_of_closed_loops_are_let_go():
    from diffs import async_connection

    Question.objects.create(question_text="a")
    for _ in range(10):
        asyncio.run(Question.diffs.asince())
    assert len(async_connection._clients) <= 1
