"""A client that cannot be served its diffs is told (CursorExpired), never left diverged.

Each case runs against a redis-server of the test's own: Redis losing its data, a
``prune_diffs --max-age`` shorter than ``max_element_age``, and ``max_element_age``
raised after the old window dropped diffs. The next read with an older cursor raises
``CursorExpired``, in this process and in any other.

No test sleeps or races the clock: old diffs are written at fixed scores and old cursors
stand minutes before the Redis clock, with windows of minutes, so every case holds
however slowly the machine runs (well under the ten minutes of the smallest window).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

import diffs
from diffs import CursorExpired, delivery
from diffs.clock import redis_time_ms
from diffs.cursors import encode_cursor
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings
from tests.support.redis_server import redis_server
from tests.support.writing import open_horizon, write_at
from tests.testapp.models import Question

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)

MINUTE_MS = 60_000.0

#: A site's window before it was raised (seconds): ten minutes.
OLD_WINDOW = 600

#: The window after it was raised (seconds): the default hour, which the other process
#: of ``read_in_another_process`` reads with too.
NEW_WINDOW = 3600


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


def redis_now() -> float:
    """The Redis clock (epoch ms), which every score and every horizon is read from."""
    return redis_time_ms(diffs.get_connection())


def question_diff(text: str) -> list[dict[str, object]]:
    """The data of a diff of a question whose text is ``text`` (as :func:`texts` reads it)."""
    return [{"model": "testapp.question", "fields": {"question_text": text}}]


def texts(found: list[diffs.Diff]) -> list[str]:
    """The question texts of the diffs ``found``, in order."""
    return [d.data[0]["fields"]["question_text"] for d in found]


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
    # Diffs minutes old, at fixed scores: a prune keeping one minute cuts after both
    # whenever it runs, while the window (an hour) alone would keep them and the cursor.
    with own_redis():
        open_horizon(Question)  # a model with a long history: only the prune decides
        now = redis_now()
        write_at(Question, 1, question_diff("a"), now - 3 * MINUTE_MS)
        write_at(Question, 2, question_diff("b"), now - 2 * MINUTE_MS)
        read = Question.diffs.since(None, limit=1)
        assert texts(read.diffs) == ["a"] and read.has_more  # the client has not read "b"
        cursor = read.cursor
        assert texts(Question.diffs.object_since(2, cursor).diffs) == ["b"]  # still good
        call_command("prune_diffs", "--max-age", "60", stdout=StringIO(), stderr=StringIO())
        assert len(Question.diffs.get_sortedset(2)) == 0  # pruned away, not only hidden
        with pytest.raises(CursorExpired, match="may be missing"):
            Question.diffs.since(cursor)
        with pytest.raises(CursorExpired, match="may be missing"):
            Question.diffs.object_since(2, cursor)


@pytest.mark.parametrize("reader_first", [True, False])
def test_raising_max_element_age_expires_cursors_older_than_the_old_window(reader_first):
    # The site has long run with a ten-minute window, and a client last read two such
    # windows ago: what the site wrote after that may already be gone. Its cursor stays
    # inside the new window (an hour), so only the horizon can refuse it.
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=OLD_WINDOW):
            fresh_client()
            open_horizon(Question)  # complete since long ago, under the old window
            cursor = encode_cursor(redis_now() - 2 * OLD_WINDOW * 1000)
        with diffs_settings(url=url, test_mode=False, max_element_age=NEW_WINDOW):
            fresh_client()
            if not reader_first:
                save("c")  # a writer with the new window meets the horizon first
            with pytest.raises(CursorExpired, match="may be missing"):
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
        assert texts(page.diffs) == ["b"]


def test_a_reader_with_a_smaller_window_expires_no_ones_cursor():
    # The site writes with an hour's window; a client's cursor is thirty minutes old,
    # older than the ten-minute window of a shell that reads in between.
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=NEW_WINDOW):
            fresh_client()
            open_horizon(Question)  # complete since long ago, under the site's window
            now = redis_now()
            # pks no row takes: "c" below is a new row, not a later life of theirs
            write_at(Question, 10_001, question_diff("a"), now - 30 * MINUTE_MS)
            write_at(Question, 10_002, question_diff("b"), now - 20 * MINUTE_MS)
            read = Question.diffs.since(None, limit=1)
            assert texts(read.diffs) == ["a"]
            cursor = read.cursor
        with diffs_settings(url=url, test_mode=False, max_element_age=OLD_WINDOW):
            fresh_client()
            Question.diffs.since(None)  # a shell or a worker with a short window reads
        with diffs_settings(url=url, test_mode=False, max_element_age=NEW_WINDOW):
            fresh_client()
            save("c")
            assert texts(Question.diffs.since(cursor).diffs) == ["b", "c"]
            fresh_client()


def test_reads_without_a_cursor_start_at_the_horizon_after_the_window_was_raised():
    # A diff older than the old window but still stored (its key kept alive by later
    # writes, no prune yet) lies under the horizon once the window is raised: a read
    # without a cursor must not start among such diffs and hand out an expired cursor.
    # "old" is two old windows before "kept", and raising the window moves the horizon
    # to one old window (ten minutes) before the raising write: between the two.
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, max_element_age=OLD_WINDOW):
            fresh_client()
            open_horizon(Question)  # complete since long ago, under the old window
            before = redis_now()
            question = save("kept")
            write_at(Question, question.pk, question_diff("old"), before - 2 * OLD_WINDOW * 1000)
        with diffs_settings(url=url, test_mode=False, max_element_age=NEW_WINDOW, page_bytes=1):
            fresh_client()
            question.question_text = "new"
            question.save()  # the horizon moves to ten minutes ago: after "old"
            assert len(Question.diffs.get_sortedset(question.pk)) == 3  # "old" is kept
            assert texts(question.diffs) == ["kept", "new"]
            first = Question.diffs.since(None, limit=1)
            second = Question.diffs.since(first.cursor, limit=1)  # no CursorExpired
            assert texts(first.diffs + second.diffs) == ["kept", "new"]
            fresh_client()
