"""Many-to-many changes: one diff per object whose relation changed, on commit.

``.add()``, ``.remove()``, ``.set()`` and ``.clear()`` on a ManyToManyField of a
registered model, from either side, send ``m2m_changed``. Each change notes which
objects of the model that declares the field it touched (from the reverse side, the
ones in ``pk_set``; for a reverse ``clear()``, those linked before it, read in one
query). When the transaction commits, each noted object gets one diff whose data holds
the field's new list of related pks (``{"tags": [1, 3]}``), read for all of them in one
query: a ``set()`` (a removal and an addition) is one diff, and a change a savepoint
rolled back is none. With ``old_values=True`` the list before the transaction's first
change of it is kept too. A diff carries the ``diffs.context()`` of its object's last
change.

The notes of one transaction live on the database connection: a note made inside a
savepoint is an on-commit callback of that savepoint (its rollback drops it), and one
callback kept last, outside every savepoint (``diffs.transactions``), records them.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from typing import Any

from django.db import connections, models
from django.db.models.fields.related import lazy_related_operation
from django.db.models.signals import m2m_changed

from diffs import transactions
from diffs.payload import M2M_VALUES_ATTRIBUTE
from diffs.recording import record
from diffs.registry import options_of, registered_models

logger = logging.getLogger("diffs")

#: Connection attribute: the notes of the transaction open on it.
_NOTES = "_diffs_m2m_notes"
#: Instance attribute, from a ``remove()``'s or ``clear()``'s pre_ signal to its post_
#: one: the pks on the other side that lose their link to the instance.
_UNLINKED = "_diffs_m2m_unlinked"


class _Field:
    """A many-to-many field of a registered model, and its through table's columns."""

    def __init__(self, owner: type[models.Model], field: Any) -> None:
        self.owner = owner
        self.name: str = field.name
        self.through: type[models.Model] = field.remote_field.through
        self.source = self.through._meta.get_field(field.m2m_field_name()).attname
        self.target = self.through._meta.get_field(field.m2m_reverse_field_name()).attname
        self.symmetrical = bool(field.remote_field.symmetrical) and (
            field.remote_field.model in (owner, "self")
        )

    def linked(
        self, alias: str, pk: Any, reverse: bool, among: Iterable[Any] | None = None
    ) -> set[Any]:
        """The pks linked to ``pk`` (an object of the other side when ``reverse``),
        limited to ``among`` when given (one query)."""
        column, other = (self.target, self.source) if reverse else (self.source, self.target)
        rows = self.through._base_manager.using(alias).filter(**{column: pk})
        if among is not None:
            rows = rows.filter(**{f"{other}__in": list(among)})
        return set(rows.values_list(other, flat=True))

    def lists(self, alias: str, pks: Iterable[Any]) -> dict[Any, list[Any]]:
        """The related pks of each of ``pks`` (one query), in pk order."""
        found: dict[Any, list[Any]] = {pk: [] for pk in pks}
        rows = (
            self.through._base_manager.using(alias)
            .filter(**{f"{self.source}__in": list(found)})
            .order_by(self.source, self.target)
            .values_list(self.source, self.target)
        )
        for source, target in rows:
            found.setdefault(source, []).append(target)
        return found


def _fields_of(through: type[models.Model]) -> list[_Field]:
    """The recorded many-to-many fields whose through model is ``through`` (a field
    that ``fields``/``exclude`` leave out costs nothing)."""
    return [
        _Field(model, field)
        for model in registered_models()
        for field in model._meta.local_many_to_many
        if field.remote_field.through is through and options_of(model).tracks(field.name)
    ]


def connect(model: type[models.Model]) -> None:
    """Listen to the many-to-many changes of ``model``'s fields (called by
    ``@diffs.register``), once each through model is loaded. Only those through models:
    a receiver for all of them would turn off Django's fast path of every ``add()``."""
    for field in model._meta.local_many_to_many:
        through = field.remote_field.through
        if through is not None:  # None only on an abstract model, never registered
            lazy_related_operation(_listen, model, through)


def _listen(model: type[models.Model], through: type[models.Model]) -> None:
    m2m_changed.connect(
        on_m2m_changed, sender=through, dispatch_uid=f"diffs.m2m.{through._meta.label_lower}"
    )


