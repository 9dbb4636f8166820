"""The admin: questions with their choices inline, and the question's recent diffs."""

from __future__ import annotations

import datetime as dt
import json

import redis
from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from diffs import Diff
from polls.models import Choice, Question

RECENT_DIFFS = 10


class ChoiceInline(admin.TabularInline):
    model = Choice
    extra = 1


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["question_text", "pub_date"]
    inlines = [ChoiceInline]
    readonly_fields = ["recent_diffs"]

    @admin.display(description=f"Last {RECENT_DIFFS} diffs (oldest first)")
    def recent_diffs(self, obj: Question) -> SafeString:
        if obj.pk is None:
            return format_html("{}", "Diffs appear once the question is saved.")
        try:
            recent = Question.diffs.get_sortedset(obj.pk)[-RECENT_DIFFS:]
        except redis.RedisError as error:
            return format_html("Could not read the diffs from Redis: {}", error)
        if not recent:
            return format_html("{}", "No diffs in the retention window.")
        return format_html(
            "<ol>{}</ol>",
            format_html_join("\n", "<li>{} {}<br><code>{}</code></li>", _rows(recent)),
        )


def _rows(recent: list[Diff]) -> list[tuple[str, str, str]]:
    return [(_utc(diff.timestamp), _kind(diff), _compact(diff.data)) for diff in recent]


def _utc(timestamp_ms: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _kind(diff: Diff) -> str:
    return f"created={diff.created} deleted={diff.deleted}"


def _compact(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
