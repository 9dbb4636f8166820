"""Would a deleted row have been in a queryset? Answered from the row's last state.

``row_matches()`` evaluates a queryset's filter against the row a deletion diff holds,
in SQL's three-valued logic: each lookup is certainly true, certainly false or unknown;
NOT, AND, OR and XOR combine them as Kleene logic does; the row matches only when the
whole filter is certainly true, so whatever cannot be told hides the deletion.

Evaluated: Django's own ``exact``, ``in``, ``range``, ``isnull``, ``gt``/``gte``/``lt``/
``lte`` and, on text, ``contains``/``startswith``/``endswith``, on the model's own
columns of Django's integer, boolean, foreign key, UUID, decimal, float and text fields,
against plain values. Unknown: NULL compared; NaN and infinities; decimals the column
rounds; text with a ``db_collation`` or a column type of its own (citext); LIKE that
SQLite's case folding may decide otherwise; case-insensitive lookups; JSON; dates and
times (but ``isnull``); custom fields and lookups; expressions and subqueries; joins
(an INNER JOIN may drop the row whatever the filter says); sliced and combined
querysets; all but integers and booleans on databases other than SQLite and PostgreSQL.
"""

from __future__ import annotations

import decimal
import functools
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import lookups as django_lookups
from django.db.models.expressions import Col
from django.db.models.fields import related_lookups
from django.db.models.lookups import Lookup
from django.db.models.sql.constants import INNER
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, OR, XOR, WhereNode

logger = logging.getLogger("diffs")

#: A condition's value in SQL's three-valued logic: True, False, or None for unknown
#: (SQL NULL, or anything Python cannot answer exactly as the database would).
_Truth: TypeAlias = "bool | None"

#: Vendors whose text, UUID, decimal and float semantics the kinds below follow.
_WELL_KNOWN_VENDORS = frozenset({"sqlite", "postgresql"})

#: At most this many lookup values are compared per call (a filter with huge ``in``
#: lists costs time for every deleted row of a page); past it the answer is unknown.
_MAX_COMPARISONS = 10_000

#: SQLite refuses LIKE patterns longer than this (SQLITE_MAX_LIKE_PATTERN_LENGTH).
_SQLITE_MAX_LIKE_BYTES = 50_000

#: SQLite keeps decimals as 8-byte floats: up to 15 significant digits survive exactly.
_SQLITE_DECIMAL_DIGITS = 15
_SQLITE_DECIMAL_EXPONENT = 20

#: Field methods whose redefinition (outside Django's own model fields) may change
#: what the column holds or how it compares: such fields are never evaluated.
_STORAGE_METHODS = frozenset(
    {
        "cast_db_type",
        "db_parameters",
        "db_type",
        "db_type_suffix",
        "from_db_value",
        "get_db_prep_save",
        "get_db_prep_value",
        "get_internal_type",
        "get_lookup",
        "get_placeholder",
        "get_prep_value",
        "pre_save",
        "rel_db_type",
        "to_python",
        "value_from_object",
        "value_to_string",
    }
)


class _Unknown(Exception):
    """The lookup cannot be evaluated without the database."""


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
    """True only when ``row`` certainly satisfies the filter of ``queryset``.

    ``row`` maps field names to values as the default serializer writes them (after a
    JSON round trip). False when the row fails the filter and whenever that cannot be
    told for certain.
    """
    query = queryset.query
    try:
        if _rows_depend_on_more_than_the_filter(query):
            return False
        context = _Context(queryset.model, row, connections[queryset.db])
        return _node(query.where, context) is True
    except Exception:  # any failure to evaluate is "cannot tell": hidden
        logger.debug("Could not evaluate %r against a deleted row.", query.where, exc_info=True)
        return False


def selects_every_row(queryset: models.QuerySet[Any]) -> bool:
    """True when ``queryset`` holds every row of its table: no filter, and nothing else
    (a slice, a union, DISTINCT ON, extra() tables, an INNER JOIN) that may leave one out.

    Then any deleted row was in it, whatever its diff's data.
    """
    query = queryset.query
    return not query.where and not _rows_depend_on_more_than_the_filter(query)


