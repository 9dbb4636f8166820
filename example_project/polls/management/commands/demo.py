"""``manage.py demo``: record, read and prune a few diffs, all in this one process.

It runs in one process so that it works in test mode too, where fakeredis keeps its
data in memory. The saves run in autocommit mode, so each diff is written as soon as
its save commits: do not wrap them in ``transaction.atomic()`` here.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from diffs import Diff, get_connection
from diffs.settings import get_settings
from polls.models import Choice, Question


class Command(BaseCommand):
    help = "Create, edit and delete a few polls objects, then show and prune their diffs."

    def handle(self, *args: Any, **options: Any) -> None:
        if Question._meta.db_table not in connection.introspection.table_names():
            msg = "The polls tables do not exist yet: run 'python manage.py migrate' first."
            raise CommandError(msg)
        prefix = get_settings().prefix
        self.stdout.write(
            f"django-diffs demo, Redis: {_redis_description()}, keys under {prefix!r}\n"
        )

        question = Question.objects.create(question_text="What is new?")
        self.say(f'Created question {question.pk}: "{question}"')
        for text in ("What is new in Django?", "What is new in django-diffs?"):
            question.question_text = text
            question.save()
        self.say(f'Edited its text twice, now "{question}"')
        choice = Choice.objects.create(question=question, choice_text="Diffs")
        self.say(f'Created choice {choice.pk}: "{choice}"')
        choice.votes += 1
        choice.save()
        self.say(f"Voted for it: votes={choice.votes} (the diff goes to the question's set)")
        choice_pk = choice.pk
        choice.delete()
        self.say("Deleted the choice")

        self.stdout.write(self.style.MIGRATE_HEADING(f"\nDiffs of question {question.pk}:"))
        for number, diff in enumerate(question.diffs, start=1):
            self.stdout.write(f"{number}. {_describe(diff)}")
            self.stdout.write(f"   {_compact(diff.data)}")
        own = len(Choice.diffs.get_by_object_id(choice_pk))
        self.stdout.write(
            f"(choice {choice_pk}'s own set holds {own} diffs: get_diff_parent() sends them here)"
        )

        diff_set = Question.diffs.get_sortedset(question.pk)
        self.stdout.write(self.style.MIGRATE_HEADING(f"\nSorted set {diff_set.key}:"))
        self.stdout.write(
            f"len={len(diff_set)}, min_score={diff_set.min_score}, "
            f"max_score={diff_set.max_score} (epoch ms)"
        )

        self.stdout.write(self.style.MIGRATE_HEADING("\nPruning:"))
        self.stdout.write("$ manage.py prune_diffs --dry-run")
        call_command("prune_diffs", "--dry-run", stdout=self.stdout)
        time.sleep(0.01)  # so that every diff is older than the 1 ms --max-age below
        self.stdout.write("$ manage.py prune_diffs --max-age 0.001")
        call_command("prune_diffs", "--max-age", "0.001", stdout=self.stdout)
        self.say(f"Diffs left for question {question.pk}: {len(diff_set)}")

    def say(self, text: str) -> None:
        self.stdout.write(f"- {text}")


def _redis_description() -> str:
    if settings.DIFFS_SETTINGS.get("test_mode"):
        return "fakeredis (test mode; the data lives in this process only)"
    kwargs = get_connection().connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return f"{where} db {kwargs.get('db', 0)}"


def _describe(diff: Diff) -> str:
    moment = dt.datetime.fromtimestamp(diff.timestamp / 1000, tz=dt.timezone.utc)
    when = moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{when} UTC  created={diff.created}  deleted={diff.deleted}"


def _compact(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
