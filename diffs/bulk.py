"""Diffs for ``QuerySet.update()``, ``bulk_update()`` and ``bulk_create()``.

These send no model signals, so the queryset records their diffs itself, one per row,
through the same hooks and on-commit writes as ``save()``. ``@diffs.register`` puts
:class:`DiffsQuerySet` behind a model's default manager when that manager uses a plain
``QuerySet``; a model with its own queryset class opts in by mixing in
:class:`DiffsQuerySetMixin` (system check ``diffs.W002`` points it out).

Database cost per call, whatever the number of rows:

* ``update()``: three queries instead of one: the affected rows are read and locked
  (``SELECT ... FOR UPDATE`` where the database supports it), updated by primary key,
  and read again for the values the database wrote (expressions such as ``F()``
  included).
* ``bulk_update()``: Django's own queries, plus one read-back only when a written value
  is an expression.
* ``bulk_create()``: no extra query; rows whose primary key the database did not
  return (``ignore_conflicts=True``, or a backend without ``RETURNING``) get no diff,
  and a warning says how many.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connections, models, transaction

from diffs import expressions, tracking
from diffs.payload import build_pending
from diffs.settings import get_settings
from diffs.writer import schedule

if TYPE_CHECKING:
    _QuerySetBase = models.QuerySet[Any]
else:
    _QuerySetBase = object

logger = logging.getLogger("diffs")

_suspended: contextvars.ContextVar[bool] = contextvars.ContextVar("diffs_bulk", default=False)


class DiffsQuerySetMixin(_QuerySetBase):
    """Mix into a ``QuerySet`` subclass so its bulk writes record diffs.

    Put it first: ``class MyQuerySet(DiffsQuerySetMixin, models.QuerySet)``. On a
    model that is not registered it changes nothing.
    """

    def update(self, **kwargs: Any) -> int:
        if not kwargs or _suspended.get() or not _records(self.model):
            return super().update(**kwargs)
        if self.query.is_sliced or self.query.combinator:
            return super().update(**kwargs)  # raises Django's own error
        self._for_write = True
        using = self.db
        base = self.model._base_manager.db_manager(using)
        with transaction.atomic(using=using, savepoint=False):
            lock = _lock_options(using)
            before = list(base.select_for_update(**lock).filter(pk__in=self.values("pk")))
            pks = [obj.pk for obj in before]
            rows = models.QuerySet.update(base.filter(pk__in=pks), **kwargs)
            after = _read_back(base, pks, kwargs)
            written = [self.model._meta.get_field(name).name for name in kwargs]
            for old in before:
                new = after.get(old.pk)
                if new is not None:
                    changes = {name: _value(old, name) for name in written}
                    _record(new, changes, using, created=False)
        return rows

    def bulk_update(
        self, objs: Iterable[models.Model], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        objs, fields = list(objs), list(fields)
        if not objs or not _records(self.model):
            return super().bulk_update(objs, fields, batch_size=batch_size)
        self._for_write = True
        using = self.db
        names = [self.model._meta.get_field(name).name for name in fields]
        with transaction.atomic(using=using, savepoint=False):
            for obj in objs:
                tracking.settle(obj)
            old_values = [{n: _saved_value(obj, n) for n in names} for obj in objs]
            # Django's bulk_update() calls update() per batch: those must not record too.
            token = _suspended.set(True)
            try:
                rows = super().bulk_update(objs, fields, batch_size=batch_size)
            finally:
                _suspended.reset(token)
            # A row deleted meanwhile was not updated: no diff may bring it back.
            present = _existing_pks(objs, using) if rows < len(objs) else None
            for obj, changes in zip(_with_db_values(objs, using), old_values, strict=True):
                if present is None or obj.pk in present:
                    _record(obj, changes, using, created=False)
            for obj in objs:
                _resnapshot(obj, names, using)
        return rows

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> Any:
        objs = list(objs)
        if not objs or not _records(self.model):
            return super().bulk_create(objs, *args, **kwargs)
        self._for_write = True
        using = self.db
        with transaction.atomic(using=using, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            inserted = _inserted(created, using) if kwargs.get("ignore_conflicts") else None
            missing = 0
            for obj in created:
                if obj.pk is None or (inserted is not None and obj.pk not in inserted):
                    missing += 1
                    continue
                _record(obj, tracking.current_state(obj), using, created=True)
                _resnapshot(obj, None, using)
        if missing:
            logger.warning(
                "bulk_create() of %s: %d row(s) got no diff: the database did not return "
                "their primary keys, or (ignore_conflicts=True) a conflicting row was kept.",
                self.model._meta.label,
                missing,
            )
        return created


class DiffsQuerySet(DiffsQuerySetMixin, models.QuerySet):  # type: ignore[type-arg]
    """A ``QuerySet`` whose bulk writes record diffs (see :class:`DiffsQuerySetMixin`)."""


def install(model: type[models.Model]) -> bool:
    """Give the default manager of ``model`` a :class:`DiffsQuerySet` when it uses a plain
    ``QuerySet``; returns whether its bulk writes are now recorded."""
    manager = model._meta.default_manager
    if manager is None:
        return False
    # Django hands out copies of the managers declared on the class (and copies them
    # again whenever the app registry's caches are cleared), so the declared instances
    # are patched as well as the copy in use.
    declared = [
        candidate
        for klass in model.__mro__
        for candidate in getattr(getattr(klass, "_meta", None), "local_managers", ())
        if candidate.name == manager.name
    ]
    for candidate in [manager, *declared]:
        if candidate._queryset_class is models.QuerySet:
            candidate._queryset_class = DiffsQuerySet
    _install_base_manager(model)
    return issubclass(manager._queryset_class, DiffsQuerySetMixin)


def _install_base_manager(model: type[models.Model]) -> None:
    """Make the base manager record bulk writes too.

    Django's deletion collector applies ``on_delete=SET_NULL``, ``SET_DEFAULT`` and
    ``SET(...)`` with ``update()`` on the base manager, and those rows change as well.
    An automatic base manager is rebuilt (plain again) whenever the app registry's
    caches are cleared, which only happens when models are created at run time.
    """
    base = model._meta.base_manager
    if base._queryset_class is models.QuerySet:
        base._queryset_class = DiffsQuerySet


def _records(model: type[models.Model]) -> bool:
    from diffs.registry import is_registered

    return is_registered(model)


def _lock_options(using: str) -> dict[str, Any]:
    features = connections[using].features
    if not features.has_select_for_update:
        return {}
    # Lock only this table's rows, not those of joined (possibly nullable) relations.
    return {"of": ("self",)} if features.has_select_for_update_of else {}


def _value(instance: models.Model, name: str) -> Any:
    return getattr(instance, getattr(instance._meta.get_field(name), "attname", name))


def _saved_value(instance: models.Model, name: str) -> Any:
    snapshot = getattr(instance, "_original_state", None)
    return snapshot.get(name) if snapshot is not None else None


def _with_db_values(objs: list[models.Model], using: str) -> list[models.Model]:
    """``objs``, except that rows written from expressions are read back from the database."""
    if not any(expressions.expression_fields(obj) for obj in objs):
        return objs
    model = type(objs[0])
    fresh = model._base_manager.db_manager(using).in_bulk([obj.pk for obj in objs])
    return [fresh.get(obj.pk, obj) for obj in objs]


def _read_back(
    base: models.Manager[Any], pks: list[Any], kwargs: dict[str, Any]
) -> dict[Any, models.Model]:
    """The updated rows by their pk before the update (which may have changed it)."""
    pk_field = base.model._meta.pk
    new_pk = next(
        (
            v
            for k, v in kwargs.items()
            if pk_field is not None and k in (pk_field.name, pk_field.attname, "pk")
        ),
        None,
    )
    if new_pk is None:
        return {obj.pk: obj for obj in base.filter(pk__in=pks)}
    if len(pks) != 1 or hasattr(new_pk, "resolve_expression"):
        logger.warning(
            "update() of %s changed primary keys of %d row(s): no diff recorded.",
            base.model._meta.label,
            len(pks),
        )
        return {}
    moved = base.filter(pk=new_pk).first()
    return {} if moved is None else {pks[0]: moved}


def _existing_pks(objs: list[models.Model], using: str) -> set[Any]:
    model = type(objs[0])
    found = model._base_manager.db_manager(using).filter(pk__in=[o.pk for o in objs])
    return set(found.values_list("pk", flat=True))


def _inserted(objs: list[models.Model], using: str) -> set[Any]:
    """Which of ``objs`` (after bulk_create with ignore_conflicts) hold what was inserted.

    Django cannot tell inserted rows from ignored ones: a row counts as inserted when the
    database holds exactly the object's values.
    """
    with_pk = [obj for obj in objs if obj.pk is not None]
    if not with_pk:
        return set()
    model = type(with_pk[0])
    stored = model._base_manager.db_manager(using).in_bulk([obj.pk for obj in with_pk])
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    return {
        obj.pk
        for obj in with_pk
        if obj.pk in stored and all(_same(f, obj, stored[obj.pk]) for f in fields)
    }


def _same(field: Any, one: models.Model, other: models.Model) -> bool:
    try:
        return bool(
            field.to_python(field.value_from_object(one))
            == field.to_python(field.value_from_object(other))
        )
    except (ValidationError, TypeError, ValueError):
        return False


def _record(instance: models.Model, changes: dict[str, Any], using: str, *, created: bool) -> None:
    conf = get_settings()
    pending = build_pending(
        instance, changes, prefix=conf.prefix, created=created, max_bytes=conf.max_diff_bytes
    )
    if pending is not None:
        schedule(pending, using)


def _resnapshot(instance: models.Model, fields: list[str] | None, using: str) -> None:
    # Like a save: what was just written is no longer a pending change (until the
    # transaction rolls back, see tracking.settle()).
    previous = tracking.provisional_copy(instance, using)
    tracking.retake(instance, fields)
    if previous is not None:
        tracking.remember(instance, previous, using, None)
