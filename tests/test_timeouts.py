"""Timeouts mean what they say: against a hung Redis no call waits longer than
``socket_timeout`` in all, and after a failure reads fail fast, with one exception
type, for the same pause as writes.

The hung Redis is a redis-server of the test's own, stopped with SIGSTOP: it accepts
connections (the kernel does) and never answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

import diffs
from diffs import availability, delivery
from diffs.exceptions import DiffsError, RedisUnavailable
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings
from tests.support.redis_server import redis_server
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 1.0


@contextlib.contextmanager
def hung_redis() -> Iterator[int]:
    """A redis-server that answers nothing (SIGSTOP) while the block runs; yields its pid."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, socket_timeout=TIMEOUT):
            fresh()
            Question.diffs.since(None)  # connected and answering before it hangs
            os.kill(server.pid, signal.SIGSTOP)
            try:
                yield server.pid
            finally:
                os.kill(server.pid, signal.SIGCONT)
                fresh()


def fresh() -> None:
    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()
    availability.reset()


def timed(call) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except BaseException as error:
        return time.monotonic() - start, error
    return time.monotonic() - start, None


@pytest.mark.parametrize(
    "read",
    [
        lambda: Question.diffs.since(None),
        lambda: Question.diffs.get_by_object_id(1),
        lambda: Question.diffs.object_since(1),
        lambda: len(Question.diffs.get_sortedset(1)),
    ],
    ids=["since", "get_by_object_id", "object_since", "sorted set"],
)
def test_a_read_of_a_hung_redis_takes_one_socket_timeout_not_two(read):
    with hung_redis():
        elapsed, error = timed(read)
    assert isinstance(error, RedisUnavailable)
    # redis-py retried timeouts once: 2 x socket_timeout. A margin for a busy machine.
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT * 1.6


def test_a_save_against_a_hung_redis_waits_one_socket_timeout_at_most(caplog):
    with hung_redis():
        elapsed, error = timed(lambda: Question.objects.create(question_text="x"))
    assert error is None  # the save goes on
    assert elapsed < TIMEOUT * 1.6
    assert "Could not write 1 diff(s) to Redis" in caplog.text


def test_after_a_failure_reads_fail_fast_with_one_exception_type_then_try_again():
    with hung_redis() as pid:
        timed(lambda: Question.diffs.since(None))
        elapsed, error = timed(lambda: Question.diffs.get_by_object_id(1))
        assert isinstance(error, RedisUnavailable)
        assert isinstance(error, DiffsError) and isinstance(error, redis.ConnectionError)
        assert elapsed < 0.2
        assert 0 < error.retry_after <= availability.PAUSE_SECONDS
        os.kill(pid, signal.SIGCONT)
        time.sleep(availability.remaining() + 0.05)
        assert Question.diffs.since(None).diffs == []  # tried again, and answered


def test_a_failed_write_starts_the_same_pause_for_reads(caplog):
    with hung_redis():
        Question.objects.create(question_text="x")  # fails after socket_timeout
        elapsed, error = timed(lambda: Question.diffs.since(None))
    assert isinstance(error, RedisUnavailable)
    assert elapsed < 0.2


@contextlib.contextmanager
def hung_primaries(cluster, hung: str):
    """Point django-diffs at ``cluster``; yields (client, stop): ``stop(node)`` SIGSTOPs
    that primary, or every primary; all are resumed when the block ends."""
    stopped: list[int] = []

    def stop(node) -> None:
        own = cluster.pids[cluster.ports.index(int(node.port))]
        stopped.extend([own] if hung == "the model's primary" else cluster.pids)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)

    with diffs_settings(url=cluster.url, test_mode=False, socket_timeout=TIMEOUT):
        fresh()
        try:
            yield diffs.get_connection(), stop
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            fresh()


@pytest.mark.parametrize("hung", ["the model's primary", "every primary"])
def test_a_read_of_a_hung_cluster_takes_one_socket_timeout(hung):
    # redis-py's cluster client asks the other nodes for the layout after a node fails to
    # answer, each within socket_timeout: an entirely hung cluster cost 4 x socket_timeout.
    from tests.support.redis_cluster import redis_cluster

    with redis_cluster(primaries=3) as cluster, hung_primaries(cluster, hung) as (client, stop):
        Question.diffs.since(None)
        stop(client.get_node_from_key(Question.diffs.get_key(1)))
        elapsed, error = timed(lambda: Question.diffs.since(None))
    assert isinstance(error, RedisUnavailable)
    assert elapsed < TIMEOUT * 1.6
