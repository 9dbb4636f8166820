"""One cached client per process; URL or kwargs; test mode shares one fake server."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from django.test import override_settings

import diffs
from diffs.connection import build_client, get_fake_server
from diffs.settings import build_settings
from tests.support.redis_server import free_port


def test_client_is_built_once_and_cached():
    assert diffs.get_connection() is diffs.get_connection()


def test_reset_builds_a_new_client():
    first = diffs.get_connection()
    diffs.reset_connection()
    assert diffs.get_connection() is not first


def test_settings_change_drops_the_client():
    first = diffs.get_connection()
    with override_settings(DIFFS_SETTINGS={"test_mode": True, "prefix": "p:"}):
        assert diffs.get_connection() is not first


def test_test_mode_clients_share_one_server():
    conf = build_settings({"test_mode": True})
    one, two = build_client(conf), build_client(conf)
    assert isinstance(one, fakeredis.FakeRedis)
    one.set("diffs-shared", "1")
    try:
        assert two.get("diffs-shared") == b"1"
    finally:
        one.delete("diffs-shared")
    assert get_fake_server() is get_fake_server()


def test_kwargs_build_a_redis_client():
    conf = build_settings({"redis": {"host": "cache.local", "port": 6390, "db": 3}})
    client = build_client(conf)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.local", 6390, 3)
    assert not isinstance(client, fakeredis.FakeRedis)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://user:secret@cache.local:6391/4",
            {
                "host": "cache.local",
                "port": 6391,
                "db": 4,
                "username": "user",
                "password": "secret",
            },
        ),
        ("rediss://cache.local:6380/2", {"host": "cache.local", "port": 6380, "db": 2}),
        ("unix:///run/redis.sock?db=5", {"path": "/run/redis.sock", "db": 5}),
    ],
)
def test_urls_build_the_right_client(url, expected):
    conf = build_settings({"url": url, "redis": {"socket_timeout": 1.5}})
    kwargs = build_client(conf).connection_pool.connection_kwargs
    for key, value in expected.items():
        assert kwargs[key] == value
    assert kwargs["socket_timeout"] == 1.5


def test_rediss_url_uses_tls():
    client = build_client(build_settings({"url": "rediss://cache.local:6380/0"}))
    assert client.connection_pool.connection_class is redis.SSLConnection


def test_unreachable_redis_fails_reads_clearly():
    url = f"redis://127.0.0.1:{free_port()}/1"
    with override_settings(DIFFS_SETTINGS={"url": url}), pytest.raises(redis.ConnectionError):
        from tests.testapp.models import Question

        Question.diffs.get_by_object_id(1)


def test_fakeredis_is_imported_only_in_test_mode():
    script = """
import sys
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "diffs"],
    DIFFS_SETTINGS={"url": "redis://127.0.0.1:1/3"},
)
django.setup()
import diffs
from django.core.management import call_command
call_command("check")
diffs.get_connection()
assert "fakeredis" not in sys.modules, "fakeredis was imported"
print("ok")
"""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip().endswith("ok"), result.stderr
