"""Bad input: clear errors that name the model and hook; Redis trouble never breaks save()."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.conf import settings
from django.db import transaction

from diffs import HookError
from tests.conftest import diffs_settings, unreachable_url
from tests.testapp.models import Choice, Question

pytestmark = pytest.mark.django_db


def test_serialize_diff_returning_unencodable_data():
    question = Question(question_text="x")
    question.serialize_diff = lambda dirty, created=False: {"tags": {1, 2}}
    with pytest.raises(
        HookError, match=r"Question\.serialize_diff\(\) returned data JSON cannot hold"
    ):
        question.save()


def test_serialize_diff_returning_circular_data():
    loop: dict = {}
    loop["self"] = loop
    question = Question(question_text="x")
    question.serialize_diff = lambda dirty, created=False: loop
    with pytest.raises(HookError, match=r"Question\.serialize_diff"):
        question.save()


def test_serialize_diff_returning_text_that_is_not_json():
    question = Question(question_text="x")
    question.serialize_diff = lambda dirty, created=False: "changed!"
    with pytest.raises(HookError, match="returned a str that is not JSON"):
        question.save()


def test_serialize_diff_may_return_dates_decimals_uuids(django_capture_on_commit_callbacks):
    import decimal
    import uuid

    token = uuid.uuid4()
    question = Question(question_text="x")
    question.serialize_diff = lambda dirty, created=False: {
        "d": dt.date(2020, 1, 2),
        "n": decimal.Decimal("1.5"),
        "u": token,
    }
    with django_capture_on_commit_callbacks(execute=True):
        question.save()
    assert question.diffs[0].data == {"d": "2020-01-02", "n": "1.5", "u": str(token)}


def test_get_diff_parent_returning_a_non_model():
    question = Question.objects.create(question_text="q")
    choice = Choice(question=question, choice_text="c")
    choice.get_diff_parent = lambda: {"id": 1}
    with pytest.raises(
        HookError, match=r"Choice\.get_diff_parent\(\) returned dict, not a model instance"
    ):
        choice.save()


def test_get_diff_parent_returning_an_instance_without_pk():
    choice = Choice(question_id=1, choice_text="c")
    choice.get_diff_parent = lambda: Question()
    with pytest.raises(HookError, match="without a primary key"), transaction.atomic():
        Question.objects.create(pk=1, question_text="q")
        choice.save()


def test_get_diff_parent_returning_none_keeps_the_diff_home(django_capture_on_commit_callbacks):
    question = Question.objects.create(question_text="q")
    choice = Choice(question=question, choice_text="c")
    choice.get_diff_parent = lambda: None
    with django_capture_on_commit_callbacks(execute=True):
        choice.save()
    assert len(Choice.diffs.get_by_object_id(choice.pk)) == 1


def test_bad_last_save_at():
    question = Question(question_text="x")
    question._last_save_at = "yesterday"
    with pytest.raises(HookError, match="_last_save_at is 'yesterday'"):
        question.save()


@pytest.mark.django_db(transaction=True)
def test_redis_down_never_breaks_a_committed_save(caplog):
    unreachable = diffs_settings(url=unreachable_url(), test_mode=False, socket_timeout=0.5)
    with unreachable, caplog.at_level(logging.ERROR, logger="diffs"):
        question = Question.objects.create(question_text="saved anyway")
        with transaction.atomic():
            question.question_text = "still saved"
            question.save()
    assert Question.objects.get(pk=question.pk).question_text == "still saved"
    [message] = [r.getMessage() for r in caplog.records]
    assert f"testapp.question pk={question.pk}" in message
    assert "The database changes were saved" in message


@pytest.mark.django_db(transaction=True)
def test_a_client_that_cannot_be_built_never_breaks_a_save(caplog, monkeypatch):
    def rejected_by_redis_py():
        raise TypeError("'str' object cannot be interpreted as an integer")

    monkeypatch.setattr("diffs.delivery.queue.get_connection", rejected_by_redis_py)
    later = []
    with caplog.at_level(logging.ERROR, "diffs"), transaction.atomic():
        question = Question.objects.create(question_text="saved")
        transaction.on_commit(lambda: later.append("ran"))
    assert Question.objects.filter(pk=question.pk).exists()
    assert later == ["ran"]  # the hooks after ours still ran
    assert "check DIFFS_SETTINGS['redis'] and ['url']" in caplog.records[0].getMessage()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    settings.CLUSTER, reason="one server's option: redis-py's cluster client takes no pool"
)
def test_a_save_with_a_connection_pool_in_settings():
    import redis

    from diffs import get_connection

    kwargs = dict(get_connection().connection_pool.connection_kwargs)
    pool_class = type(get_connection().connection_pool)
    pool = (
        pool_class(**kwargs)
        if pool_class is not redis.ConnectionPool
        else redis.ConnectionPool(**kwargs)
    )
    with diffs_settings(url=None, redis={"connection_pool": pool}):
        question = Question.objects.create(question_text="pooled")
        assert len(question.diffs) == 1
