"""Evaluating a queryset's filter against a deleted row's last state."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connections
from django.db.models import F, Q

from diffs.contrib.rowmatch import deleted_row, row_matches, selects_every_row
from tests.testapp.models import Article, Choice, Question

ROW = {"id": 5, "question_text": "Hello there", "votes": 3, "pub_date": "2026-01-02T03:04:05.000Z"}
Qs = Question.objects


@pytest.mark.parametrize(
    ("queryset", "expected"),
    [
        (Qs.all(), True),
        (Qs.filter(votes=3), True),
        (Qs.filter(votes=4), False),
        (Qs.filter(votes__gte=1, question_text__startswith="Hell"), True),
        (Qs.filter(votes__gt=3), False),
        (Qs.filter(votes__lt=4, votes__lte=3), True),
        (Qs.filter(pk__in=[4, 5]), True),
        (Qs.filter(pk=6), False),
        (Qs.filter(question_text__iexact="HELLO THERE"), False),  # case folding differs
        (Qs.filter(question_text__contains="there", question_text__endswith="re"), True),
        (Qs.filter(question_text__contains="xyz"), False),
        (Qs.filter(question_text__gte="A"), False),  # collations differ
        (Qs.filter(pk__in=[5, None]), True),
        (Qs.filter(Q(votes=0) | Q(question_text="Hello there")), True),
        (Qs.exclude(votes=3), False),
        (Qs.exclude(votes=0), True),
        (Qs.filter(pub_date__isnull=False), True),
        (Qs.filter(pub_date__gte=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)), False),
        (Qs.filter(pub_date__year=2026), False),  # not evaluable: hidden
        (Qs.filter(votes=F("id")), False),  # an expression: hidden
        (Qs.filter(choice__choice_text="x"), False),  # a join: hidden
        (Qs.filter(question_text__regex="H.*"), False),  # unsupported lookup: hidden
        (Qs.all()[:1], False),
    ],
)
def test_row_matches(queryset, expected):
    assert row_matches(queryset, ROW) is expected


def test_null_is_never_in_an_in_list():
    assert (
        row_matches(Choice.objects.filter(question__in=[7, None]), {"id": 1, "question": None})
        is False
    )


def test_missing_fields_and_null_comparisons():
    assert row_matches(Qs.filter(votes__gte=1), {"id": 5}) is False
    assert row_matches(Qs.filter(votes__gte=1), {"id": 5, "votes": None}) is False
    assert row_matches(Qs.filter(pub_date__isnull=True), {"id": 5, "pub_date": None}) is True


def test_foreign_keys_compare_by_id():
    assert row_matches(Choice.objects.filter(question=7), {"id": 1, "question": 7}) is True
    assert row_matches(Choice.objects.filter(question_id=8), {"id": 1, "question": 7}) is False


def test_deleted_row_reads_the_default_data_only():
    data = [{"model": "testapp.question", "pk": 5, "fields": {"votes": 3}}]
    assert deleted_row(data, Question) == {"votes": 3, "id": 5}
    assert deleted_row(data, Choice) is None
    proxied = [{"model": "testapp.questionproxy", "pk": 5, "fields": {"votes": 3}}]
    assert deleted_row(proxied, Question) == {"votes": 3, "id": 5}
    assert deleted_row([{"model": "nope.nope", "pk": 5, "fields": {}}], Question) is None
    assert deleted_row({"custom": True}, Question) is None
    assert deleted_row([{"model": "testapp.question", "fields": [1]}], Question) is None
    assert deleted_row(["x"], Question) is None


# Three-valued logic: a lookup on NULL is unknown, and NOT unknown is unknown.


def test_null_under_not_is_unknown():
    # NOT (NULL = 3) is NULL in SQL: such a row is not in exclude(votes=3). (Django adds
    # "IS NOT NULL" only for columns the model declares nullable; an unmanaged table's
    # column may hold NULL all the same.)
    assert row_matches(Qs.exclude(votes=3), {"id": 5, "votes": None}) is False
    assert row_matches(Qs.exclude(votes__in=[1, 2]), {"id": 5, "votes": None}) is False
    assert row_matches(Qs.filter(~Q(votes__gte=1)), {"id": 5, "votes": None}) is False


def test_kleene_logic_decides_despite_unknown_parts():
    row = {**ROW, "votes": None}
    # unknown OR true is true; NOT (unknown AND false) is true.
    assert row_matches(Qs.filter(Q(votes__gte=1) | Q(pk=5)), row) is True
    assert row_matches(Qs.exclude(Q(question_text__iexact="x") & Q(pk=4)), row) is True
    # A value the field cannot convert is unknown, not a reason to give up on the row.
    assert row_matches(Qs.filter(Q(votes=3) | Q(pk=5)), {**ROW, "votes": "many"}) is True
    assert row_matches(Qs.filter(Q(votes=3) & Q(pk=5)), {**ROW, "votes": "many"}) is False
    # unknown AND true, NOT (unknown OR false) stay unknown.
    assert row_matches(Qs.filter(Q(votes__gte=1) & Q(pk=5)), row) is False
    assert row_matches(Qs.exclude(Q(votes__gte=1) | Q(pk=4)), row) is False


def test_xor_is_parity():
    assert row_matches(Qs.filter(Q(votes=3) ^ Q(pk=6)), ROW) is True
    assert row_matches(Qs.filter(Q(votes=3) ^ Q(pk=5)), ROW) is False
    assert row_matches(Qs.filter(Q(votes=3) ^ Q(pk=5) ^ Q(pk__in=[5])), ROW) is True
    assert row_matches(Qs.exclude(Q(votes=3) ^ Q(pk=5)), ROW) is True
    # An unknown operand leaves the parity unknown.
    assert row_matches(Qs.filter(Q(votes=3) ^ Q(question_text__iexact="x")), ROW) is False


def test_an_empty_in_list_matches_nothing_not_even_null():
    assert row_matches(Qs.filter(votes__in=[None]), {"id": 5, "votes": None}) is False
    assert row_matches(Qs.exclude(votes__in=[]), {"id": 5, "votes": None}) is True


def test_values_outside_the_columns_range_are_unknown():
    # Django answers these without the database (or the driver refuses them).
    assert row_matches(Qs.filter(votes__lt=2**70), ROW) is False
    assert row_matches(Qs.exclude(votes=2**70), ROW) is False


def test_expressions_inside_in_lists_are_unknown():
    assert row_matches(Qs.filter(votes__in=[3, F("id")]), ROW) is False


def test_json_is_unknown_but_for_not_null():
    from tests.testapp.models import Tagged

    Tags = Tagged.objects
    assert row_matches(Tags.filter(tags=0), {"id": 1, "tags": False}) is False
    assert row_matches(Tags.filter(tags={"a": 1}), {"id": 1, "tags": {"a": 1}}) is False
    assert row_matches(Tags.filter(tags__isnull=False), {"id": 1, "tags": {"a": 1}}) is True
    # None may be SQL NULL or JSON null.
    assert row_matches(Tags.filter(tags__isnull=True), {"id": 1, "tags": None}) is False
    assert row_matches(Tags.exclude(tags__isnull=True), {"id": 1, "tags": None}) is False


@pytest.mark.parametrize(
    ("queryset", "sqlite", "postgresql"),
    [
        # A case-sensitive match is a match for LIKE on both.
        (Qs.filter(question_text__contains="there"), True, True),
        # SQLite's LIKE ignores ASCII case: 'Hello there' LIKE '%HELLO%' is true there.
        (Qs.exclude(question_text__contains="HELLO"), False, True),
        (Qs.filter(question_text__startswith="hELLO"), False, False),
        # No case folding can make these match.
        (Qs.exclude(question_text__endswith="xyz"), True, True),
        (Qs.exclude(question_text__contains="\u212a"), True, True),
        # LIKE stops at NUL on SQLite; PostgreSQL text cannot hold it.
        (Qs.exclude(question_text__contains="x\x00"), False, True),
        (Qs.exclude(question_text__contains="x" * 50_001), False, True),
        # Case-insensitive lookups depend on the database's case mapping.
        (Qs.filter(question_text__iexact="hello there"), False, False),
        (Qs.exclude(question_text__icontains="xyz"), False, False),
    ],
)
def test_pattern_lookups_per_database(queryset, sqlite, postgresql, monkeypatch):
    for vendor, expected in (("sqlite", sqlite), ("postgresql", postgresql)):
        monkeypatch.setattr(connections["default"], "vendor", vendor)
        assert row_matches(queryset, ROW) is expected, vendor


def test_sqlite_like_may_fold_beyond_ascii(monkeypatch):
    # With the ICU extension SQLite's LIKE folds every letter: the Kelvin sign matches k.
    row = {**ROW, "question_text": "kelvin"}
    queryset = Qs.exclude(question_text__contains="\u212aELVIN")
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    assert row_matches(queryset, row) is False
    monkeypatch.setattr(connections["default"], "vendor", "postgresql")
    assert row_matches(queryset, row) is True


def test_other_databases_decide_integers_and_booleans_only(monkeypatch):
    monkeypatch.setattr(connections["default"], "vendor", "mysql")  # text ignores case there
    assert row_matches(Qs.filter(votes=3, pk__in=[5]), ROW) is True
    assert row_matches(Qs.filter(question_text="Hello there"), ROW) is False
    assert row_matches(Qs.filter(pub_date__isnull=False), ROW) is False
    article = {"id": 1, "is_public": True, "question": 5, "title": "x"}
    assert row_matches(Article.objects.filter(is_public=True, question=5), article) is True


def test_the_work_per_row_is_bounded():
    # A huge IN list costs time for every deleted row of a page: past the bound, hidden.
    assert row_matches(Qs.filter(pk__in=range(1, 9_000)), ROW) is True
    assert row_matches(Qs.filter(pk__in=range(1, 20_000)), ROW) is False


def test_what_rowmatch_cannot_read_hides_the_row(monkeypatch):
    from django.db.models import Exists, OuterRef

    choices = Choice.objects.filter(question=OuterRef("pk"))
    assert row_matches(Qs.extra(where=["1 = 1"]), ROW) is False  # raw SQL
    assert row_matches(Qs.filter(Exists(choices)), ROW) is False
    assert row_matches(Qs.exclude(Exists(choices)), ROW) is False
    assert row_matches(Qs.none(), ROW) is False
    assert row_matches(Qs.extra(tables=["testapp_choice"]), ROW) is False  # a cross join
    assert row_matches(Qs.distinct("votes"), ROW) is False  # DISTINCT ON keeps one per votes
    # Django only refuses a non-boolean isnull when it compiles the query.
    assert row_matches(Qs.filter(pub_date__isnull="yes"), ROW) is False
    # An error while evaluating (a pattern UTF-8 cannot encode) hides the row.
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    assert row_matches(Qs.exclude(question_text__contains="\ud800"), ROW) is False


def test_selects_every_row():
    assert selects_every_row(Qs.all()) is True
    assert selects_every_row(Qs.order_by("votes").select_related()) is True
    assert selects_every_row(Qs.filter(votes=3)) is False
    assert selects_every_row(Qs.all()[:10]) is False
    assert selects_every_row(Qs.distinct("votes")) is False
    assert selects_every_row(Qs.extra(tables=["testapp_choice"])) is False
    assert selects_every_row(Qs.union(Qs.all())) is False
    # Choice.question is NOT NULL: the annotation joins Question with an INNER JOIN.
    assert selects_every_row(Choice.objects.annotate(asked=F("question__pub_date"))) is False
