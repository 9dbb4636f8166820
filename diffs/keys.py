"""Redis key names.

A key is ``<prefix><app_label>.<model_name>:<pk>``, e.g. ``diffs:polls.question:42``,
naming the concrete model (a proxy's diffs go to its concrete model's key).
App labels and model names cannot contain ``:``, so the first ``:`` after the prefix
ends the model part and everything after it is the primary key, whatever characters
it holds: keys never collide.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

_GLOB_SPECIALS = frozenset("*?[]\\")


def model_label(model: type[models.Model]) -> str:
    """Return ``app_label.model_name`` (lower case) of the concrete model: the model part
    of a key. A proxy shares its concrete model's label, as it shares its rows."""
    concrete = model._meta.concrete_model or model
    return concrete._meta.label_lower


def normalize_pk(model: type[models.Model], pk: Any) -> str:
    """Return the text form of ``pk`` used in keys.

    The value goes through the primary key field's ``to_python`` first, so ``1`` and
    ``"1"`` name the same object, as do a UUID and its string form.
    """
    try:
        value = model._meta.pk.to_python(pk) if model._meta.pk is not None else pk
    except (ValidationError, TypeError, ValueError):
        value = pk
    return str(value)


def object_key(prefix: str, model: type[models.Model], pk: Any) -> str:
    """Return the key of the sorted set that holds the diffs of one object."""
    return f"{prefix}{model_label(model)}:{normalize_pk(model, pk)}"


def escape_glob(text: str) -> str:
    """Escape ``text`` so that a Redis MATCH pattern matches it literally."""
    return "".join(f"\\{char}" if char in _GLOB_SPECIALS else char for char in text)


def prefix_pattern(prefix: str) -> str:
    """Return the SCAN pattern matching every key under ``prefix`` and nothing else."""
    return f"{escape_glob(prefix)}*"
