"""Long-poll: since(..., wait=) returns at the next diff, or after wait with a fresh cursor."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from django.db import connections

from diffs import live, steps
from diffs.connection import get_connection
from diffs.cursors import decode_cursor
from tests.conftest import diffs_settings
from tests.testapp.models import Memo, Question

pytestmark = pytest.mark.django_db(transaction=True)

#: Far longer than any wake-up takes: a test that waits this long has failed.
LONG_WAIT = 20.0


def save_later(delay: float, text: str) -> threading.Thread:
    def save():
        time.sleep(delay)
        try:
            Question.objects.create(question_text=text)
        finally:
            connections.close_all()

    thread = threading.Thread(target=save)
    thread.start()
    return thread


def wait_until_listening(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    # Subscribed with the client of this test (one of an earlier test resubscribes).
    while not (live._listener.subscribed.is_set() and live._listener.client is get_connection()):
        assert time.monotonic() < deadline, "the listener did not subscribe"
        time.sleep(0.01)


async def until_all_sleep(count: int) -> None:
    """Until ``count`` async readers sleep (their first read done), not just registered:
    a write during a first read is found by it, and that reader shares nothing."""
    deadline = time.monotonic() + LONG_WAIT / 2
    while True:
        with live._listener.lock:
            waiters = {w for watching in live._listener.waiters.values() for w in watching}
        if sum(w.pending is not None for w in waiters) >= count:
            return
        assert time.monotonic() < deadline, "the readers did not settle into waiting"
        await asyncio.sleep(0.01)


def test_since_with_wait_returns_as_soon_as_a_diff_is_written():
    cursor = Question.diffs.since().cursor
    writer = save_later(0.3, "news")
    started = time.monotonic()
    page = Question.diffs.since(cursor, wait=LONG_WAIT)
    elapsed = time.monotonic() - started
    writer.join()
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["news"]
    assert elapsed < LONG_WAIT / 2


def test_since_with_wait_returns_at_once_when_diffs_are_there():
    Question.objects.create(question_text="already")
    started = time.monotonic()
    page = Question.diffs.since(wait=LONG_WAIT)
    assert len(page.diffs) == 1
    assert time.monotonic() - started < LONG_WAIT / 2


def test_an_empty_wait_ends_with_an_empty_page_and_a_fresh_cursor():
    cursor = Question.diffs.since().cursor
    time.sleep(0.01)
    started = time.monotonic()
    page = Question.diffs.since(cursor, wait=0.4)
    assert time.monotonic() - started >= 0.4
    assert page.diffs == [] and not page.has_more
    # Read after the wait ran out: the cursor moved on by about the wait.
    assert decode_cursor(page.cursor) - decode_cursor(cursor) >= 350
    Question.objects.create(question_text="later")
    assert len(Question.diffs.since(page.cursor).diffs) == 1


def test_a_diff_of_another_model_does_not_end_the_wait():
    cursor = Question.diffs.since().cursor
    Memo.objects.create(title="elsewhere")
    page = Question.diffs.since(cursor, wait=0.3)
    assert page.diffs == []
    assert len(Memo.diffs.since(wait=0.3).diffs) == 1


def test_object_since_waits_for_the_objects_model():
    question = Question.objects.create(question_text="a")
    cursor = Question.diffs.object_since(question.pk).cursor

    def edit():
        time.sleep(0.3)
        try:
            Question.objects.filter(pk=question.pk).update(question_text="b")
        finally:
            connections.close_all()

    thread = threading.Thread(target=edit)
    thread.start()
    page = Question.diffs.object_since(question.pk, cursor, wait=LONG_WAIT)
    thread.join()
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["b"]


def test_asince_with_wait_waits_on_the_event_loop():
    cursor = Question.diffs.since().cursor

    async def wait_and_tick():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(ticker())
        writer = save_later(0.3, "async news")
        page = await Question.diffs.asince(cursor, wait=LONG_WAIT)
        ticking.cancel()
        await asyncio.to_thread(writer.join)
        return page, ticks

    started = time.monotonic()
    # A full collection of the suite's heap can stall every thread for a few hundred
    # milliseconds (seen once, late in a cluster run): that is not the read blocking.
    gc.disable()
    try:
        page, ticks = asyncio.run(wait_and_tick())
    finally:
        gc.enable()
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["async news"]
    assert time.monotonic() - started < LONG_WAIT / 2
    assert ticks >= 10, "the loop was blocked while the read waited"


def test_waiting_readers_do_not_poll_redis(monkeypatch):
    """A reader waiting with nothing to read reads once, then once after the wait."""
    cursor = Question.diffs.since().cursor
    Question.diffs.since(cursor, wait=0.05)  # starts the listener
    wait_until_listening()
    reads_made = []
    real_run = steps.run

    def counting_run(client, read_steps):
        reads_made.append(time.monotonic())
        return real_run(client, read_steps)

    monkeypatch.setattr("diffs.managers.run", counting_run)
    Question.diffs.since(cursor, wait=1.5)
    assert len(reads_made) == 2


def test_many_waiting_readers_share_one_listener_and_all_wake():
    cursor = Question.diffs.since().cursor

    async def many():
        readers = [
            asyncio.ensure_future(Question.diffs.asince(cursor, wait=LONG_WAIT)) for _ in range(50)
        ]
        while live.waiting_readers() < 50:
            await asyncio.sleep(0.01)
        listeners = [t for t in threading.enumerate() if t.name == "diffs-live"]
        writer = save_later(0.0, "for everyone")
        pages = await asyncio.gather(*readers)
        await asyncio.to_thread(writer.join)
        return pages, listeners

    started = time.monotonic()
    pages, listeners = asyncio.run(many())
    assert len(listeners) == 1
    assert all(len(page.diffs) == 1 for page in pages)
    assert time.monotonic() - started < LONG_WAIT / 2
    assert live.waiting_readers() == 0


def test_a_reader_still_gets_the_diff_when_the_listener_cannot_subscribe(monkeypatch):
    """Without the subscription (Redis refused it), waiting readers read again every
    FALLBACK_SECONDS: later, but nothing is missed."""
    monkeypatch.setattr(live, "FALLBACK_SECONDS", 0.2)

    def refuse(self):
        raise ConnectionError("no pub/sub here")

    monkeypatch.setattr(live._Listener, "_listen", refuse)
    live._listener.subscribed.clear()
    cursor = Question.diffs.since().cursor
    writer = save_later(0.3, "seen anyway")
    page = Question.diffs.since(cursor, wait=LONG_WAIT)
    writer.join()
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["seen anyway"]


@pytest.mark.parametrize("wait", [-1, float("nan"), float("inf"), "5", True])
def test_a_bad_wait_is_refused(wait):
    with pytest.raises(ValueError, match="wait must be"):
        Question.diffs.since(wait=wait)
    with pytest.raises(ValueError, match="wait must be"):
        asyncio.run(Question.diffs.asince(wait=wait))


def test_async_readers_waiting_with_one_cursor_share_one_read(monkeypatch):
    from diffs import managers

    cursor = Question.diffs.since().cursor
    reads_made = []
    real_arun = managers.arun

    async def counting_arun(client, read_steps):
        reads_made.append(time.monotonic())
        return await real_arun(client, read_steps)

    monkeypatch.setattr(managers, "arun", counting_arun)

    async def many():
        readers = [
            asyncio.ensure_future(Question.diffs.asince(cursor, wait=LONG_WAIT)) for _ in range(20)
        ]
        await until_all_sleep(20)
        before = len(reads_made)
        writer = save_later(0.0, "shared")
        pages = await asyncio.gather(*readers)
        await asyncio.to_thread(writer.join)
        return pages, len(reads_made) - before

    pages, woken_reads = asyncio.run(many())
    assert all(len(page.diffs) == 1 for page in pages)
    assert len({id(page) for page in pages}) == 1, "each reader read on its own"
    assert woken_reads <= 2


def test_past_max_waiting_threads_a_long_poll_answers_at_once():
    cursor = Question.diffs.since().cursor
    with diffs_settings(max_waiting_threads=1):
        holder = threading.Thread(target=lambda: Question.diffs.since(cursor, wait=1.0))
        holder.start()
        time.sleep(0.2)  # the holder waits in the one slot
        started = time.monotonic()
        page = Question.diffs.since(cursor, wait=LONG_WAIT)
        assert time.monotonic() - started < 0.5
        assert page.diffs == []
        holder.join()
        started = time.monotonic()
        Question.diffs.since(cursor, wait=0.3)  # the slot is free again: it waits
        assert time.monotonic() - started >= 0.3


def test_a_wait_of_zero_reads_once_without_listening(monkeypatch):
    monkeypatch.setattr(live._Listener, "add", lambda self, waiter: 1 / 0)
    assert Question.diffs.since(wait=0).diffs == []
    assert asyncio.run(Question.diffs.asince(wait=0)).diffs == []


def test_a_subscription_that_goes_silent_is_made_again(monkeypatch):
    """A connection that died without a word (no pong) is replaced, not trusted."""
    import redis.client

    monkeypatch.setattr(live, "_PING_SECONDS", 0.1)
    monkeypatch.setattr(redis.client.PubSub, "ping", lambda self, message=None: None)
    listens = []
    real_listen = live._Listener._listen

    def counting_listen(self):
        listens.append(time.monotonic())
        return real_listen(self)

    monkeypatch.setattr(live._Listener, "_listen", counting_listen)
    cursor = Question.diffs.since().cursor
    deadline = time.monotonic() + 2.5
    # Waits until the deadline, whatever another test's late write ends a wait with.
    while time.monotonic() < deadline and len(listens) < 2:
        left = max(0.01, deadline - time.monotonic())
        cursor = Question.diffs.since(cursor, wait=left).cursor
    assert len(listens) >= 2, "the silent subscription was kept"
