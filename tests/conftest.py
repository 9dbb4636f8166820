from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

import diffs
from diffs import availability, delivery
from diffs.settings import clear_settings_cache
from tests.coverage_gate import PLUGIN_NAME, CoverageGate
from tests.support.redis_cluster import RedisCluster, redis_cluster

CLUSTER_URL_VARIABLE = "DIFFS_TEST_CLUSTER_URL"

#: The suite's own Redis Cluster (DIFFS_TEST_CLUSTER=1), from pytest_configure to
#: pytest_unconfigure; None in the other configurations.
suite_cluster: RedisCluster | None = None
_cluster_stack = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    """With DIFFS_TEST_CLUSTER=1, start a cluster of three primaries and point the suite at it.

    Test modules are imported after this (at collection), so their skip conditions see the
    cluster's URL in ``settings.REDIS_URL``; subprocesses of tests read it from the
    environment (tests/settings.py).
    """
    global suite_cluster
    if not settings.CLUSTER or suite_cluster is not None:
        return
    try:
        suite_cluster = _cluster_stack.enter_context(redis_cluster(primaries=3))
    except BaseException:
        _cluster_stack.close()
        raise
    # SIGTERM (a CI timeout, say) ends the run as ^C does, through pytest_unconfigure.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    _cluster_stack.callback(signal.signal, signal.SIGTERM, previous)
    os.environ[CLUSTER_URL_VARIABLE] = suite_cluster.url
    settings.REDIS_URL = suite_cluster.url
    settings.DIFFS_SETTINGS = {"url": suite_cluster.url}


def pytest_sessionstart(session: pytest.Session) -> None:
    """The 95% coverage gate of setup.cfg holds for whole-suite runs only (tests/coverage_gate.py)."""
    session.config.pluginmanager.register(CoverageGate(session.config), PLUGIN_NAME)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the suite's cluster by its pids; pytest calls this also after failures and ^C."""
    global suite_cluster
    suite_cluster = None
    os.environ.pop(CLUSTER_URL_VARIABLE, None)
    _cluster_stack.close()


def pytest_report_header(config: pytest.Config) -> str | None:
    if suite_cluster is None:
        return None
    return f"diffs: Redis Cluster of the suite's own, primaries on ports {suite_cluster.ports}"


@pytest.fixture(autouse=True)
def redis_client() -> Iterator[redis.Redis]:
    """The Redis client of the current settings, flushed (its own db only) before each test."""
    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()
    availability.reset()
    client = diffs.get_connection()
    if suite_cluster is not None:
        _flush_suite_cluster(client, suite_cluster)
    else:
        db = client.connection_pool.connection_kwargs.get("db", 0)
        if settings.REDIS_URL:
            assert db != 0, "DIFFS_TEST_REDIS_URL must name a db other than 0: the tests flush it"
        client.flushdb()
    yield client
    delivery.clear()
    availability.reset()
    clear_settings_cache()
    diffs.reset_connection()


def _flush_suite_cluster(client: redis.Redis, cluster: RedisCluster) -> None:
    """FLUSHDB on every primary of the suite's own cluster, after checking that is whom
    the client talks to."""
    from redis.cluster import RedisCluster as ClusterClient

    assert isinstance(client, ClusterClient), f"expected a cluster client, got {client!r}"
    primaries = sorted(int(node.port) for node in client.get_primaries())
    assert primaries == sorted(cluster.ports), (
        f"the client's primaries {primaries} are not the suite's cluster {cluster.ports}"
    )
    client.flushdb(target_nodes=ClusterClient.PRIMARIES)


def unreachable_url() -> str:
    """A URL of the suite's kind (one server, or a cluster) on a port nothing listens on."""
    from tests.support.redis_server import free_port

    if suite_cluster is not None:
        return f"redis+cluster://127.0.0.1:{free_port()}"
    return f"redis://127.0.0.1:{free_port()}/1"


def diffs_settings(**changes: object):
    """``override_settings`` for DIFFS_SETTINGS keys, keeping the suite's Redis choice."""
    from django.test import override_settings

    return override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, **changes})
