from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

import diffs
from diffs import delivery
from diffs.settings import clear_settings_cache


@pytest.fixture(autouse=True)
def redis_client() -> Iterator[redis.Redis]:
    """The Redis client of the current settings, flushed (its own db only) before each test."""
    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()
    client = diffs.get_connection()
    db = client.connection_pool.connection_kwargs.get("db", 0)
    if settings.REDIS_URL:
        assert db != 0, "DIFFS_TEST_REDIS_URL must name a db other than 0: the tests flush it"
    client.flushdb()
    yield client
    delivery.clear()
    clear_settings_cache()
    diffs.reset_connection()


def diffs_settings(**changes: object):
    """``override_settings`` for DIFFS_SETTINGS keys, keeping the suite's Redis choice."""
    from django.test import override_settings

    return override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, **changes})
