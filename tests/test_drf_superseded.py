"""The REST endpoint's feed never shows a diff of an earlier row
because a row with the same pk is in the queryset now.

A ``superseded`` diff was recorded before the latest creation of its holder (a pk
deleted and used again): only its deletion may be shown, and only when
``deleted_diff_visible()`` says so. Tested with diffs built here, through the view's
``visible_diffs()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from diffs.diff import Diff
from tests.testapp.models import Question
from tests.testapp.views import QuestionViewSet, VotedQuestionViewSet

pytestmark = pytest.mark.django_db


def view_of(view_class: type) -> Any:
    """A viewset instance in the state of a feed request."""
    request = Request(APIRequestFactory().get("/"))
    return view_class(request=request, action="list", format_kwarg=None, args=(), kwargs={})


def question_diff(
    pk: int, *, votes: int, deleted: bool = False, created: bool = False, **extra: Any
) -> Diff:
    data = [
        {
            "model": "testapp.question",
            "pk": pk,
            "fields": {"question_text": f"votes={votes}", "pub_date": None, "votes": votes},
        }
    ]
    return Diff.stored(
        data,
        created=created,
        deleted=deleted,
        pk=pk,
        model="testapp.question",
        holder_pk=pk,
        cursor=str(1000.0 + len(extra)),
        **extra,
    )


def shown(view: Any, diffs: list[Diff]) -> list[int]:
    return [diffs.index(diff) for diff in view.visible_diffs(diffs)]


def test_an_earlier_rows_diffs_are_not_shown_because_its_pk_is_in_the_queryset_now():
    question = Question.objects.create(question_text="the new row", votes=1)
    pk = question.pk
    diffs = [
        question_diff(pk, votes=0, created=True, superseded=True),  # the earlier row...
        question_diff(pk, votes=0, superseded=True),
        question_diff(pk, votes=0, deleted=True, superseded=True),  # ...and its deletion
        question_diff(pk, votes=1, created=True),  # the row there now
    ]
    # votes >= 1: the earlier row never passed the filter; the present one does
    assert shown(view_of(VotedQuestionViewSet), diffs) == [3]


def test_an_earlier_rows_deletion_follows_deleted_diff_visible():
    question = Question.objects.create(question_text="the new row", votes=1)
    pk = question.pk
    diffs = [
        question_diff(pk, votes=5, superseded=True),
        question_diff(pk, votes=5, deleted=True, superseded=True),
        question_diff(pk, votes=1, created=True),
    ]
    # the earlier row passed the filter when deleted: its deletion is shown, not its update
    assert shown(view_of(VotedQuestionViewSet), diffs) == [1, 2]
    # without a filter every deletion is shown, but still no update of an earlier row
    assert shown(view_of(QuestionViewSet), diffs) == [1, 2]


def test_an_overridden_deleted_diff_visible_decides_for_earlier_rows_too():
    class Refusing(VotedQuestionViewSet):
        asked: list[Diff] = []

        def deleted_diff_visible(self, diff: Diff) -> bool:
            self.asked.append(diff)
            return False

    question = Question.objects.create(question_text="the new row", votes=1)
    earlier = question_diff(question.pk, votes=5, deleted=True, superseded=True)
    current = question_diff(question.pk, votes=1)
    assert shown(view_of(Refusing), [earlier, current]) == [1]
    assert Refusing.asked == [earlier]


def test_a_childs_diff_sent_to_an_earlier_parent_is_not_shown():
    question = Question.objects.create(question_text="the new row", votes=1)
    data = [{"model": "testapp.choice", "pk": 7, "fields": {"choice_text": "old"}}]
    child = Diff.stored(
        data,
        created=False,
        pk=7,
        model="testapp.choice",
        holder_pk=question.pk,
        cursor="1000.0",
        superseded=True,
    )
    assert shown(view_of(VotedQuestionViewSet), [child]) == []
    assert shown(view_of(QuestionViewSet), [child]) == []
    # the same diff of the present parent is shown
    present = Diff.stored(
        data, created=False, pk=7, model="testapp.choice", holder_pk=question.pk, cursor="1.0"
    )
    assert shown(view_of(VotedQuestionViewSet), [present]) == [0]


def test_no_query_for_a_page_of_earlier_rows_only(django_assert_num_queries):
    question = Question.objects.create(question_text="the new row", votes=1)
    diffs = [question_diff(question.pk, votes=1, superseded=True) for _ in range(3)]
    view = view_of(VotedQuestionViewSet)
    with django_assert_num_queries(0):
        assert view.visible_diffs(diffs) == []
