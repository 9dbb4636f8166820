"""The admin of the test project: the "Recent changes" pages of django-diffs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet

from diffs.admin import DiffsAdminMixin
from tests.testapp.models import Ledger, Question


@admin.register(Question)
class QuestionAdmin(DiffsAdminMixin, admin.ModelAdmin):
    """Questions whose text starts with "hidden" are not this admin's to show."""

    fields = ["question_text", "pub_date", "votes"]

    def get_queryset(self, request: Any) -> QuerySet[Question]:
        return super().get_queryset(request).exclude(question_text__startswith="hidden")


@admin.register(Ledger)
class LedgerAdmin(DiffsAdminMixin, admin.ModelAdmin):
    """Shows every column but the amount (its fieldsets leave it out)."""

    fieldsets = [(None, {"fields": ["name", "due"]}), ("Links", {"fields": ["question"]})]
