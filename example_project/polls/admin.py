"""The admin: questions with their choices inline, and their "Recent changes" pages."""

from __future__ import annotations

from django.contrib import admin

from diffs.admin import DiffsAdminMixin
from polls.models import Choice, Question, Tag


class ChoiceInline(admin.TabularInline):
    model = Choice
    extra = 1


@admin.register(Question)
class QuestionAdmin(DiffsAdminMixin, admin.ModelAdmin):
    """A question's page links to its recent changes (its choices' and tags' included),
    and the list of questions to every question's."""

    list_display = ["question_text", "pub_date"]
    filter_horizontal = ["tags"]
    inlines = [ChoiceInline]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name"]
