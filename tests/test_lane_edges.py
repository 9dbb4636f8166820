"""The log lane when something else has touched its keys: a log emptied by hand, an
index that outlived its log, an index whose length is not a whole number of records.
Every diff written afterwards is stored once, in order, and read back."""

from __future__ import annotations

import time

import pytest

from diffs.delivery import store
from tests.support.keynames import index_key, log_key
from tests.support.stored import record_scores, stream_id
from tests.support.writing import open_horizon, write_at
from tests.test_lanes import outgoing_diff
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)


def numbers(found) -> list[int]:
    return [d.data["n"] for d in found]


def test_a_log_emptied_by_hand_still_takes_writes(redis_client):
    Question.diffs.create(data={"n": 1}, pk=1)
    [first] = Question.diffs.get_by_object_id(1)
    redis_client.xdel(log_key("testapp.question"), stream_id(float(first.cursor)))
    assert redis_client.exists(log_key("testapp.question"))  # an empty stream stays
    Question.diffs.create(data={"n": 2}, pk=2)
    question = Question.objects.create(question_text="saved")
    assert numbers(Question.diffs.get_by_object_id(2)) == [2]
    assert len(question.diffs) == 1
    later = Question.diffs.since(first.cursor).diffs
    assert [d.pk for d in later] == [2, question.pk]


def test_an_index_that_outlived_its_log_stays_in_order(redis_client):
    now = time.time() * 1000
    open_horizon(Question)
    for n, ago in enumerate([10_000, 9_000, 8_000]):
        write_at(Question, 1, {"n": n}, now - ago)
    redis_client.delete(log_key("testapp.question"))  # evicted, say: the index is left
    for n, ago in ((10, 10_000), (11, 8_500), (12, 8_000)):
        write_at(Question, 1, {"n": n}, now - ago)
    scores = record_scores(redis_client, index_key("testapp.question", 1))
    assert scores == sorted(scores)
    found = Question.diffs.get_by_object_id(1)
    assert [(d.data["n"], round(float(d.cursor) - now)) for d in found] == [
        (10, -10_000),
        (11, -8_500),
        (12, -8_000),
    ]
    later = Question.diffs.object_since(1, repr(now - 9_200), limit=100).diffs
    assert numbers(later) == [11, 12]
    assert numbers(Question.diffs.since(None).diffs) == [10, 11, 12]


def test_an_index_of_broken_length_gets_nothing_appended(redis_client):
    Question.diffs.create(data={"n": 0}, pk=1)
    index = index_key("testapp.question", 1)
    redis_client.append(index, b"xyz")  # 19 bytes: not a whole number of records
    for n in range(1, 4):
        Question.diffs.create(data={"n": n}, pk=1)
    assert redis_client.strlen(index) == 19
    assert numbers(Question.diffs.since(None).diffs) == [0, 1, 2, 3]
    assert numbers(Question.diffs.object_since(1, None).diffs)[-3:] == [1, 2, 3]
    assert numbers(Question.diffs.get_by_object_id(1))[-3:] == [1, 2, 3]


def test_a_diff_sent_again_beside_a_broken_index_is_stored_once(redis_client):
    redis_client.set(index_key("testapp.question", 1), b"123")
    diff = outgoing_diff(1)
    [score] = store.write_many(redis_client, [diff])
    diff.maybe_stored = True
    assert store.write_many(redis_client, [diff]) == [score]
    assert numbers(Question.diffs.since(None).diffs) == [1]


@pytest.mark.parametrize("diff_id", ["zz", "g" * 16, "12ab"])
def test_a_feed_entry_without_a_hex_id_goes_to_the_set_lane_once(redis_client, diff_id):
    from diffs.diff import Diff
    from diffs.keys import feed_member
    from diffs.layout import current_layout
    from tests.support.writing import outgoing

    layout = current_layout()
    member = Diff(data={"n": 5}, created=False, id="a" * 16).to_member()
    diff = outgoing(
        layout.object_key(Question, 1),
        layout.feed_key(Question),
        member,
        feed_member(diff_id, "1"),
    )
    first = store.write_many(redis_client, [diff])
    assert store.write_many(redis_client, [diff]) == first  # sent again: found in the feed
    assert redis_client.zcard(layout.object_key(Question, 1)) == 1
    assert not redis_client.exists(log_key("testapp.question"))


def test_a_call_sent_again_with_an_entry_without_a_hex_id_is_looked_up_without_error(
    redis_client,
):
    from diffs.diff import Diff
    from diffs.keys import feed_member
    from diffs.layout import current_layout
    from tests.support.writing import outgoing

    layout = current_layout()
    stored_first = outgoing_diff(1)
    store.write_many(redis_client, [stored_first])
    odd = outgoing(
        layout.object_key(Question, 1),
        layout.feed_key(Question),
        Diff(data={"n": 9}, created=False, id="b" * 16).to_member(),
        feed_member("12ab", "1"),
    )
    # The call's last diff is stored already: every diff of it is looked up first.
    scores = store.write_many(redis_client, [odd, stored_first])
    assert scores == store.write_many(redis_client, [odd, stored_first])
    assert sorted(numbers(Question.diffs.get_by_object_id(1))) == [1, 9]
