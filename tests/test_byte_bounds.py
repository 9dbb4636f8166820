"""Every Redis call and every page is bounded in bytes, not only in count.

A page stops once its diffs reach ``page_bytes`` (it always holds at least one, and
``has_more`` says the rest is waiting); a write script call carries about
``write_batch_bytes`` of diffs, whatever the number of diffs in the transaction.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from diffs.delivery import OutgoingDiff, store
from tests.conftest import diffs_settings
from tests.support.writing import outgoing
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True)

KIB = 1024
BODY = 100 * KIB  # each diff carries about this much


def big_articles(count: int) -> list[Article]:
    with transaction.atomic():
        return [Article.objects.create(title=f"a{n}", body=str(n) * BODY) for n in range(count)]


def walk(read, limit: int = 1000) -> tuple[list, list]:
    """Every page of ``read(cursor, limit)``; returns (diffs, pages)."""
    seen, pages, cursor = [], [], None
    for _ in range(200):
        page = read(cursor, limit)
        pages.append(page)
        seen += page.diffs
        cursor = page.cursor
        if not page.has_more:
            return seen, pages
    raise AssertionError("the cursor does not move forward")


def size(diffs) -> int:
    return sum(len(d.data[0]["fields"].get("body", "")) for d in diffs)


def test_a_feed_page_stops_at_the_byte_budget_and_resumes_exactly_there():
    articles = big_articles(12)
    with diffs_settings(page_bytes=300 * KIB):
        seen, pages = walk(Article.diffs.since)
    assert [d.pk for d in seen] == [a.pk for a in articles]  # no gap, no repeat
    assert len(pages) >= 4
    for page in pages:
        assert len(page.diffs) >= 1
        assert size(page.diffs) <= 300 * KIB + BODY + KIB  # the budget, plus one diff


def test_an_object_page_stops_at_the_byte_budget_and_resumes_exactly_there():
    [article] = big_articles(1)
    with transaction.atomic():
        for n in range(9):
            article.body = chr(ord("a") + n) * BODY
            article.save()
    with diffs_settings(page_bytes=250 * KIB):
        seen, pages = walk(lambda c, n: Article.diffs.object_since(article.pk, c, n))
        everything = Article.diffs.get_by_object_id(article.pk)
    assert len(seen) == 10 and len(pages) >= 4
    assert [d.id for d in seen] == [d.id for d in everything]
    assert all(len(p.diffs) >= 1 and size(p.diffs) <= 250 * KIB + BODY + KIB for p in pages)


def test_a_diff_larger_than_the_budget_is_a_page_of_its_own():
    big_articles(3)
    with diffs_settings(page_bytes=1 * KIB):
        _seen, pages = walk(Article.diffs.since)
    assert [len(p.diffs) for p in pages] == [1, 1, 1]
    assert [p.has_more for p in pages] == [True, True, False]


def test_one_transaction_of_large_diffs_is_written_in_several_bounded_calls(monkeypatch):
    sent: list[int] = []  # bytes of arguments per script call
    original = store._script

    def spying_script(client):
        script = original(client)

        def call(keys, args):
            sent.append(sum(len(str(a).encode()) for a in [*keys, *args]))
            return script(keys=keys, args=args)

        return call

    monkeypatch.setattr(store, "_script", spying_script)
    with diffs_settings(write_batch_bytes=300 * KIB):
        big_articles(10)
    assert len(sent) >= 4
    assert all(bytes_ <= 300 * KIB + BODY + 4 * KIB for bytes_ in sent)
    assert len(Article.diffs.since(None).diffs) == 10


def test_write_calls_are_cut_by_size_and_by_count():
    def write(n: int, body: int) -> OutgoingDiff:
        return outgoing("k", "f", "x" * body, f"{n:016x}1")

    small = [write(n, 10) for n in range(1200)]
    assert [len(c) for c in store.chunks(small, 10**9)] == [500, 500, 200]
    large = [write(n, 400 * KIB) for n in range(5)]
    assert [len(c) for c in store.chunks(large, 1024 * KIB)] == [2, 2, 1]
    assert [len(c) for c in store.chunks(large, 1)] == [1, 1, 1, 1, 1]
