"""The admin of the test project: the "Recent changes" pages of django-diffs."""

from __future__ import annotations

from django.contrib import admin

from diffs.admin import DiffsAdminMixin
from tests.testapp.models import Ledger, Question


@admin.register(Question)
class QuestionAdmin(DiffsAdminMixin, admin.ModelAdmin):
    fields = ["question_text", "pub_date", "votes"]


@admin.register(Ledger)
class LedgerAdmin(DiffsAdminMixin, admin.ModelAdmin):
    """Shows every column but the amount."""

    fields = ["name", "due", "question"]
