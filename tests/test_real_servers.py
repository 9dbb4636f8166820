"""URLs against a real redis-server of the test's own (run in the real configuration)."""

from __future__ import annotations

import io

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from tests.conftest import diffs_settings
from tests.support.redis_server import redis_server
from tests.testapp.models import Question

pytestmark = [
    pytest.mark.real_redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not django_settings.REDIS_URL,
        reason="needs redis-server; runs when DIFFS_TEST_REDIS_URL is set",
    ),
]


def record_and_prune() -> str:
    question = Question.objects.create(question_text="over a real connection")
    question.question_text = "changed"
    question.save()
    assert [d.created for d in question.diffs] == [True, False]
    out = io.StringIO()
    call_command("prune_diffs", "--max-age", "3600", stdout=out)
    return out.getvalue()


def test_unix_socket_url():
    with redis_server() as server, diffs_settings(url=f"unix://{server.unix_socket}?db=3"):
        assert "from 0 of 1 key(s)" in record_and_prune()


def test_url_with_acl_user_and_password():
    with redis_server("--requirepass", "topsecret") as server:
        import redis

        admin = redis.Redis(port=server.port, password="topsecret")
        admin.acl_setuser(
            "diffsuser",
            enabled=True,
            passwords=["+userpass"],
            keys=["diffs:*"],
            commands=["+@all"],
        )
        url = f"redis://diffsuser:userpass@127.0.0.1:{server.port}/2"
        with diffs_settings(url=url):
            assert "from 0 of 1 key(s)" in record_and_prune()
        assert admin.dbsize() == 0  # db 0 untouched
        # the object's set, the model's feed and its horizon
        assert redis.Redis(port=server.port, password="topsecret", db=2).dbsize() == 3


def test_wrong_password_is_clear_at_the_first_write_and_in_deploy_checks(caplog):
    import logging

    from diffs.checks import check_redis_reachable

    with redis_server("--requirepass", "topsecret") as server:
        url = f"redis://:wrong@127.0.0.1:{server.port}/2"
        with diffs_settings(url=url), caplog.at_level(logging.ERROR, logger="diffs"):
            question = Question.objects.create(question_text="saved anyway")
            [error] = check_redis_reachable()
        assert Question.objects.filter(pk=question.pk).exists()
        assert "Redis refused the credentials in DIFFS_SETTINGS" in caplog.records[0].getMessage()
        assert error.id == "diffs.E012"
        assert f"127.0.0.1:{server.port} db 2" in error.msg
        with diffs_settings(url=f"redis://:topsecret@127.0.0.1:{server.port}/2"):
            assert check_redis_reachable() == []


def test_a_user_allowed_no_channels_still_writes_and_waiting_readers_still_get_diffs():
    """Redis 7 gives a new ACL user no pub/sub channels: the write script's PUBLISH is
    refused (and ignored), the listener cannot subscribe, and a waiting reader reads
    again every second instead of being woken."""
    import threading
    import time

    from django.db import connections

    with redis_server("--requirepass", "topsecret") as server:
        import redis

        admin = redis.Redis(port=server.port, password="topsecret")
        admin.acl_setuser(
            "nochannels",
            enabled=True,
            passwords=["+userpass"],
            keys=["diffs:*"],
            commands=["+@all"],
            channels=[],
            reset_channels=True,
        )
        url = f"redis://nochannels:userpass@127.0.0.1:{server.port}/2"
        with diffs_settings(url=url):
            cursor = Question.diffs.since().cursor

            def save_later():
                time.sleep(0.3)
                try:
                    Question.objects.create(question_text="no channels")
                finally:
                    connections.close_all()

            writer = threading.Thread(target=save_later)
            writer.start()
            started = time.monotonic()
            page = Question.diffs.since(cursor, wait=10)
            writer.join()
            assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["no channels"]
            assert time.monotonic() - started < 5
