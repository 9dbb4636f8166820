"""``member_format: "compact"``: a default-serializer diff stored as its fields alone,
read back as the very same diff the full format gives."""

from __future__ import annotations

import json
import uuid

import pytest

from diffs import get_connection
from diffs.diff import looks_like_member
from diffs.settings import find_problems
from diffs.sortedset import DiffSortedSet
from tests.conftest import diffs_settings
from tests.support.stored import stored_members
from tests.testapp.models import (
    Choice,
    CodeItem,
    CustomSerialized,
    Ledger,
    Question,
    UUIDItem,
)

pytestmark = pytest.mark.django_db(transaction=True)


def as_read(diff):
    """What a diff says, whichever way it was stored."""
    return (diff.data, diff.created, diff.deleted, diff.model, diff.pk, diff.old, diff.context)


def history(model, make) -> tuple[list, list, list[bytes]]:
    """Each diff of one object's life (``make`` creates, edits, deletes it), by object
    read and by feed read, and the members stored."""
    obj = make()
    key = model.diffs.get_key(obj.pk)
    pk = obj.pk
    by_object = [as_read(d) for d in model.diffs.get_by_object_id(pk)]
    by_feed = [as_read(d) for d in model.diffs.since(None).diffs]
    return by_object, by_feed, stored_members(get_connection(), key)


def life_of_a_question():
    question = Question.objects.create(id=7, question_text="q")
    question.question_text = "q2"
    question.votes = 3
    question.save()
    return question


def life_of_a_code_item():
    item = CodeItem.objects.create(code="42", name="n")  # text that looks like a number
    item.name = "m"
    item.save()
    return item


def life_of_a_uuid_item():
    item = UUIDItem.objects.create(id=uuid.UUID(int=7), name="n")
    item.name = "m"
    item.save()
    return item


def life_of_a_ledger():
    ledger = Ledger.objects.create(id=7, name="n", amount=3)
    ledger.amount = 4
    ledger.save()
    return ledger


@pytest.mark.parametrize(
    "model, make",
    [
        (Question, life_of_a_question),
        (CodeItem, life_of_a_code_item),
        (UUIDItem, life_of_a_uuid_item),
        (Ledger, life_of_a_ledger),
    ],
)
def test_a_compact_member_reads_back_as_the_full_one(redis_client, model, make):
    full = history(model, make)
    redis_client.flushdb()
    model.objects.all().delete()
    redis_client.flushdb()
    with diffs_settings(member_format="compact"):
        compact = history(model, make)
    assert compact[0] == full[0]
    assert compact[1] == full[1]
    for member in compact[2]:
        assert looks_like_member(member)
        payload = json.loads(member)
        assert "data" not in payload and "f" in payload
    assert sum(map(len, compact[2])) < sum(map(len, full[2]))
    creation, update = (json.loads(m) for m in compact[2])
    assert creation["created"] is True and "created" not in update


def test_creation_flags_and_deletion_survive_compaction(redis_client):
    with diffs_settings(member_format="compact"):
        item = CodeItem.objects.create(code="r", name="old")
        item.delete()
        CodeItem.objects.create(code="r", name="new")  # the same pk used again
        found = CodeItem.diffs.get_by_object_id("r")
    # the new row's history starts at its birth: the compact creation was recognised
    assert [(d.created, d.deleted, d.data[0]["fields"].get("name")) for d in found] == [
        (True, False, "new")
    ]
    every = [json.loads(m) for m in stored_members(redis_client, CodeItem.diffs.get_key("r"))]
    assert [m.get("deleted", False) for m in every] == [False, True, False]


def test_diffs_the_compact_form_cannot_stand_for_stay_full(redis_client):
    with diffs_settings(member_format="compact"):
        question = Question.objects.create(question_text="q")
        Choice.objects.create(question=question, choice_text="c")  # goes to its parent
        custom = CustomSerialized.objects.create(name="n")  # a format of its own
    members = stored_members(redis_client, Question.diffs.get_key(question.pk))
    assert [("f" in json.loads(m), "data" in json.loads(m)) for m in members] == [
        (True, False),
        (False, True),
    ]
    [member] = stored_members(redis_client, CustomSerialized.diffs.get_key(custom.pk))
    assert "data" in json.loads(member)
    assert CustomSerialized.diffs.get_by_object_id(custom.pk)[0].data == {
        "name": "n",
        "secret": "",
    }


def test_a_raw_view_built_from_the_key_alone_rebuilds_compact_members(redis_client):
    with diffs_settings(member_format="compact"):
        question = Question.objects.create(question_text="q")
    raw = DiffSortedSet(Question.diffs.get_key(question.pk), redis_client)
    [diff] = list(raw)
    assert diff.data == [
        {
            "model": "testapp.question",
            "pk": question.pk,
            "fields": {"question_text": "q", "pub_date": None, "votes": 0},
        }
    ]


def test_a_bad_member_format_is_refused_with_the_choices():
    [problem] = find_problems({"member_format": "tiny"})
    assert problem.check_id == "diffs.E037"
    assert "'full'" in problem.msg and "'compact'" in problem.msg


def test_only_the_compact_head_itself_passes_for_a_compact_member():
    assert looks_like_member(b'{"id":"0123456789abcdef","f":{"a":1}}')
    assert looks_like_member(b'{"t":5,"id":"0123456789abcdef","created":true,"f":{}}')
    for foreign in (
        b'{"id":"x","m":{"a":1,"f":2}}',
        b'{"id":"x","data":1}',
        b'{"id":"x","f":1}',
        b'{"id":"x","created":false,"f":{}}',  # compact leaves a false "created" out
    ):
        assert not looks_like_member(foreign), foreign
