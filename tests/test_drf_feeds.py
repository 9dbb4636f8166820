"""One REST endpoint for several models' feeds: diffs.contrib.drf_feeds.DiffsFeedsView."""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from rest_framework.test import APIClient, APIRequestFactory

from diffs.contrib.drf_feeds import DiffsFeedsView
from tests.testapp.models import Memo, Question, Secretive

pytestmark = pytest.mark.django_db(transaction=True)


def shown(result: dict) -> str:
    fields = result["data"][0]["fields"]
    return fields.get("question_text") or fields.get("title")


def walk(api: APIClient, url: str, limit: int = 2) -> tuple[list[dict], str]:
    results, cursor = [], None
    for _ in range(100):
        params = {"limit": limit, **({"since": cursor} if cursor else {})}
        response = api.get(url, params)
        assert response.status_code == 200, response.content
        body = response.json()
        results += body["results"]
        cursor = body["cursor"]
        if not body["has_more"]:
            return results, cursor
    raise AssertionError("the cursor does not move forward")


def test_the_feeds_of_several_viewsets_in_one_order():
    for n in range(3):
        Question.objects.create(question_text=f"q{n}")
        Memo.objects.create(title=f"m{n}", body="not shown")
    api = APIClient()
    results, cursor = walk(api, "/changes/")
    assert [shown(r) for r in results] == ["q0", "m0", "q1", "m1", "q2", "m2"]
    assert all("body" not in r["data"][0]["fields"] for r in results)
    Memo.objects.create(title="later")
    assert [shown(r) for r in api.get("/changes/", {"since": cursor}).json()["results"]] == [
        "later"
    ]


def test_each_viewsets_rules_hold():
    api = APIClient()
    assert api.get("/signed-in-changes/").status_code in (401, 403)
    api.force_authenticate(User.objects.create_user("reader"))
    Question.objects.create(question_text="unvoted", votes=0)
    Question.objects.create(question_text="voted", votes=2)
    Memo.objects.create(title="memo")
    results, _ = walk(api, "/signed-in-changes/")
    assert [shown(r) for r in results] == ["voted", "memo"]


def test_each_viewset_authenticates_the_request_itself():
    """A viewset that authenticates by its own means is not bypassed by the joined view's."""
    User.objects.create_user("reader", password="pw")
    Memo.objects.create(title="header-only")
    by_session = APIClient()
    assert by_session.login(username="reader", password="pw")
    assert by_session.get("/mixed-auth-changes/").status_code in (401, 403)
    # Authenticated by the header for the memos only: not the same user everywhere.
    by_header = APIClient(HTTP_X_READER="reader")
    assert by_header.get("/mixed-auth-changes/").status_code == 403
    both = APIClient(HTTP_X_READER="reader")
    assert both.login(username="reader", password="pw")
    assert [shown(r) for r in both.get("/mixed-auth-changes/").json()["results"]] == [
        "header-only"
    ]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"since": "x" * 200}, 400, "invalid_cursor"),
        ({"since": "abc"}, 400, "invalid_cursor"),
        ({"since": "00000000~1~2"}, 400, "invalid_cursor"),
        ({"limit": "0"}, 400, "invalid_limit"),
        ({"wait": "soon"}, 400, "invalid_wait"),
    ],
)
def test_bad_parameters_are_400s(params, status, code):
    response = APIClient().get("/changes/", params)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_an_expired_cursor_is_a_410_with_a_fresh_cursor():
    api = APIClient()
    checksum = api.get("/changes/").json()["cursor"].split("~")[0]
    response = api.get("/changes/", {"since": f"{checksum}~1000.5~1000.5"})
    assert response.status_code == 410
    fresh = response.json()["cursor"]
    assert api.get("/changes/", {"since": fresh}).status_code == 200


def test_wait_returns_at_the_next_change_of_any_feed():
    api = APIClient()
    cursor = api.get("/changes/").json()["cursor"]

    def write():
        time.sleep(0.3)
        try:
            Memo.objects.create(title="woke")
        finally:
            connections.close_all()

    thread = threading.Thread(target=write)
    thread.start()
    body = api.get("/changes/", {"since": cursor, "wait": "20"}).json()
    thread.join()
    assert [shown(r) for r in body["results"]] == ["woke"]


@pytest.mark.parametrize("viewsets", [[], [Secretive]])
def test_a_view_without_diffs_viewsets_is_refused(viewsets):
    view = type("Broken", (DiffsFeedsView,), {"viewsets": viewsets, "permission_classes": []})
    with pytest.raises(ImproperlyConfigured, match="viewsets"):
        view.as_view()(APIRequestFactory().get("/"))
