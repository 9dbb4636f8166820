"""A reused primary key does not reveal the previous row's history.

When a row is deleted and a row with the same pk is created, reads of that object
start at the new row's creation (its birth); the model feed still lists the earlier
row's diffs, marked ``superseded``. ``Model.diffs.restart_history(pk)`` does the same
for a row whose earlier history must not be shown (a draft being published).
"""

from __future__ import annotations

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from tests.testapp.models import Choice, CodeItem, Question

pytestmark = pytest.mark.django_db(transaction=True)


def every_read(model, pk) -> dict[str, list]:
    """What each read API of one object returns: the diffs' data, oldest first."""
    raw = model.diffs.get_sortedset(pk)
    instance = model(pk=pk)
    return {
        "get_by_object_id": [d.data for d in model.diffs.get_by_object_id(pk)],
        "instance.diffs": [d.data for d in instance.diffs],
        "object_since": [d.data for d in model.diffs.object_since(pk, None, 100).diffs],
        "sorted set": [d.data for d in raw],
        "sorted set reversed": [d.data for d in reversed(raw)][::-1],
        "sorted set by score": [d.data for d in raw.zrangebyscore("-inf", "+inf")],
        "sorted set by rank": [d.data for d in raw.zrange(0, -1)],
        "sorted set indexing": [raw[i].data for i in range(len(raw))],
    }


def fields(data) -> dict:
    """The fields of a diff's default data (or of the data itself)."""
    if hasattr(data, "data"):
        data = data.data
    return data[0]["fields"]


def test_a_new_row_on_a_reused_natural_key_shows_none_of_the_old_rows_history():
    old = CodeItem.objects.create(code="slug", name="secret plan")
    old.name = "still secret"
    old.save()
    old.delete()
    new = CodeItem.objects.create(code="slug", name="public")

    for read, found in every_read(CodeItem, "slug").items():
        assert [fields(d) for d in found] == [{"name": "public"}], read
    raw = CodeItem.diffs.get_sortedset("slug")
    assert len(raw) == 1
    assert raw.min_score == raw.max_score == CodeItem.diffs.get_by_object_id("slug")[0].timestamp
    assert new.diffs[0].created is True


def test_the_feed_keeps_the_old_rows_diffs_marked_superseded():
    old = CodeItem.objects.create(code="slug", name="secret plan")
    old.delete()
    CodeItem.objects.create(code="slug", name="public")

    page = CodeItem.diffs.since(None)
    assert [(d.created, d.deleted, d.superseded) for d in page.diffs] == [
        (True, False, True),
        (False, True, True),
        (True, False, False),
    ]


def test_delete_and_create_in_one_transaction_start_a_new_history():
    CodeItem.objects.create(code="k", name="one")
    with transaction.atomic():
        CodeItem.objects.filter(code="k").delete()
        CodeItem.objects.create(code="k", name="two")
    for read, found in every_read(CodeItem, "k").items():
        assert [fields(d)["name"] for d in found] == ["two"], read


def test_a_recreated_parent_does_not_show_its_predecessors_childrens_diffs():
    question = Question.objects.create(pk=500, question_text="old")
    Choice.objects.create(question=question, choice_text="old choice")
    question.delete()  # the cascade deletes the choice: its diff goes to the parent
    Question.objects.create(pk=500, question_text="new")

    for read, found in every_read(Question, 500).items():
        assert [fields(d).get("question_text") for d in found] == ["new"], read


def test_history_continues_normally_after_the_new_birth():
    CodeItem.objects.create(code="c", name="1").delete()
    item = CodeItem.objects.create(code="c", name="2")
    first = CodeItem.diffs.object_since("c", None, 10)
    item.name = "3"
    item.save()
    after = CodeItem.diffs.object_since("c", first.cursor, 10)
    assert [fields(d)["name"] for d in first.diffs] == ["2"]
    assert [fields(d)["name"] for d in after.diffs] == ["3"]
    # A cursor taken before the new row's birth resumes at the birth, no earlier.
    before = CodeItem.diffs.since(None).diffs[0].cursor
    assert [fields(d)["name"] for d in CodeItem.diffs.object_since("c", before, 10).diffs] == [
        "2",
        "3",
    ]


