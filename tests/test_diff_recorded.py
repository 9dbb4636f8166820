"""``diffs.signals.diff_recorded``: once per diff, after Redis stored it, in every mode."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction

import diffs
from diffs import availability, delivery
from diffs.delivery import announce
from diffs.models import OutboxEntry
from diffs.signals import diff_recorded
from tests.conftest import diffs_settings
from tests.test_outages import unreachable
from tests.test_write_behind import wait_until
from tests.testapp.models import Choice, Ledger, Question

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def received():
    """Every (sender, diff) the signal delivers during the test."""
    got = []

    def receiver(sender, diff, **kwargs):
        got.append((sender, diff))

    diff_recorded.connect(receiver)
    yield got
    diff_recorded.disconnect(receiver)


def ids(received):
    return [diff.id for _, diff in received]


def test_the_receiver_gets_the_model_and_the_diff_a_read_returns(received):
    with diffs.context(user=1):
        question = Question.objects.create(question_text="q")
    [(sender, diff)] = received
    [stored] = question.diffs
    assert sender is Question
    for name in ("id", "data", "created", "deleted", "timestamp", "cursor", "context"):
        assert getattr(diff, name) == getattr(stored, name), name
    assert (diff.model, diff.pk, diff.holder_pk) == ("testapp.question", question.pk, question.pk)


def test_old_values_and_child_diffs_come_as_a_read_shows_them(received):
    ledger = Ledger.objects.create(name="a")
    ledger.name = "b"
    ledger.save()
    assert received[-1][1].old == {"name": "a"}
    question = Question.objects.create(question_text="q")
    Choice.objects.create(question=question, choice_text="c")
    sender, diff = received[-1]
    assert sender is Choice
    assert (diff.model, diff.holder_pk) == ("testapp.choice", question.pk)
    assert diff.id == question.diffs[-1].id


@pytest.mark.parametrize("mode", ["on_commit", "immediate", "durable"])
def test_once_per_diff_in_each_mode(received, mode):
    with diffs_settings(delivery=mode):
        with transaction.atomic():
            question = Question.objects.create(question_text="a")
            question.question_text = "b"
            question.save()
        Question.objects.filter(pk=question.pk).update(question_text="c")
        Question.objects.bulk_create([Question(question_text="d")])
    stored = [d.id for d in question.diffs]
    assert ids(received)[:3] == stored
    assert len(ids(received)) == len(set(ids(received))) == 4


def test_once_per_diff_with_write_behind(received):
    with diffs_settings(delivery="write_behind"):
        question = Question.objects.create(question_text="a")
        wait_until(lambda: len(received) == 1)
        delivery.flush_diffs()
    assert ids(received) == [question.diffs[0].id]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_diffs_written_by_flush_diffs_from_the_outbox_are_sent_once(received, monkeypatch):
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.0)
    with diffs_settings(delivery="durable"), unreachable():
        Question.objects.create(question_text="kept in the outbox")
    assert received == [] and OutboxEntry.objects.count() == 1
    delivery.clear()  # the process that saved it is gone
    with diffs_settings(delivery="durable"):
        delivery.flush_diffs()
        delivery.flush_diffs()
    assert len(received) == 1 and received[0][1].data[0]["fields"]["question_text"] == (
        "kept in the outbox"
    )


def test_a_failed_write_sends_nothing_and_its_retry_sends_once(received, monkeypatch):
    monkeypatch.setattr(availability, "PAUSE_SECONDS", 0.0)
    with unreachable():
        Question.objects.create(question_text="waits")
    assert received == [] and delivery.waiting() == 1
    Question.objects.create(question_text="next")
    assert [d.data[0]["fields"]["question_text"] for _, d in received] == ["waits", "next"]


def test_create_by_hand_is_sent_too(received):
    question = Question.objects.create(question_text="q")
    made = Question.diffs.create(data={"note": "by hand"}, pk=question.pk)
    assert received[-1][1].id == made.id and received[-1][0] is Question


def test_a_receiver_that_raises_is_logged_and_loses_or_repeats_nothing(received, caplog):
    def broken(sender, diff, **kwargs):
        raise RuntimeError("receiver broke")

    diff_recorded.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="diffs"):
            question = Question.objects.create(question_text="a")
            Question.objects.create(question_text="b")
    finally:
        diff_recorded.disconnect(broken)
    assert len(question.diffs) == 1
    assert len(received) == 2  # the other receiver got both, once each
    assert caplog.text.count("is not sent again") == 2


def test_a_receiver_for_one_sender_gets_only_its_models_diffs():
    got = []

    def questions_only(sender, diff, **kwargs):
        got.append(diff)

    diff_recorded.connect(questions_only, sender=Question)
    try:
        question = Question.objects.create(question_text="q")
        Ledger.objects.create(name="not a question")
    finally:
        diff_recorded.disconnect(questions_only, sender=Question)
    assert [d.id for d in got] == [question.diffs[0].id]


def test_without_receivers_nothing_is_decoded(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded without a receiver")

    monkeypatch.setattr(announce, "_as_read", fail)
    Question.objects.create(question_text="q")


def test_a_receiver_that_saves_a_registered_model_does_not_wait_for_itself(received):
    def audit(sender, diff, **kwargs):
        if sender is Ledger:
            Question.objects.create(question_text=f"audit of {diff.id}")

    diff_recorded.connect(audit)
    try:
        ledger = Ledger.objects.create(name="x")  # hung forever while receivers held the lock
    finally:
        diff_recorded.disconnect(audit)
    [audit_diff] = [d for s, d in received if s is Question]
    assert audit_diff.data[0]["fields"]["question_text"] == f"audit of {ledger.diffs[0].id}"
