"""Bulk writes: QuerySet.update(), bulk_update() and bulk_create() record diffs."""

from __future__ import annotations

import contextlib

import pytest
from django.db import connection, models, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

import diffs
from diffs.checks import check_registered_models
from tests.testapp.models import Choice, CustomQuerySetItem, Question, Untracked

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def fields_of(diff):
    return diff.data[0]["fields"]


@contextlib.contextmanager
def statements():
    """Collect the data statements run in the block (transaction control left out)."""
    found: list[str] = []
    with CaptureQueriesContext(connection) as captured:
        yield found
    for query in captured.captured_queries:
        verb = query["sql"].split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            found.append(verb)


def test_update_records_one_diff_per_affected_row_with_new_values():
    questions = [Question.objects.create(question_text=f"q{i}", votes=i) for i in range(4)]
    untouched = Question.objects.create(question_text="other", votes=99)
    rows = Question.objects.filter(votes__lt=3).update(question_text="bulk", votes=F("votes") + 10)
    assert rows == 3
    for question in questions[:3]:
        last = question.diffs[-1]
        assert (last.created, last.deleted) == (False, False)
        assert fields_of(last) == {"question_text": "bulk", "votes": question.votes + 10}
    assert len(questions[3].diffs) == 1 and len(untouched.diffs) == 1
    feed = [d for d in Question.diffs.since().diffs if not d.created]
    assert sorted(d.pk for d in feed) == sorted(q.pk for q in questions[:3])


@pytest.mark.parametrize("rows", [1, 20])
def test_update_cost_is_constant(rows):
    for i in range(rows):
        Question.objects.create(question_text=str(i))
    with statements() as run:
        Question.objects.all().update(votes=5)
    assert sorted(run) == ["SELECT", "SELECT", "UPDATE"]
    assert len(Question.diffs.since(limit=100).diffs) == 2 * rows


def test_update_passes_old_values_to_hooks_and_respects_parents():
    question = Question.objects.create(question_text="q")
    choice = Choice.objects.create(question=question, choice_text="c", votes=1)
    Choice.objects.filter(pk=choice.pk).update(votes=2)
    last = question.diffs[-1]
    assert last.model == "testapp.choice" and last.pk == choice.pk
    assert fields_of(last) == {"votes": 2}


def test_update_of_a_foreign_key():
    first, second = (Question.objects.create(question_text=t) for t in "ab")
    choice = Choice.objects.create(question=first, choice_text="c")
    Choice.objects.filter(pk=choice.pk).update(question=second)
    assert fields_of(second.diffs[-1]) == {"question": second.pk}


def test_update_in_a_rolled_back_transaction_records_nothing():
    question = Question.objects.create(question_text="q")
    with pytest.raises(Boom), transaction.atomic():
        Question.objects.update(votes=3)
        raise Boom
    assert len(question.diffs) == 1


def test_update_keeps_djangos_own_errors():
    Question.objects.create(question_text="q")
    with pytest.raises(TypeError, match="slice"):
        Question.objects.all()[:1].update(votes=1)


def test_update_matching_nothing():
    assert Question.objects.filter(pk=-1).update(votes=1) == 0
    assert Question.diffs.since().diffs == []


def test_bulk_update_records_written_fields():
    questions = [Question.objects.create(question_text=f"q{i}") for i in range(3)]
    for question in questions:
        question.question_text += "!"
        question.votes = 7
    with statements() as run:
        Question.objects.bulk_update(questions, ["question_text"])
    assert run == ["UPDATE"]
    for question in questions:
        assert fields_of(question.diffs[-1]) == {"question_text": question.question_text}
        # the written field is no longer pending; the unwritten one still is
        assert question.get_dirty_fields() == {"votes": 0}


def test_bulk_update_with_expressions_reads_values_back():
    questions = [Question.objects.create(question_text=f"q{i}", votes=i) for i in range(2)]
    for question in questions:
        question.votes = F("votes") + 100
    Question.objects.bulk_update(questions, ["votes"])
    assert [fields_of(q.diffs[-1]) for q in questions] == [{"votes": 100}, {"votes": 101}]


def test_bulk_create_records_created_diffs():
    objs = [Question(question_text=f"b{i}", votes=i) for i in range(3)]
    with statements() as run:
        created = Question.objects.bulk_create(objs)
    assert run == ["INSERT"]
    for obj in created:
        [diff] = obj.diffs
        assert diff.created is True
        assert fields_of(diff) == {
            "question_text": obj.question_text,
            "pub_date": None,
            "votes": obj.votes,
        }
    created[0].votes = 50
    created[0].save()
    assert fields_of(created[0].diffs[-1]) == {"votes": 50}


