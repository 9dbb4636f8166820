"""``write_behind``: saves queue, a background thread writes, reads see their own diffs."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from diffs import availability, delivery
from diffs.delivery import exit_hooks, queue, store
from diffs.layout import current_layout
from diffs.settings import build_settings, find_problems
from tests.conftest import diffs_settings
from tests.support.stored import stored_count, stored_members
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 10.0  # seconds: generous bounds for the background thread, never reached


@pytest.fixture
def write_behind():
    with diffs_settings(write_behind=True):
        yield
    queue.write_queued(force=True)


@pytest.fixture
def writes(monkeypatch):
    """Records each write_many() call (its diff count); ``gate`` holds writes while clear."""
    calls: list[int] = []
    gate = threading.Event()
    gate.set()
    real = store.write_many

    def recording(client, batch, *args, **kwargs):
        calls.append(len(batch))
        assert gate.wait(WAIT)
        return real(client, batch, *args, **kwargs)

    monkeypatch.setattr(store, "write_many", recording)
    yield calls, gate
    gate.set()


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the write-behind thread did not get there"
        time.sleep(0.005)


def stored_texts(redis_client, question) -> list[str]:
    import json

    key = Question.diffs.get_key(question.pk)
    members = stored_members(redis_client, key)
    return [json.loads(m)["data"][0]["fields"]["question_text"] for m in members]


def test_save_returns_before_redis_is_written(write_behind, writes, redis_client):
    calls, gate = writes
    gate.clear()  # Redis "takes its time"

    question = Question.objects.create(question_text="one")

    wait_until(lambda: calls == [1])  # the thread is writing, the save has returned
    assert stored_count(redis_client, Question.diffs.get_key(question.pk)) == 0
    gate.set()
    wait_until(lambda: stored_count(redis_client, Question.diffs.get_key(question.pk)) == 1)


def test_diffs_committed_during_a_write_go_together_in_the_next(
    write_behind, writes, redis_client
):
    calls, gate = writes
    gate.clear()
    question = Question.objects.create(question_text="t0")
    wait_until(lambda: calls == [1])
    for n in range(1, 21):  # twenty transactions while the first write is in flight
        with transaction.atomic():
            question.question_text = f"t{n}"
            question.save()
    gate.set()

    wait_until(lambda: sum(calls) == 21)
    assert calls == [1, 20]
    # A call is counted as it starts: wait for the second to have written.
    wait_until(lambda: len(stored_texts(redis_client, question)) == 21)
    assert stored_texts(redis_client, question) == [f"t{n}" for n in range(21)]


def test_a_process_reads_its_own_diffs_at_once(write_behind, writes):
    question = Question.objects.create(question_text="t0")
    for n in range(1, 30):
        question.question_text = f"t{n}"
        question.save()
    texts = [d.data[0]["fields"]["question_text"] for d in question.diffs]
    assert texts == [f"t{n}" for n in range(30)]
    assert len(Question.diffs.get_sortedset(question.pk)) == 30
    assert len(Question.diffs.since(None, limit=100).diffs) == 30
    assert delivery.waiting() == 0


def test_a_failed_background_write_is_retried_in_order(
    write_behind, monkeypatch, redis_client, caplog
):
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.05)
    real = store.write_many
    failures = [redis.ConnectionError("Redis went away")]

    def failing_once(client, batch, *args, **kwargs):
        if failures:
            raise failures.pop()
        return real(client, batch, *args, **kwargs)

    monkeypatch.setattr(store, "write_many", failing_once)
    with caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="t0")  # never raises
        question.question_text = "t1"
        question.save()

        wait_until(lambda: len(stored_texts(redis_client, question)) == 2)

    assert stored_texts(redis_client, question) == ["t0", "t1"]
    assert any("Could not write" in r.getMessage() for r in caplog.records)


def test_saves_without_write_behind_still_write_before_returning(writes, redis_client):
    calls, _ = writes
    question = Question.objects.create(question_text="one")
    assert calls == [1]
    assert stored_count(redis_client, Question.diffs.get_key(question.pk)) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_the_parents_queue(write_behind, writes):
    calls, gate = writes
    gate.clear()
    Question.objects.create(question_text="in flight")
    wait_until(lambda: calls == [1])
    Question.objects.create(question_text="queued")
    assert delivery.waiting() == 1

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os._exit(0 if delivery.waiting() == 0 else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert delivery.waiting() == 1  # the parent still writes it
    gate.set()
    wait_until(lambda: sum(calls) == 2)


@pytest.mark.parametrize(
    ("raw", "check_id"),
    [
        ({"write_behind": "yes"}, "diffs.E022"),
        ({"write_behind": True, "on_redis_error": "raise"}, "diffs.E023"),
        ({"write_behind": True, "durable": True}, "diffs.E023"),
    ],
)
def test_write_behind_settings_are_checked(raw, check_id):
    problems = find_problems(raw)
    assert [p.check_id for p in problems] == [check_id]
    assert "write_behind" in problems[0].msg
    with pytest.raises(ImproperlyConfigured, match=check_id):
        build_settings(raw)


def test_write_behind_is_off_by_default():
    assert build_settings({}).write_behind is False
    assert build_settings({"write_behind": True}).write_behind is True


def test_create_comes_after_the_diffs_the_process_already_saved(write_behind):
    question = Question.objects.create(question_text="saved first")
    Question.diffs.create(data={"by": "create"}, pk=question.pk)
    read = question.diffs
    assert [d.data for d in read][1] == {"by": "create"}
    assert read[0].data[0]["fields"]["question_text"] == "saved first"


@pytest.fixture
def writer_held(monkeypatch):
    """Holds the write-behind thread's sends (only its own) until ``gate`` is set."""
    gate, in_flight = threading.Event(), threading.Event()
    real_send = queue.write_batch

    def held(batch):
        if threading.current_thread().name == "diffs-write-behind":
            in_flight.set()
            assert gate.wait(WAIT)
        return real_send(batch)

    monkeypatch.setattr(queue, "write_batch", held)
    yield gate, in_flight
    gate.set()


