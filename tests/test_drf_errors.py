"""The REST endpoint: Redis trouble is a 503 with
``Retry-After``, never a 500; an error body quotes at most a short excerpt of a bad
parameter."""

from __future__ import annotations

import logging
import math
import time

import pytest
import redis
from redis.exceptions import RedisClusterException
from rest_framework.test import APIClient

from diffs.exceptions import RedisUnavailable
from diffs.managers import DiffModelManager
from tests.conftest import diffs_settings, unreachable_url
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

#: The longest a 400 body may be, whatever the parameter's length.
SHORT_BODY = 400


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def question() -> Question:
    return Question.objects.create(question_text="q")


def urls(question: Question) -> tuple[str, str]:
    return "/questions/diffs/", f"/questions/{question.pk}/diffs/"


def assert_unavailable(response, retry_after: str) -> None:
    assert response.status_code == 503, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == retry_after
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "redis_unavailable"
    assert "Redis is unavailable" in body["detail"]
    assert b"Traceback" not in response.content


def fail_reads(monkeypatch, error: Exception) -> None:
    def read(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(DiffModelManager, "since", read)
    monkeypatch.setattr(DiffModelManager, "object_since", read)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2.5, "3"), (1, "1"), (0.01, "1"), (0, "1"), (-5, "1"), (math.nan, "1"), (1e300, "3600")],
)
def test_redis_unavailable_is_a_503_with_retry_after(
    client, question, monkeypatch, retry_after, header
):
    fail_reads(monkeypatch, RedisUnavailable("Redis at db.internal:6379 failed", retry_after))
    for url in urls(question):
        response = client.get(url)
        assert_unavailable(response, header)
        assert b"db.internal" not in response.content


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Error 111 connecting to db.internal:6379."),
        redis.TimeoutError("Timeout reading from db.internal:6379"),
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
        redis.RedisError("anything else"),
        RedisClusterException("Redis Cluster cannot be connected."),
    ],
)
def test_any_redis_error_from_a_read_is_a_503(client, question, monkeypatch, caplog, error):
    fail_reads(monkeypatch, error)
    with caplog.at_level(logging.WARNING, logger="diffs"):
        for url in urls(question):
            response = client.get(url)
            assert_unavailable(response, "1")
            assert b"db.internal" not in response.content
    # the server's log says what happened, for the model
    records = [r for r in caplog.records if r.name == "diffs"]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert all("testapp.question" in r.getMessage() for r in records)
    assert all(type(error).__name__ in r.getMessage() for r in records)


def test_an_unreachable_redis_is_a_503(client, question):
    started = time.monotonic()
    with diffs_settings(url=unreachable_url(), test_mode=False, socket_timeout=0.5):
        for url in urls(question):
            response = client.get(url)
            assert response.status_code == 503, response.content
            assert int(response["Retry-After"]) >= 1
            assert response.json()["code"] == "redis_unavailable"
    assert time.monotonic() - started < 30
    wait_until_redis_is_tried_again(client, urls(question)[0])


def wait_until_redis_is_tried_again(client: APIClient, url: str) -> None:
    """Leave no outage behind: reads may pause for a moment after Redis failed."""
    deadline = time.monotonic() + 10
    while client.get(url).status_code == 503:
        assert time.monotonic() < deadline, "reads still refused 10 s after the outage"
        time.sleep(0.1)


def test_parameter_errors_still_come_first(client, question, monkeypatch):
    fail_reads(monkeypatch, RedisUnavailable("down", 5))
    for url in urls(question):
        assert client.get(url, {"limit": "x"}).status_code == 400
        assert client.get(url, {"since": "x" * 100}).status_code == 400
        assert client.get(url).status_code == 503
    assert client.get("/questions/999999/diffs/").status_code == 404


def short_error(response, code: str) -> str:
    assert response.status_code == 400, response.status_code
    assert len(response.content) <= SHORT_BODY, len(response.content)
    body = response.json()
    assert body["code"] == code
    return body["detail"]


@pytest.mark.parametrize("parameter", ["limit", "since"])
def test_a_huge_parameter_is_echoed_as_a_short_excerpt(client, question, parameter):
    huge = "9" * 100_000
    code = "invalid_limit" if parameter == "limit" else "invalid_cursor"
    for url in urls(question):
        detail = short_error(client.get(url, {parameter: huge}), code)
        assert "9" * 30 in detail and "…" in detail
        assert "9" * 41 not in detail


def test_a_bad_since_under_the_length_bound_is_cut_in_the_message_too(client, question):
    for url in urls(question):
        # not a number: the reason is kept, the value cut
        detail = short_error(client.get(url, {"since": "x" * 60}), "invalid_cursor")
        assert "is not a cursor" in detail and "x" * 30 in detail and "…" in detail
        assert "x" * 41 not in detail
        detail = short_error(client.get(url, {"since": "1" * 60}), "invalid_cursor")
        assert "1" * 41 not in detail
        # short values are quoted whole, as before
        assert "'abc'" in short_error(client.get(url, {"since": "abc"}), "invalid_cursor")
        assert "'0'" in short_error(client.get(url, {"limit": "0"}), "invalid_limit")


def test_an_expired_cursor_is_quoted_as_an_excerpt(client, question):
    since = "0" * 20 + "." + "0" * 19 + "1"  # a cursor of 41 characters, long ago
    for url in urls(question):
        response = client.get(url, {"since": since})
        assert response.status_code == 410
        detail = response.json()["detail"]
        assert f"'{since[:40]}…'" in detail and since not in detail
