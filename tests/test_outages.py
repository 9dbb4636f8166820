"""Redis failures at commit time: the retry queue, on_redis_error, timeouts, batching."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

import diffs
from diffs import availability, delivery
from diffs.delivery import OutgoingDiff, exit_hooks, store
from tests.conftest import diffs_settings, unreachable_url
from tests.support.keynames import feed_key
from tests.test_feed import count_round_trips
from tests.testapp.models import Choice, Question

pytestmark = pytest.mark.django_db(transaction=True)


def unreachable(**changes: object):
    """Settings pointing at a port nothing listens on (connection refused at once); a
    cluster URL when the suite runs on a cluster, so the keys keep the cluster's layout."""
    return diffs_settings(url=unreachable_url(), test_mode=False, socket_timeout=0.5, **changes)


def texts(question: Question) -> list[str]:
    return [d.data[0]["fields"]["question_text"] for d in question.diffs]


@pytest.fixture
def no_pause(monkeypatch):
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.0)


def test_diffs_wait_in_memory_and_the_next_write_delivers_them_in_order(no_pause, caplog):
    with unreachable(), caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="one")
        for text in ("two", "three"):
            question.question_text = text
            question.save()
    assert delivery.waiting() == 3
    assert question.diffs == []
    assert all(f"testapp.question pk={question.pk}" in r.getMessage() for r in caplog.records)
    # The hint names what can write them: this process, not manage.py flush_diffs.
    assert all("diffs.flush_diffs() called in it" in r.getMessage() for r in caplog.records)
    assert all("cannot reach them" in r.getMessage() for r in caplog.records)
    question.question_text = "four"
    question.save()  # Redis answers again: the waiting diffs go first
    assert delivery.waiting() == 0
    assert texts(question) == ["one", "two", "three", "four"]


def test_late_diffs_keep_their_commit_time_and_cursors_still_see_each_once(no_pause):
    before = time.time() * 1000
    with unreachable():
        question = Question.objects.create(question_text="during the outage")
    after = time.time() * 1000
    time.sleep(0.05)
    report = diffs.flush_diffs()
    assert (report.from_memory, report.waiting) == (1, 0)
    [diff] = question.diffs
    assert before - 1 <= diff.timestamp <= after + 1  # the commit time, not the arrival
    assert float(diff.cursor) > diff.timestamp  # ordered by arrival
    page = Question.diffs.since()
    assert [d.id for d in page.diffs] == [diff.id]


def test_a_failed_flush_pauses_regular_writes_but_not_flush_diffs():
    with unreachable():
        Question.objects.create(question_text="a")
    # Leaving the settings built a new client, which is tried at once; the pause the
    # failure started is what this test is about, so it is on again here.
    availability.trip()
    Question.objects.create(question_text="b")  # within the pause: only queued
    assert delivery.waiting() == 2
    assert diffs.flush_diffs().from_memory == 2
    assert Question.objects.count() == 2
    assert delivery.waiting() == 0


def test_log_mode_drops_and_says_so(caplog):
    with unreachable(on_redis_error="log"), caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="dropped")
    assert delivery.waiting() == 0
    assert "the diffs are dropped (on_redis_error='log')" in caplog.records[0].getMessage()
    assert diffs.flush_diffs().from_memory == 0
    assert question.diffs == []


def test_raise_mode_raises_after_the_commit():
    with unreachable(on_redis_error="raise"):
        with pytest.raises(diffs.DiffsWriteError, match=r"testapp\.question pk="):
            Question.objects.create(question_text="autocommit")
        with pytest.raises(diffs.DiffsWriteError, match="ConnectionError"), transaction.atomic():
            Question.objects.create(question_text="in a transaction")
    assert Question.objects.count() == 2  # both committed
    assert delivery.waiting() == 0


def test_a_full_buffer_drops_the_oldest_and_counts_them(caplog):
    logs = caplog.at_level(logging.ERROR, logger="diffs")
    with unreachable(retry_buffer_size=3), logs, transaction.atomic():
        questions = [Question.objects.create(question_text=str(i)) for i in range(5)]
    assert delivery.waiting() == 3
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lost")]
    assert len(lost) == 1
    assert lost[0].startswith("Lost 2 diff(s)")
    assert f"testapp.question pk={questions[0].pk}" in lost[0]
    diffs.flush_diffs()
    assert [len(q.diffs) for q in questions] == [0, 0, 1, 1, 1]


def test_a_hung_redis_costs_one_socket_timeout_not_a_hang(caplog):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    port = listener.getsockname()[1]
    try:
        url = f"redis://127.0.0.1:{port}/1"
        with diffs_settings(url=url, test_mode=False, socket_timeout=0.3):
            client = diffs.get_connection()
            assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.3
            started = time.monotonic()
            Question.objects.create(question_text="hung")
            elapsed = time.monotonic() - started
    finally:
        listener.close()
    # One timeout and one immediate retry at most, not redis-py's backoff schedule.
    assert elapsed < 2.5
    assert delivery.waiting() == 1


def test_socket_timeout_in_redis_options_wins():
    with diffs_settings(url="redis://127.0.0.1:1/1", test_mode=False, redis={"socket_timeout": 7}):
        kwargs = diffs.get_connection().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 7
    assert kwargs["socket_connect_timeout"] == 1.0


