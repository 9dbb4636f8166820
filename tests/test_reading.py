"""Reading diffs: Model.diffs, instance.diffs, the sorted-set wrapper and Diff."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

import pytest

from diffs import Diff
from diffs.clock import datetime_to_ms, precise_timestamp
from diffs.managers import DiffModelManager
from diffs.models import DiffSortedSet
from tests.conftest import diffs_settings
from tests.support.keynames import object_key as expected_key
from tests.support.writing import open_horizon
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db


BASE = 0.0


@pytest.fixture
def five():
    """A set with five diffs at scores BASE+10..BASE+50 (a minute ago), data {"n": 0..4}."""
    global BASE
    BASE = float(int(time.time() * 1000) - 60_000)
    open_horizon(Question)
    for n in range(5):
        Question.diffs.create(data={"n": n}, created=n == 0, pk=1, timestamp=BASE + (n + 1) * 10)
    return Question.diffs.get_sortedset(1)


def at(*offsets):
    return [BASE + o for o in offsets]


def numbers(diffs):
    return [d.data["n"] for d in diffs]


def test_class_access_gives_the_manager():
    manager = Question.diffs
    assert isinstance(manager, DiffModelManager)
    assert manager.model is Question
    assert "testapp.Question" in repr(manager)


def test_instance_access_gives_the_list_oldest_first(five):
    question = Question(pk=1)
    assert isinstance(question.diffs, list)
    assert numbers(question.diffs) == [0, 1, 2, 3, 4]
    assert question.diffs[-1].data == {"n": 4}


def test_unsaved_instance_has_no_diffs():
    assert Question(question_text="new").diffs == []


def test_get_by_object_id_returns_timestamps_from_scores(five):
    diffs = Question.diffs.get_by_object_id(1)
    assert [d.timestamp for d in diffs] == at(10, 20, 30, 40, 50)
    assert [d.created for d in diffs] == [True, False, False, False, False]
    assert Question.diffs.get_by_object_id("1") == diffs


def test_sorted_set_reads(five):
    assert isinstance(five, DiffSortedSet)
    assert len(five) == 5
    assert five.min_score == BASE + 10
    assert five.max_score == BASE + 50
    assert numbers(reversed(five)) == [4, 3, 2, 1, 0]
    assert numbers(five.zrangebyscore(BASE + 20, BASE + 40)) == [1, 2, 3]
    assert numbers(five.zrangebyscore(f"({BASE + 20}", "+inf")) == [2, 3, 4]
    assert numbers(five.zrangebyscore("-inf", "+inf", start=1, num=2)) == [1, 2]
    assert numbers(five.zrevrangebyscore("+inf", "-inf")) == [4, 3, 2, 1, 0]
    assert numbers(five.zrange(1, 2)) == [1, 2]
    assert numbers(five.zrevrange(0, 1)) == [4, 3]
    assert expected_key("testapp.question", 1) in repr(five)


def test_indexing_carries_the_stored_score(five):
    assert five[0].timestamp == BASE + 10
    assert five[-1].timestamp == BASE + 50
    assert five[2].data == {"n": 2}
    with pytest.raises(IndexError):
        five[5]


@pytest.mark.parametrize(
    "index",
    [
        slice(1, 3),
        slice(None, 2),
        slice(3, None),
        slice(None, None, 2),
        slice(-2, None),
        slice(None, None, -1),
        slice(4, 1, -2),
        slice(3, 3),
        slice(10, 20),
    ],
)
def test_slicing_follows_python(five, index):
    expected = [0, 1, 2, 3, 4][index]
    got = five[index]
    assert numbers(got) == expected
    assert all(isinstance(d.timestamp, float) for d in got)


def test_empty_set():
    empty = Question.diffs.get_sortedset(404)
    assert len(empty) == 0
    assert not empty
    assert empty.min_score is None and empty.max_score is None
    assert list(empty) == [] and empty[:] == []


def test_raw_zadd_and_zscore():
    ss = Question.diffs.get_sortedset(3)
    member = Diff(data={"a": 1}, created=False, id="abc").to_member()
    assert ss.zadd({member: 5.5}) == 1
    assert ss.zscore(member) == 5.5
    assert ss.zscore("missing") is None
    assert ss[0].id == "abc"


def test_create_returns_the_diff_and_stores_it():
    diff = Question.diffs.create(data='{"from": "json text"}', created=True, pk=9)
    assert diff.data == {"from": "json text"}
    assert diff.id is not None
    [stored] = Question.diffs.get_by_object_id(9)
    assert (stored.data, stored.created, stored.id, stored.timestamp) == (
        diff.data,
        True,
        diff.id,
        diff.timestamp,
    )


def test_create_for_another_model_class():
    from tests.testapp.models import Choice

    Question.diffs.create(data={"x": 1}, pk=4, model_cls=Choice)
    assert len(Choice.diffs.get_by_object_id(4)) == 1
    assert Question.diffs.get_by_object_id(4) == []


def test_create_needs_a_pk():
    with pytest.raises(ValueError, match="needs the pk"):
        Question.diffs.create(data={"x": 1})
    with pytest.raises(ValueError, match="'not-a-number' cannot be a primary key of Question"):
        Question.diffs.create(data={"x": 1}, pk="not-a-number")


def test_members_that_are_not_ours_are_skipped_with_a_warning(five, redis_client, caplog):
    key = five.key
    redis_client.zadd(
        key,
        {
            b"not json": BASE + 11,
            json.dumps({"data": 1}): BASE + 12,
            b"\xff\xfe": BASE + 13,
            json.dumps([1, 2]): BASE + 14,
        },
    )
    with caplog.at_level(logging.WARNING, logger="diffs"):
        diffs = Question.diffs.get_by_object_id(1)
    assert numbers(diffs) == [0, 1, 2, 3, 4]
    assert len([r for r in caplog.records if key in r.getMessage()]) == 4


def test_reads_work_with_decode_responses(five):
    with diffs_settings(redis={"decode_responses": True}):
        assert numbers(Question.diffs.get_by_object_id(1)) == [0, 1, 2, 3, 4]


def test_diff_value_object():
    diff = Diff(data='{"a": 1}', created=True, timestamp=1.0)
    assert diff.data == {"a": 1}
    assert repr(diff) == "<Diff created at 1.0>"
    assert repr(Diff(data=1, created=False, timestamp=2.0)) == "<Diff updated at 2.0>"
    assert repr(Diff(data=1, deleted=True, timestamp=3.0)) == "<Diff deleted at 3.0>"
    assert Diff(data={"a": 1}).timestamp > 0
    with pytest.raises(ValueError, match="needs a Diff with an id"):
        Diff(data=1).to_member()


def test_stored_string_data_is_not_parsed_twice():
    Question.diffs.create(data='"just text"', pk=5)
    assert Question.diffs.get_by_object_id(5)[0].data == "just text"


def test_precise_timestamp_helper(settings):
    assert precise_timestamp(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)) == 1000.0
    # a naive datetime is read in TIME_ZONE (America/Chicago: UTC-6 in January)
    assert datetime_to_ms(dt.datetime(1970, 1, 1)) == 6 * 3600 * 1000
    assert precise_timestamp() > 1.7e12


def test_diff_is_hashable_and_create_text_errors_are_clear():
    assert len({Diff(data=[1], id="a", timestamp=1.0), Diff(data=[1], id="a", timestamp=1.0)}) == 1
    with pytest.raises(ValueError, match="must be a JSON document"):
        Question.diffs.create(data="price changed", pk=1)
