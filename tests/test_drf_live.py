"""The REST endpoint live: ``?wait=`` long-polls and ``diffs/stream/`` server-sent events."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import AsyncClient
from rest_framework.test import APIClient

from diffs.contrib import events
from tests.conftest import diffs_settings
from tests.testapp.models import Question, Secretive

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "text/event-stream"


def create_later(delay: float, **fields: object) -> threading.Thread:
    def create():
        time.sleep(delay)
        try:
            Question.objects.create(**{"question_text": "later", **fields})
        finally:
            connections.close_all()

    thread = threading.Thread(target=create)
    thread.start()
    return thread


def parse(text: str) -> list[dict]:
    """The events of an event stream: each a dict of its fields (comments as ":")."""
    parsed = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            event[name or ":"] = value.removeprefix(" ")
        parsed.append(event)
    return parsed


def stream_text(api: APIClient, url: str, **headers: str) -> str:
    response = api.get(url, HTTP_ACCEPT=STREAM, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith(STREAM)
    assert response["Cache-Control"] == "no-cache"
    return b"".join(response.streaming_content).decode()


# ?wait=


def test_wait_returns_when_a_diff_is_written():
    api = APIClient()
    cursor = api.get("/questions/diffs/").json()["cursor"]
    writer = create_later(0.3, question_text="news")
    started = time.monotonic()
    body = api.get("/questions/diffs/", {"since": cursor, "wait": "20"}).json()
    writer.join()
    assert [r["data"][0]["fields"]["question_text"] for r in body["results"]] == ["news"]
    assert time.monotonic() - started < 10


def test_an_empty_wait_answers_with_a_fresh_cursor_and_is_capped_by_max_wait():
    api = APIClient()
    cursor = api.get("/questions/diffs/").json()["cursor"]
    with diffs_settings(max_wait=0.5):
        started = time.monotonic()
        body = api.get("/questions/diffs/", {"since": cursor, "wait": "3600"}).json()
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert body["results"] == [] and body["has_more"] is False
    assert float(body["cursor"]) - float(cursor) >= 450


@pytest.mark.parametrize("wait", ["abc", "-1", "1e3", "nan", "1.23456", "123456"])
def test_a_bad_wait_is_a_400(wait):
    response = APIClient().get("/questions/diffs/", {"wait": wait})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_wait"


def test_a_diff_the_user_may_not_see_does_not_end_the_wait():
    api = APIClient()
    api.force_authenticate(User.objects.create_user("reader"))
    cursor = api.get("/voted-questions/diffs/").json()["cursor"]
    writer = create_later(0.1, question_text="unvoted", votes=0)
    with diffs_settings(max_wait=1.0):
        started = time.monotonic()
        body = api.get("/voted-questions/diffs/", {"since": cursor, "wait": "1"}).json()
    writer.join()
    assert body["results"] == []
    assert time.monotonic() - started >= 1.0


def test_an_objects_diffs_wait_too():
    question = Question.objects.create(question_text="a")
    api = APIClient()
    cursor = api.get(f"/questions/{question.pk}/diffs/").json()["cursor"]

    def edit():
        time.sleep(0.3)
        try:
            Question.objects.filter(pk=question.pk).update(question_text="b")
        finally:
            connections.close_all()

    thread = threading.Thread(target=edit)
    thread.start()
    body = APIClient().get(f"/questions/{question.pk}/diffs/", {"since": cursor, "wait": "20"})
    thread.join()
    assert [r["data"][0]["fields"]["question_text"] for r in body.json()["results"]] == ["b"]


# The event stream


def test_the_stream_shows_the_feeds_entries_with_their_cursors_as_ids():
    for text in ("one", "two"):
        Question.objects.create(question_text=text)
    api = APIClient()
    feed = api.get("/questions/diffs/").json()
    with diffs_settings(max_wait=0.3):
        parsed = parse(stream_text(api, "/questions/diffs/stream/"))
    assert parsed[0] == {"retry": str(events.RECONNECT_MS)}
    shown = [e for e in parsed if e.get("event") == "diff"]
    assert [json.loads(e["data"]) for e in shown] == feed["results"]
    assert [e["id"] for e in shown] == [r["cursor"] for r in feed["results"]]
    # The stream went on waiting: its last event moves the id past a quiet moment.
    assert float(parsed[-1]["id"]) > float(feed["results"][-1]["cursor"])


def test_the_stream_resumes_from_last_event_id_over_since():
    first = Question.objects.create(question_text="one")
    api = APIClient()
    [seen] = api.get("/questions/diffs/").json()["results"]
    first.question_text = "two"
    first.save()
    with diffs_settings(max_wait=0.2):
        text = stream_text(api, "/questions/diffs/stream/", HTTP_LAST_EVENT_ID=seen["cursor"])
    shown = [json.loads(e["data"]) for e in parse(text) if e.get("event") == "diff"]
    assert [d["data"][0]["fields"]["question_text"] for d in shown] == ["two"]


def test_the_stream_has_the_feeds_permissions_rows_and_columns():
    api = APIClient()
    response = api.get("/voted-questions/diffs/stream/", HTTP_ACCEPT=STREAM)
    assert response.status_code in (401, 403)

    Question.objects.create(question_text="hidden", votes=0)
    Question.objects.create(question_text="shown", votes=3)
    Secretive.objects.create(name="n", secret="s3cr3t", score=1)
    api.force_authenticate(User.objects.create_user("reader"))
    with diffs_settings(max_wait=0.2):
        voted = parse(stream_text(api, "/voted-questions/diffs/stream/"))
        secret = stream_text(api, "/secretive/diffs/stream/")
    texts = [
        json.loads(e["data"])["data"][0]["fields"]["question_text"] for e in voted if "data" in e
    ]
    assert texts == ["shown"]
    assert "s3cr3t" not in secret and '"name": "n"' in secret


@pytest.mark.parametrize("prefix", ["per-action", "older-aliases", "unaliased"])
def test_the_stream_runs_under_the_feeds_action_whatever_the_aliases(prefix):
    """Rules that branch on self.action treat the stream exactly as the feed."""
    Question.objects.create(question_text="hidden", votes=0)
    api = APIClient()
    feed = api.get(f"/{prefix}/diffs/")
    stream = api.get(f"/{prefix}/diffs/stream/", HTTP_ACCEPT=STREAM)
    assert stream.status_code == feed.status_code
    if feed.status_code == 200:
        with diffs_settings(max_wait=0.2):
            text = stream_text(api, f"/{prefix}/diffs/stream/")
        shown = [json.loads(e["data"]) for e in parse(text) if e.get("event") == "diff"]
        assert shown == feed.json()["results"]


@pytest.mark.parametrize("last_event_id", ["x" * 65, "abc", "-1"])
def test_a_malformed_last_event_id_is_a_400_before_the_stream(last_event_id):
    response = APIClient().get(
        "/questions/diffs/stream/", HTTP_ACCEPT=STREAM, HTTP_LAST_EVENT_ID=last_event_id
    )
    assert response.status_code == 400
    assert not response.streaming
    assert json.loads(response.content)["code"] == "invalid_cursor"


def test_an_expired_cursor_ends_the_stream_with_an_event_that_moves_the_id_to_now():
    with diffs_settings(max_wait=5):
        text = stream_text(APIClient(), "/questions/diffs/stream/", HTTP_LAST_EVENT_ID="1000.5")
    [error] = [e for e in parse(text) if e.get("event") == "diffs-error"]
    body = json.loads(error["data"])
    assert body["code"] == "cursor_expired"
    assert error["id"] == body["cursor"] and float(body["cursor"]) > 1000.5
    # The browser reconnects with that id, which reads from now.
    with diffs_settings(max_wait=0.2):
        again = stream_text(
            APIClient(), "/questions/diffs/stream/", HTTP_LAST_EVENT_ID=error["id"]
        )
    assert "diffs-error" not in again


def test_heartbeats_keep_the_id_fresh_while_nothing_changes(monkeypatch):
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.2)
    with diffs_settings(max_wait=1.0):
        parsed = parse(stream_text(APIClient(), "/questions/diffs/stream/"))
    beats = [e for e in parsed if ":" in e]
    assert len(beats) >= 3
    ids = [float(e["id"]) for e in beats]
    assert ids == sorted(ids) and ids[-1] - ids[0] >= 300


def test_under_asgi_a_diff_reaches_the_stream_while_it_is_open():
    async def listen():
        client = AsyncClient()
        with diffs_settings(max_wait=20):
            response = await client.get("/questions/diffs/stream/", headers={"Accept": STREAM})
            assert response.status_code == 200
            chunks = response.streaming_content
            assert not isinstance(chunks, list)
            received = ""
            writer = None
            started = time.monotonic()
            async for chunk in chunks:
                received += chunk.decode()
                if writer is None:
                    writer = create_later(0.2, question_text="live")
                if '"live"' in received:
                    break
            elapsed = time.monotonic() - started
            await asyncio.to_thread(writer.join)
            return received, elapsed

    received, elapsed = asyncio.run(listen())
    assert elapsed < 10
    [live] = [json.loads(e["data"]) for e in parse(received) if e.get("event") == "diff"]
    assert live["data"][0]["fields"]["question_text"] == "live"


def test_a_failed_read_ends_the_stream_with_an_error_event(monkeypatch):
    from diffs.exceptions import RedisUnavailable
    from diffs.managers import DiffModelManager

    def unavailable(*args, **kwargs):
        raise RedisUnavailable("down", retry_after=1)

    api = APIClient()
    with diffs_settings(max_wait=5):
        response = api.get("/questions/diffs/stream/", HTTP_ACCEPT=STREAM)
        monkeypatch.setattr(DiffModelManager, "since", unavailable)
        text = b"".join(response.streaming_content).decode()
    [error] = [e for e in parse(text) if e.get("event") == "diffs-error"]
    assert json.loads(error["data"]) == {"code": "redis_unavailable"}


def test_a_permission_revoked_mid_stream_ends_it(monkeypatch):
    from tests.testapp.views import Switch

    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.1)
    Question.objects.create(question_text="before")
    with diffs_settings(max_wait=10):
        response = APIClient().get("/switched/diffs/stream/", HTTP_ACCEPT=STREAM)
        chunks = iter(response.streaming_content)
        seen = b""
        while b"before" not in seen:
            seen += next(chunks)
        monkeypatch.setattr(Switch, "allowed", False)
        started = time.monotonic()
        rest = b"".join(chunks).decode()
    assert time.monotonic() - started < 5
    [error] = [e for e in parse(rest) if e.get("event") == "diffs-error"]
    assert json.loads(error["data"]) == {"code": "permission_denied"}


def test_a_wsgi_stream_without_a_free_waiting_thread_ends_busy():
    from diffs import live

    with diffs_settings(max_waiting_threads=1, max_wait=5), live.waiting_thread() as held:
        assert held
        holder = threading.Thread(target=lambda: None)  # the slot is this thread's
        holder.start()
        holder.join()
        done = threading.Event()
        result = {}

        def stream_elsewhere():
            try:
                result["text"] = stream_text(APIClient(), "/questions/diffs/stream/")
            finally:
                connections.close_all()
                done.set()

        other = threading.Thread(target=stream_elsewhere)
        other.start()
        assert done.wait(5)
        other.join()
    [error] = [e for e in parse(result["text"]) if e.get("event") == "diffs-error"]
    assert json.loads(error["data"]) == {"code": "busy"}
