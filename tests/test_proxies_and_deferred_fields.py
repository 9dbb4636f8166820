"""Proxies record into their concrete model's key; deferred fields are loaded, and
deletes of deferred instances record every field."""

from __future__ import annotations

import pytest

import diffs
from tests.testapp.models import Question, QuestionProxy

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
