"""``rediss://`` (TLS) against a real, TLS-only redis-server that this module starts itself.

The module makes a CA and a server certificate for 127.0.0.1 with ``openssl``, runs one
``redis-server`` with only a TLS port (``--port 0``: a client that does not speak TLS
cannot talk to it at all), a ``requirepass`` for the default user and an ACL user
``alice``, and stops it by its pid at the end. Every test replaces ``DIFFS_SETTINGS``
entirely (so ``test_mode`` is off even in the default fakeredis configuration) and uses
db 1 of that server only, which is flushed around each test.

It shows that diffs are written and read back over TLS with either kind of credentials,
and that what goes wrong with TLS (a wrong password, a server certificate the client
does not trust, a ``redis://`` URL for a TLS port) leaves ``save()`` working, is logged
on the ``diffs`` logger with the model and pk, and is reported by ``check --deploy``.

Skipped when ``redis-server`` or ``openssl`` is missing, or redis-server has no TLS.
Runs the same in the default configuration and with DIFFS_TEST_REDIS_URL/PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction
from django.test import override_settings

import diffs
from diffs import delivery
from diffs.checks import check_redis_reachable
from diffs.settings import clear_settings_cache
from tests.support.tls_server import (
    TLSRedisServer,
    TLSUnavailable,
    make_certificates,
    missing_tools,
    tls_redis_server,
)
from tests.testapp.models import Question

pytestmark = [
    pytest.mark.django_db(transaction=True),  # diffs are written on commit
    pytest.mark.skipif(
        missing_tools() is not None,
        reason=f"TLS tests need redis-server and openssl: {missing_tools()}",
    ),
]

ADMIN_PASSWORD = "adminpw"
ALICE_PASSWORD = "alicepw"
DB = 1


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TLSRedisServer]:
    """One TLS-only redis-server for the module (certificates and startup cost ~0.1 s)."""
    with tempfile.TemporaryDirectory(prefix="diffs-tls-") as workdir:
        certs = make_certificates(workdir)
        server = tls_redis_server(
            workdir,
            certs,
            "--requirepass", ADMIN_PASSWORD,
            # Redis 7.0 config syntax: an ACL user with a password, every key, channel
            # and command (EVAL included: diffs are written by a script).
            "--user", "alice", "on", f">{ALICE_PASSWORD}", "~*", "&*", "+@all",
        )  # fmt: skip
        try:
            started = server.__enter__()
        except TLSUnavailable as error:
            pytest.skip(f"redis-server cannot serve TLS here: {error}")
        try:
            yield started
        finally:
            server.__exit__(None, None, None)  # SIGTERM by pid, then wait


@pytest.fixture
def admin(tls_server: TLSRedisServer) -> Iterator[redis.Redis]:
    """A client of our own to db 1 of the TLS server, to look at what diffs wrote."""
    client = redis.Redis(
        host="127.0.0.1",  # the certificate names the IP only
        port=tls_server.port,
        db=DB,
        password=ADMIN_PASSWORD,
        ssl=True,
        ssl_ca_certs=tls_server.certs.ca_cert,
    )
    client.flushdb()  # db 1 of our own server only; never FLUSHALL
    yield client
    client.flushdb()
    client.close()


@contextlib.contextmanager
def tls_settings(url: str, **redis_options: Any) -> Iterator[None]:
    """Replace DIFFS_SETTINGS as a whole: no test_mode, no suite URL, only the TLS server."""
    with override_settings(DIFFS_SETTINGS={"url": url, "redis": redis_options}):
        # override_settings' setting_changed signal already drops the cached settings
        # and client (diffs.settings); doing it by hand as well keeps these tests on the
        # TLS server should that ever change.
        clear_settings_cache()
        diffs.reset_connection()
        try:
            yield
        finally:
            clear_settings_cache()
            diffs.reset_connection()


def url_for(server: TLSRedisServer, credentials: str, scheme: str = "rediss") -> str:
    return f"{scheme}://{credentials}@127.0.0.1:{server.port}/{DB}"


def save_question_in_a_transaction() -> Question:
    with transaction.atomic():
        question = Question.objects.create(question_text="over TLS")
        question.question_text = "changed over TLS"
        question.save()
    return question


def diffs_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "diffs" and r.levelno == logging.ERROR]


@pytest.mark.parametrize(
    "credentials",
    [f"alice:{ALICE_PASSWORD}", f":{ADMIN_PASSWORD}"],
    ids=["acl-user", "requirepass-default-user"],
)
def test_diffs_are_written_and_read_back_over_tls(
    tls_server, admin, redis_client, credentials, caplog
):
    with tls_settings(url_for(tls_server, credentials), ssl_ca_certs=tls_server.certs.ca_cert):
        connection = diffs.get_connection()
        assert connection.connection_pool.connection_class is redis.SSLConnection
        # The server has no plain-text port, so this handshake proves TLS is in use.
        assert connection.acl_whoami() == ("alice" if "alice" in credentials else "default")

        question = save_question_in_a_transaction()

        assert [d.created for d in question.diffs] == [True, False]
        [created, changed] = Question.diffs.get_by_object_id(question.pk)
        assert created.data[0]["fields"]["question_text"] == "over TLS"
        assert changed.data[0]["fields"] == {"question_text": "changed over TLS"}
        assert check_redis_reachable() == []
    assert not diffs_errors(caplog)
    assert delivery.waiting() == 0
    assert admin.dbsize() == 3  # the object's sorted set, the model's feed and horizon, db 1
    # They went to the TLS server only, not to the suite's own Redis (fake or real).
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    "credentials",
    [":wrongpw", "alice:wrongpw", f"nobody:{ALICE_PASSWORD}"],
    ids=["default-user", "acl-user", "unknown-user"],
)
def test_wrong_credentials_over_tls_are_logged_and_reported_as_e012(
    tls_server, admin, credentials, caplog
):
    ca = tls_server.certs.ca_cert
    with (
        tls_settings(url_for(tls_server, credentials), ssl_ca_certs=ca),
        caplog.at_level(logging.ERROR, logger="diffs"),
    ):
        question = Question.objects.create(question_text="saved anyway")  # returns normally
        [error] = check_redis_reachable()
        with pytest.raises(SystemCheckError, match=r"diffs\.E012"):
            call_command("check", "--deploy")

    assert Question.objects.filter(pk=question.pk).exists()
    [record] = diffs_errors(caplog)
    message = record.getMessage()
    assert "Redis refused the credentials in DIFFS_SETTINGS" in message
    assert f"testapp.question pk={question.pk}" in message
    assert not record.exc_info  # a sentence, not a traceback
    assert "wrongpw" not in message and ALICE_PASSWORD not in message
    assert error.id == "diffs.E012"
    assert f"127.0.0.1:{tls_server.port} db {DB}" in error.msg
    assert "wrongpw" not in error.msg
    assert admin.dbsize() == 0

    # on_redis_error="retry" (default): the diff waits in memory, and goes out over TLS
    # once the credentials are right.
    assert delivery.waiting() == 1
    with tls_settings(url_for(tls_server, f"alice:{ALICE_PASSWORD}"), ssl_ca_certs=ca):
        assert check_redis_reachable() == []
        assert diffs.flush_diffs().from_memory == 1
        [diff] = Question.diffs.get_by_object_id(question.pk)
    assert diff.created is True


@pytest.mark.parametrize(
    "trust",
    ["other-ca", "system-cas"],
    ids=["signed-by-another-ca", "no-ssl_ca_certs"],
)
def test_untrusted_server_certificate_is_logged_and_reported_as_e013(
    tls_server, admin, trust, caplog
):
    # The server's certificate is signed by our test CA: the client trusts either a
    # different CA, or (without ssl_ca_certs) only the system's CAs.
    options = {"ssl_ca_certs": tls_server.certs.other_ca_cert} if trust == "other-ca" else {}
    with (
        tls_settings(url_for(tls_server, f"alice:{ALICE_PASSWORD}"), **options),
        caplog.at_level(logging.ERROR, logger="diffs"),
    ):
        question = Question.objects.create(question_text="saved anyway")  # returns normally
        [error] = check_redis_reachable()

    assert Question.objects.filter(pk=question.pk).exists()
    [record] = diffs_errors(caplog)
    message = record.getMessage()
    assert (
        f"Could not write 1 diff(s) to Redis (ConnectionError: Error 1 connecting to 127.0.0.1:{tls_server.port}."
        in message
    )
    assert "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in message
    assert f"testapp.question pk={question.pk}" in message
    assert "The database changes were saved" in message
    assert not record.exc_info  # a sentence, not a traceback
    assert ALICE_PASSWORD not in message
    assert delivery.waiting() == 1

    assert error.id == "diffs.E013"
    assert error.msg.startswith(f"Cannot reach Redis at 127.0.0.1:{tls_server.port} db {DB} (")
    assert "CERTIFICATE_VERIFY_FAILED" in error.msg
    # Redis is up: the hint names the setting that fixes it, not "start Redis".
    assert "ssl_ca_certs" in error.hint
    assert "ssl_ca_certs" in message
    assert admin.dbsize() == 0


def test_plain_redis_url_for_a_tls_port_is_logged_and_reported_as_e013(tls_server, admin, caplog):
    # A common slip: redis:// instead of rediss://. The server drops the connection
    # when the first bytes are not a TLS handshake.
    url = url_for(tls_server, f"alice:{ALICE_PASSWORD}", scheme="redis")
    with tls_settings(url), caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="saved anyway")
        [error] = check_redis_reachable()

    assert Question.objects.filter(pk=question.pk).exists()
    [record] = diffs_errors(caplog)
    message = record.getMessage()
    assert "ConnectionError" in message
    assert f"testapp.question pk={question.pk}" in message
    # The server dropped the connection (a reset here; "closed" is what a slower reader
    # would see), and both texts suggest rediss://.
    dropped = ("Connection reset by peer", "Connection closed by server")
    assert any(text in message for text in dropped)
    assert "use a rediss:// URL" in message
    assert error.id == "diffs.E013"
    assert any(text in error.msg for text in dropped)
    assert "use a rediss:// URL" in error.hint
    assert admin.dbsize() == 0
