"""The diffs waiting in memory are bounded in bytes, and their loss is counted right.

The retry buffer holds at most ``retry_buffer_size`` diffs and ``queue_bytes``; with
``write_behind``, a saving thread that finds more than ``queue_bytes`` waiting writes
itself, so a slow Redis slows the saves instead of filling memory. Diffs dropped after
a write that timed out (and may have reached Redis) are reported lost only once Redis
answers and does not have them.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time

import pytest
import redis
from django.db import transaction

import diffs
from diffs import availability, delivery
from diffs.delivery import queue, store
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings, unreachable_url
from tests.test_fault_injection import FaultyRedis
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)

KIB = 1024
PK = re.compile(r"testapp\.article pk=(\d+)")


def lost_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lost")]


def test_the_retry_buffer_is_bounded_in_bytes(caplog):
    settings = diffs_settings(
        url=unreachable_url(),
        test_mode=False,
        socket_timeout=0.5,
        queue_bytes=100 * KIB,
        max_diff_bytes=64 * KIB,
    )
    with settings, caplog.at_level(logging.WARNING, logger="diffs"), transaction.atomic():
        for n in range(10):
            Article.objects.create(title=f"a{n}", body="x" * 30 * KIB)
    assert queue._queue.bytes <= 100 * KIB
    assert 1 <= delivery.waiting() <= 3
    [lost] = lost_lines(caplog)
    assert lost.startswith(f"Lost {10 - delivery.waiting()} diff(s)")


def test_a_slow_write_behind_write_does_not_let_the_queue_grow_past_its_budget(monkeypatch):
    budget = 60 * KIB
    largest = 0
    real_enqueue, real_write = queue.enqueue, store.write_many

    def measuring_enqueue(items):
        nonlocal largest
        real_enqueue(items)
        largest = max(largest, queue._queue.bytes)

    def slow_write(client, writes, **kwargs):
        time.sleep(0.2)  # Redis is slow: every write takes a while
        return real_write(client, writes, **kwargs)

    monkeypatch.setattr(queue, "enqueue", measuring_enqueue)
    monkeypatch.setattr(store, "write_many", slow_write)
    with diffs_settings(write_behind=True, queue_bytes=budget, max_diff_bytes=budget):
        for n in range(40):
            Article.objects.create(title=f"a{n}", body="y" * 5 * KIB)
        queue.write_queued()
        seen = []
        cursor = None
        for _ in range(10):
            page = Article.diffs.since(cursor, limit=1000)
            seen += page.diffs
            cursor = page.cursor
            if not page.has_more:
                break
    one_diff = 6 * KIB + 1024
    assert largest <= budget + one_diff, f"{largest} bytes waited, budget {budget}"
    assert len(seen) == 40


@pytest.fixture
def faulty(monkeypatch):
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.0)
    with tempfile.TemporaryDirectory(prefix="diffs-lost-") as workdir:
        server = FaultyRedis(workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()
            clear_settings_cache()
            diffs.reset_connection()
            delivery.clear()


def saves_while_redis_is_paused(count: int) -> list[Article]:
    return [Article.objects.create(title=f"t{n}") for n in range(count)]


def test_diffs_a_timed_out_write_stored_are_not_reported_lost(faulty, caplog):
    admin = redis.Redis(port=faulty.port, db=1)
    with diffs_settings(url=faulty.url, test_mode=False, socket_timeout=0.2, retry_buffer_size=2):
        clear_settings_cache()
        diffs.reset_connection()
        Article.objects.create(title="warm-up")  # connected before Redis stalls
        # Redis stalls for a second: a write sent meanwhile times out here, yet Redis
        # runs it once it wakes up.
        sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", 1))
        sleeper.start()
        time.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="diffs"):
            stalled = saves_while_redis_is_paused(3)  # the oldest is dropped from memory
            sleeper.join(timeout=10)
            Article.objects.create(title="after")  # Redis answers: the dropped are checked
        stored = {d.pk for d in Article.diffs.since(None, limit=100).diffs}
        named_lost = {int(pk) for line in lost_lines(caplog) for pk in PK.findall(line)}
        assert stalled[0].pk in stored, "the write that timed out did reach Redis"
        assert stalled[0].pk not in named_lost
        assert named_lost == {a.pk for a in stalled} - stored
        assert delivery.waiting() == 0


def test_diffs_a_timed_out_write_never_stored_are_reported_lost_once_redis_answers(faulty, caplog):
    with diffs_settings(url=faulty.url, test_mode=False, socket_timeout=0.2, retry_buffer_size=2):
        clear_settings_cache()
        diffs.reset_connection()
        Article.objects.create(title="warm-up")
        faulty.pause()  # SIGSTOP: writes time out and never run
        with caplog.at_level(logging.WARNING, logger="diffs"):
            first, *_ = saves_while_redis_is_paused(3)
            assert lost_lines(caplog) == []  # not yet known
            faulty.process.kill()  # SIGKILL while stopped: what it was sent dies with it
            faulty.process.wait(timeout=10)
            faulty.process = None
            faulty.start()  # its append-only file brings back what it had run
            Article.objects.create(title="after")
        [lost] = lost_lines(caplog)
        # The two dropped from memory (the buffer holds 2) were never run by Redis.
        assert lost.startswith("Lost 2 diff(s)")
        assert f"testapp.article pk={first.pk}," in lost
