"""The snapshot registered models are compared with: taken on load and after saves."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.base import ContentFile, File

from diffs import snapshot
from tests.testapp.models import Question, Tagged

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _fields_of_last_diff(model, pk):
    return model.diffs.get_by_object_id(pk)[-1].data[0]["fields"]


def test_a_json_value_changed_in_place_after_loading_is_a_change(committed):
    with committed():
        tagged = Tagged.objects.create(tags={"a": [1]})
    loaded = Tagged.objects.get(pk=tagged.pk)
    loaded.tags["a"].append(2)  # the snapshot must not share this list
    with committed():
        loaded.save()
    assert _fields_of_last_diff(Tagged, tagged.pk) == {"tags": {"a": [1, 2]}}


def test_a_value_equal_once_converted_is_not_a_change(committed):
    with committed():
        question = Question.objects.create(question_text="q", votes=5)
    loaded = Question.objects.get(pk=question.pk)
    loaded.votes = "5"
    assert loaded.get_dirty_fields() == {}
    with committed():
        loaded.save()
    assert len(Question.diffs.get_by_object_id(question.pk)) == 1  # the create only


def test_another_spelling_of_the_same_value_is_not_a_change():
    # Same type (str) on both sides, different text, one value once converted: the
    # quick "two different values of the field's own type" answer must not apply.
    question = Question(question_text="q", votes="05", pub_date=None)
    question._original_state = {"question_text": "q", "votes": "5", "pub_date": None}
    assert snapshot.changes(question) == {}


def test_two_values_of_the_fields_own_type_differ_without_normalising(monkeypatch):
    plan = snapshot.plan_for(Question)
    assert plan.plain["question_text"] is str
    assert plan.plain["votes"] is int
    assert plan.plain["pub_date"] is dt.datetime
    calls = []
    monkeypatch.setattr(snapshot, "_normalised", lambda field, value: calls.append(value))
    question = Question(question_text="new", votes=6, pub_date=None)
    question._original_state = {"question_text": "old", "votes": 5, "pub_date": None}
    assert snapshot.changes(question) == {"question_text": "old", "votes": 5}
    assert calls == []


def test_deferred_fields_join_the_snapshot_when_loaded(committed):
    with committed():
        question = Question.objects.create(question_text="q", votes=1)
    partial = Question.objects.only("question_text").get(pk=question.pk)
    partial.question_text = "changed"
    assert partial.votes == 1  # loads the deferred field
    partial.votes = 2
    with committed():
        partial.save()
    assert _fields_of_last_diff(Question, question.pk) == {"question_text": "changed", "votes": 2}


def test_refresh_from_db_forgets_unsaved_edits(committed):
    with committed():
        question = Question.objects.create(question_text="q")
    question.question_text = "edited"
    question.refresh_from_db()
    with committed():
        question.save()
    assert len(Question.diffs.get_by_object_id(question.pk)) == 1


def test_fields_left_out_of_update_fields_stay_changed(committed):
    with committed():
        question = Question.objects.create(question_text="q", votes=0)
    question.question_text, question.votes = "new", 9
    with committed():
        question.save(update_fields=["question_text"])
    assert _fields_of_last_diff(Question, question.pk) == {"question_text": "new"}
    with committed():
        question.save()
    assert _fields_of_last_diff(Question, question.pk) == {"votes": 9}


def test_an_instance_with_no_snapshot_reports_every_field(committed):
    [question] = Question.objects.bulk_create([Question(question_text="bulk", votes=3)])
    question.__dict__.pop(snapshot.SNAPSHOT, None)
    question.__dict__.pop(snapshot.LOADED, None)
    assert not snapshot.has_snapshot(question)
    question.votes = 4
    with committed():
        question.save()
    fields = _fields_of_last_diff(Question, question.pk)
    assert fields["votes"] == 4 and fields["question_text"] == "bulk"


def test_copies_of_values_that_deepcopy_refuses_or_that_belong_to_an_instance():
    assert snapshot._copy(memoryview(b"ab")) == b"ab"
    assert snapshot._copy(File(None, name="a/b.txt")) == "a/b.txt"

    class Uncopyable:
        def __deepcopy__(self, memo):
            raise TypeError("no")

    value = Uncopyable()
    assert snapshot._copy(value) is value


def test_normalised_comparison_of_files_bytes_and_refusing_equality():
    field = Question._meta.get_field("question_text")
    assert snapshot._same(field, "a.txt", ContentFile(b"", name="a.txt"))
    assert snapshot._same(field, b"ab", memoryview(b"ab"))

    class Refuses:
        def __eq__(self, other):
            raise ValueError("cannot compare")

        __hash__ = object.__hash__

    refuses = Refuses()
    assert not snapshot._same(field, refuses, "x")
    assert snapshot._normalised(Question._meta.get_field("votes"), "nope") == "nope"
