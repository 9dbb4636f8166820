"""The change feed: cursors, the model-wide feed, expiry and deletes in the feed."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from diffs import Diff
from diffs.exceptions import CursorExpired, InvalidCursor
from diffs.feed import MAX_LIMIT
from tests.conftest import diffs_settings
from tests.support.paging import follow, follow_diffs
from tests.support.writing import open_horizon, write_at
from tests.testapp.models import Choice, CodeItem, Question, UUIDItem

pytestmark = pytest.mark.django_db(transaction=True)


def texts(diffs: list[Diff]) -> list[str]:
    return [
        d.data[0]["fields"].get("question_text", d.data[0]["fields"].get("choice_text"))
        for d in diffs
    ]


def test_every_read_diff_has_a_cursor_pk_and_model():
    question = Question.objects.create(question_text="a")
    [diff] = question.diffs
    assert isinstance(diff.cursor, str)
    assert diff.pk == question.pk
    assert diff.model == "testapp.question"
    assert Question.diffs.get_sortedset(question.pk)[0].cursor == diff.cursor


def test_since_returns_only_later_diffs():
    question = Question.objects.create(question_text="a")
    for text in "bcd":
        question.question_text = text
        question.save()
    diffs = Question.diffs.get_by_object_id(question.pk)
    assert texts(Question.diffs.get_by_object_id(question.pk, since=diffs[1].cursor)) == ["c", "d"]
    assert Question.diffs.get_by_object_id(question.pk, since=diffs[-1].cursor) == []


def test_since_accepts_unix_milliseconds():
    open_horizon(Question)  # a model with history: its horizon lies well in the past
    before = int(time.time() * 1000) - 1
    question = Question.objects.create(question_text="a")
    assert len(Question.diffs.get_by_object_id(question.pk, since=before)) == 1
    assert Question.diffs.get_by_object_id(question.pk, since=time.time() * 1000 + 60_000) == []


def test_scores_strictly_increase_within_one_transaction():
    # all on_commit writes of a transaction run within the same millisecond or so
    with transaction.atomic():
        question = Question.objects.create(question_text="0")
        for i in range(1, 50):
            question.question_text = str(i)
            question.save()
    diffs = question.diffs
    assert texts(diffs) == [str(i) for i in range(50)]
    assert len({d.timestamp for d in diffs}) == 50
    seen = follow_diffs(lambda cursor: Question.diffs.object_since(question.pk, cursor, limit=7))
    assert texts(seen) == [str(i) for i in range(50)]


def test_model_feed_pages_across_objects_with_no_gap_or_repeat():
    questions = [Question.objects.create(question_text=f"q{i}") for i in range(5)]
    for question in questions:
        question.question_text += "!"
        question.save()
    read, cursor = follow(lambda cursor: Question.diffs.since(cursor, limit=3))
    seen = [diff for page in read for diff in page.diffs]
    assert len(read) == 4
    assert [(d.pk, d.created) for d in seen] == [(q.pk, True) for q in questions] + [
        (q.pk, False) for q in questions
    ]
    assert len({d.id for d in seen}) == 10
    assert all(d.model == "testapp.question" for d in seen)
    # caught up: the next page is empty but its cursor keeps moving forward
    later = Question.diffs.since(cursor)
    assert later.diffs == [] and not later.has_more
    assert float(later.cursor) >= float(cursor)
    questions[0].question_text = "new"
    questions[0].save()
    assert texts(Question.diffs.since(later.cursor).diffs) == ["new"]


def test_feed_includes_child_diffs_in_the_parents_model_feed():
    question = Question.objects.create(question_text="q")
    choice = Choice.objects.create(question=question, choice_text="c")
    choice_pk = choice.pk
    choice.delete()
    page = Question.diffs.since()
    assert [(d.model, d.pk, d.created, d.deleted) for d in page.diffs] == [
        ("testapp.question", question.pk, True, False),
        ("testapp.choice", choice_pk, True, False),
        ("testapp.choice", choice_pk, False, True),
    ]
    assert [d.holder_pk for d in page.diffs] == [question.pk] * 3
    assert Choice.diffs.since().diffs == []


def test_deletes_appear_in_the_feed():
    keep = Question.objects.create(question_text="keep")
    gone = [Question.objects.create(question_text=f"gone{i}") for i in range(3)]
    pks = [q.pk for q in gone]
    gone[0].delete()
    Question.objects.filter(pk__in=pks[1:]).delete()
    deleted = [d.pk for d in Question.diffs.since().diffs if d.deleted]
    assert sorted(deleted) == sorted(pks)
    assert keep.pk not in deleted


def test_feed_works_for_uuid_and_hostile_pks():
    item = UUIDItem.objects.create(name="u")
    [diff] = UUIDItem.diffs.since().diffs
    assert diff.pk == item.pk
    codes = ["a:b", "x*y", "new\nline", "é" * 300]
    for code in codes:
        CodeItem.objects.create(code=code, name="n")
    assert [d.pk for d in CodeItem.diffs.since().diffs] == codes


#: The retention window (seconds) of the expiry tests: long enough that nothing a test
#: does between two reads moves a diff or a cursor across it.
WINDOW = 3600


def old_diff(pk: int, windows: float) -> str:
    """Write a diff of question ``pk`` scored ``windows`` retention windows ago; its cursor.

    The model's horizon is opened first, so only the window can make the cursor expire.
    """
    open_horizon(Question)
    score = write_at(Question, pk, {"age": "old"}, time.time() * 1000 - windows * WINDOW * 1000)
    [diff] = [d for d in Question.diffs.get_sortedset(pk) if d.timestamp == score]
    return diff.cursor


def test_expired_cursor_raises_and_reads_hide_expired_diffs():
    with diffs_settings(max_element_age=WINDOW):
        old_cursor = old_diff(1, windows=2)
        with pytest.raises(CursorExpired, match="max_element_age"):
            Question.diffs.get_by_object_id(1, since=old_cursor)
        with pytest.raises(CursorExpired, match="max_element_age"):
            Question.diffs.since(old_cursor)
        # not pruned yet, but never returned
        assert len(Question.diffs.get_sortedset(1)) == 1
        assert Question.diffs.get_by_object_id(1) == []
        assert Question.diffs.since().diffs == []


@pytest.mark.parametrize(
    ("windows", "expired"), [(1.5, True), (0.5, False)], ids=["1.5 windows", "0.5 windows"]
)
def test_a_cursor_expires_once_it_is_older_than_one_window(windows, expired):
    with diffs_settings(max_element_age=WINDOW):
        open_horizon(Question)  # the model's history is complete: only the window decides
        cursor = time.time() * 1000 - windows * WINDOW * 1000
        recent = Question.objects.create(question_text="recent")
        reads = [
            lambda: Question.diffs.since(cursor).diffs,
            lambda: Question.diffs.get_by_object_id(recent.pk, since=cursor),
            lambda: Question.diffs.object_since(recent.pk, cursor).diffs,
        ]
        for read in reads:
            if expired:
                with pytest.raises(CursorExpired, match="max_element_age"):
                    read()
            else:
                assert texts(read()) == ["recent"]


@pytest.mark.parametrize("bad", ["abc", "", "nan", "-5", "inf", True, None])
def test_malformed_cursors_are_refused(bad):
    if bad is None:
        Question.diffs.since(None)  # None means "from the start"
        return
    with pytest.raises(InvalidCursor):
        Question.diffs.since(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "1e12",
        " 1795342808609",
        "1795342808609 ",
        "+1795342808609",
        "1_795_342_808_609",
        "\u0661\u0662\u0663",
        "1795342808609.5.1",
        ".5",
        "5.",
        "0x1F",
        "Infinity",
        "1" * 21,
    ],
)
def test_a_cursor_is_ascii_digits_and_one_dot_only(bad):
    # float() accepts every one of these; none is a cursor django-diffs gives out.
    with pytest.raises(InvalidCursor, match="not a cursor"):
        Question.diffs.since(bad)
    with pytest.raises(InvalidCursor):
        Question.diffs.object_since(1, bad)


def test_a_bad_cursor_is_quoted_as_a_short_excerpt():
    with pytest.raises(InvalidCursor) as refused:
        Question.diffs.since("9" * 100_000 + "x")
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 2.5, "10", True])
def test_limit_out_of_range(limit):
    with pytest.raises(ValueError, match="limit must be a whole number from 1 to 1000"):
        Question.diffs.since(limit=limit)


def test_a_feed_entry_whose_diff_was_pruned_is_skipped(redis_client):
    # The set lane (earlier versions' layout): a feed pointer outlives its object's set.
    with diffs_settings(storage="sets"):
        question = Question.objects.create(question_text="a")
    redis_client.delete(Question.diffs.get_key(question.pk))
    page = Question.diffs.since()
    assert page.diffs == []
    assert page.cursor is not None


def test_create_returns_a_diff_with_cursor_and_writes_the_feed():
    diff = Question.diffs.create(data={"x": 1}, pk=7)
    assert diff.cursor is not None and diff.pk == 7 and diff.model == "testapp.question"
    [fed] = Question.diffs.since().diffs
    assert fed.id == diff.id and fed.cursor == diff.cursor


def count_round_trips(monkeypatch):
    """Count commands sent alone and pipelines sent whole, by one server's client or a
    cluster's (all keys of a model are on one node, so a pipeline is one round trip)."""
    import redis.client
    import redis.cluster

    calls = {"n": 0}
    for client_class, pipeline_class in [
        (redis.Redis, redis.client.Pipeline),
        (redis.cluster.RedisCluster, redis.cluster.ClusterPipeline),
    ]:
        real_execute = pipeline_class.execute
        real_command = client_class.execute_command

        def execute(self, *args, _real=real_execute, **kwargs):
            calls["n"] += 1
            return _real(self, *args, **kwargs)

        def command(self, *args, _real=real_command, _pipeline=pipeline_class, **kwargs):
            if not isinstance(self, _pipeline):
                calls["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(pipeline_class, "execute", execute)
        monkeypatch.setattr(client_class, "execute_command", command)
    return calls


@pytest.mark.parametrize("objects", [3, 60])
def test_a_feed_page_costs_two_round_trips_whatever_the_number_of_objects(monkeypatch, objects):
    for i in range(objects):
        Question.diffs.create(data={"i": i}, pk=i)
    Question.diffs.since(limit=1)  # the read script is loaded (on a cluster) before counting
    calls = count_round_trips(monkeypatch)

    page = Question.diffs.since(limit=50)
    assert len(page.diffs) == min(objects, 50)
    assert calls["n"] == 2


def test_expired_cursor_carries_a_restart_cursor():
    question = Question.objects.create(question_text="before")
    with diffs_settings(max_element_age=WINDOW):
        old_cursor = old_diff(question.pk, windows=2)
        with pytest.raises(CursorExpired) as info:
            Question.diffs.since(old_cursor)
        restart = info.value.restart_cursor
        question.question_text = "after the restart"
        question.save()
        assert texts(Question.diffs.since(restart).diffs) == ["after the restart"]
        assert texts(Question.diffs.get_by_object_id(question.pk, since=restart)) == [
            "after the restart"
        ]


def test_a_cursor_in_the_future_is_refused():
    with pytest.raises(InvalidCursor, match="in the future"):
        Question.diffs.since(time.time() * 1000 + 3_600_000)
    with pytest.raises(InvalidCursor, match="in the future"):
        Question.diffs.get_by_object_id(1, since=1e16)


def test_diffs_with_the_same_fixed_timestamp_keep_distinct_scores():
    fixed = time.time() * 1000 - 1000
    written = [Question.diffs.create(data={"n": n}, pk=1, timestamp=fixed).id for n in range(3)]
    seen = [d.id for d in follow_diffs(lambda cursor: Question.diffs.since(cursor, limit=1))]
    assert seen == written


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), time.time() * 1000 + 86_400_000],
    ids=["nan", "inf", "a day ahead"],
)
def test_fixed_timestamps_must_be_finite_and_not_in_the_future(bad, caplog):
    with pytest.raises(ValueError, match=r"Question.diffs.create\(pk=1, timestamp=.*refused"):
        Question.diffs.create(data={}, pk=1, timestamp=bad)
    question = Question(question_text="x")
    question._last_save_at = bad
    question.save()  # the save goes on; its diff is refused, like an oversized one
    assert Question.objects.filter(pk=question.pk).exists()
    assert Question.diffs.get_by_object_id(question.pk) == []
    assert "Refused the diff of testapp.question" in caplog.text