def _rows_depend_on_more_than_the_filter(query: Query) -> bool:
    """Whether something besides the WHERE clause may leave the row out: a slice, a
    union, DISTINCT ON, extra() tables, or an INNER JOIN (a row whose related row is
    missing is dropped, whatever the filter says; joins Django trimmed do not count)."""
    if query.is_sliced or query.combinator or query.distinct_fields or query.extra_tables:
        return True
    return any(
        getattr(join, "join_type", None) == INNER and query.alias_refcount.get(alias, 0) > 0
        for alias, join in query.alias_map.items()
    )


@dataclass
class _Context:
    model: type[models.Model]
    row: Mapping[str, Any]
    connection: BaseDatabaseWrapper
    comparisons: int = 0

    def count(self, comparisons: int) -> None:
        self.comparisons += comparisons
        if self.comparisons > _MAX_COMPARISONS:
            raise _Unknown


# Kleene logic: False wins an AND, True wins an OR, otherwise any unknown is unknown.


def _not(value: _Truth) -> _Truth:
    return None if value is None else not value


def _all(values: Iterable[_Truth]) -> _Truth:
    result: _Truth = True
    for value in values:
        if value is False:
            return False
        if value is None:
            result = None
    return result


def _any(values: Iterable[_Truth]) -> _Truth:
    result: _Truth = False
    for value in values:
        if value is True:
            return True
        if value is None:
            result = None
    return result


def _parity(values: Iterable[_Truth]) -> _Truth:
    # Django's XOR: an odd number of true operands.
    known = list(values)
    if any(value is None for value in known):
        return None
    return sum(1 for value in known if value) % 2 == 1


_CONNECTORS: dict[str, Callable[[Iterable[_Truth]], _Truth]] = {
    AND: _all,
    OR: _any,
    XOR: _parity,
}


def _node(node: Any, context: _Context) -> _Truth:
    if isinstance(node, WhereNode):
        combine = _CONNECTORS.get(node.connector)
        if combine is None:
            return None
        if not node.children:
            # Django compiles any empty node, negated or not, to "matches everything";
            # only the plain empty AND is certain to mean that everywhere.
            return True if node.connector == AND and not node.negated else None
        value = combine(_node(child, context) for child in node.children)
        return _not(value) if node.negated else value
    if isinstance(node, Lookup):
        try:
            return _lookup(node, context)
        except _Unknown:
            return None
    return None  # raw SQL (extra()), Exists(), NothingNode, ...


# Django's own lookup classes, by exact type (a subclass may compile to other SQL).
# Looked up by name: a Django version without one of them simply never evaluates it.
_OPERATION_CLASSES = {
    "exact": ("Exact", "IntegerFieldExact", "RelatedExact"),
    "in": ("In", "RelatedIn"),
    "gt": ("GreaterThan", "IntegerGreaterThan", "RelatedGreaterThan"),
    "gte": ("GreaterThanOrEqual", "IntegerGreaterThanOrEqual", "RelatedGreaterThanOrEqual"),
    "lt": ("LessThan", "IntegerLessThan", "RelatedLessThan"),
    "lte": ("LessThanOrEqual", "IntegerLessThanOrEqual", "RelatedLessThanOrEqual"),
    "range": ("Range",),
    "isnull": ("IsNull", "RelatedIsNull"),
    "contains": ("Contains",),
    "startswith": ("StartsWith",),
    "endswith": ("EndsWith",),
}
_OPERATIONS: dict[type[Any], str] = {
    lookup_class: operation
    for operation, names in _OPERATION_CLASSES.items()
    for name in names
    for module in (django_lookups, related_lookups)
    if isinstance(lookup_class := getattr(module, name, None), type)
}

_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda value, wanted: value > wanted,
    "gte": lambda value, wanted: value >= wanted,
    "lt": lambda value, wanted: value < wanted,
    "lte": lambda value, wanted: value <= wanted,
}

