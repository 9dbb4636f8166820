"""Fixed scores (``_last_save_at``, ``create(timestamp=...)``) can never stall Redis.

The write script looks for a free score after a fixed one in a bounded number of
steps, each at least the spacing of doubles at that magnitude, and falls back to the
Redis clock (keeping the fixed time in ``"t"``) when that is not enough. Scores no read
could ever return are refused in Python before they reach Redis.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator

import pytest
import redis
from django.db import transaction

from diffs.delivery import OutgoingDiff, store
from diffs.diff import Diff
from tests.conftest import diffs_settings
from tests.support.keynames import horizon_key
from tests.support.redis_server import redis_server
from tests.support.stored import stored
from tests.support.writing import outgoing
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

#: datetime.min in epoch ms: 0.001 is below the spacing of doubles there (1/64).
YEAR_ONE_MS = dt.datetime.min.replace(tzinfo=dt.timezone.utc).timestamp() * 1000


@contextlib.contextmanager
def own_client(timeout: float = 5.0) -> Iterator[redis.Redis]:
    """A client of a redis-server of the test's own: a script that never ends (today's
    bug) costs that server only, and the client gives up after ``timeout``."""
    with redis_server() as server:
        client = redis.Redis(port=server.port, db=1, socket_timeout=timeout)
        try:
            yield client
        finally:
            client.close()


def open_horizon(client: redis.Redis, key: str = "diffs:horizon:testapp.question") -> None:
    """Say the model's diffs are complete since long ago: fixed scores far in the past are
    then placed at (or just after) their own score, not by the clock (see diffs/delivery/store.py)."""
    # By default the plain layout: most tests here write to a redis-server of their own.
    client.hset(key, mapping={"from": -1e300, "age": 3600})


def write(n: int, score: float | None, pk: object = 1) -> OutgoingDiff:
    member = f'{{"id":"{n:016x}","created":false,"data":{n}}}'
    return outgoing(
        f"diffs:testapp.question:{pk}",
        "diffs:feed:testapp.question",
        member,
        f"{n:016x}{pk}",
        score,
    )


def test_equal_fixed_scores_far_from_1970_get_distinct_scores_in_bounded_time():
    # Today: score + 0.001 == score at that magnitude, so the script loops forever and
    # the client times out (while Redis answers BUSY to everyone).
    with own_client() as client:
        open_horizon(client)
        scores = store.write_many(client, [write(n, YEAR_ONE_MS) for n in range(3)])
        assert scores[0] == YEAR_ONE_MS
        assert scores[0] < scores[1] < scores[2]
        client.ping()


def test_fixed_scores_taken_in_earlier_calls_are_skipped_or_fall_back_to_the_clock():
    # Each call after the first must look past the scores earlier calls took: a bounded
    # search, then the clock, with the fixed time kept in "t".
    fixed = time.time() * 1000 - 1000
    with own_client() as client:
        open_horizon(client)
        scores = [store.write_many(client, [write(n, fixed, pk=n)])[0] for n in range(1100)]
        assert len(set(scores)) == 1100
        assert scores == sorted(scores)
        assert scores[0] == fixed
        members = stored(client, "diffs:testapp.question:1099")
        [(member, score)] = members
        diff = Diff.from_member(member, score)
        assert diff.timestamp == pytest.approx(fixed, abs=0.001)


def test_many_diffs_sharing_one_fixed_score_in_one_transaction_stay_in_order(redis_client):
    fixed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    open_horizon(redis_client, horizon_key("testapp.question"))
    questions = Question.objects.bulk_create(
        [Question(question_text=f"q{n}") for n in range(1200)]
    )
    with transaction.atomic():
        for n, question in enumerate(questions):
            question._last_save_at = fixed
            question.votes = n + 1
            question.save(update_fields=["votes"])
    seen, cursor = [], None
    for _ in range(50):
        page = Question.diffs.since(cursor, limit=1000)
        seen += [d for d in page.diffs if not d.created]
        cursor = page.cursor
        if not page.has_more:
            break
    assert [d.data[0]["fields"]["votes"] for d in seen] == list(range(1, 1201))
    # Each took the first free score at or after the fixed one, a step (at least a
    # microsecond, rounded to the doubles there) apart, or kept the fixed time in "t".
    # The stored time is rounded to the microsecond, hence the slack below it.
    first = fixed.timestamp() * 1000
    assert all(first - 0.001 <= d.timestamp < first + 2.0 for d in seen)


HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    "when",
    [
        lambda: dt.datetime.min,
        lambda: dt.datetime.min.replace(tzinfo=dt.timezone.utc),
        lambda: dt.datetime.now(dt.timezone.utc) - 2 * HOUR,
        lambda: time.time() * 1000 - 7_200_000,
        lambda: time.time() * 1000 + 120_000,
        lambda: float("-inf"),
    ],
    ids=["datetime.min", "datetime.min UTC", "2 h ago", "2 h ago in ms", "2 min ahead", "-inf"],
)
def test_a_fixed_score_no_read_could_return_is_refused_and_the_save_goes_on(when, caplog):
    question = Question(question_text="x")
    question._last_save_at = when()
    question.save()
    assert Question.objects.filter(pk=question.pk).exists()
    assert Question.diffs.get_by_object_id(question.pk) == []
    [record] = [r for r in caplog.records if "Refused the diff" in r.getMessage()]
    assert record.levelname == "ERROR"
    message = record.getMessage()
    assert f"testapp.question pk={question.pk}" in message
    assert "_last_save_at" in message


def test_create_with_an_unreadable_timestamp_names_model_pk_and_value():
    with pytest.raises(ValueError, match=r"Question.diffs.create\(pk=7, timestamp=.*1.*refused"):
        Question.diffs.create(
            data={}, pk=7, timestamp=dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
        )


def test_a_fixed_score_within_the_window_is_kept(redis_client):
    when = time.time() * 1000 - 30 * 60 * 1000
    with diffs_settings(max_element_age=3600):
        diff = Question.diffs.create(data={}, pk=3, timestamp=when)
    assert diff.timestamp == when


def test_a_fixed_score_older_than_the_horizon_is_placed_by_the_clock_keeping_its_time():
    # A new model's horizon starts at its first write: a diff scored before it would
    # have a cursor that reads as expired, so the clock places it; "t" keeps its time.
    fixed = time.time() * 1000 - 5000
    diff = Question.diffs.create(data={}, pk=4, timestamp=fixed)
    [stored] = Question.diffs.get_by_object_id(4)
    assert stored.timestamp == diff.timestamp == fixed
    page = Question.diffs.since(None)
    assert [d.id for d in page.diffs] == [diff.id]
    assert Question.diffs.since(page.diffs[0].cursor).diffs == []


def test_a_fixed_score_ahead_of_the_redis_clock_is_placed_by_it(redis_client):
    # An application server whose clock runs ahead passes Python's "a minute ahead"
    # check with scores Redis would see in the future: the script places them by its
    # own clock, keeping the time in "t", so later diffs and cursors are unaffected.
    seconds, micros = redis_client.time()
    ahead = seconds * 1000 + micros / 1000 + 120_000
    with own_client() as client:
        open_horizon(client)
        [score] = store.write_many(client, [write(1, ahead)])
        [(member, stored_at)] = stored(client, "diffs:testapp.question:1")
        redis_now = client.time()
    assert score < redis_now[0] * 1000 + 1000
    assert Diff.from_member(member, stored_at).timestamp == ahead
