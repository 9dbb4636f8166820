"""``@diffs.register(old_values=True)``: each update and delete keeps what it replaced."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from django.db import transaction

import diffs
from diffs.diff import Diff, build_member
from diffs.exceptions import RegistrationError
from tests.support.stored import stored_members
from tests.testapp.models import Ledger, LedgerProxy, Question, Untracked

pytestmark = pytest.mark.django_db(transaction=True)

JAN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FEB = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)


def fields(diff: Diff) -> dict:
    return diff.data[0]["fields"]


def members(redis_client, obj) -> list[bytes]:
    return stored_members(redis_client, type(obj).diffs.get_key(obj.pk))


def test_an_update_keeps_the_old_value_of_each_changed_field_in_datas_form():
    first = Question.objects.create(question_text="q1")
    second = Question.objects.create(question_text="q2")
    ledger = Ledger.objects.create(
        name="rent", amount=decimal.Decimal("10.50"), due=JAN, question=first, extra={"a": 1}
    )
    ledger.name, ledger.amount, ledger.due = "lease", decimal.Decimal("12.00"), FEB
    ledger.question, ledger.extra = second, {"a": [2]}
    ledger.save()
    created, updated = ledger.diffs
    assert created.old == {}
    assert updated.old == {
        "name": "rent",
        "amount": "10.50",
        "due": "2026-01-01T00:00:00Z",
        "question": first.pk,
        "extra": {"a": 1},
    }
    assert fields(updated) == {
        "name": "lease",
        "amount": "12.00",
        "due": "2026-02-01T00:00:00Z",
        "question": second.pk,
        "extra": {"a": [2]},
    }


def test_only_the_changed_fields_have_an_old_value():
    ledger = Ledger.objects.create(name="rent", amount=5)
    ledger.amount = 6
    ledger.save()
    # The value the instance held, in the form data gives the new one (an int here).
    assert ledger.diffs[-1].old == {"amount": 5}
    assert fields(ledger.diffs[-1]) == {"amount": 6}


def test_a_creation_has_no_old_values_and_its_member_no_o_key(redis_client):
    ledger = Ledger.objects.create(name="rent")
    [member] = members(redis_client, ledger)
    assert b'"o":' not in member
    assert ledger.diffs[0].old == {}


def test_a_delete_keeps_the_values_the_row_had():
    ledger = Ledger.objects.create(name="rent", amount=3, due=JAN)
    ledger.name = "unsaved edit"  # the row never held it
    pk = ledger.pk
    ledger.delete()
    deleted = Ledger.diffs.get_by_object_id(pk)[-1]
    assert deleted.deleted is True
    assert deleted.old["name"] == "rent"
    assert deleted.old["amount"] == 3
    assert deleted.old["due"] == "2026-01-01T00:00:00Z"


def test_queryset_update_and_bulk_update_keep_old_values_too():
    ledgers = [Ledger.objects.create(name=f"l{n}", amount=n) for n in range(3)]
    Ledger.objects.filter(pk=ledgers[0].pk).update(amount=100)
    assert ledgers[0].diffs[-1].old == {"amount": "0.00"}
    for ledger in ledgers:
        ledger.name = ledger.name.upper()
    Ledger.objects.bulk_update(ledgers, ["name"])
    assert [ledger.diffs[-1].old for ledger in ledgers] == [
        {"name": "l0"},
        {"name": "l1"},
        {"name": "l2"},
    ]


def test_a_proxy_records_old_values_as_its_concrete_model_does():
    ledger = LedgerProxy.objects.create(name="rent")
    ledger.name = "lease"
    ledger.save()
    assert ledger.diffs[-1].old == {"name": "rent"}


def test_old_values_wait_for_the_commit_like_the_rest():
    ledger = Ledger.objects.create(name="a")
    with transaction.atomic():
        ledger.name = "b"
        ledger.save()
        ledger.name = "c"
        ledger.save()
    assert [d.old for d in ledger.diffs] == [{}, {"name": "a"}, {"name": "b"}]


def test_a_model_registered_without_it_stores_no_old_values(redis_client):
    question = Question.objects.create(question_text="a")
    question.question_text = "b"
    question.save()
    assert question.diffs[-1].old == {}
    assert all(b'"o":' not in member for member in members(redis_client, question))


def test_old_values_and_context_go_after_the_data():
    ledger = Ledger.objects.create(name="a")
    with diffs.context(user=1):
        ledger.name = "b"
        ledger.save()
    last = ledger.diffs[-1]
    assert (last.old, last.context) == ({"name": "a"}, {"user": 1})


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_old_values_takes_a_bool(value):
    with pytest.raises(RegistrationError, match="old_values"):
        diffs.register(Untracked, old_values=value)
    assert not diffs.is_registered(Untracked)


def test_a_member_whose_old_values_are_not_an_object_is_not_ours():
    member = build_member("0123456789abcdef", "1", False, False, old_json="[1]")
    with pytest.raises(ValueError, match=r"o=\[1\]"):
        Diff.from_member(member, 1.0)


def test_a_diff_built_by_hand_keeps_its_old_values_in_its_member():
    diff = Diff(data={"a": 2}, created=False, id="0123456789abcdef", old={"a": 1})
    assert Diff.from_member(diff.to_member(), 1.0).old == {"a": 1}


def test_the_rest_endpoint_shows_old_values_only_of_the_columns_it_shows():
    from rest_framework.test import APIClient

    ledger = Ledger.objects.create(name="rent", amount=31337, due=JAN)
    ledger.name, ledger.amount = "lease", 42424
    ledger.save()
    with diffs.context(user=2):
        ledger.amount = 97979  # a change of a hidden column only
        ledger.save()
    response = APIClient().get(f"/ledgers/{ledger.pk}/diffs/")
    assert response.status_code == 200
    created, renamed, hidden = response.json()["results"]
    assert "old" not in created
    assert renamed["old"] == {"name": "rent"}
    assert renamed["data"][0]["fields"] == {"name": "lease"}
    assert "old" not in hidden and hidden["data"][0]["fields"] == {}
    assert hidden["context"] == {"user": 2}
    for amount in (b"31337", b"42424", b"97979"):  # no amount shows, old or new
        assert amount not in response.content
