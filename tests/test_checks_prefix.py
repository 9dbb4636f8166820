"""Checks for prefixes that overlap.

``diffs.W003`` (static): a prefix that does not end with ``:`` is the start of other
prefixes. ``diffs.W004`` (``check --deploy``): keys under our prefix that django-diffs
did not write for this project exist, so another site's prefix starts with ours. W004
looks at a few hundred keys at most, in one SCAN walk, within ``socket_timeout``.
"""

from __future__ import annotations

import itertools
import types

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from diffs import checks
from diffs.checks import check_redis_reachable, check_settings
from tests.conftest import unreachable_url
from tests.support.keynames import feed_key, object_key
from tests.support.redis_server import redis_server


def ids(messages):
    return [m.id for m in messages]


# diffs.W003


@pytest.mark.parametrize("prefix", ["diffs", "site-a", "x:y"])
def test_a_prefix_not_ending_with_a_colon_is_w003(prefix):
    with override_settings(DIFFS_SETTINGS={"prefix": prefix}):
        [warning] = check_settings()
    assert warning.id == "diffs.W003"
    assert repr(prefix) in warning.msg and "does not end with ':'" in warning.msg
    assert f"{prefix}2:" in warning.msg  # the kind of prefix it is the start of
    assert f"DIFFS_SETTINGS['prefix'] = {prefix + ':'!r}" in warning.hint
    assert warning.obj == "settings.DIFFS_SETTINGS"


@pytest.mark.parametrize("raw", [{}, {"prefix": "diffs:"}, {"prefix": "a:b:"}])
def test_prefixes_ending_with_a_colon_are_fine(raw):
    with override_settings(DIFFS_SETTINGS=raw):
        assert check_settings() == []


@pytest.mark.parametrize("prefix", ["", 5, None])
def test_a_prefix_that_is_no_string_is_e007_only(prefix):
    with override_settings(DIFFS_SETTINGS={"prefix": prefix}):
        assert ids(check_settings()) == ["diffs.E007"]


# diffs.W004


@pytest.fixture
def server():
    """A redis-server of the test's own, and a client of it (db 0: nothing else there)."""
    with redis_server() as running:
        client = redis.Redis(port=running.port)
        with override_settings(DIFFS_SETTINGS={"url": f"redis://127.0.0.1:{running.port}/0"}):
            yield client
        client.close()


def ours(client, label="testapp.question"):
    """One key of each kind django-diffs writes, in both layouts."""
    for part in (label, f"{{{label}}}"):
        client.zadd(f"diffs:{part}:1", {"m": 1})
        client.zadd(f"diffs:feed:{part}", {"m": 1})
        client.hset(f"diffs:horizon:{part}", "from", "1")
        client.set(f"diffs:born:{part}:1", "1")


def test_no_keys_or_only_ours_give_no_w004(server):
    assert check_redis_reachable() == []
    ours(server)
    ours(server, "testapp.choice")
    server.zadd("diffsother:x", {"m": 1})  # not under the prefix at all
    assert check_redis_reachable() == []


def test_another_sites_keys_under_the_prefix_are_w004(server):
    ours(server)
    server.zadd("diffs:siteb:testapp.question:1", {"m": 1})
    [warning] = check_redis_reachable()
    assert warning.id == "diffs.W004"
    assert "'diffs:siteb:testapp.question:1'" in warning.msg
    assert "under the prefix 'diffs:'" in warning.msg
    assert "give each site a prefix that is not the start of another's" in warning.hint
    assert warning.obj == "settings.DIFFS_SETTINGS"


@pytest.mark.parametrize(
    "key",
    [
        b"diffs:x.y:testapp.question:1",  # a site with the prefix diffs:x.y:
        b"diffs:testapp.question:abc",  # a pk no integer pk field accepts
        b"diffs:nosuch.model:1",  # a model not installed here
        b"diffs:Question-1",  # django-diffs 0.1.16
        b"diffs:\xff",  # not UTF-8
    ],
)
def test_keys_not_of_our_shape_for_this_project_are_w004(server, key):
    server.set(key, "x")
    assert ids(check_redis_reachable()) == ["diffs.W004"]


def test_the_example_key_is_cut_short_and_escaped(server):
    server.set("diffs:siteb:\x1b[2J" + "x" * 500, "x")
    [warning] = check_redis_reachable()
    assert "\x1b" not in warning.msg and "e.g. 'diffs:siteb:\\x1b[2Jxxx" in warning.msg
    assert "x" * 100 not in warning.msg and "…" in warning.msg


def scans_counted(monkeypatch):
    """Record the COUNT of every SCAN a redis.Redis client sends."""
    counts: list[int] = []
    real = redis.Redis.scan

    def scan(self, cursor=0, match=None, count=None, **options):
        counts.append(count)
        return real(self, cursor, match=match, count=count, **options)

    monkeypatch.setattr(redis.Redis, "scan", scan)
    return counts


def test_w004_looks_at_a_few_hundred_keys_at_most(server, monkeypatch):
    pipe = server.pipeline(transaction=False)
    for pk in range(5000):
        pipe.zadd(f"diffs:testapp.question:{pk}", {"m": 1})
    pipe.execute()
    counts = scans_counted(monkeypatch)
    assert check_redis_reachable() == []
    assert 1 <= len(counts) <= 3
    assert sum(counts) <= checks.SAMPLE_KEYS <= 500


def test_w004_stops_at_its_deadline(server, monkeypatch):
    for pk in range(2000):
        server.zadd(f"diffs:testapp.question:{pk}", {"m": 1})
    counts = scans_counted(monkeypatch)
    # the start, a reading before the first SCAN, then 100 s later at every reading
    clock = itertools.chain([0.0, 0.5], itertools.count(100.0, 100.0))
    monkeypatch.setattr(checks, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    assert check_redis_reachable() == []
    assert len(counts) == 1  # the deadline (socket_timeout after the start) had passed


def test_redis_failing_during_the_walk_gives_no_w004_and_no_error(server, monkeypatch):
    server.set("diffs:siteb:x", "x")

    def timeout(self, *args, **kwargs):
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(redis.Redis, "scan", timeout)
    assert check_redis_reachable() == []


def test_an_unreachable_redis_is_e013_only():
    with override_settings(DIFFS_SETTINGS={"url": unreachable_url()}):
        assert ids(check_redis_reachable()) == ["diffs.E013"]


def test_deploy_checks_are_bounded_when_socket_timeout_is_none(monkeypatch):
    seen = []
    real = checks.build_client

    def build_client(conf):
        seen.append(conf.socket_timeout)
        return real(conf)

    # diffs.checks builds its clients with the build_client it imported
    monkeypatch.setattr(checks, "build_client", build_client)
    with override_settings(DIFFS_SETTINGS={"url": unreachable_url(), "socket_timeout": None}):
        check_redis_reachable()
    assert seen and set(seen) == {checks.DEPLOY_CHECK_TIMEOUT}


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs the suite's real Redis (or cluster)")
def test_w004_on_the_suites_redis(redis_client):
    redis_client.zadd(object_key("testapp.question", 1), {"m": 1})
    redis_client.zadd(feed_key("testapp.question"), {"m": 1})
    assert check_redis_reachable() == []
    redis_client.set("diffs:siteb:testapp.question:1", "x")
    [warning] = check_redis_reachable()
    assert warning.id == "diffs.W004" and "diffs:siteb:testapp.question:1" in warning.msg
