"""With use_transactions the write happens on commit of the right database."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.conftest import diffs_settings
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    pass


def test_autocommit_writes_at_once():
    question = Question.objects.create(question_text="now")
    assert len(question.diffs) == 1


def test_write_waits_for_commit():
    with transaction.atomic():
        question = Question.objects.create(question_text="later")
        assert Question.diffs.get_by_object_id(question.pk) == []
    assert len(question.diffs) == 1


def test_rolled_back_transaction_writes_nothing():
    with pytest.raises(Boom), transaction.atomic():
        question = Question.objects.create(question_text="never")
        raise Boom
    assert Question.diffs.get_by_object_id(question.pk) == []


def test_rolled_back_savepoint_writes_nothing_but_the_rest_lands():
    with transaction.atomic():
        question = Question.objects.create(question_text="kept")
        with pytest.raises(Boom), transaction.atomic():
            question.question_text = "discarded"
            question.save()
            raise Boom
        other = Question.objects.create(question_text="also kept")
    assert [d.created for d in question.diffs] == [True]
    assert len(other.diffs) == 1


def test_deleting_in_a_rolled_back_transaction_writes_nothing():
    question = Question.objects.create(question_text="stays")
    pk = question.pk
    with pytest.raises(Boom), transaction.atomic():
        question.delete()
        raise Boom
    assert [d.deleted for d in Question.diffs.get_by_object_id(pk)] == [False]


def test_write_follows_the_database_the_instance_was_saved_to():
    with transaction.atomic(using="other"):
        question = Question(question_text="elsewhere")
        question.save(using="other")
        # the default database has no transaction open: a write registered there
        # (as 0.1.16 did) would already be in Redis
        assert Question.diffs.get_by_object_id(question.pk) == []
    assert len(Question.diffs.get_by_object_id(question.pk)) == 1


def test_rollback_on_other_database_writes_nothing():
    with pytest.raises(Boom), transaction.atomic(using="other"):
        question = Question(question_text="elsewhere")
        question.save(using="other")
        raise Boom
    assert Question.diffs.get_by_object_id(question.pk) == []


def test_without_transactions_the_write_is_immediate():
    with diffs_settings(use_transactions=False):
        with pytest.raises(Boom), transaction.atomic():
            question = Question.objects.create(question_text="eager")
            assert len(question.diffs) == 1
            raise Boom
        assert len(Question.diffs.get_by_object_id(question.pk)) == 1


def _texts(question: Question) -> list[str]:
    return [d.data[0]["fields"]["question_text"] for d in question.diffs]


def test_a_save_retried_after_a_rollback_records_its_change():
    question = Question.objects.create(question_text="before")
    question.question_text = "after"
    try:
        with transaction.atomic():
            question.save()
            raise Boom
    except Boom:
        pass
    question.save()  # the snapshot of the rolled-back save was undone: a change
    assert _texts(question) == ["before", "after"]


def test_a_rolled_back_savepoint_undoes_only_its_own_snapshot():
    question = Question.objects.create(question_text="one", pub_date=None)
    with transaction.atomic():
        question.question_text = "two"
        question.save()
        try:
            with transaction.atomic():
                question.question_text = "three"
                question.save()
                raise Boom
        except Boom:
            pass
        question.save()  # writes "three" again: relative to "two", committed above
    assert _texts(question) == ["one", "two", "three"]


def test_a_rolled_back_create_saved_again_is_a_whole_creation():
    question = Question(question_text="new")
    try:
        with transaction.atomic():
            question.save()
            raise Boom
    except Boom:
        pass
    question.save()  # Django INSERTs again
    [diff] = question.diffs
    assert diff.created is True
    assert set(diff.data[0]["fields"]) == {"question_text", "pub_date", "votes"}


def test_a_refresh_inside_a_rolled_back_block_is_undone():
    question = Question.objects.create(question_text="kept")
    try:
        with transaction.atomic():
            Question.objects.filter(pk=question.pk).update(question_text="rolled back")
            question.refresh_from_db()
            raise Boom
    except Boom:
        pass
    assert question.question_text == "rolled back"  # memory is not rolled back
    question.save()  # so this save writes "rolled back" for real: a change
    assert _texts(question) == ["kept", "rolled back"]


def test_snapshots_settle_after_a_commit():
    question = Question.objects.create(question_text="a")
    with transaction.atomic():
        question.question_text = "b"
        question.save()
    question.save()  # nothing changed since the commit: no diff
    assert _texts(question) == ["a", "b"]
    assert question.__dict__.get("_diffs_snapshot_undo") == []


def test_deleting_an_instance_whose_insert_rolled_back_records_nothing():
    with pytest.raises(Boom), transaction.atomic():
        ghost = Question.objects.create(question_text="never committed")
        raise Boom
    pk = ghost.pk
    assert ghost.delete()[0] == 0
    assert Question.diffs.get_by_object_id(pk) == []
    assert Question.diffs.since().diffs == []


def test_deleting_it_after_another_row_took_its_pk_records_that_delete():
    with pytest.raises(Boom), transaction.atomic():
        ghost = Question.objects.create(id=4242, question_text="never committed")
        raise Boom
    Question.objects.create(id=4242, question_text="someone else's")
    assert ghost.delete()[0] == 1
    stored = Question.diffs.get_by_object_id(4242)
    assert [(d.created, d.deleted) for d in stored] == [(True, False), (False, True)]
    # The deleted diff names the row by its pk, not by the pre-INSERT snapshot's None.
    assert stored[-1].data[0]["pk"] == 4242


def test_saving_after_a_rolled_back_insert_clears_the_doubt():
    with pytest.raises(Boom), transaction.atomic():
        question = Question.objects.create(question_text="first try")
        raise Boom
    question.save()  # inserts the row again
    question.delete()
    stored = Question.diffs.since().diffs
    assert [(d.created, d.deleted) for d in stored] == [(True, False), (False, True)]
