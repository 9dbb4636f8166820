"""Edge cases: proxies, expressions, deferred fields, hooks and value objects."""

from __future__ import annotations

import pytest
from django.db import models
from django.db.models import F

import diffs
from diffs import Diff, HookError
from diffs.checks import check_registered_models
from tests.testapp.models import Question, QuestionProxy, Tagged

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_saves_through_an_unregistered_proxy_land_in_the_concrete_key(committed):
    assert diffs.is_registered(QuestionProxy)
    with committed():
        proxied = QuestionProxy.objects.create(question_text="via proxy")
        proxied.question_text = "edited via proxy"
        proxied.save()
    assert QuestionProxy.diffs.get_key(proxied.pk) == Question.diffs.get_key(proxied.pk)
    assert [d.created for d in Question.diffs.get_by_object_id(proxied.pk)] == [True, False]
    assert proxied.diffs[-1].data[0]["fields"] == {"question_text": "edited via proxy"}


def test_a_proxy_declared_after_registration_is_recorded(committed):
    class LateProxy(Question):
        class Meta:
            proxy = True
            app_label = "testapp"

    with committed():
        late = LateProxy.objects.create(question_text="late")
    assert len(Question.diffs.get_by_object_id(late.pk)) == 1


def test_deferred_loading_through_a_proxy():
    question = Question.objects.create(question_text="a", votes=1)
    loaded = QuestionProxy.objects.defer("question_text").get(pk=question.pk)
    assert loaded.question_text == "a"
    loaded.refresh_from_db(fields=["votes"])
    assert loaded.votes == 1


def test_deleting_a_deferred_instance(committed):
    question = Question.objects.create(question_text="gone", votes=3)
    with committed():
        Question.objects.defer("question_text").get(pk=question.pk).delete()
        Question.objects.create(question_text="x")
    assert not Question.objects.filter(pk=question.pk).exists()
    deleted = Question.diffs.get_by_object_id(question.pk)[-1]
    assert deleted.deleted
    assert deleted.data[0]["fields"] == {"votes": 3, "pub_date": None}


def test_queryset_delete_with_only(committed):
    pks = [Question.objects.create(question_text=str(i)).pk for i in range(2)]
    with committed():
        Question.objects.only("votes").filter(pk__in=pks).delete()
    assert [Question.diffs.get_by_object_id(pk)[-1].deleted for pk in pks] == [True, True]


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


def test_register_call_form():
    assert diffs.register() is diffs.register
    assert diffs.register()(Question) is Question


def test_diff_is_hashable_and_create_text_errors_are_clear():
    assert len({Diff(data=[1], id="a", timestamp=1.0), Diff(data=[1], id="a", timestamp=1.0)}) == 1
    with pytest.raises(ValueError, match="must be a JSON document"):
        Question.diffs.create(data="price changed", pk=1)


def test_a_replaced_diffs_attribute_is_reported():
    class Target(models.Model):
        class Meta:
            app_label = "testapp"

    diffs.register(Target)
    try:

        class Pointer(models.Model):
            target = models.ForeignKey(Target, models.CASCADE, related_name="diffs")

            class Meta:
                app_label = "testapp"

        [error] = [m for m in check_registered_models() if m.id == "diffs.E011"]
        assert error.id == "diffs.E011"
        assert "testapp.Target.diffs" in error.msg
        assert "related_name='diffs'" in error.hint
    finally:
        diffs.unregister(Target)
