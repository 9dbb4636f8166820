"""Cheap snapshots of what the database holds, for change detection.

A snapshot maps each loaded concrete field's name to its value (a ForeignKey to its id),
as django-dirtyfields' ``_original_state`` does, and is stored under that name, so the
dirtyfields API a registered model receives keeps working. It is taken differently:

* **on load**, by wrapping the model's ``from_db()``: one shallow copy of the
  instance's ``__dict__``, turned into the snapshot only when something asks for it.
  dirtyfields takes it in a ``post_init`` receiver with a ``deepcopy`` and a
  ``to_python()`` per field, which tripled the cost of iterating a queryset;
* **after a save**, from the instance's ``__dict__``, again without ``to_python()``.

Values are copied deeply only for fields whose values can change in place (a JSONField's
dict, a custom field's object): plain field types hold immutable values. Normalising
(``to_python()``, a file's name) happens only when two values differ, to tell a real
change from ``"5"`` versus ``5``.

An instance built in Python (``Model(...)``) has no snapshot: while it is being added,
every field is a change anyway.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import models
from django.db.models.expressions import BaseExpression, Combinable

#: The instance attribute holding the snapshot (django-dirtyfields' name for it).
SNAPSHOT = "_original_state"
#: The instance attribute holding the copy of ``__dict__`` taken on load.
LOADED = "_diffs_loaded"
_EXPRESSIONS = (BaseExpression, Combinable)
_WRAPPED_MARKER = "_diffs_snapshot_from_db"

# Field types whose values Django hands out as immutable objects (str, int, Decimal,
# datetime, UUID, ...). A subclass that converts database values itself
# (``from_db_value``) may return anything, so it is copied like unknown types.
_IMMUTABLE_FIELDS: tuple[type[models.Field[Any, Any]], ...] = (
    models.AutoField,
    models.BigAutoField,
    models.SmallAutoField,
    models.BooleanField,
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.FloatField,
    models.DecimalField,
    models.DateField,
    models.TimeField,
    models.DurationField,
    models.UUIDField,
    models.GenericIPAddressField,
)


@dataclass(frozen=True)
class Plan:
    """What a model's snapshot holds: ``(name, attname, field)`` of its concrete fields,
    the attnames whose values are copied deeply, and each field's name by attname."""

    fields: tuple[tuple[str, str, Any], ...]
    copied: frozenset[str]
    names: dict[str, str]
    #: The value type, by field name, whose unequal values stay unequal through the
    #: field's ``to_python()`` (so two of them differ without normalising).
    plain: dict[str, type]


_plans: dict[type[models.Model], Plan] = {}


def plan_for(model: type[models.Model]) -> Plan:
    """The (cached) snapshot plan of ``model``."""
    plan = _plans.get(model)
    if plan is None:
        fields = tuple((f.name, f.attname, f) for f in model._meta.concrete_fields)
        copied = frozenset(f.attname for f in model._meta.concrete_fields if _mutable(f))
        names = {attname: name for name, attname, _ in fields}
        plain = {name: kind for name, _, field in fields if (kind := _plain_type(field))}
        plan = _plans[model] = Plan(fields, copied, names, plain)
    return plan


def _mutable(field: Any) -> bool:
    if field.remote_field is not None:
        return bool(_mutable(field.target_field)) if field.target_field is not field else True
    plain = isinstance(field, _IMMUTABLE_FIELDS) and not hasattr(field, "from_db_value")
    return not plain


def install(model: type[models.Model]) -> None:
    """Take snapshots of ``model``'s instances on load (idempotent)."""
    original = model.from_db
    if getattr(original, _WRAPPED_MARKER, False):
        return
    model.from_db = classmethod(_wrap_from_db(original.__func__))  # type: ignore[attr-defined,method-assign,assignment]
    setattr(model, SNAPSHOT, _LazySnapshot())


def _wrap_from_db(original: Callable[..., models.Model]) -> Callable[..., models.Model]:
    def from_db(
        cls: type[models.Model], db: str | None, field_names: Any, values: Any
    ) -> models.Model:
        instance = original(cls, db, field_names, values)
        loaded = instance.__dict__.copy()
        plan = _plans.get(cls) or plan_for(cls)  # one dict lookup per row once cached
        copied = plan.copied
        if copied:
            for attname in copied & loaded.keys():
                loaded[attname] = _copy(loaded[attname])
        instance.__dict__[LOADED] = loaded
        return instance

    setattr(from_db, _WRAPPED_MARKER, True)
    return from_db


