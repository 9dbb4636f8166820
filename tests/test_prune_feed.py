"""Issue 5, point 1e: a model feed is trimmed in short steps, never in one long command."""

from __future__ import annotations

import time

import pytest

from diffs import pruning
from tests.keynames import feed_key, object_key
from tests.test_prune import create_old
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db


def test_a_feed_is_trimmed_in_steps_and_keeps_what_is_recent(redis_client, monkeypatch):
    monkeypatch.setattr(pruning, "FEED_STEP", 3)
    steps = []
    original = pruning._trim_feed

    def counting(client, feed, cutoff_ms):
        removed = original(client, feed, cutoff_ms)
        steps.append(removed)
        return removed

    monkeypatch.setattr(pruning, "_trim_feed", counting)
    old = (time.time() - 7200) * 1000
    for pk in range(1, 9):
        create_old(Question, pk, {"old": pk}, old + pk)
    Question.diffs.create(data={"new": 1}, pk=1)
    report = pruning.prune(redis_client, "diffs:", (time.time() - 3600) * 1000)
    assert report.diffs_removed == 8
    assert report.feed_entries_removed == 8 and steps == [8]
    assert redis_client.zcard(feed_key("testapp.question")) == 1
    assert [d.data for d in Question.diffs.since().diffs] == [{"new": 1}]


def test_a_dry_run_counts_feed_entries_without_removing_them(redis_client):
    old = (time.time() - 7200) * 1000
    create_old(Question, 1, {"old": 1}, old)
    report = pruning.prune(redis_client, "diffs:", (time.time() - 3600) * 1000, dry_run=True)
    assert report.feed_entries_removed == 1
    assert redis_client.zcard(feed_key("testapp.question")) == 1


def test_a_feed_key_of_another_type_is_reported_and_left_alone(redis_client):
    feed = feed_key("testapp.question")
    redis_client.set(feed, "not ours")
    report = pruning.prune(redis_client, "diffs:", time.time() * 1000)
    assert report.feed_entries_removed == 0
    assert redis_client.get(feed) in (b"not ours", "not ours")
    [(key, error)] = report.skipped
    assert key == feed and error.startswith("WRONGTYPE")


def test_a_feed_is_pruned_with_the_cutoff_and_raises_the_horizon_once(redis_client):
    old = (time.time() - 7200) * 1000
    for pk in (1, 2):
        create_old(Question, pk, {"old": pk}, old + pk)
    horizon = feed_key("testapp.question").replace("feed:", "horizon:")
    redis_client.hset(horizon, "from", repr(old))  # complete since the first old diff
    cutoff = (time.time() - 3600) * 1000
    report = pruning.prune(redis_client, "diffs:", cutoff)
    assert report.feed_entries_removed == 2
    assert report.horizons == {horizon}
    assert float(redis_client.hget(horizon, "from")) == cutoff
    assert redis_client.zcard(object_key("testapp.question", 1)) == 0
