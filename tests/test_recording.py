"""What is recorded for creates, updates and deletes (expressions, hooks and JSON fields too)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.db.models import F

from diffs import HookError
from tests.support.keynames import object_key
from tests.testapp.models import (
    Article,
    Choice,
    CodeItem,
    MixinItem,
    OwnDirtyItem,
    Question,
    Restaurant,
    Tagged,
    UUIDItem,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run on_commit callbacks at the end of the block, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_create_records_a_created_diff_with_every_field(committed):
    with committed():
        question = Question.objects.create(question_text="What is life?", votes=3)
    [diff] = question.diffs
    assert diff.created is True
    assert diff.deleted is False
    assert diff.data == [
        {
            "model": "testapp.question",
            "pk": question.pk,
            "fields": {"question_text": "What is life?", "pub_date": None, "votes": 3},
        }
    ]


def test_update_records_only_changed_fields_with_new_values(committed):
    with committed():
        question = Question.objects.create(question_text="What is life?")
        question.question_text = "What is python?"
        question.save()
    created, updated = question.diffs
    assert created.created is True
    assert updated.created is False
    assert updated.data == [
        {
            "model": "testapp.question",
            "pk": question.pk,
            "fields": {"question_text": "What is python?"},
        }
    ]


def test_save_without_changes_records_nothing(committed):
    with committed():
        question = Question.objects.create(question_text="Same")
        question.save()
        question.question_text = "Same"
        question.save()
    assert len(question.diffs) == 1


def test_auto_now_alone_is_not_a_change(committed):
    with committed():
        article = Article.objects.create(title="t")
        article.save()
    assert len(article.diffs) == 1


def test_fetched_instance_tracks_changes(committed):
    with committed():
        pk = Question.objects.create(question_text="a").pk
        question = Question.objects.get(pk=pk)
        question.votes = 7
        question.save()
    assert question.diffs[-1].data[0]["fields"] == {"votes": 7}


def test_foreign_key_change_is_a_change_with_the_id(committed):
    with committed():
        first = Question.objects.create(question_text="first")
        second = Question.objects.create(question_text="second")
        article = Article.objects.create(title="a", question=first)
        article.question = second
        article.save()
    assert article.diffs[0].data[0]["fields"]["question"] == first.pk
    assert article.diffs[-1].data[0]["fields"] == {"question": second.pk}


def test_update_fields_records_only_saved_fields(committed):
    with committed():
        article = Article.objects.create(title="a", rank=1)
        article.title = "b"
        article.rank = 2
        article.save(update_fields=["title"])
    assert article.diffs[-1].data[0]["fields"] == {"title": "b"}
    # the unsaved change is still pending and is recorded by the next save
    with committed():
        article.save()
    assert article.diffs[-1].data[0]["fields"] == {"rank": 2}


def test_update_fields_accepts_attnames(committed):
    with committed():
        first = Question.objects.create(question_text="first")
        article = Article.objects.create(title="a")
        article.question = first
        article.title = "ignored"
        article.save(update_fields=["question_id"])
    assert article.diffs[-1].data[0]["fields"] == {"question": first.pk}


def test_update_fields_with_no_changed_field_records_nothing(committed):
    with committed():
        article = Article.objects.create(title="a")
        article.rank = 5
        article.save(update_fields=["title"])
    assert len(article.diffs) == 1


def test_serialize_diff_receives_old_values_and_created(committed):
    calls = []

    def serialize_diff(dirty_fields, created=False):
        calls.append((dirty_fields, created))
        return {"test": "data", "fields": dirty_fields, "created": created}

    with committed():
        question = Question(question_text="Example")
        question.serialize_diff = serialize_diff
        question.save()
        question.question_text = "test"
        question.save()
    assert calls[1] == ({"question_text": "Example"}, False)
    assert calls[0][1] is True
    assert question.diffs[-1].data == {
        "test": "data",
        "fields": {"question_text": "Example"},
        "created": False,
    }


def test_serialize_diff_returning_json_text_is_parsed(committed):
    with committed():
        question = Question(question_text="x")
        question.serialize_diff = lambda dirty, created=False: json.dumps({"n": 1})
        question.save()
    assert question.diffs[0].data == {"n": 1}


@pytest.mark.parametrize("empty", [None, {}, [], ""])
def test_empty_serialize_diff_skips_the_diff(committed, empty):
    with committed():
        question = Question(question_text="x")
        question.serialize_diff = lambda dirty, created=False: empty
        question.save()
    assert question.diffs == []


def test_send_diff_false_skips(committed):
    with committed():
        question = Question(question_text="x")
        question.send_diff = lambda: False
        question.save()
    assert question.diffs == []


@pytest.mark.parametrize("value", [None, 0, "", True])
def test_send_diff_other_values_do_not_skip(committed, value):
    with committed():
        question = Question(question_text="x")
        question.send_diff = lambda: value
        question.save()
    assert len(question.diffs) == 1


def test_get_diff_parent_sends_diffs_to_the_parent_only(committed):
    with committed():
        question = Question.objects.create(question_text="What will happen?")
        choice = Choice.objects.create(choice_text="Nothing", question=question)
        choice.choice_text = "Something"
        choice.save()
    assert len(question.diffs) == 3
    assert Choice.diffs.get_by_object_id(choice.pk) == []
    last = question.diffs[-1]
    assert last.data == [
        {"model": "testapp.choice", "pk": choice.pk, "fields": {"choice_text": "Something"}}
    ]


def test_last_save_at_overrides_the_score(committed):
    recent_ms = float(int(time.time() * 1000) - 5000)
    recent_dt = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=3)
    with committed():
        question = Question(question_text="x")
        question._last_save_at = recent_ms
        question.save()
        question._last_save_at = recent_dt
        question.question_text = "y"
        question.save()
    assert [d.timestamp for d in question.diffs] == [recent_ms, recent_dt.timestamp() * 1000]


def test_delete_records_a_deleted_diff_and_keeps_history(committed):
    with committed():
        question = Question.objects.create(question_text="bye")
        pk = question.pk
        question.delete()
    created, deleted = Question.diffs.get_by_object_id(pk)
    assert created.created and not created.deleted
    assert deleted.deleted is True
    assert deleted.created is False
    assert deleted.data == [
        {
            "model": "testapp.question",
            "pk": pk,
            "fields": {"question_text": "bye", "pub_date": None, "votes": 0},
        }
    ]


def test_delete_records_the_saved_row_not_unsaved_edits(committed):
    with committed():
        question = Question.objects.create(question_text="saved", votes=1)
        pk = question.pk
        question.question_text = "never saved"
        question.delete()
    assert Question.diffs.get_by_object_id(pk)[-1].data[0]["fields"]["question_text"] == "saved"
    assert question.question_text == "never saved"  # the instance is left as it was


def test_queryset_delete_records_a_diff_per_row(committed):
    with committed():
        pks = [Question.objects.create(question_text=str(i)).pk for i in range(3)]
        Question.objects.filter(pk__in=pks[:2]).delete()
    for pk in pks[:2]:
        assert [d.deleted for d in Question.diffs.get_by_object_id(pk)] == [False, True]
    assert [d.deleted for d in Question.diffs.get_by_object_id(pks[2])] == [False]


def test_delete_uses_serialize_diff_with_the_last_state(committed):
    with committed():
        question = Question.objects.create(question_text="gone", votes=2)
        pk = question.pk
        question.serialize_diff = lambda dirty, created=False: {"state": dirty, "created": created}
        question.delete()
    deleted = Question.diffs.get_by_object_id(pk)[-1]
    assert deleted.deleted is True
    assert deleted.data == {
        "state": {"id": pk, "question_text": "gone", "pub_date": None, "votes": 2},
        "created": False,
    }


def test_cascade_delete_of_children_goes_to_parent(committed):
    with committed():
        question = Question.objects.create(question_text="q")
        choice = Choice.objects.create(choice_text="c", question=question)
        question.delete()
    kinds = [
        (d.data[0]["model"], d.created, d.deleted)
        for d in Question.diffs.get_by_object_id(question.id or choice.question_id)
    ]
    assert ("testapp.choice", False, True) in kinds
    assert ("testapp.question", False, True) in kinds


def test_any_primary_key_type(committed):
    with committed():
        item = UUIDItem.objects.create(name="u")
        item.name = "v"
        item.save()
        coded = CodeItem.objects.create(code="a:b*c", name="x")
    assert [d.created for d in item.diffs] == [True, False]
    assert UUIDItem.diffs.get_by_object_id(str(item.pk))[0].data[0]["pk"] == str(item.pk)
    assert len(CodeItem.diffs.get_by_object_id("a:b*c")) == 1
    assert coded.diffs[0].data[0]["pk"] == "a:b*c"


def test_model_already_using_dirtyfields(committed):
    with committed():
        item = MixinItem.objects.create(name="a")
        item.name = "b"
        item.save()
    assert [d.data[0]["fields"] for d in item.diffs] == [{"name": "a"}, {"name": "b"}]


def test_model_with_its_own_get_dirty_fields(committed):
    with committed():
        item = OwnDirtyItem.objects.create(name="a")
        item.save()
    # its get_dirty_fields() always reports 'name', so both saves are recorded
    assert len(item.diffs) == 2


def test_multi_table_child_uses_its_own_key(committed):
    with committed():
        place = Restaurant.objects.create(name="Luigi's", serves_pizza=True)
        place.name = "Mario's"
        place.save()
    assert [d.data[0]["fields"] for d in place.diffs][-1] == {"name": "Mario's"}
    assert Restaurant.diffs.get_key(place.pk) == object_key("testapp.restaurant", place.pk)


def test_raw_save_from_fixture_is_recorded(committed):
    from django.core import serializers

    payload = json.dumps(
        [
            {
                "model": "testapp.question",
                "pk": 99,
                "fields": {"question_text": "fixture", "votes": 0},
            }
        ]
    )
    with committed():
        for obj in serializers.deserialize("json", payload):
            obj.save()
    assert [d.created for d in Question.diffs.get_by_object_id(99)] == [True]


def test_f_expression_update_is_recorded_with_the_computed_value(committed):
    with committed():
        question = Question.objects.create(question_text="q", votes=1)
        question.votes = F("votes") + 1
        question.save(update_fields=["votes"])
    assert question.diffs[-1].data[0]["fields"] == {"votes": 2}
    # the instance keeps the expression, as Django leaves it
    assert isinstance(question.votes, type(F("votes") + 1))
    pk = question.pk
    with committed():
        question.delete()
    deleted = Question.diffs.get_by_object_id(pk)[-1]
    # the deleted row's votes are unknown to the instance (it holds the expression)
    assert deleted.deleted and deleted.data[0]["fields"] == {
        "question_text": "q",
        "pub_date": None,
    }


def test_hooks_still_see_the_changes_of_the_save(committed):
    seen = []
    with committed():
        question = Question.objects.create(question_text="a")
        question.serialize_diff = lambda dirty, created=False: (
            seen.append(question.get_dirty_fields()) or {"ok": True}
        )
        question.question_text = "b"
        question.save()
    assert seen == [{"question_text": "a"}]
    assert question.get_dirty_fields() == {}


def test_json_field_values_use_the_fields_encoder(committed):
    with committed():
        tagged = Tagged.objects.create(tags={"s": {2, 1}})
    assert tagged.diffs[0].data[0]["fields"] == {"tags": {"s": [1, 2]}}


def test_default_path_error_names_the_model_and_the_fix(monkeypatch):
    monkeypatch.setattr("diffs.payload.default_data", lambda instance, fields: [{1, 2}])
    with pytest.raises(HookError, match=r"default serializer could not encode a diff of Question"):
        Question.objects.create(question_text="x")


@pytest.mark.django_db(transaction=True)
def test_a_delete_hands_serialize_diff_the_rows_values_not_unsaved_edits(monkeypatch):
    seen = []

    def serialize_diff(self, dirty_fields, created=False):
        seen.append(dict(dirty_fields))
        return {"text": dirty_fields.get("question_text")}

    question = Question.objects.create(question_text="saved")
    monkeypatch.setattr(Question, "serialize_diff", serialize_diff, raising=False)
    question.question_text = "never saved"
    question.delete()
    assert seen[-1]["question_text"] == "saved"