class _LazySnapshot:
    """``instance._original_state``, built from the load-time copy on first use.

    A non-data descriptor: once built (or set by a save), the instance's own attribute
    takes over. Without a load-time copy there is no snapshot (``AttributeError``).
    """

    def __get__(self, instance: models.Model | None, owner: type[models.Model]) -> Any:
        if instance is None:
            return self
        loaded = instance.__dict__.get(LOADED)
        if loaded is None:
            raise AttributeError(SNAPSHOT)
        state = {
            name: loaded[attname]
            for name, attname, _ in plan_for(type(instance)).fields
            if attname in loaded and not isinstance(loaded[attname], _EXPRESSIONS)
        }
        instance.__dict__[SNAPSHOT] = state
        del instance.__dict__[LOADED]
        return state


def current(instance: models.Model) -> dict[str, Any]:
    """A snapshot of the instance as it is now (loaded fields, no expressions)."""
    values = instance.__dict__
    copied = plan_for(type(instance)).copied
    state = {}
    for name, attname, _ in plan_for(type(instance)).fields:
        if attname not in values:
            continue  # deferred
        value = values[attname]
        if isinstance(value, _EXPRESSIONS):
            continue  # the database computes it: unknown here
        state[name] = _copy(value) if attname in copied or isinstance(value, File) else value
    return state


def retake(instance: models.Model, fields: Iterable[str] | None = None) -> None:
    """Make the snapshot match the instance: all of it, or just ``fields`` (names or
    attnames), as after ``save(update_fields=...)``."""
    if fields is None:
        instance.__dict__.pop(LOADED, None)
        instance.__dict__[SNAPSHOT] = current(instance)
        return
    try:
        state: dict[str, Any] = getattr(instance, SNAPSHOT)
    except AttributeError:
        return  # no snapshot to update: the next save reports every field, losing none
    now = current(instance)
    names = plan_for(type(instance)).names
    attnames = {name: attname for attname, name in names.items()}
    for given in fields:
        name = names.get(given, given)
        if attnames.get(name, name) not in instance.__dict__:
            continue  # deferred: what the database holds is still unknown
        if name in now:
            state[name] = now[name]
        else:
            state.pop(name, None)  # saved from an expression: value unknown


def _copy(value: Any) -> Any:
    if isinstance(value, File):
        return value.name  # a FieldFile is tied to its instance; its name is the value
    if isinstance(value, memoryview):
        return bytes(value)  # psycopg2's bytea, which deepcopy refuses
    try:
        return copy.deepcopy(value)
    except Exception:  # an uncopyable custom value: compare by identity and equality
        return value


def has_snapshot(instance: models.Model) -> bool:
    """True when the instance has a snapshot (or the load-time copy to build one)."""
    return SNAPSHOT in instance.__dict__ or LOADED in instance.__dict__


def changes(instance: models.Model) -> dict[str, Any]:
    """``{field name: snapshot value}`` for each loaded field whose value differs."""
    state: dict[str, Any] = getattr(instance, SNAPSHOT)
    values = instance.__dict__
    changed = {}
    plan = plan_for(type(instance))
    plain = plan.plain
    for name, attname, field in plan.fields:
        if attname not in values or name not in state:
            continue  # deferred now, or when the snapshot was taken
        old, new = state[name], values[attname]
        if old is new or isinstance(new, _EXPRESSIONS) or _same(field, old, new, plain.get(name)):
            continue
        changed[name] = old
    return changed


def _same(field: Any, old: Any, new: Any, plain: type | None = None) -> bool:
    try:
        if old == new:
            return True
    except Exception:  # a custom type whose __eq__ refuses: compare normalised values
        pass
    if plain is not None and type(old) is plain and type(new) is plain:
        return False  # the field's own type, which its to_python() returns unchanged
    return bool(_normalised(field, old) == _normalised(field, new))


# (field class, the value type its to_python() returns unchanged), most specific first:
# two unequal values of that exact type are two different values. Anything else ("5"
# and "05" in an IntegerField, two datetimes of one day in a DateField) is normalised.
_PLAIN_VALUE_TYPES: tuple[tuple[type[models.Field[Any, Any]], type], ...] = (
    (models.DateTimeField, dt.datetime),
    (models.DateField, dt.date),
    (models.BooleanField, bool),
    (models.IntegerField, int),
    (models.FloatField, float),
    (models.TextField, str),
    (models.CharField, str),
)


def _plain_type(field: Any) -> type | None:
    for field_class, value_type in _PLAIN_VALUE_TYPES:
        if isinstance(field, field_class):
            # A subclass with a to_python() of its own may normalise: no shortcut.
            return value_type if type(field).to_python is field_class.to_python else None
    return None


def _normalised(field: Any, value: Any) -> Any:
    if isinstance(value, File):
        return value.name
    if isinstance(value, memoryview):
        return bytes(value)
    try:
        return field.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return value
