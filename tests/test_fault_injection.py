"""Fault injection: a redis-server of the test's own is stopped, restarted and paused
while changes commit, and every committed change must end up in Redis exactly once.

The server keeps an append-only file (fsync on every write), so what it held before a
restart on the same port is still there after it. ``availability.PAUSE_SECONDS`` is set to
0 so the diffs waiting in memory are retried at the very next save; the socket timeout
is short so a paused server costs the test little.

Each committed change is a save that sets ``votes`` to a new number; the diffs read
back must carry exactly those numbers, once each, in commit order.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction

import diffs
from diffs import availability, delivery
from diffs.models import OutboxEntry
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings
from tests.support.redis_server import _wait_for, free_port
from tests.testapp.models import Question

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed"),
]


class FaultyRedis:
    """A redis-server that a test can stop, start again on the same port, and pause."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.workdir,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--enable-debug-command",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, db=1)


@pytest.fixture
def server(monkeypatch) -> Iterator[FaultyRedis]:
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.0)
    with tempfile.TemporaryDirectory(prefix="diffs-faults-") as workdir:
        faulty = FaultyRedis(workdir)
        faulty.start()
        try:
            with diffs_settings(url=faulty.url, test_mode=False, socket_timeout=0.2):
                switch_client()
                yield faulty
        finally:
            faulty.stop()
            switch_client()


def switch_client() -> None:
    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()


def commit_change(question: Question, votes: int) -> float:
    """Commit one change; return how long the save took, commit included."""
    start = time.monotonic()
    with transaction.atomic():
        question.votes = votes
        question.save(update_fields=["votes"])
    return time.monotonic() - start


def assert_exactly_once(question: Question, committed: list[int]) -> None:
    stored = [d.data[0]["fields"]["votes"] for d in question.diffs if not d.created]
    assert stored == committed, "a committed change is missing, repeated or out of order"
    ids = [d.id for d in question.diffs]
    assert len(ids) == len(set(ids))


def failures_logged(caplog) -> int:
    return sum("Could not write" in r.getMessage() for r in caplog.records if r.name == "diffs")


def test_server_stopped_and_restarted_mid_run(server, caplog):
    question = Question.objects.create(question_text="q")
    committed = []
    for n in range(1, 61):
        if n == 20:
            server.stop()
        if n == 40:
            server.start()
        commit_change(question, n)
        committed.append(n)
    report = diffs.flush_diffs()
    assert report.waiting == 0
    assert failures_logged(caplog) == 20  # each save while it was down, and no other
    assert_exactly_once(question, committed)
    # The 20 diffs committed while Redis was down carry their commit time.
    late = [d for d in question.diffs if not d.created][19:39]
    assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(late))


def test_server_restarted_with_its_data_lost_in_between(server):
    """Diffs waiting in memory are not lost with the server's earlier data either."""
    question = Question.objects.create(question_text="q")
    commit_change(question, 1)
    server.stop()
    for n in range(2, 6):
        commit_change(question, n)
    for name in os.listdir(server.workdir):  # the server comes back empty
        shutil.rmtree(os.path.join(server.workdir, name), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.remove(os.path.join(server.workdir, name))
    server.start()
    assert diffs.flush_diffs().waiting == 0
    assert_exactly_once(question, [2, 3, 4, 5])


def test_server_paused_with_sigstop(server, caplog):
    question = Question.objects.create(question_text="q")
    committed, slowest = [], 0.0
    for n in range(1, 31):
        if n == 10:
            server.pause()
        if n == 16:
            server.resume()
        slowest = max(slowest, commit_change(question, n))
        committed.append(n)
    assert diffs.flush_diffs().waiting == 0
    # A save never waits for a hung Redis longer than the socket timeout allows
    # (a connect, a write with one retry): generous bound, no timing precision claimed.
    assert slowest < 5
    assert failures_logged(caplog) >= 1
    # Writes that timed out may still have reached Redis once it woke up: idempotent
    # writes keep them from being stored twice.
    assert_exactly_once(question, committed)


def test_server_busy_in_debug_sleep(server, caplog):
    question = Question.objects.create(question_text="q")
    sleeper = threading.Thread(target=lambda: server.client().execute_command("DEBUG", "SLEEP", 1))
    committed = []
    for n in range(1, 31):
        if n == 10:
            sleeper.start()
            time.sleep(0.05)  # let the DEBUG SLEEP reach the server first
        commit_change(question, n)
        committed.append(n)
    sleeper.join()
    assert diffs.flush_diffs().waiting == 0
    assert failures_logged(caplog) >= 1  # the sleep outlasted the socket timeout
    assert_exactly_once(question, committed)


def test_many_objects_in_one_transaction_survive_a_restart(server):
    questions = [Question.objects.create(question_text=str(i)) for i in range(5)]
    server.stop()
    with transaction.atomic():
        for question in questions:
            question.votes = 7
            question.save()
    server.start()
    assert diffs.flush_diffs().waiting == 0
    for question in questions:
        assert_exactly_once(question, [7])


CRASHING_WRITER = """
import os, signal, sys
import django
django.setup()
from django.conf import settings
from django.db import transaction
import diffs
from diffs.delivery import outbox
from diffs.settings import clear_settings_cache
from tests.testapp.models import Question

url, pk, crash_at, where = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settings.DIFFS_SETTINGS = {"url": url, "durable": True}
clear_settings_cache()

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "before-outbox-delete":
    # Redis has the diff, the outbox row is still there: flush_diffs must not add it twice.
    original = outbox.forget
    def forget(rows):
        if crashing:
            die()
        return original(rows)
    outbox.forget = forget

crashing = False
question = Question.objects.get(pk=pk)
for n in range(1, crash_at + 1):
    crashing = n == crash_at
    with transaction.atomic():
        if crashing and where == "before-redis-write":
            # Registered before the save, so it runs after the commit but before the
            # save's diff is even queued for Redis.
            transaction.on_commit(die)
        question.votes = n
        question.save(update_fields=["votes"])
    print(n, flush=True)
"""


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="a second process shares the test database only on PostgreSQL",
)
@pytest.mark.parametrize("where", ["before-redis-write", "before-outbox-delete"])
@pytest.mark.django_db(transaction=True, databases=["default", "other"])  # flush reads both
def test_durable_process_killed_after_commit(server, where):
    question = Question.objects.create(question_text="q")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "DIFFS_TEST_PG_NAME": connection.settings_dict["NAME"],
    }
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, server.url, str(question.pk), "5", where],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["1", "2", "3", "4"]  # the fifth commit never returned
    question.refresh_from_db()
    assert question.votes == 5, "the fifth change committed before the kill"
    assert OutboxEntry.objects.count() == 1

    with diffs_settings(url=server.url, test_mode=False, durable=True):
        clear_settings_cache()
        first, second = diffs.flush_diffs(), diffs.flush_diffs()
        assert (first.from_outbox, second.from_outbox) == (1, 0)
        assert OutboxEntry.objects.count() == 0
        assert_exactly_once(question, [1, 2, 3, 4, 5])
