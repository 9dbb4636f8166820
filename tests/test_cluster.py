"""django-diffs on a real Redis Cluster of three primaries.

The cluster is the suite's own when the whole suite runs on one (DIFFS_TEST_CLUSTER=1),
else this module's (tests/support/redis_cluster.py: free ports, stopped by pid). These tests
run in every configuration.
Every model's keys share a hash tag, so a model lives on one primary; the models used
here spread over several, which the prune test checks.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

import diffs
from diffs import delivery, keys
from diffs.connection import build_client
from diffs.delivery import store
from diffs.models import OutboxEntry
from diffs.settings import build_settings, find_problems
from tests.support.paging import follow
from tests.support.redis_cluster import RedisCluster, redis_cluster
from tests.support.redis_server import free_port
from tests.support.writing import write_at
from tests.testapp.models import Article, Choice, CodeItem, Question, UUIDItem

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """The suite's cluster when the whole suite runs on one (DIFFS_TEST_CLUSTER=1), else
    a cluster of this module's own."""
    from tests import conftest

    if conftest.suite_cluster is not None:
        yield conftest.suite_cluster
        return
    with redis_cluster(primaries=3) as running:
        yield running


@pytest.fixture
def on_cluster(cluster: RedisCluster) -> Iterator[ClusterClient]:
    """DIFFS_SETTINGS pointing at the cluster, every primary flushed first."""
    with override_settings(DIFFS_SETTINGS={"url": cluster.url}):
        client = diffs.get_connection()
        assert isinstance(client, ClusterClient)
        client.flushall(target_nodes=ClusterClient.PRIMARIES)
        yield client


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_a_cluster_is_chosen_by_url_or_by_flag(cluster):
    by_url = build_client(build_settings({"url": cluster.url}))
    by_flag = build_client(
        build_settings({"cluster": True, "redis": {"host": "127.0.0.1", "port": cluster.ports[1]}})
    )
    try:
        assert isinstance(by_url, ClusterClient) and isinstance(by_flag, ClusterClient)
        assert by_flag.ping() and len(by_url.get_primaries()) == 3
    finally:
        by_url.close()
        by_flag.close()


def test_a_client_dropped_by_a_settings_change_still_works(on_cluster, cluster):
    # Code that holds diffs.get_connection() across a settings change (a test's fixture,
    # say) keeps a working client, as with one server. RedisCluster.close() would leave
    # it without a default node: PTTL then failed with an AttributeError.
    Question.diffs.create(data={"n": 1}, pk=1)
    key = "diffs:ix:{testapp.question}:1"
    with override_settings(DIFFS_SETTINGS={"url": cluster.url, "prefix": "other:"}):
        assert diffs.get_connection() is not on_cluster
    assert on_cluster.pttl(key) > 0
    assert on_cluster.pexpire(key, 60_000)
    assert on_cluster.strlen(key) == 16
    assert len(Question.diffs.get_by_object_id(1)) == 1


def test_a_cluster_with_a_db_number_or_a_bad_flag_is_refused():

    problems = find_problems({"url": "redis+cluster://127.0.0.1:7000/3"})
    assert [p.check_id for p in problems] == ["diffs.E021"]
    assert "only db 0" in problems[0].hint
    assert [p.check_id for p in find_problems({"cluster": "yes"})] == ["diffs.E020"]


def test_keys_carry_the_model_as_a_hash_tag(on_cluster, committed):
    with committed():
        question = Question.objects.create(question_text="tagged")
    key = Question.diffs.get_key(question.pk)
    assert key == f"diffs:{{testapp.question}}:{question.pk}"
    assert key_slot(key.encode()) == key_slot(b"diffs:feed:{testapp.question}")
    index, log = f"diffs:ix:{{testapp.question}}:{question.pk}", "diffs:log:{testapp.question}"
    assert key_slot(index.encode()) == key_slot(log.encode()) == key_slot(key.encode())
    for stored in (index, log):
        assert on_cluster.exists(stored) and on_cluster.pttl(stored) > 0