class _Notes:
    """The many-to-many changes of one transaction, recorded at its commit."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        #: ``(owner label, field name)`` -> field, and the owners' changes:
        #: pk -> (the instance when the change came from its side, its context).
        self.fields: dict[tuple[str, str], _Field] = {}
        self.changed: dict[tuple[str, str], dict[Any, tuple[Any, contextvars.Context]]] = {}
        #: The list of each (field, pk) before the transaction's first change of it.
        self.old: dict[tuple[str, str], dict[Any, list[Any]]] = {}
        self.last: _RecordAtCommit | None = None

    def record(self) -> None:
        """One diff per noted object, with its field's list as the commit left it. The
        notes are let go of afterwards (they hold contexts, and so requests)."""
        try:
            for key, changed in self.changed.items():
                self._record_field(key, changed)
        finally:
            self.changed.clear()
            self.old.clear()

    def _record_field(self, key: tuple[str, str], changed: dict[Any, Any]) -> None:
        field = self.fields[key]
        lists = field.lists(self.alias, changed)
        # The rows that still exist (one query): an owner deleted since has no diff.
        existing = field.owner._base_manager.using(self.alias).in_bulk(list(changed))
        for pk, (instance, context) in changed.items():
            if pk not in existing:
                continue
            # The instance the change came from (its hooks see it), unless it no longer
            # stands for that row (a delete() sets its pk to None).
            owner = instance if instance is not None and instance.pk == pk else existing[pk]
            old = self.old.get(key, {}).get(pk, [])
            try:
                context.run(_record_one, owner, field.name, lists.get(pk, []), old, self.alias)
            except Exception:
                # One object's failure (a hook, a context callable) loses no other's.
                logger.exception(
                    "Could not record the %s change of %s pk=%s; the database change was saved.",
                    field.name,
                    key[0],
                    pk,
                )


def _record_one(owner: models.Model, name: str, related: list[Any], old: Any, using: str) -> None:
    owner.__dict__[M2M_VALUES_ATTRIBUTE] = {name: related}
    try:
        record(owner, {name: old}, using=using)
    finally:
        owner.__dict__.pop(M2M_VALUES_ATTRIBUTE, None)


class _Noted(transactions.NamedCallback):
    """Adds one change's objects to the transaction's notes when it commits (a
    savepoint's rollback drops it, and with it the change)."""

    __slots__ = ("changed", "key", "notes")

    def __init__(self, notes: _Notes, key: tuple[str, str], changed: dict[Any, Any]) -> None:
        self.notes, self.key, self.changed = notes, key, changed

    def __call__(self) -> None:
        self.notes.changed.setdefault(self.key, {}).update(self.changed)


class _RecordAtCommit(transactions.NamedCallback):
    """Kept last in the transaction's callbacks: records the notes; only the newest acts."""

    __slots__ = ("active", "notes")

    def __init__(self, notes: _Notes) -> None:
        self.notes = notes
        self.active = True

    def __call__(self) -> None:
        if self.active:
            self.notes.record()


def _notes_for(alias: str) -> _Notes:
    connection = connections[alias]
    if not connection.in_atomic_block:
        return _Notes(alias)  # recorded at once by the caller
    current: _Notes | None = getattr(connection, _NOTES, None)
    last = None if current is None else current.last
    if current is not None and last is not None and transactions.is_waiting(connection, last):
        return current
    # The transaction's first change: its recording waits for the commit from now.
    notes = _Notes(alias)
    notes.last = _RecordAtCommit(notes)
    transactions.on_commit_outside_savepoints(connection, notes.last, robust=True)
    setattr(connection, _NOTES, notes)
    return notes


def on_m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Note the objects whose many-to-many list this change touches."""
    if not registered_models():
        return
    for field in _fields_of(sender):
        _note(field, instance, action, reverse, pk_set, using or "default")


def _note(
    field: _Field,
    instance: models.Model,
    action: str,
    reverse: bool,
    pk_set: set[Any] | None,
    alias: str,
) -> None:
    if action in ("pre_add", "post_add", "pre_remove", "post_remove") and not pk_set:
        return  # nothing added or removed: no list changed
    removing, clearing = action.endswith("remove"), action.endswith("clear")
    if action == "pre_remove" or (action == "pre_clear" and (reverse or field.symmetrical)):
        # Who loses a link, read while the rows are there (one query): Django passes a
        # remove() the pks asked for, linked or not, and a clear() none at all.
        among = pk_set if removing else None
        instance.__dict__[_UNLINKED] = field.linked(alias, instance.pk, reverse, among)
    unlinked = set(instance.__dict__.get(_UNLINKED, ())) if removing or clearing else set()
    if action in ("post_remove", "post_clear"):
        instance.__dict__.pop(_UNLINKED, None)
    if removing:
        if not unlinked:
            return  # none of them was linked
        pk_set = unlinked
    changed: dict[Any, tuple[models.Model | None, contextvars.Context]]
    if reverse:
        touched = unlinked if clearing else pk_set
        changed = {pk: (None, contextvars.copy_context()) for pk in touched or ()}
    else:
        changed = {instance.pk: (instance, contextvars.copy_context())}
        if field.symmetrical:
            others = unlinked if clearing else pk_set or set()
            changed.update({pk: (None, contextvars.copy_context()) for pk in others})
    if not changed:
        return
    key = (field.owner._meta.label_lower, field.name)
    notes = _notes_for(alias)
    notes.fields[key] = field
    if action.startswith("pre_"):
        if options_of(field.owner).old_values:
            old = notes.old.setdefault(key, {})
            unseen = [pk for pk in changed if pk not in old]
            if unseen:
                old.update(field.lists(alias, unseen))
        return
    if not connections[alias].in_atomic_block:  # a signal sent by hand, outside add() & co
        notes.changed.setdefault(key, {}).update(changed)
        notes.record()
        return
    _keep_recording_last(notes, key, changed, alias)


def _keep_recording_last(
    notes: _Notes, key: tuple[str, str], changed: dict[Any, Any], alias: str
) -> None:
    connection = connections[alias]
    connection.on_commit(_Noted(notes, key, changed), robust=True)
    if notes.last is not None:
        notes.last.active = False  # the new one below runs after this change's note
    notes.last = _RecordAtCommit(notes)
    transactions.on_commit_outside_savepoints(connection, notes.last, robust=True)