def test_a_read_waits_for_the_write_the_thread_has_in_flight(write_behind, writer_held):
    gate, in_flight = writer_held
    question = Question.objects.create(question_text="t0")
    assert in_flight.wait(WAIT)  # out of the queue, not yet in Redis
    threading.Timer(0.2, gate.set).start()

    assert [d.data[0]["fields"]["question_text"] for d in question.diffs] == ["t0"]


def test_create_comes_after_a_diff_the_thread_has_in_flight(write_behind, writer_held):
    gate, in_flight = writer_held
    question = Question.objects.create(question_text="saved first")
    assert in_flight.wait(WAIT)
    threading.Timer(0.2, gate.set).start()

    Question.diffs.create(data={"by": "create"}, pk=question.pk)

    read = question.diffs
    assert read[0].data[0]["fields"]["question_text"] == "saved first"
    assert read[1].data == {"by": "create"}


def test_exit_waits_for_the_write_the_thread_has_in_flight(
    write_behind, writer_held, redis_client
):
    gate, in_flight = writer_held
    question = Question.objects.create(question_text="t0")
    assert in_flight.wait(WAIT)
    threading.Timer(0.2, gate.set).start()

    exit_hooks.at_exit()

    assert stored_count(redis_client, Question.diffs.get_key(question.pk)) == 1


def test_a_batch_a_reader_failed_to_write_is_retried_by_the_thread(
    write_behind, monkeypatch, redis_client
):
    # The thread is idle (nothing queued, nothing to wake it) when a read's flush fails
    # and puts its batch back: the failure itself must wake the thread to retry.
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.05)
    first = Question.objects.create(question_text="first")
    wait_until(lambda: stored_count(redis_client, Question.diffs.get_key(first.pk)) == 1)
    wait_until(lambda: not queue._queue.send_lock.locked())
    question = Question.objects.create(question_text="t0")
    queue.write_queued(force=True)
    time.sleep(0.1)  # the thread wakes for t0, finds the queue empty, and idles
    key = Question.diffs.get_key(question.pk)
    redis_client.delete(key)
    [item] = _diffs_of(question)
    real_send, failed = queue.write_batch, []

    def send_failing_once(batch):
        if not failed:
            failed.append(True)
            raise redis.ConnectionError("a blip")
        return real_send(batch)

    monkeypatch.setattr(queue, "write_batch", send_failing_once)
    queue.enqueue([item])  # queued without waking the thread
    delivery.write_before_read()
    assert failed and delivery.waiting() == 1

    wait_until(lambda: stored_count(redis_client, key) == 1)


def _diffs_of(question):
    from diffs.clock import now_ms
    from diffs.payload import build_diff

    diff = build_diff(question, {"question_text": "x"}, layout=current_layout(), created=False)
    diff.committed_ms = now_ms()
    return [diff]