_PATTERNS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, wanted: wanted in value,
    "startswith": str.startswith,
    "endswith": str.endswith,
}


_COLLECTIONS = (list, tuple, set, frozenset)


def _lookup(lookup: Lookup[Any], context: _Context) -> _Truth:
    wanted = lookup.rhs
    context.count(len(wanted) if isinstance(wanted, _COLLECTIONS) else 1)
    operation = _OPERATIONS.get(type(lookup))
    if operation is None:
        return None
    column = _own_column(lookup, context.model)
    if column.name not in context.row:
        return None  # a deferred field: its value was not recorded
    raw = context.row[column.name]
    kind = _kind(column, context.connection)
    if operation == "isnull":
        return _isnull(kind, raw, wanted)
    _no_expression(wanted)
    value = kind.stored(raw)
    if operation == "in":
        return _in(kind, value, wanted)
    if operation == "range":
        return _range(kind, value, wanted)
    if operation == "exact":
        return _exact(kind, value, wanted)
    if operation in _ORDERINGS:
        return _ordering(kind, _ORDERINGS[operation], value, wanted)
    return kind.pattern(_PATTERNS[operation], value, wanted)


def _own_column(lookup: Lookup[Any], model: type[models.Model]) -> models.Field[Any, Any]:
    """The field of ``model``'s own table that ``lookup`` reads, as it is."""
    lhs = lookup.lhs
    if not isinstance(lhs, Col) or lhs.alias != model._meta.db_table:
        raise _Unknown  # a join, an annotation, a transform or an expression
    target = lhs.target
    if not isinstance(target, models.Field) or target.model is not model._meta.concrete_model:
        raise _Unknown
    return target


def _no_expression(wanted: Any) -> None:
    if hasattr(wanted, "resolve_expression"):
        raise _Unknown  # F(), a subquery, a function: the database computes it
    if isinstance(wanted, _COLLECTIONS):
        for item in wanted:
            _no_expression(item)


def _isnull(kind: _Kind, raw: Any, wanted: Any) -> _Truth:
    if not isinstance(wanted, bool):
        return None
    null = kind.is_null(raw)
    return None if null is None else null == wanted


def _exact(kind: _Kind, value: Any, wanted: Any) -> _Truth:
    if value is None or wanted is None:
        return None  # NULL = x is NULL
    return bool(value == kind.operand(wanted))


def _ordering(kind: _Kind, compare: Callable[[Any, Any], bool], value: Any, wanted: Any) -> _Truth:
    if not kind.ordered or value is None or wanted is None:
        return None
    return bool(compare(value, kind.operand(wanted)))


def _in(kind: _Kind, value: Any, wanted: Any) -> _Truth:
    if not isinstance(wanted, _COLLECTIONS):
        return None
    # Django drops None from the list; an empty list matches nothing, not even NULL.
    choices = [choice for choice in wanted if choice is not None]
    if not choices:
        return False
    if value is None:
        return None
    return _any(_equal_or_unknown(kind, value, choice) for choice in choices)


def _equal_or_unknown(kind: _Kind, value: Any, wanted: Any) -> _Truth:
    try:
        return bool(value == kind.operand(wanted))
    except _Unknown:
        return None


def _range(kind: _Kind, value: Any, wanted: Any) -> _Truth:
    if not isinstance(wanted, (list, tuple)) or len(wanted) != 2:
        return None
    low, high = wanted
    greater_or_equal = _ORDERINGS["gte"]
    less_or_equal = _ORDERINGS["lte"]
    # BETWEEN low AND high is low <= value AND value <= high.
    return _all(
        [
            _ordering(kind, greater_or_equal, value, low),
            _ordering(kind, less_or_equal, value, high),
        ]
    )


# Kinds of column: how a row's value and a lookup's value compare exactly as the
# database compares them, or _Unknown.


