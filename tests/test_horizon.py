"""A client that cannot be served its diffs is told (CursorExpired), never left diverged.

Each case runs against a redis-server of the test's own: Redis losing its data, a
``prune_diffs --max-age`` shorter than ``max_element_age``, and ``max_element_age``
raised after the old window dropped diffs. The next read with an older cursor raises
``CursorExpired``, in this process and in any other.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

import diffs
from diffs import CursorExpired, delivery
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings
from tests.support.redis_server import redis_server
from tests.testapp.models import Question

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def own_redis(**settings: object) -> Iterator[str]:
    """Point django-diffs at a redis-server of the test's own; yields its URL."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, **settings):
            fresh_client()
            try:
                yield url
            finally:
                fresh_client()


def fresh_client() -> None:
    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()


def save(text: str) -> Question:
    return Question.objects.create(question_text=text)


def read_in_another_process(url: str, cursor: str) -> str:
    """What ``Question.diffs.since(cursor)`` gives in a fresh process: "expired" or "ok"."""
    code = (
        "import django; django.setup()\n"
        "from diffs import CursorExpired\n"
        "from tests.testapp.models import Question\n"
        "try:\n"
        f"    Question.diffs.since({cursor!r})\n"
        "except CursorExpired:\n"
        "    print('expired')\n"
        "else:\n"
        "    print('ok')\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DIFFS_TEST_REDIS_URL": url,
        "DIFFS_TEST_DATABASE": "sqlite",
    }
    env.pop("DIFFS_TEST_CLUSTER", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_after_redis_lost_its_data_an_older_cursor_is_expired_everywhere():
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False):
            fresh_client()
            save("a")
            cursor = Question.diffs.since(None).cursor
            assert read_in_another_process(url, cursor) == "ok"
            # A restart without persistence: every key is gone (the test's own server).
            diffs.get_connection().flushdb()
            save("b")  # written after the loss: the client must not take it for all
            with pytest.raises(CursorExpired) as expired:
                Question.diffs.since(cursor)
            assert read_in_another_process(url, cursor) == "expired"
            restart = expired.value.restart_cursor
            assert Question.diffs.since(restart).diffs == []
            fresh_client()


def test_a_read_before_any_write_after_the_loss_is_expired_too():
    with own_redis():
        save("a")
        cursor = Question.diffs.since(None).cursor
        diffs.get_connection().flushdb()
        with pytest.raises(CursorExpired):
            Question.diffs.object_since(1, cursor)
        with pytest.raises(CursorExpired):
            Question.diffs.since(cursor)


def test_prune_with_a_shorter_max_age_expires_the_cursors_it_overtook():
    with own_redis():
        save("a")
        cursor = Question.diffs.since(None).cursor
        time.sleep(0.05)
        missed = save("b")  # the client has not read this one yet
        time.sleep(0.05)
        call_command("prune_diffs", "--max-age", "0.02", stdout=StringIO(), stderr=StringIO())
        assert Question.diffs.get_by_object_id(missed.pk) == []  # pruned away
        with pytest.raises(CursorExpired):
            Question.diffs.since(cursor)
        with pytest.raises(CursorExpired):
            Question.diffs.object_since(missed.pk, cursor)


@pytest.mark.parametrize("reader_first", [True, False])
def test_raising_max_element_age_expires_cursors_older_than_the_old_window(reader_first):
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=1):
            fresh_client()
            save("a")
            cursor = Question.diffs.since(None).cursor
            time.sleep(0.1)
            save("b")
            time.sleep(1.3)
        with diffs_settings(url=url, test_mode=False, max_element_age=3600):
            fresh_client()
            if not reader_first:
                save("c")  # a writer with the new window meets the horizon first
            with pytest.raises(CursorExpired):
                Question.diffs.since(cursor)
            assert read_in_another_process(url, cursor) == "expired"
            fresh_client()


def test_a_cursor_within_an_unchanged_window_is_never_expired_by_the_horizon():
    with own_redis():
        save("a")
        cursor = Question.diffs.since(None).cursor
        call_command("prune_diffs", stdout=StringIO(), stderr=StringIO())
        save("b")
        page = Question.diffs.since(cursor)
        assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["b"]


def test_a_reader_with_a_smaller_window_expires_no_ones_cursor():
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=1000):
            fresh_client()
            save("a")
            cursor = Question.diffs.since(None).cursor
            time.sleep(1.2)
        with diffs_settings(url=url, test_mode=False, max_element_age=1):
            fresh_client()
            Question.diffs.since(None)  # a shell or a worker with a short window reads
        with diffs_settings(url=url, test_mode=False, max_element_age=1000):
            fresh_client()
            save("b")
            assert [
                d.data[0]["fields"]["question_text"] for d in Question.diffs.since(cursor).diffs
            ] == ["b"]
            fresh_client()


def test_reads_without_a_cursor_start_at_the_horizon_after_the_window_was_raised():
    # A diff older than the old window but still stored (its key kept alive by later
    # writes, no prune yet) lies under the horizon once the window is raised: a read
    # without a cursor must not start among such diffs and hand out an expired cursor.
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=1):
            fresh_client()
            question = save("old")
            time.sleep(1.2)
            question.question_text = "kept"
            question.save()  # keeps the set alive; "old" is now past the 1 s window
        with diffs_settings(url=url, test_mode=False, max_element_age=1000, page_bytes=1):
            fresh_client()
            question.question_text = "new"
            question.save()  # the horizon moves to a second ago: after "old"

            def texts(diffs):
                return [d.data[0]["fields"]["question_text"] for d in diffs]

            assert texts(question.diffs) == ["kept", "new"]
            first = Question.diffs.since(None, limit=1)
            second = Question.diffs.since(first.cursor, limit=1)  # no CursorExpired
            assert texts(first.diffs + second.diffs) == ["kept", "new"]
            fresh_client()
