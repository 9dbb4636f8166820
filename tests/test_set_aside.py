"""A diff Redis can never take is set aside with an ERROR, never in the way of the diffs
behind it: in this process's queue, and in durable mode's outbox (``flush_diffs``).

What Redis can never take: a fixed score that aged out of the retention window while
the diff waited, a member that is not django-diffs JSON, a key of another type in the
place of the object's sorted set.
"""

from __future__ import annotations

import logging
import time
from io import StringIO

import pytest
from django.core.management import call_command

import diffs
from diffs import delivery
from diffs.models import OutboxEntry
from tests.conftest import diffs_settings, unreachable_url
from tests.support.keynames import feed_key, object_key
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def texts(question: Question) -> list[str]:
    return [d.data[0]["fields"]["question_text"] for d in question.diffs]


def set_aside_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Set aside")]


def test_a_key_of_another_type_does_not_block_the_queue(redis_client, caplog):
    blocked = Question.objects.create(question_text="blocked")
    redis_client.delete(object_key("testapp.question", blocked.pk))
    redis_client.set(object_key("testapp.question", blocked.pk), "not a sorted set")
    with caplog.at_level(logging.ERROR, logger="diffs"):
        blocked.question_text = "never stored"
        blocked.save()
        other = Question.objects.create(question_text="behind it")
    assert delivery.waiting() == 0
    assert texts(other) == ["behind it"]
    [line] = set_aside_lines(caplog)
    assert f"testapp.question pk={blocked.pk}" in line
    assert "WRONGTYPE" in line


def test_an_outbox_row_whose_fixed_score_aged_out_is_set_aside_and_the_rest_written(caplog):
    with diffs_settings(durable=True, url=unreachable_url(), test_mode=False, socket_timeout=0.5):
        old = Question(question_text="old fixed time")
        old._last_save_at = time.time() * 1000 - 1800 * 1000  # half the default window
        old.save()  # Redis is down: the row waits in the outbox
        behind = Question.objects.create(question_text="behind it")
    delivery.clear()  # the process went away; the rows did not
    # A window of ten minutes: the old row's fixed time (half an hour ago) lies outside it,
    # "behind it" (saved a moment ago) well inside, however slow the machine.
    with diffs_settings(durable=True, max_element_age=600), caplog.at_level(logging.ERROR):
        report = diffs.flush_diffs()
        assert (report.from_outbox, report.set_aside) == (1, 1)
        assert texts(behind) == ["behind it"]
        [row] = OutboxEntry.objects.all()
        assert row.object_pk == str(old.pk)
        assert "older than DIFFS_SETTINGS['max_element_age']" in row.refused
        [line] = set_aside_lines(caplog)
        assert f"testapp.question pk={old.pk}" in line and "outbox row is kept" in line
        again = diffs.flush_diffs()  # never tried again, still reported
        assert (again.from_outbox, again.set_aside) == (0, 1)
        out, err = StringIO(), StringIO()
        call_command("flush_diffs", stdout=out, stderr=err)
    assert "1 outbox row(s) set aside" in err.getvalue()


def test_a_malformed_outbox_row_is_set_aside(caplog):
    with diffs_settings(durable=True):
        question = Question.objects.create(question_text="fine")
        OutboxEntry.objects.create(
            key=object_key("testapp.question", 999),
            feed_key=feed_key("testapp.question"),
            member="<not json>",
            feed_member="0123456789abcdef999",
            score=None,
            recorded_ms=time.time() * 1000,
            label="testapp.question",
            object_pk="999",
        )
        fine = OutboxEntry.objects.create(
            key=object_key("testapp.question", question.pk),
            feed_key=feed_key("testapp.question"),
            member='{"id":"fedcba9876543210","created":false,"data":[1]}',
            feed_member=f"fedcba9876543210{question.pk}",
            score=None,
            recorded_ms=time.time() * 1000,
            label="testapp.question",
            object_pk=str(question.pk),
        )
        with caplog.at_level(logging.ERROR, logger="diffs"):
            report = diffs.flush_diffs()
    assert (report.from_outbox, report.set_aside) == (1, 1)
    assert not OutboxEntry.objects.filter(pk=fine.pk).exists()
    assert OutboxEntry.objects.get().refused == "its member is not django-diffs JSON"
    assert [d.data for d in question.diffs][-1] == [1]


def test_flush_diffs_writes_outbox_rows_outside_durable_mode_too():
    # Large bulk writes spill diffs into the outbox in every mode; rows a process left
    # there (it stopped before writing them) are written by flush_diffs.
    question = Question.objects.create(question_text="q")
    OutboxEntry.objects.create(
        key=object_key("testapp.question", question.pk),
        feed_key=feed_key("testapp.question"),
        member='{"id":"0011223344556677","created":false,"data":["left behind"]}',
        feed_member=f"0011223344556677{question.pk}",
        score=None,
        recorded_ms=time.time() * 1000,
        label="testapp.question",
        object_pk=str(question.pk),
    )
    assert diffs.flush_diffs().from_outbox == 0  # outside durable mode: not by default
    out = StringIO()
    call_command("flush_diffs", stdout=out)  # what cron runs: every outbox
    assert "Wrote 1 waiting diff(s)" in out.getvalue()
    assert not OutboxEntry.objects.exists()
    assert question.diffs[-1].data == ["left behind"]


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_a_failover_is_an_outage_not_a_refusal(durable, caplog):
    # While the client still talks to a primary that became a replica, Redis answers
    # READONLY: that passes once the failover is over, so nothing may be set aside.
    from tests.support.redis_server import free_port, redis_server

    with redis_server() as server:
        admin = redis_server_client(server.port)
        url = f"redis://127.0.0.1:{server.port}/1"
        with diffs_settings(url=url, test_mode=False, durable=durable, socket_timeout=1):
            fresh()
            admin.replicaof("127.0.0.1", free_port())  # read-only from now on
            with caplog.at_level(logging.ERROR, logger="diffs"):
                question = Question.objects.create(question_text="during the failover")
            assert set_aside_lines(caplog) == []
            assert OutboxEntry.objects.filter(refused__isnull=False).count() == 0
            admin.replicaof("no", "one")  # promoted: writable again
            if durable:
                delivery.clear()  # the process went away; its outbox row did not
            report = diffs.flush_diffs()
            assert report.set_aside == 0
            assert texts(question) == ["during the failover"]
            fresh()


def redis_server_client(port: int):
    import redis

    return redis.Redis(port=port, db=1)


def fresh() -> None:
    from diffs.settings import clear_settings_cache

    clear_settings_cache()
    diffs.reset_connection()
    delivery.clear()
