"""Property: what reaches Redis is exactly the committed changes, in commit order.

Hypothesis generates programs of saves (whole, or with ``update_fields``), deletes,
queryset ``update()`` (followed by ``refresh_from_db()``), ``bulk_update()``,
``refresh_from_db()`` and creations, inside ``atomic()`` blocks nested at random and rolled back at random
points. The program runs against the database and, side by side, against an oracle
that simulates the database rows and the transaction stack. Afterwards every object's
sorted set must hold exactly the diffs the oracle committed, in the same order.

The oracle computes each save's diff from the row as the database holds it, not from
the instance's snapshot: the snapshot must agree with the database, rollbacks
included, or the test fails. Instances are kept across blocks, as an application
keeps them, so a save after a rolled-back save, delete or creation is exercised.

Every object gets an explicit primary key from a counter so that a key freed by a
rolled-back INSERT (SQLite reuses them) never names two objects.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffs import delivery
from tests.support.keynames import index_key
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ("question_text", "pub_date", "votes")
SLOTS = 3

slot = st.integers(0, SLOTS - 1)
text = st.sampled_from(["a", "b", "c"])
votes = st.integers(0, 2)  # few values, so unchanged values and repeats are common

operation = st.one_of(
    st.tuples(st.just("create"), slot, text),
    st.tuples(
        st.just("save"),
        slot,
        text,
        votes,
        st.sampled_from([None, ("votes",), ("question_text",)]),
    ),
    st.tuples(st.just("delete"), slot),
    st.tuples(st.just("refresh"), slot),
    st.tuples(st.just("update"), slot, votes),
    st.tuples(
        st.just("bulk_update"), st.lists(slot, min_size=1, max_size=SLOTS, unique=True), votes
    ),
)
statement = st.recursive(
    operation,
    # ("atomic", body, rolls back?)
    lambda inner: st.tuples(st.just("atomic"), st.lists(inner, max_size=5), st.booleans()),
    max_leaves=12,
)
program = st.lists(statement, min_size=1, max_size=8)


class Rollback(Exception):
    """Raised inside a block to roll it back."""


#: A diff as compared: (created, deleted, fields).
Expected = tuple[bool, bool, dict[str, Any]]


@dataclass
class Oracle:
    """The database rows and the open transactions, simulated."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: One entry per open block: (rows when it began, diffs it recorded so far).
    frames: list[tuple[dict[int, dict[str, Any]], list[tuple[int, Expected]]]] = field(
        default_factory=list
    )
    committed: dict[int, list[Expected]] = field(default_factory=dict)

    def record(self, pk: int, diff: Expected) -> None:
        if self.frames:
            self.frames[-1][1].append((pk, diff))
        else:
            self.committed.setdefault(pk, []).append(diff)

    def begin(self) -> None:
        self.frames.append(({pk: dict(row) for pk, row in self.rows.items()}, []))

    def commit(self) -> None:
        _, recorded = self.frames.pop()
        for pk, diff in recorded:
            self.record(pk, diff)

    def rollback(self) -> None:
        self.rows, _ = self.frames.pop()


