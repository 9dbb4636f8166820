"""The Django REST Framework endpoints: ``diffs.contrib.drf.DiffsViewSetMixin``."""

from __future__ import annotations

import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from rest_framework import viewsets
from rest_framework.test import APIClient

from diffs.contrib.drf import DiffsViewSetMixin
from tests.conftest import diffs_settings
from tests.support.keynames import feed_key, object_key
from tests.support.writing import open_horizon, write_at
from tests.testapp.models import Choice, Question, Untracked, UUIDItem
from tests.testapp.views import QuestionSerializer, QuestionViewSet

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {"model", "pk", "data", "created", "deleted", "timestamp", "cursor"}


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def user_client() -> APIClient:
    api = APIClient()
    api.force_authenticate(User.objects.create_user("reader", password="pw"))
    return api


def get(api: APIClient, url: str, status: int = 200, **params: object) -> dict:
    response = api.get(url, params)
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    return response.json()


def walk(api: APIClient, url: str, **params: object) -> tuple[list[dict], list[dict]]:
    """Read every page; return (results, pages)."""
    results, pages, cursor = [], [], None
    for _ in range(100):
        body = get(api, url, **params, **({"since": cursor} if cursor else {}))
        pages.append(body)
        results.extend(body["results"])
        assert body["cursor"] is not None
        cursor = body["cursor"]
        if not body["has_more"]:
            return results, pages
    raise AssertionError("still more after 100 pages: the cursor does not move forward")


def texts(results: list[dict]) -> list[str]:
    return [
        r["data"][0]["fields"].get("question_text", r["data"][0]["fields"].get("choice_text"))
        for r in results
    ]


def assert_error(body: dict, code: str) -> None:
    assert set(body) == (
        {"detail", "code", "cursor"} if code == "cursor_expired" else {"detail", "code"}
    )
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]


def test_feed_pages_have_a_cursor_and_no_gap_or_repeat(client):
    questions = [Question.objects.create(question_text=f"q{i}") for i in range(5)]
    for question in questions:
        question.question_text += "!"
        question.save()
    results, pages = walk(client, "/questions/diffs/", limit=3)
    assert [len(p["results"]) for p in pages] == [3, 3, 3, 1]
    assert [p["has_more"] for p in pages] == [True, True, True, False]
    assert [set(p) for p in pages] == [{"results", "cursor", "has_more"}] * 4
    assert all(set(r) == FIELDS for r in results)
    assert [(r["pk"], r["created"]) for r in results] == [(q.pk, True) for q in questions] + [
        (q.pk, False) for q in questions
    ]
    assert texts(results) == [f"q{i}" for i in range(5)] + [f"q{i}!" for i in range(5)]
    assert len({r["cursor"] for r in results}) == 10
    assert all(r["model"] == "testapp.question" and r["deleted"] is False for r in results)
    assert all(isinstance(r["timestamp"], float) for r in results)
    # each page's cursor is its last diff's while more is waiting
    assert [p["cursor"] for p in pages[:3]] == [p["results"][-1]["cursor"] for p in pages[:3]]
    # caught up: an empty page, then only what changed since
    end = pages[-1]["cursor"]
    assert get(client, "/questions/diffs/", since=end)["results"] == []
    questions[2].question_text = "new"
    questions[2].save()
    later = get(client, "/questions/diffs/", since=end)
    assert texts(later["results"]) == ["new"] and later["has_more"] is False


def test_default_page_size_and_since_in_unix_milliseconds(client):
    Question.objects.create(question_text="q0")
    # after the model's first diff: an older time may be refused (the model's horizon)
    time.sleep(0.01)
    before = int(time.time() * 1000)
    for i in (1, 2):
        Question.objects.create(question_text=f"q{i}")
    assert len(get(client, "/questions/diffs/")["results"]) == 3  # default 100
    assert texts(get(client, "/questions/diffs/", since=before)["results"]) == ["q1", "q2"]
    assert (
        get(client, "/questions/diffs/", since=int(time.time() * 1000) + 60_000)["results"] == []
    )
    # an empty since or limit means none given
    assert len(get(client, "/questions/diffs/", since="", limit="")["results"]) == 3