def test_saves_updates_deletes_and_children_are_recorded(on_cluster, committed):
    with committed():
        question = Question.objects.create(question_text="q")
        Choice.objects.create(question=question, choice_text="c")
    with committed():
        question.question_text = "changed"
        question.save()
    pk = question.pk
    with committed():
        question.delete()
    found = Question.diffs.get_by_object_id(pk)
    assert [(d.model, d.created, d.deleted) for d in found] == [
        ("testapp.question", True, False),
        ("testapp.choice", True, False),
        ("testapp.question", False, False),
        ("testapp.choice", False, True),  # the cascade deletes the child first
        ("testapp.question", False, True),
    ]


def test_one_transaction_over_several_models_writes_one_call_per_slot(
    on_cluster, committed, monkeypatch
):
    calls = []
    original = store._write_in_chunks
    monkeypatch.setattr(
        store,
        "_write_in_chunks",
        lambda client, writes, ttl: calls.append(len(writes)) or original(client, writes, ttl),
    )
    with committed(), transaction.atomic():
        questions = [Question.objects.create(question_text=f"q{n}") for n in range(3)]
        articles = [Article.objects.create(title=f"a{n}") for n in range(2)]
    assert sorted(calls) == [2, 3]
    for obj in [*questions, *articles]:
        assert len(type(obj).diffs.get_by_object_id(obj.pk)) == 1


def test_feed_and_object_cursors_page_without_gap_or_repeat(on_cluster, committed):
    made = []
    for n in range(7):
        with committed():
            made.append(Question.objects.create(question_text=f"q{n}"))
    pages, cursor = follow(lambda cursor: Question.diffs.since(cursor, limit=3))
    seen = [d.pk for page in pages for d in page.diffs]
    assert seen == [q.pk for q in made] and len(pages) == 3
    with committed():
        made[0].question_text = "later"
        made[0].save()
    after = Question.diffs.since(cursor)
    assert [(d.pk, d.created) for d in after.diffs] == [(made[0].pk, False)]
    first = Question.diffs.object_since(made[0].pk, limit=1)
    rest = Question.diffs.object_since(made[0].pk, first.cursor)
    assert [d.created for d in first.diffs + rest.diffs] == [True, False]


def test_prune_reaches_every_primary(on_cluster, committed):
    old = (time.time() - 7200) * 1000
    objects = []
    for model, pk in [
        (Question, 1),
        (Article, 1),
        (UUIDItem, "8d4f9a5e-59a0-4f0e-9b8c-7f1c1f7b3a11"),
        (CodeItem, "a:b"),
        (Choice, 1),
    ]:
        write_at(model, pk, {"old": True}, old)
        model.diffs.create(data={"new": True}, pk=pk)
        objects.append((model, pk))
    nodes = {on_cluster.get_node_from_key(m.diffs.get_key(pk)).port for m, pk in objects}
    assert len(nodes) >= 2, "the models chosen should live on several primaries"
    out = StringIO()
    call_command("prune_diffs", stdout=out)
    assert "Removed 5 diff(s) from 5 of 5 key(s)" in out.getvalue()
    for model, pk in objects:
        assert [d.data for d in model.diffs.get_sortedset(pk)] == [{"new": True}]


@pytest.mark.django_db(databases="__all__")  # flush_diffs reads every database's outbox
def test_outbox_rows_from_before_the_switch_to_a_cluster_go_to_its_keys(cluster):
    # Durable mode on one server; the process dies after the commit (the on-commit write
    # never runs here), then the site moves to the cluster and runs flush_diffs. The row
    # holds the one-server keys, which lie in two hash slots: written as they are, every
    # flush failed ("all keys must map to the same key slot") and the outbox stuck.
    standalone = {"url": "redis://127.0.0.1:1/1", "durable": True}
    with override_settings(DIFFS_SETTINGS=standalone):
        question = Question.objects.create(question_text="before the switch")
    [row] = OutboxEntry.objects.all()
    assert (row.key, row.feed_key) == (
        f"diffs:testapp.question:{question.pk}",
        "diffs:feed:testapp.question",
    )
    with override_settings(DIFFS_SETTINGS={"url": cluster.url, "durable": True}):
        diffs.get_connection().flushdb(target_nodes=ClusterClient.PRIMARIES)
        assert diffs.flush_diffs().from_outbox == 1
        assert not OutboxEntry.objects.exists()
        [diff] = question.diffs
        assert diff.created and diff.data[0]["fields"]["question_text"] == "before the switch"
        [entry] = Question.diffs.since().diffs
        assert entry.id == diff.id


