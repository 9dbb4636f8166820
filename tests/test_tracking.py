"""The django-dirtyfields API a registered model gains, and what it does not change."""

from __future__ import annotations

import pytest
from dirtyfields import DirtyFieldsMixin
from django.db import models
from django.db.migrations.state import ModelState

from tests.testapp.models import Article, MixinItem, Question, Restaurant

pytestmark = pytest.mark.django_db


def test_registered_model_gains_the_dirtyfields_api():
    question = Question(question_text="a")
    assert question.is_dirty() is True  # unsaved: everything is dirty
    question.save()
    assert question.is_dirty() is False
    assert question.get_dirty_fields() == {}
    question.question_text = "b"
    assert question.get_dirty_fields() == {"question_text": "a"}
    assert question.get_dirty_fields(verbose=True) == {
        "question_text": {"saved": "a", "current": "b"}
    }


def test_bases_mro_and_migrations_are_untouched():
    assert Question.__bases__ == (models.Model,)
    assert DirtyFieldsMixin not in Question.__mro__
    assert ModelState.from_model(Question).bases == (models.Model,)
    assert ModelState.from_model(Restaurant).bases == ("testapp.place",)


def test_a_mixin_model_keeps_its_own_bases():
    assert MixinItem.__bases__ == (DirtyFieldsMixin, models.Model)


def test_relationship_changes_are_visible_with_check_relationship():
    question = Question.objects.create(question_text="q")
    article = Article.objects.create(title="t")
    article.question = question
    assert article.get_dirty_fields() == {}
    assert article.get_dirty_fields(check_relationship=True) == {"question": None}


def test_save_dirty_fields():
    article = Article.objects.create(title="t", rank=1)
    article.rank = 2
    article.save_dirty_fields()
    article.refresh_from_db()
    assert article.rank == 2


def test_refresh_from_db_resets_the_snapshot():
    question = Question.objects.create(question_text="a")
    Question.objects.filter(pk=question.pk).update(question_text="elsewhere")
    question.refresh_from_db()
    assert question.question_text == "elsewhere"
    assert question.get_dirty_fields() == {}


def test_deferred_field_loaded_later_is_tracked(django_capture_on_commit_callbacks):
    question = Question.objects.create(question_text="a", votes=1)
    loaded = Question.objects.only("votes").get(pk=question.pk)
    assert "question_text" not in loaded.get_dirty_fields(check_relationship=True)
    assert loaded.question_text == "a"  # loads the deferred field through refresh_from_db
    loaded.question_text = "b"
    assert loaded.get_dirty_fields() == {"question_text": "a"}
    with django_capture_on_commit_callbacks(execute=True):
        loaded.save()
    assert loaded.diffs[-1].data[0]["fields"] == {"question_text": "b"}


def test_saving_a_deferred_instance_records_only_loaded_changes(
    django_capture_on_commit_callbacks,
):
    question = Question.objects.create(question_text="a", votes=1)
    loaded = Question.objects.only("votes").get(pk=question.pk)
    loaded.votes = 2
    with django_capture_on_commit_callbacks(execute=True):
        loaded.save()
    assert question.diffs[-1].data[0]["fields"] == {"votes": 2}
