"""``@diffs.register(fields=..., exclude=..., mask=...)``: what is tracked, what is hidden."""

from __future__ import annotations

import pytest
from django.db import transaction

import diffs
from diffs.checks import check_registered_models
from diffs.exceptions import RegistrationError
from diffs.models import OutboxEntry
from tests.conftest import diffs_settings
from tests.support.stored import stored_members
from tests.testapp.models import Account, CustomSerialized, Memo, Untracked

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = ("hunter2", "correct horse", "s3cr3t-bulk", "qs-update-pw", "bulk-created-pw")


def fields_of(diff):
    return diff.data[0]["fields"]


def every_member(redis_client):
    keys = list(redis_client.scan_iter(count=1000))
    found = []
    for key in keys:
        if redis_client.type(key) == b"zset":
            found.extend(stored_members(redis_client, key))
        elif redis_client.type(key) == b"string":
            found.append(redis_client.get(key))
        elif redis_client.type(key) == b"hash":
            found.extend(redis_client.hvals(key))
        elif redis_client.type(key) == b"stream":
            found.extend(v for _, fields in redis_client.xrange(key) for v in fields.values())
    return found


def test_a_save_of_untracked_fields_only_records_nothing():
    account = Account.objects.create(username="ann")
    account.login_count += 1
    account.save()
    assert len(account.diffs) == 1
    account.username, account.login_count = "anne", 5
    account.save()
    assert len(account.diffs) == 2
    assert fields_of(account.diffs[-1]) == {"username": "anne"}
    assert account.diffs[-1].old == {"username": "ann"}


def test_a_creation_shows_only_tracked_fields():
    account = Account.objects.create(username="ann", login_count=3)
    assert "login_count" not in fields_of(account.diffs[0])
    memo = Memo.objects.create(title="t", body="b")
    assert fields_of(memo.diffs[0]) == {"title": "t"}


def test_fields_tracks_only_those_named():
    memo = Memo.objects.create(title="t", body="b")
    memo.body = "longer"
    memo.save()
    assert len(memo.diffs) == 1
    memo.title, memo.body = "u", "again"
    memo.save()
    assert fields_of(memo.diffs[-1]) == {"title": "u"}
    Memo.objects.filter(pk=memo.pk).update(body="by update")
    assert len(memo.diffs) == 2


def test_a_masked_field_is_recorded_as_changed_without_its_value():
    account = Account.objects.create(username="ann", password="hunter2")
    account.password = "correct horse"
    account.save()
    created, changed = account.diffs
    assert fields_of(created)["password"] == "[masked]"
    assert fields_of(changed) == {"password": "[masked]"}
    assert changed.old == {"password": "[masked]"}


def test_a_masked_value_never_reaches_redis(redis_client):
    account = Account.objects.create(username="ann", password="hunter2")
    account.password = "correct horse"
    account.save()
    others = [Account.objects.create(username=f"u{n}") for n in range(3)]
    for other in others:
        other.password = "s3cr3t-bulk"
    Account.objects.bulk_update(others, ["password"])
    Account.objects.filter(pk=others[0].pk).update(password="qs-update-pw")
    Account.objects.bulk_create([Account(username="new", password="bulk-created-pw")])
    with diffs.context(note="deleting"):
        account.delete()
    members = every_member(redis_client)
    assert len(members) > 8
    for secret in SECRETS:
        assert all(secret.encode() not in member for member in members), secret


def test_a_masked_value_never_reaches_the_outbox_either():
    with diffs_settings(delivery="durable"), transaction.atomic():
        Account.objects.create(username="ann", password="hunter2")
        rows = list(OutboxEntry.objects.values_list("member", flat=True))
    assert rows and all("hunter2" not in member for member in rows)


def test_serialize_diff_gets_masked_dirty_fields(monkeypatch):
    seen = []

    def serialize_diff(self, dirty_fields, created=False):
        seen.append(dict(dirty_fields))
        return {"changed": sorted(dirty_fields)}

    monkeypatch.setattr(Account, "serialize_diff", serialize_diff, raising=False)
    account = Account.objects.create(username="ann", password="hunter2")
    account.password = "correct horse"
    account.save()
    assert seen[-1] == {"password": "[masked]"}


def test_unknown_field_names_are_a_check_error_naming_the_model():
    diffs.register(Untracked, fields=["nope"], mask=["also_nope"])
    try:
        [error] = [m for m in check_registered_models() if m.id == "diffs.E033"]
        assert "testapp.Untracked" in error.msg
        assert "also_nope, nope" in error.msg
    finally:
        diffs.unregister(Untracked)
    assert not [m for m in check_registered_models() if m.id == "diffs.E033"]


def test_mask_next_to_serialize_diff_is_a_warning():
    diffs.register(CustomSerialized, mask=["secret"])
    try:
        [warning] = [m for m in check_registered_models() if m.id == "diffs.W007"]
        assert "testapp.CustomSerialized" in warning.msg
    finally:
        diffs.register(CustomSerialized)
    assert not [m for m in check_registered_models() if m.id == "diffs.W007"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"fields": ["a"], "exclude": ["b"]}, "not both"),
        ({"fields": "title"}, "list of field names"),
        ({"exclude": 5}, "list of field names"),
        ({"mask": [1]}, "field names"),
    ],
)
def test_bad_options_are_refused_at_registration(options, match):
    with pytest.raises(RegistrationError, match=match):
        diffs.register(Untracked, **options)
    assert not diffs.is_registered(Untracked)


def test_a_proxy_registered_on_its_own_keeps_its_concrete_models_mask(redis_client):
    from tests.testapp.models import AccountProxy

    diffs.register(AccountProxy)
    try:
        AccountProxy.objects.create(username="p", password="hunter2")
    finally:
        diffs.unregister(AccountProxy)
    assert all(b"hunter2" not in member for member in every_member(redis_client))
