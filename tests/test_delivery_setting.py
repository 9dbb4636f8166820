"""``DIFFS_SETTINGS["delivery"]``: one key for how a diff gets to Redis.

``use_transactions``, ``durable`` and ``write_behind`` keep working as its older names:
alone they choose the mode, next to ``delivery`` they must agree with it.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from diffs.checks import check_settings
from diffs.models import OutboxEntry
from diffs.settings import DELIVERY_MODES, build_settings, find_problems, get_settings
from tests.conftest import diffs_settings
from tests.testapp.models import Question

ALIASES = {
    "on_commit": {"use_transactions": True, "durable": False, "write_behind": False},
    "write_behind": {"use_transactions": True, "durable": False, "write_behind": True},
    "durable": {"use_transactions": True, "durable": True, "write_behind": False},
    "immediate": {"use_transactions": False, "durable": False, "write_behind": False},
}


def ids(raw):
    return [problem.check_id for problem in find_problems(raw)]


def effective(conf):
    return {key: getattr(conf, key) for key in ("use_transactions", "durable", "write_behind")}


def test_the_default_is_on_commit():
    conf = build_settings({})
    assert conf.delivery == "on_commit"
    assert effective(conf) == ALIASES["on_commit"]


@pytest.mark.parametrize("mode", DELIVERY_MODES)
def test_each_mode_sets_its_older_keys(mode):
    conf = build_settings({"delivery": mode})
    assert conf.delivery == mode
    assert effective(conf) == ALIASES[mode]


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ({"use_transactions": True}, "on_commit"),
        ({"write_behind": True}, "write_behind"),
        ({"durable": True}, "durable"),
        ({"use_transactions": False}, "immediate"),
    ],
)
def test_the_older_keys_alone_choose_the_mode(raw, mode):
    conf = build_settings(raw)
    assert conf.delivery == mode
    assert effective(conf) == ALIASES[mode]
    assert ids(raw) == []


@pytest.mark.parametrize("mode", DELIVERY_MODES)
def test_an_older_key_that_agrees_with_delivery_is_fine(mode):
    raw = {"delivery": mode, **ALIASES[mode]}
    assert ids(raw) == []
    assert build_settings(raw).delivery == mode


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"delivery": "durable", "write_behind": True}, "'write_behind'"),
        ({"delivery": "on_commit", "use_transactions": False}, "'use_transactions'"),
        ({"delivery": "immediate", "durable": True}, "'durable'"),
        ({"delivery": "write_behind", "write_behind": False}, "'write_behind'"),
    ],
)
def test_an_older_key_that_disagrees_is_an_error_naming_both(raw, named):
    [problem] = find_problems(raw)
    assert problem.check_id == "diffs.E031"
    assert named in problem.msg and repr(raw["delivery"]) in problem.msg
    assert named in problem.hint
    with pytest.raises(ImproperlyConfigured, match="E031"):
        build_settings(raw)


@pytest.mark.parametrize("value", ["on-commit", "DURABLE", None, True, 1])
def test_an_unknown_mode_is_an_error_listing_the_modes(value):
    [problem] = find_problems({"delivery": value})
    assert problem.check_id == "diffs.E030"
    assert all(repr(mode) in problem.msg for mode in DELIVERY_MODES)


def test_write_behind_mode_refuses_raise_as_the_older_key_did():
    assert ids({"delivery": "write_behind", "on_redis_error": "raise"}) == ["diffs.E023"]
    assert ids({"write_behind": True, "on_redis_error": "raise"}) == ["diffs.E023"]
    [problem] = find_problems({"delivery": "write_behind", "on_redis_error": "raise"})
    assert "'delivery': 'write_behind'" in problem.msg


def test_the_older_combination_no_mode_names_keeps_working_with_a_warning():
    raw = {"use_transactions": False, "write_behind": True}
    [problem] = find_problems(raw)
    assert problem.check_id == "diffs.W006" and not problem.is_error
    conf = build_settings(raw)
    assert (conf.use_transactions, conf.write_behind) == (False, True)
    with override_settings(DIFFS_SETTINGS={"test_mode": True, **raw}):
        assert [m.id for m in check_settings()] == ["diffs.W006"]


@pytest.mark.django_db(transaction=True)
def test_immediate_writes_inside_the_transaction():
    with diffs_settings(delivery="immediate"), transaction.atomic():
        question = Question.objects.create(question_text="before the commit")
        assert get_settings().delivery == "immediate"
        assert len(question.diffs) == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_waits_for_the_commit():
    with diffs_settings(delivery="on_commit"), transaction.atomic():
        question = Question.objects.create(question_text="after the commit")
        assert len(question.diffs) == 0
    assert len(question.diffs) == 1


@pytest.mark.django_db(transaction=True)
def test_durable_keeps_an_outbox_row_until_redis_has_the_diff():
    with diffs_settings(delivery="durable"), transaction.atomic():
        question = Question.objects.create(question_text="kept")
        assert OutboxEntry.objects.count() == 1
    assert len(question.diffs) == 1
    assert OutboxEntry.objects.count() == 0