class _Kind:
    """A column Python can only tell NULL for: ``isnull`` is certain, nothing else."""

    #: gt/gte/lt/lte/range are certain.
    ordered = False

    def __init__(self, field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> None:
        self.field = field
        self.vendor = connection.vendor
        self.connection = connection

    def is_null(self, raw: Any) -> _Truth:
        """Whether the column holds NULL, given the row's serialized value."""
        return raw is None

    def stored(self, raw: Any) -> Any:
        """The row's value as the database compares it; None for NULL."""
        raise _Unknown

    def operand(self, wanted: Any) -> Any:
        """A lookup's (non-None) value as the database compares it with the column."""
        raise _Unknown

    def pattern(self, match: Callable[[str, str], bool], value: Any, wanted: Any) -> _Truth:
        """``value LIKE wanted`` for contains/startswith/endswith."""
        return None


class _Opaque(_Kind):
    """A column whose values may not map to NULL as Python's None does: nothing certain."""

    def is_null(self, raw: Any) -> _Truth:
        return None


class _Json(_Kind):
    """JSON: the database compares it by its own rules (``0`` vs ``false``, ``1`` vs
    ``1.0``, key order on SQLite), so only a non-null value is certain (not NULL);
    None may be SQL NULL or JSON null."""

    def is_null(self, raw: Any) -> _Truth:
        return None if raw is None else False


class _Converted(_Kind):
    """Values compared after the field's own ``to_python()``."""

    #: What ``to_python()`` must return for a value to be compared.
    python_type: type[Any] = object

    def stored(self, raw: Any) -> Any:
        return None if raw is None else self.check(self.convert(raw), stored=True)

    def operand(self, wanted: Any) -> Any:
        return self.check(self.convert(wanted), stored=False)

    def convert(self, value: Any) -> Any:
        try:
            return self.field.to_python(value)
        except (ValidationError, TypeError, ValueError, ArithmeticError) as error:
            raise _Unknown from error

    def check(self, value: Any, *, stored: bool) -> Any:
        """``value``, if the database holds and compares it exactly; else _Unknown."""
        if not isinstance(value, self.python_type):
            raise _Unknown
        return value


class _Boolean(_Converted):
    python_type = bool


class _Integer(_Converted):
    python_type = int
    ordered = True

    def check(self, value: Any, *, stored: bool) -> Any:
        if isinstance(value, bool):
            raise _Unknown
        super().check(value, stored=stored)
        # Django answers out-of-range values without the database (or the driver
        # refuses them); inside the column's range every database compares exactly.
        internal_type = self.field.get_internal_type()
        if not _within(value, *self.connection.ops.integer_field_range(internal_type)):
            raise _Unknown
        return value


def _within(value: int, low: int | None, high: int | None) -> bool:
    # Some backends answer None for "no limit".
    return (low is None or low <= value) and (high is None or value <= high)


class _Uuid(_Converted):
    python_type = uuid.UUID


class _Float(_Converted):
    # PostgreSQL sorts NaN above everything and has NaN = NaN; SQLite stores NaN as
    # NULL: only finite values compare as Python compares them.
    python_type = float
    ordered = True

    def is_null(self, raw: Any) -> _Truth:
        if raw is None:
            return True
        try:
            return False if math.isfinite(self.convert(raw)) else None
        except (_Unknown, TypeError):
            return None

    def check(self, value: Any, *, stored: bool) -> Any:
        if not math.isfinite(super().check(value, stored=stored)):
            raise _Unknown
        return value


class _Decimal(_Converted):
    python_type = decimal.Decimal
    ordered = True

    def check(self, value: Any, *, stored: bool) -> Any:
        if not super().check(value, stored=stored).is_finite():
            raise _Unknown
        if stored and not _fits(value, self.field):
            raise _Unknown  # the column rounded it (PostgreSQL) or refused it
        if self.vendor == "sqlite" and not _exact_as_sqlite_real(value):
            raise _Unknown
        return value


def _fits(value: decimal.Decimal, field: models.Field[Any, Any]) -> bool:
    """Whether a column of ``max_digits``/``decimal_places`` holds ``value`` exactly."""
    max_digits = getattr(field, "max_digits", None)
    places = getattr(field, "decimal_places", None)
    if not isinstance(max_digits, int) or not isinstance(places, int):
        return False
    digits, exponent = _significant(value)
    fraction = max(0, -exponent)
    whole = max(0, len(digits) + exponent)
    return fraction <= places and whole <= max_digits - places


def _significant(value: decimal.Decimal) -> tuple[tuple[int, ...], int]:
    # The digits without trailing zeros, and the exponent that goes with them.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    trimmed = list(digits)
    while len(trimmed) > 1 and trimmed[-1] == 0:
        trimmed.pop()
        exponent += 1
    return tuple(trimmed), exponent


def _exact_as_sqlite_real(value: decimal.Decimal) -> bool:
    # SQLite parses the decimal text Django sends into an 8-byte float (or an integer):
    # distinct decimals of at most 15 digits stay distinct and in order.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return (
        len(digits) <= _SQLITE_DECIMAL_DIGITS
        and -_SQLITE_DECIMAL_EXPONENT <= exponent <= _SQLITE_DECIMAL_EXPONENT
    )


