"""The README's models: every create, update and delete is recorded in Redis."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

import diffs


# old_values: each update also keeps what it replaced (the admin shows old -> new).
@diffs.register(old_values=True)
class Question(models.Model):
    question_text = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published", default=timezone.now)

    def __str__(self) -> str:
        return self.question_text


@diffs.register
class Choice(models.Model):
    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="choices")
    choice_text = models.CharField(max_length=200)
    votes = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.choice_text

    def get_diff_parent(self) -> Question:
        # No database lookup needed: the parent's class and pk are all the key needs,
        # so a choice's diffs go to its question's sorted set.
        return Question(id=self.question_id)
