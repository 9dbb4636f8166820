"""prune_diffs warns when the Redis server may evict django-diffs' keys."""

from __future__ import annotations

import io

import pytest
import redis
from django.core.management import call_command

import diffs
from diffs.eviction import eviction_risk, eviction_settings

pytestmark = pytest.mark.django_db(transaction=True)


def prune() -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("prune_diffs", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def answer(monkeypatch, reply):
    def config_get(pattern="*", *args, **kwargs):
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(diffs.get_connection(), "config_get", config_get)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "volatile-lru"])
def test_a_policy_that_may_evict_is_named_with_the_fix(monkeypatch, policy):
    answer(monkeypatch, {"maxmemory": "104857600", "maxmemory-policy": policy})
    out, err = prune()
    assert "Removed 0 diff(s)" in out
    assert f"maxmemory-policy {policy}" in err
    assert "maxmemory 104857600 bytes" in err
    assert "Set maxmemory-policy noeviction" in err


@pytest.mark.parametrize(
    "reply",
    [
        {"maxmemory": "104857600", "maxmemory-policy": "noeviction"},
        {"maxmemory": "0", "maxmemory-policy": "allkeys-lru"},  # no limit: nothing evicted
        redis.ResponseError("ERR unknown command 'CONFIG'"),  # managed Redis
        redis.ConnectionError("gone"),
        "not a dict",
    ],
)
def test_nothing_is_said_when_nothing_is_evicted_or_the_server_does_not_say(monkeypatch, reply):
    answer(monkeypatch, reply)
    _, err = prune()
    assert "maxmemory" not in err


def test_the_server_as_it_runs_here_is_not_at_risk():
    # The test servers run without maxmemory (fakeredis, or redis-server's default).
    assert eviction_risk(diffs.get_connection()) is None


def test_a_cluster_reply_is_read_node_by_node_and_bytes_are_text():
    reply = {
        "127.0.0.1:7000": {b"maxmemory": b"0", b"maxmemory-policy": b"noeviction"},
        "127.0.0.1:7001": {b"maxmemory": b"1000", b"maxmemory-policy": b"allkeys-lfu"},
    }
    assert sorted(eviction_settings(reply)) == [(0, "noeviction"), (1000, "allkeys-lfu")]
    assert eviction_settings({"maxmemory": "lots", "maxmemory-policy": "x"}) == [(0, "x")]
