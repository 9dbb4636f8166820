"""One sorted set per object, keys, epoch-ms scores, unique JSON members."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from django.core import serializers
from django.utils import timezone

from diffs.delivery import store
from diffs.diff import new_diff_id
from diffs.keys import KeyLayout, escape_glob, normalize_pk
from diffs.layout import current_layout
from tests.conftest import diffs_settings
from tests.support.keynames import feed_key as expected_feed_key
from tests.support.keynames import horizon_key as expected_horizon_key
from tests.support.keynames import index_key as expected_index_key
from tests.support.keynames import log_key as expected_log_key
from tests.support.keynames import object_key as expected_key
from tests.support.stored import feed_count, stored_count, stored_members
from tests.support.writing import open_horizon, outgoing
from tests.testapp.models import Article, CodeItem, Question, UUIDItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_key_holds_prefix_app_label_model_and_pk(committed, redis_client):
    with committed():
        question = Question.objects.create(question_text="k")
    key = expected_key("testapp.question", question.pk)
    assert Question.diffs.get_key(question.pk) == key
    index_key, log_key = current_layout().lane_keys_for(key)
    # The diff is in the model's log, indexed by the object's index (diffs.lanes).
    assert redis_client.type(log_key) in (b"stream", "stream")
    assert redis_client.strlen(index_key) == 16
    assert index_key == expected_index_key("testapp.question", question.pk)
    assert log_key == expected_log_key("testapp.question")
    assert sorted(k.decode() for k in redis_client.scan_iter("*")) == sorted(
        [expected_horizon_key("testapp.question"), index_key, log_key]
    )


def test_prefix_setting_is_honoured(committed, redis_client):
    with diffs_settings(prefix="myapp:changes:"), committed():
        question = Question.objects.create(question_text="k")
    prefix = "myapp:changes:"
    assert redis_client.exists(expected_index_key("testapp.question", question.pk, prefix))
    assert redis_client.exists(expected_log_key("testapp.question", prefix))
    assert not redis_client.exists(expected_index_key("testapp.question", question.pk))


def test_pk_forms_normalise_to_one_key():
    item = UUIDItem(name="x")
    layout = KeyLayout("p:", cluster=False)
    assert layout.object_key(UUIDItem, item.pk) == layout.object_key(
        UUIDItem, str(item.pk).upper()
    )
    assert normalize_pk(Question, "7") == normalize_pk(Question, 7) == "7"
    # a value the pk field rejects is kept as it is rather than raising
    assert normalize_pk(Question, "not-a-number") == "not-a-number"


def test_keys_with_hostile_pks_stay_distinct(committed):
    codes = ["a:b", "a", "a:b:c", "x*", "[y]", "sp ace", "new\nline", "é✓", "z" * 1000]
    with committed():
        for code in codes:
            CodeItem.objects.create(code=code, name="n")
    for code in codes:
        [diff] = CodeItem.diffs.get_by_object_id(code)
        assert diff.data[0]["pk"] == code


def test_glob_escaping():
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert KeyLayout("diffs:", cluster=False).pattern() == "diffs:*"
    assert KeyLayout("d*[x]:", cluster=True).pattern() == "d\\*\\[x\\]:*"


def test_score_is_true_epoch_milliseconds_whatever_the_time_zone(committed, settings):
    assert settings.TIME_ZONE != "UTC"
    before = time.time() * 1000
    with committed():
        question = Question.objects.create(question_text="t")
    after = time.time() * 1000
    [diff] = question.diffs
    assert before <= diff.timestamp <= after


def test_scores_increase_even_within_one_millisecond(committed):
    with committed():
        question = Question.objects.create(question_text="0")
        for i in range(1, 30):
            question.question_text = str(i)
            question.save()
    stamps = [d.timestamp for d in question.diffs]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 30
    assert [d.data[0]["fields"]["question_text"] for d in question.diffs] == [
        str(i) for i in range(30)
    ]


def test_member_is_json_with_id_data_and_created(committed, redis_client):
    with committed():
        question = Question.objects.create(question_text="m")
        pk = question.pk
        question.delete()
    members = stored_members(redis_client, expected_key("testapp.question", pk))
    created, deleted = (json.loads(m) for m in members)
    assert set(created) == {"id", "data", "created"}
    assert created["created"] is True
    assert deleted["deleted"] is True and deleted["created"] is False
    assert created["id"] != deleted["id"]


def test_identical_diffs_never_collapse(committed):
    with committed():
        question = Question.objects.create(question_text="life")
        for text in ["python", "life", "python"]:
            question.question_text = text
            question.save()
    assert len(question.diffs) == 4
    assert len({d.id for d in question.diffs}) == 4


def test_default_data_matches_django_json_serializer(committed):
    with committed():
        question = Question.objects.create(question_text="q")
        article = Article.objects.create(
            title="T",
            body="B é",
            rank=3,
            published_at=timezone.now(),
            is_public=True,
            question=question,
        )
    expected = json.loads(serializers.serialize("json", [article]))
    assert article.diffs[0].data == expected


def test_non_ascii_is_stored_as_utf8(committed, redis_client):
    with committed():
        question = Question.objects.create(question_text="héllo ✓")
    [member] = stored_members(redis_client, expected_key("testapp.question", question.pk))
    assert "héllo ✓".encode() in member


def test_datetime_timestamp_in_create_is_converted():
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    diff = Question.diffs.create(data={"a": 1}, pk=1, timestamp=when)
    assert diff.timestamp == when.timestamp() * 1000
    assert Question.diffs.get_by_object_id(1)[0].timestamp == diff.timestamp


def test_one_flush_mixing_fixed_and_clock_scores_keeps_every_score_distinct(redis_client):
    # The write script reads each key's highest score once per call and keeps it up to
    # date itself: a diff after a fixed score above the clock must still land above it.
    ahead = time.time() * 1000 + 30_000  # a fixed score half a minute ahead
    behind = time.time() * 1000 - 30_000
    key, feed = expected_key("testapp.question", 1), expected_feed_key("testapp.question")
    open_horizon(Question)

    def write(n, score=None):
        member = f'{{"id":"{n:016x}","created":false,"data":{n}}}'
        return outgoing(key, feed, member, f"{n:016x}:1", score)

    scores = store.write_many(
        redis_client, [write(1), write(2, behind), write(3), write(4, ahead), write(5), write(6)]
    )

    assert scores[1] == pytest.approx(behind, abs=0.01)
    assert scores[0] < scores[2] < scores[3] == pytest.approx(ahead, abs=0.01)
    assert scores[3] < scores[4] < scores[5]
    assert len(set(scores)) == 6
    assert stored_count(redis_client, key) == 6
    assert feed_count(redis_client, feed) == 6
    # The earlier fixed score went to the set lane (below the log's last entry).
    for stored_key in (key, feed, *current_layout().lane_keys_for(key)):
        assert 0 < redis_client.pttl(stored_key) <= 3600 * 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_other_diff_ids_than_its_parent():
    # Ids come from ``random``, which Python reseeds in a forked child: without that,
    # parent and child would give their next diffs the same ids.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, "".join(new_diff_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = pipe.read().decode()
    parent_ids = "".join(new_diff_id() for _ in range(4))
    assert len(child_ids) == len(parent_ids) == 64
    assert child_ids != parent_ids


def test_seeding_the_random_module_does_not_replay_diff_ids(django_capture_on_commit_callbacks):
    import random

    with django_capture_on_commit_callbacks(execute=True):
        question = Question.objects.create(question_text="a")
    for text in ("b", "c"):
        random.seed(1)  # as test tools, fakers and workers do
        question.question_text = text
        with django_capture_on_commit_callbacks(execute=True):
            question.save()
    texts = [d.data[0]["fields"]["question_text"] for d in question.diffs]
    assert texts == ["a", "b", "c"]
