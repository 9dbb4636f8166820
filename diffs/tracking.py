"""Change tracking: which fields changed, and their old values.

A registered model gets django-dirtyfields' API (``get_dirty_fields()``,
``is_dirty()``, ``save_dirty_fields()``) without touching its bases: instead of
inserting ``DirtyFieldsMixin`` into ``__bases__`` (which rewrote the MRO and put
``dirtyfields`` into every migration, as 0.1.16 did), the mixin's plain methods are
set on the class. The snapshot they compare with is ours (``diffs.snapshot``): taken
cheaply when an instance is loaded and after each save, and ``refresh_from_db`` is
wrapped so reloaded (e.g. deferred) fields join it. Changes are found by comparing
the instance with it directly, without dirtyfields' per-field deep copies.

Models that already subclass ``DirtyFieldsMixin`` are used as they are, and a model
with its own ``get_dirty_fields()`` is called with no arguments, as 0.1.16 did.

The snapshot means "what the database holds", so a snapshot taken inside a
transaction is provisional: :func:`remember` keeps the one it replaced, and
:func:`settle` puts it back if that transaction, or a savepoint around the save, rolled
back. Without this, an instance saved in a rolled-back block and saved again would
look unchanged, and the change the second save commits would get no diff.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dirtyfields import DirtyFieldsMixin
from dirtyfields.dirtyfields import reset_state
from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models, transaction
from django.db.models.signals import post_save

from diffs import snapshot, transactions
from diffs.expressions import expression_fields, holds_expression

#: What ``DirtyFieldsMixin`` defines that a grafted model receives.
GRAFTED_ATTRIBUTES = (
    "compare_function",
    "normalise_function",
    "ENABLE_M2M_CHECK",
    "FIELDS_TO_CHECK",
    "_as_dict",
    "_as_dict_m2m",
    "get_dirty_fields",
    "is_dirty",
    "save_dirty_fields",
)
_GRAFT_MARKER = "_diffs_grafted_refresh"


def uses_dirtyfields_api(model: type[models.Model]) -> bool:
    """True when the model's ``get_dirty_fields`` is django-dirtyfields' own."""
    method = getattr(model, "get_dirty_fields", None)
    return method is DirtyFieldsMixin.get_dirty_fields


def uses_our_snapshot(model: type[models.Model]) -> bool:
    """True for a model whose dirtyfields API was grafted: its snapshot is ours."""
    return uses_dirtyfields_api(model) and not issubclass(model, DirtyFieldsMixin)


def install(model: type[models.Model]) -> None:
    """Give ``model`` dirty-field tracking if it has none of its own (idempotent)."""
    if issubclass(model, DirtyFieldsMixin):
        return  # the mixin's __init__ snapshots and its receiver resets
    if hasattr(model, "get_dirty_fields") and not uses_dirtyfields_api(model):
        return  # the user's own implementation
    for name in GRAFTED_ATTRIBUTES:
        if name not in vars(model) and not hasattr(model, name):
            setattr(model, name, vars(DirtyFieldsMixin)[name])
    if not getattr(model.refresh_from_db, _GRAFT_MARKER, False):
        model.refresh_from_db = _wrap_refresh(model.refresh_from_db)  # type: ignore[method-assign]
    snapshot.install(model)
    # A subclass of a grafted model inherits the methods but still needs a receiver of
    # its own: model signals are sent with the concrete class as sender.
    uid = model._meta.label_lower
    post_save.connect(_resnapshot, sender=model, dispatch_uid=f"diffs.resnapshot.{uid}")


def uninstall_receivers(model: type[models.Model]) -> None:
    """Disconnect the snapshot receivers (the grafted methods stay harmlessly)."""
    uid = model._meta.label_lower
    post_save.disconnect(sender=model, dispatch_uid=f"diffs.resnapshot.{uid}")


def _wrap_refresh(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def refresh_from_db(
        self: models.Model, using: Any = None, fields: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        alias = using or self._state.db or "default"
        settle(self)
        previous = provisional_copy(self, alias)
        original(self, using, fields, *args, **kwargs)
        snapshot.retake(self, fields)
        if previous is not None:
            remember(self, previous, alias, None)

    setattr(refresh_from_db, _GRAFT_MARKER, True)
    return refresh_from_db


def _resnapshot(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    snapshot.retake(instance, kwargs.get("update_fields"))


def retake(instance: models.Model, fields: Iterable[str] | None = None) -> None:
    """Make the snapshot match the instance (all fields, or ``fields``), as a save does."""
    if uses_our_snapshot(type(instance)):
        snapshot.retake(instance, fields)
    elif hasattr(instance, snapshot.SNAPSHOT) and uses_dirtyfields_api(type(instance)):
        reset_state(sender=type(instance), instance=instance, update_fields=fields)


#: Instance attribute: ``[(token, snapshot it replaced, alias, inserted), ...]``, newest
#: last; ``inserted`` is True when the change was the row's INSERT.
UNDO_ATTRIBUTE = "_diffs_snapshot_undo"
#: Instance attribute, True once the INSERT that created the instance's row rolled back:
#: the row may not exist, whatever the instance's pk says.
UNINSERTED_ATTRIBUTE = "_diffs_insert_rolled_back"


#: Stands for "the instance had no snapshot" in an undo entry.
NO_SNAPSHOT: dict[str, Any] = {}


def provisional_copy(instance: models.Model, using: str) -> dict[str, Any] | None:
    """A copy of the snapshot to restore later, when a transaction is open on ``using``
    (``NO_SNAPSHOT`` when there is none: restoring it removes the snapshot)."""
    if not connections[using].in_atomic_block:
        return None
    state = getattr(instance, snapshot.SNAPSHOT, None)
    return NO_SNAPSHOT if state is None else dict(state)


def remember(
    instance: models.Model,
    previous: dict[str, Any],
    using: str,
    token: Any,
    *,
    inserted: bool = False,
) -> None:
    """Note that the snapshot replaced ``previous`` in a transaction on ``using``.

    ``token`` is an on-commit callback with a ``ran`` flag already registered for the
    change (the diff's own), or None to register one. ``inserted``: the change was the
    INSERT of the instance's row.
    """
    if token is None:
        token = transactions.CommitToken()
        transaction.on_commit(token, using=using, robust=True)
    instance.__dict__.setdefault(UNDO_ATTRIBUTE, []).append((token, previous, using, inserted))


def insert_rolled_back(instance: models.Model) -> bool:
    """True when the INSERT of the instance's row rolled back and no save followed."""
    settle(instance)
    return bool(instance.__dict__.get(UNINSERTED_ATTRIBUTE, False))


def mark_saved(instance: models.Model) -> None:
    """The instance's row was just written (until a rollback says otherwise)."""
    instance.__dict__.pop(UNINSERTED_ATTRIBUTE, None)


def settle(instance: models.Model) -> None:
    """Put back the snapshots that rolled-back transactions or savepoints replaced."""
    undo = instance.__dict__.get(UNDO_ATTRIBUTE)
    while undo:
        token, previous, using, inserted = undo[-1]
        if token.ran:
            undo.clear()  # committed: every older entry is superseded
            return
        if _still_pending(token, using):
            return
        if previous is NO_SNAPSHOT:
            instance.__dict__.pop(snapshot.SNAPSHOT, None)
            instance.__dict__.pop(snapshot.LOADED, None)
        else:
            instance.__dict__[snapshot.SNAPSHOT] = previous
        if inserted:
            instance.__dict__[UNINSERTED_ATTRIBUTE] = True
        undo.pop()


def _still_pending(token: Any, using: str) -> bool:
    connection = connections[using]
    if not connection.in_atomic_block:
        return False  # the transaction ended without running the token: rolled back
    # A rolled-back savepoint's callbacks no longer wait for the commit.
    return transactions.is_waiting(connection, token)


def changed_fields(
    instance: models.Model, update_fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """Return ``{field name: old value}`` for the changes a save is about to write.

    For a new object every concrete field is "changed" and maps to its current value
    (django-dirtyfields' convention). ForeignKeys count (their value is the id), and
    with ``update_fields`` only the fields being saved are kept.
    """
    dirty: dict[str, Any]
    if uses_our_snapshot(type(instance)):
        if instance._state.adding or not snapshot.has_snapshot(instance):
            # Every field counts: a new row, or no record of what the row holds.
            dirty = snapshot.current(instance)
        else:
            dirty = snapshot.changes(instance)
    elif uses_dirtyfields_api(type(instance)):
        if not instance._state.adding and not hasattr(instance, "_original_state"):
            # Loaded before the model was registered: no snapshot, so every field is
            # reported rather than silently none.
            dirty = dict(instance._as_dict(check_relationship=True))  # type: ignore[attr-defined]
        else:
            dirty = dict(instance.get_dirty_fields(check_relationship=True))  # type: ignore[attr-defined]
    else:
        dirty = dict(instance.get_dirty_fields())  # type: ignore[attr-defined]
    for field in expression_fields(instance):
        # An F() expression always writes, and dirtyfields does not see it.
        dirty.setdefault(field.name, getattr(instance, "_original_state", {}).get(field.name))
    if update_fields is None:
        return dirty
    return _only_saved(type(instance), dirty, frozenset(update_fields))


def _only_saved(
    model: type[models.Model], dirty: dict[str, Any], saved: frozenset[str]
) -> dict[str, Any]:
    kept = {}
    for name, old_value in dirty.items():
        attname = getattr(_field_or_none(model, name), "attname", name)
        if name in saved or attname in saved:
            kept[name] = old_value
    return kept


def _field_or_none(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:  # a user-defined get_dirty_fields may report other keys
        return None


def current_state(instance: models.Model) -> dict[str, Any]:
    """Return ``{field name: value}`` for every loaded field (used for deletions).

    Deferred fields are left out (loading them would query a row that is gone), and so
    are fields holding a query expression, whose value is unknown.
    """
    deferred = instance.get_deferred_fields()
    return {
        field.name: getattr(instance, field.attname)
        for field in instance._meta.concrete_fields
        if field.attname not in deferred and not holds_expression(instance, field)
    }


def database_assigned_pk(instance: models.Model) -> tuple[str, ...]:
    """Names of the instance's primary-key fields that hold None before an INSERT.

    The database assigns them (an ``AutoField``, or a multi-table child's link to the
    parent row inserted with it), so they are no field the object was created with: the
    ``dirty_fields`` of a creation leaves them out, as 0.1.16 (django-dirtyfields) did.
    A pk that holds a value before the INSERT (set by hand, or by a default such as
    ``uuid.uuid4``) is kept.
    """
    values = instance.__dict__
    return tuple(
        name for name, attname in _pk_fields(type(instance)) if values.get(attname) is None
    )


@functools.cache
def _pk_fields(model: type[models.Model]) -> tuple[tuple[str, str], ...]:
    # (name, attname) of the model's own pk and, on a multi-table child, its parents'.
    return tuple((f.name, f.attname) for f in model._meta.concrete_fields if f.primary_key)


def creation_fields(
    instance: models.Model, changes: dict[str, Any], assigned: Iterable[str]
) -> dict[str, Any]:
    """The ``dirty_fields`` of a creation: every loaded field, the database-assigned pk
    fields ``assigned`` (see :func:`database_assigned_pk`) left out.

    ``changes`` (what pre_save saw) wins over the values read after the INSERT.
    """
    fields = {**current_state(instance), **changes}
    for name in assigned:
        fields.pop(name, None)
    return fields


@contextlib.contextmanager
def saved_values(instance: models.Model) -> Iterator[None]:
    """Within the block, fields hold their last saved values, not unsaved edits.

    Used for deletions: the diff describes the row as it was in the database.
    """
    snapshot = getattr(instance, "_original_state", None) or {}
    replaced = {}
    for field in instance._meta.concrete_fields:
        # The pk names the row deleted; a snapshot from before an INSERT that rolled
        # back may hold None there.
        if field.primary_key:
            continue
        if field.name in snapshot and field.attname in instance.__dict__:
            replaced[field.attname] = instance.__dict__[field.attname]
            instance.__dict__[field.attname] = snapshot[field.name]
    try:
        yield
    finally:
        instance.__dict__.update(replaced)
