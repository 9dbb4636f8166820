"""Code written for django-diffs 0.1.16 keeps working, or fails with a message naming
what to use instead.

* ``serialize_diff(dirty_fields, created=True)`` gets the fields the object was created
  with: a pk the database assigned is not one of them, a pk known before the INSERT is
  (the same rule for ``save()`` and ``bulk_create()``);
* ``diffs.helpers.precise_timestamp(dt=...)``;
* ``Diff.typecast_for_storage()``, ``Diff.from_storage()`` (and the sorted set's
  ``zadd(member, score)``), and ``diffs.settings.diffs_settings``, now a read-only view;
* the names that are gone (``diffs.signals``, ``diffs.klasses_to_connect``,
  ``diffs.settings.merge_settings``) say what replaced them; ``diffs.apps.DiffLogConfig``,
  ``diffs.settings.USER_SETTINGS`` and the manager's ``_generate_key`` still work.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any
from unittest import mock

import pytest
from django.apps import AppConfig
from django.test import override_settings

import diffs
from diffs.diff import Diff, looks_like_member
from diffs.helpers import precise_timestamp
from tests.testapp.models import (
    CodeItem,
    MixinItem,
    OwnDirtyItem,
    Question,
    Restaurant,
    UUIDItem,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run on_commit callbacks at the end of the block, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def hook_calls(monkeypatch):
    """Give the test models a ``serialize_diff`` that records what it is called with."""
    calls: list[tuple[str, bool, dict[str, Any]]] = []

    def serialize_diff(self, dirty_fields, created=False):
        calls.append((type(self).__name__, created, dict(dirty_fields)))
        return {"fields": sorted(dirty_fields)}

    for model in (Question, UUIDItem, CodeItem, MixinItem, OwnDirtyItem, Restaurant):
        monkeypatch.setattr(model, "serialize_diff", serialize_diff, raising=False)
    return calls


# serialize_diff on a creation: the fields the object was created with


def test_a_pk_the_database_assigns_is_not_among_the_created_fields(committed, hook_calls):
    with committed():
        question = Question.objects.create(question_text="What will happen?")
    assert hook_calls == [
        ("Question", True, {"question_text": "What will happen?", "pub_date": None, "votes": 0})
    ]
    # The README's example, which 0.1.16 gave too.
    assert question.diffs[-1].data == {"fields": ["pub_date", "question_text", "votes"]}


@pytest.mark.parametrize(
    ("model", "values", "pk_name"),
    [
        (Question, {"id": 4242, "question_text": "q"}, "id"),
        (CodeItem, {"code": "natural-key", "name": "n"}, "code"),
        (UUIDItem, {"name": "n"}, "id"),  # the default ran in Model.__init__
    ],
)
def test_a_pk_known_before_the_insert_is_among_the_created_fields(
    committed, hook_calls, model, values, pk_name
):
    with committed():
        obj = model(**values)
        expected_pk = obj.pk
        obj.save()
    [(_, created, fields)] = hook_calls
    assert created is True
    assert fields[pk_name] == expected_pk is not None


@pytest.mark.parametrize(
    ("model", "values", "expected"),
    [
        (MixinItem, {"name": "n"}, {"name": "n"}),  # django-dirtyfields' own tracking
        (OwnDirtyItem, {"name": "n"}, {"name": "always"}),  # the model's get_dirty_fields
        (
            Restaurant,  # multi-table: the link to the parent row is assigned too
            {"name": "r", "serves_pizza": True},
            {"name": "r", "serves_pizza": True},
        ),
    ],
)
def test_every_kind_of_tracking_leaves_out_a_database_assigned_pk(
    committed, hook_calls, model, values, expected
):
    with committed():
        model.objects.create(**values)
    assert hook_calls == [(model.__name__, True, expected)]


def test_bulk_create_passes_the_same_created_fields_as_save(committed, hook_calls):
    with committed():
        Question.objects.create(question_text="saved")
        Question.objects.create(id=9001, question_text="saved")
        Question.objects.bulk_create(
            [Question(question_text="bulk"), Question(id=9002, question_text="bulk")]
        )
    saved_auto, saved_explicit, bulk_auto, bulk_explicit = (c[2] for c in hook_calls)
    assert all(call[1] is True for call in hook_calls)
    assert "id" not in saved_auto and "id" not in bulk_auto
    assert saved_auto.keys() == bulk_auto.keys()
    assert (saved_explicit["id"], bulk_explicit["id"]) == (9001, 9002)
    assert saved_explicit.keys() == bulk_explicit.keys()


def test_bulk_create_keeps_natural_and_default_pks_among_the_created_fields(committed, hook_calls):
    item = UUIDItem(name="u")
    with committed():
        UUIDItem.objects.bulk_create([item])
        CodeItem.objects.bulk_create([CodeItem(code="c1", name="n")])
    assert hook_calls == [
        ("UUIDItem", True, {"id": item.pk, "name": "u"}),
        ("CodeItem", True, {"code": "c1", "name": "n"}),
    ]


def test_the_default_data_of_a_creation_has_the_pk_only_under_pk(committed):
    with committed():
        question = Question.objects.create(question_text="default")
        restaurant = Restaurant.objects.create(name="r")
        code = CodeItem.objects.create(code="k", name="n")
        [bulk] = Question.objects.bulk_create([Question(question_text="bulk")])
    assert question.diffs[0].data == [
        {
            "model": "testapp.question",
            "pk": question.pk,
            "fields": {"question_text": "default", "pub_date": None, "votes": 0},
        }
    ]
    assert bulk.diffs[0].data[0]["fields"] == {
        "question_text": "bulk",
        "pub_date": None,
        "votes": 0,
    }
    assert restaurant.diffs[0].data[0]["pk"] == restaurant.pk
    assert set(restaurant.diffs[0].data[0]["fields"]) == {"name", "serves_pizza"}
    assert code.diffs[0].data == [
        {"model": "testapp.codeitem", "pk": "k", "fields": {"name": "n"}}
    ]


def test_an_update_after_the_creation_is_unaffected(committed, hook_calls):
    with committed():
        question = Question.objects.create(question_text="before")
        question.question_text = "after"
        question.save()
    assert hook_calls[1] == ("Question", False, {"question_text": "before"})


# diffs.helpers.precise_timestamp(dt=None)


def test_precise_timestamp_takes_its_0_1_16_keyword():
    one_second = dt.datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.timezone.utc)
    assert precise_timestamp(dt=one_second) == 1000.5
    assert precise_timestamp(one_second) == 1000.5
    assert precise_timestamp(dt=None) > 1.7e12


def test_precise_timestamp_reads_a_naive_dt_in_the_default_time_zone(settings):
    settings.TIME_ZONE = "America/Chicago"  # UTC-6 in January
    assert precise_timestamp(dt=dt.datetime(1970, 1, 1)) == 6 * 3600 * 1000


# Diff.typecast_for_storage() and Diff.from_storage()


def test_typecast_for_storage_gives_a_member_reads_accept_and_the_score():
    when = dt.datetime(2020, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc)
    diff = Diff(data={"when": when, "day": when.date()}, created=True, timestamp=1234.5)
    member, score = diff.typecast_for_storage()
    assert score == 1234.5
    assert looks_like_member(member)
    again = Diff.from_storage(member, score)
    assert again.data == {"when": "2020-05-06T07:08:09.123Z", "day": "2020-05-06"}
    assert (again.created, again.timestamp, again.deleted) == (True, 1234.5, False)
    assert again.id is not None


def test_typecast_for_storage_keeps_the_id_of_a_diff_that_has_one():
    diff = Diff(data=[1], created=False, id="00000000000000aa")
    assert Diff.from_storage(diff.typecast_for_storage()[0]).id == "00000000000000aa"


def test_a_member_added_the_0_1_16_way_is_read_back(committed):
    with committed():
        question = Question.objects.create(question_text="q")
    diff = Diff(data={"by": "hand"}, created=False, timestamp=precise_timestamp())
    sorted_set = Question.diffs.get_sortedset(question.pk)
    assert sorted_set.zadd(*diff.typecast_for_storage()) == 1
    assert [d.data for d in sorted_set][-1] == {"by": "hand"}
    assert [d.data for d in question.diffs][-1] == {"by": "hand"}
    with pytest.raises(TypeError, match="score"):
        sorted_set.zadd("member without a score")


def test_from_storage_reads_a_member_written_by_0_1_16():
    member = (
        b'{"data": [{"model": "exp.question", "pk": 1, "fields": {"question_text": '
        b'"h\\u00e9llo"}}], "created": true}'
    )
    diff = Diff.from_storage(member, 1795359901168.825)
    assert diff.data == [
        {"model": "exp.question", "pk": 1, "fields": {"question_text": "h\u00e9llo"}}
    ]
    assert (diff.created, diff.timestamp, diff.id) == (True, 1795359901168.825, None)
    assert Diff.from_storage(member).timestamp > 1.7e12  # no score: now, as in 0.1.16


@pytest.mark.parametrize("member", [b"not json", b'{"data": 1}', b'{"created": true}'])
def test_from_storage_refuses_what_is_not_a_member(member):
    with pytest.raises(ValueError):  # JSONDecodeError, or a key missing
        Diff.from_storage(member, 1.0)


# diffs.settings.diffs_settings: a read-only view of the effective settings


def test_diffs_settings_shows_the_effective_settings():
    from diffs.settings import DEFAULTS, diffs_settings

    with override_settings(DIFFS_SETTINGS={"prefix": "site:", "redis": {"port": 6380}}):
        assert diffs_settings["prefix"] == "site:"
        assert diffs_settings["redis"] == {"host": "localhost", "port": 6380, "db": 0}
        assert diffs_settings["max_element_age"] == 3600
        assert dict(diffs_settings).keys() == DEFAULTS.keys()
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        assert diffs_settings["test_mode"] is True
        assert diffs_settings["prefix"] == "diffs:"
    assert "prefix" in diffs_settings and "hosts" not in diffs_settings
    assert len(diffs_settings) == len(DEFAULTS)
    with pytest.raises(KeyError):
        diffs_settings["hosts"]


def test_diffs_settings_refuses_writes_saying_how_to_change_a_setting():
    from diffs.settings import diffs_settings, get_settings

    with pytest.raises(TypeError, match=r"read-only.*override_settings\(DIFFS_SETTINGS"):
        diffs_settings["test_mode"] = True
    # The original tests' idiom.
    with (
        pytest.raises(TypeError, match="read-only"),
        mock.patch.dict(diffs_settings, test_mode=True),
    ):
        pass  # pragma: no cover
    for write in (
        lambda: diffs_settings.update(prefix="x:"),
        lambda: diffs_settings.pop("prefix"),
        lambda: diffs_settings.setdefault("prefix", "x:"),
        lambda: diffs_settings.clear(),
        lambda: diffs_settings.__delitem__("prefix"),
        lambda: diffs_settings.popitem(),
    ):
        with pytest.raises(TypeError, match="read-only"):
            write()
    diffs_settings["redis"]["port"] = 1  # a copy: the settings are untouched
    assert get_settings().redis["port"] == 6379
    assert "read-only" in repr(diffs_settings)


def test_user_settings_reads_the_setting_now():
    import diffs.settings

    with override_settings(DIFFS_SETTINGS={"prefix": "now:"}):
        assert diffs.settings.USER_SETTINGS == {"prefix": "now:"}


# Names 0.1.16 had that are gone: each says what replaced it, or still works


def test_merge_settings_names_its_replacement():
    import diffs.settings

    with pytest.raises(AttributeError, match=r"removed in django-diffs 1\.0.*get_settings\(\)"):
        diffs.settings.merge_settings  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        diffs.settings.nothing_here  # noqa: B018


def test_klasses_to_connect_names_its_replacement():
    with pytest.raises(AttributeError, match=r"diffs\.registered_models\(\)"):
        diffs.klasses_to_connect  # noqa: B018
    assert not hasattr(diffs, "klasses_to_connect")
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        diffs.nothing_here  # noqa: B018


@pytest.mark.parametrize("name", ["on_pre_save", "on_post_save", "connect", "serialize_object"])
def test_0_1_16_names_in_diffs_signals_name_their_replacements(name):
    for attempt in (
        lambda: exec(f"from diffs.signals import {name}", {}),
        lambda: getattr(importlib.import_module("diffs.signals"), name),
        lambda: mock.patch(f"diffs.signals.{name}").start(),
    ):
        with pytest.raises(ImportError) as raised:
            attempt()
        message = str(raised.value)
        assert f"diffs.signals.{name} was removed in django-diffs 1.0" in message
        assert "diffs.recording" in message and "diffs.unregister(Model)" in message
        assert "default_data" in message and "diff_recorded" in message


def test_diffs_signals_holds_diff_recorded_and_nothing_else_by_accident():
    from django.dispatch import Signal

    from diffs.signals import diff_recorded

    assert isinstance(diff_recorded, Signal)
    assert not hasattr(importlib.import_module("diffs.signals"), "nothing_here")


def test_the_0_1_16_app_config_name_still_installs_the_app():
    from diffs.apps import DiffLogConfig, DiffsConfig

    assert DiffLogConfig is DiffsConfig
    config = AppConfig.create("diffs.apps.DiffLogConfig")
    assert isinstance(config, DiffsConfig) and config.label == "diffs"
    # Django still picks DiffsConfig by itself for a plain "diffs" entry.
    assert type(AppConfig.create("diffs")) is DiffsConfig
    with pytest.raises(AttributeError, match="no attribute 'OtherConfig'"):
        importlib.import_module("diffs.apps").OtherConfig  # noqa: B018


def test_the_managers_generate_key_is_get_key():
    assert Question.diffs._generate_key(5) == Question.diffs.get_key(5)
    assert Question.diffs._generate_key(5, UUIDItem) == Question.diffs.get_key(5, UUIDItem)


def test_the_0_1_16_import_paths_still_import():
    from diffs.models import Diff as ModelsDiff
    from diffs.models import DiffModelDescriptor, DiffModelManager, DiffSortedSet

    assert precise_timestamp() > 1.7e12
    assert ModelsDiff is Diff
    assert {DiffModelDescriptor, DiffModelManager, DiffSortedSet}
