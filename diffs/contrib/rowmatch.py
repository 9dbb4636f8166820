"""Would a deleted row have been in a queryset? Answered from the row's last state.

A deleted row is in no queryset any more, so the database cannot say whether a user
could see it. When the queryset's filter is simple (lookups such as ``exact``, ``in``,
``gte`` or ``isnull`` on the model's own columns, combined with AND, OR and NOT), it is
evaluated here against the row's values, as the deletion diff's default data holds
them (the values last saved, not unsaved edits of the deleted instance). Anything
else (joins, expressions, subqueries, custom data, and comparisons Python might answer
differently from the database) counts as "cannot tell", and the answer is then no: a
deletion is never shown to someone who may not have seen the row.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.expressions import Col
from django.db.models.lookups import Lookup
from django.db.models.sql.where import AND, OR, WhereNode


class _Unknown(Exception):
    """The filter cannot be evaluated without the database."""


def _text(op: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def compare(value: Any, wanted: Any) -> bool:
        if not isinstance(value, str) or not isinstance(wanted, str):
            raise _Unknown
        return op(value, wanted)

    return compare


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(value: Any, wanted: Any) -> bool:
        return value is not None and wanted is not None and op(value, wanted)  # SQL NULL

    return compare


# Only comparisons Python answers exactly as every database does. Case-insensitive
# lookups (Unicode case folding differs from the database's), ordering of text
# (collations differ) and anything on dates and times (the diff keeps milliseconds
# only) count as "cannot tell".
_LOOKUPS: dict[str, Callable[[Any, Any], bool]] = {
    "exact": operator.eq,
    "gt": _ordered(operator.gt),
    "gte": _ordered(operator.ge),
    "lt": _ordered(operator.lt),
    "lte": _ordered(operator.le),
    "contains": _text(operator.contains),
    "startswith": _text(str.startswith),
    "endswith": _text(str.endswith),
}
_ORDERING = frozenset({"gt", "gte", "lt", "lte"})


def deleted_row(diff_data: Any, model: type[models.Model]) -> dict[str, Any] | None:
    """The row of ``model`` (or a proxy of it) that a deletion diff holds in the default
    ``[{"model", "pk", "fields"}]`` data; None for any other data."""
    if not (isinstance(diff_data, list) and len(diff_data) == 1):
        return None
    entry = diff_data[0]
    if not isinstance(entry, Mapping) or not _same_table(entry.get("model"), model):
        return None
    fields = entry.get("fields")
    if not isinstance(fields, Mapping) or model._meta.pk is None:
        return None
    return {**fields, model._meta.pk.name: entry.get("pk")}


def _same_table(label: Any, model: type[models.Model]) -> bool:
    try:
        named = apps.get_model(str(label))
    except (LookupError, ValueError):
        return False
    return named._meta.concrete_model is model._meta.concrete_model


def row_matches(queryset: models.QuerySet[Any], row: Mapping[str, Any]) -> bool:
    """True only when ``row`` certainly satisfies the filter of ``queryset``."""
    if queryset.query.is_sliced or queryset.query.combinator:
        return False
    try:
        return _node(queryset.query.where, queryset.model, row)
    except (_Unknown, ValidationError, TypeError, ValueError):
        return False


def _node(node: Any, model: type[models.Model], row: Mapping[str, Any]) -> bool:
    if isinstance(node, WhereNode):
        results = [_node(child, model, row) for child in node.children]
        if node.connector == AND:
            value = all(results)
        elif node.connector == OR:
            value = any(results)
        else:
            raise _Unknown
        return not value if node.negated else value
    if isinstance(node, Lookup):
        return _lookup(node, model, row)
    raise _Unknown


def _lookup(lookup: Lookup[Any], model: type[models.Model], row: Mapping[str, Any]) -> bool:
    lhs = lookup.lhs
    if not isinstance(lhs, Col) or lhs.alias != model._meta.db_table:
        raise _Unknown  # a join, an annotation or an expression
    field = lhs.target
    if field.model is not model._meta.concrete_model or field.name not in row:
        raise _Unknown
    value = field.to_python(row[field.name])
    wanted = lookup.rhs
    name = lookup.lookup_name or ""
    if hasattr(wanted, "resolve_expression"):
        raise _Unknown
    if name == "isnull":
        return (value is None) == bool(wanted)
    if isinstance(value, (dt.date, dt.time, dt.timedelta)):
        raise _Unknown
    if name == "in":
        choices = [field.to_python(item) for item in wanted]
        # SQL drops NULL from an IN list, and NULL matches nothing.
        return value is not None and value in [c for c in choices if c is not None]
    compare = _LOOKUPS.get(name)
    if compare is None or (name in _ORDERING and isinstance(value, str)):
        raise _Unknown
    return value is not None and compare(value, field.to_python(wanted))
