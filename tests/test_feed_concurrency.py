"""Cursor paging under concurrent writers: no diff missed, none seen twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.support.paging import follow
from tests.testapp.models import Question

ROOT = Path(__file__).resolve().parent.parent


def drain(cursor):
    """Read every page after ``cursor``; return (ids, last cursor)."""
    pages, cursor = follow(lambda after: Question.diffs.since(after, limit=50), cursor)
    return [d.id for page in pages for d in page.diffs], cursor


def follow_while(running, cursor=None):
    """Page through the feed while ``running()``, then once more; return every id read."""
    seen = []
    while running():
        ids, cursor = drain(cursor)
        seen.extend(ids)
    ids, cursor = drain(cursor)
    seen.extend(ids)
    return seen


def test_threads_writing_while_a_client_pages():
    written: list[str] = []
    lock = threading.Lock()

    def writer(worker):
        for n in range(150):
            diff = Question.diffs.create(data={"w": worker, "n": n}, pk=n % 4)
            with lock:
                written.append(diff.id)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    seen = follow_while(lambda: any(t.is_alive() for t in threads))
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)), "a diff was read twice"
    assert set(seen) == set(written), "a diff was missed"
    assert len(written) == 600


WRITER = """
import sys, django
django.setup()
from tests.testapp.models import Question
for n in range(int(sys.argv[1])):
    print(Question.diffs.create(data={"n": n}, pk=n % 3).id, flush=True)
"""


@pytest.mark.real_redis
@pytest.mark.skipif(
    not django_settings.REDIS_URL,
    reason="processes share data only through a real Redis; runs when DIFFS_TEST_REDIS_URL is set",
)
def test_processes_writing_while_a_client_pages():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, "200"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    seen = follow_while(lambda: any(w.poll() is None for w in writers))
    written = []
    for writer in writers:
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        written.extend(out.split())
    assert len(written) == 600
    assert len(seen) == len(set(seen)), "a diff was read twice"
    assert set(seen) == set(written), "a diff was missed"
