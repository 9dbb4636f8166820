"""The event stream under a real ASGI server (uvicorn): live, resumable, authenticated."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.asgi_server import AsgiServer, asgi_server

pytestmark = pytest.mark.django_db(transaction=True)


class EventReader:
    """Reads one event stream, event by event."""

    def __init__(self, server: AsgiServer, path: str, **headers: str) -> None:
        self.connection = server.connection(timeout=15)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        self.response = self.connection.getresponse()

    def next_event(self) -> dict[str, str]:
        event: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                if event:
                    return event
                continue
            name, _, value = line.partition(":")
            event[name or ":"] = value.removeprefix(" ")

    def next_diff(self) -> tuple[str, dict]:
        while True:
            event = self.next_event()
            if event.get("event") == "diff":
                return event["id"], json.loads(event["data"])

    def close(self) -> None:
        self.connection.close()


def create_question(server: AsgiServer, text: str) -> None:
    connection = server.connection()
    body = json.dumps({"question_text": text, "votes": 0})
    connection.request("POST", "/questions/", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 201, response.read()
    connection.close()


def test_a_change_reaches_an_open_stream_and_a_reconnect_resumes_after_it():
    with asgi_server() as server:
        reader = EventReader(server, "/questions/diffs/stream/")
        assert reader.response.status == 200
        assert reader.response.getheader("Content-Type").startswith("text/event-stream")
        assert reader.next_event() == {"retry": "2000"}
        started = time.monotonic()
        create_question(server, "over asgi")
        seen_id, seen = reader.next_diff()
        assert time.monotonic() - started < 5
        assert seen["data"][0]["fields"]["question_text"] == "over asgi"
        assert seen["cursor"] == seen_id
        reader.close()

        create_question(server, "while away")
        resumed = EventReader(server, "/questions/diffs/stream/", **{"Last-Event-ID": seen_id})
        _, missed = resumed.next_diff()
        assert missed["data"][0]["fields"]["question_text"] == "while away"
        resumed.close()


def test_the_stream_refuses_who_the_feed_refuses():
    with asgi_server() as server:
        reader = EventReader(server, "/voted-questions/diffs/stream/")
        assert reader.response.status in (401, 403)
        reader.close()
