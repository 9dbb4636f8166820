"""Django's private list of on-commit callbacks has the shape diffs.transactions relies on,
and no other module of diffs touches it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

import diffs
from diffs import transactions

pytestmark = pytest.mark.django_db(transaction=True)

SHAPE = (
    "Django's connection.run_on_commit no longer has the shape diffs/transactions.py "
    "relies on: a list of (set of savepoint ids, callable, robust bool) tuples, the "
    f"callable at index {transactions.CALLBACK_INDEX}. Adapt diffs/transactions.py "
    "(and its docstring) to this Django. Entry seen: {entry!r}"
)


class Boom(Exception):
    pass


class Callback:
    """A callable that notes each call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def newest_entry() -> Any:
    entries = connection.run_on_commit
    assert isinstance(entries, list), SHAPE.format(entry=entries)
    assert entries, SHAPE.format(entry=entries)
    return entries[-1]


def assert_entry_shape(entry: object, func: object) -> None:
    message = SHAPE.format(entry=entry)
    assert isinstance(entry, tuple), message
    assert len(entry) == 3, message
    savepoints, callback, robust = entry
    assert isinstance(savepoints, set), message
    assert entry[transactions.CALLBACK_INDEX] is func, message
    assert callback is func, message
    assert isinstance(robust, bool), message


def test_an_on_commit_entry_is_a_tuple_of_savepoints_callable_and_robust():
    func = Callback()
    with transaction.atomic():
        transaction.on_commit(func, robust=True)
        entry = newest_entry()
        assert_entry_shape(entry, func)
        assert entry == (set(), func, True), SHAPE.format(entry=entry)


def test_an_entry_made_inside_a_savepoint_names_it():
    func = Callback()
    with transaction.atomic(), transaction.atomic():
        transaction.on_commit(func)
        entry = newest_entry()
        assert_entry_shape(entry, func)
        assert len(entry[0]) == 1, SHAPE.format(entry=entry)
        assert entry[2] is False, SHAPE.format(entry=entry)


def test_the_module_sees_a_callback_registered_with_on_commit():
    first, second = Callback(), Callback()
    with transaction.atomic():
        transaction.on_commit(first)
        transaction.on_commit(second)
        assert list(transactions.callbacks(connection)) == [first, second]
        assert transactions.is_waiting(connection, first)
        assert transactions.is_waiting(connection, second)
        assert not transactions.is_waiting(connection, Callback())
    assert (first.calls, second.calls) == (1, 1)


def test_after_the_commit_nothing_waits():
    func = Callback()
    with transaction.atomic():
        transaction.on_commit(func)
    assert func.calls == 1
    assert not transactions.is_waiting(connection, func)
    assert list(transactions.callbacks(connection)) == []


def test_a_savepoint_rollback_drops_its_callbacks_and_changes_the_version():
    kept, dropped = Callback(), Callback()
    with transaction.atomic():
        transaction.on_commit(kept)
        before = transactions.hooks_version(connection)
        with pytest.raises(Boom), transaction.atomic():
            transaction.on_commit(dropped)
            raise Boom
        assert transactions.is_waiting(connection, kept)
        assert not transactions.is_waiting(connection, dropped)
        assert list(transactions.callbacks(connection)) == [kept]
        assert transactions.hooks_version(connection) != before
    assert (kept.calls, dropped.calls) == (1, 0)


def test_the_version_stays_while_no_savepoint_rolls_back():
    with transaction.atomic():
        before = transactions.hooks_version(connection)
        with transaction.atomic():
            transaction.on_commit(Callback())
        transaction.on_commit(Callback())
        assert transactions.hooks_version(connection) == before


def test_a_callback_outside_savepoints_survives_their_rollback_and_runs_at_commit():
    inside, outside = Callback(), Callback()
    with transaction.atomic():
        with pytest.raises(Boom), transaction.atomic():
            transaction.on_commit(inside)
            transactions.on_commit_outside_savepoints(connection, outside, robust=False)
            assert_entry_shape(newest_entry(), outside)
            raise Boom
        assert transactions.is_waiting(connection, outside)
        assert list(transactions.callbacks(connection)) == [outside]
    assert (inside.calls, outside.calls) == (0, 1)


def test_a_callback_outside_savepoints_runs_in_its_place_in_the_order():
    ran: list[str] = []
    with transaction.atomic():
        transaction.on_commit(lambda: ran.append("before"))
        transactions.on_commit_outside_savepoints(
            connection, lambda: ran.append("outside"), robust=False
        )
        transaction.on_commit(lambda: ran.append("after"))
    assert ran == ["before", "outside", "after"]


def test_a_robust_callback_outside_savepoints_that_raises_is_logged_and_the_rest_run(caplog):
    def fails() -> None:
        raise Boom

    after = Callback()
    with caplog.at_level(logging.ERROR, logger="django.db.backends.base"), transaction.atomic():
        transactions.on_commit_outside_savepoints(connection, fails, robust=True)
        transaction.on_commit(after)
    assert after.calls == 1
    assert any(record.exc_info and record.exc_info[0] is Boom for record in caplog.records)


def test_a_callback_outside_savepoints_that_is_not_robust_raises_at_commit():
    after = Callback()

    def fails() -> None:
        raise Boom

    with pytest.raises(Boom), transaction.atomic():
        transactions.on_commit_outside_savepoints(connection, fails, robust=False)
        transaction.on_commit(after)
    assert after.calls == 0


def test_only_diffs_transactions_mentions_run_on_commit():
    package = Path(diffs.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 20  # the scan found the package
    mentioning = [
        path.relative_to(package).as_posix()
        for path in sources
        if "run_on_commit" in path.read_text(encoding="utf-8")
    ]
    assert mentioning == ["transactions.py"], (
        "Django's private connection.run_on_commit is touched only in diffs/transactions.py; "
        f"move these uses behind its functions: {mentioning}"
    )
