"""A write whose reply is lost after Redis ran it is stored once.

redis-py sends a command again when the connection fails while its reply is read (the
client's ``retry``; by default django-diffs' own: once, at once, on a connection error),
and so does django-diffs' queue after any failed write. Redis may have run the first
send: its diffs are then in the object's index and the model's log (or, in the set lane,
the feed), and the second send must find them instead of storing them again.
"""

from __future__ import annotations

import pytest
import redis
from django.db import transaction

import diffs
from tests.support.stored import stored
from tests.testapp.models import Choice, Question

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lose_replies(monkeypatch):
    """``lose(n)``: the replies of the next ``n`` EVALSHA calls are lost after Redis ran
    them, and the same command is sent again at once on the connection, as redis-py's
    retry does after a connection error while reading (whatever the client's own retry
    setting: test mode's client has none)."""
    state = {"left": 0, "last": (), "lost": 0}
    pool = getattr(diffs.get_connection(), "connection_pool", None)
    # The class the client's connections are made of (a cluster's nodes: redis-py's).
    connection_class = pool.connection_class if pool is not None else redis.connection.Connection
    send, read = connection_class.send_command, connection_class.read_response

    def send_command(self, *args, **kwargs):
        # Noted once sent: sending may connect first, which sends commands of its own.
        sent = send(self, *args, **kwargs)
        state["last"] = args if str(args[0]).upper().endswith("EVALSHA") else ()
        return sent

    def read_response(self, *args, **kwargs):
        if state["last"] and state["left"] > 0:
            again, state["last"] = state["last"], ()
            state["left"] -= 1
            state["lost"] += 1
            read(self, *args, **kwargs)  # Redis ran it; the reply goes nowhere
            send(self, *again)  # sent again, the same arguments
        return read(self, *args, **kwargs)

    monkeypatch.setattr(connection_class, "send_command", send_command)
    monkeypatch.setattr(connection_class, "read_response", read_response)

    def lose(count: int) -> dict[str, object]:
        state["left"] = count
        return state

    return lose


def texts(question: Question) -> list[str]:
    """The question texts of its history (its choices' diffs, in it too, left out)."""
    fields = [d.data[0]["fields"] for d in question.diffs]
    return [f["question_text"] for f in fields if "question_text" in f]


def test_a_save_whose_write_reply_was_lost_is_stored_once(lose_replies):
    question = Question.objects.create(question_text="a")
    state = lose_replies(1)
    question.question_text = "b"
    question.save()
    assert state["lost"] == 1
    assert texts(question) == ["a", "b"]
    assert len(Question.diffs.since().diffs) == 2


def test_a_transaction_whose_write_reply_was_lost_is_stored_once(lose_replies, redis_client):
    question = Question.objects.create(question_text="q")
    state = lose_replies(1)
    with transaction.atomic():
        for text in "xyz":
            question.question_text = text
            question.save()
        Choice.objects.create(question=question, choice_text="c")
    assert state["lost"] == 1
    assert texts(question) == ["q", "x", "y", "z"]
    assert len(stored(redis_client, Question.diffs.get_key(question.pk))) == 5  # and the choice
    ids = [d.id for d in Question.diffs.since().diffs]
    assert len(ids) == len(set(ids)) == 5


def test_twice_lost_replies_still_store_each_diff_once(lose_replies):
    question = Question.objects.create(question_text="a")
    state = lose_replies(2)
    question.question_text = "b"
    question.save()
    question.question_text = "c"
    question.save()
    assert state["lost"] == 2
    assert texts(question) == ["a", "b", "c"]


def test_a_birth_without_a_diff_sent_again_hides_nothing_it_wrote(redis_client):
    """A creation whose diff was skipped records only the object's birth; sent again
    with a diff of the same object behind it, the birth must not move above that diff."""
    from diffs.delivery import OutgoingDiff, store
    from diffs.delivery.record import BIRTH_ONLY
    from diffs.diff import new_diff_id
    from diffs.layout import current_layout
    from tests.test_lanes import outgoing_diff

    layout = current_layout()
    birth = OutgoingDiff(
        key=layout.object_key(Question, 7),
        member=BIRTH_ONLY,
        feed_key=layout.feed_key(Question),
        feed_member=new_diff_id(),
        score=None,
        label="testapp.question",
        object_pk="7",
    )
    call = [birth, outgoing_diff(7)]
    store.write_many(redis_client, call)
    assert [d.data["n"] for d in Question.diffs.get_by_object_id(7)] == [7]
    store.write_many(redis_client, call)
    assert [d.data["n"] for d in Question.diffs.get_by_object_id(7)] == [7]
    assert [d.data["n"] for d in Question.diffs.object_since(7, None).diffs] == [7]


def test_the_same_write_sent_twice_is_stored_once(redis_client):
    """What a client's blind re-send amounts to: the same call, the same arguments."""
    from diffs.delivery import OutgoingDiff, store
    from diffs.diff import Diff, new_diff_id
    from diffs.keys import feed_member
    from diffs.layout import current_layout

    question = Question.objects.create(question_text="a")
    layout = current_layout()

    def outgoing(text: str) -> OutgoingDiff:
        diff_id = new_diff_id()
        data = [
            {"model": "testapp.question", "pk": question.pk, "fields": {"question_text": text}}
        ]
        return OutgoingDiff(
            key=layout.object_key(Question, question.pk),
            member=Diff(data=data, created=False, id=diff_id).to_member(),
            feed_key=layout.feed_key(Question),
            feed_member=feed_member(diff_id, str(question.pk)),
            score=None,
            label="testapp.question",
            object_pk=str(question.pk),
        )

    one = [outgoing("b")]
    several = [outgoing("c"), outgoing("d"), outgoing("e")]
    for call in (one, several):
        first = store.write_many(redis_client, call)
        assert store.write_many(redis_client, call) == first
    assert texts(question) == ["a", "b", "c", "d", "e"]
    ids = [d.id for d in Question.diffs.since().diffs]
    assert len(ids) == len(set(ids)) == 5
