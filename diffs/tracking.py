"""Change tracking: which fields changed, and their old values.

A registered model gets django-dirtyfields' API (``get_dirty_fields()``,
``is_dirty()``, ``save_dirty_fields()``) without touching its bases: instead of
inserting ``DirtyFieldsMixin`` into ``__bases__`` (which rewrote the MRO and put
``dirtyfields`` into every migration, as 0.1.16 did), the mixin's plain methods are
set on the class, a ``post_init`` receiver takes the snapshot the mixin's
``__init__`` would take, a ``post_save`` receiver refreshes it, and
``refresh_from_db`` is wrapped so reloaded (e.g. deferred) fields join the snapshot.

Models that already subclass ``DirtyFieldsMixin`` are used as they are, and a model
with its own ``get_dirty_fields()`` is called with no arguments, as 0.1.16 did.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dirtyfields import DirtyFieldsMixin
from dirtyfields.dirtyfields import reset_state
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.signals import post_init, post_save

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
    # A subclass of a grafted model inherits the methods but still needs receivers of
    # its own: model signals are sent with the concrete class as sender.
    uid = model._meta.label_lower
    post_init.connect(_snapshot, sender=model, dispatch_uid=f"diffs.snapshot.{uid}")
    post_save.connect(_resnapshot, sender=model, dispatch_uid=f"diffs.resnapshot.{uid}")


def uninstall_receivers(model: type[models.Model]) -> None:
    """Disconnect the snapshot receivers (the grafted methods stay harmlessly)."""
    uid = model._meta.label_lower
    post_init.disconnect(sender=model, dispatch_uid=f"diffs.snapshot.{uid}")
    post_save.disconnect(sender=model, dispatch_uid=f"diffs.resnapshot.{uid}")


def _wrap_refresh(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def refresh_from_db(
        self: models.Model, using: Any = None, fields: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        original(self, using, fields, *args, **kwargs)
        # Instances without a snapshot (an unregistered proxy or subclass, or one loaded
        # before registration) have nothing to refresh.
        if hasattr(self, "_original_state"):
            reset_state(sender=type(self), instance=self, update_fields=fields)

    setattr(refresh_from_db, _GRAFT_MARKER, True)
    return refresh_from_db


def _snapshot(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    reset_state(sender=sender, instance=instance)


def _resnapshot(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    reset_state(sender=sender, instance=instance, update_fields=kwargs.get("update_fields"))


def changed_fields(
    instance: models.Model, update_fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """Return ``{field name: old value}`` for the changes a save is about to write.

    For a new object every concrete field is "changed" and maps to its current value
    (django-dirtyfields' convention). ForeignKeys count (their value is the id), and
    with ``update_fields`` only the fields being saved are kept.
    """
    if uses_dirtyfields_api(type(instance)):
        if not instance._state.adding and not hasattr(instance, "_original_state"):
            # Loaded before the model was registered: no snapshot, so every field is
            # reported rather than silently none.
            dirty = instance._as_dict(check_relationship=True)  # type: ignore[attr-defined]
        else:
            dirty = instance.get_dirty_fields(check_relationship=True)  # type: ignore[attr-defined]
    else:
        dirty = instance.get_dirty_fields()  # type: ignore[attr-defined]
    dirty = dict(dirty)
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


@contextlib.contextmanager
def saved_values(instance: models.Model) -> Iterator[None]:
    """Within the block, fields hold their last saved values, not unsaved edits.

    Used for deletions: the diff describes the row as it was in the database.
    """
    snapshot = getattr(instance, "_original_state", None) or {}
    replaced = {}
    for field in instance._meta.concrete_fields:
        if field.name in snapshot and field.attname in instance.__dict__:
            replaced[field.attname] = instance.__dict__[field.attname]
            instance.__dict__[field.attname] = snapshot[field.name]
    try:
        yield
    finally:
        instance.__dict__.update(replaced)