def test_restart_history_hides_a_drafts_past_from_every_object_read():
    draft = Question.objects.create(question_text="draft: secret numbers")
    draft.question_text = "draft: still secret"
    draft.save()

    Question.diffs.restart_history(draft.pk)  # published now
    for read, found in every_read(Question, draft.pk).items():
        assert found == [], read

    draft.question_text = "published"
    draft.save()
    for read, found in every_read(Question, draft.pk).items():
        assert [fields(d) for d in found] == [{"question_text": "published"}], read
    feed = Question.diffs.since(None).diffs
    assert [d.superseded for d in feed] == [True, True, False]


def test_the_endpoint_never_shows_the_old_rows_diffs_for_the_new_row(django_user_model):
    # Only questions with a vote are listed; the old row had none, the new one has one.
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_user("reader"))
    old = Question.objects.create(pk=700, question_text="old row's secret")
    old.question_text = "old row's other secret"
    old.save()
    old.delete()
    Question.objects.create(pk=700, question_text="new row", votes=1)

    detail = api.get("/voted-questions/700/diffs/").json()
    feed = api.get("/voted-questions/diffs/", {"limit": 50}).json()

    assert [r["data"][0]["fields"]["question_text"] for r in detail["results"]] == ["new row"]
    assert [r["data"][0]["fields"]["question_text"] for r in feed["results"]] == ["new row"]
    assert "secret" not in str(feed) + str(detail)


def test_the_birth_lives_as_long_as_the_objects_set(redis_client):
    from tests.support.keynames import birth_key, index_key

    CodeItem.objects.create(code="t", name="old").delete()
    item = CodeItem.objects.create(code="t", name="new")
    redis_client.pexpire(birth_key("testapp.codeitem", "t"), 50)  # nearly gone
    item.name = "newer"
    item.save()  # a write to the set keeps its birth alive as long as the set
    assert redis_client.pttl(birth_key("testapp.codeitem", "t")) > 1000
    assert redis_client.pttl(index_key("testapp.codeitem", "t")) > 1000
    assert [fields(d)["name"] for d in CodeItem.diffs.get_sortedset("t")] == ["new", "newer"]


def test_a_new_row_whose_creation_diff_is_refused_still_hides_the_old_rows_history(caplog):
    old = CodeItem.objects.create(code="r", name="old secret")
    old.delete()
    new = CodeItem(code="r", name="new")
    new._last_save_at = 1.0  # a score no read could return: the diff is refused
    new.save()
    assert "Refused the diff of testapp.codeitem" in caplog.text
    for read, found in every_read(CodeItem, "r").items():
        assert found == [], read
    del new._last_save_at
    new.name = "newer"
    new.save()
    for read, found in every_read(CodeItem, "r").items():
        assert [fields(d) for d in found] == [{"name": "newer"}], read


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_restart_history_hides_a_draft_diff_that_reaches_redis_after_it():
    from diffs import availability, delivery
    from tests.conftest import diffs_settings, unreachable_url

    draft = Question.objects.create(question_text="draft")
    with diffs_settings(url=unreachable_url(), test_mode=False, socket_timeout=0.5):
        draft.question_text = "draft: secret"
        draft.save()  # Redis is down: the diff waits in memory
    assert delivery.waiting() == 1
    availability.reset()
    Question.diffs.restart_history(draft.pk)  # published; the draft diff is still waiting
    draft.question_text = "published"
    draft.save()  # writes the late draft diff first (it carries its commit time), then this
    assert delivery.waiting() == 0
    for read, found in every_read(Question, draft.pk).items():
        if read.startswith("sorted set"):
            continue  # the raw view filters by score only (see README)
        assert [fields(d) for d in found] == [{"question_text": "published"}], read
