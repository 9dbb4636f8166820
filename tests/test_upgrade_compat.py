"""Code written for django-diffs 0.1.16 keeps working, or fails with a message naming
what to use instead.

* ``serialize_diff(dirty_fields, created=True)`` gets the fields the object was created
  with: a pk the database assigned is not one of them, a pk known before the INSERT is
  (the same rule for ``save()`` and ``bulk_create()``);
* ``diffs.helpers.precise_timestamp(dt=...)``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.testapp.models import (
    CodeItem,
    MixinItem,
    OwnDirtyItem,
    Question,
    Restaurant,
    UUIDItem,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run on_commit callbacks at the end of the block, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def hook_calls(monkeypatch):
    """Give the test models a ``serialize_diff`` that records what it is called with."""
    calls: list[tuple[str, bool, dict[str, Any]]] = []

    def serialize_diff(self, dirty_fields, created=False):
        calls.append((type(self).__name__, created, dict(dirty_fields)))
        return {"fields": sorted(dirty_fields)}

    for model in (Question, UUIDItem, CodeItem, MixinItem, OwnDirtyItem, Restaurant):
        monkeypatch.setattr(model, "serialize_diff", serialize_diff, raising=False)
    return calls


# serialize_diff on a creation: the fields the object was created with


def test_a_pk_the_database_assigns_is_not_among_the_created_fields(committed, hook_calls):
    with committed():
        question = Question.objects.create(question_text="What will happen?")
    assert hook_calls == [
        ("Question", True, {"question_text": "What will happen?", "pub_date": None, "votes": 0})
    ]
    # The README's example, which 0.1.16 gave too.
    assert question.diffs[-1].data == {"fields": ["pub_date", "question_text", "votes"]}


@pytest.mark.parametrize(
    ("model", "values", "pk_name"),
    [
        (Question, {"id": 4242, "question_text": "q"}, "id"),
        (CodeItem, {"code": "natural-key", "name": "n"}, "code"),
        (UUIDItem, {"name": "n"}, "id"),  # the default ran in Model.__init__
    ],
)
def test_a_pk_known_before_the_insert_is_among_the_created_fields(
    committed, hook_calls, model, values, pk_name
):
    with committed():
        obj = model(**values)
        expected_pk = obj.pk
        obj.save()
    [(_, created, fields)] = hook_calls
    assert created is True
    assert fields[pk_name] == expected_pk is not None


@pytest.mark.parametrize(
    ("model", "values", "expected"),
    [
        (MixinItem, {"name": "n"}, {"name": "n"}),  # django-dirtyfields' own tracking
        (OwnDirtyItem, {"name": "n"}, {"name": "always"}),  # the model's get_dirty_fields
        (
            Restaurant,  # multi-table: the link to the parent row is assigned too
            {"name": "r", "serves_pizza": True},
            {"name": "r", "serves_pizza": True},
        ),
    ],
)
def test_every_kind_of_tracking_leaves_out_a_database_assigned_pk(
    committed, hook_calls, model, values, expected
):
    with committed():
        model.objects.create(**values)
    assert hook_calls == [(model.__name__, True, expected)]


def test_bulk_create_passes_the_same_created_fields_as_save(committed, hook_calls):
    with committed():
        Question.objects.create(question_text="saved")
        Question.objects.create(id=9001, question_text="saved")
        Question.objects.bulk_create(
            [Question(question_text="bulk"), Question(id=9002, question_text="bulk")]
        )
    saved_auto, saved_explicit, bulk_auto, bulk_explicit = (c[2] for c in hook_calls)
    assert all(call[1] is True for call in hook_calls)
    assert "id" not in saved_auto and "id" not in bulk_auto
    assert saved_auto.keys() == bulk_auto.keys()
    assert (saved_explicit["id"], bulk_explicit["id"]) == (9001, 9002)
    assert saved_explicit.keys() == bulk_explicit.keys()


def test_bulk_create_keeps_natural_and_default_pks_among_the_created_fields(committed, hook_calls):
    item = UUIDItem(name="u")
    with committed():
        UUIDItem.objects.bulk_create([item])
        CodeItem.objects.bulk_create([CodeItem(code="c1", name="n")])
    assert hook_calls == [
        ("UUIDItem", True, {"id": item.pk, "name": "u"}),
        ("CodeItem", True, {"code": "c1", "name": "n"}),
    ]


def test_the_default_data_of_a_creation_has_the_pk_only_under_pk(committed):
    with committed():
        question = Question.objects.create(question_text="default")
        restaurant = Restaurant.objects.create(name="r")
        code = CodeItem.objects.create(code="k", name="n")
        [bulk] = Question.objects.bulk_create([Question(question_text="bulk")])
    assert question.diffs[0].data == [
        {
            "model": "testapp.question",
            "pk": question.pk,
            "fields": {"question_text": "default", "pub_date": None, "votes": 0},
        }
    ]
    assert bulk.diffs[0].data[0]["fields"] == {
        "question_text": "bulk",
        "pub_date": None,
        "votes": 0,
    }
    assert restaurant.diffs[0].data[0]["pk"] == restaurant.pk
    assert set(restaurant.diffs[0].data[0]["fields"]) == {"name", "serves_pizza"}
    assert code.diffs[0].data == [
        {"model": "testapp.codeitem", "pk": "k", "fields": {"name": "n"}}
    ]


def test_an_update_after_the_creation_is_unaffected(committed, hook_calls):
    with committed():
        question = Question.objects.create(question_text="before")
        question.question_text = "after"
        question.save()
    assert hook_calls[1] == ("Question", False, {"question_text": "before"})


# diffs.helpers.precise_timestamp(dt=None)


def test_precise_timestamp_takes_its_0_1_16_keyword():
    from diffs.helpers import precise_timestamp

    one_second = dt.datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.timezone.utc)
    assert precise_timestamp(dt=one_second) == 1000.5
    assert precise_timestamp(one_second) == 1000.5
    assert precise_timestamp(dt=None) > 1.7e12


def test_precise_timestamp_reads_a_naive_dt_in_the_default_time_zone(settings):
    from diffs.helpers import precise_timestamp

    settings.TIME_ZONE = "America/Chicago"  # UTC-6 in January
    assert precise_timestamp(dt=dt.datetime(1970, 1, 1)) == 6 * 3600 * 1000
