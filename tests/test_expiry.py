"""A key that receives no new diff for max_element_age expires."""

from __future__ import annotations

import time

import pytest

from tests.conftest import diffs_settings
from tests.support.keynames import index_key, log_key
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _ttl_seconds(client, key: str) -> float:
    return float(client.pttl(key)) / 1000


def test_each_write_sets_the_index_and_the_log_to_expire_after_max_element_age(
    committed, redis_client
):
    with diffs_settings(max_element_age=600), committed():
        question = Question.objects.create(question_text="ttl")
    key = index_key("testapp.question", question.pk)
    feed = log_key("testapp.question")

    assert 590 < _ttl_seconds(redis_client, key) <= 600
    assert 590 < _ttl_seconds(redis_client, feed) <= 600


def test_a_new_diff_pushes_the_expiry_back(committed, redis_client):
    with diffs_settings(max_element_age=600), committed():
        question = Question.objects.create(question_text="ttl")
    key = index_key("testapp.question", question.pk)
    redis_client.pexpire(key, 5000)  # as if the last write were long ago
    with diffs_settings(max_element_age=600), committed():
        question.question_text = "again"
        question.save()
    assert _ttl_seconds(redis_client, key) > 590


def test_an_idle_key_disappears_by_itself(committed, redis_client):
    with diffs_settings(max_element_age=0.3):
        with committed():
            idle = Question.objects.create(question_text="idle")
        with committed():
            busy = Question.objects.create(question_text="busy")
    idle_key = index_key("testapp.question", idle.pk)
    busy_key = index_key("testapp.question", busy.pk)
    assert redis_client.exists(idle_key)
    # busy gets a new diff, under a window of ten minutes: its key lives that long from now,
    # however slow the machine (a refresh every few ms under a 0.3 s window would race it).
    with diffs_settings(max_element_age=600), committed():
        busy.question_text = "again"
        busy.save()
    deadline = time.monotonic() + 10
    while redis_client.exists(idle_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_client.exists(idle_key)
    assert redis_client.exists(busy_key)
    assert Question.diffs.get_by_object_id(idle.pk) == []
