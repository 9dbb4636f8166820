"""The one module that touches Django's private ``connection.run_on_commit``.

Why: two things diffs needs are not in Django's public ``on_commit`` API.

* Whether a callback registered earlier is still waiting, i.e. the savepoints around it
  have not rolled back (Django drops a rolled-back savepoint's callbacks from the
  list). ``diffs.tracking`` asks this to undo a snapshot; ``diffs.delivery.on_commit``
  to tell whether a transaction's bulk-write state is still current.
* A callback that no savepoint's rollback removes: the write that
  ``diffs.delivery.on_commit`` keeps last in the transaction. ``on_commit`` ties every
  callback to the savepoints open when it is registered, so this module appends that
  entry itself.

What it relies on (Django 5.2 to 6.x, ``django/db/backends/base/base.py``):
``run_on_commit`` is a list, oldest first, of ``(savepoint ids, callable, robust)``
tuples: a ``set`` of savepoint ids, the callable, and a ``bool``. A savepoint's
rollback replaces the list by a new one without the entries whose set holds its id;
an entry with an empty set survives every savepoint rollback and runs at the commit.
``tests/test_on_commit_hooks.py`` pins this shape: if a Django release changes it,
that test fails, naming this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

#: Where the callable sits in an entry of ``run_on_commit``.
CALLBACK_INDEX = 1


class NamedCallback:
    """An on-commit callback object with the ``__qualname__`` of its class.

    Django logs a robust on-commit callback that raised as ``func.__qualname__``, which
    an instance does not have: the log line itself would then raise AttributeError
    after the commit, and Django would run none of the callbacks after it.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name == "__qualname__":
            return type(self).__qualname__
        raise AttributeError(name)


class CommitToken:
    """An on-commit callback whose ``ran`` turns True if the transaction commits.

    Capture keeps one per change made inside a transaction (``diffs.tracking``), to undo
    a snapshot whose change rolled back; delivery's own callbacks are tokens too.
    """

    __slots__ = ("ran",)

    def __init__(self) -> None:
        self.ran = False

    def __call__(self) -> None:
        self.ran = True


def callbacks(connection: BaseDatabaseWrapper) -> Iterator[Any]:
    """The callables waiting for the commit of the transaction open on ``connection``,
    in the order they will run."""
    for hook in connection.run_on_commit:
        yield hook[CALLBACK_INDEX]


def is_waiting(connection: BaseDatabaseWrapper, callback: object) -> bool:
    """True while ``callback`` (the very object) waits for the commit on ``connection``:
    neither the transaction nor a savepoint around its registration rolled back, and
    the commit has not run it yet."""
    # Newest first: the callbacks diffs asks about are usually near the end.
    return any(hook[CALLBACK_INDEX] is callback for hook in reversed(connection.run_on_commit))


def hooks_version(connection: BaseDatabaseWrapper) -> int:
    """Changes when a savepoint rollback has dropped callbacks on ``connection``.

    It is the ``id()`` of the list, which Django builds anew on such a rollback; the
    list itself is not handed out, so that nothing keeps discarded callbacks alive.
    """
    return id(connection.run_on_commit)


def on_commit_outside_savepoints(
    connection: BaseDatabaseWrapper, callback: Callable[[], object], *, robust: bool
) -> None:
    """Run ``callback`` when the transaction open on ``connection`` commits, even if
    the savepoints open now roll back (``on_commit`` would drop it with them).

    With ``robust``, an exception it raises is logged by Django and the callbacks
    after it still run. Call it inside an atomic block only.
    """
    # django-stubs types the entries as 2-tuples; Django's are the 3-tuples above.
    hooks: list[Any] = connection.run_on_commit
    hooks.append((set(), callback, robust))