def test_bulk_create_ignore_conflicts_warns_about_rows_without_pk(caplog):
    objs = [Question(question_text="x")]
    with caplog.at_level("WARNING", logger="diffs"):
        Question.objects.bulk_create(objs, ignore_conflicts=True)
    if objs[0].pk is None:
        assert "1 row(s) got no diff" in caplog.text
    else:  # backends that return pks even then
        assert len(objs[0].diffs) == 1


def test_custom_queryset_with_the_mixin():
    item = CustomQuerySetItem.objects.create(name="a")
    assert CustomQuerySetItem.objects.named("a").update(count=3) == 1
    assert fields_of(item.diffs[-1]) == {"count": 3}
    CustomQuerySetItem.objects.bulk_create([CustomQuerySetItem(name="b")])
    assert len(CustomQuerySetItem.diffs.since().diffs) == 3


def test_unregistered_models_are_untouched():
    Untracked.objects.create(name="a")
    assert Untracked.objects.update(name="b") == 1
    assert not diffs.is_registered(Untracked)


def test_w002_for_a_custom_queryset_without_the_mixin():
    class PlainQuerySet(models.QuerySet):
        pass

    class Custom(models.Model):
        objects = PlainQuerySet.as_manager()

        class Meta:
            app_label = "testapp"

    diffs.register(Custom)
    try:
        [warning] = [m for m in check_registered_models() if m.id == "diffs.W002"]
        assert "testapp.Custom's default manager uses PlainQuerySet" in warning.msg
        assert "DiffsQuerySetMixin" in warning.hint
    finally:
        diffs.unregister(Custom)


def test_bulk_create_ignore_conflicts_records_only_inserted_rows(caplog):
    from tests.testapp.models import CodeItem

    CodeItem.objects.create(code="a", name="original")
    with caplog.at_level("WARNING", logger="diffs"):
        CodeItem.objects.bulk_create(
            [CodeItem(code="a", name="IGNORED"), CodeItem(code="b", name="new")],
            ignore_conflicts=True,
        )
    assert [d.created for d in CodeItem.diffs.get_by_object_id("a")] == [True]
    assert CodeItem.diffs.get_by_object_id("a")[0].data[0]["fields"] == {"name": "original"}
    assert fields_of(CodeItem.diffs.get_by_object_id("b")[0]) == {"name": "new"}
    assert "1 row(s) got no diff" in caplog.text


def test_bulk_update_of_a_row_deleted_meanwhile_records_no_diff():
    kept, gone = (Question.objects.create(question_text=t) for t in "ab")
    gone_pk = gone.pk
    Question.objects.filter(pk=gone_pk).delete()
    kept.votes = gone.votes = 99
    assert Question.objects.bulk_update([kept, gone], ["votes"]) == 1
    assert fields_of(kept.diffs[-1]) == {"votes": 99}
    assert Question.diffs.get_by_object_id(gone_pk)[-1].deleted is True


def test_update_that_changes_a_primary_key(caplog):
    from tests.testapp.models import CodeItem

    CodeItem.objects.create(code="old", name="n")
    assert CodeItem.objects.filter(code="old").update(code="new") == 1
    assert CodeItem.diffs.get_by_object_id("new")[-1].data[0]["pk"] == "new"
    CodeItem.objects.create(code="x1", name="n")
    CodeItem.objects.create(code="x2", name="n")
    from django.db.models import Value
    from django.db.models.functions import Concat

    with caplog.at_level("WARNING", logger="diffs"):
        CodeItem.objects.filter(code__startswith="x").update(code=Concat(F("code"), Value("!")))
    assert "changed primary keys of 2 row(s): no diff recorded" in caplog.text
    assert CodeItem.diffs.get_by_object_id("x1!") == []


def test_on_delete_set_null_records_the_cleared_foreign_keys():
    from tests.testapp.models import Article

    diffs.register(Article)  # other tests create models at run time, which resets managers
    question = Question.objects.create(question_text="q")
    article = Article.objects.create(title="a", question=question)
    other = Article.objects.create(title="b")
    question.delete()
    assert fields_of(article.diffs[-1]) == {"question": None}
    assert [d.created for d in other.diffs] == [True]
