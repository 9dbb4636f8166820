"""One cursor across several models: diffs.since(cursor, models=[...])."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.db import connections

import diffs
from diffs.exceptions import CursorExpired, InvalidCursor
from tests.conftest import diffs_settings
from tests.support.paging import follow
from tests.testapp.models import Memo, Question, Tag

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = [Question, Memo]


def label(diff) -> str:
    fields = diff.data[0]["fields"]
    return fields.get("question_text") or fields.get("title")


def read_all(cursor=None, limit=3, models=MODELS):
    pages, cursor = follow(lambda after: diffs.since(after, models=models, limit=limit), cursor)
    return [d for page in pages for d in page.diffs], cursor


def test_one_order_across_models_page_by_page():
    for n in range(4):
        Question.objects.create(question_text=f"q{n}")
        Memo.objects.create(title=f"m{n}")
    every, cursor = read_all(limit=3)
    assert [label(d) for d in every] == ["q0", "m0", "q1", "m1", "q2", "m2", "q3", "m3"]
    scores = [float(d.cursor) for d in every]
    assert scores == sorted(scores)
    Memo.objects.create(title="later")
    later, _ = read_all(cursor)
    assert [label(d) for d in later] == ["later"]


def test_the_byte_budget_cuts_pages_without_losing_a_diff():
    for n in range(5):
        Question.objects.create(question_text=f"q{n}" + "x" * 150)
        Memo.objects.create(title=f"m{n}")
    with diffs_settings(page_bytes=250):
        pages, _ = follow(lambda after: diffs.since(after, models=MODELS, limit=100), None)
    assert max(len(page.diffs) for page in pages) < 10
    assert len([d for page in pages for d in page.diffs]) == 10


def test_writers_on_both_models_while_a_client_pages():
    """No diff missed, none seen twice, while threads write to both models."""
    written: list[str] = []
    lock = threading.Lock()

    def writer(model, worker):
        for n in range(80):
            diff = model.diffs.create(data={"w": worker, "n": n}, pk=n % 3 + 1)
            with lock:
                written.append(diff.id)

    threads = [
        threading.Thread(target=writer, args=(model, w)) for model in MODELS for w in range(2)
    ]
    for thread in threads:
        thread.start()
    seen: list[str] = []
    cursor = None
    while any(t.is_alive() for t in threads):
        page_diffs, cursor = read_all(cursor, limit=7)
        seen += [d.id for d in page_diffs]
    for thread in threads:
        thread.join()
    page_diffs, cursor = read_all(cursor, limit=7)
    seen += [d.id for d in page_diffs]
    assert len(seen) == len(set(seen)), "a diff was read twice"
    assert set(seen) == set(written), "a diff was missed"
    assert len(written) == 320


def test_a_cursor_is_for_its_models_only():
    Question.objects.create(question_text="q")
    cursor = diffs.since(models=MODELS).cursor
    # The order the models are given in does not matter.
    assert diffs.since(cursor, models=[Memo, Question]).diffs == []
    with pytest.raises(InvalidCursor, match="other models"):
        diffs.since(cursor, models=[Question, _other()])
    for bad in ("", "abc", cursor + "~1", "00000000~1~2", cursor.replace("~", "~-", 1), 12):
        with pytest.raises(InvalidCursor):
            diffs.since(bad or "x", models=MODELS)


def _other():
    from tests.testapp.models import Ledger

    return Ledger


def test_an_expired_position_restarts_every_model():
    Question.objects.create(question_text="q")
    checksum = diffs.since(models=MODELS).cursor.split("~")[0]
    with pytest.raises(CursorExpired) as error:
        diffs.since(f"{checksum}~1000.5~1000.5", models=MODELS)
    restart = error.value.restart_cursor
    assert restart.split("~")[0] == checksum
    assert diffs.since(restart, models=MODELS).diffs == []


@pytest.mark.parametrize(
    "models", [[], None, "testapp.question", [Question, "x"], [Tag], [Question] * 1]
)
def test_bad_models_are_refused(models):
    if models == [Question]:
        assert diffs.since(models=models).diffs == []  # one model works too
        return
    with pytest.raises(ValueError):
        diffs.since(models=models)


def test_wait_wakes_on_a_write_to_any_of_the_models():
    cursor = diffs.since(models=MODELS).cursor

    def write():
        time.sleep(0.3)
        try:
            Memo.objects.create(title="woke")
        finally:
            connections.close_all()

    thread = threading.Thread(target=write)
    thread.start()
    started = time.monotonic()
    page = diffs.since(cursor, models=MODELS, wait=20)
    thread.join()
    assert [label(d) for d in page.diffs] == ["woke"]
    assert time.monotonic() - started < 10


def test_asince_gives_the_same_pages():
    for n in range(3):
        Question.objects.create(question_text=f"q{n}")
        Memo.objects.create(title=f"m{n}")
    first = diffs.since(models=MODELS, limit=4)

    async def read():
        return (
            await diffs.asince(models=MODELS, limit=4),
            await diffs.asince(first.cursor, models=MODELS, limit=4, wait=0),
        )

    again, second = asyncio.run(read())
    assert [d.id for d in again.diffs] == [d.id for d in first.diffs]
    assert again.cursor == first.cursor
    assert [label(d) for d in second.diffs] == ["q2", "m2"]


def test_a_page_cut_short_by_bytes_keeps_the_order_across_models():
    for n in range(2):
        Question.objects.create(question_text=f"q{n}" + "x" * 150)
    Memo.objects.create(title="m0")
    # Room for q0 and m0 (about 230 and 110 bytes) but not for q0 and q1.
    with diffs_settings(page_bytes=400):
        pages, _ = follow(lambda after: diffs.since(after, models=MODELS, limit=100), None)
    order = [label(d).rstrip("x") for page in pages for d in page.diffs]
    assert order == ["q0", "q1", "m0"]
