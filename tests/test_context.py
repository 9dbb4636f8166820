"""``diffs.context()``: JSON values attached to every diff recorded inside it."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

import diffs
from diffs.diff import Diff, build_member
from tests.support.stored import stored_members
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)


def create_question(**fields):
    """Question.objects.create() from another thread, closing that thread's database
    connection (left open, it keeps the test database from being dropped)."""
    try:
        return Question.objects.create(**fields)
    finally:
        connections.close_all()


def last_context(question):
    return question.diffs[-1].context


def test_a_diff_carries_the_context_it_was_made_in():
    with diffs.context(user=7, reason="import"):
        question = Question.objects.create(question_text="q")
    assert last_context(question) == {"user": 7, "reason": "import"}
    assert Question.diffs.since(None).diffs[-1].context == {"user": 7, "reason": "import"}


def test_outside_a_context_a_diff_has_an_empty_one_and_its_member_no_c_key(redis_client):
    question = Question.objects.create(question_text="q")
    assert last_context(question) == {}
    [member] = stored_members(redis_client, Question.diffs.get_key(question.pk))
    assert b'"c":' not in member


def test_nested_contexts_merge_and_the_inner_value_wins():
    with diffs.context(user=1, reason="outer"):
        with diffs.context(reason="inner", batch=3):
            inner = Question.objects.create(question_text="inner")
            assert diffs.get_context() == {"user": 1, "reason": "inner", "batch": 3}
        outer = Question.objects.create(question_text="outer")
    after = Question.objects.create(question_text="after")
    assert last_context(inner) == {"user": 1, "reason": "inner", "batch": 3}
    assert last_context(outer) == {"user": 1, "reason": "outer"}
    assert last_context(after) == {}
    assert diffs.get_context() == {}


def test_the_context_is_read_when_the_change_is_made_not_at_commit():
    with transaction.atomic():
        with diffs.context(user=5):
            question = Question.objects.create(question_text="q")
        with diffs.context(user=6):
            question.question_text = "r"
            question.save()
    assert [d.context for d in question.diffs] == [{"user": 5}, {"user": 6}]


def test_as_a_decorator_each_call_has_the_context():
    @diffs.context(reason="task")
    def make(text):
        return Question.objects.create(question_text=text)

    first, second = make("a"), make("b")
    assert last_context(first) == last_context(second) == {"reason": "task"}
    assert make.__name__ == "make"
    assert diffs.get_context() == {}


def test_as_a_decorator_of_an_async_function():
    @diffs.context(reason="async")
    async def make():
        await asyncio.sleep(0)
        return await sync_to_async(create_question)(question_text="a")

    question = asyncio.run(make())
    assert last_context(question) == {"reason": "async"}


def test_async_tasks_each_keep_their_own_context():
    async def make(n):
        with diffs.context(task=n):
            await asyncio.sleep(0.01)  # the other task runs meanwhile
            return await sync_to_async(create_question)(question_text=str(n))

    async def both():
        return await asyncio.gather(make(1), make(2))

    first, second = asyncio.run(both())
    assert last_context(first) == {"task": 1}
    assert last_context(second) == {"task": 2}


def test_a_thread_starts_without_the_context_unless_it_is_carried():
    seen = {}

    def make(name):
        seen[name] = create_question(question_text=name)

    with diffs.context(user=9):
        plain = threading.Thread(target=make, args=("plain",))
        carried = threading.Thread(target=contextvars.copy_context().run, args=(make, "carried"))
        for thread in (plain, carried):
            thread.start()
            thread.join(30)
    assert last_context(seen["plain"]) == {}
    assert last_context(seen["carried"]) == {"user": 9}


def test_a_callable_value_is_called_once_and_only_when_a_diff_needs_it():
    calls = []

    def user():
        calls.append(1)
        return 42

    with diffs.context(user=user):
        pass
    assert calls == []
    with diffs.context(user=user):
        first = Question.objects.create(question_text="a")
        second = Question.objects.create(question_text="b")
    assert calls == [1]
    assert last_context(first) == last_context(second) == {"user": 42}


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan") * 0 + 1j])
def test_a_value_json_cannot_hold_is_refused_naming_its_key(value):
    with pytest.raises(TypeError, match="user="):
        diffs.context(user=value)


def test_a_callable_that_fails_is_left_out_and_logged_and_the_save_goes_on(caplog):
    def boom():
        raise RuntimeError("no user today")

    with diffs.context(user=boom, note=object, reason="kept"):
        question = Question.objects.create(question_text="q")
        question.question_text = "r"
        question.save()  # the frame stays usable
    assert [d.context for d in question.diffs] == [{"reason": "kept"}] * 2
    assert "value user could not be computed" in caplog.text
    assert "value note could not be computed" in caplog.text


def test_entering_one_context_object_twice_nests_and_unwinds():
    reused = diffs.context(user=1)
    with reused:
        with reused, diffs.context(reason="inner"):
            assert diffs.get_context() == {"user": 1, "reason": "inner"}
        assert diffs.get_context() == {"user": 1}
    assert diffs.get_context() == {}


def test_threads_sharing_a_frame_resolve_a_callable_once():
    import threading as threads

    calls, barrier = [], threads.Barrier(8)

    def anonymous():
        calls.append(1)
        from diffs.context import OMIT

        return OMIT

    with diffs.context(user=anonymous):
        snapshot = contextvars.copy_context()

    def read():
        barrier.wait()
        snapshot.run(diffs.get_context)

    workers = [threads.Thread(target=read) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert calls == [1]
    assert snapshot.run(diffs.get_context) == {}


def test_keys_must_be_strings():
    with pytest.raises(TypeError, match="keys are strings"):
        diffs.context({1: "x"})


def test_values_are_json_as_the_data_is():
    import datetime as dt
    import decimal
    import uuid

    when = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)
    with diffs.context(at=when, amount=decimal.Decimal("1.5"), id=uuid.UUID(int=1)):
        question = Question.objects.create(question_text="q")
    assert last_context(question) == {
        "at": "2026-12-02T12:00:00Z",
        "amount": "1.5",
        "id": "00000000-0000-0000-0000-000000000001",
    }


def test_get_context_gives_a_copy():
    with diffs.context(user=1):
        values = diffs.get_context()
        values["user"] = 2
        assert diffs.get_context() == {"user": 1}


def test_a_member_whose_context_is_not_an_object_is_not_ours():
    member = build_member("0123456789abcdef", "1", True, False)[:-1] + ',"c":5}'
    with pytest.raises(ValueError, match="c=5"):
        Diff.from_member(member, 1.0)
    lazy = Diff.decoded_on_use(member, 1.0)
    with pytest.raises(ValueError, match="not valid django-diffs JSON"):
        _ = lazy.context


def test_a_context_survives_the_member_round_trip_lazily_and_eagerly():
    member = build_member("0123456789abcdef", '{"a":1}', False, False, context_json='{"user":3}')
    assert json.loads(member)["c"] == {"user": 3}
    assert Diff.from_member(member, 1.0).context == {"user": 3}
    assert Diff.decoded_on_use(member, 1.0).context == {"user": 3}
    assert Diff.decoded_on_use(member, 1.0).data == {"a": 1}


def test_a_diff_built_by_hand_keeps_its_context_in_its_member():
    diff = Diff(data={"a": 1}, created=False, id="0123456789abcdef", context={"user": 1})
    assert Diff.from_member(diff.to_member(), 1.0).context == {"user": 1}
    assert Diff.stored({"a": 1}).context == {}
    assert Diff.stored({"a": 1}).context is not Diff.stored({"a": 1}).context


def test_a_context_that_makes_the_member_too_large_refuses_the_diff(caplog):
    from tests.conftest import diffs_settings

    with diffs_settings(max_diff_bytes=2000), diffs.context(note="x" * 5000):
        question = Question.objects.create(question_text="q")
    assert question.diffs == []  # the creation's birth is recorded, not a diff
    assert "Refused the diff of testapp.question" in caplog.text
    assert "max_diff_bytes" in caplog.text


def test_the_celery_pattern_carries_the_context_into_a_task():
    """The README's pattern: the caller passes diffs.get_context() with the task's
    arguments, the task enters it. Here the task runs eagerly, in a fresh context and
    with its arguments through JSON, as a worker would get them."""
    from celery import Celery

    app = Celery("diffs-tests", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True

    @app.task
    def rename(pk, text, diffs_context=None):
        with diffs.context(diffs_context or {}):
            question = Question.objects.get(pk=pk)
            question.question_text = text
            question.save()

    question = Question.objects.create(question_text="q")
    with diffs.context(user=4, reason="bulk rename"):
        kwargs = {"pk": question.pk, "text": "r", "diffs_context": diffs.get_context()}
    as_sent = json.loads(json.dumps(kwargs))
    contextvars.Context().run(rename.apply_async, kwargs=as_sent)
    contextvars.Context().run(rename.apply_async, kwargs={"pk": question.pk, "text": "s"})
    assert [d.context for d in question.diffs] == [{}, {"user": 4, "reason": "bulk rename"}, {}]
