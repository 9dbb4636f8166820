"""The REST endpoint: one bad diff never breaks a page.

A member written straight into Redis (by an older version, another writer, or a hand at
``redis-cli``) whose JSON holds ``NaN``/``Infinity`` tokens, is broken after a valid
head, or nests deeper than a JSON encoder can recurse, is skipped with a warning on the
``diffs`` logger; the page's cursor still moves past it.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

import pytest
from rest_framework import permissions, viewsets
from rest_framework.test import APIClient, APIRequestFactory

from diffs.contrib.drf import DiffsViewSetMixin
from diffs.diff import Diff
from tests.support.keynames import feed_key, object_key
from tests.testapp.models import Question
from tests.testapp.views import QuestionSerializer

pytestmark = pytest.mark.django_db(transaction=True)

_ids = itertools.count(1)


def head() -> str:
    """The head of a member as django-diffs writes it, with a fresh id."""
    return f'{{"id":"{next(_ids):016x}","created":false'


def with_votes(votes: str, late: str = "") -> Any:
    """A member describing a question whose votes are ``votes`` (JSON text, or not)."""

    def member(pk: int) -> str:
        data = f'[{{"model":"testapp.question","pk":{pk},"fields":{{"votes":{votes}}}}}]'
        start = head() if not late else '{"t":' + late + "," + head()[1:]
        return f'{start},"data":{data}}}'

    return member


def too_deep(pk: int) -> str:
    return f'{head()},"data":{"[" * 100_000}{"]" * 100_000}}}'


#: Members that look like ours (the exact head) but cannot be served.
BAD_MEMBERS = {
    "nan": with_votes("NaN"),
    "infinity": with_votes("Infinity"),
    "-infinity": with_votes("-Infinity"),
    "broken json after the head": with_votes("1,"),
    "late time overflowing to infinity": with_votes("1", late="1e999"),
    "nested too deep to decode": too_deep,
}


def member_id(member: str) -> str:
    start = member.index('"id":"') + len('"id":"')
    return member[start : start + 16]


def store_raw(redis_client, pk: int, member: str) -> None:
    """ZADD ``member`` to the question's set and a pointer to it to the feed, scored after
    everything there (as the write script would)."""
    key, feed = object_key("testapp.question", pk), feed_key("testapp.question")
    seconds, micros = redis_client.time()
    tops = [redis_client.zrevrange(k, 0, 0, withscores=True) for k in (key, feed)]
    score = max([seconds * 1000 + micros / 1000] + [top[0][1] + 1 for top in tops if top])
    redis_client.zadd(key, {member: score})
    redis_client.zadd(feed, {f"{member_id(member)}{pk}": score})


def save(question: Question, votes: int) -> None:
    question.votes = votes
    question.save()


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def votes_of(results: list[dict]) -> list[Any]:
    return [r["data"][0]["fields"].get("votes") for r in results]


def names_the_diff(message: str, pk: int) -> bool:
    """Whether a warning names the question and its pk: as ``pk=1`` (the endpoint), or
    as the key (a read that decodes members itself)."""
    named = re.search(rf"(pk={pk}|testapp\.question}}?:{pk})(?![0-9])", message)
    return "testapp.question" in message and named is not None


def diffs_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "diffs" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("kind", sorted(BAD_MEMBERS))
def test_a_bad_member_is_skipped_and_the_page_served(client, redis_client, caplog, kind):
    question = Question.objects.create(question_text="q")  # votes 0
    store_raw(redis_client, question.pk, BAD_MEMBERS[kind](question.pk))
    save(question, 1)
    store_raw(redis_client, question.pk, BAD_MEMBERS[kind](question.pk))
    save(question, 2)
    for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="diffs"):
            response = client.get(url)
        assert response.status_code == 200, response.content
        assert votes_of(response.json()["results"]) == [0, 1, 2]
        warnings = diffs_warnings(caplog)
        assert warnings and all("testapp.question" in w for w in warnings), warnings
        if url != "/questions/diffs/":  # one object's diffs: the pk is known
            assert all(names_the_diff(w, question.pk) for w in warnings), warnings


@pytest.mark.parametrize("kind", sorted(BAD_MEMBERS))
def test_the_cursor_moves_past_a_bad_member(client, redis_client, kind):
    question = Question.objects.create(question_text="q")
    for votes in (1, 2):
        store_raw(redis_client, question.pk, BAD_MEMBERS[kind](question.pk))
        save(question, votes)
    for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
        seen, sizes, since = [], [], None
        for _ in range(20):  # 5 diffs: never more than 6 pages
            params = {"limit": 1, **({"since": since} if since else {})}
            response = client.get(url, params)
            assert response.status_code == 200, response.content
            body = response.json()
            seen += votes_of(body["results"])
            sizes.append(len(body["results"]))
            since = body["cursor"]
            if not body["has_more"]:
                break
        assert seen == [0, 1, 2]
        assert sizes[:5] == [1, 0, 1, 0, 1]


class RawDataViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Shows stored data as it is (a diff_data() override), so the check of what is
    rendered is all that stands between a bad value and the renderer."""

    queryset = Question.objects.all()
    serializer_class = QuestionSerializer
    permission_classes = [permissions.AllowAny]

    def diff_data(self, diff: Diff) -> Any:
        return diff.data


def raw_page(action: str = "diffs_feed", **kwargs: object) -> Any:
    view = RawDataViewSet.as_view({"get": action})
    response = view(APIRequestFactory().get("/"), **kwargs)
    response.render()  # what the client would get: a 500 here if a value is not JSON
    assert response.status_code == 200
    return response


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("nan", "NaN"),
        ("infinity", "Infinity"),
        ("-infinity", "-Infinity"),
        ("overflow", "1e999"),
        ("nested past the bound", "[" * 101 + "]" * 101),
    ],
)
def test_a_value_that_is_not_strict_json_is_skipped_with_a_warning(
    redis_client, caplog, name, value
):
    question = Question.objects.create(question_text="q")
    member = head() + f',"data":{{"value":{value}}}}}'
    store_raw(redis_client, question.pk, member)
    save(question, 1)
    for action, kwargs in (("diffs_feed", {}), ("object_diffs", {"pk": question.pk})):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="diffs"):
            results = raw_page(action, **kwargs).data["results"]
        assert votes_of(results) == [0, 1]
        warnings = diffs_warnings(caplog)
        assert warnings and all(names_the_diff(w, question.pk) for w in warnings), warnings


def test_data_nested_within_the_bound_is_served(redis_client):
    question = Question.objects.create(question_text="q")
    nested = "[" * 90 + "]" * 90
    store_raw(redis_client, question.pk, head() + f',"data":{{"value":{nested}}}}}')
    results = raw_page().data["results"]
    assert len(results) == 2
    value = results[1]["data"]["value"]
    for _ in range(89):
        [value] = value
    assert value == []
