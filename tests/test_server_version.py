"""A Redis server older than 6.2: reads and prune_diffs say so instead of failing obscurely."""

from __future__ import annotations

import asyncio
import weakref

import pytest
import redis
from django.core.management import CommandError, call_command

import diffs
from diffs import server_version
from diffs.exceptions import DiffsError, RedisTooOld, RedisUnavailable
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

# What Redis 6.0 answers to an exclusive stream bound ("(1-0"), which the log's reads use.
OLD_REFUSAL = "Invalid stream ID specified as stream command argument"


@pytest.fixture(autouse=True)
def forget_checked_servers(monkeypatch):
    monkeypatch.setattr(server_version, "_found", weakref.WeakKeyDictionary())


def pretend(monkeypatch, client, *, version, refusal=OLD_REFUSAL):
    """Make ``client`` refuse every script as a server running ``version`` would; return
    the list of INFO sections asked."""
    asked = []

    def evalsha(*args, **kwargs):
        raise redis.ResponseError(refusal)

    def info(section=None, *args, **kwargs):
        asked.append(section)
        if version is None:
            raise redis.ResponseError("NOPERM this user has no permissions to run 'info'")
        return {"redis_version": version}

    monkeypatch.setattr(client, "evalsha", evalsha)
    monkeypatch.setattr(client, "info", info)
    return asked


def a_question_with_diffs():
    question = Question.objects.create(question_text="a")
    question.question_text = "b"
    question.save()
    return question


def test_a_read_from_redis_6_0_names_the_version_and_the_fix(monkeypatch):
    question = a_question_with_diffs()
    pretend(monkeypatch, diffs.get_connection(), version="6.0.16")
    with pytest.raises(RedisTooOld) as raised:
        Question.diffs.get_by_object_id(question.pk)
    message = str(raised.value)
    assert "Redis 6.2 or later" in message
    assert "runs Redis 6.0.16" in message
    assert "Upgrade the Redis server" in message
    assert OLD_REFUSAL in str(raised.value.__cause__)
    # Code that catches redis-py's or django-diffs' errors still catches it.
    assert isinstance(raised.value, redis.ResponseError)
    assert isinstance(raised.value, DiffsError)


def test_a_refusal_by_a_recent_server_is_its_own_and_the_version_is_asked_once(monkeypatch):
    question = a_question_with_diffs()
    asked = pretend(monkeypatch, diffs.get_connection(), version="7.2.4", refusal="ERR boom")
    for _ in range(3):
        with pytest.raises(RedisUnavailable) as raised:  # as before: read as an outage
            Question.diffs.get_by_object_id(question.pk)
        assert str(raised.value.__cause__) == "ERR boom"
        assert not isinstance(raised.value.__cause__, RedisTooOld)
        diffs_availability_reset()
    assert asked == ["server"]


def test_a_key_of_another_type_is_refused_as_ever_and_no_version_asked(monkeypatch):
    question = a_question_with_diffs()
    wrong_type = "WRONGTYPE Operation against a key holding the wrong kind of value"
    asked = pretend(monkeypatch, diffs.get_connection(), version="6.0.16", refusal=wrong_type)
    with pytest.raises(redis.ResponseError) as raised:
        Question.diffs.get_by_object_id(question.pk)
    assert not isinstance(raised.value, RedisTooOld)
    assert str(raised.value) == wrong_type
    assert asked == []


def test_a_server_that_hides_its_version_keeps_its_own_error(monkeypatch):
    question = a_question_with_diffs()
    pretend(monkeypatch, diffs.get_connection(), version=None)
    # Not known to be too old: an error Redis may stop giving, read as an outage (as before).
    with pytest.raises(RedisUnavailable) as raised:
        Question.diffs.get_by_object_id(question.pk)
    assert not isinstance(raised.value.__cause__, RedisTooOld)
    assert OLD_REFUSAL in str(raised.value)


def test_an_async_read_from_redis_6_0_names_the_version(monkeypatch):
    from diffs.async_connection import get_async_connection

    question = a_question_with_diffs()

    async def read():
        client = await get_async_connection()

        async def evalsha(*args, **kwargs):
            raise redis.ResponseError(OLD_REFUSAL)

        async def info(section=None, *args, **kwargs):
            return {"redis_version": "6.0.16"}

        monkeypatch.setattr(client, "evalsha", evalsha)
        monkeypatch.setattr(client, "info", info)
        return await Question.diffs.aget_by_object_id(question.pk)

    with pytest.raises(RedisTooOld, match=r"runs Redis 6\.0\.16"):
        asyncio.run(read())


def test_prune_diffs_on_redis_6_0_stops_with_the_version_and_the_fix(monkeypatch):
    a_question_with_diffs()
    pretend(monkeypatch, diffs.get_connection(), version="6.0.16", refusal="ERR syntax error")
    with pytest.raises(CommandError) as raised:
        call_command("prune_diffs", max_age=0.001)
    message = str(raised.value)
    assert "needs Redis 6.2 or later" in message
    assert "runs Redis 6.0.16" in message
    assert "Point" not in message  # not the advice for a refused permission


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("6.0.16", (6, 0, 16)), (b"7.2.4", (7, 2, 4)), ("7.4", (7, 4)), ("", None), ("7.x", None)],
)
def test_versions_are_read_as_numbers(text, parsed):
    assert server_version.parse_version(text) == parsed
    assert server_version.parse_version(None) is None


