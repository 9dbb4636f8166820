"""System checks diffs.E001… and diffs.W001… (W003 and W004 in detail: test_checks_prefix.py)."""

from __future__ import annotations

import builtins
import importlib.util

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import models
from django.test import override_settings

import diffs
from diffs.checks import check_registered_models, check_settings


def ids(messages):
    return [m.id for m in messages]


def test_valid_settings_have_no_messages():
    assert check_settings() == []
    with override_settings(DIFFS_SETTINGS=None):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("redis://localhost", ["diffs.E001"]),
        ({"hosts": 1}, ["diffs.E002"]),
        ({"redis": ["localhost"]}, ["diffs.E003"]),
        ({"max_element_age": 0}, ["diffs.E004"]),
        ({"use_transactions": None}, ["diffs.E005"]),
        ({"test_mode": "no"}, ["diffs.E006"]),
        ({"prefix": 5}, ["diffs.E007"]),
        ({"url": "memcached://x"}, ["diffs.E008"]),
        ({"url": "redis://localhost:notaport/1"}, ["diffs.E008"]),
        ({"max_element_age": float("inf")}, ["diffs.E004"]),
        ({"redis": {"hostname": "x", "socket_timeout": 1}}, ["diffs.E010"]),
        ({"on_redis_error": "ignore"}, ["diffs.E014"]),
        ({"socket_timeout": 0}, ["diffs.E015"]),
        ({"socket_timeout": "1"}, ["diffs.E015"]),
        ({"durable": 1}, ["diffs.E016"]),
        ({"max_diff_bytes": 1.5}, ["diffs.E017"]),
        ({"max_diff_bytes": True}, ["diffs.E017"]),
        ({"retry_buffer_size": 0}, ["diffs.E018"]),
        ({"durable": True, "use_transactions": False}, ["diffs.E019"]),
        ({"write_batch_bytes": 0}, ["diffs.E024"]),
        ({"page_bytes": "1 MiB"}, ["diffs.E025"]),
        ({"queue_bytes": -1}, ["diffs.E026"]),
        ({"queue_bytes": 1000, "max_diff_bytes": 2000}, ["diffs.E027"]),
        ({"spill_after_bytes": 0}, ["diffs.E028"]),
        ({"socket_timeout": None, "on_redis_error": "raise", "durable": True}, []),
        ({"url": "redis://x/1", "redis": {"host": "y", "db": 2}}, ["diffs.W001"]),
        ({"url": "redis://x/1", "redis": {"socket_timeout": 2}}, []),
        ({"prefix": "diffs"}, ["diffs.W003"]),
        ({"prefix": "diffs:"}, []),
        (
            {"prefix": "", "max_element_age": -1, "bogus": 1},
            ["diffs.E002", "diffs.E004", "diffs.E007"],
        ),
    ],
)
def test_each_problem_has_its_id(raw, expected):
    with override_settings(DIFFS_SETTINGS=raw):
        messages = check_settings()
    assert sorted(ids(messages)) == expected
    for message in messages:
        assert message.hint
        assert message.obj == "settings.DIFFS_SETTINGS"


def test_check_command_fails_on_errors():
    with (
        override_settings(DIFFS_SETTINGS={"max_element_age": 0}),
        pytest.raises(SystemCheckError, match=r"diffs\.E004.*max_element_age"),
    ):
        call_command("check")


def test_test_mode_without_fakeredis(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        messages = check_settings()
    assert ids(messages) == ["diffs.E009"]
    assert "pip install 'django-diffs[test]'" in messages[0].hint


def test_missing_fakeredis_is_a_clear_error_at_first_use(monkeypatch):
    import diffs

    real_import = builtins.__import__

    def no_fakeredis(name, *args, **kwargs):
        if name == "fakeredis":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fakeredis)
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(DIFFS_SETTINGS={"test_mode": True}),
        pytest.raises(ImproperlyConfigured, match=r"pip install 'django-diffs\[test\]'"),
    ):
        diffs.get_connection()


def test_deploy_check_reports_an_unreachable_redis():
    from diffs.checks import check_redis_reachable
    from tests.support.redis_server import free_port

    port = free_port()
    with override_settings(DIFFS_SETTINGS={"url": f"redis://127.0.0.1:{port}/3"}):
        [error] = check_redis_reachable()
    assert error.id == "diffs.E013"
    assert f"Cannot reach Redis at 127.0.0.1:{port} db 3" in error.msg
    with override_settings(DIFFS_SETTINGS={"url": f"unix:///nonexistent/{port}.sock"}):
        [error] = check_redis_reachable()
    assert f"unix:///nonexistent/{port}.sock" in error.msg
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        assert check_redis_reachable() == []
    with override_settings(DIFFS_SETTINGS={"prefix": 5}):
        assert check_redis_reachable() == []
    with override_settings(DIFFS_SETTINGS={"max_element_age": 0}), pytest.raises(SystemCheckError):
        call_command("check", "--deploy")


def test_deploy_check_warns_of_other_sites_keys_under_the_prefix():
    import redis

    from diffs.checks import check_redis_reachable
    from tests.support.redis_server import redis_server

    with redis_server() as server:
        redis.Redis(port=server.port).set("diffs:siteb:testapp.question:1", "x")
        with override_settings(DIFFS_SETTINGS={"url": f"redis://127.0.0.1:{server.port}/0"}):
            [warning] = check_redis_reachable()
    assert warning.id == "diffs.W004"
    assert "give each site a prefix that is not the start of another's" in warning.hint


def test_a_replaced_diffs_attribute_is_reported():
    class Target(models.Model):
        class Meta:
            app_label = "testapp"

    diffs.register(Target)
    try:

        class Pointer(models.Model):
            target = models.ForeignKey(Target, models.CASCADE, related_name="diffs")

            class Meta:
                app_label = "testapp"

        [error] = [m for m in check_registered_models() if m.id == "diffs.E011"]
        assert error.id == "diffs.E011"
        assert "testapp.Target.diffs" in error.msg
        assert "related_name='diffs'" in error.hint
    finally:
        diffs.unregister(Target)
