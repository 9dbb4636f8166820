"""DIFFS_SETTINGS, read lazily, defaults intact, errors that name the key."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from diffs import settings as diffs_settings_module
from diffs.settings import DEFAULTS, build_settings, get_settings


def test_defaults_are_the_originals_plus_prefix_and_url():
    conf = build_settings({})
    assert conf.redis == {"host": "localhost", "port": 6379, "db": 0}
    assert conf.max_element_age == 3600
    assert conf.use_transactions is True
    assert conf.test_mode is False
    assert conf.prefix == "diffs:"
    assert conf.url is None
    assert conf.on_redis_error == "retry"
    assert conf.socket_timeout == 1.0
    assert conf.retry_buffer_size == 10_000
    assert conf.durable is False
    assert conf.max_diff_bytes == 1_048_576


@pytest.mark.parametrize("empty", [None, {}])
def test_empty_setting_means_defaults(empty):
    with override_settings(DIFFS_SETTINGS=empty):
        assert get_settings() == build_settings({})


def test_redis_dict_merges_without_mutating_defaults():
    user = {"redis": {"host": "cache", "password": "pw"}}
    conf = build_settings(user)
    assert conf.redis == {"host": "cache", "port": 6379, "db": 0, "password": "pw"}
    assert conf.user_redis == {"host": "cache", "password": "pw"}
    conf.redis["db"] = 5
    assert DEFAULTS["redis"] == {"host": "localhost", "port": 6379, "db": 0}
    assert user == {"redis": {"host": "cache", "password": "pw"}}
    assert build_settings({}).redis["db"] == 0


def test_a_connection_pool_is_passed_as_it_is():
    import redis

    pool = redis.ConnectionPool(host="cache.local")
    conf = build_settings({"redis": {"connection_pool": pool}})
    assert conf.redis["connection_pool"] is pool


def test_override_settings_takes_effect_at_once():
    before = get_settings()
    with override_settings(DIFFS_SETTINGS={"test_mode": True, "max_element_age": 60}):
        assert get_settings().max_element_age == 60
    assert get_settings() == before


def test_settings_fixture_takes_effect(settings):
    settings.DIFFS_SETTINGS = {"test_mode": True, "prefix": "x:"}
    assert get_settings().prefix == "x:"


def test_unrelated_setting_change_keeps_the_cache():
    before = get_settings()
    with override_settings(USE_I18N=False):
        assert get_settings() is before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([("redis", {})], "DIFFS_SETTINGS must be a dict"),
        ({"max_elemnt_age": 5}, "unknown key 'max_elemnt_age'. Did you mean 'max_element_age'?"),
        ({"redis": "localhost"}, "DIFFS_SETTINGS['redis'] must be a dict"),
        ({"max_element_age": 0}, "'max_element_age'] must be a positive number"),
        ({"max_element_age": -5}, "'max_element_age'] must be a positive number"),
        ({"max_element_age": True}, "'max_element_age'] must be a positive number"),
        ({"max_element_age": "3600"}, "'max_element_age'] must be a positive number"),
        ({"use_transactions": "yes"}, "'use_transactions'] must be True or False"),
        ({"test_mode": 1}, "'test_mode'] must be True or False"),
        ({"prefix": ""}, "'prefix'] must be a non-empty string"),
        (
            {"url": "http://localhost"},
            "'url'] must be a redis://, rediss://, unix:// or redis+cluster:// URL",
        ),
        ({"url": 6379}, "'url'] must be a redis://"),
        (
            {"redis": {"hostname": "x"}},
            "'hostname', which redis.Redis() does not accept. Did you mean 'host'?",
        ),
    ],
)
def test_bad_settings_raise_a_clear_error_at_first_use(raw, fragment):
    with override_settings(DIFFS_SETTINGS=raw), pytest.raises(ImproperlyConfigured) as info:
        get_settings()
    assert fragment in str(info.value)
    assert "(diffs.E0" in str(info.value)


def test_a_warning_alone_does_not_raise():
    conf = build_settings({"url": "redis://h/1", "redis": {"host": "x"}})
    assert conf.url == "redis://h/1"


def test_cache_is_filled_once(monkeypatch):
    calls = []
    real = diffs_settings_module.build_settings
    monkeypatch.setattr(
        diffs_settings_module, "build_settings", lambda raw: calls.append(raw) or real(raw)
    )
    diffs_settings_module.clear_settings_cache()
    get_settings()
    get_settings()
    assert len(calls) == 1


def test_each_setting_is_declared_once_with_its_default_and_its_check():
    """DiffsSettings' fields are the keys: DEFAULTS and the checks come from them, and
    the README's settings table and check list name the same keys and ids."""
    import dataclasses
    import re
    from pathlib import Path

    from diffs.settings import DiffsSettings, find_problems

    keys = [f.name for f in dataclasses.fields(DiffsSettings) if f.name != "user_redis"]
    assert list(DEFAULTS) == keys
    readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    table = readme.split("\nSettings\n========\n", 1)[1].split("\nRedis Cluster\n", 1)[0]
    assert set(re.findall(r"^``(\w+)``  ", table, re.MULTILINE)) == set(keys)
    listed_ids = set(re.findall(r"^``(diffs\.[EW]\d{3})``", readme, re.MULTILINE))
    for key in keys:
        problems = find_problems({key: object()})  # no key accepts a bare object
        assert problems, key
        assert {p.check_id for p in problems} <= listed_ids, key