def test_detail_endpoint_returns_one_objects_diffs(client):
    question = Question.objects.create(question_text="a")
    other = Question.objects.create(question_text="other")
    for text in "bcd":
        question.question_text = text
        question.save()
    other.question_text = "other!"
    other.save()
    url = f"/questions/{question.pk}/diffs/"
    body = get(client, url)
    assert texts(body["results"]) == ["a", "b", "c", "d"]
    assert {r["pk"] for r in body["results"]} == {question.pk}
    assert all(set(r) == FIELDS for r in body["results"])
    assert body["has_more"] is False
    results, pages = walk(client, url, limit=3)
    assert texts(results) == ["a", "b", "c", "d"] and len(pages) == 2
    since = body["results"][1]["cursor"]
    assert texts(get(client, url, since=since)["results"]) == ["c", "d"]
    assert get(client, "/questions/999999/diffs/", status=404)


def test_an_entry_shows_its_context_when_it_has_one(client):
    import diffs

    question = Question.objects.create(question_text="a")
    with diffs.context(user=3, reason="fix"):
        question.question_text = "b"
        question.save()
    plain, with_context = get(client, f"/questions/{question.pk}/diffs/")["results"]
    assert set(plain) == FIELDS
    assert set(with_context) == FIELDS | {"context"}
    assert with_context["context"] == {"user": 3}  # diffs_context_keys: user only

    class ShowsReasons(QuestionViewSet):
        diffs_context_keys = ("user", "reason")

    assert ShowsReasons().diff_context(question.diffs[-1]) == {"user": 3, "reason": "fix"}


def test_anonymous_users_are_refused_by_the_authenticated_viewset(client):
    question = Question.objects.create(question_text="q", votes=3)
    for url in ("/voted-questions/diffs/", f"/voted-questions/{question.pk}/diffs/"):
        response = client.get(url)
        assert response.status_code in (401, 403)
        assert "results" not in response.json()


def test_a_user_sees_only_the_diffs_of_rows_the_queryset_lets_them_see(user_client):
    hidden = Question.objects.create(question_text="hidden")
    shown = Question.objects.create(question_text="shown", votes=2)
    hidden.question_text = "hidden!"
    hidden.save()
    shown.question_text = "shown!"
    shown.save()
    results, _ = walk(user_client, "/voted-questions/diffs/")
    assert texts(results) == ["shown", "shown!"]
    assert {r["pk"] for r in results} == {shown.pk}
    get(user_client, f"/voted-questions/{hidden.pk}/diffs/", status=404)
    assert texts(get(user_client, f"/voted-questions/{shown.pk}/diffs/")["results"]) == [
        "shown",
        "shown!",
    ]
    # visibility follows the row as it is now
    Question.objects.filter(pk=hidden.pk).update(votes=1)
    results = walk(user_client, "/voted-questions/diffs/")[0]
    assert texts(results[:4]) == ["hidden", "shown", "hidden!", "shown!"]
    assert results[4]["pk"] == hidden.pk  # the update() itself
    assert results[4]["data"][0]["fields"] == {"votes": 1}


