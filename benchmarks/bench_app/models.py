"""Six field types (char, text, int, datetime, bool, FK), registered and not.

The tables are created by the scripts with the schema editor; this app has no
migrations on purpose, so that nothing here can end up in a user's project.
"""

from __future__ import annotations

from django.db import models

import diffs


class Author(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.name


class PlainArticle(models.Model):
    """The twin: the same fields, no django-diffs."""

    title = models.CharField(max_length=100)
    body = models.TextField()
    rank = models.IntegerField(default=0)
    published_at = models.DateTimeField()
    is_public = models.BooleanField(default=False)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)

    class Meta:
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.title


@diffs.register
class TrackedArticle(models.Model):
    title = models.CharField(max_length=100)
    body = models.TextField()
    rank = models.IntegerField(default=0)
    published_at = models.DateTimeField()
    is_public = models.BooleanField(default=False)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)

    class Meta:
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.title
