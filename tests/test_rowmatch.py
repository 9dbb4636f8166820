"""Evaluating a queryset's filter against a deleted row's last state."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import F, Q

from diffs.contrib.rowmatch import deleted_row, row_matches
from tests.testapp.models import Choice, Question

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
