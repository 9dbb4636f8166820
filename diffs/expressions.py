"""Fields saved from query expressions such as ``F("votes") + 1``.

After such a save the instance still holds the expression, not the value the
database computed, and django-dirtyfields skips expressions altogether. So a field
holding an expression always counts as changed, and its value is read back from the
database (one query per save that used expressions) just while the diff is built:
the instance keeps the expression afterwards, exactly as Django leaves it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import models
from django.db.models.expressions import BaseExpression, Combinable

_EXPRESSIONS = (BaseExpression, Combinable)


def holds_expression(instance: models.Model, field: Any) -> bool:
    """True when ``field`` of ``instance`` is set to a query expression."""
    return isinstance(instance.__dict__.get(field.attname), _EXPRESSIONS)


def expression_fields(instance: models.Model) -> list[Any]:
    """The concrete fields of ``instance`` currently set to a query expression."""
    values = instance.__dict__
    return [
        f
        for f in instance._meta.concrete_fields
        if isinstance(values.get(f.attname), _EXPRESSIONS)
    ]


@contextlib.contextmanager
def resolved(instance: models.Model, using: str | None) -> Iterator[None]:
    """Within the block, expression fields hold the values the database computed."""
    fields = expression_fields(instance)
    if not fields:
        yield
        return
    attnames = [f.attname for f in fields]
    manager = type(instance)._base_manager.db_manager(using)
    row = manager.filter(pk=instance.pk).values(*attnames).first() or {}
    saved = {name: instance.__dict__[name] for name in attnames}
    try:
        for name in attnames:
            if name in row:
                setattr(instance, name, row[name])
        yield
    finally:
        for name, expression in saved.items():
            setattr(instance, name, expression)
