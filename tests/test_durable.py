"""Durable mode: an outbox row per diff, written in the change's own transaction."""

from __future__ import annotations

import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

import diffs
from diffs import delivery
from diffs.delivery import queue
from diffs.models import OutboxEntry
from tests.conftest import diffs_settings, unreachable_url
from tests.support.keynames import feed_key, index_key, object_key
from tests.support.stored import stored_members
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def durable():
    with diffs_settings(durable=True):
        yield


def unreachable():
    url = unreachable_url()
    return diffs_settings(url=url, test_mode=False, socket_timeout=0.5, durable=True)


def texts(question: Question) -> list[str]:
    return [d.data[0]["fields"]["question_text"] for d in question.diffs]


def test_the_outbox_row_commits_with_the_change_and_goes_once_redis_has_it():
    with transaction.atomic():
        question = Question.objects.create(question_text="one")
        [row] = OutboxEntry.objects.all()
        assert (row.label, row.object_pk) == ("testapp.question", str(question.pk))
        assert row.key == object_key("testapp.question", question.pk)
    assert not OutboxEntry.objects.exists()
    assert texts(question) == ["one"]


def test_rolled_back_changes_leave_no_row_and_no_diff():
    with transaction.atomic():
        kept = Question.objects.create(question_text="kept")
        try:
            with transaction.atomic():
                Question.objects.create(question_text="rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
    try:
        with transaction.atomic():
            Question.objects.create(question_text="all rolled back")
            raise RuntimeError
    except RuntimeError:
        pass
    assert not OutboxEntry.objects.exists()
    assert list(Question.objects.values_list("question_text", flat=True)) == ["kept"]
    assert texts(kept) == ["kept"]
    found = diffs.get_connection().scan_iter(match=index_key("testapp.question", "*"))
    assert len(list(found)) == 1


def test_rows_outlive_an_outage_and_flush_diffs_writes_them_once():
    with unreachable():
        question = Question.objects.create(question_text="one")
        question.question_text = "two"
        question.save()
    assert OutboxEntry.objects.count() == 2
    delivery.clear()  # as if the process had exited: memory is gone, the rows are not
    report = diffs.flush_diffs()
    assert (report.from_memory, report.from_outbox) == (0, 2)
    assert not OutboxEntry.objects.exists()
    assert texts(question) == ["one", "two"]
    assert diffs.flush_diffs().from_outbox == 0
    assert texts(question) == ["one", "two"]


def test_a_process_that_dies_after_commit_loses_nothing(monkeypatch):
    # The process "dies" between the commit and the Redis write: nothing is flushed.
    monkeypatch.setattr(queue, "write_queued", lambda force=False: queue.Written(0, 0))
    with transaction.atomic():
        question = Question.objects.create(question_text="committed")
    assert question.diffs == []
    delivery.clear()
    monkeypatch.undo()
    call_command("flush_diffs")
    assert texts(question) == ["committed"]
    assert question.diffs[0].timestamp <= float(question.diffs[0].cursor)


def test_a_row_redis_already_has_is_not_written_twice():
    question = Question.objects.create(question_text="once")
    [diff] = question.diffs
    # The process wrote the diff but died before deleting its row: put a row back.
    member = stored_members(diffs.get_connection(), Question.diffs.get_key(question.pk))[0]
    OutboxEntry.objects.create(
        key=Question.diffs.get_key(question.pk),
        feed_key=feed_key("testapp.question"),
        member=member.decode() if isinstance(member, bytes) else member,
        feed_member=f"{diff.id}{question.pk}",
        score=None,
        recorded_ms=diff.timestamp,
        label="testapp.question",
        object_pk=str(question.pk),
    )
    assert diffs.flush_diffs().from_outbox == 1
    assert [d.id for d in question.diffs] == [diff.id]
    assert not OutboxEntry.objects.exists()


def test_a_raising_user_callback_cannot_lose_a_durable_diff():
    def broken() -> None:
        raise RuntimeError("a user callback")

    with pytest.raises(RuntimeError), transaction.atomic():
        transaction.on_commit(broken)  # Django runs no callback after this one
        question = Question.objects.create(question_text="saved")
    assert question.diffs == []
    diffs.flush_diffs()
    assert texts(question) == ["saved"]


def test_each_database_has_its_own_outbox():
    with transaction.atomic(using="other"):
        question = Question.objects.using("other").create(question_text="elsewhere")
        assert OutboxEntry.objects.using("other").count() == 1
        assert not OutboxEntry.objects.exists()
    assert not OutboxEntry.objects.using("other").exists()
    assert texts(question) == ["elsewhere"]


def test_outbox_entry_str():
    entry = OutboxEntry(label="testapp.question", object_pk="7")
    assert str(entry) == "diff of testapp.question pk=7"


def test_flush_diffs_command_fails_while_redis_cannot_take_the_outbox():
    with unreachable():
        Question.objects.create(question_text="kept")
        delivery.clear()
        with pytest.raises(CommandError, match="run flush_diffs again once Redis answers"):
            call_command("flush_diffs")
    assert OutboxEntry.objects.count() == 1
    call_command("flush_diffs")
    assert not OutboxEntry.objects.exists()


def test_a_failed_outbox_cleanup_is_only_a_warning(monkeypatch, caplog):
    from django.db import DatabaseError

    from diffs.delivery import outbox

    def broken(self):
        raise DatabaseError("connection lost")

    monkeypatch.setattr("django.db.models.query.QuerySet.delete", broken)
    with caplog.at_level(logging.WARNING, logger="diffs"):
        outbox.forget([("default", 1)])
    assert "flush_diffs will find them already in Redis" in caplog.records[0].message


def test_a_missing_outbox_table_is_a_warning(monkeypatch, caplog):
    from django.db import DatabaseError

    from diffs.delivery import outbox

    def missing(alias, batch_size=500):
        raise DatabaseError("no such table: diffs_outbox")
        yield  # pragma: no cover

    monkeypatch.setattr(outbox, "rows", missing)
    with caplog.at_level(logging.WARNING, logger="diffs"):
        diffs.flush_diffs()
    assert "run manage.py migrate diffs --database=default" in caplog.records[0].message