def test_the_oldest_node_of_a_cluster_decides():
    info = {
        "127.0.0.1:7000": {"redis_version": "7.0.15"},
        "127.0.0.1:7001": {"redis_version": "6.0.9"},
        "127.0.0.1:7002": {"redis_version": "6.10.1"},
    }
    assert server_version.oldest_version(info) == "6.0.9"
    assert server_version.oldest_version({"redis_version": "6.2.0"}) == "6.2.0"
    assert server_version.oldest_version({"uptime": 5}) is None
    assert server_version.oldest_version("7.0.0") is None
    assert server_version.too_old("6.2.0") is None
    assert server_version.too_old("6.10.1") is None
    assert server_version.too_old(None) is None
    assert isinstance(server_version.too_old("5.0.7"), RedisTooOld)


def test_on_redis_6_0_a_key_of_another_type_is_still_set_aside_not_blamed_on_the_version(
    monkeypatch, redis_client, caplog
):
    import logging

    from diffs import delivery
    from tests.support.keynames import object_key

    asked = []

    def info(section=None, *args, **kwargs):
        asked.append(section)
        return {"redis_version": "6.0.16"}

    monkeypatch.setattr(redis_client, "info", info)
    blocked = Question.objects.create(question_text="blocked")
    redis_client.delete(object_key("testapp.question", blocked.pk))
    redis_client.set(object_key("testapp.question", blocked.pk), "not a sorted set")
    with caplog.at_level(logging.ERROR, logger="diffs"):
        blocked.question_text = "never stored"
        blocked.save()
        other = Question.objects.create(question_text="behind it")
    assert delivery.waiting() == 0
    assert [d.data[0]["fields"]["question_text"] for d in other.diffs] == ["behind it"]
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("Set aside") and "WRONGTYPE" in m for m in messages)
    assert not any("needs Redis 6.2" in m for m in messages)
    assert asked == []  # WRONGTYPE comes from every version: nothing to ask


def test_a_version_that_cannot_be_read_is_not_asked_again_at_every_refusal(monkeypatch):
    question = a_question_with_diffs()
    asked = pretend(monkeypatch, diffs.get_connection(), version=None)
    for _ in range(3):
        with pytest.raises(RedisUnavailable):
            Question.diffs.get_by_object_id(question.pk)
        diffs_availability_reset()
    assert asked == ["server"]


def diffs_availability_reset():
    from diffs import availability

    availability.reset()


def test_a_minute_later_the_version_is_asked_again(monkeypatch):
    question = a_question_with_diffs()
    client = diffs.get_connection()
    asked = pretend(monkeypatch, client, version="6.0.16")
    with pytest.raises(RedisTooOld):
        Question.diffs.get_by_object_id(question.pk)
    with pytest.raises(RedisTooOld):
        Question.diffs.get_by_object_id(question.pk)
    assert asked == ["server"]
    when, version = server_version._found[client]
    server_version._found[client] = (when - server_version.REMEMBER_SECONDS - 1, version)
    with pytest.raises(RedisTooOld):
        Question.diffs.get_by_object_id(question.pk)
    assert asked == ["server", "server"]


def test_cached_scripts_do_not_keep_their_client_alive():
    import gc

    import fakeredis

    from diffs.connection import cached_script

    client = fakeredis.FakeRedis()
    # Loaded beforehand: fakeredis keeps the traceback of a NOSCRIPT answer, whose
    # frames hold the client (a real client is collected either way).
    client.script_load("return 7")
    assert cached_script(client, "return 7")() == 7
    assert cached_script(client, "return 7") is cached_script(client, "return 7")
    gone = weakref.ref(client)
    del client
    gc.collect()
    assert gone() is None


def test_a_script_is_loaded_again_after_script_flush(redis_client):
    from diffs.connection import cached_script

    script = cached_script(redis_client, "return ARGV[1] .. KEYS[1]")
    assert script(keys=["k"], args=["v"]) in ("vk", b"vk")
    redis_client.script_flush()
    assert script(keys=["k"], args=["w"]) in ("wk", b"wk")
    question = a_question_with_diffs()
    redis_client.script_flush()
    question.question_text = "after the flush"
    question.save()
    assert question.diffs[-1].data[0]["fields"]["question_text"] == "after the flush"


def test_async_scripts_run_and_are_loaded_again_after_script_flush(redis_client):
    from diffs.async_connection import get_async_connection
    from diffs.connection import cached_script

    async def run():
        client = await get_async_connection()
        script = cached_script(client, "return ARGV[1] .. KEYS[1]")
        first = await script(keys=["{k}"], args=["v"])
        await client.script_flush()
        return first, await script(keys=["{k}"], args=["w"])

    first, second = asyncio.run(run())
    assert first in ("v{k}", b"v{k}") and second in ("w{k}", b"w{k}")