def test_a_transaction_reaches_redis_in_one_round_trip(monkeypatch):
    calls = []
    original = store.write_many

    def counting(client, writes):
        calls.append(len(writes))
        return original(client, writes)

    monkeypatch.setattr(store, "write_many", counting)
    Question.diffs.create(data={}, pk=0)  # the write script is loaded before counting
    calls.clear()
    trips = count_round_trips(monkeypatch)
    with transaction.atomic():
        question = Question.objects.create(question_text="q")
        for i in range(20):
            Choice.objects.create(question=question, choice_text=str(i))
        with transaction.atomic():
            question.question_text = "inner"
            question.save()
        transaction.on_commit(lambda: None)  # a user's callback in between
        question.question_text = "last"
        question.save()
    assert calls == [23]
    assert trips["n"] == 1  # commands and pipelines sent to Redis, all the block long
    assert len(question.diffs) == 23


def test_a_rolled_back_last_savepoint_keeps_the_flush(monkeypatch):
    with transaction.atomic():
        question = Question.objects.create(question_text="kept")
        try:
            with transaction.atomic():
                question.question_text = "rolled back"
                question.save()
                raise RuntimeError
        except RuntimeError:
            pass
    assert texts(question) == ["kept"]
    assert delivery.waiting() == 0


def test_a_callback_that_saves_during_commit_keeps_the_order():
    question = Question.objects.create(question_text="one")

    def save_again() -> None:
        question.question_text = "three"
        question.save()

    with transaction.atomic():
        question.question_text = "two"
        question.save()
        transaction.on_commit(save_again)
    assert texts(question) == ["one", "two", "three"]


def test_a_raising_user_callback_leaves_the_diffs_before_it_queued():
    def broken() -> None:
        raise RuntimeError("a user callback")

    with pytest.raises(RuntimeError), transaction.atomic():
        first = Question.objects.create(question_text="queued")
        transaction.on_commit(broken)  # not robust: Django stops running callbacks here
        second = Question.objects.create(question_text="never queued")
    assert delivery.waiting() == 1  # the flush after it did not run
    Question.objects.create(question_text="next")  # the next write delivers it
    assert texts(first) == ["queued"]
    # Django never ran the callbacks after the failing one: without durable mode the
    # second diff is gone (see the README's Guarantees, and test_durable.py).
    assert second.diffs == []


def test_writes_are_idempotent(redis_client):
    question = Question.objects.create(question_text="x")
    [diff] = question.diffs
    outgoing = OutgoingDiff(
        key=Question.diffs.get_key(question.pk),
        member=json.dumps({"id": diff.id, "created": True, "data": diff.data}),
        feed_key=feed_key("testapp.question"),
        feed_member=f"{diff.id}{question.pk}",
        score=None,
        label="testapp.question",
        object_pk=str(question.pk),
        committed_ms=time.time() * 1000,
        late=True,
    )
    now = time.time() * 1000
    store.write_many(redis_client, [outgoing.as_written(now), outgoing.as_written(now)])
    assert len(question.diffs) == 1


def test_threads_share_the_queue_and_keep_every_diff(no_pause):
    with unreachable():
        question = Question.objects.create(question_text="start")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        from django.db import connection

        try:
            for i in range(10):
                Choice.objects.create(question_id=question.pk, choice_text=f"{n}-{i}")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    if question._state.db == "default" and _sqlite_memory():
        pytest.skip("threads cannot share an in-memory SQLite database")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    diffs.flush_diffs()
    assert len(question.diffs) == 31
    assert len({d.id for d in question.diffs}) == 31


def _sqlite_memory() -> bool:
    from django.db import connection

    return connection.vendor == "sqlite"


@pytest.mark.django_db(transaction=True, databases="__all__")  # the command reads every outbox
def test_flush_diffs_command(no_pause, capsys):
    with unreachable():
        Question.objects.create(question_text="waiting")
        with pytest.raises(CommandError, match="1 diff\\(s\\) still wait"):
            call_command("flush_diffs")
    call_command("flush_diffs")
    assert "Wrote 1 waiting diff(s) to Redis." in capsys.readouterr().out


def test_oversized_diffs_are_refused_and_the_save_goes_on(caplog):
    with diffs_settings(max_diff_bytes=200), caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="x" * 190)
        question.question_text = "short"
        question.save()
    assert Question.objects.get(pk=question.pk).question_text == "short"
    assert texts(question) == ["short"]
    [record] = caplog.records
    message = record.getMessage()
    assert f"Refused the diff of testapp.question pk={question.pk}" in message
    assert "more than DIFFS_SETTINGS['max_diff_bytes'] (200)" in message
    size = int(message.split("it takes ")[1].split(" bytes")[0])
    assert size > 190


def test_max_diff_bytes_counts_bytes_not_characters(caplog):
    # The member around the text takes about 140 bytes.
    with diffs_settings(max_diff_bytes=500), caplog.at_level(logging.ERROR, logger="diffs"):
        Question.objects.create(question_text="é" * 150)  # 150 characters, 300 bytes
        Question.objects.create(question_text="日" * 150)  # 150 characters, 450 bytes
    assert len(caplog.records) == 1


def test_diffs_waiting_at_exit_get_one_last_try(caplog):
    with unreachable():
        question = Question.objects.create(question_text="waiting")
        with caplog.at_level(logging.ERROR, logger="diffs"):
            exit_hooks.at_exit()  # Redis still down: said out loud
        assert "still waiting for Redis when the process exited" in caplog.records[-1].message
    exit_hooks.at_exit()
    assert texts(question) == ["waiting"]
    exit_hooks.at_exit()  # nothing waiting: nothing to do


def test_the_exit_flush_is_installed():
    import subprocess
    import sys

    # A child process with a diff waiting: the interpreter's exit must flush it.
    script = (
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "django.setup()\n"
        "from diffs.delivery import queue\n"
        "queue.write_queued = lambda force=False: print('flushed', force)\n"
        "queue._queue.items.append(object())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "flushed True" in result.stdout
