"""The log lane and the set lane (``diffs.lanes``): one order across both, an upgrade
and a downgrade that keep every cursor's promise, and pruning of the log lane."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from diffs import get_connection
from diffs.delivery import OutgoingDiff, losses, queue, store
from diffs.diff import Diff, new_diff_id
from diffs.exceptions import InvalidCursor
from diffs.keys import feed_member
from diffs.layout import current_layout
from diffs.settings import find_problems
from tests.conftest import diffs_settings
from tests.support.keynames import feed_key, index_key, log_key, object_key
from tests.support.paging import follow_diffs
from tests.support.stored import feed_count, record_scores, stored, stream_id
from tests.support.writing import open_horizon, outgoing, write_at
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db

HOUR_MS = 3_600_000


def numbers(found: list[Diff]) -> list[int]:
    return [diff.data["n"] for diff in found]


def write(n: int, pk: int = 1, **settings: object) -> None:
    with diffs_settings(**settings):
        Question.diffs.create(data={"n": n}, pk=pk)


def test_new_diffs_go_to_the_log_and_the_earlier_layout_is_still_written_on_request(
    redis_client,
):
    write(1, storage="sets")
    write(2)
    assert redis_client.zcard(object_key("testapp.question", 1)) == 1
    assert redis_client.zcard(feed_key("testapp.question")) == 1
    assert redis_client.xlen(log_key("testapp.question")) == 1
    assert redis_client.strlen(index_key("testapp.question", 1)) == 16
    assert numbers(Question.diffs.get_by_object_id(1)) == [1, 2]


@pytest.mark.parametrize("first, then", [("sets", "log"), ("log", "sets")])
def test_an_upgrade_or_a_downgrade_keeps_one_order_and_every_cursor(redis_client, first, then):
    # Diffs of three objects, the first half in one lane, the rest in the other; a
    # client holding a cursor from before the switch resumes exactly after it.
    for n in range(12):
        write(n, pk=n % 3, storage=first if n < 6 else then)
    before_switch = Question.diffs.since(None, limit=4)
    assert numbers(before_switch.diffs) == [0, 1, 2, 3]
    cursors = [None, before_switch.cursor]
    for since in cursors:
        pages = follow_diffs(lambda cursor: Question.diffs.since(cursor, limit=2), since)
        start = 0 if since is None else 4
        assert numbers(pages) == list(range(start, 12))
    scores = [diff.timestamp for diff in Question.diffs.since(None, limit=100).diffs]
    assert scores == sorted(scores) and len(set(scores)) == 12
    for pk in range(3):
        assert numbers(Question.diffs.get_by_object_id(pk)) == list(range(pk, 12, 3))
        # one object's pages, two diffs at a time, across the switch
        found, since = [], None
        while True:
            page = Question.diffs.object_since(pk, since, limit=1)
            found += page.diffs
            since = page.cursor
            if not page.has_more:
                break
        assert numbers(found) == list(range(pk, 12, 3))


def test_the_raw_view_ranks_and_scores_across_both_lanes(redis_client):
    for n in range(6):
        write(n, storage="sets" if n % 2 else "log")  # interleaved lanes
    stored_set = Question.diffs.get_sortedset(1)
    assert len(stored_set) == 6
    assert numbers(list(stored_set)) == [0, 1, 2, 3, 4, 5]
    assert numbers(list(reversed(stored_set))) == [5, 4, 3, 2, 1, 0]
    assert numbers(stored_set[1:5]) == [1, 2, 3, 4]
    assert numbers(stored_set[::-2]) == [5, 3, 1]
    assert numbers(stored_set.zrevrange(0, 2)) == [5, 4, 3]
    assert stored_set[-1].data == {"n": 5}
    every = list(stored_set)
    low, high = every[1].timestamp, every[4].timestamp
    assert numbers(stored_set.zrangebyscore(low, high)) == [1, 2, 3, 4]
    assert numbers(stored_set.zrangebyscore(f"({low}", "+inf", start=1, num=2)) == [3, 4]
    assert numbers(stored_set.zrevrangebyscore("+inf", low, start=1, num=3)) == [4, 3, 2]
    assert stored_set.min_score == every[0].timestamp
    assert stored_set.max_score == every[-1].timestamp
    for diff, (member, score) in zip(every, stored(redis_client, stored_set.key), strict=True):
        assert stored_set.zscore(member.decode()) == score == diff.timestamp
    assert stored_set.zscore('{"id":"0123456789abcdef","data":1}') is None


def test_only_the_log_lane_at_all(redis_client):
    for n in range(5):
        write(n)
    stored_set = Question.diffs.get_sortedset(1)
    assert numbers(stored_set[1:3]) == [1, 2]
    assert numbers(stored_set.zrevrange(0, 1)) == [4, 3]
    assert stored_set.zrangebyscore("-inf", "+inf", start=3, num=5)[0].data == {"n": 3}
    assert numbers(Question.diffs.newest(limit=2).diffs) == [4, 3]


def test_browsing_newest_first_merges_both_lanes(redis_client):
    for n in range(7):
        write(n, pk=n % 2, storage="sets" if n in (1, 2, 5) else "log")
    found, before = [], None
    while True:
        page = Question.diffs.newest(before, limit=2)
        found += page.diffs
        before = page.cursor
        if before is None:
            break
    assert numbers(found) == [6, 5, 4, 3, 2, 1, 0]


def test_a_fixed_score_below_the_logs_newest_goes_to_the_set_lane_in_order(redis_client):
    open_horizon(Question)
    write(1)
    write(3)
    first, second = Question.diffs.get_by_object_id(1)
    between = (first.timestamp + second.timestamp) / 2
    Question.diffs.create(data={"n": 2}, pk=1, timestamp=between)
    assert redis_client.zcard(object_key("testapp.question", 1)) == 1
    assert numbers(Question.diffs.get_by_object_id(1)) == [1, 2, 3]
    assert numbers(follow_diffs(lambda c: Question.diffs.since(c, limit=1))) == [1, 2, 3]


def test_a_write_that_may_have_reached_redis_is_stored_once(redis_client):
    layout = current_layout()
    diff_id = new_diff_id()
    member = Diff(data={"n": 1}, created=False, id=diff_id).to_member()
    diff = outgoing(
        layout.object_key(Question, 1),
        layout.feed_key(Question),
        member,
        feed_member(diff_id, "1"),
    )
    [score] = store.write_many(redis_client, [diff])
    diff.maybe_stored = True  # as after a timeout, or recovered from the outbox
    assert store.write_many(redis_client, [diff, diff]) == [score, score]
    assert len(stored(redis_client, diff.key)) == 1
    assert feed_count(redis_client, diff.feed_key) == 1
    # and Redis is asked about it, in the log lane, before it is called lost
    identity = losses._identity(diff)
    other = losses._identity(outgoing(diff.key, diff.feed_key, member, feed_member("f" * 16, "1")))
    assert losses._stored([identity, other]) == [True, False]


def test_restart_history_hides_what_the_log_holds(redis_client):
    write(1)
    write(2)
    Question.diffs.restart_history(1)
    write(3)
    assert numbers(Question.diffs.get_by_object_id(1)) == [3]
    assert numbers(Question.diffs.get_sortedset(1)) == [3]
    assert len(Question.diffs.get_sortedset(1)) == 1
    superseded = [d.superseded for d in Question.diffs.since(None).diffs]
    assert superseded == [True, True, False]


def prune(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("prune_diffs", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_prune_trims_each_index_and_the_log(redis_client):
    now = time.time() * 1000
    for pk in (1, 2):  # old first: below the log's newest, a fixed score takes the set lane
        write_at(Question, pk, {"n": "old"}, now - 2 * HOUR_MS)
    for pk in (1, 2):
        write(pk, pk=pk)
    assert redis_client.xlen(log_key("testapp.question")) == 4
    out = prune("--dry-run")
    assert "Would remove 2 diff(s) from 2 of 2 key(s)" in out
    assert redis_client.xlen(log_key("testapp.question")) == 4
    out = prune()
    assert "Removed 2 diff(s) from 2 of 2 key(s)" in out
    assert redis_client.xlen(log_key("testapp.question")) == 2
    for pk in (1, 2):
        assert numbers(Question.diffs.get_sortedset(pk)) == [pk]
        assert len(record_scores(redis_client, index_key("testapp.question", pk))) == 1
        assert redis_client.pttl(index_key("testapp.question", pk)) > 0
    # everything old: the index and the log go
    prune("--max-age", "0.000001")
    assert not redis_client.exists(log_key("testapp.question"))
    assert not redis_client.exists(index_key("testapp.question", 1))


def test_a_log_emptied_by_a_prune_is_written_again_from_scratch(redis_client):
    write(1)
    time.sleep(0.002)
    prune("--max-age", "0.000001")
    assert not redis_client.exists(log_key("testapp.question"))
    write(2)
    assert numbers(Question.diffs.since(None).diffs) == [2]
    assert numbers(Question.diffs.get_by_object_id(1)) == [2]


def test_a_bad_storage_is_refused_with_the_choices():
    [problem] = find_problems({"storage": "stream"})
    assert problem.check_id == "diffs.E036"
    assert "'log'" in problem.msg and "'sets'" in problem.msg


def test_keys_of_the_log_lane_are_parsed_and_pruned_only_when_ours(redis_client):
    layout = current_layout()
    shape = layout.parse(index_key("testapp.question", "a:b"))
    assert shape is not None and (shape.kind, shape.label, shape.pk_text) == (
        "index",
        "testapp.question",
        "a:b",
    )
    shape = layout.parse(log_key("testapp.question"))
    assert shape is not None and (shape.kind, shape.label) == ("log", "testapp.question")
    assert layout.parse("diffs:log:testapp.question:1") is None
    assert layout.parse("diffs:ix:testapp.question") is None
    # A key named like an index that is not a string is reported and left alone.
    redis_client.zadd(index_key("testapp.question", 9), {"x": 1})
    write(1)
    out = prune("--max-age", "0.000001")
    assert redis_client.zcard(index_key("testapp.question", 9)) == 1
    assert index_key("testapp.question", 9) in out
    assert get_connection().exists(index_key("testapp.question", 9))


def outgoing_diff(pk: int) -> OutgoingDiff:
    layout = current_layout()
    diff_id = new_diff_id()
    member = Diff(data={"n": pk}, created=False, id=diff_id).to_member()
    return outgoing(
        layout.object_key(Question, pk),
        layout.feed_key(Question),
        member,
        feed_member(diff_id, str(pk)),
    )


@pytest.mark.parametrize("storage", ["log", "sets"])
def test_a_batch_that_fails_halfway_stores_what_it_wrote_once(redis_client, storage):
    # The script stops at the second diff (its object's set is a string): the first is
    # in Redis already, and writing them one by one must not add it again.
    with diffs_settings(storage=storage):
        first, second = outgoing_diff(1), outgoing_diff(2)
        redis_client.set(first.key.replace(":1", ":2"), "not a sorted set")
        refused = queue.write_batch([first, second])
        assert [diff for diff, _ in refused] == [second]
        assert len(stored(redis_client, first.key)) == 1
        assert feed_count(redis_client, first.feed_key) == 1


def test_an_index_key_of_another_type_refuses_its_diff_before_the_log_has_it(redis_client):
    diff = outgoing_diff(2)
    index, log = current_layout().lane_keys_for(diff.key)
    redis_client.hset(index, "not", "ours")
    write(1)  # the log exists, with its expiry
    refused = queue.write_batch([diff])
    assert [d for d, _ in refused] == [diff]
    assert redis_client.xlen(log) == 1
    assert redis_client.pttl(log) > 0
    assert numbers(Question.diffs.since(None).diffs) == [1]


@pytest.mark.parametrize("cursor", ["99999999999999999999", "19000000000000000000"])
def test_a_cursor_beyond_any_stream_id_is_invalid_and_breaks_nothing(redis_client, cursor):
    write(1)
    with pytest.raises(InvalidCursor):
        Question.diffs.since(cursor)
    assert numbers(Question.diffs.newest(cursor).diffs) == [1]
    # the process's other reads still work (no Redis error was counted)
    assert numbers(Question.diffs.get_by_object_id(1)) == [1]
    assert numbers(Question.diffs.newest("0.00000000000000001").diffs) == []


def follows_flags(redis_client, pk: int) -> list[bool]:
    raw = redis_client.get(index_key("testapp.question", pk)) or b""
    return [bool(raw[at] & 0x80) for at in range(0, len(raw), 16)]


def test_a_run_of_one_objects_diffs_is_marked_and_read_whole(redis_client):
    for n in range(150):  # more than one block of index records (64)
        write(n)
    write(0, pk=2)
    write(150)  # after another object's diff: starts a new run
    write(151)
    assert follows_flags(redis_client, 1) == [False] + [True] * 149 + [False, True]
    assert follows_flags(redis_client, 2) == [False]
    assert numbers(Question.diffs.get_by_object_id(1)) == list(range(152))
    stored_set = Question.diffs.get_sortedset(1)
    assert numbers(list(reversed(stored_set))) == list(range(151, -1, -1))
    assert numbers(stored_set[60:70]) == list(range(60, 70))
    assert numbers(stored_set.zrevrange(5, 7)) == [146, 145, 144]
    found, since = [], None
    while True:
        page = Question.diffs.object_since(1, since, limit=7)
        found += numbers(page.diffs)
        since = page.cursor
        if not page.has_more:
            break
    assert found == list(range(152))


def test_interleaved_objects_read_each_diff_by_its_id(redis_client):
    for n in range(6):
        write(n, pk=n % 2)
    assert follows_flags(redis_client, 0) == follows_flags(redis_client, 1) == [False] * 3
    assert numbers(Question.diffs.get_by_object_id(1)) == [1, 3, 5]


def test_a_diff_gone_from_the_middle_of_a_run_is_skipped_alone(redis_client):
    for n in range(5):
        write(n)
    gone = Question.diffs.get_by_object_id(1)[2]
    _, log = current_layout().lane_keys_for(Question.diffs.get_key(1))
    redis_client.xdel(log, stream_id(float(gone.cursor)))
    assert numbers(Question.diffs.get_by_object_id(1)) == [0, 1, 3, 4]
    assert numbers(Question.diffs.get_sortedset(1)[:]) == [0, 1, 3, 4]
    assert numbers(Question.diffs.since(None).diffs) == [0, 1, 3, 4]


def test_a_log_written_again_never_lends_another_objects_diffs(redis_client):
    # The log went (evicted, deleted) while an index stayed; fixed scores then put
    # another object's diffs inside the old run's span. None is read as the first's.
    now = time.time() * 1000
    open_horizon(Question)
    for n, ago in enumerate([10_000, 9_000, 8_000]):
        write_at(Question, 1, {"owner": "A", "n": n}, now - ago)
    assert follows_flags(redis_client, 1) == [False, True, True]
    redis_client.delete(log_key("testapp.question"))
    for n, ago in enumerate([9_500, 8_500, 8_200]):
        write_at(Question, 2, {"owner": "B", "n": n}, now - ago)
    for read in (
        Question.diffs.get_by_object_id(1),
        Question.diffs.get_sortedset(1)[:],
        Question.diffs.object_since(1, None).diffs,
    ):
        assert [d.data["owner"] for d in read] == []
    assert [d.data["owner"] for d in Question.diffs.get_by_object_id(2)] == ["B"] * 3


def test_an_index_of_another_type_is_refused_before_the_log_exists(redis_client):
    diff = outgoing_diff(2)
    index, log = current_layout().lane_keys_for(diff.key)
    redis_client.hset(index, "not", "ours")
    refused = queue.write_batch([diff])
    assert [d for d, _ in refused] == [diff]
    assert not redis_client.exists(log)


def test_an_entry_deleted_at_the_end_of_the_log_still_bars_its_id(redis_client):
    now = time.time() * 1000
    open_horizon(Question)
    write_at(Question, 1, {"n": 1}, now - 10_000)
    deleted = write_at(Question, 2, {"n": 2}, now - 5_000)
    redis_client.xdel(log_key("testapp.question"), stream_id(deleted))
    # A fixed score between the last entry left and the deleted one: below the log's
    # last id, so it takes the set lane instead of failing the write.
    write_at(Question, 1, {"n": 3}, now - 7_000)
    assert [d.data["n"] for d in Question.diffs.get_by_object_id(1)] == [1, 3]


def test_pages_a_byte_budget_stops_inside_a_run_return_every_diff_once(redis_client):
    for n in range(40):
        Question.diffs.create(data={"n": n, "pad": "x" * 2000}, pk=1)
    with diffs_settings(page_bytes=5000):
        found, since = [], None
        while True:
            page = Question.diffs.object_since(1, since, limit=100)
            assert 1 <= len(page.diffs) <= 3
            found += [d.data["n"] for d in page.diffs]
            since = page.cursor
            if not page.has_more:
                break
    assert found == list(range(40))