def test_hidden_diffs_still_move_the_cursor_forward(user_client):
    for i in range(5):
        Question.objects.create(question_text=f"hidden{i}")
    Question.objects.create(question_text="shown", votes=1)
    results, pages = walk(user_client, "/voted-questions/diffs/", limit=2)
    assert texts(results) == ["shown"]
    assert [len(p["results"]) for p in pages] == [0, 0, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert len({p["cursor"] for p in pages}) == 3


def test_one_query_per_feed_page(user_client, django_assert_num_queries):
    for i in range(4):
        question = Question.objects.create(question_text=f"q{i}", votes=i)
        Choice.objects.create(question=question, choice_text="c")
    with django_assert_num_queries(1):
        body = get(user_client, "/voted-questions/diffs/", limit=8)
    assert len(body["results"]) == 6
    with django_assert_num_queries(0):  # a page with no diff needs no query
        get(user_client, "/voted-questions/diffs/", since=body["cursor"])


def test_deletions_show_to_readers_whose_filter_the_row_passed(client, user_client):
    keep = Question.objects.create(question_text="keep", votes=1)
    gone = Question.objects.create(question_text="gone", votes=1)
    gone_pk = gone.pk
    gone.delete()
    unseen = Question.objects.create(question_text="never voted")
    unseen_pk = unseen.pk
    unseen.delete()
    everyone = walk(client, "/questions/diffs/")[0]
    # the created diff of a row that is gone cannot be checked, the deletion is shown
    assert [(r["pk"], r["created"], r["deleted"]) for r in everyone] == [
        (keep.pk, True, False),
        (gone_pk, False, True),
        (unseen_pk, False, True),
    ]
    filtered, pages = walk(user_client, "/voted-questions/diffs/")
    # votes >= 1: the reader could see "gone", never "never voted"
    assert [(r["pk"], r["deleted"]) for r in filtered] == [(keep.pk, False), (gone_pk, True)]
    # the filtered reader's cursor still passed the deletion
    later = Question.objects.create(question_text="later", votes=1)
    assert [
        r["pk"]
        for r in get(user_client, "/voted-questions/diffs/", since=pages[-1]["cursor"])["results"]
    ] == [later.pk]


def test_deleted_diff_visible_can_be_overridden(user_client):
    class OwnDeletions(DiffsViewSetMixin, viewsets.GenericViewSet):
        queryset = Question.objects.filter(votes__gte=1)
        serializer_class = QuestionSerializer

        def deleted_diff_visible(self, diff):
            return diff.data[0]["fields"]["question_text"].startswith("mine")

    view = OwnDeletions.as_view({"get": "diffs_feed"})
    mine = Question.objects.create(question_text="mine")
    theirs = Question.objects.create(question_text="theirs")
    pks = [mine.pk, theirs.pk]
    mine.delete()
    theirs.delete()
    from rest_framework.test import APIRequestFactory

    response = view(APIRequestFactory().get("/"))
    assert [(r["pk"], r["deleted"]) for r in response.data["results"]] == [(pks[0], True)]


def test_child_diffs_show_through_the_parents_feed(client, user_client):
    shown = Question.objects.create(question_text="shown", votes=1)
    hidden = Question.objects.create(question_text="hidden")
    choice = Choice.objects.create(question=shown, choice_text="yes")
    choice.choice_text = "yes!"
    choice.save()
    Choice.objects.create(question=hidden, choice_text="secret")
    choice_pk = choice.pk
    choice.delete()  # its parent is still there: the deletion is visible to all
    expected = [
        ("testapp.question", shown.pk, "shown", False),
        ("testapp.choice", choice_pk, "yes", False),
        ("testapp.choice", choice_pk, "yes!", False),
        ("testapp.choice", choice_pk, "yes!", True),
    ]
    filtered = walk(user_client, "/voted-questions/diffs/")[0]
    assert [
        (r["model"], r["pk"], t, r["deleted"])
        for r, t in zip(filtered, texts(filtered), strict=True)
    ] == expected
    assert "secret" in texts(walk(client, "/questions/diffs/")[0])
    detail = walk(user_client, f"/voted-questions/{shown.pk}/diffs/")[0]
    assert [(r["model"], r["deleted"]) for r in detail] == [(m, d) for m, _, _, d in expected]
    get(user_client, f"/voted-questions/{hidden.pk}/diffs/", status=404)


def test_a_cascade_deletion_follows_deleted_diff_visible(client, user_client):
    question = Question.objects.create(question_text="q", votes=1)
    Choice.objects.create(question=question, choice_text="c")
    start = get(client, "/questions/diffs/")["cursor"]
    question.delete()
    everyone = get(client, "/questions/diffs/", since=start)["results"]
    assert sorted((r["model"], r["deleted"]) for r in everyone) == [
        ("testapp.choice", True),
        ("testapp.question", True),
    ]
    # the question passed the reader's filter; its cascaded choice cannot be checked
    assert [
        (r["model"], r["deleted"])
        for r in get(user_client, "/voted-questions/diffs/", since=start)["results"]
    ] == [("testapp.question", True)]


@pytest.mark.parametrize("bad", ["abc", "nan", "-5", "inf", "1e999"])
def test_malformed_cursor_is_a_400(client, bad):
    question = Question.objects.create(question_text="q")
    for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
        body = get(client, url, status=400, since=bad)
        assert_error(body, "invalid_cursor")
        assert bad in body["detail"]


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", " 5", "100000", "1001", "9" * 5000])
def test_bad_limit_is_a_400(client, bad):
    question = Question.objects.create(question_text="q")
    for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
        body = get(client, url, status=400, limit=bad)
        assert_error(body, "invalid_limit")
        assert "limit must be a whole number from 1 to 1000" in body["detail"]


def test_limits_follow_the_viewsets_page_size_and_maximum(user_client):
    for i in range(3):
        Question.objects.create(question_text=f"q{i}", votes=1)
    first = get(user_client, "/voted-questions/diffs/")
    assert len(first["results"]) == 2 and first["has_more"] is True  # diffs_page_size = 2
    assert len(get(user_client, "/voted-questions/diffs/", limit=50)["results"]) == 3
    body = get(user_client, "/voted-questions/diffs/", status=400, limit=51)
    assert_error(body, "invalid_limit")
    assert "from 1 to 50" in body["detail"]


#: The retention window (seconds) of the expiry tests: long enough that nothing a test
#: does between two requests moves a diff or a cursor across it.
WINDOW = 3600


def windows_ago(windows: float) -> int:
    """A Unix-millisecond cursor ``windows`` retention windows old."""
    return int(time.time() * 1000 - windows * WINDOW * 1000)


def test_expired_cursor_is_a_410(client):
    question = Question.objects.create(question_text="old")
    with diffs_settings(max_element_age=WINDOW):
        open_horizon(Question)  # the model's history is complete: only the window decides
        score = write_at(Question, question.pk, {"age": "old"}, windows_ago(2))
        [old] = [d for d in Question.diffs.get_sortedset(question.pk) if d.timestamp == score]
        body = get(client, "/questions/diffs/", status=410, since=old.cursor)
        assert_error(body, "cursor_expired")
        assert "Keep 'cursor', fetch the objects again" in body["detail"]
        restart = body["cursor"]
        body = get(client, f"/questions/{question.pk}/diffs/", status=410, since=old.cursor)
        assert_error(body, "cursor_expired")
        # starting over works, and the expired diff is no longer served
        assert texts(get(client, "/questions/diffs/")["results"]) == ["old"]  # the creation
        [creation] = get(client, f"/questions/{question.pk}/diffs/")["results"]
        assert creation["created"] is True
        # the restart cursor picks up what changes after the client re-fetched
        question.question_text = "new"
        question.save()
        [result] = get(client, "/questions/diffs/", since=restart)["results"]
        assert result["data"][0]["fields"] == {"question_text": "new"}


@pytest.mark.parametrize(
    ("windows", "status"), [(1.5, 410), (0.5, 200)], ids=["1.5 windows", "0.5 windows"]
)
def test_a_cursor_older_than_one_window_is_a_410(client, windows, status):
    question = Question.objects.create(question_text="recent")
    with diffs_settings(max_element_age=WINDOW):
        open_horizon(Question)
        cursor = windows_ago(windows)
        for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
            body = get(client, url, status=status, since=cursor)
            if status == 410:
                assert_error(body, "cursor_expired")
            else:
                assert texts(body["results"]) == ["recent"]


def test_a_cursor_in_the_future_is_a_400(client):
    body = get(client, "/questions/diffs/", status=400, since="9" * 17)
    assert_error(body, "invalid_cursor")
    assert "in the future" in body["detail"]


def test_sliced_and_combined_querysets_and_huge_pks_are_no_500(client):
    from rest_framework import viewsets
    from rest_framework.test import APIRequestFactory

    from diffs.contrib.drf import DiffsViewSetMixin
    from diffs.diff import Diff
    from diffs.keys import feed_member
    from tests.support.writing import write_raw

    shown = Question.objects.create(question_text="first")
    Question.objects.create(question_text="second")
    huge = str(10**20)
    diff = Diff(data={"x": 1}, created=True, id="f" * 16)
    write_raw(
        object_key("testapp.question", huge),
        feed_key("testapp.question"),
        diff.to_member(),
        feed_member(diff.id, huge),
    )

    class Sliced(DiffsViewSetMixin, viewsets.GenericViewSet):
        serializer_class = QuestionSerializer

        def get_queryset(self):
            return Question.objects.order_by("pk")[:1]

    class Combined(DiffsViewSetMixin, viewsets.GenericViewSet):
        serializer_class = QuestionSerializer

        def get_queryset(self):
            return Question.objects.filter(pk=shown.pk).union(Question.objects.filter(pk=-1))

    for view in (Sliced, Combined):
        response = view.as_view({"get": "diffs_feed"})(APIRequestFactory().get("/"))
        assert response.status_code == 200
        assert [r["pk"] for r in response.data["results"]] == [shown.pk]


def test_uuid_pks_are_strings_in_json(client):
    item = UUIDItem.objects.create(name="u")
    [result] = get(client, "/uuid-items/diffs/")["results"]
    assert result["pk"] == str(item.pk) and uuid.UUID(result["pk"]) == item.pk
    [result] = get(client, f"/uuid-items/{item.pk}/diffs/")["results"]
    assert result["pk"] == str(item.pk)


def test_a_diff_whose_pk_cannot_be_a_row_is_hidden_not_a_500(client):
    # create() refuses such pks; another writer of the same keys might not
    from diffs.diff import Diff
    from diffs.keys import feed_member
    from tests.support.writing import write_raw

    for text, deleted in (("not-a-number", False), ("gone", True)):
        diff = Diff(data={"x": text}, deleted=deleted, created=False, id=f"{len(text):016d}")
        write_raw(
            object_key("testapp.question", text),
            feed_key("testapp.question"),
            diff.to_member(),
            feed_member(diff.id, text),
        )
    question = Question.objects.create(question_text="q")
    body = get(client, "/questions/diffs/")
    assert [(r["pk"], r["deleted"]) for r in body["results"]] == [
        ("gone", True),
        (question.pk, False),
    ]


def test_per_action_rules_treat_the_feed_as_list_and_an_objects_diffs_as_retrieve(
    client, user_client
):
    voted = Question.objects.create(question_text="voted", votes=1)
    other = Question.objects.create(question_text="other")
    # list needs a signed-in user and only lists voted questions: so does the feed
    assert client.get("/per-action/diffs/").status_code in (401, 403)
    assert texts(get(user_client, "/per-action/diffs/")["results"]) == ["voted"]
    # retrieve is open to anyone and sees every question
    assert texts(get(client, f"/per-action/{other.pk}/diffs/")["results"]) == ["other"]
    assert texts(get(client, f"/per-action/{voted.pk}/diffs/")["results"]) == ["voted"]
    # the action names are restored afterwards, and can be seen without the aliases
    assert texts(get(client, "/unaliased/diffs/")["results"]) == ["voted", "other"]


def test_an_unregistered_model_is_a_configuration_error():
    class UntrackedViewSet(DiffsViewSetMixin, viewsets.GenericViewSet):
        queryset = Untracked.objects.all()

    view = UntrackedViewSet.as_view({"get": "diffs_feed"})
    from rest_framework.test import APIRequestFactory

    with pytest.raises(ImproperlyConfigured, match="not registered with django-diffs"):
        view(APIRequestFactory().get("/"))


@pytest.mark.parametrize(("size", "maximum"), [(0, 10), (11, 10), (10, 1001)])
def test_page_size_settings_are_checked_when_the_class_is_made(size, maximum):
    with pytest.raises(ImproperlyConfigured, match="diffs_page_size"):
        type(
            "Bad",
            (DiffsViewSetMixin, viewsets.GenericViewSet),
            {"diffs_page_size": size, "diffs_max_limit": maximum, "__module__": __name__},
        )
