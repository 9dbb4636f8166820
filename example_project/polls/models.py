"""The README's models: every create, update and delete is recorded in Redis."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

import diffs


class Tag(models.Model):
    """Not registered: a question's tags are recorded as part of the question."""

    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name


# old_values: each update also keeps what it replaced (the admin shows old -> new).
# mask: a change of the moderator's note is recorded, never the note itself.
@diffs.register(old_values=True, mask=["moderator_note"])
class Question(models.Model):
    question_text = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published", default=timezone.now)
    moderator_note = models.TextField(blank=True, default="")
    # Adding or removing a tag records a diff of the question: {"tags": [pks]}.
    tags = models.ManyToManyField(Tag, blank=True, related_name="questions")

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