class Runner:
    """Runs a program on the database and the oracle together."""

    def __init__(self) -> None:
        self.oracle = Oracle()
        self.instances: list[Question | None] = [None] * SLOTS
        #: The pk each slot's object had, even after delete() set it to None.
        self.pks: list[int | None] = [None] * SLOTS
        self.ids = itertools.count(1)

    def run(self, statements: list[Any]) -> None:
        for item in statements:
            if item[0] == "atomic":
                self.block(item[1], rolls_back=item[2])
            else:
                getattr(self, item[0])(*item[1:])

    def block(self, body: list[Any], *, rolls_back: bool) -> None:
        self.oracle.begin()
        try:
            with transaction.atomic():
                self.run(body)
                if rolls_back:
                    raise Rollback
        except Rollback:
            self.oracle.rollback()
        else:
            self.oracle.commit()
        if not self.oracle.frames:
            self.reload_deleted_in_rolled_back_block()

    def reload_deleted_in_rolled_back_block(self) -> None:
        # delete() sets the instance's pk to None; once the delete is rolled back the
        # row exists again and an application would load it again. Only outside any
        # block: an instance loaded inside a block that then rolls back is stale (it
        # holds values that were never committed), which the README's "Guarantees"
        # leaves out, like every stale instance.
        for index, instance in enumerate(self.instances):
            pk = self.pks[index]
            if instance is not None and instance.pk is None and pk in self.oracle.rows:
                self.instances[index] = Question.objects.get(pk=pk)

    def live(self, index: int) -> Question | None:
        instance = self.instances[index]
        return instance if instance is not None and instance.pk is not None else None

    # Operations ---------------------------------------------------------------------

    def create(self, index: int, question_text: str) -> None:
        pk = next(self.ids)
        instance = Question(id=pk, question_text=question_text)
        instance.save()
        self.instances[index], self.pks[index] = instance, pk
        row = {"question_text": question_text, "pub_date": None, "votes": 0}
        self.oracle.rows[pk] = row
        self.oracle.record(pk, (True, False, dict(row)))

    def save(
        self, index: int, question_text: str, new_votes: int, only: tuple[str, ...] | None
    ) -> None:
        instance = self.live(index)
        if instance is None:
            return
        instance.question_text, instance.votes = question_text, new_votes
        values = {"question_text": question_text, "pub_date": None, "votes": new_votes}
        row = self.oracle.rows.get(instance.pk)
        if row is None:
            # Its INSERT was rolled back: a whole save inserts it again.
            instance.save()
            self.oracle.rows[instance.pk] = values
            self.oracle.record(instance.pk, (True, False, dict(values)))
            return
        instance.save(update_fields=only)
        written = only or FIELDS
        changed = {name: values[name] for name in written if values[name] != row[name]}
        row.update({name: values[name] for name in written})
        if changed:
            self.oracle.record(instance.pk, (False, False, changed))

    def delete(self, index: int) -> None:
        instance = self.live(index)
        if instance is None:
            return
        pk = instance.pk
        instance.delete()
        row = self.oracle.rows.pop(pk, None)
        if row is not None:  # deleting a row that does not exist changes nothing
            self.oracle.record(pk, (False, True, row))

    def refresh(self, index: int) -> None:
        instance = self.live(index)
        if instance is not None and instance.pk in self.oracle.rows:
            instance.refresh_from_db()

    def update(self, index: int, new_votes: int) -> None:
        instance = self.live(index)
        if instance is None:
            return
        Question.objects.filter(pk=instance.pk).update(votes=new_votes)
        row = self.oracle.rows.get(instance.pk)
        if row is not None:
            # update() records the fields it wrote, changed or not: the UPDATE ran.
            row["votes"] = new_votes
            self.oracle.record(instance.pk, (False, False, {"votes": new_votes}))
            instance.refresh_from_db()

    def bulk_update(self, indexes: list[int], new_votes: int) -> None:
        instances = [i for i in (self.live(index) for index in indexes) if i is not None]
        if not instances:
            return
        for instance in instances:
            instance.votes = new_votes
        Question.objects.bulk_update(instances, ["votes"])
        for instance in instances:
            row = self.oracle.rows.get(instance.pk)
            if row is not None:
                row["votes"] = new_votes
                self.oracle.record(instance.pk, (False, False, {"votes": new_votes}))


def stored(pk: int) -> list[Expected]:
    return [
        (diff.created, diff.deleted, diff.data[0]["fields"])
        for diff in Question.diffs.get_by_object_id(pk)
    ]


@settings(
    max_examples=int(os.environ.get("DIFFS_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    derandomize="DIFFS_HYPOTHESIS_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(statements=program)
def test_redis_holds_exactly_the_committed_changes(statements, redis_client):
    Question.objects.all()._raw_delete(Question.objects.db)
    redis_client.flushdb()
    delivery.clear()

    runner = Runner()
    runner.run(statements)

    assert delivery.waiting() == 0
    for pk in range(1, next(runner.ids)):
        assert stored(pk) == runner.oracle.committed.get(pk, []), f"object {pk}"
    # And nothing was written for an object the program never created.
    assert Question.diffs.get_by_object_id(0) == []


def test_oracle_catches_a_missing_diff(redis_client):
    """The comparison can fail: a diff removed from Redis is noticed."""
    runner = Runner()
    runner.run([("create", 0, "a"), ("atomic", [("save", 0, "b", 1, None)], False)])
    assert stored(1) == runner.oracle.committed[1]
    index = index_key("testapp.question", 1)
    records = redis_client.get(index)
    assert records
    redis_client.set(index, records[:-16], keepttl=True)  # its newest diff, gone

    assert stored(1) != runner.oracle.committed[1]
