"""Models the tests need: the README's Question/Choice, and one model per edge case."""

from __future__ import annotations

import json
import uuid
from typing import Any

from dirtyfields import DirtyFieldsMixin
from django.apps import apps
from django.db import models

import diffs

#: False: the decorators below run while the app registry is still loading.
APPS_READY_AT_IMPORT = apps.ready


@diffs.register
class Question(models.Model):
    question_text = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published", null=True)
    votes = models.IntegerField(default=0)


@diffs.register
class Choice(models.Model):
    question = models.ForeignKey(Question, on_delete=models.CASCADE)
    choice_text = models.CharField(max_length=200)
    votes = models.IntegerField(default=0)

    def get_diff_parent(self) -> Question:
        # no database lookup: the pk is all the key needs
        return Question(id=self.question_id)


@diffs.register
class Article(models.Model):
    """Six field types, the FK included."""

    title = models.CharField(max_length=100)
    body = models.TextField(blank=True)
    rank = models.IntegerField(default=0)
    published_at = models.DateTimeField(null=True)
    is_public = models.BooleanField(default=False)
    question = models.ForeignKey(Question, null=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)


@diffs.register
class UUIDItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=50)


@diffs.register
class CodeItem(models.Model):
    code = models.CharField(primary_key=True, max_length=1000)
    name = models.CharField(max_length=50)


@diffs.register
class MixinItem(DirtyFieldsMixin, models.Model):
    """Already uses django-dirtyfields: nothing is grafted."""

    name = models.CharField(max_length=50)


@diffs.register
class OwnDirtyItem(models.Model):
    """Brings its own get_dirty_fields(), which is called with no arguments."""

    name = models.CharField(max_length=50)

    def get_dirty_fields(self) -> dict[str, Any]:
        return {"name": "always"}


class Place(models.Model):
    name = models.CharField(max_length=50)


@diffs.register
class Restaurant(Place):
    """Multi-table inheritance: the parent model is not registered."""

    serves_pizza = models.BooleanField(default=False)


class Untracked(models.Model):
    name = models.CharField(max_length=50)


class AbstractThing(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        abstract = True


class QuestionProxy(Question):
    """An unregistered proxy of a registered model: its saves are recorded too."""

    class Meta:
        proxy = True


class SetEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, set):
            return sorted(o)
        return super().default(o)


@diffs.register
class Tagged(models.Model):
    tags = models.JSONField(encoder=SetEncoder, default=dict)


class ItemQuerySet(diffs.DiffsQuerySetMixin, models.QuerySet):
    def named(self, name: str) -> ItemQuerySet:
        return self.filter(name=name)


@diffs.register
class CustomQuerySetItem(models.Model):
    """Its own queryset class opts in with the mixin."""

    name = models.CharField(max_length=50)
    count = models.IntegerField(default=0)

    objects = ItemQuerySet.as_manager()


class Badge(models.Model):
    """A foreign key target with a unique key that is not its pk."""

    slug = models.SlugField(unique=True)


@diffs.register
class Secretive(models.Model):
    """Columns the REST serializers leave out, and foreign keys."""

    name = models.CharField(max_length=50)
    secret = models.CharField(max_length=50, default="")
    score = models.FloatField(default=0.0)
    owner = models.ForeignKey(Question, null=True, blank=True, on_delete=models.SET_NULL)
    badge = models.ForeignKey(
        Badge, to_field="slug", null=True, blank=True, on_delete=models.SET_NULL
    )


class SecretiveProxy(Secretive):
    """Saves of a proxy land in its concrete model's sets, with the proxy's label in data."""

    class Meta:
        proxy = True


@diffs.register
class CustomSerialized(models.Model):
    """Data in a format of its own: the REST endpoint cannot tell what it shows."""

    name = models.CharField(max_length=50)
    secret = models.CharField(max_length=50, default="")

    def serialize_diff(self, dirty_fields: dict[str, Any], created: bool = False) -> Any:
        return {"name": self.name, "secret": self.secret}


@diffs.register(old_values=True)
class Ledger(models.Model):
    """Registered with old_values=True: diffs carry each changed field's old value."""

    name = models.CharField(max_length=50)
    amount = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    due = models.DateTimeField(null=True)
    question = models.ForeignKey(Question, null=True, on_delete=models.SET_NULL)
    extra = models.JSONField(null=True)


class LedgerProxy(Ledger):
    class Meta:
        proxy = True


@diffs.register(exclude=["login_count"], mask=["password"], old_values=True)
class Account(models.Model):
    """A column never tracked (login_count) and one whose value never reaches Redis."""

    username = models.CharField(max_length=50)
    password = models.CharField(max_length=128, default="")
    login_count = models.IntegerField(default=0)


@diffs.register(fields=["title"])
class Memo(models.Model):
    """Only the title is tracked."""

    title = models.CharField(max_length=50)
    body = models.TextField(default="")


class Tag(models.Model):
    """Not registered: the other side of Post's many-to-many fields."""

    name = models.CharField(max_length=50)


@diffs.register(old_values=True)
class Post(models.Model):
    """Many-to-many fields: an automatic through table, a symmetrical one, and one
    through a registered model."""

    title = models.CharField(max_length=50)
    tags = models.ManyToManyField(Tag, related_name="posts", blank=True)
    related = models.ManyToManyField("self", blank=True)
    featured = models.ManyToManyField(
        Tag, through="Feature", related_name="featured_in", blank=True
    )


@diffs.register
class Feature(models.Model):
    """A registered through model: rows created directly are recorded as any model's."""

    post = models.ForeignKey(Post, on_delete=models.CASCADE)
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE)
    note = models.CharField(max_length=50, default="")


class AccountProxy(Account):
    """A proxy of Account: registered on its own by a test, it keeps Account's mask."""

    class Meta:
        proxy = True