class _Text(_Converted):
    """Text in the database's default (deterministic) collation: ``=`` is exact on
    SQLite and PostgreSQL. Ordering follows collations Python does not know."""

    python_type = str

    def pattern(self, match: Callable[[str, str], bool], value: Any, wanted: Any) -> _Truth:
        if value is None or not isinstance(wanted, str):
            return None
        if self.vendor == "postgresql":
            return match(value, wanted)  # LIKE is case-sensitive and exact there
        return _sqlite_like(match, value, wanted)


def _sqlite_like(match: Callable[[str, str], bool], value: str, wanted: str) -> _Truth:
    # SQLite's LIKE ignores the case of ASCII letters (of every letter with the ICU
    # extension, none with PRAGMA case_sensitive_like) and stops at a NUL character.
    if "\x00" in value or "\x00" in wanted:
        return None
    if len(wanted.encode("utf-8")) > _SQLITE_MAX_LIKE_BYTES:
        return None  # SQLite refuses the query
    if match(value, wanted):
        return True
    if match(_ascii_lower(value), _ascii_lower(wanted)):
        return None
    if match(value.casefold(), wanted.casefold()):
        return None
    return False


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _kind(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> _Kind:
    """How Python may compare ``field``'s column on ``connection``."""
    if isinstance(field, models.ForeignKey):
        if _customised(field):
            return _Opaque(field, connection)
        # The column holds the target's values, in the target's type and collation.
        return _kind(field.target_field, connection)
    if _customised(field):
        return _Opaque(field, connection)
    if isinstance(field, models.BooleanField):
        return _Boolean(field, connection)
    if isinstance(field, models.IntegerField):  # AutoFields included
        return _Integer(field, connection)
    if connection.vendor not in _WELL_KNOWN_VENDORS:
        return _Opaque(field, connection)  # Oracle's '' is NULL, MySQL's text ignores case
    if isinstance(field, models.JSONField):
        return _Json(field, connection)
    if isinstance(field, (models.DateField, models.TimeField, models.DurationField)):
        return _Kind(field, connection)  # DateTimeField is a DateField
    if isinstance(field, models.FloatField):
        return _Float(field, connection)
    if isinstance(field, models.DecimalField):
        return _Decimal(field, connection)
    if isinstance(field, models.UUIDField):
        return _Uuid(field, connection)
    if isinstance(field, (models.CharField, models.TextField)):
        if field.db_collation is not None:
            return _Kind(field, connection)  # NOCASE, non-deterministic ICU, ...
        return _Text(field, connection)
    return _Opaque(field, connection)


def _customised(field: models.Field[Any, Any]) -> bool:
    """Whether a class outside Django's model fields changes how ``field`` is stored
    or compared (a citext column type, a value conversion, a lookup of its own)."""
    return _customised_classes(type(field).__mro__)


@functools.cache
def _customised_classes(classes: tuple[type[Any], ...]) -> bool:
    for klass in classes:
        if klass.__module__.startswith("django.db.models."):
            continue
        if _STORAGE_METHODS & vars(klass).keys():
            return True
    return False
