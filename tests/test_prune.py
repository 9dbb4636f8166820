"""manage.py prune_diffs and diffs.pruning: what is removed, what is kept, and the feed's trim."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.core.management import CommandError, call_command
from django.test import override_settings

from diffs import get_connection, pruning
from diffs.layout import current_layout
from diffs.settings import get_settings
from tests.conftest import diffs_settings, unreachable_url
from tests.support.keynames import feed_key, model_part, object_key
from tests.testapp.models import Choice, Question

HOUR_MS = 3600 * 1000


#: The window (seconds) old diffs are written under: three times the default.
OLD_WINDOW = 3 * 3600


@pytest.fixture(autouse=True)
def in_sets():
    """These tests count keys and read sorted sets: the set lane, which earlier versions
    wrote and ``storage: "sets"`` still writes. The log lane's pruning is in
    test_lanes.py."""
    with diffs_settings(storage="sets"):
        yield


def create_old(model, pk, data, timestamp):
    """``create()`` of a diff older than the default window (3600 s).

    ``create()`` refuses such a time under that window (no read could return it), and
    the write script places a fixed time below the model's horizon at the clock (its
    cursor would read as expired). So it is written under a longer window, with the
    model's horizon open since long ago, as on a site that has kept diffs that long.
    """
    with diffs_settings(max_element_age=OLD_WINDOW):
        get_connection().hset(
            current_layout().horizon_key(model), mapping={"from": -1e300, "age": OLD_WINDOW}
        )
        return model.diffs.create(data=data, pk=pk, timestamp=timestamp)


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("prune_diffs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def aged(redis_client):
    """Two objects with one fresh and one expired diff each, plus foreign keys."""
    now = time.time() * 1000
    for pk in (1, 2):
        Question.diffs.create(data={"age": "fresh"}, pk=pk, timestamp=now)
        create_old(Question, pk, {"age": "old"}, now - HOUR_MS - 1000)
    Choice.diffs.create(data={"age": "fresh"}, pk=1, timestamp=now)
    redis_client.zadd("asgi:groups:somekey", {"123": now - HOUR_MS - 1000})
    redis_client.zadd("diffsother", {"x": 1})  # shares the letters, not the prefix
    return now


def ages(pk, model=Question):
    # the raw view: get_by_object_id() hides expired diffs even before a prune
    return [d.data["age"] for d in model.diffs.get_sortedset(pk)]


def test_prune_removes_only_expired_diffs_under_the_prefix(aged, redis_client):
    out, err = run()
    assert ages(1) == ["fresh"] and ages(2) == ["fresh"]
    assert ages(1, Choice) == ["fresh"]
    assert redis_client.zcard("asgi:groups:somekey") == 1
    assert redis_client.zcard("diffsother") == 1
    assert out.strip() == "Removed 2 diff(s) from 2 of 3 key(s) under 'diffs:'."
    assert err == ""


def test_dry_run_changes_nothing(aged):
    out, _ = run("--dry-run")
    assert ages(1) == ["old", "fresh"]
    assert out.strip() == "Would remove 2 diff(s) from 2 of 3 key(s) under 'diffs:'."


def test_max_age_option(aged):
    time.sleep(0.01)
    out, _ = run("--max-age", "0.001")
    assert ages(1) == [] and ages(1, Choice) == []
    assert "Removed 5 diff(s) from 3 of 3 key(s)" in out


def test_max_element_age_setting(aged):
    with diffs_settings(max_element_age=7200):
        out, _ = run()
    assert "Removed 0 diff(s)" in out
    assert ages(1) == ["old", "fresh"]


@pytest.mark.parametrize("age", ["0", "-5", "nan"])
def test_bad_max_age_is_a_command_error(age):
    with pytest.raises(CommandError, match="--max-age must be a positive, finite number"):
        run("--max-age", age)


def test_verbose_output_lists_keys(aged):
    out, _ = run("-v", "2")
    assert f"1 diff(s) removed from {object_key('testapp.question', 1)}" in out
    assert object_key("testapp.choice", 1) not in out
    out, _ = run("-v", "3", "--dry-run")
    assert f"0 diff(s) would be removed from {object_key('testapp.choice', 1)}" in out


def test_keys_of_another_type_are_reported_and_skipped(aged, redis_client):
    string_key = object_key("testapp.question", 99)  # our shape, not a sorted set
    redis_client.set(string_key, "value")
    redis_client.set("diffs:string", "value")  # not our shape: left alone, unreported
    out, err = run()
    assert f'Skipped key "{string_key}": WRONGTYPE' in err
    assert "diffs:string" not in err
    assert "Removed 2 diff(s) from 2 of 4 key(s)" in out
    assert redis_client.get(string_key) == b"value"
    assert redis_client.get("diffs:string") == b"value"


def test_glob_characters_in_the_prefix_are_literal(redis_client):
    ours, lookalike = (object_key("testapp.question", 1, p) for p in ("d*:", "dX:"))
    redis_client.zadd(ours, {"m": 1})
    redis_client.zadd(lookalike, {"m": 1})
    with diffs_settings(prefix="d*:"):
        out, _ = run()
    assert redis_client.zcard(ours) == 0
    assert redis_client.zcard(lookalike) == 1
    assert "from 1 of 1 key(s)" in out


def test_many_keys_are_scanned_in_batches(redis_client):
    old = time.time() * 1000 - HOUR_MS - 1000
    for pk in range(25):
        redis_client.zadd(object_key("testapp.question", pk), {"a": old, "b": old + 1})
    report = pruning.prune(
        redis_client, current_layout(), time.time() * 1000 - HOUR_MS, batch_size=4
    )
    assert (report.keys_scanned, report.keys_pruned, report.diffs_removed) == (25, 25, 50)
    # empty sorted sets vanish by themselves; the model's horizon hash stays
    horizon = f"diffs:horizon:{model_part('testapp.question')}"
    assert [k.decode() for k in redis_client.scan_iter("diffs:*")] == [horizon]


def test_test_mode_prune_sees_what_saves_wrote():
    with diffs_settings(test_mode=True, url=None):
        create_old(Question, 1, {"age": "old"}, time.time() * 1000 - 2 * HOUR_MS)
        Question.diffs.create(data={"age": "new"}, pk=1)
        out, _ = run()
        assert ages(1) == ["new"]
    assert "Removed 1 diff(s)" in out


def test_prune_uses_a_prefix_matched_scan_and_never_keys(aged, redis_client, monkeypatch):
    commands = []
    real = type(redis_client).execute_command

    def spy(self, *args, **options):
        commands.append(args)
        return real(self, *args, **options)

    monkeypatch.setattr(type(redis_client), "execute_command", spy)
    run()
    names = [str(args[0]).upper() for args in commands]
    assert "KEYS" not in names
    scans = [args for args in commands if str(args[0]).upper() == "SCAN"]
    assert scans
    for args in scans:
        assert [a.decode() if isinstance(a, bytes) else a for a in args[2:4]] == [
            "MATCH",
            "diffs:*",
        ]


def test_prune_is_safe_while_the_site_writes(redis_client):
    import threading

    old = time.time() * 1000 - 2 * HOUR_MS
    for pk in range(200):
        redis_client.zadd(object_key("testapp.question", pk), {f"old-{pk}": old})
    written: list[int] = []
    stop = threading.Event()

    def writer():
        pk = 0
        while not stop.is_set() or pk < 200:
            Question.diffs.create(data={"age": "fresh"}, pk=pk % 200)
            written.append(pk % 200)
            pk += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            pruning.prune(
                redis_client, current_layout(), time.time() * 1000 - HOUR_MS, batch_size=16
            )
    finally:
        stop.set()
        thread.join()
    pruning.prune(redis_client, current_layout(), time.time() * 1000 - HOUR_MS)
    total = sum(redis_client.zcard(object_key("testapp.question", pk)) for pk in range(200))

    assert total == len(written)  # every fresh diff survived, every old one is gone


# Redis down, or refusing: one line naming the server and the fix, a failing exit code


def test_redis_down_is_one_command_error_line_naming_the_server_and_the_fix():
    url = unreachable_url()
    with override_settings(DIFFS_SETTINGS={"url": url}), pytest.raises(CommandError) as info:
        run()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("prune_diffs stopped: Cannot reach Redis at ")
    assert f"127.0.0.1:{urlsplit(url).port}" in message
    assert "Start Redis there, or point DIFFS_SETTINGS['url'] at your server." in message


def test_redis_lost_during_a_prune_is_a_command_error(aged, monkeypatch):
    def connection_lost(*args, **kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(pruning, "_prune_batch", connection_lost)
    with pytest.raises(CommandError, match=r"^prune_diffs stopped: Cannot reach Redis at .+\.$"):
        run()


def test_a_command_refused_by_redis_names_what_the_user_needs():
    from tests.support.redis_server import redis_server

    with redis_server() as server:
        admin = redis.Redis(port=server.port)
        admin.acl_setuser(
            "noscan",
            enabled=True,
            passwords=["+pw"],
            keys=["diffs:*"],
            commands=["+@all", "-scan"],
        )
        url = f"redis://noscan:pw@127.0.0.1:{server.port}/0"
        with override_settings(DIFFS_SETTINGS={"url": url}), pytest.raises(CommandError) as info:
            run()
    message = str(info.value)
    assert "\n" not in message and "pw@" not in message
    assert message.startswith(f"prune_diffs stopped: Redis at 127.0.0.1:{server.port} db 0 ")
    assert "refused a command (" in message and "scan" in message.lower()
    assert "allowed SCAN, sorted-set commands and scripts" in message


def test_redis_down_in_a_real_process_exits_non_zero_with_one_line_and_no_traceback():
    url = unreachable_url()  # one server's, or a cluster's in the cluster configuration
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.support.settings_redis_url",
        "DIFFS_TEST_SUBPROCESS_REDIS_URL": url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "prune_diffs"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("CommandError: prune_diffs stopped: Cannot reach Redis at ")
    assert f"127.0.0.1:{urlsplit(url).port}" in line
    assert line.endswith("at your server. What it removed before stays removed.")
    assert done.stdout == ""


# --- the model feed: trimmed in short steps, never in one long command ----------------


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
    report = pruning.prune(redis_client, current_layout(), (time.time() - 3600) * 1000)
    assert report.diffs_removed == 8
    assert report.feed_entries_removed == 8 and steps == [8]
    assert redis_client.zcard(feed_key("testapp.question")) == 1
    assert [d.data for d in Question.diffs.since().diffs] == [{"new": 1}]


def test_a_dry_run_counts_feed_entries_without_removing_them(redis_client):
    old = (time.time() - 7200) * 1000
    create_old(Question, 1, {"old": 1}, old)
    report = pruning.prune(
        redis_client, current_layout(), (time.time() - 3600) * 1000, dry_run=True
    )
    assert report.feed_entries_removed == 1
    assert redis_client.zcard(feed_key("testapp.question")) == 1


def test_a_feed_key_of_another_type_is_reported_and_left_alone(redis_client):
    feed = feed_key("testapp.question")
    redis_client.set(feed, "not ours")
    report = pruning.prune(redis_client, current_layout(), time.time() * 1000)
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
    report = pruning.prune(redis_client, current_layout(), cutoff)
    assert report.feed_entries_removed == 2
    assert report.horizons == {horizon}
    assert float(redis_client.hget(horizon, "from")) == cutoff
    assert redis_client.zcard(object_key("testapp.question", 1)) == 0


# --- the cutoff: kept at it, removed a step before it ------------------------------------


#: The smallest step between two scores near the present (the write script's step).
SCORE_STEP = 0.001


@pytest.fixture
def at_the_cutoff(redis_client, monkeypatch):
    """The cutoff of ``prune_diffs`` under a Redis clock the test holds still, a diff of
    question 1 scored exactly at it and one of question 2 scored a step before it."""
    now = time.time() * 1000
    monkeypatch.setattr("diffs.management.commands.prune_diffs.redis_time_ms", lambda _: now)
    cutoff = now - get_settings().max_element_age * 1000  # as the command computes it
    create_old(Question, 1, {"at": "cutoff"}, cutoff)
    create_old(Question, 2, {"at": "a step before"}, cutoff - SCORE_STEP)
    assert (
        redis_client.zrange(object_key("testapp.question", 1), 0, -1, withscores=True)[0][1]
        == cutoff
    )
    return cutoff


def feed_scores(redis_client):
    return [
        score
        for _, score in redis_client.zrange(feed_key("testapp.question"), 0, -1, withscores=True)
    ]


def test_a_diff_at_the_cutoff_is_kept_and_one_a_step_older_is_removed(at_the_cutoff, redis_client):
    cutoff = at_the_cutoff
    out, _ = run("--dry-run")
    assert out.strip() == "Would remove 1 diff(s) from 1 of 2 key(s) under 'diffs:'."
    report = pruning.prune(redis_client, current_layout(), cutoff, dry_run=True)
    assert (report.diffs_removed, report.feed_entries_removed) == (1, 1)
    assert feed_scores(redis_client) == [cutoff - SCORE_STEP, cutoff]  # a dry run keeps all
    out, _ = run()
    assert out.strip() == "Removed 1 diff(s) from 1 of 2 key(s) under 'diffs:'."
    assert [d.data for d in Question.diffs.get_sortedset(1)] == [{"at": "cutoff"}]
    assert len(Question.diffs.get_sortedset(2)) == 0
    assert feed_scores(redis_client) == [cutoff]  # the feed's trim draws the same line
