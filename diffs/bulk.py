"""Diffs for ``QuerySet.update()``, ``bulk_update()`` and ``bulk_create()``.

These send no model signals, so the queryset records their diffs itself, one per row,
through the same hooks and on-commit writes as ``save()``. ``@diffs.register`` puts
:class:`DiffsQuerySet` behind a model's default manager when that manager uses a plain
``QuerySet``; a model with its own queryset class opts in by mixing in
:class:`DiffsQuerySetMixin` (system check ``diffs.W002`` points it out).

Database cost per call:

* ``update()``: the affected rows are locked (``SELECT ... FOR UPDATE`` where the
  database supports it) before anything is written, then updated and read back (for
  the values the database wrote, ``F()`` expressions included) chunk by chunk, so
  memory does not grow with the number of rows: three queries when the rows fit in
  one chunk (``FIRST_CHUNK_ROWS``); beyond it one more query locks the other rows, and
  each further chunk costs three (chunks double up
  to ``MAX_CHUNK_ROWS`` rows, and shrink to keep about ``CHUNK_BYTES`` of rows). A
  value that may read other rows or the statement's clock (a subquery, ``Now()``,
  raw SQL, a function Django does not ship) keeps one ``UPDATE`` statement for all
  rows, as without django-diffs, and only the reading back is chunked.
* ``bulk_update()``: Django's own queries, plus one read-back only when a written value
  is an expression.
* ``bulk_create()``: no extra query; rows whose primary key the database did not
  return (``ignore_conflicts=True``, or a backend without ``RETURNING``) get no diff,
  and a warning says how many.

The diffs go to delivery a chunk at a time (``diffs.recording.Batch``), which bounds
what waits in memory for the commit.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, models, transaction
from django.db.models import F, Q, Value
from django.db.models.expressions import (
    Case,
    CombinedExpression,
    DurationExpression,
    ExpressionWrapper,
    NegatedExpression,
    TemporalSubtraction,
    When,
)
from django.db.models.functions import Now

from diffs import expressions, tracking
from diffs.recording import Batch, record
from diffs.registry import is_registered

if TYPE_CHECKING:
    _QuerySetBase = models.QuerySet[Any]
else:
    _QuerySetBase = object

logger = logging.getLogger("diffs")

_suspended: contextvars.ContextVar[bool] = contextvars.ContextVar("diffs_bulk", default=False)

#: Rows in the first chunk of an ``update()``: an update of at most this many rows
#: costs three queries.
FIRST_CHUNK_ROWS = 100

#: Most rows in one chunk of an ``update()``.
MAX_CHUNK_ROWS = 2000

#: About how many bytes of rows, as read back, one chunk of an ``update()`` holds; the
#: next chunk is sized from the rows of the last one.
CHUNK_BYTES = 4 * 1_048_576

#: Rows whose size is measured to size the next chunk.
_SAMPLED_ROWS = 16

#: Deeper update() values than this are not inspected: they run as one statement.
_MAX_EXPRESSION_DEPTH = 64


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
        fields = _written_fields(self.model, kwargs)
        if fields is None:
            return super().update(**kwargs)  # raises Django's own error
        self._for_write = True
        with transaction.atomic(using=self.db, savepoint=False):
            update = _RowUpdate(self, kwargs, fields)
            if _changes_pk(self.model, kwargs):
                return update.changing_pk()
            if all(_row_local(value) for value in kwargs.values()):
                return update.in_chunks()
            return update.in_one_statement()

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
            batch = Batch(using)
            for obj, changes in zip(_with_db_values(objs, using), old_values, strict=True):
                if present is None or obj.pk in present:
                    record(obj, changes, using=using, batch=batch)
            batch.hand_over()
            for obj in objs:
                _resnapshot(obj, names, using)
        return rows

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> Any:
        objs = list(objs)
        if not objs or not _records(self.model):
            return super().bulk_create(objs, *args, **kwargs)
        self._for_write = True
        using = self.db
        # Before the INSERT: which pk fields the database assigns, as save() does.
        assigned = {id(obj): tracking.database_assigned_pk(obj) for obj in objs}
        with transaction.atomic(using=using, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            inserted = _inserted(created, using) if kwargs.get("ignore_conflicts") else None
            recorded = [
                obj
                for obj in created
                if obj.pk is not None and (inserted is None or obj.pk in inserted)
            ]
            missing = len(created) - len(recorded)
            batch = Batch(using)
            for obj in recorded:
                changes = tracking.creation_fields(obj, {}, assigned.get(id(obj), ()))
                record(obj, changes, using=using, created=True, batch=batch)
            batch.hand_over()
            for obj in recorded:
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
    return is_registered(model)


def _lock_options(using: str) -> dict[str, Any]:
    features = connections[using].features
    if not features.has_select_for_update:
        return {}
    # Lock only this table's rows, not those of joined (possibly nullable) relations.
    return {"of": ("self",)} if features.has_select_for_update_of else {}


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


def _resnapshot(instance: models.Model, fields: list[str] | None, using: str) -> None:
    # Like a save: what was just written is no longer a pending change (until the
    # transaction rolls back, see tracking.settle()).
    previous = tracking.provisional_copy(instance, using)
    tracking.retake(instance, fields)
    if previous is not None:
        tracking.remember(instance, previous, using, None)


class _RowUpdate:
    """One ``update()`` of a registered model: rows locked first, then updated, read
    back and turned into diffs a chunk at a time."""

    def __init__(self, queryset: DiffsQuerySetMixin, values: dict[str, Any], fields: list[Any]):
        self.model = queryset.model
        self.values = values
        self.names = [field.name for field in fields]
        self.attnames = [getattr(field, "attname", field.name) for field in fields]
        self.using: str = queryset.db
        self.base = self.model._base_manager.db_manager(self.using)
        self.locked = self.base.select_for_update(**_lock_options(self.using)).filter(
            pk__in=queryset.values("pk")
        )
        self.chunk_rows = FIRST_CHUNK_ROWS
        self.updated = 0

    def in_chunks(self) -> int:
        """Update chunk by chunk, every row locked before the first ``UPDATE``.

        Only for values that read nothing but their own row: each chunk's ``UPDATE``
        then writes what a single statement would.
        """
        head = self._lock_head()
        if head is not None and len(head) <= self.chunk_rows:
            self._update_chunk(head)  # the common case: three queries in all
            return self.updated
        after = None if not head else head[self.chunk_rows - 1][0]
        rest = _PrimaryKeys(self._lock_pks(after))
        if head:
            self._update_chunk(head[: self.chunk_rows])
        start = 0
        while start < len(rest):
            pks = rest.slice(start, self.chunk_rows)
            start += len(pks)
            self._update_chunk(self._old_rows(pks))
        return self.updated

    def in_one_statement(self) -> int:
        """One ``UPDATE`` for every locked row (values that may read other rows or the
        statement's clock); the diffs are still built chunk by chunk. The old values of
        the written fields of every row are held until the ``UPDATE`` has run."""
        old_rows = list(self.locked.order_by("pk").values_list("pk", *self.attnames))
        self._update([row[0] for row in old_rows])
        start = 0
        while start < len(old_rows):
            chunk = old_rows[start : start + self.chunk_rows]
            start += len(chunk)
            self._record(chunk)
        return self.updated

    def changing_pk(self) -> int:
        """An update that writes the primary key: recorded under the new pk when it
        changes one row; with a warning and no diff otherwise (rows cannot be matched
        with their old values)."""
        old_rows = list(self.locked.values_list("pk", *self.attnames))
        self._update([row[0] for row in old_rows])
        new_pk = next(value for key, value in self.values.items() if _names_pk(self.model, key))
        if len(old_rows) > 1 or hasattr(new_pk, "resolve_expression"):
            logger.warning(
                "update() of %s changed primary keys of %d row(s): no diff recorded.",
                self.model._meta.label,
                len(old_rows),
            )
            return self.updated
        moved = self.base.filter(pk=new_pk).first() if old_rows else None
        if moved is not None:
            changes = dict(zip(self.names, old_rows[0][1:], strict=True))
            batch = Batch(self.using)
            record(moved, changes, using=self.using, batch=batch)
            batch.hand_over()
        return self.updated

    def _lock_head(self) -> list[tuple[Any, ...]] | None:
        """The first chunk's rows (pk and old values), locked, and one more row to tell
        whether there are more; None where the backend cannot limit a locking query."""
        features = connections[self.using].features
        if features.has_select_for_update and not features.supports_select_for_update_with_limit:
            return None
        rows = self.locked.order_by("pk").values_list("pk", *self.attnames)
        return list(rows[: self.chunk_rows + 1])

    def _lock_pks(self, after: Any) -> Iterator[Any]:
        """Lock the rows not in the first chunk; yield their pks in order."""
        rows = self.locked if after is None else self.locked.filter(pk__gt=after)
        pks: Iterator[Any] = (
            rows.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=MAX_CHUNK_ROWS)
        )
        return pks

    def _old_rows(self, pks: list[Any]) -> list[tuple[Any, ...]]:
        rows = self._rows(pks).order_by("pk").values_list("pk", *self.attnames)
        return list(rows)

    def _rows(self, pks: list[Any]) -> models.QuerySet[Any]:
        """The rows ``pks`` (in ascending order): a range when they are consecutive
        integers (what an update of a whole table mostly has), cheaper for the database
        to parse and plan than a list of thousands of values."""
        rows: models.QuerySet[Any]
        if _consecutive(pks):
            rows = self.base.filter(pk__gte=pks[0], pk__lte=pks[-1])
        else:
            rows = self.base.filter(pk__in=pks)
        return rows

    def _update_chunk(self, old_rows: list[tuple[Any, ...]]) -> None:
        self._update([row[0] for row in old_rows])
        self._record(old_rows)

    def _update(self, pks: list[Any]) -> None:
        if pks:
            self.updated += models.QuerySet.update(self._rows(pks), **self.values)

    def _record(self, old_rows: list[tuple[Any, ...]]) -> None:
        """Read ``old_rows`` back and schedule their diffs; size the next chunk."""
        old = {row[0]: row[1:] for row in old_rows}
        rows = list(self._rows(list(old)).order_by("pk"))
        batch = Batch(self.using)
        for row in rows:
            if row.pk in old:
                record(
                    row,
                    dict(zip(self.names, old[row.pk], strict=True)),
                    batch=batch,
                    using=self.using,
                )
        batch.hand_over()
        per_row = _bytes_per_row(rows)
        self.chunk_rows = max(1, min(MAX_CHUNK_ROWS, 2 * self.chunk_rows, CHUNK_BYTES // per_row))


class _PrimaryKeys:
    """Primary keys in order: 8 bytes each while they are integers, a list otherwise."""

    def __init__(self, pks: Iterable[Any]) -> None:
        self.keys: array[int] | list[Any] = array("q")
        for pk in pks:
            self._add(pk)

    def _add(self, pk: Any) -> None:
        if isinstance(self.keys, array):
            if type(pk) is int and -(2**63) <= pk < 2**63:
                self.keys.append(pk)
                return
            self.keys = list(self.keys)
        self.keys.append(pk)

    def __len__(self) -> int:
        return len(self.keys)

    def slice(self, start: int, count: int) -> list[Any]:
        """Up to ``count`` keys from position ``start``."""
        return list(self.keys[start : start + count])


def _consecutive(pks: list[Any]) -> bool:
    """True when ``pks`` are the integers ``pks[0], pks[0] + 1, ...``, in that order:
    exactly the range they span."""
    if len(pks) < 2 or type(pks[0]) is not int:
        return False
    return pks == list(range(pks[0], pks[0] + len(pks)))


def _written_fields(model: type[models.Model], values: dict[str, Any]) -> list[Any] | None:
    """The fields ``update(**values)`` writes; None when a name is not one (Django's own
    update() then raises its error)."""
    fields = []
    for name in values:
        try:
            fields.append(model._meta.pk if name == "pk" else model._meta.get_field(name))
        except FieldDoesNotExist:
            return None
    return fields


def _changes_pk(model: type[models.Model], values: dict[str, Any]) -> bool:
    return any(_names_pk(model, name) for name in values)


def _names_pk(model: type[models.Model], name: str) -> bool:
    pk = model._meta.pk
    return pk is not None and name in ("pk", pk.name, pk.attname)


#: Expression classes that read only the row they are evaluated for.
_ROW_LOCAL_TYPES: tuple[type, ...] = (
    F,
    Value,
    Q,
    CombinedExpression,
    ExpressionWrapper,
    Case,
    When,
    NegatedExpression,
    DurationExpression,
    TemporalSubtraction,
)

#: Django's own database functions and lookups read only their arguments...
_ROW_LOCAL_MODULES = (
    "django.db.models.functions.comparison",
    "django.db.models.functions.datetime",
    "django.db.models.functions.json",
    "django.db.models.functions.math",
    "django.db.models.functions.text",
    "django.db.models.lookups",
)

#: ... except the clock, read once per statement: chunks would write different times.
_STATEMENT_CLOCKS: tuple[type, ...] = (Now,)


def _row_local(value: Any, depth: int = 0) -> bool:
    """True when an ``update()`` value reads nothing but the row it is written to, so an
    update in chunks writes exactly what one ``UPDATE`` would. Anything unknown (a
    subquery, ``Now()``, raw SQL, a function of the project's own) is not."""
    if depth > _MAX_EXPRESSION_DEPTH:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):  # a lookup's values, in a Q
        return all(_row_local(item, depth + 1) for item in value)
    if not hasattr(value, "resolve_expression"):
        return True  # a plain value
    kind = type(value)
    known = kind in _ROW_LOCAL_TYPES or (
        kind.__module__ in _ROW_LOCAL_MODULES and not issubclass(kind, _STATEMENT_CLOCKS)
    )
    return known and all(_row_local(part, depth + 1) for part in _parts(value))


def _parts(expression: Any) -> Sequence[Any]:
    if isinstance(expression, Q):
        return [child[1] if isinstance(child, tuple) else child for child in expression.children]
    source = getattr(expression, "get_source_expressions", None)
    return [] if source is None else list(source())


def _bytes_per_row(rows: Sequence[models.Model]) -> int:
    """About what one of ``rows`` holds in memory, from a sample of them."""
    if not rows:
        return 1
    sample = rows[:: max(1, len(rows) // _SAMPLED_ROWS)]
    return max(1, sum(map(_row_bytes, sample)) // len(sample))


def _row_bytes(row: models.Model) -> int:
    # The instance, its attributes and one level into containers (a JSONField's dict,
    # the change snapshot), each object once: the snapshot shares the row's values.
    seen: set[int] = set()

    def size(value: Any) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return sys.getsizeof(value)

    total = size(row)
    for value in vars(row).values():
        total += size(value)
        if isinstance(value, dict):
            total += sum(size(key) + size(item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            total += sum(map(size, value))
    return total
