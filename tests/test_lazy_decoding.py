"""Reads of one object decode a diff's JSON only when the diff is used; pages (feed and
object pages, at most 1,000 diffs and page_bytes) decode every diff while reading, so one
bad member is skipped there instead of breaking the page."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle

import pytest

import diffs.diff
from diffs import Diff
from diffs.diff import build_member, looks_like_member, member_id, with_original_time
from tests.testapp.models import Choice, Question

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def count_json_loads(monkeypatch):
    """Counts the JSON documents diffs.diff decodes (all through parse_strict_json)."""
    calls = []
    real_parse = diffs.diff.parse_strict_json

    def counting_parse(document):
        calls.append(document)
        return real_parse(document)

    monkeypatch.setattr(diffs.diff, "parse_strict_json", counting_parse)
    return calls


def test_a_read_of_many_diffs_decodes_only_the_one_used(count_json_loads):
    question = Question.objects.create(question_text="q0")
    for n in range(1, 50):
        question.question_text = f"q{n}"
        question.save()

    read = Question.diffs.get_by_object_id(question.pk)

    assert len(read) == 50
    assert count_json_loads == []
    assert read[-1].data[0]["fields"] == {"question_text": "q49"}
    assert len(count_json_loads) == 1
    read[-1].cursor, read[-1].timestamp, read[-1].id  # already decoded: no second parse
    assert len(count_json_loads) == 1


def test_pages_of_the_feed_decode_every_diff_while_reading(count_json_loads):
    for n in range(30):
        Question.objects.create(question_text=f"q{n}")

    page = Question.diffs.since(None, limit=20)

    assert len(page.diffs) == 20 and page.has_more
    assert len(count_json_loads) == 20
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs[:2]] == ["q0", "q1"]
    assert len(count_json_loads) == 20  # already decoded


def test_a_diff_decoded_on_use_equals_the_same_diff_decoded_at_once():
    late = with_original_time(build_member("0123456789abcdef", '{"a":1}', True, False), 123.5)
    child = build_member("fedcba9876543210", "[1]", None, True, ("testapp.choice", 'x"id":"y'))
    for member in (late, child, build_member("00112233aabbccdd", '"text"', False, False)):
        for raw in (member, member.encode()):
            lazy = Diff.decoded_on_use(raw, 1000.25, "testapp.question", 7)
            eager = Diff.from_member(raw, 1000.25, "testapp.question", 7)
            assert dataclasses.asdict(lazy) == dataclasses.asdict(eager)
            assert lazy == eager and hash(lazy) == hash(eager) and repr(lazy) == repr(eager)


def test_child_and_late_members_keep_their_fields_when_decoded_on_use():
    late = with_original_time(build_member("0123456789abcdef", '{"a":1}', True, False), 123.5)
    child = build_member("fedcba9876543210", "[1]", None, True, ("testapp.choice", 'x"id":"y'))

    late_diff = Diff.decoded_on_use(late.encode(), 1000.25, "testapp.question", 7)
    child_diff = Diff.decoded_on_use(child.encode(), 2000.0, "testapp.question", 7)

    assert (late_diff.timestamp, late_diff.cursor, late_diff.created) == (123.5, "1000.25", True)
    assert (child_diff.model, child_diff.pk, child_diff.holder_pk) == (
        "testapp.choice",
        'x"id":"y',
        7,
    )
    assert child_diff.deleted is True and child_diff.id == "fedcba9876543210"


def test_diffs_decoded_on_use_copy_pickle_and_replace_like_any_diff():
    member = build_member("0123456789abcdef", '{"a":[1,2]}', False, False).encode()
    for make in (
        lambda lazy: pickle.loads(pickle.dumps(lazy)),
        copy.copy,
        copy.deepcopy,
    ):
        lazy = Diff.decoded_on_use(member, 5.0, "testapp.question", 1)
        assert make(lazy).data == {"a": [1, 2]}
    changed = dataclasses.replace(Diff.decoded_on_use(member, 5.0, "testapp.question", 1), pk=2)
    assert (changed.pk, changed.data, changed.holder_pk) == (2, {"a": [1, 2]}, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Diff.decoded_on_use(member, 5.0).data = 1  # type: ignore[misc]


def test_the_class_still_gives_the_field_defaults():
    assert Diff.data is None and Diff.deleted is False and Diff.id is None
    built = Diff(data={"x": 1}, created=True, timestamp=1.0)
    assert (built.data, built.created, built.deleted, built.id) == ({"x": 1}, True, False, None)


def test_members_of_other_shapes_are_not_taken_for_ours():
    ours = build_member("0123456789abcdef", "{}", None, False)
    assert looks_like_member(ours) and looks_like_member(ours.encode())
    assert looks_like_member(with_original_time(ours, 1.0))
    for foreign in (b'{"id": "x"}', b'{"id":"x","data":1}', b"[1]", b"\x80\x04", b"", "{}"):
        assert not looks_like_member(foreign), foreign


def test_a_corrupt_member_that_looks_like_ours_fails_clearly_when_used(redis_client, caplog):
    question = Question.objects.create(question_text="fine")
    key = Question.diffs.get_key(question.pk)
    redis_client.zadd(key, {b'{"id":"0123456789abcdef","created":false,"data":[1,}': 1e15})

    with caplog.at_level(logging.WARNING, logger="diffs"):
        fine, corrupt = Question.diffs.get_sortedset(question.pk)

    assert fine.data[0]["fields"]["question_text"] == "fine"
    with pytest.raises(ValueError, match=rf"testapp.question pk={question.pk}.*not valid"):
        corrupt.data  # noqa: B018


def test_member_id_reads_the_head_not_the_data_or_a_child_pk():
    child = build_member("fedcba9876543210", '{"id":"zz"}', None, False, ("a.b", 'p"id":"q'))
    late = with_original_time(build_member("0123456789abcdef", '{"id":"zz"}', True, False), 9.0)
    assert member_id(child) == "fedcba9876543210"
    assert member_id(late.encode()) == "0123456789abcdef"
    assert member_id(b"[1]") is None


def test_a_feed_page_keeps_only_the_listed_diff_of_a_shared_score(redis_client):
    question = Question.objects.create(question_text="q")
    Choice.objects.create(question=question, choice_text="c")
    listed = Question.diffs.since(None).diffs
    # Another member at the same score in the same set is not the one the feed listed.
    for diff in listed:
        key = Question.diffs.get_key(diff.holder_pk)
        twin = build_member("aaaaaaaaaaaaaaaa", "{}", None, False)
        redis_client.zadd(key, {twin: float(diff.cursor)})

    again = Question.diffs.since(None).diffs

    assert [d.id for d in again] == [d.id for d in listed]


def test_a_foreign_member_with_a_similar_head_is_skipped(redis_client, caplog):
    question = Question.objects.create(question_text="a")
    key = Question.diffs.get_key(question.pk)
    redis_client.zadd(key, {'{"id":"other-app","meta":{"created":1,"data":2}}': 1e15})

    with caplog.at_level(logging.WARNING, logger="diffs"):
        read = question.diffs

    assert [d.data[0]["fields"]["question_text"] for d in read] == ["a"]
    assert any("did not write" in r.getMessage() for r in caplog.records)


def test_an_undecodable_diff_still_has_a_repr_and_missing_fields_are_attribute_errors():
    corrupt = Diff.decoded_on_use(b'{"id":"0123456789abcdef","created":nope,"data":1}', 1.0)
    assert repr(corrupt) == "<Diff (undecodable)>"
    bare = Diff.__new__(Diff)
    assert getattr(bare, "data", "absent") == "absent"
