from __future__ import annotations

import pytest

from tests.testapp.models import Choice, Question


@pytest.mark.django_db
def test_readme_example(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        question = Question.objects.create(question_text="What will happen?")
        choice = Choice.objects.create(choice_text="Nothing", question=question)
        choice.choice_text = "Something"
        choice.save()
    print(question.diffs)
    assert len(question.diffs) == 3
