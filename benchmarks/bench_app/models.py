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


class _Fields(models.Model):
    """Six field types (char, text, int, datetime, bool, FK): every article model's."""

    title = models.CharField(max_length=100)
    body = models.TextField()
    rank = models.IntegerField(default=0)
    published_at = models.DateTimeField()
    is_public = models.BooleanField(default=False)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.title


class PlainArticle(_Fields):
    """The twin: the same fields, no django-diffs."""

    class Meta:
        app_label = "bench_app"


@diffs.register
class TrackedArticle(_Fields):
    class Meta:
        app_label = "bench_app"


@diffs.register(old_values=True)
class OldValuesArticle(_Fields):
    class Meta:
        app_label = "bench_app"


@diffs.register(mask=["body"])
class MaskedArticle(_Fields):
    class Meta:
        app_label = "bench_app"


class PlainTagged(models.Model):
    """The twin of TaggedArticle: a many-to-many field, no django-diffs."""

    title = models.CharField(max_length=100)
    tags = models.ManyToManyField(Author, related_name="+")

    class Meta:
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.title


@diffs.register
class TaggedArticle(models.Model):
    title = models.CharField(max_length=100)
    tags = models.ManyToManyField(Author, related_name="+")

    class Meta:
        app_label = "bench_app"

    def __str__(self) -> str:
        return self.title