def test_outbox_keys_follow_the_layout_of_the_settings():
    tagged = ("p:{testapp.question}:a:b", "p:feed:{testapp.question}")
    plain = ("p:testapp.question:a:b", "p:feed:testapp.question")
    assert keys.in_layout(*plain, cluster=True) == tagged
    assert keys.in_layout(*tagged, cluster=False) == plain
    assert keys.in_layout(*tagged, cluster=True) == tagged
    # A prefix that ends like the feed marker is still the prefix.
    odd = ("feed:testapp.question:7", "feed:feed:testapp.question")
    assert keys.in_layout(*odd, cluster=True) == (
        "feed:{testapp.question}:7",
        "feed:feed:{testapp.question}",
    )
    # Keys that are not a pair of ours are left as they are.
    assert keys.in_layout("x:1", "y:feed:other.model", cluster=True) == (
        "x:1",
        "y:feed:other.model",
    )
    assert keys.in_layout("x:1", "no marker", cluster=True) == ("x:1", "no marker")


def test_the_deploy_check_reaches_every_primary(cluster):
    from diffs.checks import check_redis_reachable

    with override_settings(DIFFS_SETTINGS={"url": cluster.url}):
        assert check_redis_reachable() == []  # it read the pool of a one-server client
    port = free_port()
    with override_settings(DIFFS_SETTINGS={"url": f"redis+cluster://127.0.0.1:{port}"}):
        [error] = check_redis_reachable()  # the client connects when built: no traceback
    assert error.id == "diffs.E013"
    assert error.msg.startswith(f"Cannot reach Redis at cluster node 127.0.0.1:{port} (")
    assert "Connection refused" in error.msg
    flag = {"cluster": True, "redis": {"host": "127.0.0.1", "port": port}}
    with override_settings(DIFFS_SETTINGS=flag):
        [error] = check_redis_reachable()
    assert f"cluster node 127.0.0.1:{port}" in error.msg


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_cluster_out_of_reach_is_a_redis_error_in_logs_and_flush_diffs(caplog):
    # redis-py's cluster client reports it as RedisClusterException, which is not a
    # RedisError: it was logged as a client misconfiguration, with a traceback, and
    # manage.py flush_diffs failed with a traceback instead of its message.
    down = {"url": f"redis+cluster://127.0.0.1:{free_port()}", "socket_timeout": 0.5}
    with override_settings(DIFFS_SETTINGS={**down, "durable": True}):
        with caplog.at_level(logging.ERROR, logger="diffs"):
            Question.objects.create(question_text="saved anyway")
        [record] = caplog.records
        message = record.getMessage()
        assert message.startswith(
            "Could not write 1 diff(s) to Redis (ConnectionError: Redis Cluster cannot be "
            "connected."
        )
        assert "check DIFFS_SETTINGS" not in message and not record.exc_info
        delivery.clear()  # only the outbox row is left
        with pytest.raises(CommandError, match=r"Redis did not take the waiting diffs \("):
            call_command("flush_diffs")
        assert OutboxEntry.objects.count() == 1
    with (
        override_settings(DIFFS_SETTINGS={**down, "on_redis_error": "raise"}),
        pytest.raises(diffs.DiffsWriteError, match="ConnectionError: Redis Cluster"),
    ):
        Question.objects.create(question_text="raised after the commit")
